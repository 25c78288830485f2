"""After the Kubernetes API CA rotation, every Kubernetes API user: kubeconfigs reissued keeping user and groups, new users
issued, each authenticated by every API server, the old ones refused (401); check mode changes nothing; no key in output."""

import os
import stat

import pytest

from _playbook import private_key_needles, run_playbook

from ansible_collections.talosops.pki.plugins.module_utils import _kubernetes, _pki
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig
from talos_sim import pki

KUBERNETES_ONLY = {"rotate_talos": False, "rotate_kubernetes": True}


@pytest.fixture(name="cluster")
def fixture_cluster(make_sim_cluster):
    return make_sim_cluster(controlplanes=1, workers=1, kubelet_restart_delay=0.05)


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def user_kubeconfig(cluster, path, user, groups):
    """A kubeconfig a user holds before the rotation: the cluster's server and CA, a certificate of the old CA."""
    client = pki.issue(cluster.secrets.k8s_ca, common_name=user, organizations=groups, client=True)
    with open(path, "wb") as handle:
        handle.write(cluster.render_kubeconfig(cluster.endpoint, [cluster.secrets.k8s_ca.cert_pem], client))
    os.chmod(path, 0o600)
    return str(path)


def list_nodes(path, server_ca=None):
    with _kubernetes.KubeAPI(Kubeconfig.load(str(path)).credentials(), server_ca=server_ca) as api:
        return api.nodes()


def test_users_get_kubeconfigs_from_the_new_ca_and_the_old_ones_get_401(cluster, tmp_path):
    rotation_dir = str(tmp_path / "rotation")
    holders = {"bob": (user_kubeconfig(cluster, tmp_path / "bob.kubeconfig", "bob", ["developers"]), ["developers"]),
               "ci": (user_kubeconfig(cluster, tmp_path / "ci.kubeconfig", "ci", ["system:masters"]), ["system:masters"])}
    handout = tmp_path / "handout"
    extra_vars = dict(KUBERNETES_ONLY, rotate_ca_kubeconfig=str(tmp_path / "admin.kubeconfig"),
                      rotate_ca_kubeconfigs=[{"path": path} for path, _groups in holders.values()],
                      rotate_ca_kubeconfig_users=[{"name": "alice", "groups": ["viewers"], "path": str(handout / "alice")},
                                                  {"name": "ops", "groups": ["system:masters"], "path": str(handout / "ops"),
                                                   "lifetime": 720}])
    before = {path: read(path) for path, _groups in holders.values()}

    dry = run_playbook(cluster, rotation_dir, "--check", "--diff", extra_vars=extra_vars)
    assert dry.returncode == 0, dry.output[-6000:]
    assert {path: read(path) for path in before} == before and not handout.exists()
    assert "context admin@%s: would be reissued, user bob, groups developers" % cluster.name in dry.output
    assert "context alice@%s: would be issued, user alice, groups viewers" % cluster.name in dry.output

    run = run_playbook(cluster, rotation_dir, "--diff", "-vvv", extra_vars=extra_vars)
    assert run.returncode == 0, run.output[-6000:]
    new_ca = read(os.path.join(rotation_dir, "kubernetes", "ca.crt"))
    for user, (path, groups) in holders.items():
        credentials = Kubeconfig.load(path).credentials()
        facts = _pki.describe_certificate(credentials.crt)
        assert (facts["common_name"], facts["organization"]) == (user, groups)
        assert _pki.is_issued_by(credentials.crt, new_ca) and stat.S_IMODE(os.stat(path).st_mode) == 0o600
        listing = list_nodes(path)
        assert listing.kind == (_kubernetes.OK if "system:masters" in groups else _kubernetes.FORBIDDEN), listing.detail
        backups = [name for name in os.listdir(tmp_path) if name.startswith(os.path.basename(path) + ".bak-")]
        assert len(backups) == 1, backups
        backup = os.path.join(tmp_path, backups[0])
        assert read(backup) == before[path] and stat.S_IMODE(os.stat(backup).st_mode) == 0o600
        refused = list_nodes(backup, server_ca=new_ca)  # trust the new server certificates: judge the old client one
        assert refused.kind == _kubernetes.UNAUTHORIZED, refused.detail
    for user, groups, expected in (("alice", ["viewers"], _kubernetes.FORBIDDEN), ("ops", ["system:masters"], _kubernetes.OK)):
        path = str(handout / user)
        credentials = Kubeconfig.load(path).credentials("%s@%s" % (user, cluster.name))
        facts = _pki.describe_certificate(credentials.crt)
        assert (facts["common_name"], facts["organization"]) == (user, groups)
        assert list_nodes(path).kind == expected
    assert "prove each kubeconfig is authenticated by every API server" in run.output
    assert "context ops@%s: issued, user ops, groups system:masters" % cluster.name in run.output
    needles = private_key_needles(read(os.path.join(rotation_dir, "kubernetes", "ca.key")), cluster.secrets.k8s_ca.key_pem,
                                  *(Kubeconfig.load(path).credentials().key for path, _groups in holders.values()),
                                  Kubeconfig.load(str(handout / "ops")).credentials().key)
    for output in (dry.output, run.output):
        assert not [needle for needle in needles if needle in output], "private key material in the output"


def test_a_missing_kubeconfig_to_reissue_is_refused_before_any_change(cluster, tmp_path):
    configs = {node.name: node.config_bytes() for node in cluster.nodes}
    missing = str(tmp_path / "missing")
    refused = run_playbook(cluster, str(tmp_path / "rotation"), extra_vars=dict(KUBERNETES_ONLY, rotate_ca_kubeconfigs=[{"path": missing}]))
    assert refused.returncode != 0 and missing in refused.output and "Traceback" not in refused.output
    assert {node.name: node.config_bytes() for node in cluster.nodes} == configs
