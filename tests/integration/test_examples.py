"""Every EXAMPLES block of the collection runs as written against a simulated cluster.

The examples are read from the plugin sources (what `ansible-doc` shows) and only these things are replaced, as a user
copying them replaces them: the example addresses 10.5.0.N (10.5.0.2-4 the control planes, 10.5.0.5-6 the workers, any
other a free address of the cluster's /24), the host name cp-N, and the absolute folders /var/lib/talos-rotation and
/srv/automation (moved under the test's folder). `~` is a private HOME holding the cluster's talosconfig as
~/.talos/config (and ~/.talos/prod-config) and its secrets bundle as ~/clusters/prod/secrets.yaml; the simulated
cluster is named prod, so its talosconfig context is `prod` as in the examples.

The module examples are chained the way a rotation chains them (each example runs where its state makes sense, e.g.
the swap-only preflight after the accept phase); the few steps no example shows are setup tasks written here.
talos_kubernetes_restart needs workloads, which the simulated Kubernetes API has not: it runs against the unit tests'
fake API that serves them.
"""

import ast
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from _playbook import ANSIBLE_PLAYBOOK, REPO_ROOT, playbook_command
from test_inventory_plugin import plain

from ansible_collections.talosops.pki.plugins.module_utils import _pki

sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "unit", "plugins", "module_utils", "_backends"))
from _fake_kube_api import FakeKubeAPI  # noqa: E402  pylint: disable=wrong-import-position,import-error

ANSIBLE_INVENTORY = os.path.join(os.path.dirname(sys.executable), "ansible-inventory")
MODULES = sorted(os.path.basename(path)[:-3] for path in glob.glob(os.path.join(REPO_ROOT, "plugins", "modules", "*.py")))
INVENTORY_PLUGIN = os.path.join(REPO_ROOT, "plugins", "inventory", "talos.py")


