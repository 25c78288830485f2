"""talos_kubeconfig's backend: keep a file that fits the current PKI, replace it when the rotation changes trust."""

import base64
import os

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._backends import kubeconfig
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig


def b64(data):
    return base64.b64encode(data).decode()


def render(cas, client, cluster="prod", server="https://10.5.0.2:6443"):
    return ("apiVersion: v1\nkind: Config\nclusters:\n- name: %s\n  cluster:\n    server: %s\n    certificate-authority-data: %s\n"
            "users:\n- name: admin@%s\n  user:\n    client-certificate-data: %s\n    client-key-data: %s\n"
            "contexts:\n- name: admin@%s\n  context:\n    cluster: %s\n    namespace: default\n    user: admin@%s\n"
            "current-context: admin@%s\npreferences: {}\n" % (cluster, server, b64(b"".join(ca.crt for ca in cas)), cluster,
                                                              b64(client.crt), b64(client.key), cluster, cluster, cluster, cluster)).encode()


class Cluster:
    """What the node answers: a new kubeconfig per call from the issuing CA, CA data = the accepted CAs."""

    def __init__(self):
        self.old, self.new = _pki.generate_ca("kubernetes"), _pki.generate_ca("kubernetes")
        self.issuing, self.trusted, self.calls = self.old, [self.old], 0

    def fetch(self):
        self.calls += 1
        client = _pki.issue_client_certificate(self.issuing, roles=["system:masters"])
        return render(self.trusted, client), {"issuing_ca": {"crt": self.issuing.crt, "key": b""}, "accepted_cas": []}


@pytest.fixture(name="cluster")
def fixture_cluster(monkeypatch):
    cluster = Cluster()

    class FakeTarget:
        endpoints = ("10.5.0.2",)

        def __init__(self, params, sealing=None):
            self.params, self.sealing = params, sealing

    async def fake_fetch(_target, node):
        assert node == "10.5.0.2"
        return cluster.fetch()

    monkeypatch.setattr(kubeconfig, "Target", FakeTarget)
    monkeypatch.setattr(kubeconfig, "_fetch", fake_fetch)
    return cluster


def params(path, **overrides):
    values = {name: spec.get("default") for name, spec in kubeconfig.ARGUMENT_SPEC.items()}
    values.update(path=str(path), node="10.5.0.2")
    values.update(overrides)
    return values


def test_writes_0600_then_keeps_what_still_fits(tmp_path, cluster):
    path = tmp_path / "kubeconfig"
    first = kubeconfig.run(params(path))
    assert first["changed"] and first["replaced_because"] == "the file has no context admin@prod yet"
    assert os.stat(path).st_mode & 0o777 == 0o600
    content = path.read_bytes()
    second = kubeconfig.run(params(path))
    assert not second["changed"] and "already fits" in second["kept"] and path.read_bytes() == content
    assert second["client_certificate"]["issued_by_current_ca"]


def test_swap_and_removal_replace_the_file(tmp_path, cluster):
    path = tmp_path / "kubeconfig"
    kubeconfig.run(params(path))
    cluster.issuing, cluster.trusted = cluster.new, [cluster.old, cluster.new]
    swapped = kubeconfig.run(params(path))
    assert swapped["changed"] and swapped["replaced_because"] == "the CA data differs from the CAs the cluster trusts now"
    assert _pki.is_issued_by(Kubeconfig.load(str(path)).credentials().crt, cluster.new.crt)
    cluster.trusted = [cluster.new]
    removed = kubeconfig.run(params(path))
    assert removed["changed"] and removed["ca_fingerprints"] == [_pki.fingerprint(cluster.new.crt)]
    assert not kubeconfig.run(params(path))["changed"]


def test_a_client_certificate_from_another_ca_is_replaced(tmp_path, cluster):
    path = tmp_path / "kubeconfig"
    path.write_bytes(render([cluster.old], _pki.issue_client_certificate(cluster.new, roles=["system:masters"])))
    result = kubeconfig.run(params(path))
    assert result["changed"] and "not issued by the current issuing Kubernetes CA" in result["replaced_because"]


def test_merge_keeps_other_clusters_and_makes_a_backup(tmp_path, cluster):
    path = tmp_path / "config"
    elsewhere = _pki.generate_ca("kubernetes")
    original = render([elsewhere], _pki.issue_client_certificate(elsewhere, roles=["system:masters"]), cluster="staging",
                      server="https://10.9.0.2:6443")
    path.write_bytes(original)
    result = kubeconfig.run(params(path, backup=True))
    merged = Kubeconfig.load(str(path))
    assert merged.names("contexts") == ["admin@staging", "admin@prod"] and merged.current_context == "admin@staging"
    assert result["backup"] and open(result["backup"], "rb").read() == original
    assert os.stat(result["backup"]).st_mode & 0o777 == 0o600


def test_same_names_of_another_cluster_are_refused_unless_renamed(tmp_path, cluster):
    path = tmp_path / "config"
    elsewhere = _pki.generate_ca("kubernetes")
    original = render([elsewhere], _pki.issue_client_certificate(elsewhere, roles=["system:masters"]), server="https://10.9.0.2:6443")
    path.write_bytes(original)
    with pytest.raises(ConfigError, match="belonging to another cluster"):
        kubeconfig.run(params(path))
    assert path.read_bytes() == original
    renamed = kubeconfig.run(params(path, name="prod-eu"))
    assert renamed["changed"] and Kubeconfig.load(str(path)).names("contexts") == ["admin@prod", "prod-eu"]


def test_after_a_rotation_the_old_entries_are_still_recognised_as_ours(tmp_path, cluster):
    path = tmp_path / "config"
    kubeconfig.run(params(path))
    cluster.issuing, cluster.trusted = cluster.new, [cluster.new]  # the old client certificate is from a dropped CA
    assert kubeconfig.run(params(path))["changed"]


def test_check_mode_writes_nothing_and_diff_shows_no_key(tmp_path, cluster):
    path = tmp_path / "kubeconfig"
    result = kubeconfig.run(params(path), check_mode=True, diff=True)
    assert result["changed"] and not path.exists()
    assert result["diff"]["before"] is None and result["diff"]["after"]["client_certificate"]["issued_by_current_ca"]
    assert "PRIVATE" not in repr(result)


def test_force_false_pins_an_existing_file(tmp_path, cluster):
    path = tmp_path / "previous"
    kubeconfig.run(params(path))
    cluster.issuing, cluster.trusted = cluster.new, [cluster.new]
    calls = cluster.calls
    pinned = kubeconfig.run(params(path, force=False))
    assert not pinned["changed"] and pinned["kept"].startswith("force=false") and cluster.calls == calls
    assert pinned["ca_fingerprints"] == [_pki.fingerprint(cluster.old.crt)]
