# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""talos_rotation_summary: what a rotation run did, per node, the state it left the cluster in and what to do next.

Computed from the rotation's audit log (rotation_store: each node_patched entry says a node moved, each wave_patched entry
how long a wave took), restricted to the entries this run wrote (`since`, the time the run took its lock). Check mode writes
no entry: there the preflight's reading of the nodes is projected through the run's phases (rotation.desired_state with
preview), which is where a real run would take them. Also the rollback's summary (`rollback`), and the service-account
signing key's rotation (kind service_account: public keys in place of CA certificates, control planes only). Reads files
only; changes nothing.
"""

from __future__ import annotations

import os

from ansible_collections.talosops.pki.plugins.module_utils import _pki, _rotation, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, RotationStateError, TalosPKIError
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig
from ansible_collections.talosops.pki.plugins.module_utils._node_service import ROLLBACK_SERVICE_ACCOUNT
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import TalosConfig

ARGUMENT_SPEC = {
    "kind": {"type": "str", "required": True, "choices": list(_rotation_store.ROTATION_KINDS)},
    "rotation_dir": {"type": "path", "required": True},
    "throwaway": {"type": "bool", "default": False},
    "controlplanes": {"type": "list", "elements": "str", "required": True},
    "workers": {"type": "list", "elements": "str", "default": []},
    "node_names": {"type": "dict", "default": {}},
    "phases": {"type": "list", "elements": "str", "required": True},
    # When this run started (talos_rotation_lock's holder.since): older audit entries belong to earlier runs.
    "since": {"type": "str"},
    "rollback": {"type": "bool", "default": False},
    "rolled_back_to": {"type": "str"},
    "preflight_nodes": {"type": "dict", "default": {}},
    "failed": {"type": "bool", "default": False},
    "state": {"type": "str"},
    "next_step": {"type": "str"},
    "talosconfig": {"type": "dict"},
    "kubeconfig": {"type": "dict"},
    "notes": {"type": "list", "elements": "str", "default": []},
    # kind service_account: talos_service_account_token's legacy_secrets (state=legacy_report), and whether the token of
    # the old key was proven refused by every kube-apiserver (its state=refused). The report names the Secrets and the
    # fingerprint of the key that signed each token; the tokens themselves are dropped before it is returned: not secret.
    "legacy_secrets": {"type": "list", "elements": "dict", "default": [], "no_log": False},
    "old_token_refused": {"type": "bool", "default": False},
    # Printed by the action plugin as plain lines, a readable table (a module process cannot print).
    "show": {"type": "bool", "default": False},
}

TITLES = {"talos": "Talos API CA", "kubernetes": "Kubernetes API CA", "aggregator": "Aggregator (front-proxy) CA",
          _rotation_store.KIND_SERVICE_ACCOUNT: "Service-account signing key"}
TIERS = ("controlplane", "worker")
# What a cluster whose every node reached a progress has, and what to run next.
REACHED = {
    _rotation.PENDING: ("not started: no node accepts the new CA yet",
                        "run the accept phase (rotate_ca_phases: [accept], or all three phases)"),
    _rotation.ACCEPTED: ("every node accepts the new CA; the old CA still issues",
                         "run the swap phase (rotate_ca_phases: [swap] or [swap, remove])"),
    _rotation.SWAPPED: ("every node issues with the new CA and still accepts the old one",
                        "run the remove phase (rotate_ca_phases: [remove])"),
    _rotation.REMOVED: ("rotation complete: every node trusts the new CA only", None),
}
# The service-account key's progress: control planes only, a signing key and accepted public keys rather than CAs.
REACHED_SERVICE_ACCOUNT = {
    _rotation.PENDING: ("not started: no control plane accepts the new public key yet", REACHED[_rotation.PENDING][1]),
    _rotation.ACCEPTED: ("every control plane accepts the new public key; the old key still signs",
                         REACHED[_rotation.ACCEPTED][1]),
    _rotation.SWAPPED: ("every control plane signs with the new key and still accepts tokens of the old one",
                        "once projected tokens are refreshed (rotate_ca_service_account_remove_wait counts from the swap), "
                        "run the remove phase (rotate_ca_phases: [remove])"),
    _rotation.REMOVED: ("rotation complete: every control plane accepts tokens of the new key only", None),
}
REACHED_BY_KIND = {_rotation_store.KIND_SERVICE_ACCOUNT: REACHED_SERVICE_ACCOUNT}
# The same for a rollback, which takes nodes back towards pending: the state of the node furthest from it.
ROLLED_BACK = {
    _rotation.PENDING: "rolled back: every node is on the old CA alone, the new CA is accepted nowhere",
    _rotation.ACCEPTED: "the old CA issues again on every node; the new CA is still accepted",
    _rotation.SWAPPED: "nodes still issue with the new CA",
}
# What a node at each progress has, told after a run that stopped with nodes part way (which CA each node has).
HOLDS = {
    _rotation.PENDING: "the old CA alone",
    _rotation.ACCEPTED: "the old CA issues, the new one is also accepted",
    _rotation.SWAPPED: "the new CA issues, the old one is still accepted",
    _rotation.REMOVED: "the new CA alone",
}
HOLDS_SERVICE_ACCOUNT = {
    _rotation.PENDING: "the old key alone",
    _rotation.ACCEPTED: "the old key signs, the new public key is also accepted",
    _rotation.SWAPPED: "the new key signs, the old public key is still accepted",
    _rotation.REMOVED: "the new key alone",
}
ROLLBACK_DONE_NEXT = ("to rotate this CA later, run the role without rotate_ca_rollback: it starts a new rotation with a new "
                      "CA")
NEXT_STEPS_DONE = ("hand out talosconfigs to the other Talos API users from the new admin one (talosctl config new), restart "
                   "pods that use Talos API access, and protect or archive {dir} (it holds the new CA's private key)")
NEXT_STEPS_DONE_KUBERNETES = ("hand the new kubeconfig to the Kubernetes API's users (their old client certificates are "
                              "refused), and protect or archive {dir} (it holds the new CA's private key)")
NEXT_STEPS_DONE_AGGREGATOR = "protect or archive {dir} (it holds the new CA's private key)"
NEXT_STEPS_DONE_SERVICE_ACCOUNT = ("recreate the legacy token Secrets listed below, if any (the old key signed them: they are "
                                   "never refreshed and are now refused), and protect or archive {dir} (it holds the new "
                                   "signing key)")
NEXT_STEPS_DONE_BY_KIND = {"talos": NEXT_STEPS_DONE, "kubernetes": NEXT_STEPS_DONE_KUBERNETES, "aggregator": NEXT_STEPS_DONE_AGGREGATOR,
                           _rotation_store.KIND_SERVICE_ACCOUNT: NEXT_STEPS_DONE_SERVICE_ACCOUNT}
NOTHING_TO_DO = ("nothing to do: the rotation in {dir} is already complete on every node. To rotate again, set "
                 "rotate_ca_start_new=true (a new CA, starting from the accept phase)")
FAILED_NEXT = ("fix the cause reported above, then rerun the same command: it resumes from each node's live state, with the "
               "same new CA")
FAILED_ROLLBACK_NEXT = ("fix the cause reported above, then rerun the same command: the rollback resumes from each node's "
                        "live state")


def run(params, check_mode=False, diff=False, sealing=None):  # pylint: disable=unused-argument
    phases = _check_phases(params)
    rotation = _load(params, sealing)
    old, new = rotation.previous_ca_fingerprint, rotation.ca_fingerprint
    if check_mode:
        # Nothing was written: where the run's phases would take each node, from the preflight's reading.
        moves, waves, entries = {}, [], []
    else:
        since = _rotation_store.parse_time(params["since"]) if params["since"] else None
        entries = [entry for entry in rotation.entries(since) if entry.get("kind", params["kind"]) == params["kind"]]
        moves, waves = _moves(entries), _waves(entries, params)
    nodes = _node_rows(params, phases, old, new, moves, waves, check_mode)
    summary = {
        "kind": params["kind"],
        "rollback": params["rollback"],
        "check_mode": check_mode,
        "failed": params["failed"],
        "nodes": nodes,
        "old_ca": _describe(rotation, previous=True),
        "new_ca": _describe(rotation),
        "phases_run": phases,
        "waves": waves,
        "phase_seconds": _phase_seconds(waves, phases),
        # A check-mode throwaway folder is deleted right after: never shown.
        "rotation_dir": None if params["throwaway"] else rotation.path,
        "audit_log": None if params["throwaway"] else rotation.facts()["audit_log_path"],
        "rolled_back_to": params["rolled_back_to"] if params["rollback"] else None,
        "credentials": _credentials(params, check_mode, sealing),
        # Secrets bundles (secrets.yaml) this run wrote the new CA or key into.
        "secrets_files": list(dict.fromkeys(entry["path"] for entry in entries
                                            if entry.get("event") == "secrets_file_updated" and entry.get("path"))),
    }
    if params["kind"] == _rotation_store.KIND_SERVICE_ACCOUNT:
        summary["tokens"] = _tokens(params, check_mode)
    summary.update((_rollback_state if params["rollback"] else _state)(params, nodes, check_mode, summary["rotation_dir"]))
    return {"changed": False, "summary": summary, "lines": _lines(summary, params["notes"])}


def _check_phases(params):
    if params["rollback"] and params["kind"] == _rotation_store.KIND_SERVICE_ACCOUNT:
        raise ConfigError(ROLLBACK_SERVICE_ACCOUNT % ", ".join(params["phases"] or _rotation.ROLLBACK_PHASES))
    known = _rotation.ROLLBACK_PHASES if params["rollback"] else _rotation.PHASES
    unknown = [phase for phase in params["phases"] if phase not in known]
    if unknown or not params["phases"]:
        raise ConfigError("phases %s: a %s has the phases %s; give those this run did, in that order." % (
            ", ".join(unknown) or "is empty", "rollback" if params["rollback"] else "rotation", ", ".join(known)))
    return sorted(params["phases"], key=known.index)


def _load(params, sealing):
    """The rotation: where a rollback moved it (rolled_back_to, once it exists), else rotation_dir."""
    path = params["rotation_dir"]
    if params["rollback"] and params["rolled_back_to"] and os.path.isdir(os.path.expanduser(params["rolled_back_to"])):
        path = os.path.expanduser(params["rolled_back_to"])
    rotation = _rotation_store.load(path, kind=params["kind"], sealing=sealing)
    if rotation is None:
        raise TalosPKIError("no %s CA rotation in %s: the summary needs the folder the rotation ran with." % (params["kind"], path))
    return rotation


def _describe(rotation, previous=False):
    """The fingerprint and expiry of the rotation's new (or previous) CA; a service-account key: its public key's
    fingerprint and algorithm (a key does not expire)."""
    if rotation.kind == _rotation_store.KIND_SERVICE_ACCOUNT:
        public = rotation.previous_public_key() if previous else rotation.public_key()
        return {"fingerprint": rotation.previous_ca_fingerprint if previous else rotation.ca_fingerprint, "not_after": None,
                "algorithm": _pki.key_type(public, "service-account public key in %s" % rotation.path)}
    facts = _pki.describe_certificate(rotation.previous_ca_cert() if previous else rotation.ca_cert())
    return {"fingerprint": facts["fingerprint_sha256"], "not_after": facts["not_after"]}


def _tokens(params, check_mode):
    """What the service-account flow proved about tokens: the old key's token, and the legacy token Secrets it signed."""
    if params["old_token_refused"]:
        old_token = "refused by every kube-apiserver"
    elif check_mode:
        old_token = "not checked in check mode"
    else:
        old_token = "accepted until the remove phase"
    legacy = ["%s/%s" % (item.get("namespace"), item.get("name")) for item in params["legacy_secrets"] if item.get("signed_by_listed_key")]
    return {"old_token": old_token, "legacy_secrets_of_old_key": legacy}


