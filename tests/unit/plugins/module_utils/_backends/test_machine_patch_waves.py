"""talos_machine_patch's wave mode against a fake Talos API (no simulator): waves in order, the concurrency limit, a
failed wave naming every failed node and stopping there, the claim alone first, check mode as dry runs, audit entries."""

import asyncio
import json
import os

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._auth import AUTH_ARGUMENT_SPEC
from ansible_collections.talosops.pki.plugins.module_utils._backends import machine_patch
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError

from _fake_talos import FakeGuard, FakeTalos, FakeTarget, current_ca, make_rotation, reference_config  # pylint: disable=import-error

CONTROL_PLANES = ["10.5.0.2", "10.5.0.3", "10.5.0.4"]
WORKERS = ["10.5.0.%d" % last for last in range(10, 16)]
NAMES = {node: ("cp%d" % index if node in CONTROL_PLANES else "w%d" % index) for index, node in enumerate(CONTROL_PLANES + WORKERS, 1)}


def params(rotation, **overrides):
    values = {name: spec.get("default") for name, spec in machine_patch.ARGUMENT_SPEC.items()}
    values.update({name: spec.get("default") for name, spec in AUTH_ARGUMENT_SPEC.items()})
    values.update(phase="accept", rotation_dir=rotation.path, node_names=NAMES, claim_settle=0.01, claim_deadline=0.05)
    values.update(overrides)
    return values


@pytest.fixture(name="cluster")
def fixture_cluster(tmp_path, monkeypatch):
    """(fake client, rotation, guard): a v1.15 cluster of 3 control planes and 6 workers, a Talos CA rotation."""
    configs = {node: reference_config("v1.15", "controlplane") for node in CONTROL_PLANES}
    configs.update({node: reference_config("v1.15", "worker") for node in WORKERS})
    client = FakeTalos(configs)
    rotation = make_rotation(tmp_path, "v1.15", "talos")
    guard = FakeGuard()
    monkeypatch.setattr(machine_patch, "Target", lambda params, sealing=None: FakeTarget(client, current_ca("v1.15", "talos")))
    monkeypatch.setattr(machine_patch, "RunGuard", guard)
    return client, rotation, guard


def audit(rotation):
    if not os.path.exists(rotation.file(_rotation_store.AUDIT_LOG)):
        return []
    with open(rotation.file(_rotation_store.AUDIT_LOG), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle.read().splitlines()]


@pytest.mark.parametrize("nodes,wave_size,claim,expected", [
    (["a", "b", "c"], 0, False, [["a", "b", "c"]]),
    (["a", "b", "c"], 2, False, [["a", "b"], ["c"]]),
    (["a", "b", "c"], 5, False, [["a", "b", "c"]]),
    (["a", "b", "c"], 0, True, [["a"], ["b", "c"]]),
    (["a", "b", "c"], 1, True, [["a"], ["b"], ["c"]]),
    (["a"], 0, True, [["a"]]),
])
def test_waves_in_the_given_order(nodes, wave_size, claim, expected):
    assert machine_patch.waves_of(nodes, wave_size, claim) == expected


def test_workers_in_waves_of_two_one_client_one_guard(cluster):
    client, rotation, guard = cluster
    result = machine_patch.run(params(rotation, nodes=WORKERS, wave_size=2, machine_type="worker"))
    assert result["changed"] and result["changed_nodes"] == WORKERS and result["failed_nodes"] == []
    assert [entry["node"] for entry in result["nodes"]] == WORKERS
    assert [entry["name"] for entry in result["nodes"]] == [NAMES[node] for node in WORKERS]
    for entry in result["nodes"]:
        assert entry["progress_before"] == "pending" and entry["progress_after"] == "accepted"
        assert entry["finished"] >= entry["started"] and entry["seconds"] >= 0
    assert [wave["nodes"] for wave in result["waves"]] == [WORKERS[0:2], WORKERS[2:4], WORKERS[4:6]]
    # One wave at a time: the next starts after the last one finished.
    for earlier, later in zip(result["waves"], result["waves"][1:]):
        assert later["started"] >= earlier["finished"]
    assert client.opened == 1 and guard.entered == 1 and guard.checks == len(WORKERS)
    assert client.applies(dry_run=False) == WORKERS  # in order, wave by wave
    entries = audit(rotation)
    assert sorted(entry["node"] for entry in entries if entry["event"] == "node_patched") == sorted(WORKERS)
    waves = [entry for entry in entries if entry["event"] == "wave_patched"]
    assert [(wave["wave"], wave["nodes"], wave["changed_nodes"], wave["failed_nodes"]) for wave in waves] == [
        (1, WORKERS[0:2], WORKERS[0:2], []), (2, WORKERS[2:4], WORKERS[2:4], []), (3, WORKERS[4:6], WORKERS[4:6], [])]
    assert all(wave["ca"] == "talos" and wave["phase"] == "accept" and wave["machine_type"] == "worker" for wave in waves)
    # A rerun resumes from the live state: nothing left to change.
    lines = len(audit(rotation))
    again = machine_patch.run(params(rotation, nodes=WORKERS, wave_size=2))
    assert not again["changed"] and all(entry["progress_before"] == "accepted" for entry in again["nodes"])
    assert len(audit(rotation)) == lines  # a run that changes nothing adds no audit line


