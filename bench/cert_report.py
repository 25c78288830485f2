#!/usr/bin/env python
"""How long the expiry report takes over a fleet of simulated clusters in one inventory.

Starts --clusters clusters of --controlplanes + --workers nodes, writes one inventory with a group per cluster, runs
playbooks/cert_report.yml once, and prints the wall time, the time of the step that reads the clusters, and how many
entries the report holds. The goal: reading is concurrent per cluster (all nodes at once) and across clusters (forks),
so 10 clusters of 20 nodes report in seconds, not once per node.

Usage: bench/cert_report.py [--clusters 10] [--controlplanes 3] [--workers 17] [--forks 10]
"""

import argparse
import json
import os
import sys
import tempfile
import time

import yaml

from _common import run_playbook, task_seconds
from talos_sim import SimCluster  # pylint: disable=wrong-import-order

READ_TASK = "Read every CA and credential of each cluster"


def inventory(clusters, path):
    children = {}
    for cluster in clusters:
        children[cluster.name] = {"hosts": {node.name: {"talos_node_address": node.address} for node in cluster.nodes},
                                  "vars": {"talos_cluster": cluster.name, "talos_talosconfig": cluster.talosconfig_path,
                                           "talos_endpoints": [node.address for node in cluster.controlplanes]}}
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump({"all": {"vars": {"ansible_connection": "local",
                                         "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                                "children": children}}, handle)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--controlplanes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=17)
    parser.add_argument("--forks", type=int, default=10)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="talosops-bench-report-")
    started = time.monotonic()
    clusters = []
    try:
        for index in range(args.clusters):
            clusters.append(SimCluster(controlplanes=args.controlplanes, workers=args.workers, name="bench-%d" % index,
                                       workdir=os.path.join(workdir, "c%d" % index)).start())
        print("%d clusters of %d + %d nodes up in %.1f s" % (args.clusters, args.controlplanes, args.workers, time.monotonic() - started))
        path = os.path.join(workdir, "fleet.yml")
        inventory(clusters, path)
        report_dir = os.path.join(workdir, "report")
        run = run_playbook(path, "cert_report.yml", args.forks, {"cert_report_dir": report_dir, "cert_report_warn_days": 30})
        with open(os.path.join(report_dir, "cert-report.json"), encoding="utf-8") as handle:
            entries = len(json.load(handle)["entries"])
    finally:
        for cluster in clusters:
            cluster.stop()
    for name, seconds in run.tasks:
        print("%7.2f s  %s" % (seconds, name))
    read_seconds = task_seconds(run.tasks, READ_TASK)
    print("reading %d clusters (%d nodes): %.1f s" % (args.clusters, args.clusters * (args.controlplanes + args.workers), read_seconds))
    print("report of %d entries: %.1f s wall (exit %d, forks %d)" % (entries, run.seconds, run.returncode, args.forks))
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
