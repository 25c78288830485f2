#!/usr/bin/env python
"""What the run guard of every patch task costs, and how fast a killed run's processes stop and its lock goes.

Prints: the time to enter and leave a RunGuard under a held rotation lock (once per patch task: a shared flock, a pidfd,
a watchdog thread); then, for stand-in process trees (a "playbook" holding the lock, a "worker" child inside a
RunGuard), the time from SIGKILL of the playbook to the worker's death and to the lock file's removal. Numbers only, no
thresholds.

Usage: bench/run_guard.py [--enter 2000] [--kills 10]
"""

import argparse
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time

# Import paths: the collection.
import _common  # noqa: F401  pylint: disable=unused-import
from ansible_collections.talosops.pki.plugins.module_utils._backends import rotation_lock  # pylint: disable=wrong-import-order

# The stand-in playbook: takes the lock as its own, then starts the worker (argv[4]) and waits. The worker, by its mode
# (argv[2]): "enter" times argv[3] guards and prints the mean; "hold" holds one guard until killed.
PLAYBOOK = r"""
import json, os, subprocess, sys, time
from ansible_collections.talosops.pki.plugins.module_utils._backends import rotation_lock
rotation_lock.owner_pid = os.getpid
held = rotation_lock.run({"path": sys.argv[1], "wait": 0})
worker = subprocess.Popen([sys.executable, "-c", sys.argv[4]] + sys.argv[1:4])
print(json.dumps({"holder": held["holder"]["holder_pid"], "worker": worker.pid}), flush=True)
worker.wait()
time.sleep(300)
"""
WORKER = r"""
import os, sys, time
from ansible_collections.talosops.pki.plugins.module_utils._backends import rotation_lock
folder, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "enter":
    started = time.perf_counter()
    for _ in range(count):
        with rotation_lock.RunGuard(folder) as guard:
            guard.check()
    print("%.1f" % ((time.perf_counter() - started) / count * 1e6), flush=True)
else:
    with rotation_lock.RunGuard(folder):
        print("held", flush=True)
        time.sleep(300)
"""


def tree(folder, mode, count=0):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path for path in sys.path if path))
    return subprocess.Popen([sys.executable, "-c", PLAYBOOK, folder, mode, str(count), WORKER], env=env,  # pylint: disable=consider-using-with
                            stdout=subprocess.PIPE, text=True)


def enter_cost(count):
    with tempfile.TemporaryDirectory() as scratch:
        playbook = tree(os.path.join(scratch, "rotation"), "enter", count)
        playbook.stdout.readline()
        mean = float(playbook.stdout.readline())
        playbook.kill()
        playbook.wait()
        playbook.stdout.close()
    return mean


def kill_times():
    with tempfile.TemporaryDirectory() as scratch:
        folder = os.path.join(scratch, "rotation")
        playbook = tree(folder, "hold")
        pids = json.loads(playbook.stdout.readline())
        assert playbook.stdout.readline().strip() == "held"
        worker = os.pidfd_open(pids["worker"])
        killed = time.monotonic()
        playbook.send_signal(signal.SIGKILL)
        playbook.wait()
        select.select([worker], [], [], 30)
        worker_gone = time.monotonic() - killed
        while os.path.exists(os.path.join(folder, rotation_lock.LOCK_FILE)) and time.monotonic() - killed < 30:
            time.sleep(0.001)
        lock_gone = time.monotonic() - killed
        os.close(worker)
        playbook.stdout.close()
    return worker_gone, lock_gone


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--enter", type=int, default=2000, help="guards entered and left for the cost")
    parser.add_argument("--kills", type=int, default=10, help="killed process trees for the stop times")
    args = parser.parse_args()
    print("RunGuard enter+check+exit: %.1f us each (mean of %d)" % (enter_cost(args.enter), args.enter))
    times = [kill_times() for _run in range(args.kills)]
    for label, values in (("worker killed", [t[0] for t in times]), ("lock released", [t[1] for t in times])):
        print("after SIGKILL of the playbook, %s: median %.1f ms, max %.1f ms (%d runs)" % (
            label, statistics.median(values) * 1e3, max(values) * 1e3, len(values)))


if __name__ == "__main__":
    main()
