"""The end-of-run summary of the rotate_ca role for each outcome: partial phases, the rest of the rotation, a no-op rerun,
an accept-only run on a completed rotation, check mode and a failure. Each tells the state reached and the next step,
with one row per node (inventory name, address, before -> after)."""

import re

import pytest

from _playbook import run_playbook


def summary(run):
    """The summary's lines as the summary task printed them: plain lines between its banner and its ok line."""
    shown = re.findall(r"^TASK \[talosops.pki.rotate_ca : Summary \| per node, the state reached and the next step\] \**\n"
                       r"(.*?)\nok: \[[^\]]+\]\n", run.output, re.MULTILINE | re.DOTALL)
    assert len(shown) == 1, run.output[-6000:]
    return shown[0].splitlines()


def row(lines, node):
    found = [line for line in lines if re.match(r"%s\s+%s\s" % (re.escape(node.name), re.escape(node.address)), line)]
    assert len(found) == 1, "\n".join(lines)
    return " ".join(found[0].split())


@pytest.fixture(name="cluster")
def fixture_cluster(make_sim_cluster):
    return make_sim_cluster(controlplanes=2, workers=2)


def test_summaries_of_partial_phases_the_rest_and_a_rerun(cluster, tmp_path):
    rotation_dir = str(tmp_path / "rotation")

    check = run_playbook(cluster, rotation_dir, "--check")
    assert check.returncode == 0, check.output[-6000:]
    lines = summary(check)
    assert lines[0] == "Talos API CA rotation, check mode: nothing was changed; 4 of 4 nodes would move", lines
    assert "state: would be: rotation complete: every node trusts the new CA only" in lines
    assert "next: run the same command without --check to make these changes" in lines
    for node in cluster.nodes:
        assert row(lines, node) == "%s %s %s pending would be removed" % (node.name, node.address, node.machine_type)
    # The throwaway folder of check mode is deleted: never shown, and its bookkeeping is not a change.
    assert not [line for line in lines if "rotation folder" in line or "audit" in line], lines
    # What would change is each phase's two wave tasks (control planes, workers), and the talosconfig written at the end:
    # nothing else. Every task runs once, on the play's first host; every node keeps its host in the recap.
    assert {host: counts["changed"] for host, counts in check.recap.items()} == dict(
        {node.name: 0 for node in cluster.nodes}, **{cluster.controlplanes[0].name: 7}), check.recap

    accept = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_phases": ["accept"]})
    assert accept.returncode == 0, accept.output[-6000:]
    lines = summary(accept)
    assert lines[0] == "Talos API CA rotation: accept phase done"
    assert lines[1] == "state: every node accepts the new CA; the old CA still issues"
    assert lines[2] == "next: run the swap phase (rotate_ca_phases: [swap] or [swap, remove])"
    for node in cluster.nodes:
        assert row(lines, node) == "%s %s %s pending -> accepted" % (node.name, node.address, node.machine_type)
    assert [line for line in lines if line.startswith("wall seconds per phase: accept ")]
    assert not [line for line in lines if line.startswith("talosconfig")], "the talosconfig is written by the remove run"

    rest = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_phases": ["swap", "remove"]})
    assert rest.returncode == 0, rest.output[-6000:]
    lines = summary(rest)
    assert lines[0] == "Talos API CA rotated: swap, remove phases done"
    assert lines[1] == "state: rotation complete: every node trusts the new CA only"
    assert lines[2].startswith("next: hand out talosconfigs") and rotation_dir in lines[2] and "protect or archive" in lines[2]
    for node in cluster.nodes:
        assert row(lines, node) == "%s %s %s accepted -> removed" % (node.name, node.address, node.machine_type)
    assert [line for line in lines if re.match(r"talosconfig %s: updated; client certificate expires \d{4}-"
                                               % re.escape(cluster.talosconfig_path), line)], lines
    assert "rotation folder: %s/talos; audit log: %s/talos/audit.jsonl" % (rotation_dir, rotation_dir) in lines

    again = run_playbook(cluster, rotation_dir)
    assert again.returncode == 0, again.output[-6000:]
    lines = summary(again)
    assert lines[0].startswith("Talos API CA rotation: nothing to do: the rotation in %s is already complete" % rotation_dir)
    assert "rotate_ca_start_new=true" in lines[0]
    assert not [line for line in lines if line.startswith("next:") or line.startswith("wall seconds")], lines
    for node in cluster.nodes:
        assert row(lines, node) == "%s %s %s removed -> removed (unchanged)" % (node.name, node.address, node.machine_type)

    accept_again = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_phases": ["accept"]})
    assert accept_again.returncode == 0, accept_again.output[-6000:]
    assert "rotate_ca_start_new=true" in summary(accept_again)[0]


def test_a_run_that_stops_says_where_each_node_stands_and_how_to_resume(cluster, tmp_path):
    rotation_dir = str(tmp_path / "rotation")
    failing = cluster.workers[-1]
    failing.fail_next_applies(10000)  # refused on every apply: the accept phase stops on this worker
    stopped = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_retry_deadline": 0})
    assert stopped.returncode != 0 and "PLAY RECAP" in stopped.output
    lines = summary(stopped)
    moved = len(cluster.nodes) - 1
    assert lines[0] == "Talos API CA rotation STOPPED in this run (%d of %d nodes moved before the failure)" % (moved, len(cluster.nodes))
    assert lines[1] == "state: nodes part way: accepted on %d, pending on 1" % moved
    assert lines[2].startswith("next: fix the cause reported above, then rerun the same command")
    for node in cluster.nodes:
        # The failed wave's audit entry names the node that failed: the summary marks it.
        after = "pending (unchanged) (FAILED)" if node is failing else "accepted"
        assert row(lines, node) == "%s %s %s pending -> %s" % (node.name, node.address, node.machine_type, after)
