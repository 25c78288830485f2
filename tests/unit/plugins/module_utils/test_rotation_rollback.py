"""Rollback phase functions: every (rollback phase, progress) pair, in both node shapes, and real configs of both contracts."""

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils import _rotation as rotation
from ansible_collections.talosops.pki.plugins.module_utils._errors import RotationStateError
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import KIND_KUBERNETES, KIND_TALOS, MachineConfig

from test_machineconfig import SHAPES, make_ca  # noqa: E402  pylint: disable=wrong-import-position,import-error

OLD, NEW, STRAY, OTHER = "0" * 64, "1" * 64, "2" * 64, "3" * 64

# A node with an issuing CA field (machine.ca, cluster.ca, KubeAPIServerCAConfig.issuingCA) ...
ISSUING = {
    rotation.PENDING: rotation.NodeCAs(OLD, ()),
    rotation.ACCEPTED: rotation.NodeCAs(OLD, (NEW,)),
    rotation.SWAPPED: rotation.NodeCAs(NEW, (OLD,)),
    rotation.REMOVED: rotation.NodeCAs(NEW, ()),
}
# ... and a v1.14+ worker's Kubernetes CA: KubeAPIServerCAConfig.acceptedCAs only, the first one plays the issuing role.
ACCEPTED_ONLY = {
    rotation.PENDING: rotation.NodeCAs(None, (OLD,)),
    rotation.ACCEPTED: rotation.NodeCAs(None, (OLD, NEW)),
    rotation.SWAPPED: rotation.NodeCAs(None, (NEW, OLD)),
    rotation.REMOVED: rotation.NodeCAs(None, (NEW,)),
}
SHAPE_STATES = {"issuing": ISSUING, "accepted-only": ACCEPTED_ONLY}


@pytest.mark.parametrize("shape,phase,where,expected", [
    # rollback_swap: OLD issues again, NEW stays accepted; nodes further back are left alone.
    ("issuing", "rollback_swap", rotation.SWAPPED, rotation.ACCEPTED),
    ("issuing", "rollback_swap", rotation.ACCEPTED, rotation.ACCEPTED),
    ("issuing", "rollback_swap", rotation.PENDING, rotation.PENDING),
    ("accepted-only", "rollback_swap", rotation.SWAPPED, rotation.ACCEPTED),
    ("accepted-only", "rollback_swap", rotation.ACCEPTED, rotation.ACCEPTED),
    ("accepted-only", "rollback_swap", rotation.PENDING, rotation.PENDING),
    # rollback_accept: NEW is dropped.
    ("issuing", "rollback_accept", rotation.ACCEPTED, rotation.PENDING),
    ("issuing", "rollback_accept", rotation.PENDING, rotation.PENDING),
    ("accepted-only", "rollback_accept", rotation.ACCEPTED, rotation.PENDING),
    ("accepted-only", "rollback_accept", rotation.PENDING, rotation.PENDING),
])
def test_rollback_moves_backward_only(shape, phase, where, expected):
    states = SHAPE_STATES[shape]
    assert rotation.rollback_state(phase, states[where], OLD, NEW) == tuple(states[expected])


@pytest.mark.parametrize("shape", sorted(SHAPE_STATES))
@pytest.mark.parametrize("phase", rotation.ROLLBACK_PHASES)
def test_rollback_refused_once_the_old_ca_is_removed(shape, phase):
    with pytest.raises(RotationStateError, match="no rolling back") as info:
        rotation.rollback_state(phase, SHAPE_STATES[shape][rotation.REMOVED], OLD, NEW, node="10.5.0.3")
    message = str(info.value)
    assert "10.5.0.3" in message and "rotate_ca_start_new" in message and OLD[:16] in message


@pytest.mark.parametrize("shape", sorted(SHAPE_STATES))
def test_dropping_the_new_ca_while_it_issues_is_refused(shape):
    with pytest.raises(RotationStateError, match="roll back the swap before"):
        rotation.rollback_state("rollback_accept", SHAPE_STATES[shape][rotation.SWAPPED], OLD, NEW, node="10.5.0.3")


@pytest.mark.parametrize("shape", sorted(SHAPE_STATES))
def test_preview_of_rollback_accept_includes_the_swap_back(shape):
    states = SHAPE_STATES[shape]
    assert rotation.rollback_state("rollback_accept", states[rotation.SWAPPED], OLD, NEW, preview=True) == tuple(states[rotation.PENDING])


@pytest.mark.parametrize("node_cas", [rotation.NodeCAs(OTHER, (OLD,)), rotation.NodeCAs(None, (OTHER,))])
def test_a_node_on_neither_ca_is_refused(node_cas):
    with pytest.raises(RotationStateError, match="neither"):
        rotation.rollback_state("rollback_swap", node_cas, OLD, NEW, node="10.5.0.3")


