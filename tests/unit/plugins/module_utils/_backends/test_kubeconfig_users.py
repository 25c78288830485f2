"""talos_kubeconfig for users other than the admin: certificates issued here (CN = user, O = groups), reissue in place."""

import datetime
import os
import stat

import pytest
from test_kubeconfig import Cluster, render  # pylint: disable=import-error

from ansible_collections.talosops.pki.plugins.module_utils import _pki, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._backends import kubeconfig
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig


@pytest.fixture(name="cluster")
def fixture_cluster(monkeypatch, tmp_path):
    """A cluster whose Kubernetes API CA has just been rotated (old -> new), with the rotation directory on disk."""
    cluster = Cluster()
    cluster.rotation = _rotation_store.create(str(tmp_path / "rotation" / "kubernetes"), "kubernetes", cluster.old.crt, cluster.new)
    cluster.issuing, cluster.trusted = cluster.new, [cluster.new]

    class FakeTarget:
        endpoints = ("10.5.0.2",)

        def __init__(self, params, sealing=None):
            self.params, self.sealing = params, sealing

    async def fake_fetch(_target, node):
        return cluster.fetch()

    monkeypatch.setattr(kubeconfig, "Target", FakeTarget)
    monkeypatch.setattr(kubeconfig, "_fetch", fake_fetch)
    return cluster


def params(path, cluster, **overrides):
    values = {name: spec.get("default") for name, spec in kubeconfig.ARGUMENT_SPEC.items()}
    values.update(path=str(path), node="10.5.0.2", ca_dir=cluster.rotation.path)
    values.update(overrides)
    return values


def subject(path, context=None):
    facts = _pki.describe_certificate(Kubeconfig.load(str(path)).credentials(context).crt)
    return facts["common_name"], facts["organization"], facts


def test_issues_a_user_kubeconfig_with_name_and_groups(tmp_path, cluster):
    path = tmp_path / "alice" / "kubeconfig"
    result = kubeconfig.run(params(path, cluster, user="alice", groups=["dev", "view"], validity_hours=72), diff=True)
    assert result["changed"] and result["contexts"][0]["action"] == "issued" and result["contexts"][0]["context"] == "alice@prod"
    common_name, groups, facts = subject(path)
    assert (common_name, groups) == ("alice", ["dev", "view"]) and facts["extended_key_usage"] == ["client_auth"]
    credentials = Kubeconfig.load(str(path)).credentials()
    assert _pki.is_issued_by(credentials.crt, cluster.new.crt) and credentials.server == "https://10.5.0.2:6443"
    assert credentials.cluster == "prod" and credentials.user == "alice@prod"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert result["diff"]["before"] == {"alice@prod": None} and "PRIVATE" not in repr(result)
    assert result["summary"] == ["%s context alice@prod: issued, user alice, groups dev, view, expires %s" % (path, facts["not_after"])]
    again = kubeconfig.run(params(path, cluster, user="alice", groups=["dev", "view"], validity_hours=72))
    assert not again["changed"] and again["contexts"][0]["action"] == "kept"
    regrouped = kubeconfig.run(params(path, cluster, user="alice", groups=["view"], validity_hours=72))
    assert regrouped["changed"] and subject(path)[1] == ["view"]


def test_merges_beside_the_admin_and_keeps_a_backup(tmp_path, cluster):
    path = tmp_path / "config"
    path.write_bytes(render([cluster.new], _pki.issue_client_certificate(cluster.new, roles=["system:masters"])))
    before = path.read_bytes()
    result = kubeconfig.run(params(path, cluster, user="ci", groups=[], backup=True))
    document = Kubeconfig.load(str(path))
    assert document.names("contexts") == ["admin@prod", "ci@prod"] and document.current_context == "admin@prod"
    assert open(result["backup"], "rb").read() == before
    assert subject(path, "ci@prod")[:2] == ("ci", [])


def test_check_mode_writes_nothing(tmp_path, cluster):
    path = tmp_path / "kubeconfig"
    result = kubeconfig.run(params(path, cluster, user="alice", groups=["dev"]), check_mode=True)
    assert result["changed"] and not path.exists() and "would be issued" in result["summary"][0]


