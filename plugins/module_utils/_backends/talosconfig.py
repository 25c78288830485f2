# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""talos_talosconfig: talosconfig credentials for any user, issued offline from the Talos API CA.

What `talosctl config new --roles` asks a node for, done on the controller with the CA key from
the rotation directory or a secrets.yaml: no node is contacted. A client certificate carries the
user's roles as its Subject Organization values (one O per role), no CN unless a user name is
given, and ExtendedKeyUsage exactly [ClientAuth] (TALOS-FACTS section 3 and 4).

Two ways to use it:
  issue    one context for one user (roles, lifetime, endpoints, nodes), created or kept;
  reissue  every context of an existing file that belongs to this cluster gets a new certificate
           from the CA, keeping its roles (read from its certificate), user name, endpoints and nodes.

A context is kept as it is when it still fits: CA bundle = the CA, client certificate issued by
the CA with the same roles and name, endpoints and nodes as asked, and not near expiry.
"""

from __future__ import annotations

import datetime
import os

from ansible_collections.talosops.pki.plugins.module_utils import _files, _pki, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, TalosPKIError
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import KIND_TALOS, TalosConfig, TalosContext

ARGUMENT_SPEC = _files.with_encryption({
    "path": {"type": "path", "required": True},
    "ca_dir": {"type": "path"},
    "secrets_file": {"type": "path"},
    "reissue": {"type": "bool", "default": False},
    "context": {"type": "str"},
    "name": {"type": "str"},
    "roles": {"type": "list", "elements": "str", "choices": list(_pki.TALOS_USER_ROLES)},
    "validity_hours": {"type": "int", "default": _pki.CLIENT_VALIDITY_HOURS},
    "endpoints": {"type": "list", "elements": "str"},
    "nodes": {"type": "list", "elements": "str"},
    "make_current": {"type": "bool", "default": True},
    "backup": {"type": "bool", "default": False},
    # The context's server CA bundle: the CA and the rotation's previous CA (ca_dir only), for the middle of a rotation.
    "trust_previous_ca": {"type": "bool", "default": False},
})

ARGUMENT_RULES = {
    "required_one_of": [("ca_dir", "secrets_file")],
    "mutually_exclusive": [("ca_dir", "secrets_file")],
}

# A certificate is renewed when less than this is left of it, or less than a fifth of the lifetime asked for.
RENEW_BEFORE = datetime.timedelta(days=30)
RENEW_FRACTION = 5


def run(params, check_mode=False, diff=False, sealing=None, now=None):
    now = (now or datetime.datetime.now(datetime.timezone.utc)).replace(microsecond=0)
    if params["reissue"] and (params["roles"] is not None or params["name"] is not None):
        raise ConfigError("reissue=true keeps each context's roles and user name as its certificate has them: leave out "
                          "`roles` and `name`, or issue a new context without reissue.")
    signer = _rotation_store.signing_ca(KIND_TALOS, params["ca_dir"], params["secrets_file"], sealing=sealing)
    lifetime = _rotation_store.client_lifetime(signer, params["validity_hours"], now)
    ca, previous_ca = signer.ca, signer.previous_crt
    server_ca = _server_ca_bundle(params, signer)
    ca_facts = _pki.describe_certificate(ca.crt)
    path = os.path.expanduser(params["path"])
    if params["reissue"]:
        talosconfig = TalosConfig.load(path, sealing=sealing)
        plans = _reissue_plans(talosconfig, params, ca, previous_ca, path)
    else:
        talosconfig = TalosConfig.load(path, sealing=sealing) if os.path.lexists(path) else None
        plans = [_issue_plan(talosconfig, params, path)]
    decisions = [_decide(plan, ca, server_ca, lifetime, now) for plan in plans]
    changed = any(decision["action"] != "kept" for decision in decisions)
    result = {"path": path, "changed": changed, "backup": None, "ca_fingerprint": ca_facts["fingerprint_sha256"],
              "ca_not_after": ca_facts["not_after"], "contexts": [_public(decision, ca, server_ca, lifetime, now) for decision in decisions]}
    if not changed or check_mode:
        result["summary"] = _summary(result, check_mode)
        return _with_diff(result, decisions, ca, path) if diff else result
    document = talosconfig
    if params["backup"] and talosconfig is not None:
        result["backup"] = _files.write_backup(path, _files.read_bytes(path, "talosconfig", sealing=sealing), sealing=sealing)
    for decision in decisions:
        if decision["action"] == "kept":
            continue
        context = decision["context"] if decision["context"] is not None else _issue(decision, ca, server_ca, lifetime, now)
        if document is None:
            document = TalosConfig.new(context, source=path)
        else:
            document.set_context(context, make_current=decision["plan"]["make_current"])
        decision["written"] = context
    _save(document, path, sealing)
    if params["ca_dir"]:
        # In the rotation's audit log, as every change made with its CA (paths and context names only).
        _rotation_store.load(params["ca_dir"], kind=KIND_TALOS, sealing=sealing).record(
            "talosconfig_written", path=path, contexts=[decision["plan"]["context"] for decision in decisions
                                                        if decision["action"] != "kept"])
    result["contexts"] = [_public(decision, ca, server_ca, lifetime, now) for decision in decisions]
    result["summary"] = _summary(result, check_mode)
    return _with_diff(result, decisions, ca, path) if diff else result


def _server_ca_bundle(params, signer):
    """The CA bundle a context trusts servers with (PEM): the CA alone, or with trust_previous_ca the CA then the CA it
    replaces - what works on every node from the accept phase to the end of a rotation, whichever CA a node serves with."""
    ca = _pki.split_pem_certificates(signer.ca.crt)[0]
    if not params.get("trust_previous_ca"):  # callers that build params by hand may leave it out
        return ca
    if not params["ca_dir"] or signer.previous_crt is None:
        raise ConfigError("trust_previous_ca needs ca_dir (a rotation directory): only a rotation knows the CA being replaced.")
    return ca + _pki.split_pem_certificates(signer.previous_crt)[0]


def _summary(result, check_mode):
    """One line per context for the end-of-run summary: what happened, roles, expiry; never keys."""
    verbs = {"issued": "issued", "reissued": "reissued", "updated": "updated (certificate kept)", "kept": "unchanged"}
    lines = []
    for item in result["contexts"]:
        verb = verbs[item["action"]]
        if check_mode and item["action"] != "kept":
            verb = "would be " + verb
        lines.append("%s context %s: %s, roles %s, expires %s" % (
            result["path"], item["context"], verb, ", ".join(item["client_certificate"]["roles"]), item["client_certificate"]["not_after"]))
    return lines


def _with_diff(result, decisions, ca, path):
    """Before and after of each context: endpoints, nodes, CA and client certificate fingerprints, roles, expiry."""
    result["diff"] = {"before_header": path, "after_header": path,
                      "before": {decision["plan"]["context"]: _describe_current(decision["plan"]["current"], ca)
                                 for decision in decisions},
                      "after": {public["context"]: {key: value for key, value in public.items() if key not in ("context", "action", "reason")}
                                for public in result["contexts"]}}
    return result


# --- what to write -----------------------------------------------------------------------------

def _issue_plan(talosconfig, params, path):
    name = params["context"] or params["name"]
    if not name:
        raise ConfigError("give `context` (the context name to write into %s) or `name` (the user, also used as the "
                          "context name)." % path)
    roles = _check_roles(params["roles"] if params["roles"] is not None else list(_pki.DEFAULT_CLIENT_ROLES),
                         "roles for context %s" % name)
    current = _readable_context(talosconfig, name)
    endpoints = params["endpoints"] if params["endpoints"] is not None else (current.endpoints if current else None)
    if not endpoints:
        raise ConfigError("endpoints are required to create context %s in %s: give the control-plane endpoints." % (name, path))
    nodes = params["nodes"] if params["nodes"] is not None else (current.nodes if current else ())
    return {"context": name, "current": current, "roles": roles, "common_name": params["name"],
            "endpoints": tuple(endpoints), "nodes": tuple(nodes), "make_current": params["make_current"]}


def _reissue_plans(talosconfig, params, ca, previous_ca, path):
    """One plan per context of this cluster: its roles, name, endpoints and nodes as they are."""
    ours = {_pki.fingerprint(ca.crt)} | ({_pki.fingerprint(previous_ca)} if previous_ca else set())
    names = [params["context"]] if params["context"] else list(talosconfig.context_names)
    plans = []
    for name in names:
        try:
            current = talosconfig.get_context(name)
        except ConfigError:
            if params["context"]:
                raise
            continue  # another kind of context (e.g. Omni), not ours to reissue
        if not params["context"] and not _belongs_to(current, ca, previous_ca, ours):
            continue
        facts = _pki.describe_certificate(current.crt)
        roles = _check_roles([role for role in facts["organization"] if role.strip()],
                             "roles of the client certificate of context %s in %s" % (name, path), reissue=True)
        plans.append({"context": name, "current": current, "roles": roles, "common_name": facts["common_name"],
                      "endpoints": tuple(params["endpoints"]) if params["endpoints"] is not None else current.endpoints,
                      "nodes": tuple(params["nodes"]) if params["nodes"] is not None else current.nodes,
                      "make_current": False})
    if not plans:
        raise ConfigError("%s has no context of this cluster to reissue (none trusts or was issued by the CA %s%s): check "
                          "the path, or name the context with `context`." % (
                              path, _pki.fingerprint(ca.crt)[:16], " or the previous CA" if previous_ca else ""))
    return plans


def _belongs_to(context, ca, previous_ca, fingerprints):
    try:
        if {_pki.fingerprint(crt) for crt in _pki.split_pem_certificates(context.ca)} & fingerprints:
            return True
        return any(_pki.is_issued_by(context.crt, issuer) for issuer in (ca.crt, previous_ca) if issuer)
    except TalosPKIError:
        return False


def _check_roles(roles, what, reissue=False):
    if isinstance(roles, str):
        roles = [roles]
    unique = []
    for role in roles:
        role = role.strip() if isinstance(role, str) else role
        if role not in unique:
            unique.append(role)
    unknown = [role for role in unique if role not in _pki.TALOS_USER_ROLES]
    if unknown or not unique:
        remedy = ("issue that user a new talosconfig with `roles` instead" if reissue
                  else "give one or more of them")
        raise ConfigError("%s: %s %s not a Talos role a user can be given (%s): %s." % (
            what, ", ".join(map(str, unknown)) or "(none)", "is" if len(unknown) == 1 else "are",
            ", ".join(_pki.TALOS_USER_ROLES), remedy))
    return tuple(unique)


def _readable_context(talosconfig, name):
    if talosconfig is None or name not in talosconfig.context_names:
        return None
    try:
        return talosconfig.get_context(name)
    except ConfigError:
        return None  # an unusable context of that name is replaced


def _decide(plan, ca, server_ca, lifetime, now):
    """{plan, action (issued|reissued|updated|kept), reason, context (a TalosContext to write when the certificate is kept)}."""
    current = plan["current"]
    if current is None:
        return {"plan": plan, "action": "issued", "reason": "the file has no context %s yet" % plan["context"], "context": None}
    problem = _certificate_problem(current, plan, ca, lifetime, now)
    if problem:
        return {"plan": plan, "action": "reissued", "reason": problem, "context": None}
    differences = []
    if _fingerprints(current.ca) != _fingerprints(server_ca):
        differences.append("the CA bundle is not the CA alone" if len(_fingerprints(server_ca)) == 1
                           else "the CA bundle is not the CA and the CA it replaces")
    if current.endpoints != plan["endpoints"]:
        differences.append("the endpoints differ")
    if current.nodes != plan["nodes"]:
        differences.append("the nodes differ")
    if not differences:
        return {"plan": plan, "action": "kept", "reason": "context %s already fits" % plan["context"], "context": None}
    kept = TalosContext(plan["context"], plan["endpoints"], plan["nodes"], server_ca, current.crt, current.key)
    return {"plan": plan, "action": "updated", "reason": "; ".join(differences), "context": kept}


def _certificate_problem(current, plan, ca, lifetime, now):
    """Why the context's client certificate must be replaced, or None."""
    try:
        _pki.check_key_pair(current.crt, current.key, what="client certificate")
        facts = _pki.describe_certificate(current.crt)
    except TalosPKIError:
        return "the client certificate or its key cannot be used"
    if not _pki.is_issued_by(current.crt, ca.crt):
        return "the client certificate is not issued by the CA"
    if sorted(role for role in facts["organization"] if role.strip()) != sorted(plan["roles"]):
        return "the roles differ (%s -> %s)" % (", ".join(facts["organization"]) or "none", ", ".join(plan["roles"]))
    if plan["common_name"] is not None and facts["common_name"] != plan["common_name"]:
        return "the user name differs"
    left = _parse_time(facts["not_after"]) - now
    if left < min(RENEW_BEFORE, lifetime / RENEW_FRACTION):
        return "the client certificate expires at %s" % facts["not_after"]
    return None


