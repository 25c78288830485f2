# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""talos_kubernetes_consumers: after a swap, what the Kubernetes API shows still trusting or holding the material a
rotation takes away. Read-only.

- Talos API CA: Talos' `talos.dev/v1alpha1` ServiceAccounts ("Talos API access from Kubernetes"). Talos keeps a Secret
  of the same name holding a talosconfig from its issuing CA and rewrites it when that CA changes (kubeaccess
  serviceaccount/crd_controller.go, needsUpdate); a pod that read the talosconfig at start keeps the old one until it is
  restarted. Reported: each ServiceAccount and the pods that mount or read its Secret, with their workload.
- Every CA: APIService (`spec.caBundle`) and validating/mutating webhook (`clientConfig.caBundle`) bundles holding the
  CA being rotated out, compared by certificate fingerprint.
- Kubernetes API CA and aggregator CA: the aggregated API servers (APIServices backed by a Service), which read the
  client and front-proxy CA bundles of kube-system/extension-apiserver-authentication, many only when they start.
- Service-account key: the legacy token Secrets signed by the old key (the same report as the service-account
  preflight's, service_account_token.legacy_secrets).

Names, fingerprints and conditions only: no Secret content, no token, no key.
"""

from __future__ import annotations

import base64
import binascii
import time

from ansible_collections.talosops.pki.plugins.module_utils import _kubernetes, _pki, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._backends import kubernetes_restart, service_account_token
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, RotationStateError, TalosPKIError

ARGUMENT_SPEC = _kubernetes.with_kube_auth({
    "rotation_dir": {"type": "path", "required": True},
    # Talos API CA: seconds to wait until Talos has rewritten every talos.dev ServiceAccount's Secret for the new CA.
    "wait_for_talos_secrets": {"type": "float", "default": 0.0, "no_log": False},  # seconds, not a secret
    "retry_interval": {"type": "float", "default": 1.0},
    # What the operator restarts (rotate_ca_kubernetes_restart_workloads): each consumer's workload is marked listed or not.
    "restart_workloads": {
        "type": "list",
        "elements": "dict",
        "default": [],
        "options": kubernetes_restart.WORKLOAD_OPTIONS,
    },
})
REQUIRED_LIBRARIES = (("urllib3", "urllib3"),)

PODS = "/api/v1/pods"
API_SERVICES = "/apis/apiregistration.k8s.io/v1/apiservices"
WEBHOOKS = {"ValidatingWebhookConfiguration": "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
            "MutatingWebhookConfiguration": "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"}
TALOS_SERVICE_ACCOUNTS = "/apis/talos.dev/v1alpha1/serviceaccounts"
# What each rotation kind looks at (see the module docstring).
CA_BUNDLE_KINDS = (_pki.KIND_TALOS, _pki.KIND_KUBERNETES, _pki.KIND_AGGREGATOR)
AGGREGATED_API_KINDS = (_pki.KIND_KUBERNETES, _pki.KIND_AGGREGATOR)
# The ReplicaSet a Deployment's pods belong to is named <deployment>-<pod-template-hash>.
POD_TEMPLATE_HASH = "pod-template-hash"


def run(params, check_mode=False, diff=False, sealing=None):
    rotation = _rotation_store.load(params["rotation_dir"], sealing=sealing)
    if rotation is None:
        raise RotationStateError("no rotation in %s: give the rotation folder of the flow (talos, kubernetes, aggregator or "
                                 "service_account) whose consumers to list." % params["rotation_dir"])
    _path, credentials, server_ca, servers = _kubernetes.api_targets(dict(params, api_servers=None), sealing)
    kind = rotation.kind
    report = {"talos_service_accounts": [], "ca_bundles": [], "aggregated_apis": [], "legacy_token_secrets": []}
    with _kubernetes.KubeAPI(credentials, server=servers[0], server_ca=server_ca, request_timeout=params["request_timeout"]) as api:
        if kind == _pki.KIND_TALOS:
            accounts = _list(api, TALOS_SERVICE_ACCOUNTS, missing_ok=True)
            if accounts:
                report["talos_service_accounts"] = talos_service_accounts(accounts, _list(api, PODS))
                _read_talos_secrets(api, report["talos_service_accounts"], rotation, params)
        if kind in CA_BUNDLE_KINDS or kind in AGGREGATED_API_KINDS:
            api_services = _list(api, API_SERVICES)
            if kind in CA_BUNDLE_KINDS:
                webhooks = {webhook_kind: _list(api, path) for webhook_kind, path in WEBHOOKS.items()}
                report["ca_bundles"] = ca_bundles(api_services, webhooks, rotation.previous_ca_fingerprint, rotation.ca_fingerprint)
            if kind in AGGREGATED_API_KINDS:
                report["aggregated_apis"] = aggregated_apis(api_services)
        if kind == _pki.KIND_SERVICE_ACCOUNT:
            outcome = api.service_account_token_secrets()
            _ensure(outcome, "legacy service-account token Secrets (type %s)" % _kubernetes.SERVICE_ACCOUNT_TOKEN_TYPE)
            report["legacy_token_secrets"] = [
                item for item in service_account_token.legacy_secrets(outcome.value, [rotation.previous_ca_fingerprint])
                if item["signed_by_listed_key"]]
    mark_listed(report, kubernetes_restart.for_kind(params["restart_workloads"], kind))
    return dict(report, changed=False, kind=kind, previous_fingerprint=rotation.previous_ca_fingerprint,
                new_fingerprint=rotation.ca_fingerprint, lines=report_lines(kind, report), notes=report_notes(kind, report))


def _read_talos_secrets(api, accounts, rotation, params):
    """Set each account's `secret` - which CA its Secret's talosconfig carries: V(new), V(previous), V(other) or V(missing)
    - waiting up to wait_for_talos_secrets seconds for Talos to rewrite them all for the new CA."""
    deadline = time.monotonic() + max(params["wait_for_talos_secrets"], 0.0)
    while True:
        for account in accounts:
            outcome = api.secret_talosconfig_cas(account["namespace"], account["name"])
            if outcome.kind == _kubernetes.HTTP_ERROR and outcome.value == 404:
                account["secret"] = "missing"
                continue
            _ensure(outcome, "the Secret %s/%s of the talos.dev ServiceAccount" % (account["namespace"], account["name"]))
            fingerprints = outcome.value
            account["secret"] = ("new" if rotation.ca_fingerprint in fingerprints
                                 else "previous" if rotation.previous_ca_fingerprint in fingerprints else "other")
        # Talos does not issue for a ServiceAccount it refuses (namespace or roles not allowed): its status says why.
        waiting = [account for account in accounts if account["secret"] != "new" and not account["failure_reason"]]
        if not waiting or time.monotonic() + params["retry_interval"] > deadline:
            return
        time.sleep(params["retry_interval"])


def _list(api, path, missing_ok=False):
    outcome = api.list_objects(path)
    if missing_ok and outcome.kind == _kubernetes.HTTP_ERROR and outcome.value == 404:
        return []  # the CRD is not installed: nothing of that kind exists
    _ensure(outcome, path)
    return outcome.value


def _ensure(outcome, what):
    if outcome.kind != _kubernetes.OK:
        raise ConfigError("listing %s failed: %s. The consumer report needs an admin kubeconfig (the rotation's own one is)."
                          % (what, outcome.detail))


def _metadata(item):
    return item.get("metadata") or {}


def talos_service_accounts(accounts, pods):
    """Each talos.dev ServiceAccount with the pods that mount or read its Secret (same namespace, same name)."""
    found = []
    for account in accounts:
        metadata = _metadata(account)
        namespace, name = metadata.get("namespace"), metadata.get("name")
        users = [pod_facts(pod) for pod in pods if _metadata(pod).get("namespace") == namespace and name in secrets_used(pod)]
        found.append({"namespace": namespace, "name": name, "roles": list((account.get("spec") or {}).get("roles") or []),
                      "failure_reason": (account.get("status") or {}).get("failureReason"), "pods": users})
    return sorted(found, key=lambda item: (item["namespace"] or "", item["name"] or ""))


def secrets_used(pod):
    """Names of the Secrets a pod mounts (secret and projected volumes) or reads into its environment."""
    spec = pod.get("spec") or {}
    names = set()
    for volume in spec.get("volumes") or []:
        names.add((volume.get("secret") or {}).get("secretName"))
        for source in (volume.get("projected") or {}).get("sources") or []:
            names.add((source.get("secret") or {}).get("name"))
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        for env in container.get("env") or []:
            names.add(((env.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name"))
        for source in container.get("envFrom") or []:
            names.add((source.get("secretRef") or {}).get("name"))
    names.discard(None)
    return names


def pod_facts(pod):
    metadata = _metadata(pod)
    return {"namespace": metadata.get("namespace"), "name": metadata.get("name"),
            "started": (pod.get("status") or {}).get("startTime"), "workload": workload_of(pod)}


def workload_of(pod):
    """{namespace, kind, name} of the workload that owns a pod (as rotate_ca_kubernetes_restart_workloads names it), or None
    for a bare pod or an owner that `kubectl rollout restart` cannot restart (a Job, a bare ReplicaSet)."""
    metadata = _metadata(pod)
    owner = next((reference for reference in metadata.get("ownerReferences") or [] if reference.get("controller")), None)
    if owner is None:
        return None
    kind, name = owner.get("kind"), owner.get("name") or ""
    if kind == "ReplicaSet":
        suffix = "-" + ((metadata.get("labels") or {}).get(POD_TEMPLATE_HASH) or "")
        if suffix == "-" or not name.endswith(suffix):
            return None
        kind, name = "Deployment", name[:-len(suffix)]
    if kind not in ("Deployment", "DaemonSet", "StatefulSet"):
        return None
    return {"namespace": metadata.get("namespace"), "kind": kind.lower(), "name": name}


def bundle_fingerprints(ca_bundle):
    """SHA-256 fingerprints of the certificates of a base64 caBundle (PEM inside); () when it holds none or does not decode."""
    if not ca_bundle:
        return ()
    try:
        pem = base64.b64decode(ca_bundle, validate=False)
        return tuple(_pki.fingerprint(certificate) for certificate in _pki.load_certificates(pem, "caBundle"))
    except (binascii.Error, ValueError, TalosPKIError):
        return ()


def ca_bundles(api_services, webhooks, previous, new):
    """The caBundles holding the CA being rotated out: APIServices and each webhook of the webhook configurations."""
    found = []

    def check(kind, name, webhook, ca_bundle):
        fingerprints = bundle_fingerprints(ca_bundle)
        if previous in fingerprints:
            found.append({"kind": kind, "name": name, "webhook": webhook, "holds_new_ca": new in fingerprints,
                          "certificates": len(fingerprints)})
    for service in api_services:
        check("APIService", _metadata(service).get("name"), None, (service.get("spec") or {}).get("caBundle"))
    for kind, configurations in webhooks.items():
        for configuration in configurations:
            for webhook in configuration.get("webhooks") or []:
                check(kind, _metadata(configuration).get("name"), webhook.get("name"),
                      (webhook.get("clientConfig") or {}).get("caBundle"))
    return found


def aggregated_apis(api_services):
    """APIServices served by an aggregated API server (spec.service set), with their Available condition."""
    found = []
    for service in api_services:
        backend = (service.get("spec") or {}).get("service")
        if not backend:
            continue  # served by kube-apiserver itself (Local)
        available = next((condition for condition in (service.get("status") or {}).get("conditions") or []
                          if condition.get("type") == "Available"), {})
        found.append({"name": _metadata(service).get("name"),
                      "service": "%s/%s" % (backend.get("namespace"), backend.get("name")),
                      "available": available.get("status", "Unknown"), "reason": available.get("reason"),
                      "message": available.get("message")})
    return found


def mark_listed(report, restart_workloads):
    listed = {(item["namespace"], item["kind"], item["name"]) for item in restart_workloads}
    for account in report["talos_service_accounts"]:
        for pod in account["pods"]:
            workload = pod["workload"]
            pod["restart_listed"] = bool(workload) and (workload["namespace"], workload["kind"], workload["name"]) in listed


_SECRET_STATES = {"new": "holds the new CA", "previous": "still holds the old CA (Talos has not rewritten it yet)",
                  "other": "holds neither the old nor the new CA", "missing": "does not exist (yet)"}


def _workload_label(workload):
    return "%s %s/%s" % (workload["kind"], workload["namespace"], workload["name"]) if workload else "a bare pod"


def report_lines(kind, report):
    """Plain lines for the run's output: one per consumer, with what to do."""
    lines = []
    for account in report["talos_service_accounts"]:
        secret = _SECRET_STATES[account.get("secret", "missing")]
        if account["failure_reason"]:
            secret += " (Talos refuses it: %s)" % account["failure_reason"]
        if not account["pods"]:
            lines.append("talos.dev ServiceAccount %s/%s: its Secret %s; no pod reads it" % (
                account["namespace"], account["name"], secret))
        for pod in account["pods"]:
            lines.append("talos.dev ServiceAccount %s/%s: its Secret %s; pod %s/%s (%s, started %s) may hold the talosconfig "
                         "of the old CA: %s" % (
                             account["namespace"], account["name"], secret, pod["namespace"], pod["name"],
                             _workload_label(pod["workload"]), pod["started"] or "unknown",
                             "restarted by this run" if pod.get("restart_listed")
                             else "restart it once its Secret holds the new CA (or list its workload in "
                                  "rotate_ca_kubernetes_restart_workloads with after: [talos])"))
    for bundle in report["ca_bundles"]:
        where = "%s %s" % (bundle["kind"], bundle["name"]) + (" webhook %s" % bundle["webhook"] if bundle["webhook"] else "")
        lines.append("%s: its caBundle holds the %s CA being rotated out%s: update it before the remove phase" % (
            where, kind, " (and the new one)" if bundle["holds_new_ca"] else ", not the new one"))
    for service in report["aggregated_apis"]:
        lines.append("aggregated API %s (service %s, Available=%s): its server reads the %s bundle of "
                     "kube-system/extension-apiserver-authentication; restart it if it does not reload it" % (
                         service["name"], service["service"], service["available"],
                         "front-proxy" if kind == _pki.KIND_AGGREGATOR else "client CA"))
    for secret in report["legacy_token_secrets"]:
        lines.append("legacy token Secret %s/%s (service account %s): signed by the old key, never refreshed; it stops working "
                     "at the remove phase: recreate it" % (secret["namespace"], secret["name"], secret["service_account"]))
    return lines or ["nothing found in the Kubernetes API that holds the old %s material" % kind]


def report_notes(kind, report):
    """One short line per kind of consumer, for the rotation summary's notes."""
    pods = [pod for account in report["talos_service_accounts"] for pod in account["pods"]]
    counts = [("pods reading a talos.dev ServiceAccount Secret", len(pods)),
              ("caBundles holding the old CA", len(report["ca_bundles"])),
              ("aggregated APIs to check", len(report["aggregated_apis"])),
              ("legacy token Secrets of the old key", len(report["legacy_token_secrets"]))]
    found = ["%d %s" % (count, label) for label, count in counts if count]
    return ["%s consumers: %s" % (kind, ", ".join(found) if found else "none found")]
