"""Bad input is refused before any change, saying what is wrong and what to do (issue 8, section 3).

Each case runs ansible-playbook against a simulated cluster and checks three things:
  (a) the run fails before any node's config changes, and nothing is written (rotation directory, talosconfig,
      secrets bundle, kubeconfig, the case's own files) - no task reports a change;
  (b) the output holds the real message for that mistake, which names the problem and the remedy;
  (c) no Python traceback, and no exception dump, at the default verbosity.
Most cases share one 3 + 2 cluster and fail in the role's validation or the preflight within a second or two.
"""

import base64
import datetime
import os
import re

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from _playbook import cluster_private_keys, lock_released, private_key_needles, run_playbook

from ansible_collections.talosops.pki.plugins.module_utils import _pki, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._backends import ca_generate
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import TalosConfig


class ChangedBeforeRefusal(AssertionError):
    """The run changed a node or wrote a file before it refused the input: (a) does not hold."""


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def write(path, data):
    with open(path, "wb") as handle:
        handle.write(data if isinstance(data, bytes) else data.encode())
    return str(path)


def b64(pem):
    return base64.b64encode(pem).decode()


def snapshot(path):
    """What is at `path`: None, a file's bytes, or {relative path: bytes or None for a folder} of a directory tree."""
    path = str(path)
    if not os.path.lexists(path):
        return None
    if not os.path.isdir(path):
        return read(path)
    tree = {}
    for folder, folders, files in os.walk(path):
        for name in folders:
            tree[os.path.relpath(os.path.join(folder, name), path)] = None
        for name in files:
            tree[os.path.relpath(os.path.join(folder, name), path)] = read(os.path.join(folder, name))
    return tree


def keys_in(folder):
    """Private keys in the files a case made: raw PEM blocks, and the client keys of talosconfigs."""
    keys = []
    for parent, _folders, names in os.walk(str(folder)):
        for name in names:
            data = read(os.path.join(parent, name))
            keys.extend(re.findall(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----", data, re.DOTALL))
            try:
                keys.append(TalosConfig.load(os.path.join(parent, name)).get_context().key)
            except Exception:  # pylint: disable=broad-except  # not a talosconfig, or one broken on purpose
                pass
    return keys


# --- input variants -----------------------------------------------------------------------------------------------

def talosconfig_with(cluster, path, edit):
    """A copy of the cluster's talosconfig, its current context passed through edit(context)."""
    document = yaml.safe_load(read(cluster.talosconfig_path))
    edit(document["contexts"][document["context"]])
    return write(path, yaml.safe_dump(document))


def talosconfig_with_client(cluster, path, usages=(ExtendedKeyUsageOID.CLIENT_AUTH,), roles=("os:admin",),
                            start=datetime.timedelta(0), lifetime=datetime.timedelta(days=1)):
    """A talosconfig whose client certificate comes from the cluster's Talos CA, with any usages and validity."""
    ca_certificate = _pki.load_certificate(cluster.secrets.os_ca.cert_pem)
    ca_key = _pki.load_private_key(cluster.secrets.os_ca.key_pem)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, role) for role in roles])
    moment = datetime.datetime.now(datetime.timezone.utc) + start
    leaf = _pki._issue_leaf(ca_certificate, ca_key, subject, list(usages), lifetime, moment)  # pylint: disable=protected-access
    return talosconfig_with(cluster, path, lambda context: context.update(crt=b64(leaf.crt), key=b64(leaf.key)))


def cluster_ca(cluster):
    return _pki.CertAndKey(cluster.secrets.os_ca.cert_pem, cluster.secrets.os_ca.key_pem)


def inventory_with(cluster, path, edit):
    """A copy of the cluster's inventory, its groups passed through edit(children, cluster)."""
    document = yaml.safe_load(read(cluster.inventory_path))
    edit(document["all"]["children"], cluster)
    return write(path, yaml.safe_dump(document, sort_keys=False))


