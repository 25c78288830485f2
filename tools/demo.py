#!/usr/bin/env python
"""The main job, end to end: start a simulated Talos cluster, rotate its Talos API CA (and with
--kubernetes its Kubernetes API CA) with the playbook as an operator would, and show what
changed, read back from every node.

`make demo` runs it in the project's venv; `make demo DEMO_ARGS=--kubernetes` rotates both CAs.
Everything it writes goes into --workdir (default demo/ in the checkout): the cluster's files,
the rotation directory and the collection link Ansible loads the collection through. A
--workdir that holds anything the demo did not make is refused, never emptied.
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tests"), os.path.join(ROOT, "tests", "simulator")]

from collection_root import collections_root  # noqa: E402  pylint: disable=wrong-import-position

MARKER = ".made-by-make-demo"
# ansible-core imports DSA support, which cryptography >= 44 deprecates, on every start (ansible/ansible#85045):
# silence exactly that message in the commands the demo runs; every other warning is still shown.
DSA_WARNING_FILTER = "ignore:DSA is deprecated"


def prepare_workdir(workdir):
    """A fresh workdir: created, or emptied when the demo made it; anything else is refused."""
    if os.path.isdir(workdir) and os.listdir(workdir):
        if not os.path.exists(os.path.join(workdir, MARKER)):
            sys.exit("demo: %s is not empty and was not made by the demo: give an empty or new folder (--workdir), or the "
                     "default." % workdir)
        shutil.rmtree(workdir)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, MARKER), "w", encoding="utf-8") as handle:
        handle.write("made by tools/demo.py (make demo): emptied by the next demo run\n")


def show_ca_fields(cluster, kind, rotation_dir):
    """Each node's issuing and accepted CAs of one kind, named old/new by fingerprint."""
    from ansible_collections.talosops.pki.plugins.module_utils import _pki  # pylint: disable=import-outside-toplevel
    from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import MachineConfig  # pylint: disable=import-outside-toplevel
    title = {"talos": "Talos API CA", "kubernetes": "Kubernetes API CA"}[kind]
    with open(os.path.join(rotation_dir, "previous-ca.crt"), "rb") as old, open(os.path.join(rotation_dir, "ca.crt"), "rb") as new:
        old_fp, new_fp = _pki.fingerprint(old.read()), _pki.fingerprint(new.read())
    names = {old_fp: "old", new_fp: "new"}
    print("  old %s %s" % (title, old_fp))
    print("  new %s %s" % (title, new_fp))
    for node in cluster.nodes:
        fields = MachineConfig.parse(node.config_bytes()).get_ca(kind)
        accepted = [names.get(_pki.fingerprint(crt), _pki.fingerprint(crt)[:16]) for crt in fields.accepted]
        note = ""
        if fields.issuing_crt:
            issuing = names.get(_pki.fingerprint(fields.issuing_crt), "?")
        else:
            # A v1.14+ worker has no issuing Kubernetes CA field: its first accepted CA plays that role.
            issuing, accepted = (accepted[0], accepted[1:]) if accepted else ("none", [])
            note = "  (acceptedCAs only: the first one issues)"
        print("  - %-28s issuing: %-4s  accepted: %s%s" % (node.name, issuing, ", ".join(accepted) or "none", note))


def arguments(argv=None):
    parser = argparse.ArgumentParser(prog="tools/demo.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--controlplanes", type=int, default=3, help="control-plane nodes (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="worker nodes (default 2)")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "demo"),
                        help="folder for everything the demo writes (default demo/ in the checkout): new, empty, or made by "
                             "an earlier demo run, which is emptied first")
    parser.add_argument("--talos-version", default="v1.13.4",
                        help="Talos version of every node (default v1.13.4; v1.14+ keeps the Kubernetes CA in "
                             "KubeAPIServerCAConfig)")
    parser.add_argument("--kubernetes", action="store_true", help="rotate the Kubernetes API CA too, after the Talos API CA")
    return parser.parse_args(argv)


def main(argv=None):
    args = arguments(argv)
    workdir = os.path.abspath(args.workdir)
    prepare_workdir(workdir)
    # The collection is loaded through a link inside the workdir: nothing is written outside it.
    collections = collections_root(os.path.join(workdir, "collections"))
    sys.path.insert(0, collections)
    from talos_sim import SimCluster  # pylint: disable=import-outside-toplevel

    cluster_dir, rotation_dir = os.path.join(workdir, "cluster"), os.path.join(workdir, "rotation")
    os.makedirs(cluster_dir)
    print("> Starting a simulated Talos %s cluster: %d control planes + %d workers" % (args.talos_version, args.controlplanes, args.workers))
    with SimCluster(controlplanes=args.controlplanes, workers=args.workers, workdir=cluster_dir, talos_version=args.talos_version) as cluster:
        for node in cluster.nodes:
            print("  - %-12s %-15s %s" % (node.name, node.address, node.machine_type))
        extra_vars = {"rotate_ca_dir": rotation_dir, "rotate_ca_secrets_file": cluster.secrets_path,
                      "rotate_kubernetes": args.kubernetes, "rotate_ca_kubeconfig": cluster.kubeconfig_path}
        command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(cluster.inventory_path),
                   os.path.join(ROOT, "playbooks", "rotate_talos_ca.yml"), "-f", "10", "-e",
                   json.dumps(extra_vars)]
        warnings = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), DSA_WARNING_FILTER]))
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections, PYTHONWARNINGS=warnings)
        # Shell-quoted, with the environment it needs: pasted into a shell, it runs as shown.
        print("> " + shlex.join(["ANSIBLE_COLLECTIONS_PATH=%s" % collections, "PYTHONWARNINGS=%s" % warnings] + command))
        sys.stdout.flush()
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
        print("> Run `make demo` again for a fresh cluster, `make sim` for one that stays up; see docs/ for a real cluster.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
