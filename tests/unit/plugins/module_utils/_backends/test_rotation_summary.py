"""talos_rotation_summary's backend, table style, over audit logs written by hand: each outcome's headline, state, next step,
node rows and waves, no simulator. Only the entries since the run started count; check mode projects the preflight's
reading of the nodes through the phases."""

import base64
import json
import time

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _files, _pki, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._backends import rotation_summary
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, TalosPKIError

CP, W1, W2 = "10.5.0.2", "10.5.0.5", "10.5.0.6"
NAMES = {CP: "cp-1", W1: "w-1", W2: "w-2"}
# This run took its lock at T; an earlier run's entries are older.
T = 1_800_000_000.0
SINCE = "2027-01-15T08:00:00Z"
assert _rotation_store.parse_time(SINCE) == T


@pytest.fixture(name="rotation_dir")
def fixture_rotation_dir(tmp_path):
    path = str(tmp_path / "rotation" / "talos")
    _rotation_store.create(path, "talos", _pki.generate_ca("talos").crt, _pki.generate_ca("talos"))
    return path


def stamp(epoch):
    return "%s.%06dZ" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(epoch))), round((epoch - int(epoch)) * 1e6))


def moved(node, phase, before, after, at, seconds=0.5):
    """A node_patched entry, written `at` seconds after the run started (negative: by an earlier run)."""
    return {"event": "node_patched", "time": stamp(T + at), "kind": "talos", "node": node, "phase": phase,
            "progress_before": before, "progress_after": after, "seconds": seconds}


def wave(phase, tier, number, nodes, changed, started, finished, failed=()):
    return {"event": "wave_patched", "time": stamp(T + finished), "kind": "talos", "ca": "talos", "phase": phase,
            "machine_type": tier, "wave": number, "nodes": nodes, "changed_nodes": changed, "failed_nodes": list(failed),
            "started": T + started, "finished": T + finished, "seconds": finished - started}


def write_log(rotation_dir, entries):
    with open(_rotation_store.load(rotation_dir).file(_rotation_store.AUDIT_LOG), "a", encoding="utf-8") as handle:
        for entry in entries:
            handle.write(json.dumps(entry) + "\n")


def preflight(rotation_dir, progress):
    """talos_cluster_info's nodes as the preflight read them: each node's CA fields at `progress` of this rotation."""
    rotation = _rotation_store.load(rotation_dir)
    old, new = rotation.previous_ca_fingerprint, rotation.ca_fingerprint
    fields = {"pending": (old, [old]), "accepted": (old, [old, new]), "swapped": (new, [old]), "removed": (new, [])}
    nodes = {}
    for node in NAMES:
        issuing, accepted = fields[progress[node] if isinstance(progress, dict) else progress]
        nodes[node] = {"talos": {"issuing_ca": issuing, "accepted_cas": accepted}}
    return nodes


def params(rotation_dir, **overrides):
    values = {name: spec.get("default") for name, spec in rotation_summary.ARGUMENT_SPEC.items()}
    values.update(kind="talos", rotation_dir=rotation_dir, controlplanes=[CP], workers=[W1, W2], node_names=NAMES,
                  phases=["accept"], since=SINCE)
    values.update(overrides)
    return values


ACCEPT_WAVES = [moved(CP, "accept", "pending", "accepted", 1.0), wave("accept", "controlplane", 1, [CP], [CP], 0.5, 1.0),
                moved(W1, "accept", "pending", "accepted", 2.5), moved(W2, "accept", "pending", "accepted", 2.4),
                wave("accept", "worker", 1, [W1, W2], [W1, W2], 1.5, 2.5)]
EARLIER_RUN = [dict(entry, time=stamp(T - 600 + index)) for index, entry in enumerate(ACCEPT_WAVES)]
REST_PHASES = (("swap", "accepted", "swapped", 3.0), ("remove", "swapped", "removed", 6.0))
REST = [moved(node, phase, before, after, at) for phase, before, after, base in REST_PHASES
        for node, at in ((CP, base), (W1, base + 1), (W2, base + 1))]
ROLLED_BACK = [moved(node, phase, before, after, at) for phase, before, after, at in (
    ("rollback_swap", "swapped", "accepted", 1.0), ("rollback_accept", "accepted", "pending", 2.0)) for node in NAMES]
# A worker refused every apply: its wave failed, the other worker of the wave moved.
FAILED_WAVE = [moved(CP, "accept", "pending", "accepted", 1.0), wave("accept", "controlplane", 1, [CP], [CP], 0.5, 1.0),
               moved(W1, "accept", "pending", "accepted", 2.5), wave("accept", "worker", 1, [W1, W2], [W1], 1.5, 4.0, failed=[W2])]