def _moves(entries):
    """address -> the node_patched entries of this run, oldest first (each one a change the node went through)."""
    moves = {}
    for entry in entries:
        if entry.get("event") == "node_patched" and entry.get("node"):
            moves.setdefault(entry["node"], []).append(entry)
    return moves


def _waves(entries, params):
    """The run's waves, in the order they ran: from wave_patched entries, or, for a run that wrote none (a version that
    patched one node per task), one wave per phase and tier made of the node_patched entries (changed nodes only)."""
    waves = [{"phase": entry.get("phase"), "machine_type": entry.get("machine_type"), "wave": entry.get("wave", 1),
              "nodes": list(entry.get("nodes") or []), "changed_nodes": list(entry.get("changed_nodes") or []),
              "failed_nodes": list(entry.get("failed_nodes") or []),
              "started": _rotation_store.parse_time(entry["started"]), "finished": _rotation_store.parse_time(entry["finished"]),
              "seconds": entry.get("seconds")}
             for entry in entries if entry.get("event") == "wave_patched" and "started" in entry and "finished" in entry]
    if waves:
        for wave in waves:
            if wave["seconds"] is None:
                wave["seconds"] = round(wave["finished"] - wave["started"], 3)
        return waves
    tiers = dict([(address, "controlplane") for address in params["controlplanes"]] + [(address, "worker") for address in params["workers"]])
    grouped = {}
    for entry in entries:
        if entry.get("event") != "node_patched" or not entry.get("node"):
            continue
        finished = _rotation_store.entry_time(entry)
        started = finished - float(entry.get("seconds") or 0)
        wave = grouped.setdefault((entry.get("phase"), entry.get("machine_type") or tiers.get(entry["node"])), {
            "phase": entry.get("phase"), "machine_type": entry.get("machine_type") or tiers.get(entry["node"]), "wave": 1,
            "nodes": [], "changed_nodes": [], "failed_nodes": [], "started": started, "finished": finished})
        wave["nodes"].append(entry["node"])
        wave["changed_nodes"].append(entry["node"])
        wave.update(started=min(wave["started"], started), finished=max(wave["finished"], finished))
    for wave in grouped.values():
        wave["seconds"] = round(wave["finished"] - wave["started"], 3)
    return list(grouped.values())


