# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""talos_machine_patch: bring nodes' CA fields to the state of one rotation phase (or rollback phase), one node or waves.

A thin runner over the node service (_node_service): per node read, type check, target state, lockout guard, apply
(kubelet watch included), audit entry; the claim around the first control plane's accept; the waves around the nodes."""

from __future__ import annotations

import asyncio
import collections
import os
import time

from ansible_collections.talosops.pki.plugins.module_utils import _claim, _files, _node_service, _pki, _rotation, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._redact import REDACTED, redact
from ansible_collections.talosops.pki.plugins.module_utils._auth import Target, with_auth
from ansible_collections.talosops.pki.plugins.module_utils._backends.cluster_info import node_label
from ansible_collections.talosops.pki.plugins.module_utils._backends.rotation_lock import RunGuard
from ansible_collections.talosops.pki.plugins.module_utils._client import run as run_async
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, RotationStateError, TalosPKIError
from ansible_collections.talosops.pki.plugins.module_utils._node_service import (
    NodeService,
    Plan,
    check_machine_type,
    plan,
    refuse_lockout,
)

ARGUMENT_SPEC = _files.with_encryption(with_auth({
    "node": {"type": "str"},
    "nodes": {"type": "list", "elements": "str"},
    "node_names": {"type": "dict", "default": {}},
    "wave_size": {"type": "int", "default": 0},
    "concurrency": {"type": "int", "default": 50},
    "phase": {"type": "str", "required": True, "choices": list(_rotation.PHASES) + list(_rotation.ROLLBACK_PHASES)},
    "ca": {"type": "str", "default": "talos", "choices": ["talos", "kubernetes", "aggregator", "service_account"]},
    "rotation_dir": {"type": "path", "required": True},
    "machine_type": {"type": "str", "choices": ["controlplane", "worker"]},
    "apply_mode": {"type": "str", "default": "no_reboot", "choices": ["no_reboot", "auto"]},
    "wait_kubelet": {"type": "bool", "default": False},
    "kubelet_timeout": {"type": "float", "default": 300.0},
    "remove_stray_cas": {"type": "bool", "default": False},
    "rotation_lock": {"type": "path"},
    "claim": {"type": "bool", "default": False},
    "claim_settle": {"type": "float", "default": 2.0},
    "claim_deadline": {"type": "float", "default": 60.0},
}))
ARGUMENT_RULES = {"mutually_exclusive": [("node", "nodes")], "required_one_of": [("node", "nodes")]}


def run(params, check_mode=False, diff=False, sealing=None):
    _check_params(params)
    rotation = _rotation_store.load(params["rotation_dir"], kind=params["ca"], sealing=sealing)
    if rotation is None:
        raise RotationStateError("no %s CA rotation in %s: run talos_ca_generate for it first." % (params["ca"], params["rotation_dir"]))
    target = Target(params, sealing=sealing)
    waves = params.get("nodes") is not None
    nodes = params["nodes"] if waves else [params["node"]]
    if check_mode:  # a dry run changes nothing: no run to outlive
        outcome = run_async(_run_waves(params, nodes, target, rotation, check_mode, diff, record_waves=waves))
    else:
        # Applies only while the run that asked for them lives; the run's lock stays until this task is done.
        with RunGuard(params.get("rotation_lock")) as guard:
            outcome = run_async(_run_waves(params, nodes, target, rotation, check_mode, diff, guard=guard.check, record_waves=waves))
    if not waves:  # node: the one node's result at the top level, its error as it is (the module's first mode)
        if outcome.failures:
            raise outcome.failures[params["node"]]
        return outcome.results[params["node"]]
    return _wave_result(params, outcome, diff)


