#!/usr/bin/env python
"""Check the example AWX execution environment (docs/awx/execution-environment.yml) without a container engine.

1. `ansible-galaxy collection build` of the working tree, next to a copy of the EE definition,
   as docs/awx/README.md tells users to do. The tarball name the EE installs must match
   galaxy.yml's version (a release bump that forgets the EE fails here).
2. `ansible-builder create` of that definition into a temporary build context.
3. The context must carry the tarball byte for byte, a galaxy requirements file that installs it,
   and a Containerfile whose galaxy stage installs those requirements and whose builder stage runs
   ansible-builder's introspection.
4. The two image stages that matter are then rehearsed on the host: the galaxy stage
   (`ansible-galaxy collection install --offline -r requirements.yml`, from the context's _build
   directory, which the image has at /build) and the builder stage's introspection, with the
   context's own introspect.py. What it writes - the Python and system packages the image gets -
   must hold every line of requirements.txt and bindep.txt, found through
   meta/execution-environment.yml of the installed collection.

Usage: tools/ci/ee_check.py   (run with the project's virtual environment on PATH)
"""
import filecmp
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml
from packaging.requirements import Requirement

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EE_FILE = os.path.join(ROOT, "docs", "awx", "execution-environment.yml")
NAMESPACE, NAME = "talosops", "pki"
TRAILING_COMMENT = re.compile(r"\s+#.*$")


def run(command, **kwargs):
    print("+ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, **kwargs)


def requirement_lines(path):
    """Non-empty, non-comment lines of a pip or bindep file, trailing comments removed."""
    with open(path, encoding="utf-8") as handle:
        lines = (TRAILING_COMMENT.sub("", line).strip() for line in handle)
        return [line for line in lines if line and not line.startswith("#")]


def pip_key(line):
    requirement = Requirement(line)
    return requirement.name.lower().replace("_", "-"), str(requirement.specifier)


def check_definition(definition, tarball_name):
    """Problems with the EE definition's way of installing the collection."""
    problems = []
    sources = [entry.get("src") for entry in definition.get("additional_build_files") or ()]
    if tarball_name not in sources:
        problems.append("additional_build_files does not copy %s (galaxy.yml's version) into the build context; it has %s"
                        % (tarball_name, sources))
    collections = (definition.get("dependencies") or {}).get("galaxy", {}).get("collections") or []
    names = [entry.get("name") for entry in collections if isinstance(entry, dict) and entry.get("type") == "file"]
    if not any(os.path.basename(name or "") == tarball_name for name in names):
        problems.append("dependencies.galaxy does not install %s (type: file); it lists %s" % (tarball_name, names))
    return problems


def check_context(context, tarball, tarball_name):
    """Problems with the generated build context."""
    problems = []
    build = os.path.join(context, "_build")
    copied = os.path.join(build, "collections", tarball_name)
    if not os.path.isfile(copied) or not filecmp.cmp(copied, tarball, shallow=False):
        problems.append("_build/collections/%s is missing or differs from the built tarball" % tarball_name)
    with open(os.path.join(build, "requirements.yml"), encoding="utf-8") as handle:
        galaxy = yaml.safe_load(handle) or {}
    for entry in galaxy.get("collections") or ():
        # The galaxy stage runs in /build, a copy of _build: relative names resolve there.
        if entry.get("type") == "file" and not os.path.isfile(os.path.join(build, entry["name"])):
            problems.append("_build/requirements.yml installs %s, which is not in the build context" % entry["name"])
    with open(os.path.join(context, "Containerfile"), encoding="utf-8") as handle:
        containerfile = handle.read()
    for needle in ("COPY _build /build", "WORKDIR /build", "ansible-galaxy collection install", "-r requirements.yml",
                   "introspect.py introspect"):
        if needle not in containerfile:
            problems.append("the Containerfile has no %r: the image would not install or introspect the collection" % needle)
    return problems


def check_introspection(pip_file, bindep_file):
    """Problems: lines of requirements.txt / bindep.txt the image would not install."""
    problems = []
    wanted = {pip_key(line) for line in requirement_lines(os.path.join(ROOT, "requirements.txt"))}
    found = {pip_key(line) for line in requirement_lines(pip_file)}
    for name, specifier in sorted(wanted - found):
        problems.append("Python requirement %s%s is not in what the image installs (%s)" % (name, specifier, sorted(found)))
    wanted_system = set(requirement_lines(os.path.join(ROOT, "bindep.txt")))
    found_system = set(requirement_lines(bindep_file))
    for line in sorted(wanted_system - found_system):
        problems.append("system requirement %r is not in what the image installs (%s)" % (line, sorted(found_system)))
    return problems


def main():
    with open(os.path.join(ROOT, "galaxy.yml"), encoding="utf-8") as handle:
        version = yaml.safe_load(handle)["version"]
    tarball_name = "%s-%s-%s.tar.gz" % (NAMESPACE, NAME, version)
    with open(EE_FILE, encoding="utf-8") as handle:
        definition = yaml.safe_load(handle)
    problems = check_definition(definition, tarball_name)
    if problems:
        sys.exit("docs/awx/execution-environment.yml:\n  " + "\n  ".join(problems))

    work = tempfile.mkdtemp(prefix="talosops-pki-ee-")
    try:
        ee_dir = os.path.join(work, "ee")
        os.makedirs(ee_dir)
        shutil.copy(EE_FILE, ee_dir)
        run(["ansible-galaxy", "collection", "build", "--output-path", ee_dir, ROOT], cwd=ROOT)
        tarball = os.path.join(ee_dir, tarball_name)
        context = os.path.join(work, "context")
        run(["ansible-builder", "create", "--file", os.path.join(ee_dir, "execution-environment.yml"), "--context", context,
             "--output-filename", "Containerfile"])
        problems = check_context(context, tarball, tarball_name)
        if problems:
            sys.exit("ansible-builder build context:\n  " + "\n  ".join(problems))

        # Galaxy stage, as in the image: from /build (the context's _build), offline.
        collections = os.path.join(work, "image", "usr", "share", "ansible", "collections")
        env = dict(os.environ)
        env.pop("ANSIBLE_COLLECTIONS_PATH", None)
        run(["ansible-galaxy", "collection", "install", "--offline", "-r", "requirements.yml", "--collections-path",
             collections], cwd=os.path.join(context, "_build"), env=env)
        # Builder stage: the context's own introspection script, on what the galaxy stage installed.
        pip_file = os.path.join(work, "image", "requirements.txt")
        bindep_file = os.path.join(work, "image", "bindep.txt")
        run([sys.executable, os.path.join(context, "_build", "scripts", "introspect.py"), "introspect", collections,
             "--write-pip", pip_file, "--write-bindep", bindep_file], env=env)
        problems = check_introspection(pip_file, bindep_file)
        if problems:
            sys.exit("execution environment requirements:\n  " + "\n  ".join(problems))
        print("the image would install: " + ", ".join(requirement_lines(pip_file) + requirement_lines(bindep_file)))
    except subprocess.CalledProcessError as exc:
        sys.exit("execution environment check failed (exit %d)" % exc.returncode)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("execution environment definition, build context and introspected requirements: OK")


if __name__ == "__main__":
    main()
