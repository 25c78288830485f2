#!/usr/bin/env python
"""How long the playbook takes to rotate the Talos API CA of a large simulated cluster.

Prints the wall time of the whole run and of each task (from the moment its header appears
to the next one), so a slow phase shows up by name. The goal: 3 control planes + 97 workers
in about a minute on a 2-core machine. bench/phase_engine.py compares it with a one-node-at-a-time baseline.

Usage: bench/rotate_talos_ca.py [--controlplanes 3] [--workers 97] [--forks 10] [--apply-delay 0]
"""

import argparse
import os
import sys
import tempfile
import time

from _common import print_slowest, run_playbook
from talos_sim import SimCluster  # pylint: disable=wrong-import-order


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controlplanes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=97)
    parser.add_argument("--forks", type=int, default=10)
    parser.add_argument("--apply-delay", type=float, default=0.0, help="seconds each simulated config apply takes")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="talosops-bench-")
    started = time.monotonic()
    with SimCluster(controlplanes=args.controlplanes, workers=args.workers, workdir=workdir, apply_delay=args.apply_delay) as cluster:
        print("cluster of %d + %d nodes up in %.1f s" % (args.controlplanes, args.workers, time.monotonic() - started))
        run = run_playbook(cluster.inventory_path, "rotate_talos_ca.yml", args.forks, {"rotate_ca_dir": os.path.join(workdir, "rotation")})
    print_slowest(run.tasks)
    print("rotation of %d + %d nodes: %.1f s wall (exit %d, forks %d)" % (args.controlplanes, args.workers, run.seconds, run.returncode, args.forks))
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