def test_refusals_before_anything_is_written(tmp_path, cluster):
    path = tmp_path / "kubeconfig"
    with pytest.raises(ConfigError, match="outlive the CA"):
        kubeconfig.run(params(path, cluster, user="alice", validity_hours=10 * 87600))
    with pytest.raises(ConfigError, match="need `user`"):
        kubeconfig.run(params(path, cluster, groups=["dev"]))
    with pytest.raises(ConfigError, match="give ca_dir"):
        kubeconfig.run(params(path, cluster, user="alice", ca_dir=None))
    cluster.trusted = [cluster.old]  # the rotation directory's CA is not the cluster's
    with pytest.raises(ConfigError, match="not one the cluster trusts now"):
        kubeconfig.run(params(path, cluster, user="alice"))
    assert not path.exists()


def test_reissue_keeps_each_user_and_groups_and_leaves_other_clusters(tmp_path, cluster):
    path = tmp_path / "config"
    elsewhere = _pki.generate_ca("kubernetes")
    document = Kubeconfig.parse(render([cluster.old], _pki.issue_client_certificate(cluster.old, roles=["dev"], common_name="bob"),
                                       cluster="prod"))
    document.merge(Kubeconfig.parse(render([elsewhere], _pki.issue_client_certificate(elsewhere, roles=["x"], common_name="eve"),
                                           cluster="staging", server="https://10.9.0.2:6443")))
    document.save(str(path))
    staging_before = Kubeconfig.load(str(path)).credentials("admin@staging")
    result = kubeconfig.run(params(path, cluster, reissue=True, backup=True), diff=True)
    assert result["changed"] and [item["context"] for item in result["contexts"]] == ["admin@prod"]
    common_name, groups, _facts = subject(path, "admin@prod")
    assert (common_name, groups) == ("bob", ["dev"])
    after = Kubeconfig.load(str(path)).credentials("admin@prod")
    assert _pki.is_issued_by(after.crt, cluster.new.crt)
    assert [_pki.fingerprint(crt) for crt in _pki.split_pem_certificates(after.ca)] == [_pki.fingerprint(cluster.new.crt)]
    assert Kubeconfig.load(str(path)).credentials("admin@staging") == staging_before
    assert result["backup"] and "PRIVATE" not in repr(result)
    assert not kubeconfig.run(params(path, cluster, reissue=True))["changed"]


def test_reissue_refuses_a_file_without_this_cluster(tmp_path, cluster):
    path = tmp_path / "config"
    elsewhere = _pki.generate_ca("kubernetes")
    path.write_bytes(render([elsewhere], _pki.issue_client_certificate(elsewhere, roles=["x"], common_name="eve")))
    with pytest.raises(ConfigError, match="no context of this cluster"):
        kubeconfig.run(params(path, cluster, reissue=True))


def test_a_near_expiry_user_certificate_is_renewed(tmp_path, cluster):
    path = tmp_path / "kubeconfig"
    kubeconfig.run(params(path, cluster, user="alice", validity_hours=48))
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=40)
    renewed = kubeconfig._run_issuing(  # pylint: disable=protected-access
        params(path, cluster, user="alice", validity_hours=48), str(path), False, False, now=later)
    assert renewed["changed"] and "expires" in renewed["contexts"][0]["reason"]


def test_check_mode_before_the_rotation_completes_previews_its_end(tmp_path, cluster):
    cluster.issuing, cluster.trusted = cluster.old, [cluster.old]  # the new CA of the rotation directory is not trusted yet
    path = tmp_path / "kubeconfig"
    preview = kubeconfig.run(params(path, cluster, user="alice"), check_mode=True)
    assert preview["changed"] and "once the rotation completes" in preview["preview"] and not path.exists()
    assert preview["contexts"][0]["ca_fingerprints"] == [_pki.fingerprint(cluster.new.crt)]
    with pytest.raises(ConfigError, match="not one the cluster trusts now"):
        kubeconfig.run(params(path, cluster, user="alice"))
