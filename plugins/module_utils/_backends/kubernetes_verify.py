# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""talos_kubernetes_verify: prove that a kubeconfig reaches the API and every node is Ready,
or that the API servers refuse its client certificate.

A refusal counts only as 401 Unauthorized: that is kube-apiserver saying it does not
authenticate the certificate. A TLS failure, a timeout or a 5xx proves nothing about the
credentials (the server may be down, or our CA bundle wrong), so it fails the check.
"""

from __future__ import annotations

import concurrent.futures
import time

from ansible_collections.talosops.pki.plugins.module_utils import _kubernetes, _pki, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, RotationStateError
from ansible_collections.talosops.pki.plugins.module_utils._inventory import normal_address
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import KubeCredentials
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import SecretsBundle

ARGUMENT_SPEC = _kubernetes.with_kube_auth({
    "api_servers": {"type": "list", "elements": "str"},
    "expect": {"type": "str", "default": "reachable", "choices": ["reachable", "refused", "authenticated"]},
    "nodes": {"type": "list", "elements": "str"},
    "refuse_unlisted_nodes": {"type": "bool", "default": False},
    "deadline": {"type": "float", "default": 180.0},
    "retry_interval": {"type": "float", "default": 1.0},
    # The front-proxy trust of an aggregator CA rotation, proven on every API server with short-lived front-proxy client
    # certificates from the rotation's new CA and from the CA it replaces.
    "front_proxy": {
        "type": "dict",
        "options": {
            "rotation_dir": {"type": "path", "required": True},
            "new_ca": {"type": "str", "default": "accepted", "choices": ["accepted", "refused"]},
            "previous_ca": {"type": "str", "default": "accepted", "choices": ["accepted", "refused"]},
            # Where the previous CA's key is (certs.k8saggregator); without it the previous CA is not probed.
            "secrets_file": {"type": "path"},
        },
    },
})
# The user a front-proxy probe asks to be taken for; what kube-apiserver answers proves which identity it accepted.
FRONT_PROXY_PROBE_USER = "talosops-front-proxy-probe"
FRONT_PROXY_PROBE_HOURS = 1
REQUIRED_LIBRARIES = (("urllib3", "urllib3"),)


def run(params, check_mode=False, diff=False, sealing=None):
    if params["deadline"] <= 0 or params["retry_interval"] <= 0 or params["request_timeout"] <= 0:
        raise ConfigError("deadline, retry_interval and request_timeout must be positive numbers of seconds.")
    if params["refuse_unlisted_nodes"] and not params["nodes"]:
        raise ConfigError("refuse_unlisted_nodes needs nodes: the list of nodes that every Node the API lists must be one of.")
    path, credentials, server_ca, servers = _kubernetes.api_targets(params, sealing)
    deadline = time.monotonic() + params["deadline"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(servers), 16)) as pool:
        outcomes = list(pool.map(lambda server: _verify_server(server, credentials, server_ca, params, deadline), servers))
    per_server = dict(zip(servers, outcomes))
    result = {"changed": False, "expect": params["expect"], "kubeconfig": path, "context": credentials.context,
              "api_servers": {server: outcome["report"] for server, outcome in per_server.items()}, "nodes": {}}
    if params["expect"] == "reachable":
        listing = next((outcome["nodes"] for outcome in outcomes if outcome["nodes"] is not None), None)
        result.update(_node_report(listing, params["nodes"]))
    failed = sorted(server for server, outcome in per_server.items() if not outcome["report"]["ok"])
    result["failed_api_servers"] = failed
    if params["front_proxy"] and not failed:
        probes = _front_proxy_probes(params["front_proxy"], sealing)
        result["front_proxy"] = {"probes": {label: {"fingerprint": fingerprint, "expect": expect}
                                            for label, (fingerprint, expect, _probe) in probes.items()},
                                 "api_servers": {}}
        for server in servers:
            for label, (_fingerprint, expect, probe) in probes.items():
                report = _verify_front_proxy(server, probe, expect, server_ca or credentials.ca, params, deadline)
                result["front_proxy"]["api_servers"].setdefault(server, {})[label] = report
                if not report["ok"]:
                    failed.append(server)
                    per_server[server]["report"] = dict(report, detail="front proxy, %s CA: %s" % (label, report["detail"]))
        failed = sorted(set(failed))
        result["failed_api_servers"] = failed
    unlisted = next((outcome["report"]["detail"] for outcome in outcomes if outcome.get("unlisted")), None)
    if unlisted:
        result.update(failed=True, msg=unlisted)
    elif failed:
        details = "; ".join(per_server[server]["report"]["detail"] for server in failed)
        result.update(failed=True, msg="%d of %d API servers did not prove %s within %ss: %s" % (
            len(failed), len(servers), _wording(params["expect"]), params["deadline"], details))
    return result


def _front_proxy_probes(options, sealing=None):
    """{label: (CA fingerprint, expectation, client certificate)}: one short-lived front-proxy client certificate from
    the rotation's new CA, and one from the CA it replaces when its key is at hand (the secrets file still holding it)."""
    rotation = _rotation_store.load(options["rotation_dir"], kind="aggregator", sealing=sealing)
    if rotation is None:
        raise RotationStateError("no aggregator CA rotation in %s: run talos_ca_generate kind=aggregator first." % options["rotation_dir"])
    probes = {"new": (rotation.ca_fingerprint, options["new_ca"], rotation.ca())}
    if options["secrets_file"]:
        crt, key = SecretsBundle.load(options["secrets_file"], sealing=sealing).get_ca("aggregator")
        if _pki.fingerprint(crt) == rotation.previous_ca_fingerprint:
            probes["previous"] = (rotation.previous_ca_fingerprint, options["previous_ca"], _pki.CertAndKey(crt, key))
    return {label: (fingerprint, expect, _pki.issue_client_certificate(ca, roles=(), common_name=_kubernetes.FRONT_PROXY_CLIENT_NAME,
                                                                       validity_hours=FRONT_PROXY_PROBE_HOURS))
            for label, (fingerprint, expect, ca) in probes.items()}


