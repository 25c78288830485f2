"""Files given as symbolic links are written through the link (issue 13, item 2): a talosconfig, kubeconfig or
secrets.yaml that links into a dotfiles or secrets repository keeps being a link, and the file it points at - not a new
regular file in its place - gets the new credentials and CAs, keeping its mode."""

import os
import shutil
import stat

import yaml

from _playbook import run_playbook

from ansible_collections.talosops.pki.plugins.module_utils import _kubernetes, _pki
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import SecretsBundle, TalosConfig


def linked_copy(source, target, link, relative, mode):
    """Copy `source` to `target` (mode `mode`), and make `link` point at it (relative or absolute)."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.makedirs(os.path.dirname(link), exist_ok=True)
    shutil.copyfile(source, target)
    os.chmod(target, mode)
    os.symlink(os.path.relpath(target, os.path.dirname(link)) if relative else target, link)
    return link


def test_linked_talosconfig_kubeconfig_and_secrets_are_written_through(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=1, workers=1, kubelet_restart_delay=0.05)
    dotfiles, home = str(tmp_path / "dotfiles"), str(tmp_path / "home")
    targets = {name: os.path.join(dotfiles, name) for name in ("talosconfig", "kubeconfig", "secrets.yaml")}
    links = {
        "talosconfig": linked_copy(cluster.talosconfig_path, targets["talosconfig"], os.path.join(home, ".talos", "config"),
                                   relative=True, mode=0o640),
        "kubeconfig": linked_copy(cluster.kubeconfig_path, targets["kubeconfig"], os.path.join(home, ".kube", "config"),
                                  relative=False, mode=0o600),
        "secrets.yaml": linked_copy(cluster.secrets_path, targets["secrets.yaml"], os.path.join(home, "secrets.yaml"),
                                    relative=False, mode=0o600),
    }
    old_client = TalosConfig.load(targets["talosconfig"]).get_context().crt
    old_secrets = SecretsBundle.load(targets["secrets.yaml"])
    rotation_dir = str(tmp_path / "rotation")

    run = run_playbook(cluster, rotation_dir, extra_vars={
        "rotate_kubernetes": True, "rotate_ca_talosconfig": links["talosconfig"], "talos_talosconfig": links["talosconfig"],
        "rotate_ca_kubeconfig": links["kubeconfig"], "rotate_ca_secrets_file": links["secrets.yaml"]})
    assert run.returncode == 0, run.output[-6000:]

    for name, link in links.items():
        assert os.path.islink(link), "%s was replaced by a regular file" % name
        assert os.path.realpath(link) == targets[name]
    assert stat.S_IMODE(os.stat(targets["talosconfig"]).st_mode) == 0o640, "the talosconfig target's mode was not kept"
    # The files the links point at hold the new credentials and CAs.
    talos_ca = open(os.path.join(rotation_dir, "talos", "ca.crt"), "rb").read()
    kubernetes_ca = open(os.path.join(rotation_dir, "kubernetes", "ca.crt"), "rb").read()
    new_client = TalosConfig.load(targets["talosconfig"]).get_context().crt
    assert new_client != old_client and _pki.is_issued_by(new_client, talos_ca)
    secrets = SecretsBundle.load(targets["secrets.yaml"])
    assert _pki.fingerprint(secrets.get_ca("talos")[0]) == _pki.fingerprint(talos_ca)
    assert _pki.fingerprint(secrets.get_ca("kubernetes")[0]) == _pki.fingerprint(kubernetes_ca)
    assert secrets.get_ca("talos") != old_secrets.get_ca("talos")
    credentials = Kubeconfig.load(targets["kubeconfig"]).credentials()
    assert _pki.is_issued_by(credentials.crt, kubernetes_ca)
    with _kubernetes.KubeAPI(credentials) as api:
        assert api.nodes().kind == _kubernetes.OK
    # Nothing but the links and their backups next to them; the summaries name the links as updated, which they are.
    assert sorted(name for name in os.listdir(os.path.join(home, ".kube")) if not name.startswith("config.bak-")) == ["config"]
    assert sorted(os.listdir(os.path.join(home, ".talos"))) == ["config"]
    assert "talosconfig %s: updated;" % links["talosconfig"] in run.output
    assert "kubeconfig %s: updated;" % links["kubeconfig"] in run.output
    # The untouched original copies are not what was written: the write went to the targets only.
    assert yaml.safe_load(open(cluster.secrets_path, encoding="utf-8")) != yaml.safe_load(open(targets["secrets.yaml"], encoding="utf-8"))
