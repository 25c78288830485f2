# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""One rotation per cluster, wherever it is started from: the rotation marker, read back from the nodes.

Every new CA this collection makes carries a rotation marker (_pki.ROTATION_MARKER_OID): the rotation's id, the
fingerprint of the CA it replaces ("previous"), when and on which controller it started. The nodes carry the new CA
from the accept phase on, so the cluster itself shows a rotation in progress to a run from any rotation directory,
controller or copy of the collection:

  a marked CA M is in progress while some node still holds M's previous CA (issuing or accepted);
  once no node holds it, M's rotation is over (M is then simply the cluster's CA).

Two runs that start from the same CA at the same moment both pass their preflight. Each then claims the cluster by
accepting its CA on the first control plane, waits, and reads that node again; between two marked CAs replacing the
same CA, the one created first wins (ties: the lower fingerprint), so both runs agree on the winner. The loser takes
its CA off again and stops; the winner waits for the loser's CA to leave and goes on.
"""

from __future__ import annotations

import datetime
import platform
import secrets
from typing import NamedTuple

from ansible_collections.talosops.pki.plugins.module_utils import _pki, _rotation

ROTATION_ID_BYTES = 8


class MarkedCA(NamedTuple):
    fingerprint: str
    marker: dict


def new_marker(previous_fingerprint):
    """The marker of a new rotation of the CA `previous_fingerprint`: public facts only."""
    return {
        "id": secrets.token_hex(ROTATION_ID_BYTES),
        "previous": previous_fingerprint,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "host": platform.node(),
    }


def marked(crt):
    """The CA as a MarkedCA, or None when it carries no rotation marker."""
    marker = _pki.rotation_marker(crt)
    return MarkedCA(_pki.fingerprint(crt), marker) if marker else None


def wins(first, second):
    """Whether MarkedCA `first` wins a race against `second`: created first, then the lower fingerprint."""
    return (first.marker.get("created", ""), first.fingerprint) < (second.marker.get("created", ""), second.fingerprint)


def describe(ca):
    marker = ca.marker
    return "CA %s of talosops.pki rotation %s (started %s on %s, replacing CA %s)" % (
        ca.fingerprint[:16], marker.get("id"), marker.get("created", "?"), marker.get("host") or "?", (marker.get("previous") or "?")[:16])


def blocking(cas, held, issuing, mine=None, mine_previous=None, remove_strays=False):
    """The marked CAs of other rotations in progress that stop this run, as MarkedCAs.

    `cas`: MarkedCAs found on the nodes; `held`: fingerprints held by any node; `issuing`: those issuing on any node;
    `mine`: this run's own MarkedCA (None before it has one); `mine_previous`: the CA this run replaces. A rival of
    the same previous CA that this run beats is not blocking (its run withdraws it); with `remove_strays`, neither is
    one that issues nowhere (an abandoned rotation, dropped as a stray in the remove phase).
    """
    found = []
    for ca in cas:
        if mine is not None and ca.fingerprint == mine.fingerprint:
            continue
        if ca.marker.get("previous") not in held:
            continue  # its rotation is over: no node holds the CA it replaced
        if mine is not None and ca.marker.get("previous") == mine_previous and wins(mine, ca):
            continue
        if remove_strays and ca.fingerprint not in issuing:
            continue
        found.append(ca)
    return found


def rivals(cas, mine, mine_previous):
    """(winners, losers): marked CAs on a node that replace the same CA as this run's, split by who wins the race."""
    same = [ca for ca in cas if ca.fingerprint != mine.fingerprint and ca.marker.get("previous") == mine_previous]
    return [ca for ca in same if wins(ca, mine)], [ca for ca in same if wins(mine, ca)]


def without(node_cas, fingerprint):
    """The node's CA fields with `fingerprint` taken out of the accepted CAs (never the issuing CA)."""
    return _rotation.NodeCAs(node_cas.issuing, tuple(fp for fp in node_cas.accepted if fp != fingerprint))
