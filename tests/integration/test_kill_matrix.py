"""Kill ansible-playbook (SIGKILL) at every step boundary of a rotation, rerun, and demand the same rotation finished.

Talos API CA, 3 control planes + 2 workers: after the new CA is generated (before any node sees it), after each
wave task of each phase (the control planes', then the workers'), after each verification, and right before the new talosconfig is written. Kubernetes
API CA: at each phase boundary and in the middle of a kubelet wait. Each case reruns the playbook once, with no
manual step, and checks: exit 0, the same new CA as the killed run had persisted, every node in the final state,
the new credentials working and the old ones refused.
"""

import os

import pytest

from _playbook import pem_to_der, run_playbook
from _talos_state import assert_credentials, assert_rotated, old_ca_der_of, read

from ansible_collections.talosops.pki.plugins.module_utils import _kubernetes, _pki
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import MachineConfig

FIRST_CONTROLPLANE = "talos-sim-controlplane-1"  # run_once tasks (every wave task too) report on the play's first host
TALOS_NODES = ["talos-sim-controlplane-1", "talos-sim-controlplane-2", "talos-sim-controlplane-3", "talos-sim-worker-1",
               "talos-sim-worker-2"]
# Each phase patches the control planes in one wave task, then the workers in one: killed after each of them.
TALOS_PATCHES = {"accept": "Accept | add the new CA to machine.acceptedCAs",
                 "swap": "Swap | make the new CA machine.ca, keep the old one accepted",
                 "remove": "Remove | drop the old CA from machine.acceptedCAs"}
TIERS = {"the control planes": "control planes", "the workers": "workers"}
TALOS_VERIFICATIONS = ["Verify | new client certificate, old or new server CA", "Verify | new PKI", "Verify | new PKI only"]

TALOS_CASES = (
    [("generated, no node changed", "Generate | persist the new Talos API CA@" + FIRST_CONTROLPLANE),
     ("admin talosconfig written, no node changed", "Credentials | the rotation's admin talosconfig@" + FIRST_CONTROLPLANE)]
    + [("%s patched on %s" % (phase, tier), "%s (%s@%s" % (task, label, FIRST_CONTROLPLANE))
       for phase, task in TALOS_PATCHES.items() for tier, label in TIERS.items()]
    + [("after %s" % task, "%s@%s" % (task, FIRST_CONTROLPLANE)) for task in TALOS_VERIFICATIONS]
    + [("before the talosconfig is written", "Verify | old talosconfig refused@" + FIRST_CONTROLPLANE)]
)

KUBERNETES_ONLY = {"rotate_talos": False, "rotate_kubernetes": True}
KUBE_ACCEPT = "Accept | add the new Kubernetes CA to the accepted CAs"
KUBE_SWAP = "Swap | make the new Kubernetes CA the issuing CA, keep the old one accepted"
KUBE_REMOVE = "Remove | drop the old Kubernetes CA from the accepted CAs"
KUBE_CASES = [
    ("generated, no node changed", "Generate | persist the new Kubernetes API CA@" + FIRST_CONTROLPLANE),
    ("accept done on the control planes", "%s (control planes@%s" % (KUBE_ACCEPT, FIRST_CONTROLPLANE)),
    ("accept phase done", "Verify | every node Ready, new CA accepted@" + FIRST_CONTROLPLANE),
    ("swap done on the workers", "%s (workers@%s" % (KUBE_SWAP, FIRST_CONTROLPLANE)),
    ("swap phase done", "Verify | new kubeconfig, every node Ready@" + FIRST_CONTROLPLANE),
    ("remove done on the control planes", "%s (control planes@%s" % (KUBE_REMOVE, FIRST_CONTROLPLANE)),
    ("before the kubeconfig is written", "Verify | old kubeconfig refused@" + FIRST_CONTROLPLANE),
    # The kubelet restarts 1 s after the patch (in these cases only): these kill the run while the task waits for it.
    ("in a control plane's kubelet wait (accept)", "%s (control planes@%s+0.5" % (KUBE_ACCEPT, FIRST_CONTROLPLANE)),
    # Workers in waves of one (half of two workers): 1.6 s is in the first worker's wait or the second one's.
    ("in a worker's kubelet wait (swap)", "%s (workers@%s+1.6" % (KUBE_SWAP, FIRST_CONTROLPLANE)),
]