def examples_text(path):
    """The EXAMPLES string of a plugin source, read without importing it."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == "EXAMPLES" for target in node.targets):
            return node.value.value
    raise AssertionError("%s has no EXAMPLES" % path)


class Examples:
    """The examples of every module, adapted to one simulated cluster; records which ones were used."""

    def __init__(self, cluster, folder):
        self.cluster = cluster
        self.folder = folder
        self.used = set()
        self.tasks = {}
        for module in MODULES:
            text = self.adapt(examples_text(os.path.join(REPO_ROOT, "plugins", "modules", module + ".py")))
            self.tasks[module] = yaml.safe_load(text)

    def adapt(self, text):
        nodes = self.cluster.controlplanes + self.cluster.workers

        def address(match):
            number = int(match.group(1))
            return nodes[number - 2].address if 2 <= number < 2 + len(nodes) else "%s.%d" % (self.cluster.subnet, number)
        text = re.sub(r"\b10\.5\.0\.(\d+)\b", address, text)
        text = re.sub(r"\bcp-(\d+)\b", lambda match: self.cluster.controlplanes[int(match.group(1)) - 1].name, text)
        for absolute in ("/var/lib/talos-rotation", "/srv/automation"):
            text = text.replace(absolute, os.path.join(self.folder, absolute.strip("/").replace("/", "-")))
        return text

    def __call__(self, module, index, **keywords):
        """Example `index` of `module` as a task, with task keywords added (e.g. check_mode)."""
        self.used.add((module, index))
        task = dict(self.tasks[module][index])
        task.update(keywords)
        return task

    def unused(self):
        return sorted((module, index) for module, tasks in self.tasks.items() for index in range(len(tasks))
                      if (module, index) not in self.used)


def play(hosts, tasks):
    return {"name": "examples on %s" % hosts, "hosts": hosts, "gather_facts": False, "tasks": tasks}


def patch_setup(phase, ca, rotation_dir, talosconfig):
    """A phase no example shows, control planes then workers (setup, not an example)."""
    task = {"name": "setup | %s %s" % (ca, phase), "talosops.pki.talos_machine_patch": {
        "talosconfig": talosconfig, "node": "{{ talos_node_address }}", "phase": phase, "ca": ca,
        "rotation_dir": rotation_dir, "wait_kubelet": ca == "kubernetes"}}
    return [play("controlplane", [task]), play("worker", [task])]


def run_plays(cluster, home, plays, path, extra_vars=None):
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(plays, handle, sort_keys=False)
    env = playbook_command(cluster, os.path.join(home, "unused"))[1]
    env["HOME"] = home
    env.pop("KUBECONFIG", None)  # the examples' kubeconfig is ~/.kube/config of this private HOME, as kubectl's
    command = [ANSIBLE_PLAYBOOK, "-i", cluster.inventory_path, path, "-f", "10",
               "-e", json.dumps(dict({"talos_talosconfig": os.path.join(home, ".talos", "config")}, **(extra_vars or {})))]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-6000:]
    return output


@pytest.fixture(name="example_home")
def fixture_example_home(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=3, workers=2, name="prod")
    home = str(tmp_path / "home")
    os.makedirs(os.path.join(home, ".talos"))
    os.makedirs(os.path.join(home, "clusters", "prod"))
    for name in ("config", "prod-config"):
        shutil.copy(cluster.talosconfig_path, os.path.join(home, ".talos", name))
    shutil.copy(cluster.secrets_path, os.path.join(home, "clusters", "prod", "secrets.yaml"))
    return cluster, home, Examples(cluster, str(tmp_path))


def test_every_module_example_runs_against_a_simulated_cluster(example_home, tmp_path):
    cluster, home, example = example_home
    talos_dir = example.adapt("/var/lib/talos-rotation/talos")
    kubernetes_dir = example.adapt("/var/lib/talos-rotation/kubernetes")
    everyone = "controlplane:worker"

    # The Talos API CA rotation, step by step.
    talos = [
        play(everyone, [example("talos_rotation_lock", 0), example("talos_cluster_info", 0), example("talos_cluster_info", 2),
                        example("talos_ca_generate", 0), example("talos_talosconfig", 2)]),
        play("controlplane", [example("talos_machine_patch", 0)]),
        play("worker", [example("talos_machine_patch", 0)]),
        play(everyone, [example("talos_rotation_summary", 0), example("talos_rotation_summary", 1), example("talos_verify", 0),
                        example("talos_cluster_info", 1),
                        dict(example("talos_cluster_info", 2), name="progress again"), {
                            "name": "setup | every node has accepted the new CA", "ansible.builtin.assert": {
                                "that": "cluster.nodes | dict2items | map(attribute='value.talos.progress') | unique == ['accepted']"},
                            "run_once": True},
                        # The rollback examples, as dry runs: the rotation goes on forward below.
                        example("talos_ca_generate", 2, check_mode=True)]),
        play(cluster.controlplanes[1].name, [example("talos_machine_patch", 2, check_mode=True, diff=True)]),
        patch_setup("swap", "talos", talos_dir, talos_dir + "/talosconfig")[0],  # the control planes
        play(everyone, [example("talos_machine_patch", 3), example("talos_machine_patch", 4), {  # the workers, in one task
            "name": "setup | every worker swapped in that task", "ansible.builtin.assert": {
                "that": ["swapped.changed_nodes | length == groups['worker'] | length", "swapped.failed_nodes == []",
                         "swapped.nodes | map(attribute='progress_after') | unique == ['swapped']"]},
            "run_once": True}]),
        *patch_setup("remove", "talos", talos_dir, talos_dir + "/talosconfig"),
        play(everyone, [example("talos_verify", 1), example("talos_ca_generate", 1)]),
    ]
    output = run_plays(cluster, home, talos, str(tmp_path / "talos.yml"))
    assert "state: every node accepts the new CA; the old CA still issues" in output
    assert "refused by every node" in output
    with open(os.path.join(talos_dir, "ca.crt"), "rb") as handle:
        new_ca = _pki.fingerprint(handle.read())
    for node in cluster.nodes:
        assert [_pki.fingerprint(pem) for pem in node.client_trust_pems] == [new_ca], node.name

    # The Kubernetes API CA: a rotation by the role into ~/.talos/rotation (the examples' kubeconfigs), then the examples.
    rotation_dir = os.path.join(home, ".talos", "rotation")
    command, env = playbook_command(cluster, rotation_dir, extra_vars={
        "rotate_talos": False, "rotate_kubernetes": True, "talos_talosconfig": os.path.join(home, ".talos", "config")})
    env["HOME"] = home
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-6000:]

    kubernetes = [
        play(everyone, [example("talos_kubeconfig", 0), example("talos_kubeconfig", 1), example("talos_kubeconfig", 2),
                        example("talos_kubernetes_verify", 0), example("talos_kubernetes_verify", 1),
                        {"name": "setup | the cluster's CAs", "talosops.pki.talos_cluster_info": {
                            "controlplanes": "{{ groups['controlplane'] | map('extract', hostvars, 'talos_node_address') }}",
                            "workers": "{{ groups['worker'] | map('extract', hostvars, 'talos_node_address') }}"},
                         "register": "cluster", "run_once": True},
                        {"name": "setup | a new Kubernetes CA", "talosops.pki.talos_ca_generate": {
                            "path": kubernetes_dir, "kind": "kubernetes", "previous_ca": "{{ cluster.issuing_ca.kubernetes.crt }}"},
                         "run_once": True}]),
        *patch_setup("accept", "kubernetes", kubernetes_dir, talos_dir + "/talosconfig"),
        play(cluster.controlplanes[1].name, [example("talos_machine_patch", 1, check_mode=True, diff=True)]),
        # Credentials for other users, and the expiry report, once the cluster runs on its new CAs.
        play(everyone, [example("talos_talosconfig", 0), example("talos_talosconfig", 1),
                        example("talos_cert_info", 0), example("talos_cert_info", 1),
                        *(example("talos_kubernetes_consumers", index) for index in range(3))]),
    ]
    run_plays(cluster, home, kubernetes, str(tmp_path / "kubernetes.yml"))
    for path in (os.path.join(home, ".kube", "config"), example.adapt("/srv/automation/kubeconfig")):
        assert os.stat(path).st_mode & 0o777 == 0o600

    # Workloads to restart: the fake API that has them, reached through ~/.talos/rotation/kubernetes/kubeconfig.
    restart_home = str(tmp_path / "restart-home")
    kubeconfig = os.path.join(restart_home, ".talos", "rotation", "kubernetes", "kubeconfig")
    os.makedirs(os.path.dirname(kubeconfig))
    ca = _pki.generate_ca("kubernetes")
    with FakeKubeAPI(ca, [ca]) as api:
        api.kubeconfig(kubeconfig, _pki.issue_client_certificate(ca, roles=["system:masters"]))
        for plural, name in (("daemonsets", "kube-flannel"), ("daemonsets", "kube-proxy"), ("deployments", "coredns")):
            api.add_workload(plural, "kube-system", name)
        run_plays(cluster, restart_home, [play(everyone, [example("talos_kubernetes_restart", 0)])],
                  str(tmp_path / "restart.yml"), extra_vars={"rotation": {"ca_fingerprint": "ab" * 32}})
        patched = sorted(request["path"].rsplit("/", 1)[1] for request in api.requests if request["method"] == "PATCH")
    assert patched == ["coredns", "kube-flannel", "kube-proxy"]

    # Need the v1.14+ config shape: run by test_the_aggregator_example_runs_on_a_v115_cluster.
    example.used.update({("talos_kubernetes_verify", 2), ("talos_service_account_token", 0), ("talos_service_account_token", 1)})
    assert example.unused() == [], "examples no scenario runs: %s" % example.unused()


def test_the_aggregator_example_runs_on_a_v115_cluster(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=3, workers=1, talos_version="v1.15.0", name="prod")
    home = str(tmp_path / "home")
    os.makedirs(os.path.join(home, ".talos"))
    os.makedirs(os.path.join(home, "clusters", "prod"))
    shutil.copy(cluster.talosconfig_path, os.path.join(home, ".talos", "config"))
    secrets = os.path.join(home, "clusters", "prod", "secrets.yaml")
    shutil.copy(cluster.secrets_path, secrets)
    # The accept phase of an aggregator CA rotation by the role into ~/.talos/rotation: both CAs trusted from then on.
    command, env = playbook_command(cluster, os.path.join(home, ".talos", "rotation"), extra_vars={
        "rotate_talos": False, "rotate_aggregator": True, "rotate_ca_phases": ["accept"], "rotate_ca_secrets_file": secrets,
        "talos_talosconfig": os.path.join(home, ".talos", "config")})
    env["HOME"] = home
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-6000:]
    example = Examples(cluster, str(tmp_path))
    # The service-account token examples reach the API with the admin kubeconfig a Kubernetes rotation leaves in
    # ~/.talos/rotation/kubernetes: the aggregator flow's copy stands in for it.
    os.makedirs(os.path.join(home, ".talos", "rotation", "kubernetes"), mode=0o700)
    os.makedirs(os.path.join(home, ".talos", "rotation", "service_account"), mode=0o700)  # a rotation's folder holds the token
    shutil.copy(os.path.join(home, ".talos", "rotation", "aggregator", "kubeconfig"),
                os.path.join(home, ".talos", "rotation", "kubernetes", "kubeconfig"))
    output = run_plays(cluster, home, [play("controlplane:worker", [
        dict(example("talos_kubernetes_verify", 2), register="proof"), {
            "name": "setup | the old and the new front-proxy CA were both taken", "ansible.builtin.assert": {
                "that": "proof.front_proxy is defined"}, "run_once": True},
        example("talos_service_account_token", 0),
        # No service-account rotation removed the key that signed it: every API server still accepts the token, so
        # the example's expectation (refused) must fail, naming that.
        dict(example("talos_service_account_token", 1), register="refusal", ignore_errors=True),
        {"name": "setup | a token that still works is not reported as refused", "ansible.builtin.assert": {
            "that": "refusal is failed"}, "run_once": True}])], str(tmp_path / "aggregator.yml"))
    assert "failed=0" in output
    token = os.path.join(home, ".talos", "rotation", "service_account", "previous-token")
    assert os.stat(token).st_mode & 0o777 == 0o600
    with open(token, encoding="utf-8") as handle:
        assert handle.read().strip() not in output


def test_every_inventory_plugin_example_parses_a_simulated_cluster(example_home, tmp_path):
    cluster, home, example = example_home
    documents = [document for document in example.adapt(examples_text(INVENTORY_PLUGIN)).split("\n---\n") if document.strip()]
    assert len(documents) == 3
    names = sorted(node.name for node in cluster.nodes)
    env = dict(os.environ, HOME=home, ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="true", ANSIBLE_NOCOLOR="1")
    env.pop("TALOSCONFIG", None)
    for index, document in enumerate(documents):
        path = str(tmp_path / ("example%d.talos.yml" % index))
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(document)
        completed = subprocess.run([ANSIBLE_INVENTORY, "-i", path, "--list"], env=env, capture_output=True, text=True,
                                   timeout=300, check=False)
        assert completed.returncode == 0, completed.stderr[-4000:]
        inventory = plain(json.loads(completed.stdout))
        hostvars = inventory["_meta"]["hostvars"]
        assert sorted(hostvars) == names, "example %d" % index
        assert sorted(inventory["controlplane"]["hosts"]) == sorted(node.name for node in cluster.controlplanes)
        for node in cluster.nodes:
            assert hostvars[node.name]["talos_node_address"] == node.address
    assert os.listdir(os.path.join(home, ".cache", "talosops-inventory")), "example 1 caches the member list"
    assert any(group.startswith("talos_") for group in inventory), "example 2 groups by Talos version"
