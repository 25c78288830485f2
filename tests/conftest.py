"""Make the checkout importable as ansible_collections.talosops.pki and the simulator as talos_sim."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from collection_root import REPO_ROOT, collections_root  # noqa: E402  pylint: disable=wrong-import-position

COLLECTIONS_ROOT = collections_root()
os.environ["ANSIBLE_COLLECTIONS_PATH"] = COLLECTIONS_ROOT
for path in (COLLECTIONS_ROOT, os.path.join(REPO_ROOT, "tests", "simulator"), os.path.join(REPO_ROOT, "tests", "integration")):
    if path not in sys.path:
        sys.path.insert(0, path)
