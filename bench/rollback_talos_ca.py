#!/usr/bin/env python
"""How long rotate_ca_rollback takes to bring a large simulated cluster back to the old Talos API CA.

Runs the accept and swap phases on a fresh cluster (the worst starting point for a rollback: every node
swapped), then the rollback, and prints the wall time of each run and the slowest tasks of the rollback (from
the moment a task header appears to the next one). The goal: no slower than the forward rotation of the same
cluster (bench/rotate_talos_ca.py), about a minute for 3 control planes + 97 workers on a 2-core machine.

Usage: bench/rollback_talos_ca.py [--controlplanes 3] [--workers 97] [--forks 10]
"""

import argparse
import os
import sys
import tempfile

from _common import print_slowest, run_playbook
from talos_sim import SimCluster  # pylint: disable=wrong-import-order


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controlplanes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=97)
    parser.add_argument("--forks", type=int, default=10)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="talosops-bench-rollback-")
    rotation_dir = os.path.join(workdir, "rotation")
    with SimCluster(controlplanes=args.controlplanes, workers=args.workers, workdir=workdir) as cluster:
        forward = run_playbook(cluster.inventory_path, "rotate_talos_ca.yml", args.forks,
                               {"rotate_ca_dir": rotation_dir, "rotate_ca_phases": ["accept", "swap"]})
        print("accept + swap of %d + %d nodes: %.1f s wall (exit %d)" % (args.controlplanes, args.workers, forward.seconds, forward.returncode))
        if forward.returncode:
            return forward.returncode
        back = run_playbook(cluster.inventory_path, "rotate_talos_ca.yml", args.forks, {"rotate_ca_dir": rotation_dir, "rotate_ca_rollback": True})
    print_slowest(back.tasks, 10)
    print("rollback of %d + %d nodes from after the swap: %.1f s wall (exit %d, forks %d)" % (
        args.controlplanes, args.workers, back.seconds, back.returncode, args.forks))
    return back.returncode


if __name__ == "__main__":
    sys.exit(main())