# A rerun of a completed rotation: its waves found every node done.
NOTHING_DONE = [wave(phase, tier, 1, nodes, [], 0.1, 0.2) for phase in ("accept", "swap", "remove")
                for tier, nodes in (("controlplane", [CP]), ("worker", [W1, W2]))]
ALL = ["accept", "swap", "remove"]

OUTCOMES = {
    # id: (audit entries, overrides, preflight progress, check_mode, headline, state, next step starts with, rows as "before after")
    "accept only": (ACCEPT_WAVES, {}, "pending", False, "Talos API CA rotation: accept phase done",
                    "every node accepts the new CA; the old CA still issues", "run the swap phase", ["pending accepted"] * 3),
    "the rest after an accept run": (EARLIER_RUN + REST, dict(phases=["swap", "remove"]), "accepted", False,
                                     "Talos API CA rotated: swap, remove phases done",
                                     "rotation complete: every node trusts the new CA only", "hand out talosconfigs",
                                     ["accepted removed"] * 3),
    "rerun that changed nothing": (EARLIER_RUN + [dict(entry, time=stamp(T - 300)) for entry in REST] + NOTHING_DONE,
                                   dict(phases=ALL), "removed", False, "Talos API CA rotation: nothing to do: the rotation in ",
                                   "rotation complete: every node trusts the new CA only", None, ["removed removed"] * 3),
    "failed run (the always section)": (FAILED_WAVE, dict(failed=True, phases=ALL), "pending", False,
                                        "Talos API CA rotation STOPPED in this run (2 of 3 nodes moved before the failure)",
                                        "nodes part way: accepted on 2, pending on 1", "fix the cause reported above",
                                        ["pending accepted", "pending accepted", "pending pending"]),
    "an older version's log (no waves)": ([entry for entry in ACCEPT_WAVES if entry["event"] == "node_patched"], {}, "pending",
                                          False, "Talos API CA rotation: accept phase done",
                                          "every node accepts the new CA; the old CA still issues", "run the swap phase",
                                          ["pending accepted"] * 3),
    "check mode projects the preflight": ([], dict(phases=ALL, throwaway=True), "pending", True,
                                          "Talos API CA rotation, check mode: nothing was changed; 3 of 3 nodes would move",
                                          "would be: rotation complete: every node trusts the new CA only",
                                          "run the same command without --check", ["pending removed"] * 3),
    "check mode, part way": ([], dict(phases=["swap"]), {CP: "swapped", W1: "accepted", W2: "accepted"}, True,
                             "Talos API CA rotation, check mode: nothing was changed; 2 of 3 nodes would move",
                             "would be: every node issues with the new CA and still accepts the old one",
                             "run the same command without --check", ["swapped swapped", "accepted swapped", "accepted swapped"]),
    "check mode, nothing to do": (ACCEPT_WAVES, dict(phases=ALL), "removed", True,
                                  "Talos API CA rotation, check mode: nothing was changed; no node would change",
                                  "would be: rotation complete: every node trusts the new CA only", None, ["removed removed"] * 3),
    "caller's state": (ACCEPT_WAVES, dict(state="rolled back", next_step="start again"), "pending", False,
                       "Talos API CA rotation: accept phase done", "rolled back", "start again", ["pending accepted"] * 3),
    "rollback": (ROLLED_BACK, dict(rollback=True, phases=["rollback_swap", "rollback_accept"]), "swapped", False,
                 "Talos API CA rotation rolled back", "rolled back: every node is on the old CA alone, the new CA is accepted nowhere",
                 "to rotate this CA later", ["swapped pending"] * 3),
    "rollback, stopped": ([moved(CP, "rollback_swap", "swapped", "accepted", 1.0)],
                          dict(rollback=True, failed=True, phases=["rollback_swap", "rollback_accept"]), "swapped", False,
                          "Talos API CA rollback STOPPED in this run (1 of 3 nodes moved before the failure)",
                          "nodes part way: accepted on 1, swapped on 2", "fix the cause reported above",
                          ["swapped accepted", "swapped swapped", "swapped swapped"]),
    "rollback, check mode": ([], dict(rollback=True, phases=["rollback_swap", "rollback_accept"]),
                             {CP: "swapped", W1: "accepted", W2: "pending"}, True,
                             "Talos API CA rollback, check mode: nothing was changed; 2 of 3 nodes would move",
                             "would be: rolled back: every node is on the old CA alone, the new CA is accepted nowhere",
                             "run the same command without --check", ["swapped pending", "accepted pending", "pending pending"]),
}


