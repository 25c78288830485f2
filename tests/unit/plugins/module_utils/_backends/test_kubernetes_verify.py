"""talos_kubernetes_verify's backend against a real HTTPS API (tests/unit/.../_fake_kube_api.py)."""

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.talosops.pki.plugins.module_utils._backends import kubernetes_verify  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError  # noqa: E402  pylint: disable=wrong-import-position

from _fake_kube_api import FakeKubeAPI, node  # noqa: E402  pylint: disable=wrong-import-position,import-error


@pytest.fixture(name="cas", scope="module")
def fixture_cas():
    return {"old": _pki.generate_ca("kubernetes"), "new": _pki.generate_ca("kubernetes")}


def admin(ca):
    return _pki.issue_client_certificate(ca, roles=["system:masters"])


def params(kubeconfig, **overrides):
    values = {name: spec.get("default") for name, spec in kubernetes_verify.ARGUMENT_SPEC.items()}
    values.update(kubeconfig=str(kubeconfig), deadline=2.0, retry_interval=0.05, request_timeout=3.0)
    values.update(overrides)
    return values


def test_reachable_reports_every_node_ready(tmp_path, cas):
    with FakeKubeAPI(cas["old"], [cas["old"]]) as api:
        api.nodes = [node("cp-1", "10.5.0.2"), node("worker-1", "10.5.0.5")]
        result = kubernetes_verify.run(params(api.kubeconfig(tmp_path / "kc", admin(cas["old"])), nodes=["10.5.0.2", "worker-1"]))
    assert not result.get("failed"), result
    assert result["ready_count"] == 2 and result["not_ready_nodes"] == [] and result["missing_nodes"] == []
    assert result["nodes"]["cp-1"] == {"ready": True, "status": "True", "reason": "KubeletReady",
                                       "message": "kubelet is posting ready status", "addresses": ["10.5.0.2", "cp-1"]}
    assert list(result["api_servers"].values())[0]["ok"]


def test_not_ready_and_missing_nodes_fail_with_their_reason(tmp_path, cas):
    with FakeKubeAPI(cas["old"], [cas["old"]]) as api:
        api.nodes = [node("cp-1", "10.5.0.2"), node("worker-1", "10.5.0.5", ready="False", reason="KubeletNotReady",
                                                    message="the kubelet does not trust the serving certificate")]
        result = kubernetes_verify.run(params(api.kubeconfig(tmp_path / "kc", admin(cas["old"])), nodes=["10.5.0.9"], deadline=0.3))
    assert result["failed"]
    assert result["not_ready_nodes"] == ["worker-1"] and result["missing_nodes"] == ["10.5.0.9"]
    assert "worker-1 (KubeletNotReady: the kubelet does not trust the serving certificate)" in result["msg"]
    assert "not registered: 10.5.0.9" in result["msg"]


def test_refused_means_401_for_this_client_certificate(tmp_path, cas):
    # The TLS layer lets the old CA through; the API no longer authenticates it, as after a rotation's removal.
    with FakeKubeAPI(cas["new"], [cas["old"], cas["new"]], authenticated_cas=[cas["new"]]) as api:
        old_kubeconfig = api.kubeconfig(tmp_path / "old", admin(cas["old"]), ca_pem=cas["old"].crt)
        refused = kubernetes_verify.run(params(old_kubeconfig, expect="refused", server_ca=[str(_write(tmp_path / "new.crt", cas["new"].crt))]))
        still = kubernetes_verify.run(params(api.kubeconfig(tmp_path / "new", admin(cas["new"])), expect="refused", deadline=0.3))
    assert not refused.get("failed"), refused
    assert "401" in list(refused["api_servers"].values())[0]["detail"] and refused["nodes"] == {}
    assert still["failed"] and "still authenticates this client certificate" in still["msg"]