def move_host(node, source, target):
    def edit(children, cluster):
        name = node(cluster).name
        children[target]["hosts"][name] = children[source]["hosts"].pop(name)
    return edit


def add_worker_host(name, address):
    def edit(children, cluster):
        children["worker"]["hosts"][name] = {"talos_node_address": address(cluster)}
    return edit


def make_rotation(path, kind, previous_pem):
    """A rotation directory as talos_ca_generate writes it."""
    return ca_generate.run({"path": path, "kind": kind, "algorithm": None, "validity_hours": 87600, "previous_ca": previous_pem,
                            "create": True, "start_new": False, "talosconfig": None, "secrets_file": None,
                            "previous_talosconfig": None, "return_key": False})


# --- running and judging a case -------------------------------------------------------------------------------------

def refuse(cluster, tmp_path, expected, extra_vars=None, inventory=None, args=(), files=()):
    """Run the playbook with the bad input; assert (b) and (c), then (a) (raising ChangedBeforeRefusal)."""
    rotation_dir = str(tmp_path / "rotation")
    extra_vars = dict(extra_vars or {})
    watched = [extra_vars.get("rotate_ca_dir", rotation_dir), cluster.talosconfig_path, cluster.secrets_path,
               cluster.kubeconfig_path] + list(files)
    configs = {node.name: node.config_bytes() for node in cluster.nodes}
    before = {path: snapshot(path) for path in watched}

    run = run_playbook(cluster, rotation_dir, *args, extra_vars=extra_vars, inventory=inventory, timeout=300)
    output = run.output
    assert lock_released(extra_vars.get("rotate_ca_dir", rotation_dir)), "the rotation lock outlived the run"

    assert run.returncode != 0 and "PLAY RECAP" in output, output[-4000:]
    for text in expected:
        assert text in output, "message %r not in the output:\n%s" % (text, output[-4000:])
    assert "Traceback (most recent call last)" not in output, output[-4000:]
    assert "An exception occurred during task execution" not in output, output[-4000:]  # ansible-core < 2.19
    # The secret sweep over refusals: the cluster's keys, and those of the files the case made, never in the output.
    needles = private_key_needles(*cluster_private_keys(cluster), *keys_in(tmp_path))
    assert len(needles) > 20  # the cluster's CA and admin keys at least: the search could fail
    assert not [needle for needle in needles if needle in output], "private key material in the output of a refused run"
    assert '"exception":' not in output, output[-4000:]
    # ansible-core 2.19 shows an exception raised in a plugin (not a failed result) as a msg that starts with "Task failed: ".
    assert '"msg": "Task failed: ' not in output, output[-4000:]

    changed_nodes = sorted(node.name for node in cluster.nodes if node.config_bytes() != configs[node.name])
    if changed_nodes:
        raise ChangedBeforeRefusal("the run changed %s before refusing the input:\n%s" % (", ".join(changed_nodes), output[-4000:]))
    written = [path for path in watched if snapshot(path) != before[path]]
    if written:
        raise ChangedBeforeRefusal("the run wrote %s before refusing the input" % ", ".join(written))
    if "changed: [" in output:
        raise ChangedBeforeRefusal("a task reported a change before the refusal:\n%s" % output[-4000:])
    return run


# --- the cases on the shared cluster -------------------------------------------------------------------------------

class Case:
    """One bad input: build(cluster, tmp_path) -> refuse() keyword arguments; `expected` substrings of the real message,
    formatted with the cluster's {subnet}, {worker} (first worker's address) and {controlplane} (last control plane's), and
    {worker_named}, {controlplane_named}: those nodes as refusals name them, "inventory name (address)"."""

    def __init__(self, case_id, expected, build):
        self.case_id = case_id
        self.expected = (expected,) if isinstance(expected, str) else tuple(expected)
        self.build = build

    def messages(self, cluster):
        names = {"subnet": cluster.subnet, "worker": cluster.workers[0].address, "controlplane": cluster.controlplanes[-1].address}
        names.update(worker_named="%s (%s)" % (cluster.workers[0].name, names["worker"]),
                     controlplane_named="%s (%s)" % (cluster.controlplanes[-1].name, names["controlplane"]))
        return tuple(text.format(**names) for text in self.expected)


