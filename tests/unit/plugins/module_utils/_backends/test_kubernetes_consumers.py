"""talos_kubernetes_consumers' pure helpers, without an API server: which Secrets a pod reads, which workload owns it,
which caBundles hold a CA, the aggregated APIs, and the lines and notes printed."""

import base64

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._backends import kubernetes_consumers as consumers
from ansible_collections.talosops.pki.plugins.module_utils._backends import kubernetes_restart


@pytest.fixture(scope="module", name="cas")
def fixture_cas():
    return _pki.generate_ca(_pki.KIND_KUBERNETES), _pki.generate_ca(_pki.KIND_KUBERNETES)


def test_secrets_used_covers_volumes_projected_sources_env_and_env_from():
    pod = {"spec": {
        "volumes": [{"name": "a", "secret": {"secretName": "mounted"}},
                    {"name": "b", "projected": {"sources": [{"secret": {"name": "projected"}}, {"configMap": {"name": "cm"}}]}},
                    {"name": "c", "emptyDir": {}}],
        "initContainers": [{"name": "init", "envFrom": [{"secretRef": {"name": "from-init"}}]}],
        "containers": [{"name": "main", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "env", "key": "k"}}},
                                                {"name": "Y", "value": "plain"}]}]}}
    assert consumers.secrets_used(pod) == {"mounted", "projected", "from-init", "env"}
    assert consumers.secrets_used({}) == set()


@pytest.mark.parametrize("owner, labels, expected", [
    ({"kind": "ReplicaSet", "name": "web-5d9c7", "controller": True}, {"pod-template-hash": "5d9c7"}, ("deployment", "web")),
    ({"kind": "DaemonSet", "name": "agent", "controller": True}, {}, ("daemonset", "agent")),
    ({"kind": "StatefulSet", "name": "db", "controller": True}, {}, ("statefulset", "db")),
    # A ReplicaSet without a Deployment, a Job, an owner that is not the controller: nothing rollout restart can restart.
    ({"kind": "ReplicaSet", "name": "bare", "controller": True}, {}, None),
    ({"kind": "Job", "name": "once", "controller": True}, {}, None),
    ({"kind": "DaemonSet", "name": "agent"}, {}, None),
])
def test_workload_of_names_what_rollout_restart_can_restart(owner, labels, expected):
    pod = {"metadata": {"namespace": "ns", "name": "p", "labels": labels, "ownerReferences": [owner]}}
    workload = consumers.workload_of(pod)
    assert (workload and (workload["kind"], workload["name"])) == (expected and expected)
    if workload:
        assert workload["namespace"] == "ns"


def test_bundle_fingerprints_read_every_certificate_and_ignore_garbage(cas):
    old, new = cas
    bundle = base64.b64encode(old.crt + new.crt).decode()
    assert consumers.bundle_fingerprints(bundle) == (_pki.fingerprint(old.crt), _pki.fingerprint(new.crt))
    for garbage in (None, "", "not base64 !", base64.b64encode(b"no pem here").decode(), base64.b64encode(old.key).decode()):
        assert consumers.bundle_fingerprints(garbage) == ()


def test_ca_bundles_name_each_apiservice_and_webhook_holding_the_old_ca(cas):
    old, new = cas
    previous, fresh = _pki.fingerprint(old.crt), _pki.fingerprint(new.crt)
    services = [{"metadata": {"name": "v1.local"}, "spec": {}},
                {"metadata": {"name": "v1beta1.metrics.k8s.io"}, "spec": {"caBundle": base64.b64encode(old.crt + new.crt).decode()}}]
    validating = [{"metadata": {"name": "v"}, "webhooks": [
        {"name": "new-only", "clientConfig": {"caBundle": base64.b64encode(new.crt).decode()}},
        {"name": "old-only", "clientConfig": {"caBundle": base64.b64encode(old.crt).decode()}}]}]
    webhooks = {"ValidatingWebhookConfiguration": validating, "MutatingWebhookConfiguration": [{"metadata": {"name": "m"}}]}
    found = consumers.ca_bundles(services, webhooks, previous, fresh)
    assert found == [
        {"kind": "APIService", "name": "v1beta1.metrics.k8s.io", "webhook": None, "holds_new_ca": True, "certificates": 2},
        {"kind": "ValidatingWebhookConfiguration", "name": "v", "webhook": "old-only", "holds_new_ca": False, "certificates": 1}]


def test_aggregated_apis_are_the_apiservices_backed_by_a_service():
    services = [{"metadata": {"name": "v1."}, "spec": {}},
                {"metadata": {"name": "v1beta1.metrics.k8s.io"}, "spec": {"service": {"namespace": "kube-system", "name": "ms"}},
                 "status": {"conditions": [{"type": "Available", "status": "False", "reason": "MissingEndpoints",
                                            "message": "no endpoints"}]}},
                {"metadata": {"name": "v1.custom"}, "spec": {"service": {"namespace": "x", "name": "y"}}}]
    assert consumers.aggregated_apis(services) == [
        {"name": "v1beta1.metrics.k8s.io", "service": "kube-system/ms", "available": "False", "reason": "MissingEndpoints",
         "message": "no endpoints"},
        {"name": "v1.custom", "service": "x/y", "available": "Unknown", "reason": None, "message": None}]


def test_restart_lists_are_per_flow_kubernetes_by_default():
    workloads = [{"namespace": "a", "kind": "deployment", "name": "plain"},
                 {"namespace": "a", "kind": "deployment", "name": "talos", "after": ["talos"]},
                 {"namespace": "a", "kind": "deployment", "name": "both", "after": ["talos", "aggregator"]}]
    names = {kind: [item["name"] for item in kubernetes_restart.for_kind(workloads, kind)] for kind in kubernetes_restart.CA_KINDS}
    assert names == {"talos": ["talos", "both"], "kubernetes": ["plain"], "aggregator": ["both"]}


def test_lines_and_notes_say_what_to_do_and_count():
    accounts = [
        {"namespace": "kube-system", "name": "ccm", "roles": [], "failure_reason": None, "secret": "new",
         "pods": [{"namespace": "kube-system", "name": "ccm-1", "started": None, "workload": None}]},
        {"namespace": "default", "name": "refused", "roles": [], "failure_reason": "Namespace is not allowed: default",
         "secret": "missing", "pods": []}]
    report = {"talos_service_accounts": accounts, "ca_bundles": [], "aggregated_apis": [], "legacy_token_secrets": []}
    consumers.mark_listed(report, [])
    lines = consumers.report_lines("talos", report)
    assert lines[0].startswith("talos.dev ServiceAccount kube-system/ccm: its Secret holds the new CA; pod kube-system/ccm-1 "
                               "(a bare pod, started unknown)")
    assert "restart it once its Secret holds the new CA" in lines[0]
    assert "Talos refuses it: Namespace is not allowed: default" in lines[1] and "no pod reads it" in lines[1]
    assert consumers.report_notes("talos", report) == ["talos consumers: 1 pods reading a talos.dev ServiceAccount Secret"]
    empty = {key: [] for key in report}
    assert consumers.report_lines("aggregator", empty) == ["nothing found in the Kubernetes API that holds the old aggregator material"]
    assert consumers.report_notes("aggregator", empty) == ["aggregator consumers: none found"]
