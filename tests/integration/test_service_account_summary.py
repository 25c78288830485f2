"""The service-account key rotation's summary comes from talos_rotation_summary (kind=service_account), like the other
flows': per control plane before -> after, and, when a control plane fails, from the role's `always` section with that
node marked and where each control plane stands."""

from _playbook import run_playbook

SA_ONLY = {"rotate_talos": False, "rotate_service_account": True, "rotate_ca_service_account_remove_wait": 0,
           "rotate_ca_service_account_algorithm": "rsa-2048", "rotate_ca_kubernetes_verify_deadline": 30,
           "rotate_ca_retry_deadline": 2.5}


def squeezed(output):
    return [" ".join(line.split()) for line in output.splitlines()]


def test_a_service_account_rotation_that_stops_prints_its_summary_then_finishes(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=2, workers=1, talos_version="v1.15.0")
    rotation_dir = str(tmp_path / "rotation")
    first, failing = cluster.controlplanes
    failing.fail_next_applies(10000)  # Unavailable on every apply, beyond the run's retry deadline
    stopped = run_playbook(cluster, rotation_dir, extra_vars=dict(SA_ONLY, rotate_ca_phases=["accept"]))
    assert stopped.returncode != 0 and "PLAY RECAP" in stopped.output, stopped.output[-6000:]
    lines = squeezed(stopped.output)
    assert "Service-account signing key rotation STOPPED in this run (1 of 2 nodes moved before the failure)" in stopped.output, \
        stopped.output[-6000:]
    assert "%s %s controlplane pending -> accepted" % (first.name, first.address) in lines, stopped.output[-6000:]
    assert "%s %s controlplane pending -> pending (unchanged) (FAILED)" % (failing.name, failing.address) in lines
    stand = next(line for line in lines if "where the nodes stand:" in line)
    assert "pending (the old key alone): %s" % failing.name in stand, stand
    assert not [line for line in lines if line.startswith(cluster.workers[0].name + " ")]  # workers carry no key

    failing.clear_apply_failures()
    finished = run_playbook(cluster, rotation_dir, extra_vars=SA_ONLY)
    assert finished.returncode == 0, finished.output[-6000:]
    lines = squeezed(finished.output)
    assert "Service-account signing key rotated: accept, swap, remove phases done" in finished.output, finished.output[-6000:]
    assert "%s %s controlplane pending -> removed" % (failing.name, failing.address) in lines
    assert "%s %s controlplane accepted -> removed" % (first.name, first.address) in lines
    assert "token of the old key: refused by every kube-apiserver" in lines
