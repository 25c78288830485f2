"""talos_kubernetes_consumers against the simulated kube-apiserver (v1.15 shape): what still trusts or holds the old
material after a swap, per rotation kind, read from the list endpoints the real API serves; and the simulator's
pod-template patch that talos_kubernetes_restart sends."""

import base64
import datetime
import os

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._backends import ca_generate, kubernetes_consumers, kubernetes_restart
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import TalosConfig

from _playbook import private_key_needles

from talos_sim import pki
from talos_sim.kubernetes import legacy_token_secret


def b64(pem):
    return base64.b64encode(pem).decode()


def generate(cluster, rotation_dir, kind, previous_pem):
    params = {"path": os.path.join(rotation_dir, kind), "kind": kind,
              "algorithm": "ecdsa-p256" if kind == "service_account" else None, "validity_hours": 87600,
              "previous_ca": previous_pem.decode(), "create": True, "start_new": False, "talosconfig": None,
              "secrets_file": None, "previous_talosconfig": None, "return_key": False}
    return ca_generate.run(params)


def consumers(cluster, rotation, **overrides):
    params = {"kubeconfig": cluster.refresh_kubeconfig(), "context": None, "server_ca": None, "request_timeout": 10.0,
              "rotation_dir": rotation["path"], "restart_workloads": [], "wait_for_talos_secrets": 0.0, "retry_interval": 0.2}
    params.update(overrides)
    return kubernetes_consumers.run(params, check_mode=True)


def pod(namespace, name, owner_kind, owner_name, secret=None, env_secret=None, template_hash=None):
    spec = {"containers": [{"name": "main", "image": "example/app"}], "volumes": []}
    if secret:
        spec["volumes"].append({"name": "talos-secrets", "secret": {"secretName": secret}})
    if env_secret:
        spec["containers"][0]["env"] = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": env_secret, "key": "talosconfig"}}}]
    metadata = {"namespace": namespace, "name": name,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": owner_name, "controller": True}]}
    if template_hash:
        metadata["labels"] = {"pod-template-hash": template_hash}
    return {"metadata": metadata, "spec": spec, "status": {"startTime": "2026-01-02T03:04:05Z"}}


def deployment(namespace, name):
    return {"metadata": {"namespace": namespace, "name": name},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "main"}]}}}}


@pytest.fixture(scope="module", name="cluster")
def cluster_fixture(make_module_sim_cluster):
    cluster = make_module_sim_cluster(controlplanes=1, workers=1, talos_version="v1.15.0")
    secrets = cluster.secrets
    objects = cluster.kube_objects
    objects["serviceaccounts.talos.dev"] = [
        {"metadata": {"namespace": "kube-system", "name": "talos-ccm"}, "spec": {"roles": ["os:reader"]}},
        {"metadata": {"namespace": "default", "name": "unused"}, "spec": {"roles": ["os:reader"]}},
    ]
    objects["pods"] = [
        pod("kube-system", "talos-ccm-6d4b9-x2x7q", "ReplicaSet", "talos-ccm-6d4b9", secret="talos-ccm", template_hash="6d4b9"),
        pod("kube-system", "backup-0", "StatefulSet", "backup", env_secret="talos-ccm"),
        pod("kube-system", "other-7f7f7-abcde", "ReplicaSet", "other-7f7f7", secret="something-else", template_hash="7f7f7"),
        pod("default", "talos-ccm-in-another-namespace", "DaemonSet", "agent", secret="talos-ccm"),
    ]
    objects["apiservices.apiregistration.k8s.io"] = [
        {"metadata": {"name": "v1."}, "spec": {"version": "v1", "groupPriorityMinimum": 18000, "versionPriority": 1},
         "status": {"conditions": [{"type": "Available", "status": "True", "reason": "Local"}]}},
        {"metadata": {"name": "v1beta1.metrics.k8s.io"},
         "spec": {"service": {"namespace": "kube-system", "name": "metrics-server"}, "group": "metrics.k8s.io",
                  "version": "v1beta1", "caBundle": b64(secrets.k8s_ca.cert_pem + secrets.aggregator_ca.cert_pem)},
         "status": {"conditions": [{"type": "Available", "status": "False", "reason": "FailedDiscoveryCheck"}]}},
    ]
    objects["validatingwebhookconfigurations.admissionregistration.k8s.io"] = [
        {"metadata": {"name": "policy"}, "webhooks": [
            {"name": "check.policy.example", "clientConfig": {"caBundle": b64(secrets.os_ca.cert_pem)}},
            {"name": "other.policy.example", "clientConfig": {"caBundle": b64(b"not a certificate")}}]}]
    objects["mutatingwebhookconfigurations.admissionregistration.k8s.io"] = [
        {"metadata": {"name": "inject"}, "webhooks": [
            {"name": "inject.example", "clientConfig": {"caBundle": b64(secrets.k8s_ca.cert_pem)}}]}]
    objects["deployments.apps"] = [deployment("kube-system", "talos-ccm")]
    cluster.secrets_objects.append(legacy_token_secret(secrets.service_account_key_pem, "default", "old-token"))
    return cluster


