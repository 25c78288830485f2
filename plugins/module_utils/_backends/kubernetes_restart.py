# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""talos_kubernetes_restart: restart named workloads once per new Kubernetes CA, as `kubectl rollout restart` does.

Pods read the cluster CA bundle when they start and keep it; after the swap the API servers
serve with the new CA, so clients in pods that trust only the old one fail until restarted.
The restart is the pod template annotation kubectl sets (kubectl.kubernetes.io/restartedAt),
plus one that records the CA it was done for: a rerun finds it and restarts nothing again.
"""

from __future__ import annotations

import datetime

from ansible_collections.talosops.pki.plugins.module_utils import _files, _kubernetes, _pki
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig, find_kubeconfig

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
# Which CA a restart was for, one annotation per CA kind: a workload restarted after the Talos API CA swap is restarted
# again after the Kubernetes API CA swap, and a rerun of either restarts nothing.
RESTARTED_FOR_CA = "talosops.pki/restarted-for-%s-ca"
CA_KINDS = (_pki.KIND_TALOS, _pki.KIND_KUBERNETES, _pki.KIND_AGGREGATOR)

# One workload to restart (rotate_ca_kubernetes_restart_workloads): also what talos_kubernetes_consumers marks as listed.
WORKLOAD_OPTIONS = {
    "namespace": {"type": "str", "required": True},
    "kind": {"type": "str", "required": True, "choices": sorted(_kubernetes.WORKLOAD_KINDS)},
    "name": {"type": "str", "required": True},
    # The rotations after whose swap it is restarted; the Kubernetes API CA's when not set.
    "after": {"type": "list", "elements": "str", "choices": list(CA_KINDS)},
}

ARGUMENT_SPEC = _kubernetes.with_kube_auth({
    "ca_fingerprint": {"type": "str", "required": True},
    "ca_kind": {"type": "str", "default": "kubernetes", "choices": list(CA_KINDS)},
    "workloads": {
        "type": "list",
        "elements": "dict",
        "required": True,
        "options": WORKLOAD_OPTIONS,
    },
})
REQUIRED_LIBRARIES = (("urllib3", "urllib3"),)


def run(params, check_mode=False, diff=False, sealing=None):
    fingerprint = params["ca_fingerprint"].strip().lower().replace(":", "")
    if len(fingerprint) != 64 or any(char not in "0123456789abcdef" for char in fingerprint):
        raise ConfigError("ca_fingerprint must be the SHA-256 fingerprint of the new Kubernetes CA (64 hex digits), e.g. "
                          "talos_ca_generate's ca_fingerprint.")
    credentials = Kubeconfig.load(find_kubeconfig(params["kubeconfig"]), sealing=sealing).credentials(params["context"])
    server_ca = _files.server_ca_bundle(params["server_ca"], sealing) if params["server_ca"] else None
    reports, problems = [], []
    restarted_at = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with _kubernetes.KubeAPI(credentials, server_ca=server_ca, request_timeout=params["request_timeout"]) as api:
        for workload in for_kind(params["workloads"], params["ca_kind"]):
            report, problem = _restart(api, workload, fingerprint, RESTARTED_FOR_CA % params["ca_kind"], restarted_at, check_mode)
            reports.append(report)
            if problem:
                problems.append(problem)
    result = {"changed": any(report["changed"] for report in reports), "workloads": reports}
    if diff:
        result["diff"] = {"before": {_label(r): r["before"] for r in reports}, "after": {_label(r): r["after"] for r in reports},
                          "before_header": "pod template annotations", "after_header": "pod template annotations"}
    if problems:
        result.update(failed=True, msg="%d of %d workloads were not restarted: %s" % (len(problems), len(reports), "; ".join(problems)))
    return result


def for_kind(workloads, ca_kind):
    """The workloads to restart after the swap of a `ca_kind` rotation: those whose `after` names it (an entry without
    `after` is the Kubernetes API CA's)."""
    return [workload for workload in workloads if ca_kind in (workload.get("after") or [_pki.KIND_KUBERNETES])]


def _label(report):
    return "%s/%s/%s" % (report["namespace"], report["kind"], report["name"])


def _restart(api, workload, fingerprint, restarted_for, restarted_at, check_mode):
    """(report, problem or None) for one workload; `restarted_for` is the annotation recording the CA of that kind."""
    namespace, kind, name = workload["namespace"], workload["kind"], workload["name"]
    report = {"namespace": namespace, "kind": kind, "name": name, "changed": False}
    read = api.read_workload(kind, namespace, name)
    if read.kind != _kubernetes.OK:
        return report, "%s %s/%s: %s" % (kind, namespace, name, _hint(read))
    before = {key: read.value.get(key) for key in (RESTARTED_AT, restarted_for)}
    report["before"] = before
    if before[restarted_for] == fingerprint:
        return dict(report, after=before), None
    after = {RESTARTED_AT: restarted_at, restarted_for: fingerprint}
    # In check mode the API server validates the patch and persists nothing (dryRun=All).
    patched = api.patch_template_annotations(kind, namespace, name, after, dry_run=check_mode)
    if patched.kind != _kubernetes.OK:
        return report, "%s %s/%s: %s" % (kind, namespace, name, _hint(patched))
    return dict(report, changed=True, after=after, dry_run=check_mode), None


def _hint(outcome):
    if outcome.kind == _kubernetes.HTTP_ERROR and outcome.value == 404:
        return "not found (%s): check its namespace, kind and name" % outcome.detail
    if outcome.kind in (_kubernetes.UNAUTHORIZED, _kubernetes.FORBIDDEN):
        return "%s: use an admin kubeconfig (the rotation's fresh one)" % outcome.detail
    return outcome.detail
