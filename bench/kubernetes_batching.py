#!/usr/bin/env python
"""How much worker batching speeds up the Kubernetes API CA rotation.

Each node patch restarts the node's kubelet and waits until it is running and healthy again
(the simulated kubelet: down, running after --kubelet-restart seconds, healthy after half that
again). Control planes always go one at a time; workers go in batches. The benchmark rotates
the Kubernetes CA of a fresh simulated cluster once with batch size 1 and once with the role's
default batch size (or the sizes given), and prints the wall times and the speed-up.

Usage: bench/kubernetes_batching.py [--controlplanes 1] [--workers 20] [--kubelet-restart 2]
                                     [--batch 1 --batch default] [--forks 20]
"""

import argparse
import math
import os
import sys
import tempfile

from _common import run_playbook
from talos_sim import SimCluster  # pylint: disable=wrong-import-order


def rotate(args, batch):
    """Wall seconds of one Kubernetes CA rotation on a fresh cluster, and the playbook's exit code."""
    workdir = tempfile.mkdtemp(prefix="talosops-bench-k8s-")
    with SimCluster(controlplanes=args.controlplanes, workers=args.workers, workdir=workdir,
                    kubelet_restart_delay=args.kubelet_restart) as cluster:
        extra = {"rotate_talos": False, "rotate_kubernetes": True, "rotate_ca_dir": os.path.join(workdir, "rotation"),
                 "rotate_ca_kubeconfig": cluster.kubeconfig_path}
        if batch != "default":
            extra["rotate_ca_kubernetes_worker_batch_size"] = int(batch)
        run = run_playbook(cluster.inventory_path, "rotate_talos_ca.yml", args.forks, extra, echo_errors=False)
        if run.returncode:
            print(run.tail)
        ready = all(entry["ready"] for entry in cluster.kubernetes_nodes())
    return run.seconds, run.returncode, ready


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controlplanes", type=int, default=1)
    parser.add_argument("--workers", type=int, default=20)
    parser.add_argument("--kubelet-restart", type=float, default=2.0, help="simulated kubelet restart delay (s)")
    parser.add_argument("--batch", action="append", help="worker batch sizes to compare ('default' = the role's default)")
    parser.add_argument("--forks", type=int, default=20)
    args = parser.parse_args()
    batches = args.batch or ["1", "default"]
    default_batch = max(1, math.ceil(args.workers / 2))
    print("Kubernetes CA rotation of %d control planes + %d workers, kubelet restart %.1f s (+%.1f s to healthy), forks %d"
          % (args.controlplanes, args.workers, args.kubelet_restart, args.kubelet_restart / 2, args.forks))
    results = {}
    for batch in batches:
        size = default_batch if batch == "default" else int(batch)
        seconds, returncode, ready = rotate(args, batch)
        results[batch] = seconds
        print("  batch %-12s %6.1f s  (exit %d, all nodes Ready after: %s)" % (
            "%s (%d)" % (batch, size) if batch == "default" else batch, seconds, returncode, ready))
        if returncode or not ready:
            return 1
    if "1" in results:
        for batch, seconds in results.items():
            if batch != "1":
                print("  speed-up of batch %s over batch 1: %.1fx" % (batch, results["1"] / seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