def test_unknown_rollback_phase_is_refused():
    with pytest.raises(RotationStateError, match="rollback_swap, rollback_accept"):
        rotation.rollback_state("swap", ISSUING[rotation.SWAPPED], OLD, NEW)


@pytest.mark.parametrize("start,stop", [
    (rotation.NodeCAs(OLD, (STRAY,)), "accept"),
    (rotation.NodeCAs(OLD, (STRAY,)), "swap"),
    (rotation.NodeCAs(None, (OLD, STRAY)), "accept"),
    (rotation.NodeCAs(None, (OLD, STRAY)), "swap"),
])
def test_forward_then_back_returns_the_node_as_it_was_strays_kept(start, stop):
    node = start
    for phase in rotation.PHASES[:rotation.PHASES.index(stop) + 1]:
        node = rotation.NodeCAs(*rotation.desired_state(phase, node, OLD, NEW))
    for phase in rotation.ROLLBACK_PHASES:
        node = rotation.NodeCAs(*rotation.rollback_state(phase, node, OLD, NEW))
    assert node == start
    assert rotation.progress(node, OLD, NEW) == rotation.PENDING


def test_rollback_blockers_are_the_nodes_past_remove():
    progress = {"10.5.0.2": rotation.SWAPPED, "10.5.0.5": rotation.REMOVED, "10.5.0.3": rotation.REMOVED, "10.5.0.4": rotation.ACCEPTED}
    assert rotation.rollback_blockers(progress) == ["10.5.0.3", "10.5.0.5"]
    assert not rotation.rollback_blockers({"10.5.0.2": rotation.SWAPPED, "10.5.0.3": rotation.PENDING})


# --- the same moves on real machine configs of both contracts ------------------------------------------------------------

def _node_cas(fields):
    return rotation.NodeCAs(_pki.fingerprint(fields.issuing_crt) if fields.issuing_crt else None,
                            tuple(_pki.fingerprint(crt) for crt in fields.accepted))


def _apply(config, kind, issuing, accepted, certificates, keys, control_plane):
    config.set_ca(kind, certificates[issuing] if issuing else None, keys[issuing] if issuing and control_plane else None,
                  tuple(certificates[fp] for fp in accepted))


@pytest.fixture(scope="module", name="pki")
def pki_fixture():
    return {
        "talos_old": make_ca("talos", edwards=True), "talos_new": make_ca("talos", edwards=True),
        "k8s_old": make_ca("kubernetes"), "k8s_new": make_ca("kubernetes"),
        "etcd": make_ca("etcd"), "aggregator": make_ca("front-proxy"),
    }


@pytest.mark.parametrize("shape", ["v1alpha1", "v1.15"])
@pytest.mark.parametrize("machine_type", ["controlplane", "worker"])
@pytest.mark.parametrize("kind,prefix", [(KIND_TALOS, "talos"), (KIND_KUBERNETES, "k8s")])
@pytest.mark.parametrize("stop", ["accept", "swap"])
def test_rollback_restores_the_config_of_either_contract(shape, machine_type, kind, prefix, stop, pki):
    """Forward to `stop`, then back, on a generated config: the node's CA fields end as they began, the old key with them."""
    original = MachineConfig.parse(SHAPES[shape](pki, machine_type).encode(), "node.yaml")
    before = original.get_ca(kind)
    config = MachineConfig.parse(original.to_bytes(), "node.yaml")
    control_plane = machine_type != "worker"
    old_crt, old_key = pki[prefix + "_old"]
    new_crt, new_key = pki[prefix + "_new"]
    old, new = _pki.fingerprint(old_crt), _pki.fingerprint(new_crt)
    certificates, keys = {old: old_crt, new: new_crt}, {old: old_key, new: new_key}
    for phase in rotation.PHASES[:rotation.PHASES.index(stop) + 1]:
        _apply(config, kind, *rotation.desired_state(phase, _node_cas(config.get_ca(kind)), old, new), certificates, keys, control_plane)
    assert rotation.progress(_node_cas(config.get_ca(kind)), old, new) == rotation.PHASE_REACHES[stop]
    for phase in rotation.ROLLBACK_PHASES:
        _apply(config, kind, *rotation.rollback_state(phase, _node_cas(config.get_ca(kind)), old, new), certificates, keys, control_plane)
        config = MachineConfig.parse(config.to_bytes(), "node.yaml")  # what the node would read back
    after = config.get_ca(kind)
    assert _node_cas(after) == _node_cas(before)
    assert (after.issuing_key is not None) == (before.issuing_key is not None)
    if before.issuing_key:
        assert _pki.fingerprint(after.issuing_crt) == old
        _pki.check_key_pair(after.issuing_crt, after.issuing_key, what="restored issuing CA")
    assert config.kubernetes_ca_location == original.kubernetes_ca_location
