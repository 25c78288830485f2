"""rotate_ca_rollback end to end: back to the old CA alone from after accept, mid-swap and after swap; refused after remove.

Both flows (Talos API CA, Kubernetes API CA) and both config shapes (v1.13 fields, v1.15 documents). Each rollback must end
with every node on the old CA alone, the old credentials working and the rotation's refused, the rotation folder kept as
*.rolled-back-<time>, an audit entry, and a rerun that changes nothing.
"""

import glob
import json
import os
import time

import pytest
import yaml

from _playbook import cluster_private_keys, node_ca_fields, pem_to_der, private_key_needles, run_playbook
from _talos_state import assert_credentials, old_ca_der_of

from ansible_collections.talosops.pki.plugins.module_utils import _kubernetes, _pki
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import MachineConfig
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import TalosConfig

SHAPES = {"v1.13": "v1.13.4", "v1.15": "v1.15.0"}


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def configs_of(cluster):
    return {node.name: node.config_bytes() for node in cluster.nodes}


def settled_configs(cluster, quiet=3.0, limit=60.0):
    """The nodes' configs once no apply has landed for `quiet` seconds: after a SIGKILL of ansible-playbook, a patch
    already sent by a worker process may still land (stopping those is issue 12's item 3, not the rollback's)."""
    deadline, configs, since = time.monotonic() + limit, configs_of(cluster), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.25)
        now = configs_of(cluster)
        if now != configs:
            configs, since = now, time.monotonic()
    return configs


