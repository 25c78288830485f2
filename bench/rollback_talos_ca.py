#!/usr/bin/env python
"""How long rotate_ca_rollback takes to bring a large simulated cluster back to the old Talos API CA.

Runs the accept and swap phases on a fresh cluster (the worst starting point for a rollback: every node
swapped), then the rollback, and prints the wall time of each run and the slowest tasks of the rollback (from
the moment a task header appears to the next one). The goal: no slower than the forward rotation of the same
cluster (bench/rotate_talos_ca.py), about a minute for 3 control planes + 97 workers on a 2-core machine.

Usage: bench/rollback_talos_ca.py [--controlplanes 3] [--workers 97] [--forks 10]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tests"), os.path.join(ROOT, "tests", "simulator")]

from collection_root import collections_root  # noqa: E402  pylint: disable=wrong-import-position
from talos_sim import SimCluster  # noqa: E402  pylint: disable=wrong-import-position


def playbook(cluster, args, extra):
    """(wall seconds, exit code, [(task, seconds)]) of one run of the rotation playbook."""
    command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(cluster.inventory_path),
               os.path.join(ROOT, "playbooks", "rotate_talos_ca.yml"), "-f", str(args.forks), "-e", json.dumps(extra)]
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_root(), ANSIBLE_NOCOLOR="1", PYTHONUNBUFFERED="1")
    tasks, current, current_start, began = [], None, None, time.monotonic()
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as run:
        for line in run.stdout:
            now = time.monotonic()
            if line.startswith(("TASK [", "PLAY RECAP")):
                if current:
                    tasks.append((current, now - current_start))
                current, current_start = line.split("]")[0][6:].replace("talosops.pki.rotate_ca : ", ""), now
            if line.startswith(("fatal", "[ERROR]")):
                print(line.rstrip())
    return time.monotonic() - began, run.returncode, tasks


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controlplanes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=97)
    parser.add_argument("--forks", type=int, default=10)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="talosops-bench-rollback-")
    rotation_dir = os.path.join(workdir, "rotation")
    with SimCluster(controlplanes=args.controlplanes, workers=args.workers, workdir=workdir) as cluster:
        forward, forward_rc, _tasks = playbook(cluster, args, {"rotate_ca_dir": rotation_dir, "rotate_ca_phases": ["accept", "swap"]})
        print("accept + swap of %d + %d nodes: %.1f s wall (exit %d)" % (args.controlplanes, args.workers, forward, forward_rc))
        if forward_rc:
            return forward_rc
        back, back_rc, tasks = playbook(cluster, args, {"rotate_ca_dir": rotation_dir, "rotate_ca_rollback": True})
    for name, seconds in sorted(tasks, key=lambda item: -item[1])[:10]:
        print("%7.2f s  %s" % (seconds, name))
    print("rollback of %d + %d nodes from after the swap: %.1f s wall (exit %d, forks %d)" % (
        args.controlplanes, args.workers, back, back_rc, args.forks))
    return back_rc


if __name__ == "__main__":
    sys.exit(main())
