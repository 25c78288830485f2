"""Kill ansible-playbook mid-phase, as an AWX cancel or the OOM killer (SIGKILL) or a dropped SSH session (SIGHUP) does.

ansible-core's workers call setsid(): a signal to the playbook's process group does not reach them, and they outlive
it. Each case kills the playbook while a phase is in flight - one worker node refuses applies as Unavailable (a node
coming back), so its patch task retries; another answers every call slowly - then lets that node recover, and watches
every node's apply log for seconds: no configuration may land later than 2 s after the kill. The rerun, with the same
command, must then find the lock free and finish the same rotation.
"""

import contextlib
import os
import signal
import time

import pytest

from _playbook import lock_released, run_playbook, start_playbook
from _talos_state import assert_credentials, assert_rotated, old_ca_der_of, read

from ansible_collections.talosops.pki.plugins.module_utils import _kubernetes, _pki
from ansible_collections.talosops.pki.plugins.module_utils._backends import rotation_lock
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import MachineConfig

# A node that is down for a while is retried that long (the role's default is 10 s): the kill comes first.
VARIABLES = {"rotate_ca_retry_deadline": 60}
LATE = 2.0          # no apply may land later than this after the kill
WATCH = 6.0         # how long the apply logs are watched after the kill
RECOVERS = 2.5      # seconds after the kill the failing node accepts applies again: a surviving retry would land then
SLOW = 1.0          # the slow node's latency on every call: an apply sent before the kill lands within it


def children_of(pid):
    """The processes whose parent is pid (ansible-playbook's: its workers, one per host of the running task)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry, "rb") as handle:
                    stat = handle.read()
            except OSError:
                continue
            if int(stat[stat.rindex(b")") + 2:].split()[1]) == pid:
                found.append(int(entry))
    return found


def running(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:].split()[0] not in (b"Z", b"X")


def wait_until(predicate, seconds, what):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting until " + what
        time.sleep(0.02)


def mid_phase(cluster, rotation_dir, log, extra_vars=None):
    """A run whose workers' accept task is in flight: worker 1 retrying its refused apply, worker 2 slow. Returns it
    once worker 1 has refused a few attempts."""
    retrying, slow = cluster.node("talos-sim-worker-1"), cluster.node("talos-sim-worker-2")
    retrying.fail_next_applies(100000)
    slow.set_latency(SLOW)
    run = start_playbook(cluster, rotation_dir, output=log, extra_vars=dict(VARIABLES, **(extra_vars or {})))
    wait_until(lambda: retrying.apply_requests >= 3 or run.poll() is not None, 300, "worker 1 retries its apply")
    assert run.poll() is None, "the run ended before its workers' accept phase"
    assert retrying.applied_at == [] and any(node.applied_at for node in cluster.controlplanes)
    return run


def late_applies(cluster, killed_at):
    """Watch every node's apply log for WATCH seconds after the kill; worker 1 recovers RECOVERS seconds in."""
    deadline = killed_at + WATCH
    recovered = False
    while time.monotonic() < deadline:
        if not recovered and time.monotonic() >= killed_at + RECOVERS:
            cluster.node("talos-sim-worker-1").clear_apply_failures()
            recovered = True
        time.sleep(0.05)
    return {node.name: [round(at - killed_at, 2) for at in node.applied_at if at > killed_at + LATE] for node in cluster.nodes
            if any(at > killed_at + LATE for at in node.applied_at)}


def rerun_finishes(cluster, rotation_dir, old_ca, old_talosconfig):
    cluster.node("talos-sim-worker-2").set_latency(0)
    rerun = run_playbook(cluster, rotation_dir, extra_vars=VARIABLES)
    assert rerun.returncode == 0, rerun.output[-6000:]
    assert_rotated(cluster, rotation_dir, old_ca)
    assert_credentials(cluster, cluster.talosconfig_path, works=True)
    assert_credentials(cluster, str(old_talosconfig), works=False, server_ca=read(os.path.join(rotation_dir, "talos", "ca.crt")))


def kubernetes_rerun_finishes(cluster, rotation_dir, extra_vars, old_kubeconfig):
    cluster.node("talos-sim-worker-2").set_latency(0)
    rerun = run_playbook(cluster, rotation_dir, extra_vars=dict(VARIABLES, **extra_vars))
    assert rerun.returncode == 0, rerun.output[-6000:]
    new_ca = read(os.path.join(rotation_dir, "kubernetes", "ca.crt"))
    for node in cluster.nodes:
        fields = MachineConfig.parse(node.config_bytes(), node.name).get_ca("kubernetes")
        trusted = {_pki.fingerprint(crt) for crt in ((fields.issuing_crt,) if fields.issuing_crt else ()) + tuple(fields.accepted)}
        assert trusted == {_pki.fingerprint(new_ca)}, "%s does not trust the new Kubernetes CA alone" % node.name
    assert all(entry["ready"] for entry in cluster.kubernetes_nodes())
    with _kubernetes.KubeAPI(Kubeconfig.load(cluster.kubeconfig_path).credentials()) as api:
        assert api.nodes().kind == _kubernetes.OK
    with _kubernetes.KubeAPI(Kubeconfig.load(str(old_kubeconfig)).credentials(), server_ca=new_ca) as api:
        assert api.nodes().kind == _kubernetes.UNAUTHORIZED