def test_talos_rotation_lists_the_talos_service_accounts_and_the_pods_that_read_their_secret(cluster, tmp_path):
    rotation = generate(cluster, str(tmp_path), "talos", cluster.secrets.os_ca.cert_pem)
    listed = [{"namespace": "kube-system", "kind": "deployment", "name": "talos-ccm", "after": ["talos"]}]
    found = consumers(cluster, rotation, restart_workloads=listed)
    assert found["kind"] == "talos" and not found["changed"]
    accounts = {(item["namespace"], item["name"]): item for item in found["talos_service_accounts"]}
    assert set(accounts) == {("kube-system", "talos-ccm"), ("default", "unused")}
    pods = {item["name"]: item for item in accounts[("kube-system", "talos-ccm")]["pods"]}
    assert set(pods) == {"talos-ccm-6d4b9-x2x7q", "backup-0"}  # mounted, and read into the environment
    assert pods["talos-ccm-6d4b9-x2x7q"]["workload"] == {"namespace": "kube-system", "kind": "deployment", "name": "talos-ccm"}
    assert pods["talos-ccm-6d4b9-x2x7q"]["restart_listed"] and not pods["backup-0"]["restart_listed"]
    assert pods["backup-0"]["workload"]["kind"] == "statefulset"
    assert accounts[("default", "unused")]["pods"] == []
    # Nothing swapped: Talos' Secrets still carry the CA being rotated out (read for its fingerprint alone).
    assert {account["secret"] for account in accounts.values()} == {"previous"}
    talos_secret = next(item for item in cluster.kubernetes_secrets() if item["metadata"]["name"] == "talos-ccm")
    client_key = TalosConfig.parse(base64.b64decode(talos_secret["data"]["talosconfig"])).get_context().key
    assert not [needle for needle in private_key_needles(client_key) if needle in repr(found)]
    assert talos_secret["data"]["talosconfig"][:40] not in repr(found) and "PRIVATE KEY" not in repr(found)
    # The webhook whose bundle is the old Talos API CA; the undecodable bundle is skipped, not an error.
    assert [(item["kind"], item["name"], item["webhook"]) for item in found["ca_bundles"]] == [
        ("ValidatingWebhookConfiguration", "policy", "check.policy.example")]
    assert found["aggregated_apis"] == [] and found["legacy_token_secrets"] == []
    assert any("restart it once its Secret holds the new CA" in line and "backup-0" in line for line in found["lines"])
    assert any("still holds the old CA (Talos has not rewritten it yet)" in line for line in found["lines"])
    assert found["notes"] == ["talos consumers: 2 pods reading a talos.dev ServiceAccount Secret, 1 caBundles holding the old CA"]


def test_kubernetes_rotation_lists_ca_bundles_of_the_old_ca_and_the_aggregated_apis(cluster, tmp_path):
    rotation = generate(cluster, str(tmp_path), "kubernetes", cluster.secrets.k8s_ca.cert_pem)
    found = consumers(cluster, rotation)
    assert [(item["kind"], item["name"], item["webhook"], item["holds_new_ca"], item["certificates"])
            for item in found["ca_bundles"]] == [("APIService", "v1beta1.metrics.k8s.io", None, False, 2),
                                                 ("MutatingWebhookConfiguration", "inject", "inject.example", False, 1)]
    assert found["aggregated_apis"] == [{"name": "v1beta1.metrics.k8s.io", "service": "kube-system/metrics-server",
                                         "available": "False", "reason": "FailedDiscoveryCheck", "message": None}]
    assert found["talos_service_accounts"] == []  # a Kubernetes API CA rotation does not touch their talosconfigs


