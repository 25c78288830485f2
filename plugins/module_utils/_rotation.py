# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""The rotation's phases as pure functions over one node's CA fields.

A rotation replaces OLD by NEW in three phases, each a desired state of the node:

  accept  NEW joins the accepted CAs            issuing OLD, accepted ... + NEW
  swap    NEW issues, OLD stays accepted        issuing NEW, accepted ... + OLD
  remove  OLD is no longer accepted             issuing NEW, accepted ...

Where a node stands is read from its live fields (fingerprints), never from a local
file, so a rerun after any interruption continues where the nodes are. Each phase only
moves a node forward: running an earlier phase on a node that is further along is a no-op,
and a later phase on a node that is behind is refused (remove) or brings it along (swap
also accepts). CAs that are neither OLD nor NEW (strays) are left untouched and reported,
unless the remove phase is asked to drop them too: then NEW alone remains.

Some nodes have no issuing CA field at all: a v1.14+ worker carries the Kubernetes CA only as
`KubeAPIServerCAConfig.acceptedCAs`. Its progress is read from that list alone, and the
rotation keeps that shape (it never gains an issuing CA). The CA that plays the issuing role
comes first, so the list's order tells the phases apart:

  pending   (... OLD ...)          accept  (... OLD ..., NEW)
  swap      (NEW, ..., OLD)        remove  (NEW, ...)

The reorder in the swap matters beyond bookkeeping: it changes the node's CA bundle, so the
kubelet restarts and takes a client certificate from the new issuing CA before any control
plane stops accepting the old one.

A rollback takes a node back to OLD alone, in two reverse phases, from anywhere before REMOVED
(once OLD is no longer accepted somewhere, clients of OLD are already refused there: going
back is a new rotation, not a rollback):

  rollback_swap    OLD issues again, NEW stays accepted    issuing OLD, accepted ... + NEW
  rollback_accept  NEW is no longer accepted               issuing OLD, accepted ...

Each only moves a node backward; a node already further back is left as it is.
"""

from __future__ import annotations

from typing import NamedTuple

from ansible_collections.talosops.pki.plugins.module_utils._errors import RotationStateError

PHASES = ("accept", "swap", "remove")

# Node progress, in order. "foreign": the node's issuing CA is neither OLD nor NEW (for a node
# without an issuing CA: neither is accepted).
PENDING, ACCEPTED, SWAPPED, REMOVED, FOREIGN = "pending", "accepted", "swapped", "removed", "foreign"
PROGRESS = (PENDING, ACCEPTED, SWAPPED, REMOVED)
PHASE_REACHES = {"accept": ACCEPTED, "swap": SWAPPED, "remove": REMOVED}
# The rollback's phases, in the order they run, and the progress each takes a node back to.
ROLLBACK_PHASES = ("rollback_swap", "rollback_accept")
ROLLBACK_REACHES = {"rollback_swap": ACCEPTED, "rollback_accept": PENDING}


class NodeCAs(NamedTuple):
    """One node's CA fields of one kind, as fingerprints (issuing may be None on a worker shape without one)."""
    issuing: str | None
    accepted: tuple[str, ...]


def progress(node_cas, old, new):
    """Where a node stands in the rotation OLD -> NEW (fingerprints)."""
    if node_cas.issuing is None:
        return _accepted_only_progress(node_cas.accepted, old, new)
    if node_cas.issuing == new:
        return SWAPPED if old in node_cas.accepted else REMOVED
    if node_cas.issuing == old:
        return ACCEPTED if new in node_cas.accepted else PENDING
    return FOREIGN


def _accepted_only_progress(accepted, old, new):
    """Progress of a node that has accepted CAs only: which of OLD and NEW it holds, and which comes first."""
    if old in accepted and new in accepted:
        return ACCEPTED if accepted.index(old) < accepted.index(new) else SWAPPED
    if old in accepted:
        return PENDING
    if new in accepted:
        return REMOVED
    return FOREIGN


def strays(node_cas, old, new):
    """Accepted CAs that are neither OLD nor NEW, e.g. left by an aborted `talosctl rotate-ca`."""
    return tuple(fp for fp in node_cas.accepted if fp not in (old, new))


def desired_state(phase, node_cas, old, new, node="node", preview=False, remove_strays=False):
    """The CA fields a node must have after `phase`, as (issuing, accepted) fingerprints.

    With `remove_strays`, the remove phase also drops the accepted CAs that are neither OLD nor
    NEW, including on a node that had already reached the removed state.

    Raises RotationStateError when the phase cannot apply to where the node stands. With
    `preview` (check mode, where earlier phases were only dry-run), the earlier phases are
    applied first, so the result is where the node would be after this phase of a real run.
    """
    if preview and phase in PHASES:
        for earlier in PHASES[:PHASES.index(phase)]:
            node_cas = NodeCAs(*desired_state(earlier, node_cas, old, new, node))
    return _desired_state(phase, node_cas, old, new, node, remove_strays and phase == "remove")