def variables(**extra_vars):
    return lambda cluster, tmp_path: {"extra_vars": extra_vars}


def with_talosconfig(make):
    """A case whose talosconfig is make(cluster, path)."""
    def build(cluster, tmp_path):
        path = make(cluster, str(tmp_path / "talosconfig"))
        return {"extra_vars": {"rotate_ca_talosconfig": path}, "files": [path]}
    return build


def with_inventory(edit):
    def build(cluster, tmp_path):
        return {"inventory": inventory_with(cluster, str(tmp_path / "inventory.yml"), edit)}
    return build


def with_rotation(prepare):
    """A case whose rotation directory is prepared by prepare(cluster, <rotation dir>/talos) before the run."""
    def build(cluster, tmp_path):
        prepare(cluster, str(tmp_path / "rotation" / "talos"))
        return {}
    return build


def with_rotate_ca_dir(make):
    """A case whose rotate_ca_dir is make(<a regular file>): the file itself, or a path below it."""
    def build(_cluster, tmp_path):
        blocker = write(tmp_path / "a-file", "not a directory\n")
        return {"extra_vars": {"rotate_ca_dir": make(blocker)}, "files": [blocker]}
    return build


def directory_talosconfig(_cluster, path):
    os.mkdir(path)
    return path


def foreign_client(cluster, path):
    stranger = _pki.issue_client_certificate(_pki.generate_ca("talos"))
    return talosconfig_with(cluster, path, lambda context: context.update(crt=b64(stranger.crt), key=b64(stranger.key)))


def mismatched_key(cluster, path):
    other = _pki.issue_client_certificate(cluster_ca(cluster))
    return talosconfig_with(cluster, path, lambda context: context.update(key=b64(other.key)))


def reader(cluster, path):
    issued = _pki.issue_client_certificate(cluster_ca(cluster), roles=("os:reader",))
    return talosconfig_with(cluster, path, lambda context: context.update(crt=b64(issued.crt), key=b64(issued.key)))


def without_current_context(cluster, path):
    document = yaml.safe_load(read(cluster.talosconfig_path))
    document["context"] = ""
    return write(path, yaml.safe_dump(document))


def without_endpoints(cluster, tmp_path):
    """A context without endpoints, and none in the inventory either."""
    path = talosconfig_with(cluster, str(tmp_path / "talosconfig"), lambda context: context.update(endpoints=[]))
    return {"extra_vars": {"rotate_ca_talosconfig": path, "talos_endpoints": []}, "files": [path]}


def foreign_rotation(_cluster, path):
    make_rotation(path, "talos", _pki.generate_ca("talos").crt.decode())


def kubernetes_rotation(cluster, path):
    make_rotation(path, "kubernetes", cluster.secrets.k8s_ca.cert_pem.decode())


def damaged_state(cluster, path):
    make_rotation(path, "talos", cluster.secrets.os_ca.cert_pem.decode())
    write(os.path.join(path, "rotation.json"), "{damaged")


def swapped_key(cluster, path):
    make_rotation(path, "talos", cluster.secrets.os_ca.cert_pem.decode())
    write(os.path.join(path, "ca.key"), _pki.generate_ca("talos").key)


def expired_rotation_ca(cluster, path):
    earlier = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=3)
    _rotation_store.create(path, "talos", cluster.secrets.os_ca.cert_pem, _pki.generate_ca("talos", validity_hours=1, now=earlier))


def not_empty(_cluster, path):
    os.makedirs(path)
    write(os.path.join(path, "notes.txt"), "someone else's files\n")


def worker(cluster):
    return cluster.workers[0]


def last_controlplane(cluster):
    return cluster.controlplanes[-1]


def drop_last_worker(children, cluster):
    del children["worker"]["hosts"][cluster.workers[-1].name]