def _check_params(params):
    """Refusals that need no node: before anything is read or changed."""
    if (params.get("node") is None) == (params.get("nodes") is None):
        raise ConfigError("give exactly one of node (one node) and nodes (a list of node addresses, patched in waves).")
    if params.get("nodes") is not None:
        nodes = params["nodes"]
        if not nodes:
            raise ConfigError("nodes is empty: give the addresses of the nodes to patch (or node for one node).")
        duplicates = sorted(node for node, count in collections.Counter(nodes).items() if count > 1)
        if duplicates:
            raise ConfigError("nodes lists %s more than once: give each node once." % ", ".join(duplicates))
        if params.get("wave_size", 0) < 0:
            raise ConfigError("wave_size must be 0 (all nodes in one wave) or a positive number of nodes per wave.")
        if params.get("concurrency", 50) < 1:
            raise ConfigError("concurrency must be at least 1 (the number of nodes of a wave patched at once).")
    if params["ca"] == _pki.KIND_SERVICE_ACCOUNT and params["phase"] in _rotation.ROLLBACK_PHASES:
        raise ConfigError(_node_service.ROLLBACK_SERVICE_ACCOUNT % params["phase"])
    if params["wait_kubelet"] and params["ca"] != "kubernetes":
        raise ConfigError("wait_kubelet needs ca=kubernetes: only a Kubernetes CA change restarts the kubelet; a Talos API CA "
                          "change would leave the wait to time out.")
    if params["kubelet_timeout"] <= 0:
        raise ConfigError("kubelet_timeout must be a positive number of seconds (a kubelet restart usually takes well under a minute).")
    if params.get("claim"):  # callers that build params by hand may leave the claim options out
        if params["phase"] != "accept":
            raise ConfigError("claim is part of the accept phase: the first patch of a rotation claims the cluster. Use phase=accept.")
        if params["claim_settle"] <= 0 or params["claim_deadline"] < params["claim_settle"]:
            raise ConfigError("claim_settle must be a positive number of seconds, and claim_deadline at least as long.")


async def _patch_node(service, params, node, rotation, client_crt, diff, claim=False):
    """One node to the phase's state, with started/finished; its node_patched audit entry written once it changed."""
    started = time.time()
    result = await _patch(service, params, node, rotation, client_crt, diff, claim=claim)
    # Epoch seconds, so a summary can tell each phase's wall time across hosts (first start to last finish).
    result.update(started=round(started, 3), finished=round(time.time(), 3))
    if result["changed"] and not service.dry_run:
        # The entry is written before the task reports success; if it cannot be, the task fails saying what did change.
        try:
            rotation.record("node_patched", node=result["node"], phase=result["phase"], progress_before=result["progress_before"],
                            progress_after=result["progress_after"], issuing_ca_fingerprint=result["issuing_ca_fingerprint"],
                            accepted_ca_fingerprints=result["accepted_ca_fingerprints"], apply_mode=result["apply_mode"],
                            seconds=round(result["finished"] - result["started"], 3))
        except TalosPKIError as error:
            raise RotationStateError(
                "%s WAS patched (%s phase of the %s CA rotation: %s -> %s), but its audit entry could not be written: %s "
                "Running the playbook again resumes the rotation; this node counts as done." % (
                    result["node"], result["phase"], params["ca"], result["progress_before"], result["progress_after"], error)) from error
    return result


def waves_of(nodes, wave_size, claim=False):
    """The waves, in order: with claim the first node alone first; then `wave_size` nodes at a time (0: all at once)."""
    nodes = list(nodes)
    waves = []
    if claim and nodes:
        waves.append(nodes[:1])
        nodes = nodes[1:]
    size = wave_size or len(nodes) or 1
    waves.extend(nodes[start:start + size] for start in range(0, len(nodes), size))
    return waves


class _Outcome:
    """What the waves did: per-node results and failures (by address), and the waves started."""

    def __init__(self):
        self.results, self.failures, self.waves = {}, {}, []


