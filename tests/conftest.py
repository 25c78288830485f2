"""Make the checkout importable as ansible_collections.talosops.pki for pytest.

The repository root is the collection root, so tests see it through a symlinked
ansible_collections/talosops/pki tree outside the checkout (nothing is written inside it).
The same tree is what ansible-playbook finds through ANSIBLE_COLLECTIONS_PATH.
"""

import hashlib
import os
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIMULATOR_DIR = os.path.join(REPO_ROOT, "tests", "simulator")


def _collections_root():
    digest = hashlib.sha256(REPO_ROOT.encode()).hexdigest()[:12]
    root = os.path.join(tempfile.gettempdir(), "talosops-pki-collections-%s" % digest)
    link = os.path.join(root, "ansible_collections", "talosops", "pki")
    if os.path.realpath(link) != REPO_ROOT:
        os.makedirs(os.path.dirname(link), exist_ok=True)
        tmp_link = "%s.%d" % (link, os.getpid())
        os.symlink(REPO_ROOT, tmp_link)
        os.replace(tmp_link, link)
    return root


COLLECTIONS_ROOT = _collections_root()
os.environ["ANSIBLE_COLLECTIONS_PATH"] = COLLECTIONS_ROOT
for path in (COLLECTIONS_ROOT, SIMULATOR_DIR):
    if path not in sys.path:
        sys.path.insert(0, path)
