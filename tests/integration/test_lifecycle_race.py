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
from talos_sim.testing import admin_credentials, apply_request, call

from _playbook import run_playbook
from _talos_state import assert_credentials, read

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._backends import ca_generate, machine_patch
from ansible_collections.talosops.pki.plugins.module_utils._errors import RotationStateError
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


LOST = "this run lost the race for the cluster to"


@pytest.mark.parametrize("kind,shape", [("talos", "v1.13.4"), ("kubernetes", "v1.15.0")])
def test_two_runs_started_together_one_finishes_and_the_other_leaves_no_ca(make_sim_cluster, tmp_path, kind, shape):
    cluster = make_sim_cluster(controlplanes=2, workers=1, talos_version=shape, kubelet_restart_delay=0.05)
    old = fingerprints(cluster.nodes[0], kind)[0]
    dirs = [str(tmp_path / "one"), str(tmp_path / "two")]
    logs = [tmp_path / "one.log", tmp_path / "two.log"]
    barrier = threading.Barrier(2)
    codes = {}

    def run(index):
        barrier.wait()
        codes[index] = run_playbook(cluster, dirs[index], extra_vars=variables(cluster, kind))
        logs[index].write_text(codes[index].output)

    threads = [threading.Thread(target=run, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)
    outputs = [" ".join(codes[index].output.split()) for index in (0, 1)]
    winners = [index for index in (0, 1) if codes[index].returncode == 0]
    assert len(winners) == 1, "\n\n".join(output[-3000:] for output in outputs)
    winner, loser = winners[0], 1 - winners[0]
    assert REFUSED in outputs[loser] or LOST in outputs[loser], outputs[loser][-4000:]
    # The loser's CA is on no node and its rotation folder is out of the way; the winner's CA alone remains.
    assert_on_one_ca(cluster, kind, dirs[winner])
    assert not os.path.exists(os.path.join(dirs[loser], kind))
    withdrawn = [name for name in os.listdir(dirs[loser]) if name.startswith(kind + ".withdrawn-")] if os.path.isdir(dirs[loser]) else []
    for name in withdrawn:
        assert _pki.fingerprint(read(os.path.join(dirs[loser], name, "ca.crt"))) not in {
            fp for node in cluster.nodes for fp in fingerprints(node, kind)}
    assert _pki.rotation_marker(read(os.path.join(dirs[winner], kind, "ca.crt")))["previous"] == old
    if kind == "talos":
        assert_credentials(cluster, cluster.talosconfig_path, works=True)
    # Whichever way it lost (refused by its preflight, or by the claim), a rerun of the loser's command now rotates
    # again from the winner's CA.
    again = run_playbook(cluster, dirs[loser], extra_vars=variables(cluster, kind))
    assert again.returncode == 0, again.output[-6000:]
    assert_on_one_ca(cluster, kind, dirs[loser])


# --- the claim, step by step (talos_machine_patch claim=true on the first control plane) ----------------------------

APPLY = "/machine.MachineService/ApplyConfiguration"


def new_rotation(cluster, path):
    params = {name: spec.get("default") for name, spec in ca_generate.ARGUMENT_SPEC.items()}
    params.update(path=str(path), kind="talos", previous_ca=cluster.secrets.os_ca.cert_pem.decode())
    return ca_generate.run(params)


def claim(cluster, rotation, settle=1.5, deadline=10.0):
    params = {name: spec.get("default") for name, spec in machine_patch.ARGUMENT_SPEC.items()}
    params.update(talosconfig=cluster.talosconfig_path, node=cluster.controlplanes[0].address, phase="accept",
                  rotation_dir=rotation["path"], machine_type="controlplane", claim=True, claim_settle=settle, claim_deadline=deadline)
    return machine_patch.run(params)


def set_accepted(cluster, node, change):
    """What another run's patch does to the node: its Talos API accepted CAs, changed by `change` (a list -> list)."""
    config = MachineConfig.parse(node.config_bytes(), node.name)
    fields = config.get_ca("talos")
    config.set_ca("talos", fields.issuing_crt, fields.issuing_key, tuple(change(list(fields.accepted))))
    call(admin_credentials(cluster), cluster.endpoint, APPLY, apply_request(config.to_bytes()), node=node.address)


def later(seconds, action):
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


def test_a_claim_finding_another_rotation_there_changes_nothing_and_moves_its_folder_aside(sim_cluster, tmp_path):
    cluster, node = sim_cluster, sim_cluster.controlplanes[0]
    first, second = new_rotation(cluster, tmp_path / "a" / "talos"), new_rotation(cluster, tmp_path / "b" / "talos")
    # The later rotation claims first: a claim is first come, first served.
    assert claim(cluster, second)["claim"] == {"node": node.address, "rivals_waited_for": []}
    before = node.config_bytes()
    with pytest.raises(RotationStateError, match="this run lost the race for the cluster to CA %s .*claimed the cluster first" % (
            second["ca_fingerprint"][:16])):
        claim(cluster, first)
    assert node.config_bytes() == before
    assert not os.path.exists(first["path"]) and len(os.listdir(tmp_path / "a")) == 1
    assert os.listdir(tmp_path / "a")[0].startswith("talos.withdrawn-")


def test_two_claims_on_the_node_at_once_the_rotation_created_first_wins(sim_cluster, tmp_path):
    cluster, node = sim_cluster, sim_cluster.controlplanes[0]
    early = new_rotation(cluster, tmp_path / "early" / "talos")
    late = new_rotation(cluster, tmp_path / "late" / "talos")
    early_crt = read(early["ca_cert_path"])

    # While the later rotation's claim settles, the earlier one's lands next to it: the later one takes its CA off.
    timer = later(1.0, lambda: set_accepted(cluster, node, lambda accepted: accepted + [early_crt]))
    with pytest.raises(RotationStateError, match="lost the race .* it was created first, and both are on"):
        claim(cluster, late, settle=2.5)
    timer.join()
    assert fingerprints(node, "talos")[1:] == [early["ca_fingerprint"]]
    assert not os.path.exists(late["path"])

    # The winner's own claim: it waits until a losing rival's CA has left the node, then goes on.
    set_accepted(cluster, node, lambda accepted: [])
    latest = new_rotation(cluster, tmp_path / "latest" / "talos")
    latest_crt = read(latest["ca_cert_path"])
    timers = [later(1.0, lambda: set_accepted(cluster, node, lambda accepted: accepted + [latest_crt])),
              later(4.0, lambda: set_accepted(cluster, node, lambda accepted: [crt for crt in accepted if crt != latest_crt]))]
    won = claim(cluster, early, settle=2.0)
    for timer in timers:
        timer.join()
    assert won["claim"]["rivals_waited_for"] == [latest["ca_fingerprint"]] and not won["warnings"], won
    assert fingerprints(node, "talos")[1:] == [early["ca_fingerprint"]]
