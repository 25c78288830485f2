"""Run a simulated Talos cluster until Ctrl-C: `python -m talos_sim --workdir DIR` (tests/simulator on PYTHONPATH)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from .cluster import SimCluster


def _arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m talos_sim", description=__doc__)
    parser.add_argument("--controlplanes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", required=True, help="where talosconfig, secrets.yaml, inventory.yml... go")
    parser.add_argument("--talos-version", default="v1.13.4", help="e.g. v1.13.4 (cluster.ca) or v1.15.0 "
                        "(KubeAPIServerCAConfig); a comma-separated list sets it per node")
    parser.add_argument("--kubelet-restart-delay", type=float, default=0.2)
    parser.add_argument("--apply-delay", type=float, default=0.0,
                        help="seconds each ApplyConfiguration (not a dry run) takes, e.g. 0.15; reads stay fast")
    parser.add_argument("--subnet", help="127.A.B: the loopback /24 to use (default: a free one)")
    parser.add_argument("--name", default="talos-sim", help="cluster and talosconfig context name")
    return parser.parse_args(argv)


def main(argv=None, ready_lines=None) -> int:
    """Run until SIGINT/SIGTERM; `ready_lines(cluster)` gives more lines to print once the cluster serves."""
    args = _arguments(argv)
    versions = args.talos_version.split(",")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    os.makedirs(args.workdir, exist_ok=True)
    ready_marker = os.path.join(args.workdir, "ready")
    if os.path.exists(ready_marker):
        os.unlink(ready_marker)
    cluster = SimCluster(args.controlplanes, args.workers, args.workdir,
                         talos_version=versions[0] if len(versions) == 1 else versions,
                         kubelet_restart_delay=args.kubelet_restart_delay, subnet=args.subnet, name=args.name,
                         apply_delay=args.apply_delay)
    cluster.start()
    try:
        print("Simulated Talos cluster %r is up (%.2fs), subnet %s.0/24" % (
            cluster.name, cluster.startup_seconds, cluster.subnet))
        for node in cluster.nodes:
            print("  %-28s %-16s %-12s %s" % (node.name, node.address, node.machine_type, node.talos_version))
        print("endpoint      %s:50000" % cluster.endpoint)
        for label, path in (("talosconfig", cluster.talosconfig_path), ("secrets", cluster.secrets_path),
                            ("inventory", cluster.inventory_path), ("kubeconfig", cluster.kubeconfig_path),
                            ("nodes", cluster.nodes_path)):
            print("%-13s %s" % (label, path))
        print("Kubernetes API: https://<control plane>:6443")
        for line in ready_lines(cluster) if ready_lines else ():
            print(line)
        print("Press Ctrl-C to stop.", flush=True)
        with open(ready_marker, "w", encoding="utf-8") as handle:
            handle.write("%s\n" % cluster.endpoint)
        stop.wait()
    finally:
        if os.path.exists(ready_marker):
            os.unlink(ready_marker)
        cluster.stop()
    print("Stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
