#!/usr/bin/env python
"""The main job, end to end: start a simulated Talos cluster, rotate its Talos API CA with the
playbook as an operator would, and show what changed and what was proven.

Usage: tools/demo.py [--controlplanes 3] [--workers 2] [--workdir demo] [--talos-version v1.13.4]
(`make demo` runs it in the project's venv.)
"""

import argparse
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controlplanes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", default=os.path.join(ROOT, "demo"))
    parser.add_argument("--talos-version", default="v1.13.4")
    args = parser.parse_args()

    shutil.rmtree(args.workdir, ignore_errors=True)
    cluster_dir, rotation_dir = os.path.join(args.workdir, "cluster"), os.path.join(args.workdir, "rotation")
    os.makedirs(cluster_dir)
    print("> Starting a simulated Talos %s cluster: %d control planes + %d workers" % (args.talos_version, args.controlplanes, args.workers))
    with SimCluster(controlplanes=args.controlplanes, workers=args.workers, workdir=cluster_dir, talos_version=args.talos_version) as cluster:
        for node in cluster.nodes:
            print("  - %-12s %-15s %s" % (node.name, node.address, node.machine_type))
        command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(cluster.inventory_path),
                   os.path.join(ROOT, "playbooks", "rotate_talos_ca.yml"), "-f", "10",
                   "-e", "rotate_ca_dir=%s rotate_ca_secrets_file=%s" % (rotation_dir, cluster.secrets_path)]
        print("> " + " ".join(command))
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_root())
        completed = subprocess.run(command, env=env, check=False)
        if completed.returncode != 0:
            print("> The rotation failed (exit %d); the cluster state is in %s." % (completed.returncode, cluster_dir))
            return completed.returncode
        new_ca = open(os.path.join(rotation_dir, "talos", "ca.crt"), "rb").read()
        old_ca = open(os.path.join(rotation_dir, "talos", "previous-ca.crt"), "rb").read()
        old_fp, new_fp = _pki.fingerprint(old_ca), _pki.fingerprint(new_ca)
        names = {old_fp: "old", new_fp: "new"}
        print("> Result, read back from each node's machine config")
        print("  old Talos API CA %s" % old_fp)
        print("  new Talos API CA %s" % new_fp)
        for node in cluster.nodes:
            fields = MachineConfig.parse(node.config_bytes()).get_ca("talos")
            accepted = [names.get(_pki.fingerprint(crt), _pki.fingerprint(crt)[:16]) for crt in fields.accepted]
            print("  - %-28s issuing: %s  accepted: %s" % (node.name, names.get(_pki.fingerprint(fields.issuing_crt), "?"), accepted or "none"))
        print("  new talosconfig  %s" % cluster.talosconfig_path)
        print("  rotation dir     %s" % os.path.join(rotation_dir, "talos"))
        print("> Run `make demo` again for a fresh cluster; see docs/ for a real cluster.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