CASES = [("talos", signal.SIGKILL), ("talos", signal.SIGHUP), ("kubernetes", signal.SIGKILL), ("kubernetes", signal.SIGHUP)]


@pytest.mark.parametrize("flow,signum", CASES, ids=["%s-%s" % (flow, signum.name) for flow, signum in CASES])
def test_no_apply_lands_after_the_playbook_is_killed_mid_phase_and_the_rerun_finishes(make_sim_cluster, tmp_path, flow, signum):
    if flow == "talos":
        cluster = make_sim_cluster(controlplanes=2, workers=2)
        extra_vars = {}
    else:
        # Each patch waits for the node's kubelet: the refused apply is retried inside that wait.
        cluster = make_sim_cluster(controlplanes=2, workers=2, talos_version="v1.15.0", kubelet_restart_delay=0.05)
        extra_vars = {"rotate_talos": False, "rotate_kubernetes": True, "rotate_ca_kubeconfig": str(cluster.kubeconfig_path)}
    rotation_dir = str(tmp_path / "rotation")
    old_ca = old_ca_der_of(cluster)
    old_talosconfig, old_kubeconfig = tmp_path / "old-talosconfig", tmp_path / "old-kubeconfig"
    old_talosconfig.write_bytes(read(cluster.talosconfig_path))
    old_kubeconfig.write_bytes(read(cluster.kubeconfig_path))

    with open(tmp_path / "killed.log", "w", encoding="utf-8") as log:
        run = mid_phase(cluster, rotation_dir, log, extra_vars)
        workers = children_of(run.pid)
        # The playbook's process group, as a terminal (SIGHUP) or a job runner (SIGKILL) signals it; workers are not in it.
        os.killpg(run.pid, signum)
        killed_at = time.monotonic()
        run.wait(timeout=30)
    output = (tmp_path / "killed.log").read_text()
    assert workers, "no worker was running at the kill: the test proved nothing"
    assert "PLAY RECAP" not in output, output[-3000:]

    assert late_applies(cluster, killed_at) == {}, "configurations landed more than %s s after the kill" % LATE
    wait_until(lambda: not [pid for pid in workers if running(pid)], 30, "the workers of the killed run end")
    assert lock_released(rotation_dir, seconds=30.0), "the lock was not released after the run's processes ended"
    if flow == "talos":
        rerun_finishes(cluster, rotation_dir, old_ca, old_talosconfig)
    else:
        kubernetes_rerun_finishes(cluster, rotation_dir, extra_vars, old_kubeconfig)


def test_the_lock_is_not_free_while_a_worker_of_the_killed_run_still_runs(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=2, workers=2)
    rotation_dir = str(tmp_path / "rotation")
    old_ca = old_ca_der_of(cluster)
    old_talosconfig = tmp_path / "old-talosconfig"
    old_talosconfig.write_bytes(read(cluster.talosconfig_path))

    with open(tmp_path / "killed.log", "w", encoding="utf-8") as log:
        run = mid_phase(cluster, rotation_dir, log)
        workers = children_of(run.pid)
        # Workers that cannot react in time (a starved CPU, a stopped process): they still hold their share of the lock.
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        os.kill(run.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        run.wait(timeout=30)
    assert workers, "no worker was running at the kill: the test proved nothing"
    cluster.node("talos-sim-worker-1").clear_apply_failures()  # a worker that went on would apply at once

    try:
        time.sleep(3.0)
        assert os.path.exists(os.path.join(rotation_dir, rotation_lock.LOCK_FILE)), "the lock went while workers of the run live"
        with pytest.raises(ConfigError, match="that ansible-playbook has ended, but a process of its run that can still apply"):
            rotation_lock.run({"path": rotation_dir, "wait": 0.0}, check_mode=True)
    finally:
        for pid in workers:
            # A stopped worker can still be gone: SIGKILL (the watchdog of its module process) ends a stopped process too.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    resumed_at = time.monotonic()
    # Generous bounds: on a loaded machine a resumed process may wait for a CPU.
    wait_until(lambda: not [pid for pid in workers if running(pid)], 30, "the resumed workers end")
    assert lock_released(rotation_dir, seconds=30.0), "the lock was not released after the resumed workers ended"
    time.sleep(max(resumed_at + 3.0 - time.monotonic(), 0))
    landed = {node.name: [round(at - killed_at, 2) for at in node.applied_at if at > killed_at + LATE] for node in cluster.nodes}
    assert not any(landed.values()), "resumed workers of the killed run applied configurations: %s" % landed
    rerun_finishes(cluster, rotation_dir, old_ca, old_talosconfig)
