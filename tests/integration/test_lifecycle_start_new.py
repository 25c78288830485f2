"""Rotate again: `rotate_ca_start_new` archives a completed rotation and starts the next, for both CAs, four in a row.

A completed rotation is one whose every node runs the new CA alone and whose talosconfig, kubeconfig and secrets.yaml
were written. Only that is archived; a rerun of the same command after an interrupted second rotation finishes that
second rotation with its own CA. Each case ends with every node on the newest CA alone, the credentials written by the
last run working on every node, and those of the run before refused.
"""

import glob
import json
import os

import pytest

from _playbook import run_playbook
from _talos_state import assert_credentials, assert_rotated, old_ca_der_of, read

from ansible_collections.talosops.pki.plugins.module_utils import _kubernetes, _pki
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import MachineConfig
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import SecretsBundle

FIRST_CONTROLPLANE = "talos-sim-controlplane-1"  # run_once tasks report on the play's first host
SHAPES = ["v1.13.4", "v1.15.0"]  # cluster.ca (base64 PEM) and the KubeAPIServerCAConfig document (raw PEM)


def both_flows(cluster):
    return {"rotate_talos": True, "rotate_kubernetes": True, "rotate_ca_kubeconfig": str(cluster.kubeconfig_path),
            "rotate_ca_secrets_file": str(cluster.secrets_path)}


def kubernetes_fingerprints(node):
    """Every Kubernetes CA the node holds (issuing first), as fingerprints."""
    fields = MachineConfig.parse(node.config_bytes(), node.name).get_ca("kubernetes")
    return ([_pki.fingerprint(fields.issuing_crt)] if fields.issuing_crt else []) + [_pki.fingerprint(crt) for crt in fields.accepted]


def assert_kubernetes_on(cluster, new_ca, old_kubeconfig=None):
    new_fp = _pki.fingerprint(new_ca)
    for node in cluster.nodes:
        assert set(kubernetes_fingerprints(node)) == {new_fp}, "%s does not trust the new Kubernetes CA alone" % node.name
    assert all(entry["ready"] for entry in cluster.kubernetes_nodes())
    with _kubernetes.KubeAPI(Kubeconfig.load(cluster.kubeconfig_path).credentials()) as api:
        assert api.nodes().kind == _kubernetes.OK
    if old_kubeconfig:
        with _kubernetes.KubeAPI(Kubeconfig.load(old_kubeconfig).credentials(), server_ca=new_ca) as api:
            assert api.nodes().kind == _kubernetes.UNAUTHORIZED


def assert_secrets_hold(cluster, talos_ca, kubernetes_ca):
    bundle = SecretsBundle.load(cluster.secrets_path)
    assert _pki.fingerprint(bundle.get_ca("talos")[0]) == _pki.fingerprint(talos_ca)
    assert _pki.fingerprint(bundle.get_ca("kubernetes")[0]) == _pki.fingerprint(kubernetes_ca)


def snapshot_credentials(cluster, tmp_path, label):
    talosconfig, kubeconfig = tmp_path / ("talosconfig-" + label), tmp_path / ("kubeconfig-" + label)
    talosconfig.write_bytes(read(cluster.talosconfig_path))
    kubeconfig.write_bytes(read(cluster.kubeconfig_path))
    return str(talosconfig), str(kubeconfig)


def new_cas(rotation_dir):
    return read(os.path.join(rotation_dir, "talos", "ca.crt")), read(os.path.join(rotation_dir, "kubernetes", "ca.crt"))


@pytest.mark.parametrize("shape", SHAPES)
def test_four_rotations_in_a_row_of_both_cas(make_sim_cluster, tmp_path, shape):
    cluster = make_sim_cluster(controlplanes=2, workers=1, talos_version=shape, kubelet_restart_delay=0.05)
    rotation_dir = str(tmp_path / "rotation")
    variables = both_flows(cluster)
    seen = []
    for number in range(4):
        old_ca = old_ca_der_of(cluster)
        old_talosconfig, old_kubeconfig = snapshot_credentials(cluster, tmp_path, str(number))
        extra = dict(variables, rotate_ca_start_new=True) if number else variables
        run = run_playbook(cluster, rotation_dir, extra_vars=extra)
        assert run.returncode == 0, "rotation %d: %s" % (number + 1, run.output[-6000:])
        talos_ca, kubernetes_ca = new_cas(rotation_dir)
        seen.append((talos_ca, kubernetes_ca))
        assert_rotated(cluster, rotation_dir, old_ca)
        assert_credentials(cluster, cluster.talosconfig_path, works=True)
        assert_credentials(cluster, old_talosconfig, works=False, server_ca=talos_ca)
        assert_kubernetes_on(cluster, kubernetes_ca, old_kubeconfig)
        assert_secrets_hold(cluster, talos_ca, kubernetes_ca)
    assert len(set(seen)) == 4, "each rotation must make new CAs"
    for kind in ("talos", "kubernetes"):
        archived = sorted(glob.glob(os.path.join(rotation_dir, kind + ".archived-*")))
        assert len(archived) == 3, archived
        # Each archive holds a completed rotation: its own CA, recorded as completed.
        for folder, cas in zip(archived, seen[:3]):
            assert read(os.path.join(folder, "ca.crt")) == cas[0 if kind == "talos" else 1]
            assert json.loads(read(os.path.join(folder, "rotation.json")))["completed"]

    # Without start_new, a rerun after the last rotation changes nothing.
    again = run_playbook(cluster, rotation_dir, extra_vars=variables)
    assert again.returncode == 0 and all(counts["changed"] == 0 for counts in again.recap.values()), again.output[-4000:]


