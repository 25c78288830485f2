#!/usr/bin/env python
"""What the secret redaction and the in-memory key loading cost per task.

Redaction: _redact.redact over a node's dry-run diff whose context is its whole machine config (the worst case: real
diffs show 3 lines around each change), for the v1.13 and v1.15 shapes of a control plane. Key loading:
_files.load_cert_chain (memory files) against the 0700 temporary folder it replaces. Audit log: one locked, fsynced append (in TMPDIR).
Prints milliseconds per call.

Usage: bench/redaction.py [--rounds 200]
"""

import argparse
import difflib
import os
import ssl
import tempfile
import time

# Import paths: talos_sim, the collection.
import _common  # noqa: F401  pylint: disable=unused-import

from talos_sim import machineconfig  # pylint: disable=wrong-import-order

from ansible_collections.talosops.pki.plugins.module_utils import _files, _pki  # pylint: disable=wrong-import-order
from ansible_collections.talosops.pki.plugins.module_utils._redact import redact  # pylint: disable=wrong-import-order


def per_call(function, rounds):
    started = time.perf_counter()
    for _round in range(rounds):
        function()
    return (time.perf_counter() - started) / rounds * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    secrets = machineconfig.ClusterSecrets.generate("bench")
    for tag in ("v1.13.4", "v1.15.0"):
        config = machineconfig.generate(secrets, "controlplane", machineconfig.TalosVersion.parse(tag), "10.5.0.2", "v1.33.0").decode()
        changed = config.replace("    certSANs: []\n", "    certSANs: []\n    acceptedCAs:\n        - crt: QUJD\n", 1)
        diff = "".join(difflib.unified_diff(config.splitlines(True), changed.splitlines(True), "a", "b", n=100000))
        print("redact, whole-config dry-run diff of a %s control plane (%d bytes): %.2f ms" % (
            tag, len(diff), per_call(lambda text=diff: redact(text), args.rounds)))
    pair = _pki.generate_ca("kubernetes")

    def from_memory():
        _files.load_cert_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), pair.crt, pair.key)

    def through_a_folder():
        with _files.private_tempdir() as folder:
            paths = [os.path.join(folder, name) for name in ("client.crt", "client.key")]
            for path, data in zip(paths, (pair.crt, pair.key)):
                with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as stream:
                    stream.write(data)
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(*paths)
    print("client pair into an SSL context, memory files: %.3f ms; 0700 temporary folder: %.3f ms (TMPDIR %s)" % (
        per_call(from_memory, args.rounds), per_call(through_a_folder, args.rounds), tempfile.gettempdir()))
    with tempfile.TemporaryDirectory() as folder:
        log = os.path.join(folder, "audit.jsonl")
        line = b'{"event": "node_patched", "node": "10.5.0.2", "phase": "accept"}'
        print("audit log append (flock, write, fsync): %.3f ms" % per_call(lambda: _files.append_line(log, line), args.rounds))


if __name__ == "__main__":
    main()
