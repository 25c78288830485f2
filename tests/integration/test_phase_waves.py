"""The role on waves: each phase patches the control planes in one task and the workers in one (roles/rotate_ca/tasks/
phase.yml), concurrently inside the task, whatever --forks is; every other host of the play runs only the per-host
bookkeeping; a node failing in a wave is named with its inventory name and address and stops the run before the next
wave."""

import json
import os

from _playbook import run_playbook

KUBERNETES_ONLY = {"rotate_talos": False, "rotate_kubernetes": True}


def audit(rotation_dir, kind):
    with open(os.path.join(rotation_dir, kind, "audit.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_talos_phases_patch_each_tier_in_one_wave_at_one_fork(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=2, workers=3)
    rotation_dir = str(tmp_path / "rotation")
    run = run_playbook(cluster, rotation_dir, "-f", "1")
    assert run.returncode == 0, run.output[-6000:]
    waves = [entry for entry in audit(rotation_dir, "talos") if entry["event"] == "wave_patched"]
    controlplanes = [node.address for node in cluster.controlplanes]
    workers = [node.address for node in cluster.workers]
    # accept: the first control plane alone (its claim), then the other; each later phase: every control plane at once;
    # every phase: every worker at once, although Ansible runs one host at a time (-f 1).
    assert [(entry["phase"], entry["machine_type"], entry["nodes"]) for entry in waves] == [
        ("accept", "controlplane", controlplanes[:1]), ("accept", "controlplane", controlplanes[1:]),
        ("accept", "worker", workers),
        ("swap", "controlplane", controlplanes), ("swap", "worker", workers),
        ("remove", "controlplane", controlplanes), ("remove", "worker", workers)]
    assert all(entry["changed_nodes"] == entry["nodes"] and not entry["failed_nodes"] for entry in waves)
    # One task per tier and phase, run once: the other hosts run only Ansible's argument check of the role.
    first = cluster.controlplanes[0].name
    assert {host: counts["ok"] for host, counts in run.recap.items() if host != first} == {
        node.name: 1 for node in cluster.nodes if node.name != first}, run.recap
    for title in ("Accept | add the new CA to machine.acceptedCAs", "Swap | make the new CA machine.ca, keep the old one accepted",
                  "Remove | drop the old CA from machine.acceptedCAs"):
        assert run.output.count("TASK [talosops.pki.rotate_ca : %s (control planes)]" % title) == 1
        assert run.output.count("TASK [talosops.pki.rotate_ca : %s (workers)]" % title) == 1


def test_kubernetes_workers_go_in_waves_of_the_batch_size_at_one_fork(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=2, workers=4, kubelet_restart_delay=0.05)
    rotation_dir = str(tmp_path / "rotation")
    run = run_playbook(cluster, rotation_dir, "-f", "1", extra_vars=dict(
        KUBERNETES_ONLY, rotate_ca_kubeconfig=str(cluster.kubeconfig_path), rotate_ca_kubernetes_worker_batch_size=3,
        rotate_ca_concurrency=2))
    assert run.returncode == 0, run.output[-6000:]
    waves = [entry for entry in audit(rotation_dir, "kubernetes") if entry["event"] == "wave_patched"]
    controlplanes = [node.address for node in cluster.controlplanes]
    workers = [node.address for node in cluster.workers]
    for phase in ("accept", "swap", "remove"):
        # Control planes one at a time, workers three at a time (at most two in flight: rotate_ca_concurrency).
        assert [entry["nodes"] for entry in waves if entry["phase"] == phase] == [
            controlplanes[:1], controlplanes[1:], workers[:3], workers[3:]], phase
    assert "workers in waves of 3 (at most 2 at once)" in run.output


def test_a_worker_failing_in_its_wave_is_named_and_stops_the_run_before_the_next_phase(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=1, workers=3)
    rotation_dir = str(tmp_path / "rotation")
    failing = cluster.workers[1]
    failing.fail_next_applies(10000)  # Unavailable on every apply, beyond the retries
    run = run_playbook(cluster, rotation_dir, extra_vars={"rotate_ca_retry_deadline": 1})
    assert run.returncode != 0 and "PLAY RECAP" in run.output
    assert "%s (%s)" % (failing.name, failing.address) in run.output
    assert "Traceback" not in run.output
    waves = [entry for entry in audit(rotation_dir, "talos") if entry["event"] == "wave_patched"]
    # The workers' wave ran (the others moved), then nothing further: no swap wave.
    assert [(entry["phase"], entry["machine_type"]) for entry in waves] == [("accept", "controlplane"), ("accept", "worker")]
    assert waves[-1]["failed_nodes"] == [failing.address]
    assert sorted(waves[-1]["changed_nodes"]) == sorted(node.address for node in cluster.workers if node is not failing)
    # The summary of the stopped run says which nodes moved.
    assert "Talos API CA rotation STOPPED in this run (3 of 4 nodes moved before the failure)" in run.output
    failing.clear_apply_failures()
    rerun = run_playbook(cluster, rotation_dir)
    assert rerun.returncode == 0, rerun.output[-6000:]