def test_a_tls_failure_proves_nothing(tmp_path, cas):
    # The old kubeconfig's CA data does not verify the server's new certificate: no proof either way.
    with FakeKubeAPI(cas["new"], [cas["old"], cas["new"]], authenticated_cas=[cas["new"]]) as api:
        old_kubeconfig = api.kubeconfig(tmp_path / "old", admin(cas["old"]), ca_pem=cas["old"].crt)
        result = kubernetes_verify.run(params(old_kubeconfig, expect="refused", deadline=0.3))
    assert result["failed"] and "does not verify against the CA bundle" in result["msg"]
    assert "proves nothing" in result["msg"]


def test_every_api_server_is_checked(tmp_path, cas):
    with FakeKubeAPI(cas["old"], [cas["old"]]) as first, FakeKubeAPI(cas["old"], [cas["old"]]) as second:
        first.nodes = second.nodes = [node("cp-1", "10.5.0.2")]
        result = kubernetes_verify.run(params(first.kubeconfig(tmp_path / "kc", admin(cas["old"])), api_servers=[first.url, second.url]))
        assert len(first.requests) == 1 and len(second.requests) == 1
    assert set(result["api_servers"]) == {first.url, second.url} and not result.get("failed")


def test_unreachable_server_fails_with_its_address(tmp_path, cas):
    with FakeKubeAPI(cas["old"], [cas["old"]]) as api:
        kubeconfig = api.kubeconfig(tmp_path / "kc", admin(cas["old"]))
    result = kubernetes_verify.run(params(kubeconfig, deadline=0.2))
    assert result["failed"] and "no answer" in result["msg"]


def test_token_kubeconfig_is_refused_before_any_request(tmp_path):
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters: [{name: k, cluster: {server: 'https://10.0.0.1:6443'}}]\n"
                          "users: [{name: u, user: {token: abc}}]\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n")
    with pytest.raises(ConfigError, match="client-certificate credentials"):
        kubernetes_verify.run(params(kubeconfig))


def _write(path, data):
    path.write_bytes(data)
    return path


def test_a_node_the_list_does_not_name_is_refused_at_once(tmp_path, cas):
    with FakeKubeAPI(cas["old"], [cas["old"]]) as api:
        api.nodes = [node("cp-1", "10.5.0.2"), node("worker-1", "10.5.0.5"), node("worker-9", "10.5.0.9")]
        kubeconfig = api.kubeconfig(tmp_path / "kc", admin(cas["old"]))
        refused = kubernetes_verify.run(params(kubeconfig, nodes=["10.5.0.2", "worker-1"], refuse_unlisted_nodes=True, deadline=60))
        listings = len(api.requests)
        ignored = kubernetes_verify.run(params(kubeconfig, nodes=["10.5.0.2", "worker-1"]))
    assert refused["failed"] and refused["msg"].startswith("the Kubernetes API lists Node(s) that the inventory does not: worker-9 (10.5.0.9")
    assert listings == 1  # refused on the first listing, not retried until the deadline
    assert not ignored.get("failed"), ignored


def test_refuse_unlisted_nodes_needs_the_list(tmp_path, cas):
    with pytest.raises(ConfigError, match="refuse_unlisted_nodes needs nodes"):
        kubernetes_verify.run(params(tmp_path / "kc", refuse_unlisted_nodes=True))


def test_a_node_with_a_partial_node_info_is_read(tmp_path, cas):
    """The kubernetes client's models refused a Node whose status.nodeInfo left out a NodeSystemInfo field (the whole
    list failed to deserialise); only the fields the check needs are read now."""
    with FakeKubeAPI(cas["old"], [cas["old"]]) as api:
        partial = node("worker-1", "10.5.0.5")
        partial["status"]["nodeInfo"] = {"kubeletVersion": "v1.33.0"}
        api.nodes = [node("cp-1", "10.5.0.2"), partial]
        result = kubernetes_verify.run(params(api.kubeconfig(tmp_path / "kc", admin(cas["old"])), nodes=["10.5.0.2", "10.5.0.5"]))
    assert not result.get("failed"), result
    assert result["ready_count"] == 2 and result["nodes"]["worker-1"]["ready"]