def empty_controlplane_group(children, _cluster):
    children["controlplane"]["hosts"] = {}


KUBERNETES = {"rotate_talos": False, "rotate_kubernetes": True}
INVALID_ARGUMENTS = "Validation of arguments failed"
CHECK_THE_PATH = "does not exist or is not a file. Check the path."
NO_ANSWER = ("got no answer within 10.0s", "check that the node is up and that apid listens on port 50000")
FOREIGN_ROTATION = ("its talos issuing CA is neither the rotation's previous CA nor its new CA",
                    "the rotation directory belongs to another cluster or rotation")
KUBERNETES_SETTINGS = "rotate_ca_kubernetes_kubelet_timeout and rotate_ca_kubernetes_verify_deadline positive numbers of seconds"

CASES = [
    # talosconfig
    Case("talosconfig_missing", ("no talosconfig found: tried", CHECK_THE_PATH),
         lambda cluster, tmp_path: {"extra_vars": {"rotate_ca_talosconfig": str(tmp_path / "missing")}}),
    Case("talosconfig_is_a_directory", CHECK_THE_PATH, with_talosconfig(directory_talosconfig)),
    Case("talosconfig_binary_garbage", ("is not UTF-8 text", "give the YAML file itself"),
         with_talosconfig(lambda cluster, path: write(path, b"\x00\x01\xfe\xff garbage\n"))),
    Case("talosconfig_malformed_yaml", ("is not valid YAML", "Fix the file"),
         with_talosconfig(lambda cluster, path: write(path, "context: talos-sim\ncontexts: {talos-sim: [\n"))),
    Case("talosconfig_not_a_talosconfig", "has no `contexts`: it is not a talosconfig",
         with_talosconfig(lambda cluster, path: write(path, "apiVersion: v1\nkind: Config\n"))),
    Case("talosconfig_empty", "is empty: give a talosconfig.", with_talosconfig(lambda cluster, path: write(path, ""))),
    Case("talosconfig_bad_base64", ("field `ca` is not valid base64", "restore the value generated by talosctl"),
         with_talosconfig(lambda cluster, path: talosconfig_with(cluster, path, lambda context: context.update(ca="!!not base64!!")))),
    Case("talosconfig_without_current_context", ("has no current context", "select one with `talosctl config context NAME`"),
         with_talosconfig(without_current_context)),
    Case("unknown_context", ("context nope not found in", "available: talos-sim"), variables(rotate_ca_context="nope")),
    Case("context_without_endpoints", "has no endpoints: set `endpoints` in the task or add them to the talosconfig",
         without_endpoints),
    # client certificate
    Case("client_certificate_expired", ("the talosconfig's client certificate expired at", "generate a new talosconfig"),
         with_talosconfig(lambda cluster, path: talosconfig_with_client(cluster, path, start=-datetime.timedelta(days=3)))),
    Case("client_certificate_not_yet_valid", ("the talosconfig's client certificate is not valid before", "check this host's clock"),
         with_talosconfig(lambda cluster, path: talosconfig_with_client(cluster, path, start=datetime.timedelta(days=3)))),
    Case("client_certificate_server_and_client_auth", ("has ExtendedKeyUsage server_auth+client_auth",
                                                       "use a talosconfig with an admin certificate issued for ClientAuth only"),
         with_talosconfig(lambda cluster, path: talosconfig_with_client(
             cluster, path, usages=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)))),
    Case("client_key_of_another_certificate", "the talosconfig's key does not belong to its crt: take both from the same",
         with_talosconfig(mismatched_key)),
    Case("client_certificate_os_reader", ("for our client certificate's role(s) os:reader", "use an os:admin talosconfig"),
         with_talosconfig(reader)),
    Case("client_certificate_of_another_ca", ("refused our client certificate", "the node does not trust the CA that issued the "
                                              "talosconfig's crt. Use a client certificate issued by a CA in the node's machine.ca"),
         with_talosconfig(foreign_client)),
    Case("talosconfig_trusting_another_ca", ("the endpoint's certificate is not signed by any CA in the talosconfig's ca",
                                             "is this talosconfig for this cluster?"),
         with_talosconfig(lambda cluster, path: talosconfig_with(cluster, path, lambda context: context.update(
             ca=b64(_pki.generate_ca("talos").crt))))),
    # endpoints
    Case("endpoint_unreachable", ("endpoint(s) {subnet}.201:50000: Version got no answer",) + NO_ANSWER, variables(rotate_ca_endpoints=["{subnet}.201"])),
    Case("endpoint_with_a_bad_port", ("has an invalid port in", "give each endpoint as an address or host name"),
         variables(rotate_ca_endpoints=["{subnet}.1:apid"])),
    Case("endpoint_empty", ("empty Talos endpoint in", "give each endpoint as an address or host name"), variables(rotate_ca_endpoints=[" "])),
    # inventory
    Case("node_not_in_the_cluster", ("node {subnet}.200 via endpoint(s)",) + NO_ANSWER,
         with_inventory(add_worker_host("ghost", lambda cluster: cluster.subnet + ".200"))),
    Case("worker_listed_as_controlplane", ("preflight refused the rotation before any change",
                                           "{worker_named} is listed under controlplane but its machine.type is worker: move it to the worker group"),
         with_inventory(move_host(worker, "worker", "controlplane"))),
    Case("controlplane_listed_as_worker", "{controlplane_named} is listed under worker but its machine.type is controlplane: move it to the "
                                          "controlplane group",
         with_inventory(move_host(last_controlplane, "controlplane", "worker"))),
    Case("duplicate_node", "nodes listed more than once in the inventory: {worker}. Each node must appear once",
         with_inventory(add_worker_host("worker-again", lambda cluster: cluster.workers[0].address))),
    Case("member_missing_from_inventory", ("the cluster has members the inventory does not list: talos-sim-worker-2 (",
                                           "add them to the controlplane or worker group"),
         with_inventory(drop_last_worker)),
    Case("empty_controlplane_group", "No control-plane nodes: the inventory group 'controlplane' (rotate_ca_controlplane_group) is empty",
         with_inventory(empty_controlplane_group)),
    Case("missing_controlplane_group", "the inventory group 'masters' (rotate_ca_controlplane_group) is missing. List the control-plane",
         variables(rotate_ca_controlplane_group="masters")),
    Case("run_limited_to_some_nodes", ("This run leaves out talos-sim-worker-2", "Run without --limit"),
         lambda cluster, tmp_path: {"args": ("--limit", "all:!talos-sim-worker-2")}),
    # rotation directory
    Case("rotation_dir_under_a_file", ("cannot create private directory", "Not a directory. Choose a writable location"),
         with_rotate_ca_dir(lambda blocker: os.path.join(blocker, "rotation"))),
    Case("rotation_dir_is_a_file", "exists and is not a directory: point the rotation directory elsewhere",
         with_rotate_ca_dir(lambda blocker: blocker)),
    Case("rotation_dir_with_other_files", ("is not empty but holds no rotation.json", "Use an empty or new directory"),
         with_rotation(not_empty)),
    Case("rotation_dir_of_another_cluster", FOREIGN_ROTATION, with_rotation(foreign_rotation)),
    Case("rotation_dir_of_the_other_kind", "holds a kubernetes CA rotation, not a talos one: use a separate directory per CA kind",
         with_rotation(kubernetes_rotation)),
    Case("rotation_state_damaged", ("rotation.json is not valid JSON", "restore it from a backup or move the directory away"),
         with_rotation(damaged_state)),
    Case("rotation_ca_key_swapped", ("private key does not belong to the rotation CA in", "give the key that was generated together"),
         with_rotation(swapped_key)),
    Case("rotation_ca_expired", ("rotation CA in", "expired at", "generate a new CA"), with_rotation(expired_rotation_ca)),
    # secrets bundle
    Case("secrets_file_missing", ("rotate_ca_secrets_file", "does not exist or is not a file: point it at this cluster's secrets.yaml"),
         lambda cluster, tmp_path: {"extra_vars": {"rotate_ca_secrets_file": str(tmp_path / "secrets.yaml")}}),
    Case("secrets_file_is_a_directory", "does not exist or is not a file: point it at this cluster's secrets.yaml",
         lambda cluster, tmp_path: {"extra_vars": {"rotate_ca_secrets_file": str(tmp_path)}}),
    # role variables
    Case("nothing_to_rotate", ("Nothing to rotate", "Set rotate_talos=true and/or rotate_kubernetes=true"),
         variables(rotate_talos=False, rotate_kubernetes=False)),
    Case("misspelt_role_variable", ("Unknown variable(s) rotate_ca_phase: the rotate_ca role has no such option",
                                    "ansible-doc -t role talosops.pki.rotate_ca"),
         variables(rotate_ca_phase=["accept"])),
    Case("verify_deadline_zero", "rotate_ca_verify_deadline is 0: give a positive number of seconds", variables(rotate_ca_verify_deadline=0)),
    Case("verify_deadline_negative", "rotate_ca_verify_deadline is -5: give a positive number of seconds",
         variables(rotate_ca_verify_deadline=-5)),
    Case("verify_deadline_string", (INVALID_ARGUMENTS, "argument 'rotate_ca_verify_deadline' is of type str and we were unable to convert"),
         variables(rotate_ca_verify_deadline="a minute")),
    Case("worker_batch_size_zero", ("rotate_ca_kubernetes_worker_batch_size 0,", "must be a positive number of workers"),
         variables(rotate_ca_kubernetes_worker_batch_size=0, **KUBERNETES)),
    Case("worker_batch_size_negative", ("rotate_ca_kubernetes_worker_batch_size -2,", "must be a positive number of workers"),
         variables(rotate_ca_kubernetes_worker_batch_size=-2, **KUBERNETES)),
    Case("worker_batch_size_string", (INVALID_ARGUMENTS, "argument 'rotate_ca_kubernetes_worker_batch_size' is of type str"),
         variables(rotate_ca_kubernetes_worker_batch_size="half", **KUBERNETES)),
    Case("kubelet_timeout_zero", ("rotate_ca_kubernetes_kubelet_timeout 0,", KUBERNETES_SETTINGS),
         variables(rotate_ca_kubernetes_kubelet_timeout=0, **KUBERNETES)),
    Case("kubelet_timeout_negative", ("rotate_ca_kubernetes_kubelet_timeout -30,", KUBERNETES_SETTINGS),
         variables(rotate_ca_kubernetes_kubelet_timeout=-30, **KUBERNETES)),
    Case("kubelet_timeout_string", (INVALID_ARGUMENTS, "argument 'rotate_ca_kubernetes_kubelet_timeout' is of type str"),
         variables(rotate_ca_kubernetes_kubelet_timeout="5m", **KUBERNETES)),
    Case("kubernetes_verify_deadline_zero", ("rotate_ca_kubernetes_verify_deadline 0)", KUBERNETES_SETTINGS),
         variables(rotate_ca_kubernetes_verify_deadline=0, **KUBERNETES)),
    Case("call_timeout_zero", ("rotate_ca_call_timeout is 0 and rotate_ca_retry_deadline 10", "give the seconds one Talos API call may take"),
         variables(rotate_ca_call_timeout=0)),
    Case("retry_deadline_negative", ("rotate_ca_call_timeout is 30 and rotate_ca_retry_deadline -1", "retried (0 or more, default 10)"),
         variables(rotate_ca_retry_deadline=-1)),
    Case("phases_with_a_gap", ('rotate_ca_phases is ["accept", "remove"]', "give a consecutive run of the phases accept, swap, remove"),
         variables(rotate_ca_phases=["accept", "remove"])),
    Case("phases_empty", ("rotate_ca_phases is []", "give a consecutive run of the phases"), variables(rotate_ca_phases=[])),
    Case("phase_unknown", (INVALID_ARGUMENTS, "value of rotate_ca_phases must be one or more of: accept, swap, remove. Got no match for: swop"),
         variables(rotate_ca_phases=["accept", "swop"])),
    Case("talos_algorithm_unknown", (INVALID_ARGUMENTS, "value of rotate_ca_talos_algorithm must be one of: ed25519"),
         variables(rotate_ca_talos_algorithm="dsa-1024")),
    Case("talos_validity_zero", "validity_hours must be a positive number of hours", variables(rotate_ca_talos_validity_hours=0)),
    Case("restart_workload_kind_unknown", (INVALID_ARGUMENTS, "value of kind must be one of: daemonset, deployment, statefulset, got: pod"),
         variables(rotate_ca_kubernetes_restart_workloads=[{"namespace": "kube-system", "kind": "pod", "name": "x"}], **KUBERNETES)),
    Case("encrypt_always_without_a_vault_secret", ("encrypt=always but no vault secret is loaded", "give a vault password"),
         variables(rotate_ca_encrypt="always")),
]


