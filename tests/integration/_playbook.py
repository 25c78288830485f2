"""Run ansible-playbook against a simulated cluster the way an operator does, and read what it did."""

import base64
import os
import re
import subprocess
import sys
import time

import yaml

from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import TalosConfig

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAYBOOK = os.path.join(REPO_ROOT, "playbooks", "rotate_talos_ca.yml")
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


class Run:
    def __init__(self, completed):
        self.returncode = completed.returncode
        self.output = completed.stdout + completed.stderr

    @property
    def recap(self):
        """{host: {"ok", "changed", "unreachable", "failed"}} from the PLAY RECAP."""
        return {m.group(1): dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups()[1:])))
                for m in RECAP.finditer(self.output)}


def run_playbook(cluster, rotation_dir, *extra_args, kill_after=None, extra_vars=None, timeout=600, inventory=None):
    """ansible-playbook on the cluster's inventory (or `inventory`); kill_after="<task substring>@<host>" SIGKILLs the run there."""
    command, env = playbook_command(cluster, rotation_dir, *extra_args, kill_after=kill_after, extra_vars=extra_vars,
                                    inventory=inventory)
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False,
                               start_new_session=True)
    return Run(completed)


def start_playbook(cluster, rotation_dir, *extra_args, output, **options):
    """The same run in the background, its output going to the open file `output`: a Popen whose pid is ansible-playbook's."""
    command, env = playbook_command(cluster, rotation_dir, *extra_args, **options)
    return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, text=True,  # pylint: disable=consider-using-with
                            start_new_session=True)


def playbook_command(cluster, rotation_dir, *extra_args, kill_after=None, extra_vars=None, inventory=None):
    """(command, environment) of an ansible-playbook run of the rotation playbook."""
    # KUBECONFIG: a run without rotate_ca_kubeconfig writes beside the rotation directory, never to the ~/.kube/config of
    # whoever runs the tests (whose entries, left by another test's cluster, would clash with this cluster's names).
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="0",
               ANSIBLE_LOCAL_TEMP=os.path.join(rotation_dir + ".ansible-tmp"), PYTHONUNBUFFERED="1",
               KUBECONFIG=rotation_dir + ".kubeconfig")
    if kill_after:
        env.update(ANSIBLE_CALLBACK_PLUGINS=os.path.join(os.path.dirname(os.path.abspath(__file__)), "callback_plugins"),
                   ANSIBLE_CALLBACKS_ENABLED="kill_switch", TALOSOPS_KILL_AFTER=kill_after)
    variables = {"rotate_ca_dir": rotation_dir}
    variables.update(extra_vars or {})
    command = [ANSIBLE_PLAYBOOK, "-i", str(inventory or cluster.inventory_path), PLAYBOOK, "-f", "10",
               "-e", yaml.safe_dump(variables, default_flow_style=True).strip()] + list(extra_args)
    return command, env


def lock_released(rotation_dir, seconds=10.0):
    """True once the rotation lock's holder has removed rotation.lock, which it does right after ansible-playbook ends."""
    deadline = time.monotonic() + seconds
    while os.path.lexists(os.path.join(rotation_dir, "rotation.lock")):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def node_ca_fields(node):
    """(issuing certificate DER, [accepted DER]) of a simulated node's Talos API CA, read from its config."""
    documents = [d for d in yaml.safe_load_all(node.config_bytes()) if d]
    machine = next(d for d in documents if "machine" in d)["machine"]

    def der(b64_pem):
        return pem_to_der(base64.b64decode(b64_pem))
    return der(machine["ca"]["crt"]), [der(item["crt"]) for item in machine.get("acceptedCAs") or []]


def pem_to_der(pem):
    body = b"".join(line for line in pem.strip().splitlines() if not line.startswith(b"-----"))
    return base64.b64decode(body)


def cluster_private_keys(cluster):
    """Every private key of a simulated cluster's secrets bundle, talosconfig and kubeconfig (PEM)."""
    with open(cluster.secrets_path, encoding="utf-8") as handle:
        certs = yaml.safe_load(handle)["certs"]
    keys = [base64.b64decode(entry["key"]) for entry in certs.values() if entry.get("key")]
    keys.append(TalosConfig.load(cluster.talosconfig_path).get_context().key)
    keys.append(Kubeconfig.load(cluster.kubeconfig_path).credentials().key)
    return keys


def cluster_secret_values(cluster):
    """The secrets of a simulated cluster that are not keys: trustd and bootstrap tokens, cluster secret, encryption secret.

    They sit in every node's machine config (machine.token, cluster.token, cluster.secret or the DiscoveryIdentityConfig's
    clusterSecret, cluster.secretboxEncryptionSecret), next to the CA fields a rotation changes.
    """
    with open(cluster.secrets_path, encoding="utf-8") as handle:
        bundle = yaml.safe_load(handle)
    values = {bundle["cluster"]["secret"], bundle["secrets"]["bootstraptoken"], bundle["trustdinfo"]["token"],
              bundle["secrets"]["secretboxencryptionsecret"]}
    # A token is "<id>.<secret>": its secret half alone must not leak either.
    return values | {value.split(".", 1)[1] for value in values if "." in value}


def private_key_needles(*pems):
    """Ways a private key could leak into text: its PEM body lines, its PEM in base64, and the PEM base64 lines."""
    needles = set()
    for pem in pems:
        lines = [line for line in pem.strip().splitlines() if not line.startswith(b"-----")]
        needles.update(line.decode() for line in lines if len(line) >= 20)
        encoded = base64.b64encode(pem).decode()
        needles.update(encoded[i:i + 40] for i in range(0, max(len(encoded) - 40, 1), 40))
    return needles