async def _run_waves(params, nodes, target, rotation, check_mode, diff, guard=None, record_waves=True):
    """Every node through one client, one service and one run guard, wave after wave; a wave's nodes concurrently (at most
    `concurrency` in flight); the next wave only once every node of this one succeeded."""
    claim = bool(params.get("claim"))
    limit = asyncio.Semaphore(params.get("concurrency") or 1)
    outcome = _Outcome()

    async def one(service, node, claiming):
        async with limit:
            try:
                outcome.results[node] = await _patch_node(service, params, node, rotation, target.credentials.crt, diff,
                                                          claim=claiming)
            except TalosPKIError as error:
                outcome.failures[node] = error

    async with target.client() as client:
        service = NodeService(client, guard=guard, dry_run=check_mode, apply_mode=params["apply_mode"],
                              kubelet_timeout=params["kubelet_timeout"])
        for index, wave in enumerate(waves_of(nodes, params.get("wave_size") or 0, claim), start=1):
            started = time.time()
            gathered = await asyncio.gather(*(one(service, node, claim and index == 1) for node in wave), return_exceptions=True)
            finished = time.time()
            entry = {"nodes": list(wave), "started": round(started, 3), "finished": round(finished, 3),
                     "seconds": round(finished - started, 3),
                     "changed_nodes": [node for node in wave if outcome.results.get(node, {}).get("changed")]}
            outcome.waves.append(entry)
            failed = [node for node in wave if node not in outcome.results]
            # Like every audit line, for a real change only: a wave that moved a node, or where one failed (and may have).
            # A claim lost in the first wave has moved the rotation folder aside (withdrawn): nothing to record into.
            if record_waves and not check_mode and (entry["changed_nodes"] or failed) and os.path.isdir(rotation.path):
                rotation.record("wave_patched", ca=params["ca"], phase=params["phase"], machine_type=params["machine_type"],
                                wave=index, failed_nodes=failed, **entry)
            unexpected = [error for error in gathered if isinstance(error, BaseException)]
            if unexpected:  # not a refusal or an API error: a bug, reported as such by the caller
                raise unexpected[0]
            if outcome.failures:
                break
    return outcome


def _wave_result(params, outcome, diff):
    def label(node):
        return node_label(node, params)
    nodes = []
    for node in params["nodes"]:
        if node in outcome.results:
            entry = dict(outcome.results[node], name=(params.get("node_names") or {}).get(node) or node)
            entry["seconds"] = round(entry["finished"] - entry["started"], 3)
            nodes.append(entry)
    result = {
        "changed": any(entry["changed"] for entry in nodes),
        "phase": params["phase"],
        "nodes": nodes,
        "waves": outcome.waves,
        "changed_nodes": [entry["node"] for entry in nodes if entry["changed"]],
        "failed_nodes": [node for node in params["nodes"] if node in outcome.failures],
        "warnings": ["%s: %s" % (label(entry["node"]), text) for entry in nodes for text in entry.get("warnings") or []],
    }
    if diff:
        result["diff"] = [entry.pop("diff") for entry in nodes if "diff" in entry]
    if outcome.failures:
        not_started = [node for node in params["nodes"] if node not in outcome.results and node not in outcome.failures]
        result.update(failed=True, msg="%d of %d node(s) failed in the %s phase of the %s CA rotation, so no further wave was "
                      "started%s. %s. Fix what is named, then rerun: the rotation resumes from the nodes' state." % (
                          len(outcome.failures), len(params["nodes"]), params["phase"], params["ca"],
                          " (not patched: %s)" % ", ".join(label(node) for node in not_started) if not_started else "",
                          "; ".join("%s: %s" % (label(node), redact(str(outcome.failures[node])).rstrip("."))
                                    for node in params["nodes"] if node in outcome.failures)))
    return result


