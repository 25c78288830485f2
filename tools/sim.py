#!/usr/bin/env python
"""make sim: a simulated Talos cluster in the foreground, to try the quick start's checklist against.

Starts tests/simulator's talos_sim (default 3 control planes + 2 workers, Talos v1.13.4) with its files in sim/ of
the checkout, prints its nodes, the inventory, talosconfig and kubeconfig paths, an inventory file for the
talosops.pki.talos plugin and the commands to try (a dry run, phases as separate runs), and runs until Ctrl-C.
The cluster lives on loopback addresses (127.A.B.0/24) and changes nothing outside sim/.

Options: those of `python -m talos_sim` (--controlplanes N --workers N --talos-version v1.15.0 --name NAME ...),
given as SIM_ARGS="..." to make. --workdir DIR puts the files elsewhere: a folder that is empty, missing, or one
this tool made before.
"""

from __future__ import annotations

import os
import shlex
import sys

import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO_ROOT, "tests", "simulator"), os.path.join(REPO_ROOT, "tests")]

from collection_root import collections_root  # noqa: E402  pylint: disable=wrong-import-position,import-error
from talos_sim.__main__ import main as sim_main  # noqa: E402  pylint: disable=wrong-import-position,import-error

DEFAULT_WORKDIR = os.path.join(REPO_ROOT, "sim")
MARKER = ".made-by-make-sim"
PLAYBOOK = os.path.join(REPO_ROOT, "playbooks", "rotate_talos_ca.yml")


def workdir_of(argv):
    """The --workdir given (added when not), checked to be safe to fill: missing, empty, or made by this tool."""
    argv = list(argv)
    for index, argument in enumerate(argv):
        if argument == "--workdir" and index + 1 < len(argv):
            workdir = argv[index + 1]
            break
        if argument.startswith("--workdir="):
            workdir = argument.split("=", 1)[1]
            break
    else:
        workdir = DEFAULT_WORKDIR
        argv += ["--workdir", workdir]
    workdir = os.path.abspath(workdir)
    if os.path.isdir(workdir) and os.listdir(workdir) and not os.path.exists(os.path.join(workdir, MARKER)):
        sys.exit("make sim: %s is not empty and was not made by make sim: give an empty or new folder (SIM_ARGS=\"--workdir DIR\")."
                 % workdir)
    if os.path.exists(os.path.join(workdir, "ready")):
        sys.exit("make sim: a simulated cluster already runs with %s (its ready file exists): stop it first (Ctrl-C), or give "
                 "another folder (SIM_ARGS=\"--workdir DIR\"). If none runs, delete %s/ready." % (workdir, workdir))
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, MARKER), "w", encoding="utf-8") as handle:
        handle.write("files of a simulated Talos cluster (make sim); safe to delete once it is stopped\n")
    return argv, workdir


def ready_lines(workdir):
    def lines(cluster):
        rotation_dir = os.path.join(workdir, "rotation")
        plugin_file = os.path.join(workdir, "cluster.talos.yml")
        with open(plugin_file, "w", encoding="utf-8") as handle:
            yaml.safe_dump({"plugin": "talosops.pki.talos", "talosconfig": cluster.talosconfig_path, "rotation_dir": rotation_dir},
                           handle, sort_keys=False)
        quoted = shlex.quote
        playbook = "ansible-playbook -i %s %s -e %s" % (
            quoted(cluster.inventory_path), quoted(PLAYBOOK), quoted('{"rotate_ca_dir": "%s"}' % rotation_dir))
        return [
            "plugin file   %s (talosops.pki.talos inventory plugin, rotation_dir %s)" % (plugin_file, rotation_dir),
            "",
            "In another shell (from %s):" % REPO_ROOT,
            "  export ANSIBLE_COLLECTIONS_PATH=%s PATH=%s:$PATH %s" % (
                quoted(collections_root()), quoted(os.path.dirname(sys.executable)),
                # ansible-core's DSA import warns on every start with cryptography >= 44; only that message is silenced.
                quoted("PYTHONWARNINGS=ignore:DSA is deprecated")),
            "  %s --check --diff            # dry run" % playbook,
            "  %s -e '{\"rotate_ca_phases\": [\"accept\"]}'   # then [swap], then [remove]" % playbook,
            "  ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED=true ansible-inventory -i %s --graph --vars" % quoted(plugin_file),
            "  talosctl --talosconfig %s -n %s version" % (quoted(cluster.talosconfig_path), cluster.endpoint),
            "  kubectl --kubeconfig %s get nodes" % quoted(cluster.kubeconfig_path),
            "",
        ]
    return lines


def main(argv=None):
    arguments = sys.argv[1:] if argv is None else argv
    if "-h" in arguments or "--help" in arguments:
        print(__doc__)
        return sim_main(["--help"])
    arguments, workdir = workdir_of(arguments)
    return sim_main(arguments, ready_lines=ready_lines(workdir))


if __name__ == "__main__":
    sys.exit(main())
