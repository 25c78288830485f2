# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""talos_service_account_token: issue a service-account token (TokenRequest) into a private file, or prove that every
kube-apiserver authenticates or refuses the token in such a file.

The token is a credential: it is written 0600 (vault-encrypted under encrypt_dir) and never returned. What is returned is
public: the `kid` of its header (which key signed it) and its expiry.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import json
import os
import time

from ansible_collections.talosops.pki.plugins.module_utils import _files, _kubernetes
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError

ARGUMENT_SPEC = _files.with_encryption(_kubernetes.with_kube_auth({
    "api_servers": {"type": "list", "elements": "str"},
    "path": {"type": "path"},
    "state": {"type": "str", "default": "issued", "choices": ["issued", "authenticated", "refused", "legacy_report"]},
    "key_fingerprints": {"type": "list", "elements": "str", "default": [], "no_log": False},  # public fingerprints
    "namespace": {"type": "str", "default": "default"},
    "service_account": {"type": "str", "default": "default"},
    "expiration_seconds": {"type": "int", "default": 86400},
    "force": {"type": "bool", "default": False},
    "deadline": {"type": "float", "default": 180.0},
    "retry_interval": {"type": "float", "default": 1.0},
}))
ARGUMENT_RULES = {"required_if": [("state", state, ("path",)) for state in ("issued", "authenticated", "refused")]}
REQUIRED_LIBRARIES = (("urllib3", "urllib3"),)
# kube-apiserver refuses a TokenRequest for less than 10 minutes.
MIN_EXPIRATION_SECONDS = 600


def run(params, check_mode=False, diff=False, sealing=None):
    if params["deadline"] <= 0 or params["retry_interval"] <= 0 or params["request_timeout"] <= 0:
        raise ConfigError("deadline, retry_interval and request_timeout must be positive numbers of seconds.")
    if params["expiration_seconds"] < MIN_EXPIRATION_SECONDS:
        raise ConfigError("expiration_seconds is %d: kube-apiserver issues tokens for at least %d seconds (10 minutes)."
                          % (params["expiration_seconds"], MIN_EXPIRATION_SECONDS))
    _path, credentials, server_ca, servers = _kubernetes.api_targets(params, sealing)
    if params["state"] == "issued":
        return _issue(params, credentials, server_ca, servers[0], check_mode, sealing)
    if params["state"] == "legacy_report":
        return _legacy_report(params, credentials, server_ca, servers[0])
    return _verify(params, credentials, server_ca, servers, sealing)


def _issue(params, credentials, server_ca, server, check_mode, sealing):
    result = {"changed": False, "path": params["path"], "state": "issued"}
    if os.path.lexists(params["path"]) and not params["force"]:
        return dict(result, **token_facts(_read_token(params["path"], sealing)))
    if check_mode:
        return dict(result, changed=True)
    with _kubernetes.KubeAPI(credentials, server=server, server_ca=server_ca, request_timeout=params["request_timeout"]) as api:
        outcome = api.token_request(params["namespace"], params["service_account"], params["expiration_seconds"])
    if outcome.kind != _kubernetes.OK:
        account = "%s/%s" % (params["namespace"], params["service_account"])
        raise ConfigError("TokenRequest for service account %s failed: %s. The kubeconfig's user must be allowed to create "
                          "serviceaccounts/token (the admin kubeconfig is)." % (account, outcome.detail))
    token = outcome.value[0]
    _files.atomic_write(params["path"], token.encode("ascii") + b"\n", sealing=sealing)
    return dict(result, changed=True, **token_facts(token))


def _legacy_report(params, credentials, server_ca, server):
    """The legacy token Secrets, and which of them a key of key_fingerprints signed: the kubelet never refreshes these, so
    each one signed by the old key stops working when that key is removed. Names and key fingerprints only."""
    with _kubernetes.KubeAPI(credentials, server=server, server_ca=server_ca, request_timeout=params["request_timeout"]) as api:
        outcome = api.service_account_token_secrets()
    if outcome.kind != _kubernetes.OK:
        raise ConfigError("listing the legacy service-account token Secrets failed: %s. The kubeconfig's user must be allowed "
                          "to list secrets (the admin kubeconfig is)." % outcome.detail)
    secrets = legacy_secrets(outcome.value, params["key_fingerprints"])
    signed = [item for item in secrets if item["signed_by_listed_key"]]
    result = {"changed": False, "state": "legacy_report", "legacy_secrets": secrets,
              "signed_by_listed_key": len(signed)}
    if signed:
        result["warnings"] = ["%d legacy service-account token Secret(s) hold tokens signed by the key being replaced, which "
                              "the kubelet never refreshes: they stop working when that key is removed - %s. Recreate them "
                              "after the swap (or move their users to projected tokens)." % (
                                  len(signed), ", ".join("%s/%s" % (item["namespace"], item["name"]) for item in signed[:10]))]
    return result


