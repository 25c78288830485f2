"""Phase functions: every (phase, progress) pair, both directions."""

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _rotation as rotation
from ansible_collections.talosops.pki.plugins.module_utils._errors import RotationStateError

OLD, NEW, STRAY, OTHER = "0" * 64, "1" * 64, "2" * 64, "3" * 64

STATES = {
    rotation.PENDING: rotation.NodeCAs(OLD, ()),
    rotation.ACCEPTED: rotation.NodeCAs(OLD, (NEW,)),
    rotation.SWAPPED: rotation.NodeCAs(NEW, (OLD,)),
    rotation.REMOVED: rotation.NodeCAs(NEW, ()),
}


@pytest.mark.parametrize("where", sorted(STATES))
def test_progress_reads_each_state(where):
    assert rotation.progress(STATES[where], OLD, NEW) == where


def test_progress_foreign_when_issuing_is_neither():
    assert rotation.progress(rotation.NodeCAs(OTHER, (OLD,)), OLD, NEW) == rotation.FOREIGN


@pytest.mark.parametrize("phase,where,expected", [
    ("accept", rotation.PENDING, (OLD, (NEW,))),
    ("accept", rotation.ACCEPTED, (OLD, (NEW,))),
    ("accept", rotation.SWAPPED, (NEW, (OLD,))),
    ("accept", rotation.REMOVED, (NEW, ())),
    ("swap", rotation.PENDING, (NEW, (OLD,))),
    ("swap", rotation.ACCEPTED, (NEW, (OLD,))),
    ("swap", rotation.SWAPPED, (NEW, (OLD,))),
    ("swap", rotation.REMOVED, (NEW, ())),
    ("remove", rotation.SWAPPED, (NEW, ())),
    ("remove", rotation.REMOVED, (NEW, ())),
])
def test_phase_moves_forward_only(phase, where, expected):
    assert rotation.desired_state(phase, STATES[where], OLD, NEW) == expected


@pytest.mark.parametrize("where", [rotation.PENDING, rotation.ACCEPTED])
def test_remove_before_swap_is_refused(where):
    with pytest.raises(RotationStateError, match="run the swap phase before removing"):
        rotation.desired_state("remove", STATES[where], OLD, NEW, node="10.5.0.3")


def test_foreign_node_is_refused_with_both_fingerprints():
    with pytest.raises(RotationStateError, match="neither the CA being replaced") as info:
        rotation.desired_state("accept", rotation.NodeCAs(OTHER, ()), OLD, NEW, node="10.5.0.3")
    assert "10.5.0.3" in str(info.value) and OLD[:16] in str(info.value)


def test_strays_are_kept_through_every_phase():
    node = rotation.NodeCAs(OLD, (STRAY,))
    issuing, accepted = rotation.desired_state("accept", node, OLD, NEW)
    assert accepted == (STRAY, NEW)
    issuing, accepted = rotation.desired_state("swap", rotation.NodeCAs(issuing, accepted), OLD, NEW)
    assert (issuing, accepted) == (NEW, (STRAY, OLD))
    assert rotation.desired_state("remove", rotation.NodeCAs(issuing, accepted), OLD, NEW) == (NEW, (STRAY,))
    assert rotation.strays(rotation.NodeCAs(NEW, (STRAY, OLD)), OLD, NEW) == (STRAY,)


def test_same_old_and_new_is_refused():
    with pytest.raises(RotationStateError, match="generate a new CA"):
        rotation.desired_state("accept", STATES[rotation.PENDING], OLD, OLD)


def test_unknown_phase_is_refused():
    with pytest.raises(RotationStateError, match="unknown phase"):
        rotation.desired_state("drop", STATES[rotation.PENDING], OLD, NEW)


@pytest.mark.parametrize("phase,expected", [
    ("accept", (OLD, (NEW,))),
    ("swap", (NEW, (OLD,))),
    ("remove", (NEW, ())),
])
def test_preview_applies_earlier_phases_first(phase, expected):
    assert rotation.desired_state(phase, STATES[rotation.PENDING], OLD, NEW, preview=True) == expected
