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


# --- nodes without an issuing CA field (v1.14+ workers: KubeAPIServerCAConfig.acceptedCAs only) ---

ACCEPTED_ONLY = {
    rotation.PENDING: rotation.NodeCAs(None, (OLD,)),
    rotation.ACCEPTED: rotation.NodeCAs(None, (OLD, NEW)),
    rotation.SWAPPED: rotation.NodeCAs(None, (NEW, OLD)),
    rotation.REMOVED: rotation.NodeCAs(None, (NEW,)),
}


@pytest.mark.parametrize("where", sorted(ACCEPTED_ONLY))
def test_progress_of_an_accepted_only_node_reads_presence_and_order(where):
    assert rotation.progress(ACCEPTED_ONLY[where], OLD, NEW) == where


@pytest.mark.parametrize("accepted,expected", [
    ((STRAY, OLD), rotation.PENDING),
    ((OLD, STRAY, NEW), rotation.ACCEPTED),
    ((NEW, STRAY, OLD), rotation.SWAPPED),
    ((STRAY, NEW), rotation.REMOVED),
])
def test_progress_of_an_accepted_only_node_ignores_strays(accepted, expected):
    assert rotation.progress(rotation.NodeCAs(None, accepted), OLD, NEW) == expected


@pytest.mark.parametrize("accepted", [(), (STRAY,), (STRAY, OTHER)])
def test_accepted_only_node_is_foreign_only_when_neither_ca_is_there(accepted):
    assert rotation.progress(rotation.NodeCAs(None, accepted), OLD, NEW) == rotation.FOREIGN
    with pytest.raises(RotationStateError, match="accepts neither the CA being replaced") as info:
        rotation.desired_state("accept", rotation.NodeCAs(None, accepted), OLD, NEW, node="10.5.0.7")
    assert "10.5.0.7" in str(info.value) and "no issuing CA field" in str(info.value)


@pytest.mark.parametrize("phase,where,expected", [
    ("accept", rotation.PENDING, (None, (OLD, NEW))),
    ("accept", rotation.ACCEPTED, (None, (OLD, NEW))),
    ("accept", rotation.SWAPPED, (None, (NEW, OLD))),
    ("accept", rotation.REMOVED, (None, (NEW,))),
    ("swap", rotation.PENDING, (None, (NEW, OLD))),
    ("swap", rotation.ACCEPTED, (None, (NEW, OLD))),
    ("swap", rotation.SWAPPED, (None, (NEW, OLD))),
    ("swap", rotation.REMOVED, (None, (NEW,))),
    ("remove", rotation.SWAPPED, (None, (NEW,))),
    ("remove", rotation.REMOVED, (None, (NEW,))),
])
def test_accepted_only_node_keeps_its_shape_in_every_phase(phase, where, expected):
    assert rotation.desired_state(phase, ACCEPTED_ONLY[where], OLD, NEW) == expected


@pytest.mark.parametrize("where", [rotation.PENDING, rotation.ACCEPTED])
def test_accepted_only_remove_before_swap_is_refused(where):
    with pytest.raises(RotationStateError, match="run the swap phase before removing"):
        rotation.desired_state("remove", ACCEPTED_ONLY[where], OLD, NEW, node="10.5.0.7")


def test_accepted_only_strays_are_kept_behind_the_issuing_role():
    issuing, accepted = rotation.desired_state("accept", rotation.NodeCAs(None, (STRAY, OLD)), OLD, NEW)
    assert (issuing, accepted) == (None, (STRAY, OLD, NEW))
    issuing, accepted = rotation.desired_state("swap", rotation.NodeCAs(issuing, accepted), OLD, NEW)
    assert (issuing, accepted) == (None, (NEW, STRAY, OLD))
    assert rotation.desired_state("remove", rotation.NodeCAs(issuing, accepted), OLD, NEW) == (None, (NEW, STRAY))


@pytest.mark.parametrize("phase,expected", [
    ("accept", (None, (OLD, NEW))),
    ("swap", (None, (NEW, OLD))),
    ("remove", (None, (NEW,))),
])
def test_accepted_only_preview_applies_earlier_phases_first(phase, expected):
    assert rotation.desired_state(phase, ACCEPTED_ONLY[rotation.PENDING], OLD, NEW, preview=True) == expected


@pytest.mark.parametrize("node,expected", [
    (rotation.NodeCAs(NEW, (STRAY, OLD)), (NEW, ())),              # swapped: the old CA and the stray go together
    (rotation.NodeCAs(NEW, (STRAY, OTHER)), (NEW, ())),            # removed earlier, strays kept then: dropped on a rerun
    (rotation.NodeCAs(None, (NEW, STRAY, OLD)), (None, (NEW,))),   # accepted-only shape keeps its shape
    (rotation.NodeCAs(None, (NEW, STRAY)), (None, (NEW,))),
    (rotation.NodeCAs(NEW, ()), (NEW, ())),                        # nothing stray: nothing to do
])
def test_remove_strays_leaves_the_new_ca_alone(node, expected):
    assert rotation.desired_state("remove", node, OLD, NEW, remove_strays=True) == expected


@pytest.mark.parametrize("phase", ["accept", "swap"])
def test_remove_strays_touches_only_the_remove_phase(phase):
    node = rotation.NodeCAs(OLD, (STRAY,))
    assert STRAY in rotation.desired_state(phase, node, OLD, NEW, remove_strays=True)[1]


def test_remove_strays_still_refuses_a_node_that_has_not_swapped():
    with pytest.raises(RotationStateError, match="run the swap phase before removing"):
        rotation.desired_state("remove", rotation.NodeCAs(OLD, (STRAY, NEW)), OLD, NEW, remove_strays=True)


def test_remove_strays_in_a_check_run_previews_the_whole_rotation():
    assert rotation.desired_state("remove", rotation.NodeCAs(OLD, (STRAY,)), OLD, NEW, preview=True, remove_strays=True) == (NEW, ())
