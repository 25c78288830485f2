# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""talos_kubeconfig: fetch the admin kubeconfig through the Talos API and write it (0600), keeping one that still fits.

Talos issues a new client certificate on every Kubeconfig call, so "fetched differs from the
file" says nothing. A file is kept when it already fits the node's current Kubernetes PKI: same
server, same CA data (as certificates), and a client certificate issued by the node's current
issuing CA that is valid for another 30 days. That makes a rerun a no-op and still replaces the
file as soon as the rotation swaps or removes a CA.

For users other than the admin, the client certificate is issued on the controller from the
Kubernetes API CA (rotation directory or secrets.yaml): CN = user name, O = groups, as
kube-apiserver's x509 authenticator reads them; the server and CA data still come from the
node. With `reissue`, every context of this cluster in an existing file gets a certificate from
that CA with the same user name and groups, and the CA data the cluster trusts now.
"""

from __future__ import annotations

import datetime
import os

from ansible_collections.talosops.pki.plugins.module_utils import _files, _pki, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._auth import Target, with_auth
from ansible_collections.talosops.pki.plugins.module_utils._client import run as run_async
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig, describe, find_kubeconfig
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import KIND_KUBERNETES

ARGUMENT_SPEC = _files.with_encryption(with_auth({
    "path": {"type": "path"},
    "node": {"type": "str"},
    "merge": {"type": "bool", "default": True},
    "name": {"type": "str"},
    "force": {"type": "bool", "default": True},
    "backup": {"type": "bool", "default": False},
    "user": {"type": "str"},
    "groups": {"type": "list", "elements": "str"},
    "validity_hours": {"type": "int", "default": _pki.CLIENT_VALIDITY_HOURS},
    "reissue": {"type": "bool", "default": False},
    "ca_dir": {"type": "path"},
    "secrets_file": {"type": "path"},
}))
ARGUMENT_RULES = {"mutually_exclusive": [("ca_dir", "secrets_file")]}

# A client certificate closer than this to expiry is replaced on the next run (for certificates issued here, also one
# with less than a fifth of the lifetime asked for left).
CLIENT_RENEW_BEFORE = datetime.timedelta(days=30)
RENEW_FRACTION = 5


def run(params, check_mode=False, diff=False, sealing=None):
    path = find_kubeconfig(params["path"])
    result = {"path": path, "changed": False, "backup": None}
    if not params["force"] and os.path.lexists(path):
        # Pinned: e.g. the kubeconfig from before a rotation, kept to prove it is refused at the end.
        existing = Kubeconfig.load(path, sealing=sealing)
        return dict(result, kept="force=false and the file exists", **_facts(existing, None))
    if params["user"] is not None or params["groups"] is not None or params["reissue"]:
        return _run_issuing(params, path, check_mode, diff, sealing)
    target = Target(params, sealing=sealing)
    fetched_bytes, root = run_async(_fetch(target, params["node"]))
    fetched = Kubeconfig.parse(fetched_bytes, "kubeconfig from %s" % (params["node"] or target.endpoints[0]), sealing=sealing)
    if params["name"]:
        fetched = fetched.renamed(params["name"])
    wanted = fetched.credentials(fetched.only_context())
    issuing = (root.get("issuing_ca") or {}).get("crt")
    known_cas = [issuing] if issuing else []

    existing = Kubeconfig.load(path, sealing=sealing) if os.path.lexists(path) else None
    _refuse_foreign_entry(existing, wanted, path)
    before = _existing_credentials(existing, wanted.context)
    reason = _still_fits(before, wanted, issuing)
    result.update(_facts(fetched, known_cas))
    if diff:
        result["diff"] = {"before": _describe_or_none(before, known_cas), "after": _describe(wanted, known_cas),
                          "before_header": "%s (context %s)" % (path, wanted.context), "after_header": "%s (context %s)" % (path, wanted.context)}
    if reason is None:
        return dict(result, kept="the file's context %s already fits the current Kubernetes PKI" % wanted.context)
    result.update(changed=True, replaced_because=reason)
    if check_mode:
        return result
    if params["merge"] and existing is not None:
        existing.merge(fetched)
        document = existing
    else:
        document = fetched
    if params["backup"] and existing is not None:
        result["backup"] = _files.write_backup(path, _files.read_bytes(path, "kubeconfig", sealing=sealing), sealing=sealing)
    document.save(path, sealing=sealing)
    return result


async def _fetch(target, node):
    async with target.client() as client:
        return await client.kubeconfig(node=node), await client.kubernetes_root(node=node)


def _existing_credentials(existing, context):
    if existing is None or context not in existing.names("contexts"):
        return None
    try:
        return existing.credentials(context)
    except ConfigError:
        return None  # an unusable entry of ours is simply replaced


def _refuse_foreign_entry(existing, wanted, path):
    """Same-named entries of another cluster are not ours to replace: every Talos cluster names them admin@<cluster name>.

    An entry is this cluster's when it relates to the fetched one: a cluster entry with the same
    server or a CA in common, a user that a context of this cluster uses or whose client
    certificate one of the cluster's CAs issued, a context whose cluster entry is this cluster's.
    """
    if existing is None:
        return
    wanted_cas = _pki.split_pem_certificates(wanted.ca) if wanted.ca else []

    def our_cluster(name):
        cluster = existing.entry("clusters", name)
        if cluster is None:
            return False
        try:
            cas = existing.read_pem(cluster, "certificate-authority", "cluster %s" % name, required=False)
        except ConfigError:
            cas = None
        return cluster.get("server") == wanted.server or bool(_fingerprints(cas) & _fingerprints(wanted.ca))

    def our_user(name):
        # Used by a context of this cluster (after a rotation its certificate is from the previous CA), or issued by its CA.
        for context_name in existing.names("contexts"):
            context = existing.entry("contexts", context_name) or {}
            if context.get("user") == name and our_cluster(context.get("cluster")):
                return True
        user = existing.entry("users", name)
        try:
            crt = existing.read_pem(user, "client-certificate", "user %s" % name)
            return any(_pki.is_issued_by(crt, ca) for ca in wanted_cas)
        except Exception:  # pylint: disable=broad-except
            return False

    def our_context(name):
        return our_cluster((existing.entry("contexts", name) or {}).get("cluster"))

    checks = (("cluster", "clusters", wanted.cluster, our_cluster), ("user", "users", wanted.user, our_user),
              ("context", "contexts", wanted.context, our_context))
    foreign = ["%s %s" % (label, name) for label, section, name, ours in checks if name in existing.names(section) and not ours(name)]
    if foreign:
        raise ConfigError("%s already has %s belonging to another cluster (another server and CA): they are not replaced. Give "
                          "`name` (rotate_ca_kubeconfig_context_name) to write this cluster's entries under another name, or "
                          "write to another file (path, rotate_ca_kubeconfig)." % (
                              path, " and ".join(foreign)))


def _fingerprints(pem):
    return {_pki.fingerprint(crt) for crt in _pki.split_pem_certificates(pem)} if pem else set()


def _still_fits(before, wanted, issuing):
    """None when the existing credentials still fit, else why they are replaced."""
    if before is None:
        return "the file has no context %s yet" % wanted.context
    if before.server != wanted.server:
        return "the server changed (%s -> %s)" % (before.server, wanted.server)
    if _fingerprints(before.ca) != _fingerprints(wanted.ca):
        return "the CA data differs from the CAs the cluster trusts now"
    try:
        _pki.check_key_pair(before.crt, before.key, what="client certificate")
        facts = _pki.describe_certificate(before.crt)
    except Exception:  # pylint: disable=broad-except
        return "the client certificate or key cannot be used"
    if not issuing or not _pki.is_issued_by(before.crt, issuing):
        return "the client certificate is not issued by the current issuing Kubernetes CA"
    not_after = datetime.datetime.strptime(facts["not_after"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    if not_after - datetime.datetime.now(datetime.timezone.utc) < CLIENT_RENEW_BEFORE:
        return "the client certificate expires within %d days" % CLIENT_RENEW_BEFORE.days
    return None


def _describe(credentials, known_cas):
    facts = describe(credentials)
    facts["client_certificate"]["issued_by_current_ca"] = bool(known_cas) and any(
        _pki.is_issued_by(credentials.crt, ca) for ca in known_cas)
    return facts


def _describe_or_none(credentials, known_cas):
    return _describe(credentials, known_cas) if credentials is not None else None


def _facts(kubeconfig, known_cas):
    try:
        credentials = kubeconfig.credentials(kubeconfig.current_context)
    except ConfigError:
        return {"context": kubeconfig.current_context}
    return _describe(credentials, known_cas) if known_cas is not None else describe(credentials)


# --- credentials issued here, for users other than the admin -------------------------------

def _run_issuing(params, path, check_mode, diff, sealing=None, now=None):
    """A user's kubeconfig (user, groups), or every user of this cluster in an existing file reissued (reissue)."""
    now = (now or datetime.datetime.now(datetime.timezone.utc)).replace(microsecond=0)
    if params["reissue"] and (params["user"] is not None or params["groups"] is not None):
        raise ConfigError("reissue=true keeps each user's name and groups as its certificate has them: leave out `user` and "
                          "`groups`, or issue one user's kubeconfig without reissue.")
    if not params["reissue"] and not (params["user"] or "").strip():
        raise ConfigError("`groups` need `user`: the user name the client certificate is issued for (its CN).")
    signer = _rotation_store.signing_ca(KIND_KUBERNETES, params["ca_dir"], params["secrets_file"], sealing=sealing)
    lifetime = _rotation_store.client_lifetime(signer, params["validity_hours"], now)
    existing = Kubeconfig.load(path, sealing=sealing) if params["reissue"] or os.path.lexists(path) else None
    target = Target(params, sealing=sealing)
    fetched_bytes, _root = run_async(_fetch(target, params["node"]))
    fetched = Kubeconfig.parse(fetched_bytes, "kubeconfig from %s" % (params["node"] or target.endpoints[0]), sealing=sealing)
    trusted = fetched.credentials(fetched.only_context())
    result = {"path": path, "changed": False, "backup": None}
    if _pki.fingerprint(signer.ca.crt) in _fingerprints(trusted.ca):
        pass
    elif check_mode and signer.previous_crt and _pki.fingerprint(signer.previous_crt) in _fingerprints(trusted.ca):
        # A dry run before (or during) the rotation previews its end: the rotation's new CA alone is trusted then.
        trusted = trusted._replace(ca=_pki.split_pem_certificates(signer.ca.crt)[0])
        result["preview"] = "the cluster does not trust the rotation's new CA yet: shown as it will be once the rotation completes"
    else:
        raise ConfigError("the Kubernetes API CA in %s (%s) is not one the cluster trusts now (its API servers accept %s): "
                          "give this cluster's CA - after a rotation, its rotation directory (<rotate_ca_dir>/kubernetes)." % (
                              signer.source, _pki.fingerprint(signer.ca.crt)[:16],
                              ", ".join(sorted(fp[:16] for fp in _fingerprints(trusted.ca)))))
    if params["reissue"]:
        decisions, document = _reissue(existing, trusted, signer, lifetime, now, path)
    else:
        decisions, document = _issue_user(existing, fetched, trusted, signer, lifetime, now, params, path)
    result["changed"] = any(decision["facts"]["action"] != "kept" for decision in decisions)
    result["contexts"] = [decision["facts"] for decision in decisions]
    result["summary"] = ["%s context %s: %s%s, user %s, groups %s, expires %s" % (
        path, item["context"], "would be " if check_mode and item["action"] != "kept" else "",
        {"kept": "unchanged"}.get(item["action"], item["action"]), item["client_certificate"].get("common_name"),
        ", ".join(item["client_certificate"]["organization"]) or "none", item["client_certificate"]["not_after"])
        for item in result["contexts"]]
    if diff:
        hidden = ("context", "action", "reason")
        result["diff"] = {"before_header": path, "after_header": path,
                          "before": {decision["facts"]["context"]: decision["before"] for decision in decisions},
                          "after": {decision["facts"]["context"]: {key: value for key, value in decision["facts"].items() if key not in hidden}
                                    for decision in decisions}}
    if not result["changed"] or check_mode:
        return result
    if params["backup"] and existing is not None:
        result["backup"] = _files.write_backup(path, _files.read_bytes(path, "kubeconfig", sealing=sealing), sealing=sealing)
    document.save(path, sealing=sealing)
    return result