def _verify_front_proxy(server, probe, expect, server_ca, params, deadline):
    """Retry until the API server takes the probe's X-Remote-User (accepted) or refuses the certificate for it (refused:
    401, or the TLS handshake refusing a certificate from a CA neither of its client pools holds)."""
    started = time.monotonic()
    credentials = KubeCredentials(context="front-proxy-probe", cluster="", user=_kubernetes.FRONT_PROXY_CLIENT_NAME, server=server,
                                  ca=server_ca, crt=probe.crt, key=probe.key, tls_server_name=None)
    while True:
        with _kubernetes.KubeAPI(credentials, server=server, server_ca=server_ca, request_timeout=params["request_timeout"]) as api:
            outcome = api.who_am_i(FRONT_PROXY_PROBE_USER)
        accepted = outcome.kind == _kubernetes.OK and outcome.value == FRONT_PROXY_PROBE_USER
        handshake_refused = outcome.kind == _kubernetes.TLS_ERROR and "handshake failed" in outcome.detail
        if expect == "accepted" and accepted:
            return _front_proxy_report(True, "request-header identity accepted", started)
        if expect == "refused" and (outcome.kind == _kubernetes.UNAUTHORIZED or handshake_refused):
            return _front_proxy_report(True, "refused (%s)" % ("401" if outcome.kind == _kubernetes.UNAUTHORIZED else "TLS handshake"), started)
        if accepted:
            detail = "%s still takes a front-proxy client certificate from this CA" % server
        elif outcome.kind == _kubernetes.OK:
            detail = "%s authenticated the probe as %r instead of its X-Remote-User" % (server, outcome.value)
        else:
            detail = outcome.detail
        if time.monotonic() + params["retry_interval"] > deadline:
            return _front_proxy_report(False, detail, started)
        time.sleep(params["retry_interval"])


def _front_proxy_report(ok, detail, started):
    return {"ok": ok, "detail": detail, "seconds": round(time.monotonic() - started, 3)}


def _wording(expect):
    return {"reachable": "the API reachable with every node Ready", "refused": "that they refuse this client certificate (401)",
            "authenticated": "that they authenticate this client certificate (an answer or 403, not 401)"}[expect]


