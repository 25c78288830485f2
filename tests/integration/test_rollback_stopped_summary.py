"""A rollback that stops part way still prints its summary (the role's `always` section): which CA each node has, the
node that failed by inventory name, and that rerunning the rollback resumes it. The rerun then finishes the rollback."""

import os

from _playbook import run_playbook

ROLLBACK = {"rotate_ca_rollback": True, "rotate_ca_retry_deadline": 2.5}


def squeezed(output):
    return [" ".join(line.split()) for line in output.splitlines()]


def test_a_talos_rollback_that_stops_part_way_prints_where_each_node_stands(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=1, workers=2)
    rotation_dir = str(tmp_path / "rotation")
    forward = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_phases": ["accept", "swap"]})
    assert forward.returncode == 0, forward.output[-6000:]

    failing = cluster.workers[1]
    failing.fail_next_applies(10000)  # Unavailable on every apply, beyond the run's retry deadline
    stopped = run_playbook(cluster, rotation_dir, extra_vars=ROLLBACK)
    assert stopped.returncode != 0 and "PLAY RECAP" in stopped.output, stopped.output[-6000:]
    lines = squeezed(stopped.output)
    assert "Talos API CA rollback STOPPED in this run (2 of 3 nodes moved before the failure)" in stopped.output, \
        stopped.output[-6000:]
    # The swap back reached the control plane and the first worker; the second worker still issues with the new CA.
    assert "%s %s worker swapped -> swapped (unchanged) (FAILED)" % (failing.name, failing.address) in lines, stopped.output[-6000:]
    healthy = cluster.workers[0]
    assert "%s %s worker swapped -> accepted" % (healthy.name, healthy.address) in lines
    stand = next(line for line in lines if "where the nodes stand:" in line)
    assert "swapped (the new CA issues, the old one is still accepted): %s" % failing.name in stand, stand
    assert "rerun the same command: the rollback resumes from each node's live state" in stopped.output
    assert "Traceback" not in stopped.output
    assert os.path.isdir(os.path.join(rotation_dir, "talos"))  # not kept aside: the rollback is not done

    failing.clear_apply_failures()
    rerun = run_playbook(cluster, rotation_dir, extra_vars=ROLLBACK)
    assert rerun.returncode == 0, rerun.output[-6000:]
    assert "Talos API CA rotation rolled back" in rerun.output
    assert not os.path.exists(os.path.join(rotation_dir, "talos"))