@pytest.mark.parametrize("where,kill_after", TALOS_CASES, ids=[case[0] for case in TALOS_CASES])
def test_talos_rotation_killed_then_rerun_finishes_the_same_rotation(make_sim_cluster, tmp_path, where, kill_after):
    cluster = make_sim_cluster(controlplanes=3, workers=2)
    assert sorted(node.name for node in cluster.nodes) == sorted(TALOS_NODES)
    rotation_dir = str(tmp_path / "rotation")
    old_ca = old_ca_der_of(cluster)
    old_talosconfig = tmp_path / "old-talosconfig"
    old_talosconfig.write_bytes(read(cluster.talosconfig_path))

    killed = run_playbook(cluster, rotation_dir, kill_after=kill_after)
    assert killed.returncode != 0 and "PLAY RECAP" not in killed.output, "the run was not killed %s" % where
    new_ca = read(os.path.join(rotation_dir, "talos", "ca.crt"))

    rerun = run_playbook(cluster, rotation_dir)
    assert rerun.returncode == 0, rerun.output[-6000:]
    assert read(os.path.join(rotation_dir, "talos", "ca.crt")) == new_ca
    assert assert_rotated(cluster, rotation_dir, old_ca) == pem_to_der(new_ca)
    assert_credentials(cluster, cluster.talosconfig_path, works=True)
    assert_credentials(cluster, str(old_talosconfig), works=False, server_ca=new_ca)


def kubernetes_ca(node):
    """(issuing certificate or None, [accepted]) of the node's Kubernetes CA, as PEM."""
    fields = MachineConfig.parse(node.config_bytes(), node.name).get_ca("kubernetes")
    return fields.issuing_crt, list(fields.accepted)


@pytest.mark.parametrize("where,kill_after", KUBE_CASES, ids=[case[0] for case in KUBE_CASES])
def test_kubernetes_rotation_killed_then_rerun_finishes_the_same_rotation(make_sim_cluster, tmp_path, where, kill_after):
    # A kubelet restart long enough to be killed in only where the case needs it: every patch waits for one.
    restart = 1.0 if "+" in kill_after else 0.05
    cluster = make_sim_cluster(controlplanes=2, workers=2, talos_version="v1.15.0", kubelet_restart_delay=restart)
    rotation_dir = str(tmp_path / "rotation")
    old_kubeconfig = tmp_path / "old-kubeconfig"
    old_kubeconfig.write_bytes(read(cluster.kubeconfig_path))
    variables = dict(KUBERNETES_ONLY, rotate_ca_kubeconfig=str(cluster.kubeconfig_path))

    killed = run_playbook(cluster, rotation_dir, kill_after=kill_after, extra_vars=variables)
    assert killed.returncode != 0 and "PLAY RECAP" not in killed.output, "the run was not killed %s" % where
    new_ca = read(os.path.join(rotation_dir, "kubernetes", "ca.crt"))

    rerun = run_playbook(cluster, rotation_dir, extra_vars=variables)
    assert rerun.returncode == 0, rerun.output[-6000:]
    assert read(os.path.join(rotation_dir, "kubernetes", "ca.crt")) == new_ca
    new_fp = _pki.fingerprint(new_ca)
    for node in cluster.nodes:
        issuing, accepted = kubernetes_ca(node)
        final = ([_pki.fingerprint(issuing)] if issuing else []) + [_pki.fingerprint(crt) for crt in accepted]
        assert set(final) == {new_fp}, "%s does not trust the new Kubernetes CA alone" % node.name
    assert all(entry["ready"] for entry in cluster.kubernetes_nodes())
    with _kubernetes.KubeAPI(Kubeconfig.load(cluster.kubeconfig_path).credentials()) as api:
        assert api.nodes().kind == _kubernetes.OK
    with _kubernetes.KubeAPI(Kubeconfig.load(str(old_kubeconfig)).credentials(), server_ca=new_ca) as api:
        assert api.nodes().kind == _kubernetes.UNAUTHORIZED