def _fingerprints(bundle):
    return [_pki.fingerprint(crt) for crt in _pki.split_pem_certificates(bundle)]


def _issue(decision, ca, server_ca, lifetime, now):
    plan = decision["plan"]
    issued = _pki.issue_client_certificate(ca, roles=plan["roles"], validity_hours=int(lifetime.total_seconds() // 3600),
                                           now=now, common_name=plan["common_name"])
    return TalosContext(plan["context"], plan["endpoints"], plan["nodes"], server_ca, issued.crt, issued.key)


def _save(document, path, sealing):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        _files.ensure_private_dir(folder)
    document.save(path, sealing=sealing)


# --- public facts (never keys) -----------------------------------------------------------------

def _parse_time(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)


def _describe_current(context, ca):
    if context is None:
        return None
    return _describe_context(context, ca)


def _describe_context(context, ca):
    facts = _pki.describe_certificate(context.crt)
    return {
        "endpoints": list(context.endpoints),
        "nodes": list(context.nodes),
        "ca_fingerprints": [_pki.fingerprint(crt) for crt in _pki.split_pem_certificates(context.ca)],
        "client_certificate": {
            "fingerprint_sha256": facts["fingerprint_sha256"],
            "subject": facts["subject"],
            "roles": [role for role in facts["organization"] if role.strip()],
            "not_after": facts["not_after"],
            "issued_by_ca": _pki.is_issued_by(context.crt, ca.crt),
        },
    }


def _public(decision, ca, server_ca, lifetime, now):
    """What a context is (or, in check mode, would be) after this run."""
    plan = decision["plan"]
    written = decision.get("written") or decision["context"] or (plan["current"] if decision["action"] == "kept" else None)
    if written is not None:
        facts = _describe_context(written, ca)
    else:
        # Check mode: the certificate is not made; say what it would be.
        planned = now + lifetime
        facts = {"endpoints": list(plan["endpoints"]), "nodes": list(plan["nodes"]),
                 "ca_fingerprints": _fingerprints(server_ca),
                 "client_certificate": {"fingerprint_sha256": None, "subject": None, "roles": list(plan["roles"]),
                                        "not_after": planned.strftime("%Y-%m-%dT%H:%M:%SZ"), "issued_by_ca": True}}
    return dict(facts, context=plan["context"], action=decision["action"], reason=decision["reason"])