def _issue_user(existing, fetched, trusted, signer, lifetime, now, params, path):
    """One user's context: named <user>@<cluster> (or `name`), the cluster's server and CA data, CN=user, O=groups."""
    groups = tuple(params["groups"] or ())
    if any(not group.strip() for group in groups):
        raise ConfigError("groups must be non-empty names (the certificate's O values), got %r." % (list(groups),))
    if params["name"]:
        document = fetched.renamed(params["name"])
    else:
        document = fetched.for_user("%s@%s" % (params["user"], trusted.cluster))
    placeholder = document.credentials(document.only_context())
    if _fingerprints(placeholder.ca) != _fingerprints(trusted.ca):  # a check-mode preview of the rotation's end
        document.set_certificate_authority(placeholder.cluster, trusted.ca)
        placeholder = document.credentials(placeholder.context)
    _refuse_foreign_entry(existing, placeholder, path)
    before = _existing_credentials(existing, placeholder.context)
    reason = _issued_still_fits(before, placeholder, signer, params["user"], groups, lifetime, now, same_server=True)
    if reason is None:
        return [_decision(before, before, signer, "kept", "context %s already fits" % before.context)], existing
    issued = _pki.issue_client_certificate(signer.ca, roles=groups, validity_hours=params["validity_hours"], now=now,
                                           common_name=params["user"])
    document.set_client_certificate(placeholder.user, issued.crt, issued.key)
    if params["merge"] and existing is not None:
        existing.merge(document)
        document = existing
    after = document.credentials(placeholder.context)
    return [_decision(before, after, signer, "issued" if before is None else "reissued", reason)], document


