"""The talosops.pki.rotation_progress callback shows each patch task's waves, with the nodes done and the waves left."""

import re

from _playbook import playbook_command

import subprocess


def test_kubelet_waves_show_progress_wave_by_wave(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=1, workers=4, kubelet_restart_delay=0.5)
    command, env = playbook_command(cluster, str(tmp_path / "rotation"), extra_vars={
        "rotate_talos": False, "rotate_kubernetes": True, "rotate_ca_phases": ["accept"], "rotate_ca_kubernetes_worker_batch_size": 2})
    env.update(ANSIBLE_CALLBACKS_ENABLED="talosops.pki.rotation_progress")
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    task = "Accept | add the new Kubernetes CA to the accepted CAs (workers, in waves of 2)"
    lines = [line for line in output.splitlines() if line.startswith("progress | %s: " % task)]
    assert len(lines) == 2, output[-6000:]
    done = [int(re.search(r"; (\d+) of 4 nodes done", line).group(1)) for line in lines]
    assert done == [2, 4]
    # Two workers patch at once (the batch): after the first wave, one more wave is left.
    assert re.search(r": wave 1 of 2, 2 nodes in [\d.]+s \(2 changed\); 2 of 4 nodes done; about 1 more wave, ~\d+s$", lines[0]), lines
    assert lines[-1].endswith(", none left")
    # The control plane's task (the claim: its node alone) shows its wave too.
    assert [line for line in output.splitlines()
            if line.startswith("progress | Accept | add the new Kubernetes CA to the accepted CAs (control planes, one at a time): "
                               "wave 1 of 1, 1 node in")]
