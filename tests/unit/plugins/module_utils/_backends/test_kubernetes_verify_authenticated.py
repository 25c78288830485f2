"""talos_kubernetes_verify expect=authenticated: a user's kubeconfig is authenticated (an answer or 403), never 401."""

from ansible_collections.talosops.pki.plugins.module_utils import _pki  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.talosops.pki.plugins.module_utils._backends import kubernetes_verify  # noqa: E402  pylint: disable=wrong-import-position

from _fake_kube_api import FakeKubeAPI, node  # noqa: E402  pylint: disable=wrong-import-position,import-error


def params(kubeconfig, **overrides):
    values = {name: spec.get("default") for name, spec in kubernetes_verify.ARGUMENT_SPEC.items()}
    values.update(kubeconfig=str(kubeconfig), deadline=0.5, retry_interval=0.05, request_timeout=3.0, expect="authenticated")
    values.update(overrides)
    return values


def test_authenticated_passes_for_a_known_user_and_fails_on_401(tmp_path):
    old, new = _pki.generate_ca("kubernetes"), _pki.generate_ca("kubernetes")
    with FakeKubeAPI(new, [old, new], authenticated_cas=[new]) as api:
        api.nodes = [node("cp-1", "10.5.0.2")]
        user = _pki.issue_client_certificate(new, roles=["developers"], common_name="alice")
        known = kubernetes_verify.run(params(api.kubeconfig(tmp_path / "alice", user)))
        stale = _pki.issue_client_certificate(old, roles=["developers"], common_name="alice")
        refused = kubernetes_verify.run(params(api.kubeconfig(tmp_path / "stale", stale, ca_pem=new.crt)))
    assert not known.get("failed"), known
    assert list(known["api_servers"].values())[0]["detail"] == "authenticated (answered)"
    assert refused["failed"] and "that they authenticate this client certificate" in refused["msg"]
