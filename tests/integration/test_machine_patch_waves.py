"""talos_machine_patch's wave mode against a simulated cluster (real gRPC, real mutual TLS): one task patches every node,
wave after wave; a node that keeps failing is named with its inventory name, and no further wave starts."""

import json
import os

import pytest
from grpclib.const import Status

from _playbook import node_ca_fields, pem_to_der

from ansible_collections.talosops.pki.plugins.module_utils._backends import ca_generate, machine_patch


@pytest.fixture(name="cluster")
def fixture_cluster(make_sim_cluster):
    return make_sim_cluster(controlplanes=1, workers=4)


def new_rotation(cluster, path):
    params = {name: spec.get("default") for name, spec in ca_generate.ARGUMENT_SPEC.items()}
    params.update(path=str(path), kind="talos", previous_ca=cluster.secrets.os_ca.cert_pem.decode())
    return ca_generate.run(params)


def patch(cluster, rotation, nodes, check_mode=False, diff=False, **options):
    params = {name: spec.get("default") for name, spec in machine_patch.ARGUMENT_SPEC.items()}
    params.update(talosconfig=cluster.talosconfig_path, nodes=[node.address for node in nodes], phase="accept",
                  node_names={node.address: node.name for node in nodes}, rotation_dir=rotation["path"], **options)
    return machine_patch.run(params, check_mode=check_mode, diff=diff)


def audit(rotation):
    with open(os.path.join(rotation["path"], "audit.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle.read().splitlines()]


def test_workers_accept_in_waves_and_a_failing_node_stops_the_next_wave(cluster, tmp_path):
    rotation = new_rotation(cluster, tmp_path / "talos")
    with open(os.path.join(rotation["path"], "ca.crt"), "rb") as handle:
        new_ca = pem_to_der(handle.read())
    workers = cluster.workers

    dry = patch(cluster, rotation, workers, check_mode=True, diff=True, machine_type="worker", wave_size=2)
    assert dry["changed"] and len(dry["diff"]) == 4 and all("dry_run_summary" in entry for entry in dry["nodes"])
    assert all(new_ca not in node_ca_fields(node)[1] for node in workers)

    workers[1].fail_next_applies(10000, Status.UNAVAILABLE)  # beyond the client's retries
    failed = patch(cluster, rotation, workers, machine_type="worker", wave_size=2, retry_deadline=1.0)
    assert failed["failed"] and failed["failed_nodes"] == [workers[1].address]
    assert "%s (%s): " % (workers[1].name, workers[1].address) in failed["msg"]
    assert [entry["node"] for entry in failed["nodes"]] == [workers[0].address]
    assert [new_ca in node_ca_fields(node)[1] for node in workers] == [True, False, False, False]  # no second wave

    workers[1].clear_apply_failures()
    done = patch(cluster, rotation, workers, machine_type="worker", wave_size=2)
    assert done["changed_nodes"] == [node.address for node in workers[1:]] and not done.get("failed")
    addresses = [node.address for node in workers]
    assert [wave["nodes"] for wave in done["waves"]] == [addresses[0:2], addresses[2:4]]
    assert all(new_ca in node_ca_fields(node)[1] for node in workers)
    waves = [entry for entry in audit(rotation) if entry["event"] == "wave_patched"]
    assert [(entry["wave"], entry["failed_nodes"]) for entry in waves] == [(1, [workers[1].address]), (1, []), (2, [])]