def legacy_secrets(listing, key_fingerprints):
    """The report of each legacy token Secret of KubeAPI.service_account_token_secrets: names, the signing key's fingerprint
    and whether it is one of key_fingerprints. The token itself is dropped here."""
    wanted = {fingerprint.lower() for fingerprint in key_fingerprints}
    secrets = []
    for namespace, name, account, token in listing:
        fingerprint = _kid_fingerprint(token)
        secrets.append({"namespace": namespace, "name": name, "service_account": account, "key_fingerprint": fingerprint,
                        "signed_by_listed_key": fingerprint in wanted})
    return secrets


def _kid_fingerprint(token):
    """The signing key's fingerprint (hex SHA-256 of its public key's DER) from a JWT's kid, which is that digest in base64url."""
    try:
        header_part = token.split(".")[0]
        kid = json.loads(base64.urlsafe_b64decode(header_part + "=" * (-len(header_part) % 4))).get("kid") or ""
        return base64.urlsafe_b64decode(kid + "=" * (-len(kid) % 4)).hex() or None
    except (ValueError, binascii.Error, UnicodeDecodeError, AttributeError):
        return None


def _read_token(path, sealing):
    token = _files.read_bytes(path, "service-account token", sealing=sealing).decode("ascii", "replace").strip()
    if token.count(".") != 2:
        raise ConfigError("%s does not hold a service-account token (a JWT: three base64url parts): write it with "
                          "talos_service_account_token state=issued." % path)
    return token


def token_facts(token):
    """Public facts of a JWT: the signing key id (kid), algorithm and expiry. Never the token itself."""
    try:
        header_part, claims_part = token.split(".")[:2]
        header = json.loads(base64.urlsafe_b64decode(header_part + "=" * (-len(header_part) % 4)))
        claims = json.loads(base64.urlsafe_b64decode(claims_part + "=" * (-len(claims_part) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ConfigError("the service-account token is not a JWT: its header or claims do not decode.") from None

    def when(claim):
        value = claims.get(claim)
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value)) if isinstance(value, (int, float)) else None
    issued = claims.get("iat")
    return {"key_id": header.get("kid"), "algorithm": header.get("alg"), "subject": claims.get("sub"), "expires": when("exp"),
            "issued": when("iat"),
            "age_seconds": int(time.time() - issued) if isinstance(issued, (int, float)) else None}


def _verify(params, credentials, server_ca, servers, sealing):
    token = _read_token(params["path"], sealing)
    deadline = time.monotonic() + params["deadline"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(servers), 16)) as pool:
        reports = list(pool.map(lambda server: _verify_server(server, credentials, server_ca, token, params, deadline), servers))
    per_server = dict(zip(servers, reports))
    failed = sorted(server for server, report in per_server.items() if not report["ok"])
    result = dict(token_facts(token), changed=False, path=params["path"], state=params["state"], api_servers=per_server,
                  failed_api_servers=failed)
    if failed:
        wanted = "authenticate" if params["state"] == "authenticated" else "refuse (401)"
        result.update(failed=True, msg="%d of %d API servers did not %s the service-account token in %s (signed by key %s) "
                      "within %ss: %s" % (len(failed), len(servers), wanted, params["path"], result["key_id"], params["deadline"],
                                          "; ".join(per_server[server]["detail"] for server in failed)))
    return result


def _verify_server(server, credentials, server_ca, token, params, deadline):
    started = time.monotonic()
    while True:
        with _kubernetes.KubeAPI(credentials, server=server, server_ca=server_ca, request_timeout=params["request_timeout"],
                                 token=token) as api:
            outcome = api.core_resources()
        authenticated = outcome.kind in (_kubernetes.OK, _kubernetes.FORBIDDEN)
        if params["state"] == "authenticated" and authenticated:
            return _report(True, "%s authenticates the token" % server, started)
        if params["state"] == "refused" and outcome.kind == _kubernetes.UNAUTHORIZED:
            return _report(True, "%s refuses the token (401)" % server, started)
        if authenticated:
            detail = "%s still authenticates the token" % server
        elif outcome.kind == _kubernetes.UNAUTHORIZED:
            detail = "%s refuses the token (401)" % server
        else:
            detail = "%s (this proves nothing about the token)" % outcome.detail
        if time.monotonic() + params["retry_interval"] > deadline:
            return _report(False, detail, started)
        time.sleep(params["retry_interval"])


def _report(ok, detail, started):
    return {"ok": ok, "detail": detail, "seconds": round(time.monotonic() - started, 3)}
