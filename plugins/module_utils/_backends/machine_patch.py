# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""talos_machine_patch: bring one node's CA fields to the state of one rotation phase (or rollback phase)."""

from __future__ import annotations

import asyncio
import time

from ansible_collections.talosops.pki.plugins.module_utils import _claim, _files, _pki, _rotation, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._redact import REDACTED, redact
from ansible_collections.talosops.pki.plugins.module_utils._auth import Target, with_auth
from ansible_collections.talosops.pki.plugins.module_utils._backends.rotation_lock import RunGuard
from ansible_collections.talosops.pki.plugins.module_utils._client import run as run_async
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, RotationStateError, TalosPKIError
from ansible_collections.talosops.pki.plugins.module_utils._kubelet import KubeletWatch
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import (
    LOCATION_LEGACY_SERVICE_ACCOUNT,
    LOCATION_SERVICE_ACCOUNT_CONFIG,
    MachineConfig,
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


def run(params, check_mode=False, diff=False):
    _check_params(params)
    rotation = _rotation_store.load(params["rotation_dir"], kind=params["ca"])
    if rotation is None:
        raise RotationStateError("no %s CA rotation in %s: run talos_ca_generate for it first." % (params["ca"], params["rotation_dir"]))
    target = Target(params)
    if params.get("nodes") is None:
        return _run_single(params, target, rotation, check_mode, diff)
    if check_mode:  # a dry run changes nothing: no run to outlive
        return run_async(_run_waves(params, target, rotation, check_mode, diff))
    # Applies only while the run that asked for them lives; the run's lock stays until this task is done.
    with RunGuard(params.get("rotation_lock")) as guard:
        return run_async(_run_waves(params, target, rotation, check_mode, diff, guard=guard.check))


def _check_params(params):
    """Refusals that need no node: before anything is read or changed."""
    if (params.get("node") is None) == (params.get("nodes") is None):
        raise ConfigError("give exactly one of node (one node) and nodes (a list of node addresses, patched in waves).")
    if params.get("nodes") is not None:
        nodes = params["nodes"]
        if not nodes:
            raise ConfigError("nodes is empty: give the addresses of the nodes to patch (or node for one node).")
        duplicates = sorted({node for node in nodes if nodes.count(node) > 1})
        if duplicates:
            raise ConfigError("nodes lists %s more than once: give each node once." % ", ".join(duplicates))
        if params.get("wave_size", 0) < 0:
            raise ConfigError("wave_size must be 0 (all nodes in one wave) or a positive number of nodes per wave.")
        if params.get("concurrency", 50) < 1:
            raise ConfigError("concurrency must be at least 1 (the number of nodes of a wave patched at once).")
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


def _run_single(params, target, rotation, check_mode, diff):
    """node: one node, its result at the top level (the module's first mode, unchanged)."""
    node = params["node"]

    async def one(guard=None):
        async with target.client() as client:
            return await _patch_node(params, node, target, client, rotation, check_mode, diff, guard=guard,
                                     claim=bool(params.get("claim")))
    if check_mode:
        return run_async(one())
    with RunGuard(params.get("rotation_lock")) as guard:
        return run_async(one(guard.check))


async def _patch_node(params, node, target, client, rotation, check_mode, diff, guard=None, claim=False):
    """One node to the phase's state; started/finished added; its node_patched audit entry written when it changed."""
    started = time.time()
    patch = _patch_service_account if params["ca"] == _pki.KIND_SERVICE_ACCOUNT else _patch
    result = await patch(params, node, target, client, rotation, check_mode, diff, guard=guard, claim=claim)
    # Epoch seconds, so a summary can tell each phase's wall time across hosts (first start to last finish).
    result.update(started=round(started, 3), finished=round(time.time(), 3))
    if result["changed"] and not check_mode:
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


async def _run_waves(params, target, rotation, check_mode, diff, guard=None):
    """nodes: every node through one client and one run guard, wave after wave; a wave's nodes concurrently (at most
    `concurrency` in flight); the next wave only once every node of this one succeeded."""
    label = labeller(params.get("node_names") or {})
    claim = bool(params.get("claim"))
    limit = asyncio.Semaphore(params["concurrency"])
    outcomes, failures, waves = {}, {}, []

    async def one(node, claiming):
        async with limit:
            started = time.time()
            try:
                result = await _patch_node(params, node, target, client, rotation, check_mode, diff, guard=guard, claim=claiming)
            except TalosPKIError as error:
                failures[node] = redact(str(error))
                return
            result.update(name=(params.get("node_names") or {}).get(node) or node,
                          seconds=round(result["finished"] - started, 3))
            outcomes[node] = result

    async with target.client() as client:
        for index, wave in enumerate(waves_of(params["nodes"], params["wave_size"], claim), start=1):
            wave_started = time.time()
            claiming = claim and index == 1
            gathered = await asyncio.gather(*(one(node, claiming) for node in wave), return_exceptions=True)
            wave_finished = time.time()
            unexpected = [error for error in gathered if isinstance(error, BaseException)]
            entry = {"nodes": list(wave), "started": round(wave_started, 3), "finished": round(wave_finished, 3),
                     "seconds": round(wave_finished - wave_started, 3),
                     "changed_nodes": [node for node in wave if outcomes.get(node, {}).get("changed")]}
            waves.append(entry)
            if not check_mode:
                rotation.record("wave_patched", ca=params["ca"], phase=params["phase"], machine_type=params["machine_type"],
                                wave=index, nodes=entry["nodes"], changed_nodes=entry["changed_nodes"],
                                failed_nodes=[node for node in wave if node in failures or node not in outcomes],
                                started=entry["started"], finished=entry["finished"], seconds=entry["seconds"])
            if unexpected:
                raise unexpected[0]
            if failures:
                break
    return _wave_result(params, outcomes, failures, waves, label, diff)


def _wave_result(params, outcomes, failures, waves, label, diff):
    nodes = [outcomes[node] for node in params["nodes"] if node in outcomes]
    result = {
        "changed": any(entry["changed"] for entry in nodes),
        "phase": params["phase"],
        "nodes": nodes,
        "waves": waves,
        "changed_nodes": [entry["node"] for entry in nodes if entry["changed"]],
        "failed_nodes": [node for node in params["nodes"] if node in failures],
        "warnings": ["%s: %s" % (label(entry["node"]), text) for entry in nodes for text in entry.get("warnings") or []],
    }
    if diff:
        result["diff"] = [entry.pop("diff") for entry in nodes if "diff" in entry]
    if failures:
        not_started = [node for node in params["nodes"] if node not in outcomes and node not in failures]
        result.update(failed=True, msg="%d of %d node(s) of the %s phase of the %s CA rotation failed, so no further wave was "
                      "started%s. %s. Fix what is named, then rerun: the rotation resumes from the nodes' state." % (
                          len(failures), len(params["nodes"]), params["phase"], params["ca"],
                          " (not patched: %s)" % ", ".join(label(node) for node in not_started) if not_started else "",
                          "; ".join("%s: %s" % (label(node), failures[node]) for node in params["nodes"] if node in failures)))
    return result


def labeller(names):
    """node address -> "inventory name (address)" when the inventory name is known and differs, else the address."""
    def label(node):
        name = names.get(node)
        return "%s (%s)" % (name, node) if name and name != node else node
    return label


async def _patch(params, node, target, client, rotation, check_mode, diff, guard=None, claim=False):
    kind, phase = params["ca"], params["phase"]
    new_ca, old_crt = rotation.ca(), rotation.previous_ca_cert()
    config = MachineConfig.parse(await client.machine_config(node=node), source="machine config of %s" % node)
    _check_machine_type(node, config.machine_type, params["machine_type"])
    current = config.get_ca(kind)
    before = _node_cas(current)
    if phase in _rotation.ROLLBACK_PHASES:
        issuing, accepted = _rotation.rollback_state(phase, before, rotation.previous_ca_fingerprint, rotation.ca_fingerprint,
                                                     node=node, preview=check_mode)
    else:
        issuing, accepted = _rotation.desired_state(phase, before, rotation.previous_ca_fingerprint, rotation.ca_fingerprint,
                                                    node=node, preview=check_mode, remove_strays=params["remove_stray_cas"])
    result = {
        "node": node,
        "machine_type": config.machine_type,
        "phase": phase,
        "progress_before": _rotation.progress(before, rotation.previous_ca_fingerprint, rotation.ca_fingerprint),
        "stray_ca_fingerprints": list(_rotation.strays(before, rotation.previous_ca_fingerprint, rotation.ca_fingerprint)),
    }
    after = _rotation.NodeCAs(issuing, accepted)
    result["progress_after"] = _rotation.progress(after, rotation.previous_ca_fingerprint, rotation.ca_fingerprint)
    result["issuing_ca_fingerprint"], result["accepted_ca_fingerprints"] = issuing, list(accepted)
    claim = _Claim(params, node, rotation, new_ca.crt, guard) if claim and not check_mode else None
    resumed = claim.check_before(current, before) if claim is not None else False
    if after == before:
        if claim is not None:
            result["claim"] = await claim.settle(client, node, resumed)
        return dict(result, changed=False, warnings=_claim_warnings(result))

    certificates = _certificates_by_fingerprint(current, old_crt, new_ca.crt)
    control_plane = config.machine_type != "worker"
    if issuing == rotation.ca_fingerprint and before.issuing != issuing:
        issuing_key = new_ca.key if control_plane else None  # workers never hold a CA key
    elif issuing == rotation.previous_ca_fingerprint and before.issuing != issuing:
        # A rollback's swap back: the old CA issues again, with the key kept in the rotation directory.
        issuing_key = rotation.previous_ca().key if control_plane else None
    else:
        issuing_key = current.issuing_key
    # A node without an issuing CA field (v1.14+ worker, Kubernetes CA) keeps that shape: issuing stays None.
    desired = (certificates[issuing] if issuing else None, issuing_key, tuple(certificates[fp] for fp in accepted))
    if kind == "talos" and not check_mode:  # a dry run locks nobody out
        _refuse_lockout(node, target.credentials.crt, desired)
    config.set_ca(kind, *desired)
    applied, kubelet = await _apply(client, node, config, params, before, after, "the %s phase" % phase, check_mode, guard)
    if kubelet is not None:
        result["kubelet"] = kubelet
    if claim is not None:
        result["claim"] = await claim.settle(client, node)
    # What a node says may quote its config: tokens, cluster secrets and keys are masked before anyone sees it.
    result.update(changed=True, apply_mode=applied.get("mode"),
                  warnings=[redact(text) for text in applied.get("warnings") or []] + _claim_warnings(result))
    if check_mode:
        result["dry_run_summary"] = redact(applied.get("mode_details", ""))
    if diff:
        result["diff"] = {"before": _describe_fields(current.issuing_crt, current.issuing_key, current.accepted),
                          "after": _describe_fields(*desired),
                          "before_header": "%s %s CA fields" % (node, kind), "after_header": "%s %s CA fields" % (node, kind)}
    return result


def _claim_warnings(result):
    return [result["claim"]["warning"]] if result.get("claim", {}).get("warning") else []


async def _apply(client, node, config, params, before, after, step, check_mode, guard=None):
    """Apply `config` (CA fields `before` -> `after`); with wait_kubelet, wait for the restart a new CA bundle causes.
    Returns (the apply reply, the kubelet's restart facts or None)."""
    # A dry run restarts nothing; a change that leaves the node's CA bundle as it was restarts nothing either.
    if params["wait_kubelet"] and not check_mode and _bundle(before) != _bundle(after):
        async with KubeletWatch(client, node, params["kubelet_timeout"], "%s of the Kubernetes CA rotation" % step) as kubelet:
            await kubelet.wait_ready()
            applied = await client.apply_configuration(config.to_bytes(), node=node, mode=params["apply_mode"], guard=guard)
            return applied, await kubelet.wait_restart()
    return await client.apply_configuration(config.to_bytes(), node=node, mode=params["apply_mode"], dry_run=check_mode,
                                            guard=guard), None


class _Claim:
    """The first accept patch of a rotation claims the cluster on its node (the first control plane) - see _claim.

    Before: a rival rotation of the same CA already on the node was there first - refuse, changing nothing. After the
    apply: wait, read the node again. Our CA gone (another run's apply replaced the config we read) or a rival created
    first next to ours: we lost - take our CA off, move the rotation folder aside, stop. Rivals we beat: wait until
    their runs have taken their CAs off (claim_deadline), then go on.
    """

    def __init__(self, params, node, rotation, crt, guard=None):
        self.params, self.node, self.rotation, self.kind, self.guard = params, node, rotation, params["ca"], guard
        self.mine = _claim.marked(crt) or _claim.MarkedCA(rotation.ca_fingerprint, {"created": rotation.created})
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

    async def settle(self, client, node, resumed=False):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.params["claim_deadline"]
        waited = []  # losers seen next to our CA, in the order first seen
        while True:
            if not resumed:  # a claim made by an earlier run has long settled: read at once
                await asyncio.sleep(self.params["claim_settle"])
            resumed = False
            config = MachineConfig.parse(await client.machine_config(node=node), source="machine config of %s" % node)
            fields = config.get_ca(self.kind)
            node_cas = _node_cas(fields)
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
                await self._withdraw(client, node, config, node_cas)
                self._give_up(winners, "it was created first, and both are on %s" % node)
            waited.extend(ca.fingerprint for ca in losers if ca.fingerprint not in waited)
            if not losers:
                return {"node": node, "rivals_waited_for": waited}
            if loop.time() > deadline:
                stayed = ", ".join(_claim.describe(ca) for ca in losers)
                return {"node": node, "rivals_waited_for": waited, "warning": (
                    "%s still carries %s, which lost the race for the cluster to this rotation but whose run did not take it "
                    "off within %ss: it is kept as a stray CA." % (node, stayed, self.params["claim_deadline"]))}

    async def _withdraw(self, client, node, config, node_cas):
        after = _claim.without(node_cas, self.mine.fingerprint)
        if after == node_cas:
            return
        fields = config.get_ca(self.kind)
        config.set_ca(self.kind, fields.issuing_crt, fields.issuing_key,
                      tuple(crt for crt in fields.accepted if _pki.fingerprint(crt) != self.mine.fingerprint))
        await _apply(client, node, config, self.params, node_cas, after, "taking the rotation's CA off", False, self.guard)
        self.rotation.record("node_patched", node=node, phase="withdraw", progress_before=_rotation.ACCEPTED,
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


async def _patch_service_account(params, node, target, client, rotation, check_mode, diff, guard=None, claim=False):  # pylint: disable=unused-argument
    """The service-account keys of one control plane (KubeServiceAccountConfig issuer.privateKey / accepted.publicKeys) to
    the state of one phase; progress read from the live fields, as public-key fingerprints."""
    phase = params["phase"]
    if phase in _rotation.ROLLBACK_PHASES:
        raise ConfigError("phase %s does not apply to ca=service_account: the replaced signing key is not kept (only its public "
                          "key), so control planes cannot sign with it again. Finish the rotation instead; nothing was "
                          "changed." % phase)
    old, new = rotation.previous_ca_fingerprint, rotation.ca_fingerprint
    config = MachineConfig.parse(await client.machine_config(node=node), source="machine config of %s" % node)
    _check_machine_type(node, config.machine_type, params["machine_type"])
    current = service_account_fields(node, config)
    before = _rotation.NodeCAs(_pki.public_key_fingerprint(current.signing_key, "signing key of %s" % node),
                               tuple(_pki.public_key_fingerprint(pem, "accepted public key of %s" % node) for pem in current.accepted))
    issuing, accepted = _rotation.desired_state(phase, before, old, new, node=node, preview=check_mode,
                                                remove_strays=params["remove_stray_cas"])
    after = _rotation.NodeCAs(issuing, accepted)
    result = {
        "node": node, "machine_type": config.machine_type, "phase": phase,
        "progress_before": _rotation.progress(before, old, new), "progress_after": _rotation.progress(after, old, new),
        "stray_ca_fingerprints": list(_rotation.strays(before, old, new)),
        "issuing_ca_fingerprint": issuing, "accepted_ca_fingerprints": list(accepted),
    }
    if after == before:
        return dict(result, changed=False)
    publics = dict(zip(before.accepted, current.accepted))
    publics.update({old: rotation.previous_public_key(), new: rotation.public_key()})
    signing_key = rotation.signing_key() if issuing == new else current.signing_key
    config.set_service_account(signing_key, [publics[fp] for fp in accepted])
    applied = await client.apply_configuration(config.to_bytes(), node=node, mode=params["apply_mode"], dry_run=check_mode,
                                               guard=guard)
    result.update(changed=True, apply_mode=applied.get("mode"), warnings=list(applied.get("warnings") or []))
    if check_mode:
        result["dry_run_summary"] = redact(applied.get("mode_details", ""))
    if diff:
        header = "%s service-account keys (public-key fingerprints)" % node
        result["diff"] = {"before": {"signing_key": REDACTED + " " + before.issuing, "accepted_public_keys": list(before.accepted)},
                          "after": {"signing_key": REDACTED + " " + issuing, "accepted_public_keys": list(accepted)},
                          "before_header": header, "after_header": header}
    return result


def service_account_fields(node, config):
    """The node's service-account keys, or a refusal saying why this node cannot take part in the graceful rotation."""
    if not config.is_control_plane:
        raise RotationStateError("%s is a worker: service-account keys live on control planes only (Talos refuses a "
                                 "KubeServiceAccountConfig on a worker); patch the control planes." % node)
    if config.service_account_location == LOCATION_LEGACY_SERVICE_ACCOUNT:
        raise RotationStateError(
            "%s keeps its service-account key in %s (Talos v1.13 or older), which has no accepted-keys list: the key cannot be "
            "rotated without invalidating every token at once. Upgrade the node to Talos v1.14+ (its config then carries a %s "
            "document) and run again; nothing was changed." % (node, LOCATION_LEGACY_SERVICE_ACCOUNT, LOCATION_SERVICE_ACCOUNT_CONFIG))
    fields = config.get_service_account()
    if fields is None or not fields.signing_key:
        raise RotationStateError("%s has no service-account signing key in its machine config (%s issuer.privateKey): restore "
                                 "it before rotating; nothing was changed." % (node, LOCATION_SERVICE_ACCOUNT_CONFIG))
    return fields


def _bundle(node_cas):
    """The node's CA bundle as the kubelet gets it: accepted CAs then the issuing CA, in order."""
    return node_cas.accepted + ((node_cas.issuing,) if node_cas.issuing else ())


def _node_cas(fields):
    return _rotation.NodeCAs(_pki.fingerprint(fields.issuing_crt) if fields.issuing_crt else None,
                             tuple(_pki.fingerprint(crt) for crt in fields.accepted))


def _certificates_by_fingerprint(current, old_crt, new_crt):
    known = [crt for crt in (current.issuing_crt, old_crt, new_crt) if crt] + list(current.accepted)
    return {_pki.fingerprint(crt): crt for crt in known}


def _check_machine_type(node, actual, expected):
    if expected is None:
        return
    actual_group = "worker" if actual == "worker" else "controlplane"  # init nodes are control planes
    if actual_group != expected:
        raise RotationStateError("%s is a %s node (machine.type %s) but the inventory lists it as %s: fix the inventory group "
                                 "before rotating, control planes must be patched before workers." % (node, actual_group, actual, expected))


def _refuse_lockout(node, client_crt, desired):
    """The node must still trust the client certificate this task authenticates with."""
    issuing_crt, accepted = desired[0], desired[2]
    pool = [crt for crt in (issuing_crt,) + accepted if crt]
    if not any(_pki.is_issued_by(client_crt, ca) for ca in pool):
        raise RotationStateError(
            "refusing to patch %s: afterwards it would no longer trust the client certificate this task uses, and every "
            "later call would be refused. Use a talosconfig issued by a CA the node keeps (the rotation's new admin "
            "talosconfig after the accept phase)." % node)


def _describe_fields(issuing_crt, issuing_key, accepted):
    def cert(crt):
        facts = _pki.describe_certificate(crt)
        return {key: facts[key] for key in ("fingerprint_sha256", "subject", "not_after")}
    described = {"issuing_ca": cert(issuing_crt) if issuing_crt else None, "accepted_cas": [cert(crt) for crt in accepted]}
    if described["issuing_ca"] is not None:
        described["issuing_ca"]["key"] = REDACTED if issuing_key else None
    return described
