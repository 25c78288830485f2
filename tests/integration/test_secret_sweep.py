"""Secret sweep: a whole rotation of both CAs, in check mode and for real at -vvv --diff, leaves no private key and
no other cluster secret (trustd and bootstrap tokens, cluster secret, encryption secret) anywhere it should not be -
not in the output, not in temporary directories, not in any file of the rotation directory other than the few that
hold keys by design (0600)."""

import os

from _playbook import cluster_private_keys, cluster_secret_values, private_key_needles, run_playbook

from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import TalosConfig

# Files of the rotation directory that hold a key by design; everything else there must not.
KEY_FILES = {"ca.key", "previous-ca.key", "talosconfig", "previous-talosconfig", "kubeconfig", "previous-kubeconfig", "new-ca-kubeconfig"}


def all_private_keys(cluster, rotation_dir):
    """Every private key of the cluster's secrets bundle, its talosconfig and kubeconfig, and the rotation's."""
    keys = cluster_private_keys(cluster)
    for kind, names in (("talos", ("talosconfig", "previous-talosconfig")), ("kubernetes", ("kubeconfig", "previous-kubeconfig"))):
        folder = os.path.join(rotation_dir, kind)
        if not os.path.isdir(folder):
            continue
        with open(os.path.join(folder, "ca.key"), "rb") as handle:
            keys.append(handle.read())
        for name in names:
            path = os.path.join(folder, name)
            if os.path.exists(path):
                keys.append(TalosConfig.load(path).get_context().key if kind == "talos" else Kubeconfig.load(path).credentials().key)
    return keys


def leaks(text, needles):
    return sorted(needle for needle in needles if needle in text)


def test_no_private_key_in_output_temp_files_or_rotation_state(make_sim_cluster, tmp_path, monkeypatch):
    # Both config shapes at once: v1.13 (secrets inline in v1alpha1) and v1.15 (v1.14+ documents, raw PEM keys).
    cluster = make_sim_cluster(controlplanes=2, workers=2, talos_version=["v1.13.4", "v1.15.0", "v1.15.0", "v1.13.4"],
                               kubelet_restart_delay=0.05)
    rotation_dir = str(tmp_path / "rotation")
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # every temporary file of the runs lands here, to be searched
    old_keys = all_private_keys(cluster, rotation_dir)
    variables = {"rotate_kubernetes": True, "rotate_ca_kubeconfig": str(cluster.kubeconfig_path),
                 "rotate_ca_secrets_file": str(cluster.secrets_path)}

    secrets = cluster_secret_values(cluster)
    assert len(secrets) >= 6

    check = run_playbook(cluster, rotation_dir, "--check", "--diff", "-vvv", extra_vars=variables)
    assert check.returncode == 0, check.output[-6000:]
    assert "Config diff" in check.output  # the nodes' dry-run diffs are in the output: the search below means something
    assert not leaks(check.output, secrets), "cluster secrets in the check-mode output"
    assert not os.listdir(temp), "check mode left temporary files behind: %s" % os.listdir(temp)
    real = run_playbook(cluster, rotation_dir, "--diff", "-vvv", extra_vars=variables)
    assert real.returncode == 0, real.output[-6000:]

    needles = private_key_needles(*(old_keys + all_private_keys(cluster, rotation_dir))) | secrets
    assert len(needles) > 60  # old and new keys of both CAs and both admin credentials: the search could fail
    for name, text in (("check-mode output", check.output), ("output", real.output)):
        assert not leaks(text, needles), "private key material or cluster secrets in the %s" % name
    searched = 0
    for folder, _dirs, names in os.walk(tmp_path):
        for name in names:
            path = os.path.join(folder, name)
            in_rotation_dir = path.startswith(rotation_dir + os.sep)
            if in_rotation_dir and name in KEY_FILES:
                assert os.stat(path).st_mode & 0o777 == 0o600, path
                continue
            with open(path, "rb") as handle:
                text = handle.read().decode("utf-8", "replace")
            searched += 1
            assert not leaks(text, needles), "private key material or cluster secrets in %s" % path
    assert searched >= 6  # rotation.json, audit.jsonl, ca.crt, previous-ca.crt of both kinds at least