def _desired_state(phase, node_cas, old, new, node, remove_strays=False):
    if phase not in PHASES:
        raise RotationStateError("unknown phase %r: use one of %s." % (phase, ", ".join(PHASES)))
    where = _known_progress(node_cas, old, new, node)
    target = PHASE_REACHES[phase]
    others = () if remove_strays else strays(node_cas, old, new)
    if where == REMOVED and remove_strays:
        return node_cas.issuing, ((new,) if node_cas.issuing is None else ())
    if PROGRESS.index(where) >= PROGRESS.index(target):
        return node_cas.issuing, node_cas.accepted
    if where != SWAPPED and phase == "remove":
        raise RotationStateError(
            "%s has not swapped to the new CA yet (it is at '%s'): run the swap phase before removing the old CA, "
            "or the node would stop trusting every client it has." % (node, where))
    if node_cas.issuing is None:
        # No issuing field, and none is added: the issuing role is the first accepted CA.
        if phase == "accept":
            return None, node_cas.accepted + (new,)
        if phase == "swap":
            return None, (new,) + others + (old,)
        return None, (new,) + others
    if phase == "accept":
        return old, node_cas.accepted + (new,)
    if phase == "swap":
        return new, others + (old,)
    return new, others


def _known_progress(node_cas, old, new, node):
    """The node's progress; refused when the node is on neither CA of the rotation."""
    if old == new:
        raise RotationStateError("the new CA is the CA being replaced (%s): generate a new CA for this rotation." % new[:16])
    where = progress(node_cas, old, new)
    if where == FOREIGN and node_cas.issuing is None:
        raise RotationStateError(
            "%s has no issuing CA field and accepts neither the CA being replaced (%s) nor the new CA (%s). The rotation "
            "directory belongs to another cluster or rotation, or the node was changed by hand: check the node's machine "
            "config and the rotation directory before going on." % (node, old[:16], new[:16]))
    if where == FOREIGN:
        raise RotationStateError(
            "%s: its issuing CA (%s) is neither the CA being replaced (%s) nor the new CA (%s). The rotation directory "
            "belongs to another cluster or rotation, or the node was changed by hand: check the node's machine config "
            "and the rotation directory before going on." % (node, node_cas.issuing[:16], old[:16], new[:16]))
    return where


def rollback_blockers(progress_by_node):
    """The nodes where the rotation has gone past the point of no return (the old CA removed): a rollback is refused."""
    return sorted(node for node, where in progress_by_node.items() if where == REMOVED)


def rollback_state(phase, node_cas, old, new, node="node", preview=False):
    """The CA fields a node must have after the rollback phase `phase`, as (issuing, accepted) fingerprints.

    OLD and NEW are the rotation's (OLD is the CA the rollback returns to). Raises RotationStateError when the node
    cannot be rolled back (the old CA removed, or on neither CA), or when `rollback_accept` finds the new CA still
    issuing: the swap must be rolled back first, or the node would stop trusting the certificates it serves with.
    With `preview` (check mode), `rollback_swap` is applied first, so the result is where a real run would end.
    """
    if phase not in ROLLBACK_PHASES:
        raise RotationStateError("unknown rollback phase %r: use one of %s." % (phase, ", ".join(ROLLBACK_PHASES)))
    if preview and phase == "rollback_accept":
        node_cas = NodeCAs(*rollback_state("rollback_swap", node_cas, old, new, node))
    where = _known_progress(node_cas, old, new, node)
    if where == REMOVED:
        raise RotationStateError(
            "%s no longer accepts the CA being replaced (%s): the remove phase has run there, and clients of that CA are "
            "refused already, so there is no rolling back. Finish this rotation (run again without rotate_ca_rollback); to "
            "leave its CA, start a new rotation afterwards (rotate_ca_start_new=true)." % (node, old[:16]))
    if PROGRESS.index(where) <= PROGRESS.index(ROLLBACK_REACHES[phase]):
        return node_cas.issuing, node_cas.accepted
    if where == SWAPPED and phase == "rollback_accept":
        raise RotationStateError(
            "%s still issues with the new CA (it is at '%s'): roll back the swap before dropping the new CA, or the node "
            "would stop trusting its own certificates." % (node, where))
    others = strays(node_cas, old, new)
    if phase == "rollback_swap":
        # Back to where the accept phase left the node: OLD in the issuing role, NEW accepted last.
        if node_cas.issuing is None:
            return None, (old,) + others + (new,)
        return old, others + (new,)
    return node_cas.issuing, tuple(fp for fp in node_cas.accepted if fp != new)