async def _patch(service, params, node, rotation, client_crt, diff, claim=False):
    """The steps of one node's patch, each done by the node service: read, type check, target state, lockout guard, apply
    (with the kubelet watch); the claim around it on the first control plane."""
    kind, phase, check_mode = params["ca"], params["phase"], service.dry_run
    state = await service.read(node)
    check_machine_type(node, state.machine_type, params["machine_type"])
    current = state.ca(kind)
    target = plan(state, kind, rotation, phase, remove_strays=params["remove_stray_cas"], preview=check_mode)
    result = {
        "node": node, "machine_type": state.machine_type, "phase": phase,
        "progress_before": target.progress_before, "progress_after": target.progress_after,
        "stray_ca_fingerprints": list(target.strays),
        "issuing_ca_fingerprint": target.after.issuing, "accepted_ca_fingerprints": list(target.after.accepted),
    }
    claim = _Claim(service, params, node, rotation) if claim and kind != _pki.KIND_SERVICE_ACCOUNT and not check_mode else None
    resumed = claim.check_before(current.fields, current.cas) if claim is not None else False
    if not target.changed:
        if claim is not None:
            result["claim"] = await claim.settle(resumed)
        return dict(result, changed=False, warnings=_claim_warnings(result))
    if kind == "talos" and not check_mode:  # a dry run locks nobody out
        refuse_lockout(node, client_crt, target.desired)
    applied, kubelet = await service.apply(state, target, wait_kubelet=params["wait_kubelet"])
    if kubelet is not None:
        result["kubelet"] = kubelet
    if claim is not None:
        # The settle time counts from the apply: the kubelet restart just waited for (Kubernetes CA) may have covered it.
        result["claim"] = await claim.settle(applied_at=state.applied_at)
    # What a node says may quote its config: tokens, cluster secrets and keys are masked before anyone sees it.
    result.update(changed=True, apply_mode=applied.get("mode"),
                  warnings=[redact(text) for text in applied.get("warnings") or []] + _claim_warnings(result))
    if check_mode:
        result["dry_run_summary"] = redact(applied.get("mode_details", ""))
    if diff:
        result["diff"] = _diff(node, kind, current, target)
    return result


def _diff(node, kind, current, target):
    """Before and after of the node's fields: fingerprints, subjects, expiry; keys as <redacted>."""
    if kind == _pki.KIND_SERVICE_ACCOUNT:
        header = "%s service-account keys (public-key fingerprints)" % node
        return {"before": {"signing_key": REDACTED + " " + target.before.issuing, "accepted_public_keys": list(target.before.accepted)},
                "after": {"signing_key": REDACTED + " " + target.after.issuing, "accepted_public_keys": list(target.after.accepted)},
                "before_header": header, "after_header": header}
    header = "%s %s CA fields" % (node, kind)
    return {"before": _describe_fields(*current.fields), "after": _describe_fields(*target.desired),
            "before_header": header, "after_header": header}


def _claim_warnings(result):
    return [result["claim"]["warning"]] if result.get("claim", {}).get("warning") else []


