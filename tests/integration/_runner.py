"""Run the rotation as AWX runs a job: `ansible-runner run` on a private_data_dir laid out as AWX prepares it.

    <private_data_dir>/project/rotate_talos_ca.yml   the job template's playbook (a copy of playbooks/rotate_talos_ca.yml)
    <private_data_dir>/inventory/hosts               the inventory (the simulated cluster's, without talos_talosconfig)
    <private_data_dir>/env/extravars                 the job's extra variables (rotate_ca_dir on a volume, ...)
    <private_data_dir>/env/envvars                   ANSIBLE_COLLECTIONS_PATH and the credential's TALOSCONFIG / TALOSOPS_CONTEXT
    <private_data_dir>/env/tmpXXXXXXXX               the talosconfig the credential type's file injector writes (0600)
    <private_data_dir>/env/cmdline                   extra ansible-playbook arguments of the job (--check, --diff, -v)
    <private_data_dir>/env/passwords                 answers to prompts (the vault password of a Vault credential)

The job runs the venv's ansible-runner CLI without --process-isolation, in an environment holding nothing of the
test process's ANSIBLE_* or TALOSCONFIG variables, with HOME in the test's tmp_path (no ~/.talos/config to fall
back on): the collection is found only through env/envvars and the talosconfig only through TALOSCONFIG.
Secrets never go into an env var: ansible-runner records the whole environment in artifacts/<ident>/command.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

from collection_root import collections_root

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAYBOOK = os.path.join(REPO_ROOT, "playbooks", "rotate_talos_ca.yml")
PLAYBOOK_NAME = os.path.basename(PLAYBOOK)
VENV_BIN = os.path.dirname(sys.executable)
ANSIBLE_RUNNER = os.path.join(VENV_BIN, "ansible-runner")
CALLBACK_PLUGINS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "callback_plugins")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def _write(path, data, mode=0o600):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


class Job:
    """A finished ansible-runner job: its private_data_dir, exit code, artifacts."""

    def __init__(self, private_data_dir, ident, completed, talosconfig_path):
        self.private_data_dir = private_data_dir
        self.ident = ident
        self.returncode = completed.returncode
        self.runner_output = completed.stdout + completed.stderr
        self.talosconfig_path = talosconfig_path

    @property
    def artifact_dir(self):
        return os.path.join(self.private_data_dir, "artifacts", self.ident)

    def _artifact(self, name):
        path = os.path.join(self.artifact_dir, name)
        if not os.path.exists(path):
            return ""
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    @property
    def status(self):
        return self._artifact("status").strip()

    @property
    def stdout(self):
        """The job's output as AWX shows it (artifacts/<ident>/stdout), without colour codes."""
        return ANSI_ESCAPE.sub("", self._artifact("stdout"))

    def events(self):
        """The job events (artifacts/<ident>/job_events/*.json) in the order they were emitted."""
        folder = os.path.join(self.artifact_dir, "job_events")
        events = []
        for name in os.listdir(folder) if os.path.isdir(folder) else ():
            if name.endswith(".json"):
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    events.append(json.load(handle))
        return sorted(events, key=lambda event: event.get("counter", 0))

    def failures(self):
        """[(task name, host, result)] of the failed task events."""
        return [(event["event_data"].get("task", ""), event["event_data"].get("host", ""), event["event_data"].get("res", {}))
                for event in self.events() if event.get("event") == "runner_on_failed"]

    def explain(self, tail=6000):
        """What to print when an assertion on this job fails."""
        return "ansible-runner exited %s, status %r\n%s\n%s" % (
            self.returncode, self.status, self.stdout[-tail:], self.runner_output[-2000:])


