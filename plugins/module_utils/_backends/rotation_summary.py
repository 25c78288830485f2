# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""talos_rotation_summary: what a rotation run did, per node, the state it left the cluster in and what to do next.

Computed from the run's talos_machine_patch results (each node's progress before and after each phase, seconds) and
the preflight's reading of the nodes, with the rotation's CAs from its folder and the expiry of the admin credentials
written at the end. Reads files only; changes nothing.
"""

from __future__ import annotations

import os

from ansible_collections.talosops.pki.plugins.module_utils import _pki, _rotation, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._errors import TalosPKIError
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import TalosConfig

ARGUMENT_SPEC = {
    "kind": {"type": "str", "required": True, "choices": ["talos", "kubernetes"]},
    "rotation_dir": {"type": "path", "required": True},
    "throwaway": {"type": "bool", "default": False},
    "controlplanes": {"type": "list", "elements": "str", "required": True},
    "workers": {"type": "list", "elements": "str", "default": []},
    "node_names": {"type": "dict", "default": {}},
    "phases": {"type": "list", "elements": "str", "required": True},
    "patches": {"type": "list", "elements": "dict", "default": []},
    # Read by the action plugin from every node's host (registered results); a module process has no hostvars.
    "result_vars": {"type": "list", "elements": "str", "default": []},
    "preflight_nodes": {"type": "dict", "default": {}},
    "failed": {"type": "bool", "default": False},
    "state": {"type": "str"},
    "next_step": {"type": "str"},
    "talosconfig": {"type": "dict"},
    "kubeconfig": {"type": "dict"},
    "notes": {"type": "list", "elements": "str", "default": []},
    # Printed by the action plugin as plain lines, a readable table (a module process cannot print).
    "show": {"type": "bool", "default": False},
}

TITLES = {"talos": "Talos API CA", "kubernetes": "Kubernetes API CA"}
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
NEXT_STEPS_DONE = ("hand out talosconfigs to the other Talos API users from the new admin one (talosctl config new), restart "
                   "pods that use Talos API access, and protect or archive {dir} (it holds the new CA's private key)")
NEXT_STEPS_DONE_KUBERNETES = ("hand the new kubeconfig to the Kubernetes API's users (their old client certificates are "
                              "refused), and protect or archive {dir} (it holds the new CA's private key)")
NOTHING_TO_DO = ("nothing to do: the rotation in {dir} is already complete on every node. To rotate again, set "
                 "rotate_ca_start_new=true (a new CA, starting from the accept phase)")
FAILED_NEXT = ("fix the cause reported above, then rerun the same command: it resumes from each node's live state, with the "
               "same new CA")


def run(params, check_mode=False, diff=False):  # pylint: disable=unused-argument
    rotation = _rotation_store.load(params["rotation_dir"], kind=params["kind"])
    if rotation is None:
        raise TalosPKIError("no %s CA rotation in %s: the summary needs the folder the rotation ran with." % (
            params["kind"], params["rotation_dir"]))
    nodes = _node_rows(params)
    summary = {
        "kind": params["kind"],
        "check_mode": check_mode,
        "failed": params["failed"],
        "nodes": nodes,
        "old_ca": _describe(rotation.previous_ca_cert()),
        "new_ca": _describe(rotation.ca_cert()),
        "phases_run": list(params["phases"]),
        "phase_seconds": _phase_seconds(params["patches"]),
        # A check-mode throwaway folder is deleted right after: never shown.
        "rotation_dir": None if params["throwaway"] else rotation.path,
        "audit_log": None if params["throwaway"] else rotation.facts()["audit_log_path"],
        "credentials": _credentials(params, check_mode),
    }
    summary.update(_state(params, nodes, check_mode, summary["rotation_dir"]))
    return {"changed": False, "summary": summary, "lines": _lines(summary, params["notes"])}


def _describe(crt):
    facts = _pki.describe_certificate(crt)
    return {"fingerprint": facts["fingerprint_sha256"], "not_after": facts["not_after"]}


def _node_rows(params):
    """One row per node, control planes first: progress before this run and after it (or where a failure left it)."""
    patches = {}
    for patch in sorted(params["patches"], key=lambda item: _rotation.PHASES.index(item["phase"])):
        patches.setdefault(patch["node"], []).append(patch)
    rows = []
    for tier, addresses in (("controlplane", params["controlplanes"]), ("worker", params["workers"])):
        for address in addresses:
            done = patches.get(address, [])
            known = (params["preflight_nodes"].get(address) or {}).get(params["kind"], {}).get("progress")
            before = done[0]["progress_before"] if done else known or _rotation.PENDING
            after = done[-1]["progress_after"] if done else before
            rows.append({"name": params["node_names"].get(address) or address, "address": address, "tier": tier,
                         "before": before, "after": after, "phases": [patch["phase"] for patch in done if patch.get("changed")]})
    return rows


def _phase_seconds(patches):
    """Wall seconds per phase in which a node changed: the first patch's start to the last one's end."""
    seconds = {}
    for phase in _rotation.PHASES:
        timed = [patch for patch in patches if patch["phase"] == phase and patch.get("changed") and "started" in patch]
        if timed:
            seconds[phase] = round(max(patch["finished"] for patch in timed) - min(patch["started"] for patch in timed), 1)
    return seconds


def _least(progresses):
    known = [progress for progress in progresses if progress in _rotation.PROGRESS]
    return min(known, key=_rotation.PROGRESS.index) if known else _rotation.FOREIGN


def _state(params, nodes, check_mode, rotation_dir):
    """Headline, state reached and next step."""
    title = TITLES[params["kind"]]
    reached = _least([row["after"] for row in nodes])
    moved = [row for row in nodes if row["before"] != row["after"]]
    where = os.path.dirname(rotation_dir) if rotation_dir else "the rotation folder (rotate_ca_dir)"
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
            title, "rotated" if reached == _rotation.REMOVED else "rotation", ", ".join(params["phases"]),
            "s" if len(params["phases"]) > 1 else "", "" if moved else " (no node needed a change)")
        next_step = REACHED.get(reached, (None, None))[1]
    if next_step is None and reached == _rotation.REMOVED and not params["failed"] and not check_mode and moved:
        template = NEXT_STEPS_DONE if params["kind"] == "talos" else NEXT_STEPS_DONE_KUBERNETES
        next_step = template.format(dir=where)
    counts = {}
    for row in nodes:
        counts[row["after"]] = counts.get(row["after"], 0) + 1
    if len(counts) > 1:
        state = "nodes part way: %s" % ", ".join("%s on %d" % (progress, counts[progress]) for progress in sorted(
            counts, key=lambda progress: _rotation.PROGRESS.index(progress) if progress in _rotation.PROGRESS else -1, reverse=True))
    else:
        state = REACHED[reached][0] if reached in REACHED else "nodes disagree: some node's CA is neither the old nor the new one"
    return {"headline": headline, "state": params["state"] or ("would be: " if check_mode else "") + state,
            "reached": reached, "next_step": params["next_step"] or next_step}


def _credentials(params, check_mode):
    """The admin credentials written at the end, with their client certificate's expiry."""
    found = []
    for what, spec, reader in (("talosconfig", params["talosconfig"], _talosconfig_certificate),
                               ("kubeconfig", params["kubeconfig"], _kubeconfig_certificate)):
        if not spec or not spec.get("path"):
            continue
        entry = {"what": what, "path": spec["path"], "changed": bool(spec.get("changed"))}
        if not check_mode and os.path.isfile(os.path.expanduser(spec["path"])):
            entry["not_after"] = _pki.describe_certificate(reader(os.path.expanduser(spec["path"]), spec.get("context")))["not_after"]
        found.append(entry)
    return found