def _phase_seconds(waves, phases):
    """Wall seconds per phase in which a node changed: the first wave's start to the last one's end."""
    seconds = {}
    for phase in phases:
        timed = [wave for wave in waves if wave["phase"] == phase and wave["changed_nodes"]]
        if timed:
            seconds[phase] = round(max(wave["finished"] for wave in timed) - min(wave["started"] for wave in timed), 1)
    return seconds


def _preflight(params, address, old, new):
    """(progress, NodeCAs or None) of a node as the preflight read it, against this rotation's CAs."""
    facts = (params["preflight_nodes"].get(address) or {}).get(params["kind"]) or {}
    cas = None
    if "accepted_cas" in facts:
        cas = _rotation.NodeCAs(facts.get("issuing_ca"), tuple(facts.get("accepted_cas") or ()))
    known = facts.get("progress")
    if known in _rotation.PROGRESS:
        return known, cas
    return (_rotation.progress(cas, old, new) if cas is not None else _rotation.PENDING), cas


def _projected(params, phases, cas, old, new, before, address):
    """Where the run's phases would take a node (check mode), or `before` when it cannot be told (the preflight refuses that)."""
    if cas is None:
        return before
    try:
        if params["rollback"]:
            state = _rotation.rollback_state(phases[-1], cas, old, new, node=address, preview=True)
        else:
            state = _rotation.desired_state(phases[-1], cas, old, new, node=address, preview=True)
    except RotationStateError:
        return before
    return _rotation.progress(_rotation.NodeCAs(*state), old, new)