def _formatted(value, cluster):
    if isinstance(value, str):
        return value.format(subnet=cluster.subnet)
    if isinstance(value, list):
        return [_formatted(item, cluster) for item in value]
    return value


@pytest.fixture(name="cluster", scope="module")
def fixture_cluster(make_module_sim_cluster):
    """One 3 + 2 cluster for every case that is refused before any change."""
    return make_module_sim_cluster(controlplanes=3, workers=2)


@pytest.mark.parametrize("case", CASES, ids=[case.case_id for case in CASES])
def test_bad_input_is_refused_before_any_change(case, cluster, tmp_path):
    arguments = case.build(cluster, tmp_path)
    arguments["extra_vars"] = {name: _formatted(value, cluster) for name, value in arguments.get("extra_vars", {}).items()}
    refuse(cluster, tmp_path, case.messages(cluster), **arguments)


def test_a_node_older_than_talos_1_7_is_refused(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=1, workers=1, talos_version=["v1.13.4", "v1.6.7"])
    refuse(cluster, tmp_path, ("preflight refused the rotation before any change",
                               "%s (%s) runs Talos v1.6.7: CA rotation needs Talos v1.7 or later (acceptedCAs); upgrade it first"
                               % (cluster.workers[0].name, cluster.workers[0].address)))


