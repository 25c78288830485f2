"""The talosops.pki.talos inventory plugin finds a rotation in progress in its rotation folder: one inventory file
works for every phase run as a separate job, also once the nodes serve with the new CA (before the remove phase)."""

import os
import subprocess

import yaml

from _playbook import node_ca_fields, pem_to_der, run_playbook
from test_inventory_plugin import ANSIBLE_INVENTORY, plain


def test_one_inventory_file_for_every_phase_run_as_a_separate_job(sim_cluster, tmp_path, monkeypatch):
    cluster = sim_cluster
    # An inventory source that fails to parse must fail the run, not leave it without hosts.
    monkeypatch.setenv("ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED", "true")
    rotation_dir = str(tmp_path / "rotation")
    inventory = str(tmp_path / "cluster.talos.yml")
    with open(inventory, "w", encoding="utf-8") as handle:
        yaml.safe_dump({"plugin": "talosops.pki.talos", "talosconfig": cluster.talosconfig_path, "rotation_dir": rotation_dir},
                       handle)

    for phase in ("accept", "swap", "remove"):
        run = run_playbook(cluster, rotation_dir, inventory=inventory, extra_vars={"rotate_ca_phases": [phase]})
        assert run.returncode == 0, "%s phase: %s" % (phase, run.output[-6000:])
        assert len(run.recap) == len(cluster.nodes), run.output[-3000:]
    with open(os.path.join(rotation_dir, "talos", "ca.crt"), "rb") as handle:
        new_ca = pem_to_der(handle.read())
    for node in cluster.nodes:
        assert node_ca_fields(node) == (new_ca, []), node.name

    # The folder becomes the role's rotate_ca_dir, so a job needs no extra variable for it.
    listed = subprocess.run([ANSIBLE_INVENTORY, "-i", inventory, "--list"], capture_output=True, text=True, timeout=300, check=True,
                            env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    assert plain(yaml.safe_load(listed.stdout))["_meta"]["hostvars"][cluster.nodes[0].name]["rotate_ca_dir"] == rotation_dir