def _node_rows(params, phases, old, new, moves, waves, check_mode):
    """One row per node, control planes first: progress before this run and after it (or where a failure left it)."""
    failed = {address for wave in waves for address in wave["failed_nodes"]}
    rows = []
    for tier, addresses in zip(TIERS, (params["controlplanes"], params["workers"])):
        for address in addresses:
            known, cas = _preflight(params, address, old, new)
            done = moves.get(address, [])
            if check_mode:
                before, after = known, _projected(params, phases, cas, old, new, known, address)
            else:
                before = done[0].get("progress_before", known) if done else known
                after = done[-1].get("progress_after", before) if done else before
            rows.append({"name": params["node_names"].get(address) or address, "address": address, "tier": tier,
                         "before": before, "after": after, "phases": [entry.get("phase") for entry in done],
                         "seconds": round(sum(float(entry.get("seconds") or 0) for entry in done), 3),
                         "failed": address in failed})
    return rows


def _least(progresses):
    known = [progress for progress in progresses if progress in _rotation.PROGRESS]
    return min(known, key=_rotation.PROGRESS.index) if known else _rotation.FOREIGN


def _counts(nodes, rollback):
    counts = {}
    for row in nodes:
        counts[row["after"]] = counts.get(row["after"], 0) + 1
    order = sorted(counts, key=lambda progress: _rotation.PROGRESS.index(progress) if progress in _rotation.PROGRESS else -1,
                   reverse=not rollback)
    return "nodes part way: %s" % ", ".join("%s on %d" % (progress, counts[progress]) for progress in order) if len(counts) > 1 else None


