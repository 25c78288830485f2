"""The node service (_node_service) against a fake Talos API, table style: every phase on every node shape (Talos v1.13
legacy fields and v1.15 documents, control plane and worker, each kind of CA and the service-account keys), resume from
each progress, the refusals (remove before swap, lockout, wrong machine type, shapes that cannot rotate), dry runs, the
kubelet wait. No simulator: the fake parses every config it is sent and keeps it, as a node does."""

import asyncio

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _node_service, _pki, _rotation
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, RotationStateError
from ansible_collections.talosops.pki.plugins.module_utils._node_service import NodeService, plan

from _fake_talos import FakeTalos, current_ca, make_rotation, reference_config  # pylint: disable=import-error

NODE = "10.5.0.2"
SA = _pki.KIND_SERVICE_ACCOUNT

# (shape, machine type, kind): what each node shape carries. A v1.15 worker holds the Kubernetes CA as an accepted list
# only (no issuing field); the aggregator CA and the service-account keys are v1.14+ control-plane documents.
ROTATABLE = [
    ("v1.13", "controlplane", "talos"), ("v1.13", "worker", "talos"),
    ("v1.13", "controlplane", "kubernetes"), ("v1.13", "worker", "kubernetes"),
    ("v1.15", "controlplane", "talos"), ("v1.15", "worker", "talos"),
    ("v1.15", "controlplane", "kubernetes"), ("v1.15", "worker", "kubernetes"),
    ("v1.15", "controlplane", "aggregator"), ("v1.15", "controlplane", SA),
]
REFUSED = [
    ("v1.13", "controlplane", "aggregator", ConfigError, "Upgrade"),
    ("v1.15", "worker", "aggregator", ConfigError, "has no KubeAggregatorCAConfig document"),
    ("v1.13", "controlplane", SA, RotationStateError, "v1.13 or older"),
    ("v1.13", "worker", SA, RotationStateError, "is a worker"),
    ("v1.15", "worker", SA, RotationStateError, "is a worker"),
]


def run(coroutine):
    return asyncio.run(coroutine)


def one_node(shape, machine_type, **options):
    return FakeTalos({NODE: reference_config(shape, machine_type)}, delay=0, **options)


async def step(service, rotation, kind, phase, **options):
    """read -> plan -> apply (when it changes something): the Plan, and the state read back afterwards."""
    state = await service.read(NODE)
    target = plan(state, kind, rotation, phase, **options)
    if target.changed:
        await service.apply(state, target)
    return target, await service.read(NODE)


@pytest.mark.parametrize("shape,machine_type,kind", ROTATABLE)
def test_every_phase_on_every_shape(tmp_path, shape, machine_type, kind):
    client, rotation = one_node(shape, machine_type), make_rotation(tmp_path, shape, kind)
    old, new = rotation.previous_ca_fingerprint, rotation.ca_fingerprint
    service = NodeService(client)
    no_issuing = machine_type == "worker" and shape == "v1.15" and kind == "kubernetes"

    async def scenario():
        states = {}
        for phase, reached in (("accept", "accepted"), ("swap", "swapped"), ("remove", "removed")):
            target, after = await step(service, rotation, kind, phase)
            assert target.changed and target.progress_after == reached, phase
            assert after.progress(kind, rotation) == reached, phase
            again, _state = await step(service, rotation, kind, phase)  # a rerun resumes: nothing left to change
            assert not again.changed and again.progress_before == reached
            states[phase] = after.ca(kind)
        return states
    states = run(scenario())
    assert states["accept"].cas == (None if no_issuing else old, ((old,) if no_issuing else ()) + (new,))
    assert states["swap"].cas == (None if no_issuing else new, ((new,) if no_issuing else ()) + (old,))
    assert states["remove"].cas == (None if no_issuing else new, (new,) if no_issuing else ())
    # Key policy: the new key on control planes from the swap on; a worker never gets one.
    if kind == SA:
        assert states["swap"].fields.signing_key == rotation.signing_key()
    elif machine_type == "controlplane":
        assert states["swap"].fields.issuing_key == rotation.ca().key
    else:
        assert not states["swap"].fields.issuing_key
    # Every call was a read or a real apply, one apply per phase.
    assert client.applies(dry_run=False) == [NODE] * 3 and client.applies(dry_run=True) == []