def _verify_server(server, credentials, server_ca, params, deadline):
    """Retry one API server until it proves the expectation or the shared deadline passes."""
    started = time.monotonic()
    detail, nodes = "not tried", None
    while True:
        with _kubernetes.KubeAPI(credentials, server=server, server_ca=server_ca, request_timeout=params["request_timeout"]) as api:
            outcome = api.nodes()
        if params["expect"] == "reachable":
            if outcome.kind == _kubernetes.OK:
                nodes = outcome.value
                unlisted = _unlisted(nodes, params["nodes"]) if params["refuse_unlisted_nodes"] else None
                if unlisted:  # waiting does not put a node in the inventory
                    return dict(_done(False, unlisted, started, nodes), unlisted=True)
                problem = _readiness_problem(nodes, params["nodes"])
                if problem is None:
                    return _done(True, "answered, every node Ready", started, nodes)
                detail = "%s: %s" % (server, problem)
            else:
                detail = outcome.detail
        elif params["expect"] == "authenticated":
            # A user whose groups may not list nodes gets 403: kube-apiserver knew who it was, which is what is proven.
            if outcome.kind in (_kubernetes.OK, _kubernetes.FORBIDDEN):
                return _done(True, "authenticated (%s)" % ("answered" if outcome.kind == _kubernetes.OK else "403"), started, None)
            detail = outcome.detail
        elif outcome.kind == _kubernetes.UNAUTHORIZED:
            return _done(True, outcome.detail, started, None)
        elif outcome.kind in (_kubernetes.OK, _kubernetes.FORBIDDEN):
            detail = "%s still authenticates this client certificate (%s)" % (server, "answered" if outcome.kind == _kubernetes.OK else "403")
        else:
            detail = "%s (this proves nothing about the credentials)" % outcome.detail
        if time.monotonic() + params["retry_interval"] > deadline:
            return _done(False, detail, started, nodes)
        time.sleep(params["retry_interval"])


def _done(ok, detail, started, nodes):
    return {"report": {"ok": ok, "detail": detail, "seconds": round(time.monotonic() - started, 3)}, "nodes": nodes}


def _matches(expected, node):
    """Whether inventory entry `expected` (a name or an address, IPv6 in any spelling) is this Kubernetes Node."""
    return expected == node.name or normal_address(expected) in {normal_address(address) for address in node.addresses}


def _unlisted(nodes, expected):
    """The Kubernetes view of the topology guard: a Node that no inventory entry names would be left out of the rotation."""
    unlisted = ["%s (%s)" % (node.name, ", ".join(node.addresses) or "no address") for node in nodes
                if not any(_matches(name, node) for name in expected)]
    if not unlisted:
        return None
    return ("the Kubernetes API lists Node(s) that the inventory does not: %s. Their kubelets would be locked out when the old "
            "CA is removed: add each of them to the controlplane or worker group (the talosops.pki.talos inventory plugin "
            "lists every member), or remove Nodes that are gone (kubectl delete node NAME)." % "; ".join(unlisted))


def _readiness_problem(nodes, expected):
    missing = [name for name in expected or () if not any(_matches(name, node) for node in nodes)]
    not_ready = ["%s (%s: %s)" % (node.name, node.reason or node.ready, node.message or "no message") for node in nodes if node.ready != "True"]
    problems = []
    if missing:
        problems.append("not registered: %s" % ", ".join(missing))
    if not_ready:
        problems.append("not Ready: %s" % "; ".join(not_ready))
    if not nodes:
        problems.append("the API lists no nodes")
    return ", ".join(problems) or None


def _node_report(nodes, expected):
    if nodes is None:
        return {"nodes": {}, "ready_count": 0, "not_ready_nodes": [], "missing_nodes": list(expected or [])}
    report = {node.name: {"ready": node.ready == "True", "status": node.ready, "reason": node.reason, "message": node.message,
                          "addresses": list(node.addresses)} for node in nodes}
    return {
        "nodes": report,
        "ready_count": sum(1 for node in nodes if node.ready == "True"),
        "not_ready_nodes": sorted(node.name for node in nodes if node.ready != "True"),
        "missing_nodes": [name for name in expected or () if not any(_matches(name, node) for node in nodes)],
    }
