"""Where the real Talos-generated reference files are (../shared/talos-reference beside the checkout, or
$TALOS_REFERENCE_DIR): configs and secrets bundles written by Talos itself, which the tests compare with.

A test that needs them fails when they are missing - never skips: a silent skip would let a run pass without
checking the collection against real Talos files at all.
"""

import os

import pytest

from collection_root import REPO_ROOT

ENVIRONMENT = "TALOS_REFERENCE_DIR"


def reference_dir():
    return os.environ.get(ENVIRONMENT) or os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "talos-reference"))


def reference_path(*parts):
    """The path of a reference file; fails the calling test, with what to do, when the reference folder is missing."""
    folder = reference_dir()
    if not os.path.isdir(folder):
        pytest.fail("the Talos reference files are missing: %s is not a folder. Put the shared talos-reference folder "
                    "beside the checkout (../shared/talos-reference) or point $%s at it; these tests check the "
                    "collection against files written by Talos and must not be skipped." % (folder, ENVIRONMENT),
                    pytrace=False)
    return os.path.join(folder, *parts)