# --- files written only at the end of a rotation, checked by the preflight: a cluster each, in case a run changes it --


@pytest.fixture(name="small_cluster")
def fixture_small_cluster(make_sim_cluster):
    return make_sim_cluster(controlplanes=1, workers=1, kubelet_restart_delay=0.05)


def test_malformed_secrets_file_is_refused_before_any_change(small_cluster, tmp_path):
    secrets = write(tmp_path / "secrets.yaml", "cluster:\n  id: [unclosed\n")
    refuse(small_cluster, tmp_path, ("is not valid YAML", "Fix the file"), extra_vars={"rotate_ca_secrets_file": secrets}, files=[secrets])


def test_secrets_file_of_another_cluster_is_refused_before_any_change(small_cluster, tmp_path):
    stranger = _pki.generate_ca("talos")
    document = yaml.safe_load(read(small_cluster.secrets_path))
    document["certs"]["os"] = {"crt": b64(stranger.crt), "key": b64(stranger.key)}
    secrets = write(tmp_path / "secrets.yaml", yaml.safe_dump(document))
    refuse(small_cluster, tmp_path, ("that is neither the cluster's nor the rotation's: it belongs to another cluster",
                                     "Point rotate_ca_secrets_file at this cluster's secrets.yaml"),
           extra_vars={"rotate_ca_secrets_file": secrets}, files=[secrets])