class _Claim:
    """The first accept patch of a rotation claims the cluster on its node (the first control plane) - see _claim.

    Before: a rival rotation of the same CA already on the node was there first - refuse, changing nothing. After the
    apply: wait, read the node again. Our CA gone (another run's apply replaced the config we read) or a rival created
    first next to ours: we lost - take our CA off, move the rotation folder aside, stop. Rivals we beat: wait until
    their runs have taken their CAs off (claim_deadline), then go on.
    """

    def __init__(self, service, params, node, rotation):
        self.service, self.params, self.node, self.rotation, self.kind = service, params, node, rotation, params["ca"]
        self.mine = _claim.marked(rotation.ca_cert()) or _claim.MarkedCA(rotation.ca_fingerprint, {"created": rotation.created})
        self.ignored = set()

    def _rivals(self, fields):
        crts = ((fields.issuing_crt,) if fields.issuing_crt else ()) + tuple(fields.accepted)
        cas = [ca for ca in map(_claim.marked, crts) if ca and ca.fingerprint not in self.ignored]
        return _claim.rivals(cas, self.mine, self.rotation.previous_ca_fingerprint)

    def check_before(self, fields, node_cas):
        """Before any change; True when the claim was made by an earlier run of this rotation (resumed)."""
        winners, losers = self._rivals(fields)
        if self.params["remove_stray_cas"]:
            # Asked to go on over an abandoned rotation (the preflight let it through): its CA is a stray to drop.
            self.ignored = {ca.fingerprint for ca in winners + losers}
            winners, losers = [], []
        if self.mine.fingerprint in node_cas.accepted + (node_cas.issuing,):
            return True
        if winners or losers:
            self._give_up(winners + losers, "claimed the cluster first: it is on %s already" % self.node)
        return False

    async def settle(self, resumed=False, applied_at=None):
        """`applied_at`: the loop's clock when this run's apply returned; the first re-read comes claim_settle after it."""
        node = self.node
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.params["claim_deadline"]
        waited = []  # losers seen next to our CA, in the order first seen
        while True:
            if not resumed:  # a claim made by an earlier run has long settled: read at once
                since = loop.time() - applied_at if applied_at is not None else 0.0
                await asyncio.sleep(max(0.0, self.params["claim_settle"] - since))
            resumed = False
            applied_at = None
            state = await self.service.read(node)
            fields, node_cas = state.ca(self.kind)
            winners, losers = self._rivals(fields)
            if node_cas.issuing == self.mine.fingerprint:
                return {"node": node, "rivals_waited_for": waited}  # swapped: the claim was won long ago
            if self.mine.fingerprint not in node_cas.accepted:
                if not winners + losers:
                    raise RotationStateError(
                        "the rotation's CA %s vanished from %s right after this run applied it, and no other rotation's CA is "
                        "there: something else changed the node's configuration. Check it (talosctl -n %s get machineconfig), "
                        "then rerun." % (self.mine.fingerprint[:16], node, node))
                self._give_up(winners + losers, "its run's configuration replaced the one this run applied to %s" % node)
            if winners:
                await self._withdraw(state)
                self._give_up(winners, "it was created first, and both are on %s" % node)
            waited.extend(ca.fingerprint for ca in losers if ca.fingerprint not in waited)
            if not losers:
                return {"node": node, "rivals_waited_for": waited}
            if loop.time() > deadline:
                stayed = ", ".join(_claim.describe(ca) for ca in losers)
                return {"node": node, "rivals_waited_for": waited, "warning": (
                    "%s still carries %s, which lost the race for the cluster to this rotation but whose run did not take it "
                    "off within %ss: it is kept as a stray CA." % (node, stayed, self.params["claim_deadline"]))}

    async def _withdraw(self, state):
        fields, node_cas = state.ca(self.kind)
        after = _claim.without(node_cas, self.mine.fingerprint)
        if after == node_cas:
            return
        desired = (fields.issuing_crt, fields.issuing_key,
                   tuple(crt for crt in fields.accepted if _pki.fingerprint(crt) != self.mine.fingerprint))
        withdraw = Plan(self.kind, "withdraw", node_cas, after, _rotation.ACCEPTED, _rotation.PENDING, (), desired)
        await self.service.apply(state, withdraw, wait_kubelet=self.params["wait_kubelet"], step="taking the rotation's CA off")
        self.rotation.record("node_patched", node=self.node, phase="withdraw", progress_before=_rotation.ACCEPTED,
                             progress_after=_rotation.PENDING, issuing_ca_fingerprint=after.issuing,
                             accepted_ca_fingerprints=list(after.accepted), apply_mode=self.params["apply_mode"], seconds=0)

    def _give_up(self, rivals, why):
        self.rotation.record("rotation_withdrawn", ca_fingerprint=self.mine.fingerprint, rotation_id=self.mine.marker.get("id"),
                             winner_ca_fingerprints=[ca.fingerprint for ca in rivals])
        moved = _rotation_store.archive(self.rotation.path, _rotation_store.WITHDRAWN_SUFFIX)
        raise RotationStateError(
            "this run lost the race for the cluster to %s: %s. Only one rotation per cluster at a time: this run's CA (%s) is on "
            "no node, and its rotation folder was moved to %s; nothing else was changed. Let that rotation finish from its "
            "own rotation directory (on %s), then rerun to rotate from its CA if you still want to." % (
                "; ".join(_claim.describe(ca) for ca in rivals) or "another rotation", why, self.mine.fingerprint[:16], moved,
                ", ".join(sorted({ca.marker.get("host") or "?" for ca in rivals})) or "its controller"))


def _describe_fields(issuing_crt, issuing_key, accepted):
    def cert(crt):
        facts = _pki.describe_certificate(crt)
        return {key: facts[key] for key in ("fingerprint_sha256", "subject", "not_after")}
    described = {"issuing_ca": cert(issuing_crt) if issuing_crt else None, "accepted_cas": [cert(crt) for crt in accepted]}
    if described["issuing_ca"] is not None:
        described["issuing_ca"]["key"] = REDACTED if issuing_key else None
    return described