def _reissue(existing, trusted, signer, lifetime, now, path):
    """Every context of this cluster: a new certificate with the same CN and O, the CA data the cluster trusts now."""
    ours = _fingerprints(trusted.ca) | ({_pki.fingerprint(signer.previous_crt)} if signer.previous_crt else set())
    decisions, users_done = [], {}
    for name in existing.names("contexts"):
        try:
            before = existing.credentials(name)
        except ConfigError:
            continue  # not a client-certificate context: not ours to reissue
        issuers = [signer.ca.crt] + ([signer.previous_crt] if signer.previous_crt else [])
        if not (_fingerprints(before.ca) & ours or any(_pki.is_issued_by(before.crt, issuer) for issuer in issuers)):
            continue
        facts = _pki.describe_certificate(before.crt)
        if not facts["common_name"]:
            raise ConfigError("%s: the client certificate of context %s has no common name, so kube-apiserver cannot name its user: "
                              "issue that user a kubeconfig with `user` instead of reissuing it." % (path, name))
        wanted = before._replace(ca=trusted.ca)
        reason = _issued_still_fits(before, wanted, signer, facts["common_name"], facts["organization"], lifetime, now,
                                    same_server=False)
        if reason is not None and before.user not in users_done:
            issued = _pki.issue_client_certificate(signer.ca, roles=facts["organization"], now=now, common_name=facts["common_name"],
                                                   validity_hours=int(lifetime.total_seconds() // 3600))
            existing.set_client_certificate(before.user, issued.crt, issued.key)
            users_done[before.user] = True
        if reason is not None:
            existing.set_certificate_authority(before.cluster, trusted.ca)
        after = existing.credentials(name)
        decisions.append(_decision(before, after, signer, "kept" if reason is None else "reissued", reason or "already fits"))
    if not decisions:
        raise ConfigError("%s has no context of this cluster to reissue (none trusts or was issued by the cluster's Kubernetes API "
                          "CAs): check the path." % path)
    return decisions, existing


def _issued_still_fits(before, wanted, signer, user, groups, lifetime, now, same_server):
    """None when the context's credentials still fit, else why its certificate is (re)issued."""
    if before is None:
        return "the file has no context %s yet" % wanted.context
    if same_server and before.server != wanted.server:
        return "the server changed (%s -> %s)" % (before.server, wanted.server)
    if _fingerprints(before.ca) != _fingerprints(wanted.ca):
        return "the CA data differs from the CAs the cluster trusts now"
    try:
        _pki.check_key_pair(before.crt, before.key, what="client certificate")
        facts = _pki.describe_certificate(before.crt)
    except Exception:  # pylint: disable=broad-except
        return "the client certificate or key cannot be used"
    if not _pki.is_issued_by(before.crt, signer.ca.crt):
        return "the client certificate is not issued by the CA"
    if facts["common_name"] != user or sorted(facts["organization"]) != sorted(groups):
        return "the user name or groups differ"
    left = datetime.datetime.strptime(facts["not_after"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc) - now
    if left < min(CLIENT_RENEW_BEFORE, lifetime / RENEW_FRACTION):
        return "the client certificate expires at %s" % facts["not_after"]
    return None


def _decision(before, after, signer, action, reason):
    facts = describe(after)
    certificate = _pki.describe_certificate(after.crt)
    facts["client_certificate"].update(common_name=certificate["common_name"], issued_by_ca=_pki.is_issued_by(after.crt, signer.ca.crt))
    return {"before": describe(before) if before is not None else None,
            "facts": dict(facts, action=action, reason=reason)}