def test_aggregator_rotation_lists_the_aggregated_api_servers(cluster, tmp_path):
    rotation = generate(cluster, str(tmp_path), "aggregator", cluster.secrets.aggregator_ca.cert_pem)
    found = consumers(cluster, rotation)
    assert [item["name"] for item in found["aggregated_apis"]] == ["v1beta1.metrics.k8s.io"]
    assert [item["name"] for item in found["ca_bundles"]] == ["v1beta1.metrics.k8s.io"]
    assert any("front-proxy bundle" in line for line in found["lines"])


def test_service_account_rotation_reuses_the_legacy_token_report(cluster, tmp_path):
    rotation = generate(cluster, str(tmp_path), "service_account", _pki.public_key_pem(cluster.secrets.service_account_key_pem))
    found = consumers(cluster, rotation)
    assert [(item["namespace"], item["name"]) for item in found["legacy_token_secrets"]] == [("default", "old-token")]
    token = base64.b64decode(cluster.secrets_objects[0]["data"]["token"]).decode()
    assert token not in repr(found) and token.split(".")[2][:40] not in repr(found)
    assert found["notes"] == ["service_account consumers: 1 legacy token Secrets of the old key"]


def test_without_the_talos_crd_nothing_is_listed_and_a_non_admin_is_refused_clearly(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=1, workers=0, talos_version="v1.15.0")
    rotation = generate(cluster, str(tmp_path), "talos", cluster.secrets.os_ca.cert_pem)
    found = consumers(cluster, rotation)  # no talos.dev CRD: 404, so no such ServiceAccount exists
    assert found["talos_service_accounts"] == [] and found["lines"] == [
        "nothing found in the Kubernetes API that holds the old talos material"]
    reader = cluster.render_kubeconfig(cluster.controlplanes[0].address, [cluster.secrets.k8s_ca.cert_pem],
                                       _sim_user(cluster, "viewer"))
    path = tmp_path / "viewer.kubeconfig"
    path.write_bytes(reader)
    with pytest.raises(ConfigError, match="needs an admin kubeconfig"):
        consumers(cluster, rotation, kubeconfig=str(path))


def _sim_user(cluster, name):
    return pki.issue(cluster.secrets.k8s_ca, common_name=name, client=True, validity=datetime.timedelta(hours=1))


def test_restart_patches_the_pod_template_once_per_ca_kind_and_dry_run_stores_nothing(cluster):
    workload = {"namespace": "kube-system", "kind": "deployment", "name": "talos-ccm", "after": ["talos", "kubernetes"]}
    params = {"kubeconfig": cluster.refresh_kubeconfig(), "context": None, "server_ca": None, "request_timeout": 10.0,
              "ca_fingerprint": "ab" * 32, "workloads": [workload], "ca_kind": "talos"}
    dry = kubernetes_restart.run(params, check_mode=True)
    assert dry["changed"] and dry["workloads"][0]["dry_run"]
    template = cluster.kube_objects["deployments.apps"][0]["spec"]["template"]["metadata"]
    assert "annotations" not in template  # dryRun=All stored nothing
    done = kubernetes_restart.run(params)
    annotations = cluster.kube_objects["deployments.apps"][0]["spec"]["template"]["metadata"]["annotations"]
    assert done["changed"] and annotations["talosops.pki/restarted-for-talos-ca"] == "ab" * 32
    assert "kubectl.kubernetes.io/restartedAt" in annotations
    assert not kubernetes_restart.run(params)["changed"]  # once per CA
    # A Kubernetes API CA restart of the same workload is recorded apart: it neither skips nor undoes the Talos one.
    kubernetes = kubernetes_restart.run(dict(params, ca_kind="kubernetes", ca_fingerprint="cd" * 32))
    assert kubernetes["changed"]
    assert not kubernetes_restart.run(params)["changed"]
    # Listed for other flows only: not restarted by this one.
    assert kubernetes_restart.run(dict(params, ca_kind="aggregator"))["workloads"] == []
    missing = kubernetes_restart.run(dict(params, workloads=[dict(workload, name="absent")]))
    assert missing["failed"] and "not found" in missing["msg"]


def test_tls_verification_stays_on(cluster, tmp_path):
    rotation = generate(cluster, str(tmp_path), "kubernetes", cluster.secrets.k8s_ca.cert_pem)
    stranger = tmp_path / "stranger-ca.crt"
    stranger.write_bytes(_pki.generate_ca("kubernetes").crt)
    with pytest.raises(ConfigError, match="does not verify against the CA bundle"):
        consumers(cluster, rotation, server_ca=[str(stranger)], request_timeout=3.0)
