"""The Talos API CA rotation, end to end: ansible-playbook against a simulated 3 + 2 cluster."""

import base64
import json
import os
import re

import pytest
import yaml

from _playbook import node_ca_fields, pem_to_der, private_key_needles, run_playbook
from _talos_state import assert_credentials, assert_rotated, old_ca_der_of

from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import TalosConfig


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def inventory_hosts(cluster, group):
    with open(cluster.inventory_path, encoding="utf-8") as handle:
        inventory = yaml.safe_load(handle)
    return list(inventory["all"]["children"][group]["hosts"])


@pytest.fixture(name="cluster")
def fixture_cluster(make_sim_cluster):
    return make_sim_cluster(controlplanes=3, workers=2)


def test_rotation_completes_and_rerun_changes_nothing(cluster, tmp_path):
    rotation_dir = str(tmp_path / "rotation")
    old_ca = old_ca_der_of(cluster)
    old_talosconfig = str(tmp_path / "old-talosconfig")
    with open(old_talosconfig, "wb") as handle:
        handle.write(read(cluster.talosconfig_path))

    first = run_playbook(cluster, rotation_dir)
    assert first.returncode == 0, first.output[-6000:]
    assert_rotated(cluster, rotation_dir, old_ca)
    assert_credentials(cluster, cluster.talosconfig_path, works=True)
    # Trust the nodes' new server certificates, so that what is judged is the old client certificate.
    assert_credentials(cluster, old_talosconfig, works=False, server_ca=read(os.path.join(rotation_dir, "talos", "ca.crt")))
    assert os.stat(cluster.talosconfig_path).st_mode & 0o777 == 0o600
    assert os.stat(os.path.join(rotation_dir, "talos", "ca.key")).st_mode & 0o777 == 0o600
    assert os.stat(os.path.join(rotation_dir, "talos")).st_mode & 0o777 == 0o700
    # One host per node in the recap; the node work runs once per phase and tier, reported on the play's first host.
    assert set(first.recap) == {node.name for node in cluster.nodes}, first.recap
    assert first.recap[cluster.controlplanes[0].name]["changed"] > 0, first.recap
    # The audit log holds the CA's creation, then each node's three moves, control planes before workers in each phase.
    patched = [entry for entry in audit_log(rotation_dir) if entry["event"] == "node_patched"]
    assert audit_log(rotation_dir)[0]["event"] == "ca_generated"
    moves = [(entry["phase"], entry["progress_before"], entry["progress_after"]) for entry in patched]
    assert sorted(set(moves)) == [("accept", "pending", "accepted"), ("remove", "swapped", "removed"), ("swap", "accepted", "swapped")]
    assert len(patched) == 3 * len(cluster.nodes)
    controlplanes = {node.address for node in cluster.controlplanes}
    for phase in ("accept", "swap", "remove"):
        order = [entry["node"] in controlplanes for entry in patched if entry["phase"] == phase]
        assert order == sorted(order, reverse=True), "%s: a worker was patched before a control plane" % phase
    assert "PRIVATE KEY" not in read(os.path.join(rotation_dir, "talos", "audit.jsonl")).decode()
    assert "wall seconds per phase" in first.output

    second = run_playbook(cluster, rotation_dir)
    assert second.returncode == 0, second.output[-6000:]
    assert set(second.recap) == set(first.recap)
    assert all(counts["changed"] == 0 for counts in second.recap.values()), second.recap
    assert [entry for entry in audit_log(rotation_dir) if entry["event"] == "node_patched"] == patched  # nothing moved


