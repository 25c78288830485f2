#!/usr/bin/env python
"""Build the collection tarball, check what is in it, install it, verify and import it.

1. `ansible-galaxy collection build` from the working tree into a temporary directory.
2. Every file in the tarball must be collection content: an allowlist of top-level entries,
   and under tests/ only what ansible-test reads from a release (config.yml, sanity/).
   Dev-only files (tests/simulator, tests/unit, .venv, bench, tools, Makefile...) must have
   been dropped by galaxy.yml's build_ignore; the allowlist also catches new dev-only
   directories nobody added there.
3. `ansible-galaxy collection install --offline` of the tarball into a temporary path,
   `ansible-galaxy collection verify --offline` (installed files match FILES.json), and
   every Python file under plugins/ of the installed copy must import (catches runtime
   files that build_ignore dropped by mistake).

Usage: tools/ci/build_check.py   (run with the project's virtual environment on PATH)
"""
import fnmatch
import glob
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMESPACE, NAME = "talosops", "pki"

# Top-level entries a release may contain. proto/ is the source of the generated
# plugins/module_utils/_talos_api_pb.py, shipped with it.
ALLOWED_TOP = {
    "MANIFEST.json", "FILES.json", "README.md", "COPYING", "LICENSE", "CHANGELOG.rst", "CHANGELOG.md",
    "bindep.txt", "requirements.txt",
    "changelogs", "docs", "meta", "playbooks", "plugins", "roles", "proto", "tests",
}
ALLOWED_TESTS = ("tests/config.yml", "tests/sanity/*")
FORBIDDEN_ANYWHERE = ("__pycache__", "*.pyc", ".pytest_cache", ".ansible", "*.retry")
REQUIRED = ("MANIFEST.json", "FILES.json", "README.md", "meta/runtime.yml")


def run(command, **kwargs):
    print("+ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, **kwargs)


def content_problems(names):
    problems = []
    for name in names:
        parts = name.split("/")
        if parts[0] not in ALLOWED_TOP:
            problems.append("%s: not collection content (add it to build_ignore in galaxy.yml, "
                            "or to ALLOWED_TOP in tools/ci/build_check.py if it belongs in a release)" % name)
        elif parts[0] == "tests" and len(parts) > 1 and not any(fnmatch.fnmatch(name, p) for p in ALLOWED_TESTS):
            problems.append("%s: dev-only test file (add it to build_ignore in galaxy.yml)" % name)
        elif any(fnmatch.fnmatch(part, pattern) for part in parts for pattern in FORBIDDEN_ANYWHERE):
            problems.append("%s: generated or cache file" % name)
    for required in REQUIRED:
        if required not in names:
            problems.append("%s: missing" % required)
    if "COPYING" not in names and "LICENSE" not in names:
        problems.append("COPYING or LICENSE: missing")
    return problems


def import_plugins(collections_path):
    """Import every Python file under plugins/ of the installed collection."""
    plugins = os.path.join(collections_path, "ansible_collections", NAMESPACE, NAME, "plugins")
    modules = []
    for path in sorted(glob.glob(os.path.join(plugins, "**", "*.py"), recursive=True)):
        relative = os.path.relpath(path, collections_path)[:-3].replace(os.sep, ".")
        modules.append(relative[:-len(".__init__")] if relative.endswith(".__init__") else relative)
    if not modules:
        print("no Python files under plugins/ yet")
        return
    script = ("import importlib, sys, traceback\n"
              "sys.path.insert(0, sys.argv[1])\n"
              "failed = 0\n"
              "for name in sys.argv[2:]:\n"
              "    try:\n"
              "        importlib.import_module(name)\n"
              "    except Exception:\n"
              "        failed += 1\n"
              "        print('FAILED to import ' + name + ':\\n' + traceback.format_exc(limit=-1), flush=True)\n"
              "    else:\n"
              "        print('imported ' + name, flush=True)\n"
              "sys.exit(1 if failed else 0)\n")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    print("+ import every plugins/**/*.py of the installed collection", flush=True)
    subprocess.run([sys.executable, "-c", script, collections_path] + modules, env=env, cwd=collections_path, check=True)


def main():
    work = tempfile.mkdtemp(prefix="talosops-pki-build-")
    try:
        output = os.path.join(work, "dist")
        run(["ansible-galaxy", "collection", "build", "--output-path", output, ROOT], cwd=ROOT)
        (tarball,) = glob.glob(os.path.join(output, "%s-%s-*.tar.gz" % (NAMESPACE, NAME)))
        with tarfile.open(tarball) as archive:
            names = sorted(member.name for member in archive.getmembers() if not member.isdir())
        print("%s: %d files, %d bytes" % (os.path.basename(tarball), len(names), os.path.getsize(tarball)))
        for name in names:
            print("  " + name)
        problems = content_problems(names)
        if problems:
            sys.exit("tarball content check failed:\n  " + "\n  ".join(problems))

        collections_path = os.path.join(work, "collections")
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path)
        run(["ansible-galaxy", "collection", "install", "--offline", "-p", collections_path, tarball], env=env)
        run(["ansible-galaxy", "collection", "verify", "--offline", "%s.%s" % (NAMESPACE, NAME)], env=env)
        import_plugins(collections_path)
    except subprocess.CalledProcessError as exc:
        sys.exit("build check failed (exit %d)" % exc.returncode)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("build, install and import of the tarball: OK")


if __name__ == "__main__":
    main()
