#!/usr/bin/env python
"""How long the playbook takes to rotate the Talos API CA of a large simulated cluster.

Prints the wall time of the whole run and of each task (from the moment its header appears
to the next one), so a slow phase shows up by name. The goal: 3 control planes + 97 workers
in about a minute on a 2-core machine.

Usage: bench/rotate_talos_ca.py [--controlplanes 3] [--workers 97] [--forks 10]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tests"), os.path.join(ROOT, "tests", "simulator")]

from collection_root import collections_root  # noqa: E402  pylint: disable=wrong-import-position
from talos_sim import SimCluster  # noqa: E402  pylint: disable=wrong-import-position


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controlplanes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=97)
    parser.add_argument("--forks", type=int, default=10)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="talosops-bench-")
    started = time.monotonic()
    with SimCluster(controlplanes=args.controlplanes, workers=args.workers, workdir=workdir) as cluster:
        print("cluster of %d + %d nodes up in %.1f s" % (args.controlplanes, args.workers, time.monotonic() - started))
        command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(cluster.inventory_path),
                   os.path.join(ROOT, "playbooks", "rotate_talos_ca.yml"), "-f", str(args.forks),
                   "-e", "rotate_ca_dir=%s" % os.path.join(workdir, "rotation")]
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_root(), ANSIBLE_NOCOLOR="1", PYTHONUNBUFFERED="1")
        tasks, current, began = [], None, time.monotonic()
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as run:
            for line in run.stdout:
                now = time.monotonic()
                if line.startswith(("TASK [", "PLAY RECAP")):
                    if current:
                        tasks.append((current, now - current_start))
                    current, current_start = line.split("]")[0][6:].replace("talosops.pki.rotate_ca : ", ""), now
                if line.startswith(("fatal", "[ERROR]")):
                    print(line.rstrip())
        total = time.monotonic() - began
    for name, seconds in sorted(tasks, key=lambda item: -item[1])[:12]:
        print("%7.2f s  %s" % (seconds, name))
    print("rotation of %d + %d nodes: %.1f s wall (exit %d, forks %d)" % (args.controlplanes, args.workers, total, run.returncode, args.forks))
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
