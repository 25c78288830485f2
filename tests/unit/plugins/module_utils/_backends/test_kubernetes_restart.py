"""talos_kubernetes_restart's backend: the request `kubectl rollout restart` sends, once per CA, dry run in check mode."""

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.talosops.pki.plugins.module_utils._backends import kubernetes_restart  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError  # noqa: E402  pylint: disable=wrong-import-position

from _fake_kube_api import FakeKubeAPI  # noqa: E402  pylint: disable=wrong-import-position,import-error

FINGERPRINT = "ab" * 32


@pytest.fixture(name="api")
def fixture_api():
    ca = _pki.generate_ca("kubernetes")
    with FakeKubeAPI(ca, [ca]) as api:
        api.client = _pki.issue_client_certificate(ca, roles=["system:masters"])
        api.add_workload("daemonsets", "kube-system", "kube-proxy", {"keep": "me"})
        api.add_workload("deployments", "kube-system", "coredns")
        yield api


def params(api, tmp_path, workloads, **overrides):
    values = {name: spec.get("default") for name, spec in kubernetes_restart.ARGUMENT_SPEC.items()}
    values.update(kubeconfig=api.kubeconfig(tmp_path / "kc", api.client), ca_fingerprint=FINGERPRINT, workloads=workloads)
    values.update(overrides)
    return values


WORKLOADS = [{"namespace": "kube-system", "kind": "daemonset", "name": "kube-proxy"},
             {"namespace": "kube-system", "kind": "deployment", "name": "coredns"}]


def test_patches_the_pod_template_as_kubectl_rollout_restart_does(api, tmp_path):
    result = kubernetes_restart.run(params(api, tmp_path, WORKLOADS))
    assert result["changed"] and not result.get("failed")
    patches = [request for request in api.requests if request["method"] == "PATCH"]
    assert [request["path"] for request in patches] == ["/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy",
                                                        "/apis/apps/v1/namespaces/kube-system/deployments/coredns"]
    assert all(request["content_type"] == "application/strategic-merge-patch+json" for request in patches)
    annotations = patches[0]["body"]["spec"]["template"]["metadata"]["annotations"]
    assert patches[0]["body"] == {"spec": {"template": {"metadata": {"annotations": annotations}}}}
    assert annotations["talosops.pki/restarted-for-kubernetes-ca"] == FINGERPRINT
    assert annotations["kubectl.kubernetes.io/restartedAt"].endswith("Z")
    assert "dryRun" not in patches[0]["query"]
    stored = api.workloads[("daemonsets", "kube-system", "kube-proxy")]["spec"]["template"]["metadata"]["annotations"]
    assert stored["keep"] == "me" and stored["talosops.pki/restarted-for-kubernetes-ca"] == FINGERPRINT


def test_rerun_restarts_nothing_again(api, tmp_path):
    kubernetes_restart.run(params(api, tmp_path, WORKLOADS))
    api.requests.clear()
    again = kubernetes_restart.run(params(api, tmp_path, WORKLOADS))
    assert not again["changed"] and not [request for request in api.requests if request["method"] == "PATCH"]


def test_check_mode_is_a_server_side_dry_run(api, tmp_path):
    result = kubernetes_restart.run(params(api, tmp_path, WORKLOADS[:1]), check_mode=True, diff=True)
    assert result["changed"] and result["workloads"][0]["dry_run"]
    patch = next(request for request in api.requests if request["method"] == "PATCH")
    assert patch["query"]["dryRun"] == ["All"]
    assert "talosops.pki/restarted-for-kubernetes-ca" not in \
        api.workloads[("daemonsets", "kube-system", "kube-proxy")]["spec"]["template"]["metadata"]["annotations"]
    before = result["diff"]["before"]["kube-system/daemonset/kube-proxy"]
    assert before == {"kubectl.kubernetes.io/restartedAt": None, "talosops.pki/restarted-for-kubernetes-ca": None}


def test_missing_workload_fails_naming_it(api, tmp_path):
    missing = [{"namespace": "kube-system", "kind": "statefulset", "name": "nope"}] + WORKLOADS[:1]
    result = kubernetes_restart.run(params(api, tmp_path, missing))
    assert result["failed"] and "statefulset kube-system/nope: not found" in result["msg"]
    assert result["workloads"][1]["changed"]  # the others are still restarted


def test_fingerprint_must_be_sha256(api, tmp_path):
    with pytest.raises(ConfigError, match="64 hex digits"):
        kubernetes_restart.run(params(api, tmp_path, WORKLOADS, ca_fingerprint="abc"))
