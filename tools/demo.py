#!/usr/bin/env python
"""The main job, end to end: start a simulated Talos cluster, rotate its Talos API CA (and with
--kubernetes its Kubernetes API CA) with the playbook as an operator would, and show what
changed, read back from every node.

Usage: tools/demo.py [--controlplanes 3] [--workers 2] [--workdir demo] [--talos-version v1.13.4] [--kubernetes]
(`make demo` runs it in the project's venv; `make demo DEMO_ARGS=--kubernetes` rotates both CAs.)
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tests"), os.path.join(ROOT, "tests", "simulator")]

from collection_root import collections_root  # noqa: E402  pylint: disable=wrong-import-position

sys.path.insert(0, collections_root())

from talos_sim import SimCluster  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.talosops.pki.plugins.module_utils import _pki  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import MachineConfig  # noqa: E402  pylint: disable=wrong-import-position


def show_ca_fields(cluster, kind, rotation_dir):
    """Each node's issuing and accepted CAs of one kind, named old/new by fingerprint."""
    title = {"talos": "Talos API CA", "kubernetes": "Kubernetes API CA"}[kind]
    with open(os.path.join(rotation_dir, "previous-ca.crt"), "rb") as old, open(os.path.join(rotation_dir, "ca.crt"), "rb") as new:
        old_fp, new_fp = _pki.fingerprint(old.read()), _pki.fingerprint(new.read())
    names = {old_fp: "old", new_fp: "new"}
    print("  old %s %s" % (title, old_fp))
    print("  new %s %s" % (title, new_fp))
    for node in cluster.nodes:
        fields = MachineConfig.parse(node.config_bytes()).get_ca(kind)
        accepted = [names.get(_pki.fingerprint(crt), _pki.fingerprint(crt)[:16]) for crt in fields.accepted]
        # A v1.14+ worker has no issuing Kubernetes CA field, only accepted CAs.
        issuing = names.get(_pki.fingerprint(fields.issuing_crt), "?") if fields.issuing_crt else "none"
        print("  - %-28s issuing: %-4s  accepted: %s" % (node.name, issuing, accepted or "none"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controlplanes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", default=os.path.join(ROOT, "demo"))
    parser.add_argument("--talos-version", default="v1.13.4")
    parser.add_argument("--kubernetes", action="store_true", help="rotate the Kubernetes API CA too, after the Talos API CA")
    args = parser.parse_args()

    shutil.rmtree(args.workdir, ignore_errors=True)
    cluster_dir, rotation_dir = os.path.join(args.workdir, "cluster"), os.path.join(args.workdir, "rotation")
    os.makedirs(cluster_dir)
    print("> Starting a simulated Talos %s cluster: %d control planes + %d workers" % (args.talos_version, args.controlplanes, args.workers))
    with SimCluster(controlplanes=args.controlplanes, workers=args.workers, workdir=cluster_dir, talos_version=args.talos_version) as cluster:
        for node in cluster.nodes:
            print("  - %-12s %-15s %s" % (node.name, node.address, node.machine_type))
        extra_vars = {"rotate_ca_dir": rotation_dir, "rotate_ca_secrets_file": cluster.secrets_path,
                      "rotate_kubernetes": args.kubernetes, "rotate_ca_kubeconfig": cluster.kubeconfig_path}
        command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(cluster.inventory_path),
                   os.path.join(ROOT, "playbooks", "rotate_talos_ca.yml"), "-f", "10", "-e", json.dumps(extra_vars)]
        print("> " + " ".join(command))
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_root())
        completed = subprocess.run(command, env=env, check=False)
        if completed.returncode != 0:
            print("> The rotation failed (exit %d); the cluster state is in %s." % (completed.returncode, cluster_dir))
            return completed.returncode
        print("> Result, read back from each node's machine config")
        for kind in ("talos", "kubernetes") if args.kubernetes else ("talos",):
            show_ca_fields(cluster, kind, os.path.join(rotation_dir, kind))
        print("  new talosconfig  %s" % cluster.talosconfig_path)
        if args.kubernetes:
            print("  new kubeconfig   %s" % cluster.kubeconfig_path)
        print("  rotation dir     %s" % rotation_dir)
        print("> Run `make demo` again for a fresh cluster; see docs/ for a real cluster.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
