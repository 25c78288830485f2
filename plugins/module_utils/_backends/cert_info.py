# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""talos_cert_info: every CA, signing key and given client certificate of one cluster, with days left. Read-only.

What it finds never fails the task: an unreachable node or an unreadable file becomes an entry with status `error`,
which the report counts as an alert. Only public parts leave this module (fingerprints, subjects, dates).
"""

from __future__ import annotations

import asyncio
import datetime
import math
import os

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._auth import Target, with_auth
from ansible_collections.talosops.pki.plugins.module_utils._backends.cluster_info import node_label, read_node
from ansible_collections.talosops.pki.plugins.module_utils._client import run as run_async
from ansible_collections.talosops.pki.plugins.module_utils._errors import TalosPKIError
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import KIND_AGGREGATOR, KIND_ETCD, SecretsBundle, TalosConfig

ARGUMENT_SPEC = with_auth({
    "cluster": {"type": "str"},
    "nodes": {"type": "list", "elements": "str", "required": True},
    "node_names": {"type": "dict", "default": {}},
    "talosconfigs": {"type": "list", "elements": "path", "default": []},
    "kubeconfigs": {"type": "list", "elements": "path", "default": []},
    # Paths of secrets bundles, not secrets: only their CA certificates are read and reported.
    "secrets_files": {"type": "list", "elements": "path", "default": [], "no_log": False},
    "warn_days": {"type": "int", "default": 90},
    "concurrency": {"type": "int", "default": 64},
})

# CA names in the order a report lists them, with their readable titles.
TITLES = {"talos": "Talos API CA", "kubernetes": "Kubernetes API CA", "aggregator": "Kubernetes aggregator (front-proxy) CA",
          "etcd": "etcd CA", "service_account": "Kubernetes service-account signing key"}
# Report names -> the secrets bundle's CA kinds (certs.os, certs.k8s, certs.k8saggregator, certs.etcd).
SECRETS_KINDS = {"talos": "talos", "kubernetes": "kubernetes", "aggregator": KIND_AGGREGATOR, "etcd": KIND_ETCD}
STATUS_OK, STATUS_WARN, STATUS_EXPIRED, STATUS_ERROR, STATUS_NO_EXPIRY = "ok", "warn", "expired", "error", "no expiry"
# A client certificate no CA on the nodes issued (the nodes refuse it), or a secrets bundle whose CA no node issues with.
STATUS_UNTRUSTED, STATUS_STALE = "untrusted", "stale"
ALERTS = (STATUS_WARN, STATUS_EXPIRED, STATUS_ERROR, STATUS_UNTRUSTED, STATUS_STALE)
SECONDS_PER_DAY = 86400


def run(params, check_mode=False, diff=False, sealing=None, now=None):
    """Reads only, so check mode runs the same; vault-encrypted files are read in clear under `sealing`."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    report = Report(params, now, sealing)
    try:
        target = Target(params, sealing=sealing)
        per_node, failures = run_async(_gather(target, params))
    except TalosPKIError as error:
        report.error("cluster", ", ".join(params.get("endpoints") or ()) or "talosconfig", str(error))
        per_node, failures = {}, {}
    for node, error in sorted(failures.items()):
        report.error("node", node_label(node, params), str(error))
    report.add_node_cas(per_node)
    for path in params["talosconfigs"]:
        report.add_file(path, "talosconfig", _talosconfig_certificates)
    for path in params["kubeconfigs"]:
        report.add_file(path, "kubeconfig", _kubeconfig_certificates)
    for path in params["secrets_files"]:
        report.add_file(path, "secrets bundle", _secrets_certificates)
    return report.result(per_node)


async def _gather(target, params):
    limit = asyncio.Semaphore(params["concurrency"])
    async with target.client() as client:
        async def one(node):
            async with limit:
                try:
                    return node, await read_node(client, node)
                except TalosPKIError as error:
                    return node, error
        read = dict(await asyncio.gather(*(one(node) for node in params["nodes"])))
    failures = {node: value for node, value in read.items() if isinstance(value, Exception)}
    return {node: value for node, value in read.items() if node not in failures}, failures