def prepare_private_data_dir(private_data_dir, cluster, rotation_dir, credential_talosconfig, extravars=None, cmdline=None,
                             envvars=None, passwords=None):
    """Lay out a fresh private_data_dir for one job; returns the path of the injected talosconfig file.

    credential_talosconfig: the bytes the AWX credential holds (the same for every job until someone updates it).
    """
    if os.path.exists(private_data_dir):
        raise AssertionError("a job gets a fresh private_data_dir: %s exists" % private_data_dir)
    os.makedirs(os.path.join(private_data_dir, "env"), mode=0o700)
    project = os.path.join(private_data_dir, "project")
    os.makedirs(project)
    shutil.copyfile(PLAYBOOK, os.path.join(project, PLAYBOOK_NAME))

    # AWX's inventory from the talosops.pki.talos source carries no talos_talosconfig (docs/awx/README.md): each job
    # finds its own copy of the credential through TALOSCONFIG.
    with open(cluster.inventory_path, encoding="utf-8") as handle:
        inventory = yaml.safe_load(handle)
    inventory["all"]["vars"].pop("talos_talosconfig", None)
    _write(os.path.join(private_data_dir, "inventory", "hosts"),
           yaml.safe_dump(inventory, sort_keys=False, default_flow_style=False).encode(), mode=0o644)

    # The credential type's file injector: AWX renders the template into a mkstemp file in env/, mode 0600.
    handle, talosconfig_path = tempfile.mkstemp(dir=os.path.join(private_data_dir, "env"))
    os.close(handle)
    _write(talosconfig_path, credential_talosconfig)

    variables = {"rotate_ca_dir": rotation_dir}
    variables.update(extravars or {})
    _write(os.path.join(private_data_dir, "env", "extravars"), yaml.safe_dump(variables, default_flow_style=False).encode())

    environment = {"ANSIBLE_COLLECTIONS_PATH": collections_root(), "TALOSCONFIG": talosconfig_path, "TALOSOPS_CONTEXT": ""}
    environment.update(envvars or {})
    _write(os.path.join(private_data_dir, "env", "envvars"), yaml.safe_dump(environment, default_flow_style=False).encode())

    if cmdline:
        _write(os.path.join(private_data_dir, "env", "cmdline"), cmdline.encode())
    if passwords:
        # As AWX answers prompts (a Vault credential: --ask-vault-pass, "Vault password:"): env/passwords, never an env var.
        _write(os.path.join(private_data_dir, "env", "passwords"), yaml.safe_dump(passwords, default_flow_style=False).encode())
    return talosconfig_path


def kill_switch_envvars(kill_after):
    """env/envvars entries enabling the test-only kill_switch callback: SIGKILL the job after "<task substring>@<host>"."""
    return {"ANSIBLE_CALLBACK_PLUGINS": CALLBACK_PLUGINS, "ANSIBLE_CALLBACKS_ENABLED": "kill_switch", "TALOSOPS_KILL_AFTER": kill_after}


def job_environment(home):
    """The environment ansible-runner starts from: no ANSIBLE_*, TALOSCONFIG or KUBECONFIG of the test process."""
    os.makedirs(home, exist_ok=True)
    environment = {"PATH": os.pathsep.join([VENV_BIN, os.environ.get("PATH", "/usr/bin:/bin")]), "HOME": home,
                   "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    if "TMPDIR" in os.environ:
        environment["TMPDIR"] = os.environ["TMPDIR"]
    return environment


def run_job(private_data_dir, cluster, rotation_dir, credential_talosconfig, *, ident="1", extravars=None, cmdline=None,
            envvars=None, passwords=None, timeout=600):
    """Prepare a fresh private_data_dir and run `ansible-runner run` on it; returns the Job."""
    private_data_dir = os.fspath(private_data_dir)
    talosconfig_path = prepare_private_data_dir(private_data_dir, cluster, rotation_dir, credential_talosconfig,
                                                extravars=extravars, cmdline=cmdline, envvars=envvars, passwords=passwords)
    command = [ANSIBLE_RUNNER, "run", private_data_dir, "-p", PLAYBOOK_NAME, "--ident", ident]
    completed = subprocess.run(command, env=job_environment(private_data_dir + ".home"), capture_output=True, text=True,
                               timeout=timeout, check=False, start_new_session=True)
    return Job(private_data_dir, ident, completed, talosconfig_path)


def _strings(value):
    """Every string inside a decoded JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def artifact_texts(private_data_dir):
    """{path: text} of every file under private_data_dir/artifacts (recursively), as written and as decoded.

    JSON files are also searched through their decoded strings (a PEM's newlines are "\\n" in the file), and every
    text also without terminal colour codes.
    """
    texts = {}
    root = os.path.join(private_data_dir, "artifacts")
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            raw = read(path).decode("utf-8", errors="replace")
            parts = [raw, ANSI_ESCAPE.sub("", raw)]
            try:
                parts.extend(_strings(json.loads(raw)))
            except ValueError:
                pass
            texts[path] = "\n".join(parts)
    return texts