def _state(params, nodes, check_mode, rotation_dir):
    """Headline, state reached and next step."""
    title = TITLES[params["kind"]]
    reached_texts = REACHED_BY_KIND.get(params["kind"], REACHED)
    reached = _least([row["after"] for row in nodes])
    moved = [row for row in nodes if row["before"] != row["after"]]
    where = os.path.dirname(rotation_dir) if rotation_dir else "the rotation folder (rotate_ca_dir)"
    phases = _check_phases(params)
    if params["failed"]:
        headline = "%s rotation STOPPED in this run (%d of %d nodes moved before the failure)" % (title, len(moved), len(nodes))
        next_step = FAILED_NEXT
    elif check_mode:
        headline = "%s rotation, check mode: nothing was changed; %s" % (
            title, "%d of %d nodes would move" % (len(moved), len(nodes)) if moved else "no node would change")
        next_step = "run the same command without --check to make these changes" if moved else None
    elif not moved and reached == _rotation.REMOVED:
        headline = "%s rotation: %s" % (title, NOTHING_TO_DO.format(dir=where))
        next_step = None
    else:
        headline = "%s %s: %s phase%s done%s" % (
            title, "rotated" if reached == _rotation.REMOVED else "rotation", ", ".join(phases),
            "s" if len(phases) > 1 else "", "" if moved else " (no node needed a change)")
        next_step = reached_texts.get(reached, (None, None))[1]
    if next_step is None and reached == _rotation.REMOVED and not params["failed"] and not check_mode and moved:
        next_step = NEXT_STEPS_DONE_BY_KIND[params["kind"]].format(dir=where)
    state = _counts(nodes, rollback=False) or (
        reached_texts[reached][0] if reached in reached_texts else "nodes disagree: some node's CA is neither the old nor the new one")
    return {"headline": headline, "state": params["state"] or ("would be: " if check_mode else "") + state,
            "reached": reached, "next_step": params["next_step"] or next_step}


def _rollback_state(params, nodes, check_mode, rotation_dir):  # pylint: disable=unused-argument
    """The rollback's headline, state and next step: its nodes go back towards pending."""
    title = TITLES[params["kind"]]
    known = [row["after"] for row in nodes if row["after"] in _rotation.PROGRESS]
    reached = max(known, key=_rotation.PROGRESS.index) if known else _rotation.FOREIGN
    moved = [row for row in nodes if row["before"] != row["after"]]
    if params["failed"]:
        headline = "%s rollback STOPPED in this run (%d of %d nodes moved before the failure)" % (title, len(moved), len(nodes))
        next_step = FAILED_ROLLBACK_NEXT
    elif check_mode:
        headline = "%s rollback, check mode: nothing was changed; %s" % (
            title, "%d of %d nodes would move" % (len(moved), len(nodes)) if moved else "no node would change")
        next_step = "run the same command without --check to roll back" if moved else None
    else:
        headline = "%s rotation rolled back%s" % (title, "" if moved else " (no node needed a change)")
        next_step = ROLLBACK_DONE_NEXT if reached == _rotation.PENDING else FAILED_ROLLBACK_NEXT
    state = _counts(nodes, rollback=True) or ROLLED_BACK.get(
        reached, "nodes disagree: some node's CA is neither the old nor the new one")
    return {"headline": headline, "state": params["state"] or ("would be: " if check_mode else "") + state,
            "reached": reached, "next_step": params["next_step"] or next_step}


def _credentials(params, check_mode, sealing):
    """The admin credentials written at the end, with their client certificate's expiry."""
    found = []
    for what, spec, reader in (("talosconfig", params["talosconfig"], _talosconfig_certificate),
                               ("kubeconfig", params["kubeconfig"], _kubeconfig_certificate)):
        if not spec or not spec.get("path"):
            continue
        entry = {"what": what, "path": spec["path"], "changed": bool(spec.get("changed"))}
        if not check_mode and os.path.isfile(os.path.expanduser(spec["path"])):
            entry["not_after"] = _pki.describe_certificate(reader(os.path.expanduser(spec["path"]), spec.get("context"), sealing))["not_after"]
        found.append(entry)
    return found


def _talosconfig_certificate(path, context, sealing):
    return TalosConfig.load(path, sealing=sealing).get_context(context).crt


def _kubeconfig_certificate(path, context, sealing):
    return Kubeconfig.load(path, sealing=sealing).credentials(context).crt


