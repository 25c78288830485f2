"""Expose the checkout as ansible_collections/talosops/pki (the repository root is the collection root).

A symlinked tree outside the checkout, so nothing is written inside it; tests, the demo and
benchmarks point ANSIBLE_COLLECTIONS_PATH (and sys.path) at it.
"""

import hashlib
import os
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def collections_root(root=None):
    """The ansible_collections root (`root`, default a folder named after the checkout in the system temp directory)."""
    if root is None:
        digest = hashlib.sha256(REPO_ROOT.encode()).hexdigest()[:12]
        root = os.path.join(tempfile.gettempdir(), "talosops-pki-collections-%s" % digest)
    link = os.path.join(root, "ansible_collections", "talosops", "pki")
    if os.path.realpath(link) != REPO_ROOT:
        os.makedirs(os.path.dirname(link), exist_ok=True)
        tmp_link = "%s.%d" % (link, os.getpid())
        os.symlink(REPO_ROOT, tmp_link)
        os.replace(tmp_link, link)
    return root