TALOS_ONLY = {"rotate_talos": True, "rotate_kubernetes": False}
KUBERNETES_ONLY = {"rotate_talos": False, "rotate_kubernetes": True}
# Phase boundaries of a second rotation (rotate_ca_start_new=true), where an operator's Ctrl-C or a cancelled job lands.
SECOND_ROTATION_KILLS = [
    ("talos", "v1.13.4", "generated", "Generate | persist the new Talos API CA@" + FIRST_CONTROLPLANE),
    ("talos", "v1.13.4", "accept done", "Verify | new client certificate, old or new server CA@" + FIRST_CONTROLPLANE),
    ("talos", "v1.13.4", "swap done", "Verify | new PKI@" + FIRST_CONTROLPLANE),
    ("talos", "v1.13.4", "in remove", "Remove | drop the old CA from machine.acceptedCAs (control planes)@" + FIRST_CONTROLPLANE),
    ("talos", "v1.13.4", "remove done", "Verify | old talosconfig refused@" + FIRST_CONTROLPLANE),
    ("kubernetes", "v1.15.0", "generated", "Generate | persist the new Kubernetes API CA@" + FIRST_CONTROLPLANE),
    ("kubernetes", "v1.15.0", "accept done", "Verify | every node Ready, new CA accepted@" + FIRST_CONTROLPLANE),
    ("kubernetes", "v1.15.0", "swap done", "Verify | new kubeconfig, every node Ready@" + FIRST_CONTROLPLANE),
    ("kubernetes", "v1.15.0", "in remove", "Remove | drop the old Kubernetes CA@" + FIRST_CONTROLPLANE),
    ("kubernetes", "v1.13.4", "in remove", "Remove | drop the old Kubernetes CA@" + FIRST_CONTROLPLANE),
    ("kubernetes", "v1.15.0", "remove done", "Verify | old kubeconfig refused@" + FIRST_CONTROLPLANE),
]


@pytest.mark.parametrize("kind,shape,where,kill_after", SECOND_ROTATION_KILLS,
                         ids=["%s-%s-%s" % (case[0], case[1], case[2].replace(" ", "-")) for case in SECOND_ROTATION_KILLS])
def test_second_rotation_killed_then_the_same_command_finishes_it(make_sim_cluster, tmp_path, kind, shape, where, kill_after):
    cluster = make_sim_cluster(controlplanes=2, workers=1, talos_version=shape, kubelet_restart_delay=0.05)
    rotation_dir = str(tmp_path / "rotation")
    variables = dict(TALOS_ONLY if kind == "talos" else KUBERNETES_ONLY, rotate_ca_kubeconfig=str(cluster.kubeconfig_path),
                     rotate_ca_secrets_file=str(cluster.secrets_path))
    first = run_playbook(cluster, rotation_dir, extra_vars=variables)
    assert first.returncode == 0, first.output[-6000:]
    first_ca = read(os.path.join(rotation_dir, kind, "ca.crt"))
    old_ca = old_ca_der_of(cluster)
    old_talosconfig, old_kubeconfig = snapshot_credentials(cluster, tmp_path, "first")

    second = dict(variables, rotate_ca_start_new=True)
    killed = run_playbook(cluster, rotation_dir, kill_after=kill_after, extra_vars=second)
    assert killed.returncode != 0 and "PLAY RECAP" not in killed.output, "the run was not killed %s" % where
    new_ca = read(os.path.join(rotation_dir, kind, "ca.crt"))
    assert new_ca != first_ca

    rerun = run_playbook(cluster, rotation_dir, extra_vars=second)
    assert rerun.returncode == 0, rerun.output[-6000:]
    # The same second rotation finished: its CA, one archive (the first rotation), nothing else started.
    assert read(os.path.join(rotation_dir, kind, "ca.crt")) == new_ca
    archived = glob.glob(os.path.join(rotation_dir, kind + ".archived-*"))
    assert len(archived) == 1 and read(os.path.join(archived[0], "ca.crt")) == first_ca, archived
    assert json.loads(read(os.path.join(rotation_dir, kind, "rotation.json")))["completed"]
    bundle = SecretsBundle.load(cluster.secrets_path)
    assert _pki.fingerprint(bundle.get_ca(kind)[0]) == _pki.fingerprint(new_ca)
    if kind == "talos":
        assert_rotated(cluster, rotation_dir, old_ca)
        assert_credentials(cluster, cluster.talosconfig_path, works=True)
        assert_credentials(cluster, old_talosconfig, works=False, server_ca=new_ca)
    else:
        assert_kubernetes_on(cluster, new_ca, old_kubeconfig)