def rows(lines, names=None):
    """The node rows (of the nodes in `names`, default NAMES) as 'before after', arrows and markers dropped."""
    found = []
    for line in lines:
        words = line.split()
        if words and words[0] in (names or NAMES).values():
            found.append(" ".join(word for word in words[3:] if word not in ("->", "would", "be", "(unchanged)", "(FAILED)")))
    return found


@pytest.mark.parametrize("outcome", OUTCOMES, ids=list(OUTCOMES))
def test_each_outcome_has_a_truthful_headline_state_next_step_and_rows(rotation_dir, outcome):
    entries, overrides, progress, check_mode, headline, state, next_step, expected_rows = OUTCOMES[outcome]
    write_log(rotation_dir, entries)
    result = rotation_summary.run(params(rotation_dir, preflight_nodes=preflight(rotation_dir, progress), **overrides),
                                  check_mode=check_mode)
    summary = result["summary"]
    assert not result["changed"]
    assert summary["headline"].startswith(headline), summary["headline"]
    assert summary["state"] == state
    if next_step is None:
        assert summary["next_step"] is None
    else:
        assert summary["next_step"].startswith(next_step), summary["next_step"]
    assert result["lines"][0] == summary["headline"] and result["lines"][1] == "state: " + state
    assert rows(result["lines"]) == expected_rows, result["lines"]


def test_seconds_per_wave_and_per_phase_come_from_the_wave_entries(rotation_dir):
    write_log(rotation_dir, EARLIER_RUN + ACCEPT_WAVES)
    result = rotation_summary.run(params(rotation_dir, preflight_nodes=preflight(rotation_dir, "pending")))
    summary = result["summary"]
    # First wave's start to the last one's end; the earlier run's waves do not count.
    assert summary["phase_seconds"] == {"accept": 2.0}
    assert [(wave["machine_type"], wave["nodes"], wave["seconds"]) for wave in summary["waves"]] == [
        ("controlplane", [CP], 0.5), ("worker", [W1, W2], 1.0)]
    assert "accept waves: controlplane 1: 1 node, 1 moved, 0.5 s; worker 1: 2 nodes, 2 moved, 1.0 s" in result["lines"]
    assert [row["phases"] for row in summary["nodes"]] == [["accept"]] * 3


def test_without_wave_entries_each_phase_and_tier_is_one_wave_of_its_changed_nodes(rotation_dir):
    write_log(rotation_dir, [entry for entry in ACCEPT_WAVES if entry["event"] == "node_patched"])
    summary = rotation_summary.run(params(rotation_dir))["summary"]
    # The control plane ran 0.5 s to +1.0; the workers 0.5 s each, ending at +2.4 and +2.5.
    assert [(wave["machine_type"], wave["changed_nodes"], round(wave["seconds"], 3)) for wave in summary["waves"]] == [
        ("controlplane", [CP], 0.5), ("worker", [W1, W2], 0.6)]
    assert summary["phase_seconds"] == {"accept": 2.0}


def test_a_failed_wave_names_the_node_that_failed(rotation_dir):
    write_log(rotation_dir, FAILED_WAVE)
    result = rotation_summary.run(params(rotation_dir, failed=True))
    assert "w-2 10.5.0.6 worker pending -> pending (unchanged) (FAILED)" in [" ".join(line.split()) for line in result["lines"]]
    assert "accept waves: controlplane 1: 1 node, 1 moved, 0.5 s; worker 1: 2 nodes, 1 moved, 2.5 s, FAILED: w-2 (10.5.0.6)" \
        in result["lines"]


def test_a_rerun_that_changed_nothing_shows_no_seconds(rotation_dir):
    write_log(rotation_dir, EARLIER_RUN + NOTHING_DONE)
    result = rotation_summary.run(params(rotation_dir, phases=ALL, preflight_nodes=preflight(rotation_dir, "removed")))
    assert "rotate_ca_start_new=true" in result["summary"]["headline"] and result["summary"]["phase_seconds"] == {}
    assert not [line for line in result["lines"] if "seconds" in line or "waves" in line], result["lines"]
    assert len(result["summary"]["waves"]) == 6  # still in the data


