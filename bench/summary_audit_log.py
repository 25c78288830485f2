#!/usr/bin/env python
"""How long talos_rotation_summary takes to read a large rotation's audit log and summarise it.

Writes, into a temporary rotation folder, the audit log of an earlier run (accept on every node) and of this run (swap
and remove on every node, in waves of --wave-size, with a node_patched entry per node and a wave_patched entry per
wave), then runs the summary's backend --rounds times and prints the time per summary, the entries read and the peak
RSS of this process. The goal: the summary is a small part of a run's end, even for 300 nodes (well under a second).

Usage: bench/summary_audit_log.py [--controlplanes 3] [--workers 297] [--wave-size 100] [--rounds 5]
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tests")]

from collection_root import collections_root  # noqa: E402  pylint: disable=wrong-import-position

sys.path.insert(0, collections_root())

from ansible_collections.talosops.pki.plugins.module_utils import _pki, _rotation_store  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.talosops.pki.plugins.module_utils._backends import rotation_summary  # noqa: E402  pylint: disable=wrong-import-position


def stamp(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + ".%06dZ" % int((epoch % 1) * 1e6)


def write_log(rotation, controlplanes, workers, wave_size, started):
    """An earlier run's accept, then this run's swap and remove, in waves; returns the number of entries written."""
    entries, clock = [], started - 3600.0
    for phase, before, after in (("accept", "pending", "accepted"), ("swap", "accepted", "swapped"), ("remove", "swapped", "removed")):
        if phase == "swap":
            clock = started + 1.0
        for tier, nodes, size in (("controlplane", controlplanes, len(controlplanes)), ("worker", workers, wave_size)):
            for number, first in enumerate(range(0, len(nodes), size), start=1):
                wave = nodes[first:first + size]
                for node in wave:
                    entries.append({"event": "node_patched", "time": stamp(clock + 0.2), "kind": "talos", "node": node,
                                    "phase": phase, "progress_before": before, "progress_after": after, "seconds": 0.2})
                entries.append({"event": "wave_patched", "time": stamp(clock + 0.25), "kind": "talos", "ca": "talos",
                                "phase": phase, "machine_type": tier, "wave": number, "nodes": wave, "changed_nodes": wave,
                                "failed_nodes": [], "started": clock, "finished": clock + 0.25, "seconds": 0.25})
                clock += 0.3
    with open(rotation.file(_rotation_store.AUDIT_LOG), "a", encoding="utf-8") as handle:
        for entry in entries:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
    return len(entries)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controlplanes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=297)
    parser.add_argument("--wave-size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    controlplanes = ["10.5.0.%d" % (2 + index) for index in range(args.controlplanes)]
    workers = ["10.6.%d.%d" % divmod(index, 250) for index in range(args.workers)]
    started = time.time() - 60
    with tempfile.TemporaryDirectory() as folder:
        rotation = _rotation_store.create(os.path.join(folder, "talos"), "talos", _pki.generate_ca("talos").crt,
                                          _pki.generate_ca("talos"))
        written = write_log(rotation, controlplanes, workers, args.wave_size, started)
        preflight = {node: {"talos": {"progress": "accepted"}} for node in controlplanes + workers}
        params = {name: spec.get("default") for name, spec in rotation_summary.ARGUMENT_SPEC.items()}
        params.update(kind="talos", rotation_dir=rotation.path, controlplanes=controlplanes, workers=workers,
                      node_names={node: "node-%d" % index for index, node in enumerate(controlplanes + workers)},
                      phases=["swap", "remove"], since=stamp(started), preflight_nodes=preflight)
        begin = time.perf_counter()
        for _round in range(args.rounds):
            result = rotation_summary.run(params)
        seconds = (time.perf_counter() - begin) / args.rounds
    moved = sum(1 for row in result["summary"]["nodes"] if row["before"] != row["after"])
    print("summary of %d nodes from an audit log of %d entries (%d waves this run): %.3f s; %d nodes moved; "
          "peak RSS %.0f MiB" % (len(controlplanes) + len(workers), written, len(result["summary"]["waves"]), seconds, moved,
                                 resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    print(result["lines"][0])
    print("\n".join(line for line in result["lines"] if "wave" in line or "seconds" in line))


if __name__ == "__main__":
    main()