@pytest.mark.parametrize("concurrency", [1, 2, 4])
def test_concurrency_limit_is_respected(cluster, concurrency):
    client, rotation, _guard = cluster
    machine_patch.run(params(rotation, nodes=WORKERS, concurrency=concurrency))
    assert client.max_in_flight == concurrency  # six nodes in one wave: the limit is reached, never passed


def test_a_wave_where_two_nodes_fail_names_both_and_starts_no_next_wave(cluster):
    client, rotation, _guard = cluster
    client.failures = {WORKERS[1]: "connection refused", WORKERS[2]: "deadline exceeded"}
    result = machine_patch.run(params(rotation, nodes=WORKERS, wave_size=3))
    assert result["failed"] and result["failed_nodes"] == WORKERS[1:3]
    assert "w5 (10.5.0.11): 10.5.0.11: connection refused" in result["msg"]
    assert "w6 (10.5.0.12): 10.5.0.12: deadline exceeded" in result["msg"]
    assert "w7 (10.5.0.13)" in result["msg"] and "not patched" in result["msg"]  # the next wave: not started
    assert [entry["node"] for entry in result["nodes"]] == [WORKERS[0]]  # what did succeed is still reported
    assert set(client.applies()) == set(WORKERS[0:3])
    waves = [entry for entry in audit(rotation) if entry["event"] == "wave_patched"]
    assert len(waves) == 1 and waves[0]["failed_nodes"] == WORKERS[1:3] and waves[0]["changed_nodes"] == [WORKERS[0]]
    # The rerun, with the nodes answering again, resumes: the node done before is left alone.
    client.failures = {}
    again = machine_patch.run(params(rotation, nodes=WORKERS, wave_size=3))
    assert again["changed_nodes"] == WORKERS[1:]


def test_check_mode_is_dry_runs_only_and_writes_nothing(cluster):
    client, rotation, guard = cluster
    before = audit(rotation)
    result = machine_patch.run(params(rotation, nodes=CONTROL_PLANES, claim=True), check_mode=True, diff=True)
    assert result["changed"] and client.applies(dry_run=False) == [] and client.applies(dry_run=True) == CONTROL_PLANES
    assert all("Dry run summary" in entry["dry_run_summary"] for entry in result["nodes"])
    assert audit(rotation) == before and guard.entered == 0
    assert isinstance(result["diff"], list) and len(result["diff"]) == 3
    assert all("<redacted>" in json.dumps(diff["after"]) and "PRIVATE" not in json.dumps(diff) for diff in result["diff"])


def test_claim_patches_the_first_node_alone_first(cluster):
    client, rotation, _guard = cluster
    result = machine_patch.run(params(rotation, nodes=CONTROL_PLANES, claim=True, machine_type="controlplane"))
    assert [wave["nodes"] for wave in result["waves"]] == [CONTROL_PLANES[:1], CONTROL_PLANES[1:]]
    assert result["nodes"][0]["claim"]["node"] == CONTROL_PLANES[0] and "claim" not in result["nodes"][1]
    first_apply = client.calls.index(("apply", CONTROL_PLANES[0], False))
    assert not any(call == "apply" for call, _node, _dry in client.calls[:first_apply])
    assert result["waves"][1]["started"] >= result["nodes"][0]["finished"]


def test_wrong_machine_type_is_named_with_the_inventory_name(cluster):
    client, rotation, _guard = cluster
    result = machine_patch.run(params(rotation, nodes=CONTROL_PLANES[:1] + WORKERS[:1], machine_type="worker"))
    assert result["failed_nodes"] == CONTROL_PLANES[:1]
    assert "cp1 (10.5.0.2): 10.5.0.2 is a controlplane node" in result["msg"]
    assert client.applies() == WORKERS[:1]  # the rest of the wave still ran; no other wave was started


@pytest.mark.parametrize("overrides,match", [
    ({"nodes": []}, "nodes is empty"),
    ({"nodes": ["10.5.0.2", "10.5.0.2"]}, "10.5.0.2 more than once"),
    ({"nodes": ["10.5.0.2"], "node": "10.5.0.2"}, "exactly one of node"),
    ({"nodes": ["10.5.0.2"], "concurrency": 0}, "concurrency must be at least 1"),
    ({"nodes": ["10.5.0.2"], "wave_size": -1}, "wave_size must be 0"),
])
def test_bad_options_are_refused_before_any_call(cluster, overrides, match):
    client, rotation, _guard = cluster
    with pytest.raises(ConfigError, match=match):
        machine_patch.run(params(rotation, **overrides))
    assert client.calls == []


def test_single_node_mode_keeps_its_result(cluster):
    client, rotation, guard = cluster
    result = machine_patch.run(params(rotation, node=WORKERS[0]))
    assert result["node"] == WORKERS[0] and result["changed"] and "nodes" not in result and "name" not in result
    assert {"progress_before", "progress_after", "issuing_ca_fingerprint", "accepted_ca_fingerprints", "started", "finished",
            "apply_mode", "stray_ca_fingerprints"} <= set(result)
    assert guard.entered == 1 and client.applies() == WORKERS[:1]


