#!/usr/bin/env python
"""Mirror the checkout into an ansible_collections/talosops/pki tree for `ansible-test sanity`.

ansible-test needs the collection at a real .../ansible_collections/<namespace>/<name> path
(not a symlink), but this repository's root is the collection root. So the files git would
commit -- tracked files plus untracked files that are not ignored, i.e. what `git status`
shows -- are copied to a fixed directory under the temporary directory, one per checkout.
Uncommitted work is checked too when run locally; a clean CI clone gives exactly HEAD.

The copy is synchronised, not rebuilt: unchanged files keep their timestamps, files that no
longer exist are removed, and tests/output/ (ansible-test's own results and delegation
environment) survives between runs, which keeps warm runs fast. The copy has no .git, so
ansible-test lists its files by walking it.

Usage: tools/ci/sanity_tree.py            (prints the collection directory of the copy)
       tools/ci/sanity_tree.py --remove   (deletes the copy; used by `make clean`)
"""
import filecmp
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
NAMESPACE, NAME = "talosops", "pki"
KEPT = ("tests/output/", ".ansible/")  # ansible-test's and ansible's working directories in the copy


def source_files():
    try:
        output = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit("tools/ci/sanity_tree.py needs a git checkout with git installed: %s" % exc)
    paths = set()
    for raw in output.split(b"\0"):
        path = os.fsdecode(raw)
        full = os.path.join(ROOT, path)
        # Deleted-but-tracked files are listed and missing; submodules are directories.
        if path and (os.path.islink(full) or os.path.isfile(full)):
            paths.add(path)
    return paths


def same(source, target):
    if os.path.islink(source) or os.path.islink(target):
        return os.path.islink(source) and os.path.islink(target) and os.readlink(source) == os.readlink(target)
    return os.path.isfile(target) and filecmp.cmp(source, target, shallow=True)


def sync(paths, tree):
    for folder, dirs, files in os.walk(tree, topdown=True):
        relative = os.path.relpath(folder, tree)
        relative = "" if relative == "." else relative + "/"
        dirs[:] = [d for d in dirs if not (relative + d + "/").startswith(KEPT)]
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            if relative + name not in paths:
                os.unlink(os.path.join(folder, name))
    for path in sorted(paths):
        source, target = os.path.join(ROOT, path), os.path.join(tree, path)
        if same(source, target):
            continue
        if os.path.lexists(target):
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            else:
                os.unlink(target)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target)
    # Remove directories left empty (bottom-up), except the kept ones.
    for folder in sorted((entry[0] for entry in os.walk(tree)), key=len, reverse=True):
        relative = os.path.relpath(folder, tree) + "/"
        if folder != tree and not relative.startswith(KEPT) and not os.listdir(folder):
            os.rmdir(folder)


def main():
    digest = hashlib.sha256(ROOT.encode()).hexdigest()[:12]
    base = os.path.join(tempfile.gettempdir(), "talosops-pki-sanity-%s" % digest)
    if sys.argv[1:] == ["--remove"]:
        shutil.rmtree(base, ignore_errors=True)
        return
    tree = os.path.join(base, "ansible_collections", NAMESPACE, NAME)
    os.makedirs(tree, exist_ok=True)
    sync(source_files(), tree)
    print(tree)


if __name__ == "__main__":
    main()