def days_left(not_after, now):
    """Whole days until `not_after` (an ISO 8601 UTC string), rounded down; negative once expired."""
    moment = datetime.datetime.strptime(not_after, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    return math.floor((moment - now).total_seconds() / SECONDS_PER_DAY)


def status_of(days, warn_days):
    if days is None:
        return STATUS_NO_EXPIRY
    if days < 0:
        return STATUS_EXPIRED
    return STATUS_WARN if days < warn_days else STATUS_OK


class Report:
    """The entries of one cluster's report, built from what the nodes and files hold."""

    def __init__(self, params, now, sealing=None):
        self.params = params
        self.now = now
        self.sealing = sealing  # how the files it checks are read (a _files.Sealing, or None)
        self.cluster = params.get("cluster")
        self.entries = []
        self.disagreements = {}
        self.stray_cas = {}
        self.node_cas = {}  # kind -> {fingerprint: (PEM, issuing on some node)}, to check files against

    def _entry(self, item, role, where, facts=None, **extra):
        entry = {"cluster": self.cluster, "kind": None, "item": item, "role": role, "where": where, "subject": None, "fingerprint": None,
                 "not_after": None, "days_left": None, "status": STATUS_NO_EXPIRY}
        if facts is not None:
            days = days_left(facts["not_after"], self.now)
            entry.update(subject=facts["subject"], fingerprint=facts["fingerprint_sha256"], not_after=facts["not_after"],
                         days_left=days, status=status_of(days, self.params["warn_days"]))
        entry.update(extra)
        self.entries.append(entry)
        return entry

    def error(self, what, where, message):
        self._entry("unreadable %s" % what, "error", [where], status=STATUS_ERROR, error=message)

    def add_node_cas(self, per_node):
        """One entry per CA certificate and signing key, with the nodes that hold it: role `issuing` when some node issues
        (signs) with it, `accepted` when nodes only accept it next to one that issues, `stray accepted` when no node issues
        with it (left by an aborted rotation, added by hand, or the next CA of a rotation in progress)."""
        holders = {}  # (kind, fingerprint) -> {"issuing": [nodes], "accepted": [nodes]}
        described = {}
        for node, (_version, config) in per_node.items():
            for kind, fields in config.report_cas().items():
                what = "%s of %s" % (TITLES[kind], node)
                issuing = fields.issuing_key if kind == "service_account" else fields.issuing_crt
                for role, pems in (("issuing", (issuing,) if issuing else ()), ("accepted", fields.accepted)):
                    for pem in pems:
                        if kind == "service_account":
                            fingerprint = _pki.public_key_fingerprint(pem, what)
                            described.setdefault(fingerprint, {"key_type": _pki.key_type(pem, what)})
                        else:
                            facts = _pki.describe_certificate(pem)
                            fingerprint = facts["fingerprint_sha256"]
                            described.setdefault(fingerprint, facts)
                            known = self.node_cas.setdefault(kind, {})
                            known[fingerprint] = (pem, role == "issuing" or known.get(fingerprint, (None, False))[1])
                        holders.setdefault((kind, fingerprint), {"issuing": [], "accepted": []})[role].append(node)
        issuing_by_kind = {}
        for (kind, fingerprint), nodes in holders.items():
            if nodes["issuing"]:
                issuing_by_kind.setdefault(kind, {})[fingerprint] = [node_label(node, self.params) for node in nodes["issuing"]]
        self.disagreements = {kind: dict(sorted(issuing.items())) for kind, issuing in issuing_by_kind.items() if len(issuing) > 1}
        for (kind, fingerprint), nodes in sorted(holders.items(), key=lambda item: (list(TITLES).index(item[0][0]), item[0][1])):
            role = "issuing" if nodes["issuing"] else "stray accepted"
            where = [node_label(node, self.params) for node in dict.fromkeys(nodes["issuing"] + nodes["accepted"])]
            facts = described[fingerprint]
            if kind == "service_account":
                self._entry(TITLES[kind], "signing key" if nodes["issuing"] else "accepted key", where, kind=kind,
                            fingerprint=fingerprint, key_type=facts["key_type"],
                            note="a key has no expiry date; its age is not visible in the machine configuration")
                continue
            entry = self._entry(TITLES[kind], role, where, facts, kind=kind, key_type=facts["key_type"],
                                accepted_on=[node_label(node, self.params) for node in nodes["accepted"]])
            if not nodes["issuing"]:
                self.stray_cas.setdefault(kind, []).append({key: entry[key] for key in ("fingerprint", "subject", "not_after", "where")})

    def add_file(self, path, what, certificates):
        try:
            found = certificates(os.path.expanduser(path), self.sealing)
        except TalosPKIError as error:
            self.error(what, path, str(error))
            return
        for kind, item, role, pem in found:
            facts = _pki.describe_certificate(pem)
            entry = self._entry(item, role, [path], facts, kind=kind, key_type=facts["key_type"],
                                roles=facts["organization"] if role == "client certificate" else None)
            known = self.node_cas.get(kind)
            if not known:
                continue  # the nodes could not be read: nothing to check against
            if role == "client certificate":
                # Trusted when a CA the nodes hold (issuing or accepted) issued it; else the nodes refuse it.
                issuers = [ca for ca, _issuing in known.values() if _pki.is_issued_by(pem, ca)]
                entry["trusted"] = bool(issuers)
                if not entry["trusted"] and entry["status"] != STATUS_EXPIRED:
                    entry["status"] = STATUS_UNTRUSTED
                self._cap_at_issuer(entry, issuers)
            else:
                # A bundle whose CA no node issues with any more is stale (e.g. not written back after a rotation).
                entry["in_cluster"] = known.get(facts["fingerprint_sha256"], (None, False))[1]
                if not entry["in_cluster"] and entry["status"] != STATUS_EXPIRED:
                    entry["status"] = STATUS_STALE

    def _cap_at_issuer(self, entry, issuers):
        """A client certificate stops working when the CA that issued it expires, whatever its own notAfter says: its
        entry counts down to the earlier of the two (`certificate_not_after` keeps its own date)."""
        issuer_ends = sorted(_pki.describe_certificate(ca)["not_after"] for ca in issuers)
        # With the same CA certificate accepted twice (reissued with the same key), the latest one keeps it working.
        if not issuer_ends or issuer_ends[-1] >= entry["not_after"]:
            return
        days = days_left(issuer_ends[-1], self.now)
        entry.update(certificate_not_after=entry["not_after"], not_after=issuer_ends[-1], days_left=days,
                     status=status_of(days, self.params["warn_days"]),
                     note="capped at the expiry of the CA that issued it: the nodes refuse it once that CA has expired")

    def result(self, per_node):
        alerts = [entry for entry in self.entries if entry["status"] in ALERTS]
        nodes = {node: {"name": self.params["node_names"].get(node), "hostname": version.get("hostname"),
                        "talos_version": version.get("tag"), "machine_type": config.machine_type}
                 for node, (version, config) in per_node.items()}
        known_days = [entry["days_left"] for entry in self.entries if entry["days_left"] is not None]
        return {"changed": False, "cluster": self.cluster, "checked_at": self.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "warn_days": self.params["warn_days"], "entries": self.entries, "nodes": nodes,
                "disagreements": self.disagreements, "stray_cas": self.stray_cas,
                "min_days_left": min(known_days) if known_days else None, "alerts": len(alerts)}


def _talosconfig_certificates(path, sealing):
    config = TalosConfig.load(path, sealing=sealing)
    return [("talos", "Talos API client certificate (context %s)" % name, "client certificate", config.get_context(name).crt)
            for name in config.context_names]


def _kubeconfig_certificates(path, sealing):
    config = Kubeconfig.load(path, sealing=sealing)
    return [("kubernetes", "Kubernetes API client certificate (context %s)" % name, "client certificate", config.credentials(name).crt)
            for name in config.names("contexts")]


def _secrets_certificates(path, sealing):
    bundle = SecretsBundle.load(path, sealing=sealing)
    return [(name, TITLES[name], "secrets bundle", bundle.get_ca(kind)[0]) for name, kind in SECRETS_KINDS.items()]