def audit_log(rotation_dir):
    with open(os.path.join(rotation_dir, "talos", "audit.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_phases_as_separate_jobs_complete_a_rotation_and_refuse_to_skip_one(cluster, tmp_path):
    rotation_dir = str(tmp_path / "rotation")
    old_ca = old_ca_der_of(cluster)
    configs = {node.name: node.config_bytes() for node in cluster.nodes}

    # remove first: refused by the preflight, before any change (no rotation exists yet).
    remove_first = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_phases": ["remove"]})
    assert remove_first.returncode != 0
    assert "preflight refused the rotation before any change" in remove_first.output and "run the phases from accept on" in remove_first.output
    assert {node.name: node.config_bytes() for node in cluster.nodes} == configs

    accept = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_phases": ["accept"]})
    assert accept.returncode == 0, accept.output[-6000:]
    new_ca = pem_to_der(read(os.path.join(rotation_dir, "talos", "ca.crt")))
    assert all(node_ca_fields(node)[0] == old_ca and new_ca in node_ca_fields(node)[1] for node in cluster.nodes)
    assert read(cluster.talosconfig_path) == read(os.path.join(rotation_dir, "talos", "previous-talosconfig"))  # not yet

    # remove after accept: every node is named as not swapped, and nothing changes.
    configs = {node.name: node.config_bytes() for node in cluster.nodes}
    skipped_swap = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_phases": ["remove"]})
    assert skipped_swap.returncode != 0 and "run the swap phase first" in skipped_swap.output
    assert all(node.address in skipped_swap.output for node in cluster.nodes)
    assert {node.name: node.config_bytes() for node in cluster.nodes} == configs

    # A phase cannot be skipped inside one run either.
    gap = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_phases": ["accept", "remove"]})
    assert gap.returncode != 0 and "give a consecutive run of the phases" in gap.output

    for phase in ("swap", "remove"):
        job = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_phases": [phase]})
        assert job.returncode == 0, job.output[-6000:]
    assert assert_rotated(cluster, rotation_dir, old_ca) == new_ca
    assert_credentials(cluster, cluster.talosconfig_path, works=True)


def test_check_mode_contacts_nodes_changes_nothing(cluster, tmp_path):
    rotation_dir = str(tmp_path / "rotation")
    configs = {node.name: node.config_bytes() for node in cluster.nodes}
    files = {path: read(path) for path in (cluster.talosconfig_path, cluster.secrets_path, cluster.inventory_path)}

    run = run_playbook(cluster, rotation_dir, "--check", "--diff", "-v", extra_vars={"rotate_ca_secrets_file": str(cluster.secrets_path)})

    assert run.returncode == 0, run.output[-6000:]
    assert {node.name: node.config_bytes() for node in cluster.nodes} == configs
    assert {path: read(path) for path in files} == files
    assert not os.path.exists(rotation_dir)
    summary = run.output[run.output.index("Summary | per node, the state reached and the next step"):]
    assert "Talos API CA rotation, check mode: nothing was changed" in summary
    for host in inventory_hosts(cluster, "controlplane") + inventory_hosts(cluster, "worker"):
        # Each node's row: where the run's phases would take it from where it stands.
        assert re.search(r"%s\s+\S+\s+\S+\s+pending\s+would be removed" % re.escape(host), summary), \
            "check-mode summary does not show %s" % host
    assert "Dry run summary" in run.output  # the nodes themselves validated the changes


def test_interrupted_rotation_resumes_with_the_same_ca(cluster, tmp_path):
    rotation_dir = str(tmp_path / "rotation")
    old_ca = old_ca_der_of(cluster)
    controlplane = inventory_hosts(cluster, "controlplane")[0]
    ca_path = os.path.join(rotation_dir, "talos", "ca.crt")

    # The wave tasks run once, on the play's first host: killed right after the workers' accept wave.
    killed_in_accept = run_playbook(cluster, rotation_dir, kill_after="Accept | add the new CA to machine.acceptedCAs (workers)@%s" % controlplane)
    assert killed_in_accept.returncode != 0 and "PLAY RECAP" not in killed_in_accept.output
    new_ca = read(ca_path)

    killed_in_swap = run_playbook(cluster, rotation_dir, kill_after="Swap | make the new CA@%s" % controlplane)
    assert killed_in_swap.returncode != 0 and "PLAY RECAP" not in killed_in_swap.output
    assert read(ca_path) == new_ca
    assert any(node_ca_fields(node)[0] == pem_to_der(new_ca) for node in cluster.nodes), "the swap had not started"

    finished = run_playbook(cluster, rotation_dir)
    assert finished.returncode == 0, finished.output[-6000:]
    assert read(ca_path) == new_ca
    assert assert_rotated(cluster, rotation_dir, old_ca) == pem_to_der(new_ca)
    assert_credentials(cluster, cluster.talosconfig_path, works=True)


def _private_keys(cluster, rotation_dir):
    with open(cluster.secrets_path, encoding="utf-8") as handle:
        secrets = yaml.safe_load(handle)
    keys = [base64.b64decode(secrets["certs"]["os"]["key"])]
    for path in (cluster.talosconfig_path, os.path.join(rotation_dir, "talos", "talosconfig"),
                 os.path.join(rotation_dir, "talos", "previous-talosconfig")):
        if os.path.exists(path):
            keys.append(TalosConfig.load(path).get_context().key)
    ca_key = os.path.join(rotation_dir, "talos", "ca.key")
    if os.path.exists(ca_key):
        keys.append(read(ca_key))
    return keys


def test_no_private_key_in_verbose_diff_output(cluster, tmp_path):
    rotation_dir = str(tmp_path / "rotation")
    old_keys = _private_keys(cluster, rotation_dir)
    check = run_playbook(cluster, rotation_dir, "--check", "--diff", "-vvv")
    real = run_playbook(cluster, rotation_dir, "--diff", "-vvv")
    assert check.returncode == 0 and real.returncode == 0, real.output[-6000:]
    needles = private_key_needles(*(old_keys + _private_keys(cluster, rotation_dir)))
    assert len(needles) > 20
    for text in (check.output, real.output):
        leaked = [needle for needle in needles if needle in text]
        assert not leaked, "private key material in the output: %s" % leaked[:3]


def test_a_run_limited_to_some_nodes_is_refused_before_any_change(cluster, tmp_path):
    configs = {node.name: node.config_bytes() for node in cluster.nodes}
    left_out = inventory_hosts(cluster, "worker")[0]
    run = run_playbook(cluster, str(tmp_path / "rotation"), "--limit", "all:!%s" % left_out)
    assert run.returncode != 0
    assert "This run leaves out %s" % left_out in run.output and "Run without --limit" in run.output
    assert {node.name: node.config_bytes() for node in cluster.nodes} == configs
    assert not os.path.exists(tmp_path / "rotation")


def test_an_init_node_is_rotated_as_a_control_plane(make_sim_cluster, tmp_path):
    # Clusters bootstrapped with an `init` node still carry machine.type init on it: a control plane in every respect.
    cluster = make_sim_cluster(controlplanes=2, workers=1, init_node=True)
    init = cluster.controlplanes[0]
    assert init.machine_type == "init"
    rotation_dir = str(tmp_path / "rotation")
    old_ca = old_ca_der_of(cluster)

    run = run_playbook(cluster, rotation_dir)
    assert run.returncode == 0, run.output[-6000:]
    assert_rotated(cluster, rotation_dir, old_ca)
    new_key = read(os.path.join(rotation_dir, "talos", "ca.key"))
    for node in cluster.nodes:
        machine = next(document for document in yaml.safe_load_all(node.config_bytes()) if document and "machine" in document)["machine"]
        holds_key = bool(machine["ca"].get("key"))
        assert holds_key == node.controlplane, "%s (%s): control planes, init included, hold the CA key; workers never" % (
            node.name, node.machine_type)
        if holds_key:
            assert base64.b64decode(machine["ca"]["key"]) == new_key
    # Patched with the control planes, before any worker.
    accepted = [entry["node"] for entry in audit_log(rotation_dir) if entry["event"] == "node_patched" and entry["phase"] == "accept"]
    assert accepted.index(init.address) < accepted.index(cluster.workers[0].address)