@pytest.mark.parametrize("shape,machine_type,kind,error,match", REFUSED)
def test_shapes_that_cannot_rotate_are_refused_before_any_apply(tmp_path, shape, machine_type, kind, error, match):
    client = one_node(shape, machine_type)
    rotation_shape = "v1.15" if kind in (SA, "aggregator") else shape
    rotation = make_rotation(tmp_path, rotation_shape, kind)

    async def scenario():
        state = await NodeService(client).read(NODE)
        plan(state, kind, rotation, "accept")
    with pytest.raises(error, match=match):
        run(scenario())
    assert client.applies() == []


# From each progress, each phase: where the node ends, or the refusal (None: refused, nothing applied).
RESUME = {
    "pending": {"accept": "accepted", "swap": "swapped", "remove": None},
    "accepted": {"accept": "accepted", "swap": "swapped", "remove": None},
    "swapped": {"accept": "swapped", "swap": "swapped", "remove": "removed"},
    "removed": {"accept": "removed", "swap": "removed", "remove": "removed"},
}
REACH = {"pending": (), "accepted": ("accept",), "swapped": ("accept", "swap"), "removed": ("accept", "swap", "remove")}


@pytest.mark.parametrize("shape", ["v1.13", "v1.15"])
@pytest.mark.parametrize("start", list(RESUME))
@pytest.mark.parametrize("phase", ["accept", "swap", "remove"])
def test_resume_from_each_progress(tmp_path, shape, start, phase):
    client, rotation = one_node(shape, "worker"), make_rotation(tmp_path, shape, "kubernetes")
    service = NodeService(client)

    async def scenario():
        for earlier in REACH[start]:
            await step(service, rotation, "kubernetes", earlier)
        applied = len(client.applies())
        state = await service.read(NODE)
        assert state.progress("kubernetes", rotation) == start
        expected = RESUME[start][phase]
        if expected is None:
            with pytest.raises(RotationStateError, match="has not swapped to the new CA yet"):
                plan(state, "kubernetes", rotation, phase)
            return
        target, after = await step(service, rotation, "kubernetes", phase)
        assert after.progress("kubernetes", rotation) == expected
        assert target.changed == (expected != start)
        assert len(client.applies()) == applied + (1 if target.changed else 0)
    run(scenario())


def test_a_dry_run_sends_only_dry_runs_and_previews_later_phases(tmp_path):
    client, rotation = one_node("v1.15", "controlplane"), make_rotation(tmp_path, "v1.15", "talos")
    before = client.configs[NODE]

    async def scenario():
        service = NodeService(client, dry_run=True)
        state = await service.read(NODE)
        target = plan(state, "talos", rotation, "remove", preview=True)  # check mode: as if accept and swap had run
        assert target.progress_before == "pending" and target.progress_after == "removed"
        return await service.apply(state, target, wait_kubelet=True)
    applied, kubelet = run(scenario())
    assert client.applies(dry_run=True) == [NODE] and client.applies(dry_run=False) == []
    assert client.configs[NODE] == before and kubelet is None and "Dry run" in applied["mode_details"]


def test_the_run_guard_is_asked_before_every_apply(tmp_path):
    client, rotation = one_node("v1.15", "worker"), make_rotation(tmp_path, "v1.15", "talos")
    asked = []
    service = NodeService(client, guard=lambda: asked.append(len(client.applies())))
    run(step(service, rotation, "talos", "accept"))
    assert asked == [0] and client.applies() == [NODE]


