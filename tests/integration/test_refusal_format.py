"""A preflight refusal leads with what is wrong, on which nodes (inventory name and address) and what to do; what the
preflight read is shown from -v on, never with a certificate's PEM, and no node shows `hostname: null`."""

import json
import os
import re

import pytest
import yaml

from _playbook import run_playbook

FATAL = re.compile(r"^fatal: \[[^\]]+\]: FAILED! => (\{.*\})$", re.MULTILINE)


@pytest.fixture(name="misgrouped")
def fixture_misgrouped(module_sim_cluster, tmp_path):
    """The cluster's inventory with its first worker listed under controlplane."""
    cluster = module_sim_cluster
    with open(cluster.inventory_path, encoding="utf-8") as handle:
        inventory = yaml.safe_load(handle)
    children = inventory["all"]["children"]
    worker = cluster.workers[0]
    children["controlplane"]["hosts"][worker.name] = children["worker"]["hosts"].pop(worker.name)
    path = str(tmp_path / "inventory.yml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(inventory, handle)
    return cluster, worker, path


def refusal(run):
    """The failed preflight's result, as the default callback printed it."""
    assert run.returncode != 0, run.output[-3000:]
    results = [json.loads(match.group(1)) for match in FATAL.finditer(run.output)]
    assert len(results) == 1, run.output[-3000:]
    return results[0]


def test_a_refusal_leads_with_the_node_by_name_and_address_and_what_to_do(misgrouped, tmp_path):
    cluster, worker, inventory = misgrouped
    run = run_playbook(cluster, str(tmp_path / "rotation"), inventory=inventory)
    result = refusal(run)
    assert result["msg"].startswith("preflight refused the rotation before any change: %s (%s) is listed under controlplane but its "
                                    "machine.type is worker: move it to the worker group." % (worker.name, worker.address))
    assert result["msg"].endswith("(Rerun with -v for every node's CA state.)")
    # Nothing else buries the message: no node table, member list or certificate at the default verbosity.
    assert set(result) <= {"changed", "msg", "warnings"}, sorted(result)
    assert "BEGIN CERTIFICATE" not in run.output and '"hostname": null' not in run.output


def test_with_v_the_refusal_carries_every_node_s_state_without_pems(misgrouped, tmp_path):
    cluster, worker, inventory = misgrouped
    run = run_playbook(cluster, str(tmp_path / "rotation"), "-v", inventory=inventory)
    result = refusal(run)
    assert result["problems"] and "%s (%s)" % (worker.name, worker.address) in result["problems"][0]
    details = result["details"]
    assert sorted(details["nodes"]) == sorted(node.address for node in cluster.nodes)
    for node in cluster.nodes:
        facts = details["nodes"][node.address]
        assert facts["hostname"] == node.name and facts["machine_type"] == node.machine_type
        assert len(facts["talos"]["issuing_ca"]) == 64
    assert "crt" not in details["issuing_ca"]["talos"] and len(details["issuing_ca"]["talos"]["fingerprint"]) == 64
    assert "BEGIN CERTIFICATE" not in run.output and '"hostname": null' not in run.output
    assert not os.path.exists(str(tmp_path / "rotation" / "talos" / "ca.crt")), "nothing is written before the refusal"