def audit_log(folder):
    with open(os.path.join(folder, "audit.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def rolled_back_folder(rotation_dir, kind):
    found = glob.glob(os.path.join(rotation_dir, kind + ".rolled-back-*"))
    assert len(found) == 1, found
    return found[0]


def kind_fields(node, kind):
    """(issuing fingerprint or None, accepted fingerprints) of a simulated node's CA of `kind`."""
    fields = MachineConfig.parse(node.config_bytes(), source=node.name).get_ca(kind)
    return (_pki.fingerprint(fields.issuing_crt) if fields.issuing_crt else None), [_pki.fingerprint(crt) for crt in fields.accepted]


def assert_on_old_ca_alone(cluster, kind, old, new, original):
    """Every node issues with (or, without an issuing field, accepts first) the old CA, and the new CA is nowhere."""
    for node in cluster.nodes:
        issuing, accepted = kind_fields(node, kind)
        assert new not in accepted and issuing != new, "%s still trusts the new %s CA" % (node.name, kind)
        assert (issuing, accepted) == original[node.name], "%s: %s CA fields differ from before the rotation" % (node.name, kind)
        assert old in ([issuing] if issuing else accepted)


def assert_rollback_summary(run, cluster, title, before, check=False):
    """The rollback's summary (talos_rotation_summary rollback=true): its headline, and every node's row before -> pending."""
    lines = [" ".join(line.split()) for line in run.output.splitlines()]
    count = len(cluster.nodes)
    headline = ("%s rollback, check mode: nothing was changed; %d of %d nodes would move" % (title, count, count) if check
                else "%s rotation rolled back" % title)
    assert headline in lines, run.output[-6000:]
    for node in cluster.nodes:
        assert "%s %s %s %s %s pending" % (node.name, node.address, node.machine_type, before,
                                           "would be" if check else "->") in lines, run.output[-6000:]
    # Seconds per wave from the audit log in a real run; none in check mode, which writes no entry.
    assert bool([line for line in lines if line.startswith("rollback_accept waves: controlplane ")]) is not check
    return lines


def assert_patch_order(entries, controlplanes):
    """Rollback moves, control planes before workers in each phase: workers take certificates and trust from them."""
    for phase in ("rollback_swap", "rollback_accept"):
        order = [entry["node"] in controlplanes for entry in entries if entry["event"] == "node_patched" and entry["phase"] == phase]
        assert order == sorted(order, reverse=True), "%s: a worker was patched before a control plane: %s" % (phase, order)


@pytest.mark.parametrize("shape,stop", [("v1.13", "accept"), ("v1.15", "swap")])
def test_talos_rollback_returns_every_node_to_the_old_ca_and_a_rerun_changes_nothing(make_sim_cluster, tmp_path, shape, stop):
    cluster = make_sim_cluster(controlplanes=2, workers=2, talos_version=SHAPES[shape])
    rotation_dir = str(tmp_path / "rotation")
    talos_dir = os.path.join(rotation_dir, "talos")
    original = {node.name: kind_fields(node, "talos") for node in cluster.nodes}
    talosconfig_before = read(cluster.talosconfig_path)
    phases = ["accept"] if stop == "accept" else ["accept", "swap"]
    forward = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_phases": phases})
    assert forward.returncode == 0, forward.output[-6000:]
    old = _pki.fingerprint(read(os.path.join(talos_dir, "previous-ca.crt")))
    new = _pki.fingerprint(read(os.path.join(talos_dir, "ca.crt")))
    # The old CA's key was kept with the new CA, private like it.
    assert os.stat(os.path.join(talos_dir, "previous-ca.key")).st_mode & 0o777 == 0o600
    _pki.check_key_pair(read(os.path.join(talos_dir, "previous-ca.crt")), read(os.path.join(talos_dir, "previous-ca.key")))

    # Check mode: a server-side dry run that names the moves and changes nothing, on the nodes or on disk.
    configs = configs_of(cluster)
    dry = run_playbook(cluster, rotation_dir, "--check", "-v", extra_vars={"rotate_ca_rollback": True})
    assert dry.returncode == 0, dry.output[-6000:]
    assert configs_of(cluster) == configs and os.path.isdir(talos_dir)
    assert not glob.glob(os.path.join(rotation_dir, "talos.rolled-back-*"))
    assert "Dry run summary" in dry.output
    assert_rollback_summary(dry, cluster, "Talos API CA", "swapped" if stop == "swap" else "accepted", check=True)

    back = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_rollback": True})
    assert back.returncode == 0, back.output[-6000:]
    assert_on_old_ca_alone(cluster, "talos", old, new, original)
    # The control planes issue with the old CA's own key again.
    for node in cluster.controlplanes:
        fields = MachineConfig.parse(node.config_bytes(), source=node.name).get_ca("talos")
        _pki.check_key_pair(fields.issuing_crt, fields.issuing_key)
    assert read(cluster.talosconfig_path) == talosconfig_before
    assert_credentials(cluster, cluster.talosconfig_path, works=True)
    folder = rolled_back_folder(rotation_dir, "talos")
    assert not os.path.exists(talos_dir)
    assert_credentials(cluster, os.path.join(folder, "talosconfig"), works=False, server_ca=read(os.path.join(folder, "previous-ca.crt")))
    entries = audit_log(folder)
    assert entries[-1]["event"] == "rotation_rolled_back" and entries[-1]["ca_fingerprint"] == new
    assert_patch_order(entries, {node.address for node in cluster.controlplanes})
    moved = {(entry["phase"], entry["progress_before"], entry["progress_after"]) for entry in entries
             if entry["event"] == "node_patched" and entry["phase"].startswith("rollback")}
    assert moved == ({("rollback_accept", "accepted", "pending")} if stop == "accept"
                     else {("rollback_swap", "swapped", "accepted"), ("rollback_accept", "accepted", "pending")})
    assert "old talosconfig, old server CA" in back.output and "rotation talosconfig refused" in back.output
    lines = assert_rollback_summary(back, cluster, "Talos API CA", "swapped" if stop == "swap" else "accepted")
    assert "rotation folder kept as %s (audit log inside)" % folder in lines

    configs = configs_of(cluster)
    again = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_rollback": True})
    assert again.returncode == 0, again.output[-6000:]
    assert all(counts["changed"] == 0 for counts in again.recap.values()), again.recap
    assert "nothing to roll back" in again.output.lower()
    assert configs_of(cluster) == configs

    # And the cluster can be rotated again from there, with a new CA.
    fresh = run_playbook(cluster, rotation_dir)
    assert fresh.returncode == 0, fresh.output[-6000:]
    assert _pki.fingerprint(read(os.path.join(talos_dir, "ca.crt"))) not in (old, new)


def test_talos_rollback_killed_mid_swap_then_interrupted_again_finishes_on_rerun(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=3, workers=2)
    rotation_dir = str(tmp_path / "rotation")
    talos_dir = os.path.join(rotation_dir, "talos")
    original = {node.name: kind_fields(node, "talos") for node in cluster.nodes}
    with open(cluster.inventory_path, encoding="utf-8") as handle:
        inventory = yaml.safe_load(handle)
    controlplane = list(inventory["all"]["children"]["controlplane"]["hosts"])[0]

    # Killed inside the swap: the control planes issue with the new CA, the workers still with the old one.
    mid_swap = run_playbook(cluster, rotation_dir, kill_after="Swap | make the new CA machine.ca, keep the old one accepted (control planes)@%s" % controlplane)
    assert mid_swap.returncode != 0 and "PLAY RECAP" not in mid_swap.output
    settled_configs(cluster)
    old = _pki.fingerprint(read(os.path.join(talos_dir, "previous-ca.crt")))
    new = _pki.fingerprint(read(os.path.join(talos_dir, "ca.crt")))
    progress = {node.name: kind_fields(node, "talos")[0] for node in cluster.nodes}
    assert new in progress.values() and old in progress.values(), progress

    # The rollback itself killed half-way (after the swap back, inside the drop: the control planes' wave done, not the
    # workers'), then rerun with the same command.
    killed = run_playbook(cluster, rotation_dir, kill_after="Rollback | drop the new CA from machine.acceptedCAs (control planes)@%s" % controlplane,
                          extra_vars={"rotate_ca_rollback": True})
    assert killed.returncode != 0 and "PLAY RECAP" not in killed.output
    settled_configs(cluster)
    assert os.path.isdir(talos_dir)
    rerun = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_rollback": True})
    assert rerun.returncode == 0, rerun.output[-6000:]
    assert_on_old_ca_alone(cluster, "talos", old, new, original)
    assert_credentials(cluster, cluster.talosconfig_path, works=True)
    folder = rolled_back_folder(rotation_dir, "talos")
    assert_credentials(cluster, os.path.join(folder, "talosconfig"), works=False, server_ca=read(os.path.join(folder, "previous-ca.crt")))


def test_talos_rollback_refused_after_remove_changes_nothing(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=2, workers=1)
    rotation_dir = str(tmp_path / "rotation")
    with open(cluster.inventory_path, encoding="utf-8") as handle:
        inventory = yaml.safe_load(handle)
    controlplane = list(inventory["all"]["children"]["controlplane"]["hosts"])[0]
    # Killed in the remove phase: some nodes no longer accept the old CA.
    killed = run_playbook(cluster, rotation_dir, kill_after="Remove | drop the old CA from machine.acceptedCAs (control planes)@%s" % controlplane)
    assert killed.returncode != 0
    configs = settled_configs(cluster)
    files = {name: read(os.path.join(rotation_dir, "talos", name)) for name in os.listdir(os.path.join(rotation_dir, "talos"))
             if os.path.isfile(os.path.join(rotation_dir, "talos", name))}

    refused = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_rollback": True})
    assert refused.returncode != 0
    assert "preflight refused the rotation before any change" in refused.output
    assert "cannot be rolled back" in refused.output and "rotate_ca_start_new" in refused.output
    assert "Traceback" not in refused.output
    assert configs_of(cluster) == configs
    assert {name: read(os.path.join(rotation_dir, "talos", name)) for name in files} == files

    # What the refusal says to do works: finishing the rotation.
    finish = run_playbook(cluster, rotation_dir)
    assert finish.returncode == 0, finish.output[-6000:]
    new_ca = pem_to_der(read(os.path.join(rotation_dir, "talos", "ca.crt")))
    assert all(node_ca_fields(node) == (new_ca, []) for node in cluster.nodes)
    assert old_ca_der_of(cluster) == new_ca


# --- the Kubernetes API CA ------------------------------------------------------------------------------------------------

KUBERNETES_ONLY = {"rotate_talos": False, "rotate_kubernetes": True}


def list_nodes(kubeconfig_path, server_ca=None):
    credentials = Kubeconfig.load(kubeconfig_path).credentials()
    with _kubernetes.KubeAPI(credentials, server_ca=server_ca) as api:
        return api.nodes()


def assert_kubeconfig(cluster, path, works, server_ca=None):
    """The kubeconfig's client certificate is accepted by the API (every node listed Ready), or refused (401)."""
    listing = list_nodes(path, server_ca)
    if works:
        assert listing.kind == _kubernetes.OK, listing.detail
        assert {node.name: node.ready for node in listing.value} == {node.name: "True" for node in cluster.nodes}
    else:
        assert listing.kind == _kubernetes.UNAUTHORIZED, listing.detail


@pytest.mark.parametrize("shape,stop", [("v1.13", "swap"), ("v1.15", "swap"), ("v1.15", "accept")])
def test_kubernetes_rollback_returns_every_node_to_the_old_ca(make_sim_cluster, tmp_path, shape, stop):
    cluster = make_sim_cluster(controlplanes=2, workers=2, talos_version=SHAPES[shape], kubelet_restart_delay=0.05)
    rotation_dir = str(tmp_path / "rotation")
    k8s_dir = os.path.join(rotation_dir, "kubernetes")
    original = {node.name: kind_fields(node, "kubernetes") for node in cluster.nodes}
    kubeconfig_before = read(cluster.kubeconfig_path)
    variables = dict(KUBERNETES_ONLY, rotate_ca_kubeconfig=str(cluster.kubeconfig_path))
    phases = ["accept"] if stop == "accept" else ["accept", "swap"]
    forward = run_playbook(cluster, rotation_dir, extra_vars=dict(variables, rotate_ca_phases=phases))
    assert forward.returncode == 0, forward.output[-6000:]
    old = _pki.fingerprint(read(os.path.join(k8s_dir, "previous-ca.crt")))
    new = _pki.fingerprint(read(os.path.join(k8s_dir, "ca.crt")))
    assert os.stat(os.path.join(k8s_dir, "previous-ca.key")).st_mode & 0o777 == 0o600

    configs = configs_of(cluster)
    dry = run_playbook(cluster, rotation_dir, "--check", "-v", extra_vars=dict(variables, rotate_ca_rollback=True))
    assert dry.returncode == 0, dry.output[-6000:]
    assert configs_of(cluster) == configs and os.path.isdir(k8s_dir)
    assert_rollback_summary(dry, cluster, "Kubernetes API CA", "swapped" if stop == "swap" else "accepted", check=True)

    back = run_playbook(cluster, rotation_dir, extra_vars=dict(variables, rotate_ca_rollback=True))
    assert back.returncode == 0, back.output[-6000:]
    assert_on_old_ca_alone(cluster, "kubernetes", old, new, original)
    assert read(cluster.kubeconfig_path) == kubeconfig_before
    folder = rolled_back_folder(rotation_dir, "kubernetes")
    old_ca_pem = read(os.path.join(folder, "previous-ca.crt"))
    # The kubeconfig from before the rotation works against every node's old-CA serving certificate; the new CA's is refused.
    assert_kubeconfig(cluster, cluster.kubeconfig_path, works=True, server_ca=old_ca_pem)
    if stop == "swap":
        assert "new-CA kubeconfig refused" in back.output
        assert_kubeconfig(cluster, os.path.join(folder, "new-ca-kubeconfig"), works=False, server_ca=old_ca_pem)
    entries = audit_log(folder)
    assert entries[-1]["event"] == "rotation_rolled_back"
    assert_patch_order(entries, {node.address for node in cluster.controlplanes})
    assert_rollback_summary(back, cluster, "Kubernetes API CA", "swapped" if stop == "swap" else "accepted")

    configs = configs_of(cluster)
    again = run_playbook(cluster, rotation_dir, extra_vars=dict(variables, rotate_ca_rollback=True))
    assert again.returncode == 0, again.output[-6000:]
    assert all(counts["changed"] == 0 for counts in again.recap.values()), again.recap
    assert configs_of(cluster) == configs


def test_kubernetes_rollback_refused_after_remove_then_finishing_works(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=1, workers=2, talos_version="v1.15.0", kubelet_restart_delay=0.05)
    rotation_dir = str(tmp_path / "rotation")
    variables = dict(KUBERNETES_ONLY, rotate_ca_kubeconfig=str(cluster.kubeconfig_path))
    with open(cluster.inventory_path, encoding="utf-8") as handle:
        inventory = yaml.safe_load(handle)
    controlplane = list(inventory["all"]["children"]["controlplane"]["hosts"])[0]
    killed = run_playbook(cluster, rotation_dir, extra_vars=variables,
                          kill_after="Remove | drop the old Kubernetes CA from the accepted CAs (control planes, one at a time)@%s" % controlplane)
    assert killed.returncode != 0
    configs = settled_configs(cluster)

    refused = run_playbook(cluster, rotation_dir, extra_vars=dict(variables, rotate_ca_rollback=True))
    assert refused.returncode != 0
    assert "cannot be rolled back" in refused.output and "rotate_ca_start_new" in refused.output
    assert "Traceback" not in refused.output
    assert configs_of(cluster) == configs

    finish = run_playbook(cluster, rotation_dir, extra_vars=variables)
    assert finish.returncode == 0, finish.output[-6000:]
    new = _pki.fingerprint(read(os.path.join(rotation_dir, "kubernetes", "ca.crt")))
    for node in cluster.nodes:
        issuing, accepted = kind_fields(node, "kubernetes")
        assert (issuing, accepted) in ((new, []), (None, [new]))


def test_both_cas_rolled_back_from_mid_swap_without_a_key_in_verbose_diff_output(make_sim_cluster, tmp_path):
    """Both flows stopped inside the Kubernetes swap (the Talos API CA swapped), rolled back in one run at -vvv --diff."""
    cluster = make_sim_cluster(controlplanes=2, workers=2, talos_version="v1.13.4", kubelet_restart_delay=0.05)
    rotation_dir = str(tmp_path / "rotation")
    variables = {"rotate_kubernetes": True, "rotate_ca_kubeconfig": str(cluster.kubeconfig_path)}
    original = {kind: {node.name: kind_fields(node, kind) for node in cluster.nodes} for kind in ("talos", "kubernetes")}
    with open(cluster.inventory_path, encoding="utf-8") as handle:
        inventory = yaml.safe_load(handle)
    controlplane = list(inventory["all"]["children"]["controlplane"]["hosts"])[0]
    killed = run_playbook(cluster, rotation_dir, extra_vars=dict(variables, rotate_ca_phases=["accept", "swap"]),
                          kill_after="Swap | make the new Kubernetes CA the issuing CA, keep the old one accepted (control planes, one at a time)@%s"
                          % controlplane)
    assert killed.returncode != 0 and "PLAY RECAP" not in killed.output
    settled_configs(cluster)
    fingerprints = {kind: (_pki.fingerprint(read(os.path.join(rotation_dir, kind, "previous-ca.crt"))),
                           _pki.fingerprint(read(os.path.join(rotation_dir, kind, "ca.crt")))) for kind in ("talos", "kubernetes")}
    issuing = {kind_fields(node, "kubernetes")[0] for node in cluster.controlplanes}
    assert fingerprints["kubernetes"][1] in issuing, "no control plane swapped to the new Kubernetes CA before the kill"
    keys = cluster_private_keys(cluster)
    for kind in ("talos", "kubernetes"):
        keys += [read(os.path.join(rotation_dir, kind, name)) for name in ("ca.key", "previous-ca.key")]
    keys.append(TalosConfig.load(os.path.join(rotation_dir, "talos", "talosconfig")).get_context().key)

    back = run_playbook(cluster, rotation_dir, "--diff", "-vvv", extra_vars=dict(variables, rotate_ca_rollback=True))
    assert back.returncode == 0, back.output[-6000:]
    for kind in ("talos", "kubernetes"):
        assert_on_old_ca_alone(cluster, kind, *fingerprints[kind], original[kind])
        assert entries_end_rolled_back(rolled_back_folder(rotation_dir, kind))
    assert back.output.index("Rollback | the Kubernetes API CA rotation in progress") < back.output.index("Rollback | the rotation in progress")
    assert_credentials(cluster, cluster.talosconfig_path, works=True)
    old_k8s_ca = read(os.path.join(rolled_back_folder(rotation_dir, "kubernetes"), "previous-ca.crt"))
    assert_kubeconfig(cluster, cluster.kubeconfig_path, works=True, server_ca=old_k8s_ca)
    assert_kubeconfig(cluster, os.path.join(rolled_back_folder(rotation_dir, "kubernetes"), "new-ca-kubeconfig"), works=False,
                      server_ca=old_k8s_ca)
    needles = private_key_needles(*keys)
    assert len(needles) > 40
    assert not sorted(needle for needle in needles if needle in back.output), "private key material in the rollback's output"


def entries_end_rolled_back(folder):
    return audit_log(folder)[-1]["event"] == "rotation_rolled_back"


def test_rollback_with_start_new_is_refused_before_any_node_is_contacted(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=1, workers=1)
    rotation_dir = str(tmp_path / "rotation")
    forward = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_phases": ["accept"]})
    assert forward.returncode == 0, forward.output[-6000:]
    configs = configs_of(cluster)
    both = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_rollback": True, "rotate_ca_start_new": True})
    assert both.returncode != 0
    assert "rotate_ca_rollback and rotate_ca_start_new are both true" in both.output and "Traceback" not in both.output
    assert "Preflight" not in both.output
    assert configs_of(cluster) == configs and os.path.isdir(os.path.join(rotation_dir, "talos"))