def test_unusable_kubeconfig_is_refused_before_any_change(small_cluster, tmp_path):
    kubeconfig = write(tmp_path / "kubeconfig", "apiVersion: v1\nclusters: [unclosed\n")
    refuse(small_cluster, tmp_path, ("is not valid YAML at line", "fix the file or fetch the kubeconfig again"),
           extra_vars=dict(KUBERNETES, rotate_ca_kubeconfig=kubeconfig), files=[kubeconfig])


def test_at_least_30_distinct_cases():
    ids = [case.case_id for case in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 30


def test_a_worker_missing_from_the_inventory_is_found_with_kubernetes_discovery(make_sim_cluster, tmp_path):
    # With the Kubernetes discovery registry the endpoint (a control plane) lists control planes only
    # (siderolabs/talos#10145): the preflight asks a worker as well, or the missing worker would go unnoticed.
    cluster = make_sim_cluster(controlplanes=1, workers=2, split_members=True)
    inventory = inventory_with(cluster, str(tmp_path / "inventory.yml"), drop_last_worker)
    refuse(cluster, tmp_path, ("the cluster has members the inventory does not list: %s (" % cluster.workers[-1].name,),
           inventory=inventory)


# --- shared virtual IPs (siderolabs/talos#10357): a cluster whose control planes declare one, the first holding it -----


@pytest.fixture(name="vip_cluster", scope="module")
def fixture_vip_cluster(make_module_sim_cluster):
    return make_module_sim_cluster(controlplanes=2, workers=1, vip=True)


def test_a_shared_virtual_ip_listed_as_a_node_is_refused(vip_cluster, tmp_path):
    def add_vip_host(children, cluster):
        children["controlplane"]["hosts"]["controlplane-vip"] = {"talos_node_address": cluster.vip}
    inventory = inventory_with(vip_cluster, str(tmp_path / "inventory.yml"), add_vip_host)
    declared_by = ", ".join("%s (%s)" % (node.name, node.address) for node in vip_cluster.controlplanes)
    first = vip_cluster.controlplanes[0]
    refuse(vip_cluster, tmp_path, ("controlplane-vip (%s), listed as a node, is a shared virtual IP (declared in the machine config "
                                   "of %s)" % (vip_cluster.vip, declared_by), "List every node once, by its own address",
                                   # Talos lists a held VIP among its holder's member addresses: the same node, listed twice.
                                   "%s (%s) and controlplane-vip (%s) are addresses of one cluster member, %s" % (
                                       first.name, first.address, vip_cluster.vip, first.name)), inventory=inventory)


def test_a_shared_virtual_ip_as_endpoint_is_refused(vip_cluster, tmp_path):
    refuse(vip_cluster, tmp_path, ("endpoint %s is a shared virtual IP" % vip_cluster.vip,
                                   "Use the control planes' own addresses as endpoints"),
           extra_vars={"rotate_ca_endpoints": [vip_cluster.vip]})


def test_a_kubernetes_node_missing_from_the_inventory_is_refused_with_discovery_off(make_sim_cluster, tmp_path):
    # With cluster discovery off, the Talos API lists no members, so only the Kubernetes Node list shows the node
    # the inventory lacks. The guard runs once the current kubeconfig is fetched: before any node changes.
    cluster = make_sim_cluster(controlplanes=1, workers=2, discovery=False, kubelet_restart_delay=0.05)
    inventory = inventory_with(cluster, str(tmp_path / "inventory.yml"), drop_last_worker)
    configs = {node.name: node.config_bytes() for node in cluster.nodes}
    run = run_playbook(cluster, str(tmp_path / "rotation"), extra_vars=KUBERNETES, inventory=inventory, timeout=300)
    left_out = cluster.workers[-1]
    assert run.returncode != 0, run.output[-4000:]
    assert '"msg": "the Kubernetes API lists Node(s) that the inventory does not: %s (%s' % (left_out.name, left_out.address) in run.output
    assert "add each of them to the controlplane or worker group" in run.output
    assert "Traceback (most recent call last)" not in run.output
    assert {node.name: node.config_bytes() for node in cluster.nodes} == configs