@pytest.mark.parametrize("shape,machine_type", [("v1.13", "controlplane"), ("v1.15", "controlplane"), ("v1.15", "worker")])
def test_the_kubelet_restart_is_waited_for_on_a_kubernetes_ca_change(tmp_path, shape, machine_type):
    client, rotation = one_node(shape, machine_type), make_rotation(tmp_path, shape, "kubernetes")

    async def scenario():
        service = NodeService(client, kubelet_timeout=5.0)
        state = await service.read(NODE)
        return await service.apply(state, plan(state, "kubernetes", rotation, "accept"), wait_kubelet=True)
    _applied, kubelet = run(scenario())
    assert kubelet["restarted"] and kubelet["transitions"][-1] == "running and healthy"
    assert ("watch_service", NODE, False) in client.calls


def test_a_talos_ca_change_waits_for_no_kubelet(tmp_path):
    client, rotation = one_node("v1.15", "worker"), make_rotation(tmp_path, "v1.15", "talos")

    async def scenario():
        service = NodeService(client)
        state = await service.read(NODE)
        return await service.apply(state, plan(state, "talos", rotation, "accept"), wait_kubelet=True)
    assert run(scenario())[1] is None and all(call != "watch_service" for call, _node, _dry in client.calls)


@pytest.mark.parametrize("actual,expected,refused", [
    ("controlplane", "controlplane", False), ("init", "controlplane", False), ("worker", "worker", False),
    ("controlplane", "worker", True), ("worker", "controlplane", True), ("init", "worker", True), ("worker", None, False),
])
def test_machine_type_check(actual, expected, refused):
    if refused:
        with pytest.raises(RotationStateError, match="inventory lists it as %s" % expected):
            _node_service.check_machine_type(NODE, actual, expected)
    else:
        _node_service.check_machine_type(NODE, actual, expected)


@pytest.mark.parametrize("phase,locked_out", [("accept", False), ("swap", False), ("remove", True)])
def test_lockout_guard_with_a_client_certificate_of_the_old_ca(tmp_path, phase, locked_out):
    client, rotation = one_node("v1.15", "controlplane"), make_rotation(tmp_path, "v1.15", "talos")
    client_crt = _pki.issue_client_certificate(current_ca("v1.15", "talos")).crt

    async def scenario():
        service = NodeService(client)
        for earlier in ("accept", "swap")[:("accept", "swap", "remove").index(phase)]:
            await step(service, rotation, "talos", earlier)
        return plan(await service.read(NODE), "talos", rotation, phase)
    target = run(scenario())
    if locked_out:
        with pytest.raises(RotationStateError, match="would no longer trust the client certificate"):
            _node_service.refuse_lockout(NODE, client_crt, target.desired)
    else:
        _node_service.refuse_lockout(NODE, client_crt, target.desired)


def test_rollback_phases_take_a_swapped_control_plane_back_with_the_previous_key(tmp_path):
    client, rotation = one_node("v1.13", "controlplane"), make_rotation(tmp_path, "v1.13", "talos")
    service = NodeService(client)

    async def scenario():
        for phase in ("accept", "swap", "rollback_swap", "rollback_accept"):
            _target, after = await step(service, rotation, "talos", phase)
        return after
    after = run(scenario())
    assert after.ca("talos").cas == (rotation.previous_ca_fingerprint, ())
    assert after.ca("talos").fields.issuing_key == rotation.previous_ca().key
    with pytest.raises(ConfigError, match="does not apply to ca=service_account"):
        plan(run(service.read(NODE)), SA, rotation, "rollback_swap")


def test_one_read_parses_and_fingerprints_once_per_kind(tmp_path, monkeypatch):
    client = one_node("v1.15", "controlplane")
    counted = []
    real = _pki.fingerprint
    monkeypatch.setattr(_pki, "fingerprint", lambda crt: counted.append(1) or real(crt))
    state = run(NodeService(client).read(NODE))
    first = state.ca("kubernetes")
    calls = len(counted)
    assert state.ca("kubernetes") is first and len(counted) == calls  # cached: no second fingerprint
    assert [call for call, _node, _dry in client.calls] == ["machine_config"]
    assert _rotation.progress(first.cas, first.cas.issuing, "ff" * 32) == "pending"
