#!/usr/bin/env python
"""Write an offline stand-in for the get-pip script that `ansible-test --venv` bootstraps with.

ansible-test creates each of its virtual environments without pip, then runs
~/.ansible/test/cache/get_pip_<version>.py, downloading it from ci-files.testing.ansible.com
when it is not cached. That host is not reachable from CI (only package registries are), so
this writes a stand-in there: it runs `ensurepip` and then `pip install` with the arguments
ansible-test passes (minus get-pip's own --no-setuptools/--no-wheel).

ansible-test runs pip with only HOME, PATH and LC_ALL from our environment, so pip settings
given as PIP_* variables (index, find-links, cert...) would be lost. The stand-in therefore
carries the PIP_* variables present when it was written, uses them for the bootstrap, and
writes them into the new environment's own pip.conf (sys.prefix/pip.conf), where every later
pip call ansible-test makes in that environment finds them. Config files (/etc/pip.conf,
~/.config/pip/pip.conf) are found anyway, since HOME is passed.

The pip version is read from the installed ansible_test package. A cached file that this
script did not write (a real get-pip) is left alone.

Usage: tools/ci/get_pip_standin.py   (prints the path of the stand-in)
"""
import configparser
import importlib.util
import io
import os
import re
import sys
import types

MARKER = "# talosops.pki: offline get-pip stand-in, written by tools/ci/get_pip_standin.py"
DEFAULT_CERT = "/etc/ssl/certs/ca-certificates.crt"
# PIP_* variables that must not be copied: ansible-test sets the first itself, the second
# names a config file that may not exist where the environment is used.
SKIPPED_PIP_VARIABLES = {"PIP_BREAK_SYSTEM_PACKAGES", "PIP_CONFIG_FILE"}

STANDIN = '''\
{marker}
"""Run ensurepip, then `pip install` the packages ansible-test asks get-pip for."""
import os
import subprocess
import sys

PIP_ENV = {pip_env!r}
PIP_CONF = {pip_conf!r}
CERT = {cert!r}
DROPPED = ("--no-setuptools", "--no-wheel")


def main():
    env = dict(os.environ)
    for name, value in PIP_ENV.items():
        env.setdefault(name, value)
    if PIP_CONF and sys.prefix != sys.base_prefix:
        with open(os.path.join(sys.prefix, "pip.conf"), "w", encoding="utf-8") as handle:
            handle.write(PIP_CONF)
    run([sys.executable, "-m", "ensurepip"], env)
    command = [sys.executable, "-m", "pip", "install", "--quiet"]
    if CERT and os.path.exists(CERT):
        command += ["--cert", CERT]
    command += [arg for arg in sys.argv[1:] if arg not in DROPPED]
    run(command, env)


def run(command, env):
    """Run quietly; show the output only when the command fails."""
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if result.returncode:
        sys.stdout.write(result.stdout.decode(errors="replace"))
        sys.exit("get-pip stand-in: %s failed with exit %d" % (" ".join(command[1:4]), result.returncode))


main()
'''


def pip_version():
    """The pip version ansible-test bootstraps for this Python."""
    python_version = "%d.%d" % sys.version_info[:2]
    try:
        from ansible_test._internal.python_requirements import get_venv_packages  # pylint: disable=import-outside-toplevel

        return get_venv_packages(types.SimpleNamespace(version=python_version))["pip"]
    except Exception:  # pylint: disable=broad-except
        # Internal API: fall back to reading the literal from the source.
        spec = importlib.util.find_spec("ansible_test")
        if spec is None or not spec.submodule_search_locations:
            sys.exit("ansible_test is not installed in %s" % sys.prefix)
        source = os.path.join(list(spec.submodule_search_locations)[0], "_internal", "python_requirements.py")
        with open(source, encoding="utf-8") as handle:
            match = re.search(r"\bpip='([0-9][0-9.]*)'", handle.read())
        if not match:
            sys.exit("cannot find the pip version ansible-test bootstraps in %s" % source)
        return match.group(1)


def pip_environment():
    return {name: value for name, value in sorted(os.environ.items())
            if name.startswith("PIP_") and name not in SKIPPED_PIP_VARIABLES}


def pip_conf(pip_env):
    """The PIP_* variables as a pip.conf [global] section (PIP_FIND_LINKS -> find-links)."""
    if not pip_env:
        return ""
    parser = configparser.ConfigParser(interpolation=None)
    parser["global"] = {name[4:].lower().replace("_", "-"): value for name, value in pip_env.items()}
    text = io.StringIO()
    parser.write(text)
    return text.getvalue()


def main():
    version = pip_version()
    path = os.path.expanduser("~/.ansible/test/cache/get_pip_%s.py" % version.replace(".", "_"))
    pip_env = pip_environment()
    cert = os.environ.get("PIP_CERT") or (DEFAULT_CERT if os.path.exists(DEFAULT_CERT) else "")
    text = STANDIN.format(marker=MARKER, pip_env=pip_env, pip_conf=pip_conf(pip_env), cert=cert)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            current = handle.read()
        if not current.startswith(MARKER):
            print(path)  # a real get-pip script: keep it
            return
        if current == text:
            print(path)
            return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = "%s.%d" % (path, os.getpid())
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)
    print(path)


if __name__ == "__main__":
    main()