def _lines(summary, notes):
    """The summary as text: a headline, one row per node, then the CAs, timing, credentials and the next step."""
    lines = [summary["headline"], "state: %s" % summary["state"]]
    if summary["next_step"]:
        lines.append("next: %s" % summary["next_step"])
    arrow = "would be" if summary["check_mode"] else "->"
    width = max([len("node")] + [len(row["name"]) for row in summary["nodes"]])
    address_width = max([len("address")] + [len(row["address"]) for row in summary["nodes"]])
    lines.append("%-*s  %-*s  %-12s  %-8s  %s" % (width, "node", address_width, "address", "type", "before", "%s after" % arrow))
    for row in summary["nodes"]:
        lines.append("%-*s  %-*s  %-12s  %-8s  %s %s%s%s" % (
            width, row["name"], address_width, row["address"], row["tier"], row["before"], arrow, row["after"],
            "" if row["before"] != row["after"] else "  (unchanged)", "  (FAILED)" if row["failed"] else ""))
    if summary["failed"]:
        holds = HOLDS_SERVICE_ACCOUNT if summary["kind"] == _rotation_store.KIND_SERVICE_ACCOUNT else HOLDS
        reached = [progress for progress in _rotation.PROGRESS if any(row["after"] == progress for row in summary["nodes"])]
        lines.append("where the nodes stand: %s" % "; ".join(
            "%s (%s): %s" % (progress, holds[progress], ", ".join(row["name"] for row in summary["nodes"] if row["after"] == progress))
            for progress in reached))
    old, new = summary["old_ca"], summary["new_ca"]
    if "algorithm" in old:
        lines.append("old key %s (%s); new key %s (%s)" % (old["fingerprint"][:16], old["algorithm"], new["fingerprint"][:16],
                                                           new["algorithm"]))
    elif summary["rollback"]:
        lines.append("old CA %s issues again (expires %s); new CA %s no longer accepted" % (
            old["fingerprint"][:16], old["not_after"], new["fingerprint"][:16]))
    else:
        lines.append("old CA %s (expires %s); new CA %s (expires %s)" % (
            old["fingerprint"][:16], old["not_after"], new["fingerprint"][:16], new["not_after"]))
    if summary["phase_seconds"]:
        lines.append("wall seconds per phase: %s" % ", ".join("%s %.1f" % item for item in summary["phase_seconds"].items()))
    names = {row["address"]: row["name"] for row in summary["nodes"]}
    for phase in summary["phases_run"]:
        # The waves that did something (a rerun's waves that found every node done are data only).
        waves = [wave for wave in summary["waves"] if wave["phase"] == phase and (wave["changed_nodes"] or wave["failed_nodes"])]
        if waves:
            lines.append("%s waves: %s" % (phase, "; ".join(_wave_text(wave, names) for wave in waves)))
    for credential in summary["credentials"]:
        if summary["check_mode"]:
            lines.append("%s %s: would be updated" % (credential["what"], credential["path"]))
        else:
            lines.append("%s %s: %s; client certificate expires %s" % (
                credential["what"], credential["path"], "updated" if credential["changed"] else "unchanged",
                credential.get("not_after", "unknown")))
    for path in summary["secrets_files"]:
        lines.append("secrets bundle %s: holds the new %s" % (path, "key" if "algorithm" in old else "CA"))
    if "tokens" in summary:
        lines.append("token of the old key: %s" % summary["tokens"]["old_token"])
        lines.append("legacy token Secrets signed by the old key (never refreshed; they stop working at remove): %s" % (
            ", ".join(summary["tokens"]["legacy_secrets_of_old_key"]) or "none"))
    lines.extend(notes)
    if summary["rolled_back_to"]:
        lines.append("rotation folder %s %s (audit log inside)" % ("would be kept as" if summary["check_mode"] else "kept as",
                                                                   summary["rolled_back_to"]))
    elif summary["rotation_dir"]:
        lines.append("rotation folder: %s%s" % (summary["rotation_dir"],
                                                "; audit log: %s" % summary["audit_log"] if summary["audit_log"] else ""))
    return lines


def _wave_text(wave, names):
    """One wave: its tier and number, how many nodes it had and moved, its seconds, and the nodes that failed by name."""
    count = len(wave["nodes"])
    text = "%s %s: %d node%s, %d moved, %.1f s" % (
        wave["machine_type"] or "nodes", wave["wave"], count, "" if count == 1 else "s", len(wave["changed_nodes"]), wave["seconds"])
    if wave["failed_nodes"]:
        text += ", FAILED: %s" % ", ".join("%s (%s)" % (names.get(address, address), address) for address in wave["failed_nodes"])
    return text
