"""Faults on the nodes during a Talos API CA rotation (ansible-playbook against a simulated 3 + 2 cluster).

A node down before the start stops the run before any change; transient Unavailable / FailedPrecondition replies
are retried; a node that keeps failing mid-phase stops the run with its name, leaves the patched nodes consistent,
and a rerun completes once it recovers; a node whose CA fields were changed by hand mid-rotation is caught by the
next phase's preflight and brought back by a rerun of the earlier phase.
"""

import os

import pytest
from grpclib.const import Status
from talos_sim.testing import admin_credentials, apply_request, call

from _playbook import node_ca_fields, pem_to_der, run_playbook
from _talos_state import assert_credentials, assert_rotated, old_ca_der_of, read

from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import MachineConfig

APPLY = "/machine.MachineService/ApplyConfiguration"


@pytest.fixture(name="cluster")
def fixture_cluster(make_sim_cluster):
    return make_sim_cluster(controlplanes=3, workers=2)


def configs(cluster):
    return {node.name: node.config_bytes() for node in cluster.nodes}


def test_a_node_down_at_preflight_stops_the_run_before_any_change(cluster, tmp_path):
    worker = cluster.workers[1]
    worker.down()
    before = configs(cluster)
    run = run_playbook(cluster, str(tmp_path / "rotation"), extra_vars={"rotate_ca_retry_deadline": 2.5})
    worker.up()
    assert run.returncode != 0 and worker.address in run.output and "Preflight" in run.output
    assert "got no answer within 2.5s" in run.output  # rotate_ca_retry_deadline reached the modules
    assert configs(cluster) == before
    assert not os.path.exists(tmp_path / "rotation" / "talos")  # no CA was even generated
    assert "Traceback" not in run.output


def test_transient_unavailable_and_apply_in_progress_are_retried(cluster, tmp_path):
    old_ca = old_ca_der_of(cluster)
    cluster.workers[0].fail_next_applies(3, Status.UNAVAILABLE)
    cluster.controlplanes[1].fail_next_applies(2, Status.FAILED_PRECONDITION, "another apply is in progress")
    run = run_playbook(cluster, str(tmp_path / "rotation"))
    assert run.returncode == 0, run.output[-6000:]
    assert_rotated(cluster, str(tmp_path / "rotation"), old_ca)


def test_a_node_failing_mid_phase_stops_the_run_and_a_rerun_completes_once_it_recovers(cluster, tmp_path):
    rotation_dir = str(tmp_path / "rotation")
    old_ca = old_ca_der_of(cluster)
    failing = cluster.workers[1]
    failing.fail_next_applies(10000)  # Unavailable on every apply, beyond the client's 10 s of retries
    stopped = run_playbook(cluster, rotation_dir)
    assert stopped.returncode != 0 and "PLAY RECAP" in stopped.output
    assert failing.address in stopped.output and "Accept" in stopped.output
    new_ca = pem_to_der(read(os.path.join(rotation_dir, "talos", "ca.crt")))
    # Every other node accepted the new CA and nothing went further: no node issues with it yet.
    for node in cluster.nodes:
        issuing, accepted = node_ca_fields(node)
        assert issuing == old_ca, "%s moved past the accept phase" % node.name
        assert (new_ca in accepted) == (node is not failing), node.name

    failing.clear_apply_failures()
    finished = run_playbook(cluster, rotation_dir)
    assert finished.returncode == 0, finished.output[-6000:]
    assert assert_rotated(cluster, rotation_dir, old_ca) == new_ca
    assert_credentials(cluster, cluster.talosconfig_path, works=True)


def test_a_ca_removed_by_hand_mid_rotation_is_caught_then_repaired(cluster, tmp_path):
    rotation_dir = str(tmp_path / "rotation")
    old_ca = old_ca_der_of(cluster)
    accept = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_phases": ["accept"]})
    assert accept.returncode == 0, accept.output[-6000:]
    new_ca_pem = read(os.path.join(rotation_dir, "talos", "ca.crt"))

    # Someone drops the new CA from one worker's accepted CAs.
    tampered = cluster.workers[0]
    config = MachineConfig.parse(tampered.config_bytes(), tampered.name)
    fields = config.get_ca("talos")
    config.set_ca("talos", fields.issuing_crt, fields.issuing_key,
                  tuple(crt for crt in fields.accepted if pem_to_der(crt) != pem_to_der(new_ca_pem)))
    call(admin_credentials(cluster), cluster.endpoint, APPLY, apply_request(config.to_bytes()), node=tampered.address)
    assert pem_to_der(new_ca_pem) not in node_ca_fields(tampered)[1]

    before = configs(cluster)
    swap = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_phases": ["swap"]})
    assert swap.returncode != 0 and "%s (%s) is pending" % (tampered.name, tampered.address) in swap.output and "run the accept phase first" in swap.output
    assert configs(cluster) == before

    repaired = run_playbook(cluster, rotation_dir)  # all phases: the accept phase brings the worker back
    assert repaired.returncode == 0, repaired.output[-6000:]
    assert assert_rotated(cluster, rotation_dir, old_ca) == pem_to_der(new_ca_pem)
    assert_credentials(cluster, cluster.talosconfig_path, works=True)