def _talosconfig_certificate(path, context):
    return TalosConfig.load(path).get_context(context).crt


def _kubeconfig_certificate(path, context):
    return Kubeconfig.load(path).credentials(context).crt


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
        lines.append("%-*s  %-*s  %-12s  %-8s  %s %s%s" % (
            width, row["name"], address_width, row["address"], row["tier"], row["before"], arrow, row["after"],
            "" if row["before"] != row["after"] else "  (unchanged)"))
    lines.append("old CA %s (expires %s); new CA %s (expires %s)" % (
        summary["old_ca"]["fingerprint"][:16], summary["old_ca"]["not_after"], summary["new_ca"]["fingerprint"][:16],
        summary["new_ca"]["not_after"]))
    if summary["phase_seconds"]:
        lines.append("wall seconds per phase: %s" % ", ".join("%s %.1f" % item for item in summary["phase_seconds"].items()))
    for credential in summary["credentials"]:
        if summary["check_mode"]:
            lines.append("%s %s: would be updated" % (credential["what"], credential["path"]))
        else:
            lines.append("%s %s: %s; client certificate expires %s" % (
                credential["what"], credential["path"], "updated" if credential["changed"] else "unchanged",
                credential.get("not_after", "unknown")))
    lines.extend(notes)
    if summary["rotation_dir"]:
        lines.append("rotation folder: %s%s" % (summary["rotation_dir"],
                                                "; audit log: %s" % summary["audit_log"] if summary["audit_log"] else ""))
    return lines
