"""One rotation per cluster, wherever it is started from.

A rotation in progress shows on the cluster itself: its new CA, which the nodes carry from the accept phase on, holds
a rotation marker (rotation id, the CA it replaces, start time, controller). A run from another rotation directory is
refused before it changes any node, naming that rotation. Two runs started at the same moment both pass their
preflight; the one whose CA was created first wins, the other takes its CA off the nodes again and stops. Afterwards no
node accepts a CA of the loser.
"""

import os
import threading

import pytest

from _playbook import run_playbook
from _talos_state import assert_credentials, old_ca_der_of, read

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import MachineConfig

FIRST_CONTROLPLANE = "talos-sim-controlplane-1"
FLOWS = {
    "talos": {"rotate_talos": True, "rotate_kubernetes": False},
    "kubernetes": {"rotate_talos": False, "rotate_kubernetes": True},
}
ACCEPTED = {
    "talos": "Verify | new client certificate, old or new server CA@" + FIRST_CONTROLPLANE,
    "kubernetes": "Verify | every node Ready, new CA accepted@" + FIRST_CONTROLPLANE,
}
REFUSED = "preflight refused the rotation before any change"


def fingerprints(node, kind):
    """Every CA of `kind` the node holds (issuing first), as fingerprints."""
    fields = MachineConfig.parse(node.config_bytes(), node.name).get_ca(kind)
    return ([_pki.fingerprint(fields.issuing_crt)] if fields.issuing_crt else []) + [_pki.fingerprint(crt) for crt in fields.accepted]


def configs(cluster):
    return {node.name: node.config_bytes() for node in cluster.nodes}


def variables(cluster, kind):
    return dict(FLOWS[kind], rotate_ca_kubeconfig=str(cluster.kubeconfig_path))


def assert_on_one_ca(cluster, kind, rotation_dir):
    """Every node holds the CA of `rotation_dir` alone: nothing of another rotation is accepted anywhere."""
    expected = _pki.fingerprint(read(os.path.join(rotation_dir, kind, "ca.crt")))
    for node in cluster.nodes:
        assert fingerprints(node, kind) == [expected], "%s: %s" % (node.name, fingerprints(node, kind))


@pytest.mark.parametrize("kind,shape", [("talos", "v1.13.4"), ("kubernetes", "v1.15.0"), ("kubernetes", "v1.13.4")])
def test_a_run_from_another_directory_is_refused_before_any_change_naming_the_rotation(make_sim_cluster, tmp_path, kind, shape):
    cluster = make_sim_cluster(controlplanes=2, workers=1, talos_version=shape, kubelet_restart_delay=0.05)
    first_dir, other_dir = str(tmp_path / "first"), str(tmp_path / "other")
    killed = run_playbook(cluster, first_dir, kill_after=ACCEPTED[kind], extra_vars=variables(cluster, kind))
    assert killed.returncode != 0 and "PLAY RECAP" not in killed.output
    in_progress = read(os.path.join(first_dir, kind, "ca.crt"))
    marker = _pki.rotation_marker(in_progress)
    assert marker and marker["previous"] == fingerprints(cluster.nodes[0], kind)[0]

    before = configs(cluster)
    for extra in ({}, {"rotate_ca_start_new": True}):
        other = run_playbook(cluster, other_dir, extra_vars=dict(variables(cluster, kind), **extra))
        flat = " ".join(other.output.split())
        assert other.returncode != 0 and REFUSED in flat, other.output[-4000:]
        assert "of talosops.pki rotation %s" % marker["id"] in flat and "which is in progress" in flat, other.output[-4000:]
        assert configs(cluster) == before, "a refused run changed a node"
        assert not os.path.exists(os.path.join(other_dir, kind)), "a refused run made a CA"

    # The rotation in progress finishes from its own directory; then the other directory may rotate from its CA.
    finished = run_playbook(cluster, first_dir, extra_vars=variables(cluster, kind))
    assert finished.returncode == 0, finished.output[-6000:]
    assert_on_one_ca(cluster, kind, first_dir)
    after = run_playbook(cluster, other_dir, extra_vars=variables(cluster, kind))
    assert after.returncode == 0, after.output[-6000:]
    assert_on_one_ca(cluster, kind, other_dir)
    assert _pki.rotation_marker(read(os.path.join(other_dir, kind, "ca.crt")))["previous"] == _pki.fingerprint(in_progress)