def test_without_since_the_whole_log_counts(rotation_dir):
    write_log(rotation_dir, EARLIER_RUN)
    summary = rotation_summary.run(params(rotation_dir, since=None, preflight_nodes=preflight(rotation_dir, "accepted")))["summary"]
    assert [(row["before"], row["after"]) for row in summary["nodes"]] == [("pending", "accepted")] * 3
    with_since = rotation_summary.run(params(rotation_dir, preflight_nodes=preflight(rotation_dir, "accepted")))["summary"]
    assert [(row["before"], row["after"]) for row in with_since["nodes"]] == [("accepted", "accepted")] * 3


def test_check_mode_reads_no_log_and_shows_no_throwaway_folder(rotation_dir):
    write_log(rotation_dir, ACCEPT_WAVES)  # a check run writes nothing: entries there are another run's
    result = rotation_summary.run(params(rotation_dir, throwaway=True, preflight_nodes=preflight(rotation_dir, "removed")),
                                  check_mode=True)
    assert rows(result["lines"]) == ["removed removed"] * 3 and result["summary"]["waves"] == []
    lines = rotation_summary.run(params(rotation_dir, throwaway=True, preflight_nodes=preflight(rotation_dir, "pending")),
                                 check_mode=True)["lines"]
    assert "cp-1 10.5.0.2 controlplane pending would be accepted" in [" ".join(line.split()) for line in lines]
    assert not [line for line in lines if rotation_dir in line or "audit" in line]


def test_sealed_audit_lines_are_read_with_the_vault_secret(rotation_dir):
    def seal(data):
        return b"$ANSIBLE_VAULT;1.1;AES256\n" + base64.b64encode(data)

    def unseal(data):
        return base64.b64decode(data.split(b"\n", 1)[1])

    sealing = _files.Sealing(rotation_dir, seal, unseal)
    _rotation_store.load(rotation_dir, sealing=sealing).record("node_patched", node=CP, phase="accept", progress_before="pending",
                                                               progress_after="accepted", seconds=0.2)
    summary = rotation_summary.run(params(rotation_dir, since=None), sealing=sealing)["summary"]
    with open(_rotation_store.load(rotation_dir).file(_rotation_store.AUDIT_LOG), encoding="utf-8") as handle:
        assert "node_patched" not in handle.read()  # sealed on disk
    assert [(row["before"], row["after"]) for row in summary["nodes"]][0] == ("pending", "accepted")


def test_a_rollback_reads_the_folder_it_was_moved_to(rotation_dir):
    write_log(rotation_dir, [moved(CP, "rollback_swap", "swapped", "accepted", 1.0)])
    kept = _rotation_store.mark_rolled_back(rotation_dir)
    result = rotation_summary.run(params(rotation_dir, rollback=True, rolled_back_to=kept, phases=["rollback_swap"],
                                         preflight_nodes=preflight(kept, "accepted")))
    assert "rotation folder kept as %s (audit log inside)" % kept in result["lines"]
    assert [line for line in result["lines"] if line.startswith("old CA ") and "issues again" in line]


def test_the_admin_talosconfig_s_expiry_is_shown(rotation_dir, tmp_path):
    store = _rotation_store.load(rotation_dir, kind="talos")
    client = _pki.issue_client_certificate(store.ca())
    path = tmp_path / "talosconfig"
    path.write_text("context: prod\ncontexts:\n  prod:\n    endpoints: [10.5.0.2]\n    ca: %s\n    crt: %s\n    key: %s\n" % tuple(
        base64.b64encode(pem).decode() for pem in (store.ca().crt, client.crt, client.key)))
    write_log(rotation_dir, REST)
    result = rotation_summary.run(params(rotation_dir, phases=["swap", "remove"],
                                         talosconfig={"path": str(path), "context": "prod", "changed": True}))
    expires = _pki.describe_certificate(client.crt)["not_after"]
    assert "talosconfig %s: updated; client certificate expires %s" % (path, expires) in result["lines"]
    assert "BEGIN" not in repr(result)


@pytest.mark.parametrize("overrides, message", [
    (dict(phases=["rollback_swap"]), "phases rollback_swap: a rotation has the phases accept, swap, remove"),
    (dict(phases=["accept"], rollback=True), "phases accept: a rollback has the phases rollback_swap, rollback_accept"),
    (dict(since="yesterday"), "'yesterday' is not a time"),
])
def test_bad_options_are_clear_errors(rotation_dir, overrides, message):
    with pytest.raises(ConfigError, match=message):
        rotation_summary.run(params(rotation_dir, **overrides))


def test_a_folder_without_a_rotation_is_an_error(tmp_path):
    with pytest.raises(TalosPKIError, match="no talos CA rotation in"):
        rotation_summary.run(params(str(tmp_path / "none")))
