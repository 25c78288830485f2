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
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tests"), os.path.join(ROOT, "tests", "simulator")]

from collection_root import collections_root  # noqa: E402  pylint: disable=wrong-import-position
from talos_sim import SimCluster  # noqa: E402  pylint: disable=wrong-import-position

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
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_root(), ANSIBLE_NOCOLOR="1", PYTHONUNBUFFERED="1")
        command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", path,
                   os.path.join(ROOT, "playbooks", "cert_report.yml"), "-f", str(args.forks),
                   "-e", json.dumps({"cert_report_dir": report_dir, "cert_report_warn_days": 30})]
        began = time.monotonic()
        tasks, current, current_start = [], None, began
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as run:
            for line in run.stdout:
                now = time.monotonic()
                if line.startswith(("TASK [", "PLAY RECAP")):
                    if current:
                        tasks.append((current, now - current_start))
                    current, current_start = line.split("]")[0][6:], now
                if line.startswith(("fatal", "[ERROR]")):
                    print(line.rstrip())
        total = time.monotonic() - began
        with open(os.path.join(report_dir, "cert-report.json"), encoding="utf-8") as handle:
            entries = len(json.load(handle)["entries"])
    finally:
        for cluster in clusters:
            cluster.stop()
    for name, seconds in tasks:
        print("%7.2f s  %s" % (seconds, name))
    read_seconds = sum(seconds for name, seconds in tasks if name.startswith(READ_TASK))
    print("reading %d clusters (%d nodes): %.1f s" % (args.clusters, args.clusters * (args.controlplanes + args.workers), read_seconds))
    print("report of %d entries: %.1f s wall (exit %d, forks %d)" % (entries, total, run.returncode, args.forks))
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
