"""Accepted CAs left by an aborted `talosctl rotate-ca` (which makes a new CA on every run): listed by the preflight,
kept by default, dropped in the remove phase only when asked (rotate_ca_remove_stray_cas)."""

import json
import os

from talos_sim.testing import admin_credentials, apply_request, call

from _playbook import node_ca_fields, pem_to_der, run_playbook
from _talos_state import assert_credentials, assert_rotated, old_ca_der_of

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import MachineConfig

APPLY = "/machine.MachineService/ApplyConfiguration"
KEPT = "the rotation keeps them; to drop them in the remove phase, set rotate_ca_remove_stray_cas=true"
REMOVED = "they are removed in the remove phase (remove_stray_cas)"


def add_accepted_ca(cluster, node, crt):
    """What an aborted `talosctl rotate-ca` leaves on the nodes it reached: one more accepted Talos API CA."""
    config = MachineConfig.parse(node.config_bytes(), node.name)
    fields = config.get_ca("talos")
    config.set_ca("talos", fields.issuing_crt, fields.issuing_key, tuple(fields.accepted) + (crt,))
    call(admin_credentials(cluster), cluster.endpoint, APPLY, apply_request(config.to_bytes()), node=node.address)


def test_stray_cas_are_listed_kept_by_default_and_removed_only_when_asked(sim_cluster, tmp_path):
    cluster = sim_cluster
    rotation_dir = str(tmp_path / "rotation")
    old_ca = old_ca_der_of(cluster)
    stray = _pki.generate_ca("talos")
    fingerprint = _pki.fingerprint(stray.crt)
    reached = cluster.controlplanes[:2] + cluster.workers[:1]
    for node in reached:
        add_accepted_ca(cluster, node, stray.crt)
    listed = "talos CA: 1 accepted CA(s) are neither the current nor the new CA - %s (" % fingerprint[:16]
    on_nodes = "on %s." % ", ".join("%s (%s)" % (node.name, node.address) for node in reached)

    check = run_playbook(cluster, rotation_dir, "--check")
    assert check.returncode == 0, check.output[-6000:]
    flat = " ".join(check.output.split())  # warnings are wrapped to the terminal width
    assert listed in flat and on_nodes in flat and KEPT in flat, check.output[-6000:]

    rotated = run_playbook(cluster, rotation_dir)
    assert rotated.returncode == 0, rotated.output[-6000:]
    new_ca = assert_rotated(cluster, rotation_dir, old_ca)
    for node in cluster.nodes:
        expected = [pem_to_der(stray.crt)] if node in reached else []
        assert node_ca_fields(node)[1] == expected, "%s: strays must be kept unless asked" % node.name

    before = audit_entries(rotation_dir)
    # Asked: a rerun of the finished rotation drops them in its remove phase, on exactly the nodes that had them.
    removed = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_remove_stray_cas": True})
    assert removed.returncode == 0, removed.output[-6000:]
    assert REMOVED in " ".join(removed.output.split()), removed.output[-6000:]
    # The wave tasks report on the play's first host: which nodes changed, the audit log says (what this run added).
    changed = {entry["node"] for entry in audit_entries(rotation_dir)[len(before):] if entry["event"] == "node_patched"}
    assert changed == {node.address for node in reached}, removed.output[-6000:]
    for node in cluster.nodes:
        assert node_ca_fields(node) == (new_ca, []), node.name
    assert_credentials(cluster, cluster.talosconfig_path, works=True)

    again = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_remove_stray_cas": True})
    assert again.returncode == 0 and all(counts["changed"] == 0 for counts in again.recap.values()), again.output[-4000:]
    assert "accepted CA(s) are neither the current nor the new CA" not in again.output


def audit_entries(rotation_dir):
    with open(os.path.join(rotation_dir, "talos", "audit.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]
