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
"""

from __future__ import annotations

import datetime
import os

from ansible_collections.talosops.pki.plugins.module_utils import _files, _pki
from ansible_collections.talosops.pki.plugins.module_utils._auth import Target, with_auth
from ansible_collections.talosops.pki.plugins.module_utils._client import run as run_async
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig, describe, find_kubeconfig

ARGUMENT_SPEC = _files.with_encryption(with_auth({
    "path": {"type": "path"},
    "node": {"type": "str"},
    "merge": {"type": "bool", "default": True},
    "name": {"type": "str"},
    "force": {"type": "bool", "default": True},
    "backup": {"type": "bool", "default": False},
}))

# A client certificate closer than this to expiry is replaced on the next run.
CLIENT_RENEW_BEFORE = datetime.timedelta(days=30)


def run(params, check_mode=False, diff=False):
    path = find_kubeconfig(params["path"])
    result = {"path": path, "changed": False, "backup": None}
    if not params["force"] and os.path.lexists(path):
        # Pinned: e.g. the kubeconfig from before a rotation, kept to prove it is refused at the end.
        existing = Kubeconfig.load(path)
        return dict(result, kept="force=false and the file exists", **_facts(existing, None))
    target = Target(params)
    fetched_bytes, root = run_async(_fetch(target, params["node"]))
    fetched = Kubeconfig.parse(fetched_bytes, "kubeconfig from %s" % (params["node"] or target.endpoints[0]))
    if params["name"]:
        fetched = fetched.renamed(params["name"])
    wanted = fetched.credentials(fetched.only_context())
    issuing = (root.get("issuing_ca") or {}).get("crt")
    known_cas = [issuing] if issuing else []

    existing = Kubeconfig.load(path) if os.path.lexists(path) else None
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
        result["backup"] = _files.write_backup(path, _files.read_bytes(path, "kubeconfig"))
    document.save(path)
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