def test_remove_before_swap_refuses_every_node_of_the_wave_by_name(cluster):
    client, rotation, _guard = cluster
    result = machine_patch.run(params(rotation, nodes=WORKERS[:2], phase="remove", wave_size=1))
    assert result["failed_nodes"] == WORKERS[:1] and "has not swapped to the new CA yet" in result["msg"]
    assert "w4 (10.5.0.10): " in result["msg"] and "not patched: w5 (10.5.0.11)" in result["msg"]
    assert client.applies() == []


def test_a_remove_that_would_lock_the_task_out_is_refused_on_every_node(cluster):
    client, rotation, _guard = cluster  # the task's client certificate is issued by the CA being replaced
    for phase in ("accept", "swap"):
        assert not machine_patch.run(params(rotation, nodes=WORKERS[:2], phase=phase)).get("failed")
    result = machine_patch.run(params(rotation, nodes=WORKERS[:2], phase="remove"))
    assert result["failed_nodes"] == WORKERS[:2] and result["msg"].count("would no longer trust the client certificate") == 2
    assert client.applies(dry_run=False) == WORKERS[:2] * 2  # accept and swap only


@pytest.mark.parametrize("shape", ["v1.13", "v1.15"])
def test_kubernetes_ca_waves_wait_for_every_kubelet(tmp_path, monkeypatch, shape):
    nodes = ["10.5.0.%d" % last for last in range(20, 24)]
    client = FakeTalos({node: reference_config(shape, "worker") for node in nodes})
    rotation = make_rotation(tmp_path, shape, "kubernetes")
    monkeypatch.setattr(machine_patch, "Target", lambda params, sealing=None: FakeTarget(client, current_ca(shape, "talos")))
    monkeypatch.setattr(machine_patch, "RunGuard", FakeGuard())
    result = machine_patch.run(params(rotation, ca="kubernetes", nodes=nodes, wait_kubelet=True, kubelet_timeout=10.0))
    assert result["changed_nodes"] == nodes
    assert all(entry["kubelet"]["restarted"] for entry in result["nodes"])
    # The watches were open together: the waits ran concurrently, not one node after the other.
    watches = [index for index, (call, _node, _dry) in enumerate(client.calls) if call == "watch_service"]
    first_apply = min(index for index, (call, _node, _dry) in enumerate(client.calls) if call == "apply")
    assert len(watches) == len(nodes) and max(watches) < first_apply


def test_service_account_waves_on_v115_control_planes(tmp_path, monkeypatch):
    client = FakeTalos({node: reference_config("v1.15", "controlplane") for node in CONTROL_PLANES})
    rotation = make_rotation(tmp_path, "v1.15", "service_account")
    monkeypatch.setattr(machine_patch, "Target", lambda params, sealing=None: FakeTarget(client, current_ca("v1.15", "talos")))
    monkeypatch.setattr(machine_patch, "RunGuard", FakeGuard())
    for phase in ("accept", "swap", "remove"):
        result = machine_patch.run(params(rotation, ca="service_account", nodes=CONTROL_PLANES, phase=phase), diff=True)
        assert result["changed_nodes"] == CONTROL_PLANES and {entry["progress_after"] for entry in result["nodes"]} == {
            {"accept": "accepted", "swap": "swapped", "remove": "removed"}[phase]}
        assert "PRIVATE" not in json.dumps(result)
    with pytest.raises(ConfigError, match="does not apply to ca=service_account"):
        machine_patch.run(params(rotation, ca="service_account", nodes=CONTROL_PLANES, phase="rollback_swap"))


def test_the_claim_settles_from_the_apply_so_a_kubelet_restart_counts_toward_it(monkeypatch):
    """The claim re-reads the node claim_settle after the apply; a kubelet restart waited for in between counts."""
    slept = []
    real_sleep = asyncio.sleep

    async def recording_sleep(seconds, *args, **kwargs):
        slept.append(seconds)
        await real_sleep(0)

    class Service:
        async def read(self, node):
            raise AssertionError("not reached")

    claim = machine_patch._Claim.__new__(machine_patch._Claim)
    claim.params, claim.node = {"claim_settle": 2.0, "claim_deadline": 5.0}, "10.5.0.2"

    async def first_sleep(applied_ago):
        monkeypatch.setattr(machine_patch.asyncio, "sleep", recording_sleep)
        loop = asyncio.get_running_loop()
        claim.service = Service()
        try:
            await claim.settle(applied_at=None if applied_ago is None else loop.time() - applied_ago)
        except AssertionError:
            pass
        return slept.pop()

    assert asyncio.run(first_sleep(None)) == 2.0  # no apply time known: the whole settle
    assert asyncio.run(first_sleep(3.0)) == 0.0  # a 3 s kubelet restart since the apply: read at once
    assert 1.4 <= asyncio.run(first_sleep(0.5)) <= 1.5  # the rest of the 2 s
