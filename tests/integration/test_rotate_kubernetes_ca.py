"""The Kubernetes API CA rotation, end to end: ansible-playbook against simulated 3 + 3 clusters of both config shapes.

One cluster per shape is rotated once (check mode, the real run while every node's readiness is
watched, a rerun); the tests below each check one aspect of that rotation.
"""

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time

import pytest
import yaml

from _playbook import lock_released, pem_to_der, private_key_needles, run_playbook

from ansible_collections.talosops.pki.plugins.module_utils import _kubernetes, _pki
from ansible_collections.talosops.pki.plugins.module_utils._auth import AUTH_ARGUMENT_SPEC
from ansible_collections.talosops.pki.plugins.module_utils._backends import ca_generate, machine_patch
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import TalosConfig

SHAPES = {"cluster.ca": "v1.13.4", "KubeAPIServerCAConfig": "v1.15.0"}
KUBERNETES_ONLY = {"rotate_talos": False, "rotate_kubernetes": True}


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def kubernetes_ca_fields(node):
    """(issuing certificate DER or None, [accepted DER]) of a simulated node's Kubernetes CA, read from its config."""
    documents = [document for document in yaml.safe_load_all(node.config_bytes()) if document]
    document = next((d for d in documents if d.get("kind") == "KubeAPIServerCAConfig"), None)
    if document is not None:
        issuing = (document.get("issuingCA") or {}).get("cert")
        return (pem_to_der(issuing.encode()) if issuing else None), [pem_to_der(pem.encode()) for pem in document.get("acceptedCAs") or []]
    cluster = next(d for d in documents if "cluster" in d)["cluster"]

    def der(b64_pem):
        return pem_to_der(base64.b64decode(b64_pem))
    return der(cluster["ca"]["crt"]), [der(item["crt"]) for item in cluster.get("acceptedCAs") or []]


class ReadinessWatch:
    """Polls the simulated cluster's node readiness in a thread: every distinct (node, NotReady message) seen, and the
    most control planes and workers seen not Ready at the same moment."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.not_ready = set()
        self.most_at_once = {"controlplane": 0, "worker": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        roles = {node.name: "controlplane" if node.controlplane else "worker" for node in self.cluster.nodes}
        while not self._stop.is_set():
            at_once = {"controlplane": 0, "worker": 0}
            for entry in self.cluster.kubernetes_nodes():
                if not entry["ready"]:
                    self.not_ready.add((entry["name"], entry["ready_message"]))
                    at_once[roles[entry["name"]]] += 1
            for role, count in at_once.items():
                self.most_at_once[role] = max(self.most_at_once[role], count)
            time.sleep(0.005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_exc):
        self._stop.set()
        self._thread.join()


def kubectl(kubeconfig, workdir, *args):
    # A private HOME: kubectl's discovery cache must not come from elsewhere.
    home = os.path.join(workdir, "kubectl-home")
    os.makedirs(home, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home}
    return subprocess.run(["kubectl", "--kubeconfig", kubeconfig, *args], capture_output=True, text=True, env=env, timeout=120,
                          check=False, stdin=subprocess.DEVNULL)


def list_nodes(kubeconfig_path, server_ca=None):
    """The kubernetes client's view: an Outcome whose value is the NodeStatus list on success."""
    credentials = Kubeconfig.load(kubeconfig_path).credentials()
    with _kubernetes.KubeAPI(credentials, server_ca=server_ca) as api:
        return api.nodes()


@pytest.fixture(name="rotated", scope="module", params=sorted(SHAPES))
def fixture_rotated(request, make_module_sim_cluster, tmp_path_factory):
    """A 3 + 3 cluster of one shape, rotated by the playbook: check mode, the real run (readiness watched), a rerun."""
    cluster = make_module_sim_cluster(controlplanes=3, workers=3, talos_version=SHAPES[request.param], kubelet_restart_delay=0.25)
    workdir = tmp_path_factory.mktemp("k8s-rotation")
    rotation_dir = str(workdir / "rotation")
    old_kubeconfig = str(workdir / "old-kubeconfig")
    shutil.copy(cluster.kubeconfig_path, old_kubeconfig)
    configs = {node.name: node.config_bytes() for node in cluster.nodes}
    files = {path: read(path) for path in (cluster.talosconfig_path, cluster.secrets_path, cluster.kubeconfig_path)}
    variables = dict(KUBERNETES_ONLY, rotate_ca_kubeconfig=str(cluster.kubeconfig_path), rotate_ca_secrets_file=str(cluster.secrets_path))
    old_ca = kubernetes_ca_fields(cluster.controlplanes[0])[0]

    check = run_playbook(cluster, rotation_dir, "--check", "--diff", "-v", extra_vars=variables)
    after_check = ({node.name: node.config_bytes() for node in cluster.nodes}, {path: read(path) for path in files},
                   os.path.exists(rotation_dir))
    with ReadinessWatch(cluster) as watch:
        real = run_playbook(cluster, rotation_dir, extra_vars=variables)
    rerun = run_playbook(cluster, rotation_dir, extra_vars=variables)
    return {"cluster": cluster, "shape": request.param, "rotation_dir": rotation_dir, "workdir": str(workdir),
            "old_kubeconfig": old_kubeconfig, "old_ca": old_ca, "configs": configs, "files": files, "check": check,
            "after_check": after_check, "real": real, "rerun": rerun, "not_ready_seen": watch.not_ready,
            "most_not_ready_at_once": watch.most_at_once}


def test_check_mode_changes_nothing_and_exits_0(rotated):
    check = rotated["check"]
    assert check.returncode == 0, check.output[-6000:]
    configs, files, rotation_dir_exists = rotated["after_check"]
    assert configs == rotated["configs"]
    assert files == rotated["files"]
    assert not rotation_dir_exists
    assert "Dry run summary" in check.output  # the nodes validated each phase
    summary = check.output[check.output.index("Kubernetes API CA rotation, check mode: nothing was changed"):]
    for node in rotated["cluster"].nodes:
        assert re.search(r"%s\s+%s\s+\S+\s+pending\s+would be removed" % (re.escape(node.name), re.escape(node.address)), summary), node.name
    assert "Verify | every node Ready before any change" in check.output


def test_every_node_ends_with_the_new_ca_only(rotated):
    assert rotated["real"].returncode == 0, rotated["real"].output[-8000:]
    cluster = rotated["cluster"]
    new_ca = pem_to_der(read(os.path.join(rotated["rotation_dir"], "kubernetes", "ca.crt")))
    assert new_ca != rotated["old_ca"]
    for node in cluster.nodes:
        issuing, accepted = kubernetes_ca_fields(node)
        if rotated["shape"] == "KubeAPIServerCAConfig" and not node.controlplane:
            # A v1.14+ worker keeps its shape: accepted CAs only.
            assert (issuing, accepted) == (None, [new_ca]), node.name
        else:
            assert (issuing, accepted) == (new_ca, []), node.name
    assert all(entry["ready"] for entry in cluster.kubernetes_nodes()), cluster.kubernetes_nodes()


def test_new_kubeconfig_works_and_the_old_one_is_refused(rotated):
    cluster = rotated["cluster"]
    listing = list_nodes(cluster.kubeconfig_path)
    assert listing.kind == _kubernetes.OK, listing.detail
    assert {node.name: node.ready for node in listing.value} == {node.name: "True" for node in cluster.nodes}
    new_ca = read(os.path.join(rotated["rotation_dir"], "kubernetes", "ca.crt"))
    # Trust the servers' new certificates, so that what is judged is the old client certificate.
    refused = list_nodes(rotated["old_kubeconfig"], server_ca=new_ca)
    assert refused.kind == _kubernetes.UNAUTHORIZED, refused.detail
    # Without that override the old kubeconfig does not even trust the API servers any more.
    assert list_nodes(rotated["old_kubeconfig"]).kind == _kubernetes.TLS_ERROR
    assert os.stat(cluster.kubeconfig_path).st_mode & 0o777 == 0o600
    assert "old kubeconfig refused (401)" in rotated["real"].output


def test_kubectl_lists_every_node_ready_with_the_new_kubeconfig(rotated):
    listing = kubectl(rotated["cluster"].kubeconfig_path, rotated["workdir"], "get", "nodes", "--no-headers")
    assert listing.returncode == 0, listing.stderr
    statuses = {line.split()[0]: line.split()[1] for line in listing.stdout.splitlines()}
    assert statuses == {node.name: "Ready" for node in rotated["cluster"].nodes}
    denied = kubectl(rotated["old_kubeconfig"], rotated["workdir"], "get", "nodes")
    assert denied.returncode != 0


def test_secrets_bundle_holds_the_new_kubernetes_ca(rotated):
    with open(rotated["cluster"].secrets_path, encoding="utf-8") as handle:
        k8s = yaml.safe_load(handle)["certs"]["k8s"]
    assert base64.b64decode(k8s["crt"]) == read(os.path.join(rotated["rotation_dir"], "kubernetes", "ca.crt"))
    _pki.check_key_pair(base64.b64decode(k8s["crt"]), base64.b64decode(k8s["key"]))


def test_no_node_lost_readiness_to_trust_while_rotating(rotated):
    # Each kubelet restart shows as "kubelet is not running"; any other reason (a trust failure between a kubelet
    # and an API server) would mean the ordering let a node get ahead of, or behind, the control planes.
    reasons = {message for _node, message in rotated["not_ready_seen"]}
    assert reasons <= {"kubelet is not running"}, rotated["not_ready_seen"]
    restarted = {node for node, _message in rotated["not_ready_seen"]}
    assert restarted == {node.name for node in rotated["cluster"].nodes}  # the watch did see every restart


def test_control_planes_one_at_a_time_workers_in_batches(rotated):
    # Default batch: half of the 3 workers, rounded up. Seen from the cluster: never two control planes restarting
    # their kubelet at once, and two workers at once (the batch) but never three.
    assert "3 control planes one at a time, 3 workers in waves of 2" in rotated["real"].output
    assert rotated["most_not_ready_at_once"] == {"controlplane": 1, "worker": 2}


def test_rerun_changes_nothing(rotated):
    rerun = rotated["rerun"]
    assert rerun.returncode == 0, rerun.output[-6000:]
    assert set(rerun.recap) == set(rotated["real"].recap)
    assert all(counts["changed"] == 0 for counts in rerun.recap.values()), rerun.recap


# --- the failure the ordering prevents --------------------------------------------------------------------------


def _patch(cluster, rotation, node, phase):
    auth = {name: spec.get("default") for name, spec in AUTH_ARGUMENT_SPEC.items()}
    params = dict(auth, talosconfig=cluster.talosconfig_path, node=node.address, phase=phase, ca="kubernetes",
                  rotation_dir=rotation["path"], machine_type=None, apply_mode="no_reboot", wait_kubelet=True, kubelet_timeout=20.0,
                  remove_stray_cas=False)
    return machine_patch.run(params)


def _readiness(cluster, node):
    return next(entry for entry in cluster.kubernetes_nodes() if entry["name"] == node.name)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_worker_patched_before_the_control_planes_goes_not_ready(make_sim_cluster, tmp_path, shape):
    cluster = make_sim_cluster(controlplanes=1, workers=2, talos_version=SHAPES[shape], kubelet_restart_delay=0.05)
    ahead, behind = cluster.workers
    rotation = ca_generate.run({"path": str(tmp_path / "kubernetes"), "kind": "kubernetes", "algorithm": None, "validity_hours": 87600,
                                "previous_ca": cluster.secrets.k8s_ca.cert_pem.decode(), "create": True, "start_new": False,
                                "talosconfig": None, "secrets_file": None, "previous_talosconfig": None, "return_key": False})

    # A worker taken through every phase while the control plane has not even accepted the new CA: it trusts only a
    # CA the API server does not serve with.
    for phase in ("accept", "swap", "remove"):
        _patch(cluster, rotation, ahead, phase)
    lost = _readiness(cluster, ahead)
    assert not lost["ready"] and "does not trust the serving certificate" in lost["ready_message"]

    # A worker swapped before the control plane: its kubelet restarts with a client certificate from the old CA,
    # which the control plane stops accepting when it drops the old CA.
    _patch(cluster, rotation, behind, "swap")
    for phase in ("accept", "swap", "remove"):
        _patch(cluster, rotation, cluster.controlplanes[0], phase)
    stale = _readiness(cluster, behind)
    assert not stale["ready"] and "does not trust the kubelet client certificate" in stale["ready_message"]

    # The worker that went ahead restarted its kubelet while the old CA still issued, and nothing restarts it again:
    # it stays NotReady. The one left behind recovers with its own removal (control planes first, as the collection does).
    assert "does not trust the kubelet client certificate" in _readiness(cluster, ahead)["ready_message"]
    _patch(cluster, rotation, behind, "remove")
    assert _readiness(cluster, behind)["ready"] and not _readiness(cluster, ahead)["ready"]


# --- both flows, resuming, and no key in the output ----------------------------------------------------------------


def _private_keys(cluster, workdir, rotation_dir):
    with open(cluster.secrets_path, encoding="utf-8") as handle:
        certs = yaml.safe_load(handle)["certs"]
    keys = [base64.b64decode(certs["os"]["key"]), base64.b64decode(certs["k8s"]["key"])]
    for path in (cluster.talosconfig_path, os.path.join(rotation_dir, "talos", "talosconfig"),
                 os.path.join(rotation_dir, "talos", "previous-talosconfig")):
        if os.path.exists(path):
            keys.append(TalosConfig.load(path).get_context().key)
    kubeconfigs = [cluster.kubeconfig_path, os.path.join(workdir, "old-kubeconfig")] + [
        os.path.join(rotation_dir, "kubernetes", name) for name in ("kubeconfig", "previous-kubeconfig")]
    kubeconfigs += [os.path.join(os.path.dirname(cluster.kubeconfig_path), name)
                    for name in os.listdir(os.path.dirname(cluster.kubeconfig_path)) if name.startswith("kubeconfig.bak-")]
    for path in kubeconfigs:
        if os.path.exists(path):
            keys.append(Kubeconfig.load(path).credentials().key)
    for kind in ("talos", "kubernetes"):
        ca_key = os.path.join(rotation_dir, kind, "ca.key")
        if os.path.exists(ca_key):
            keys.append(read(ca_key))
    return keys


def test_both_flows_in_one_run_without_a_key_in_verbose_diff_output(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=2, workers=2, talos_version="v1.15.0", kubelet_restart_delay=0.05)
    rotation_dir = str(tmp_path / "rotation")
    shutil.copy(cluster.kubeconfig_path, tmp_path / "old-kubeconfig")
    old_keys = _private_keys(cluster, str(tmp_path), rotation_dir)
    variables = {"rotate_kubernetes": True, "rotate_ca_kubeconfig": str(cluster.kubeconfig_path),
                 "rotate_ca_secrets_file": str(cluster.secrets_path)}

    check = run_playbook(cluster, rotation_dir, "--check", "--diff", "-vvv", extra_vars=variables)
    real = run_playbook(cluster, rotation_dir, "--diff", "-vvv", extra_vars=variables)
    assert check.returncode == 0, check.output[-6000:]
    assert real.returncode == 0, real.output[-6000:]
    # The Talos flow ran first; the Kubernetes flow then reached the nodes with the talosconfig it had just updated.
    assert real.output.index("Talos API CA rotated") < real.output.index("Preflight | read every node's Kubernetes CA state")
    old_talos_crt = TalosConfig.load(os.path.join(rotation_dir, "talos", "previous-talosconfig")).get_context().crt
    assert TalosConfig.load(cluster.talosconfig_path).get_context().crt != old_talos_crt
    assert list_nodes(cluster.kubeconfig_path).kind == _kubernetes.OK

    needles = private_key_needles(*(old_keys + _private_keys(cluster, str(tmp_path), rotation_dir)))
    assert len(needles) > 40
    for text in (check.output, real.output):
        leaked = [needle for needle in needles if needle in text]
        assert not leaked, "private key material in the output: %s" % leaked[:3]


def test_interrupted_kubernetes_rotation_resumes_with_the_same_ca(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=2, workers=2, kubelet_restart_delay=0.05)
    rotation_dir = str(tmp_path / "rotation")
    ca_path = os.path.join(rotation_dir, "kubernetes", "ca.crt")
    variables = dict(KUBERNETES_ONLY, rotate_ca_kubeconfig=str(cluster.kubeconfig_path))
    # The wave tasks run once, on the play's first host: killed after the workers' accept wave, then after the control
    # planes' swap wave.
    host = cluster.controlplanes[0].name

    killed_in_accept = run_playbook(cluster, rotation_dir, kill_after="Accept | add the new Kubernetes CA to the accepted CAs (workers@%s" % host,
                                    extra_vars=variables)
    assert killed_in_accept.returncode != 0 and "PLAY RECAP" not in killed_in_accept.output
    new_ca = read(ca_path)
    swap = "Swap | make the new Kubernetes CA the issuing CA, keep the old one accepted"
    killed_in_swap = run_playbook(cluster, rotation_dir, kill_after="%s (control planes@%s" % (swap, host), extra_vars=variables)
    assert killed_in_swap.returncode != 0 and "PLAY RECAP" not in killed_in_swap.output
    assert any(kubernetes_ca_fields(node)[0] == pem_to_der(new_ca) for node in cluster.nodes), "the swap had not started"

    finished = run_playbook(cluster, rotation_dir, extra_vars=variables)
    assert finished.returncode == 0, finished.output[-6000:]
    assert read(ca_path) == new_ca
    assert all(kubernetes_ca_fields(node)[0] in (None, pem_to_der(new_ca)) for node in cluster.nodes)
    assert all(entry["ready"] for entry in cluster.kubernetes_nodes())
    # The kubeconfig kept from before the rotation is the one from the first run (old CA), refused at the end.
    previous = Kubeconfig.load(os.path.join(rotation_dir, "kubernetes", "previous-kubeconfig")).credentials()
    assert _pki.is_issued_by(previous.crt, cluster.secrets.k8s_ca.cert_pem)
    assert "old kubeconfig refused (401)" in finished.output


def test_both_cas_rotated_in_separate_phase_jobs(make_sim_cluster, tmp_path):
    # After the swap job the user's talosconfig (old client certificate, old server CA) no longer trusts the endpoints;
    # the Kubernetes flow of the same and later jobs must reach them with the rotation's own talosconfig.
    cluster = make_sim_cluster(controlplanes=1, workers=2, talos_version="v1.15.0", kubelet_restart_delay=0.05)
    rotation_dir = str(tmp_path / "rotation")
    old_kubeconfig = str(tmp_path / "old-kubeconfig")
    shutil.copy(cluster.kubeconfig_path, old_kubeconfig)
    variables = {"rotate_kubernetes": True, "rotate_ca_kubeconfig": str(cluster.kubeconfig_path)}
    for phase in ("accept", "swap", "remove"):
        job = run_playbook(cluster, rotation_dir, extra_vars=dict(variables, rotate_ca_phases=[phase]))
        assert job.returncode == 0, "%s job: %s" % (phase, job.output[-6000:])
    new_k8s_ca = pem_to_der(read(os.path.join(rotation_dir, "kubernetes", "ca.crt")))
    assert all(kubernetes_ca_fields(node) in ((new_k8s_ca, []), (None, [new_k8s_ca])) for node in cluster.nodes)
    assert list_nodes(cluster.kubeconfig_path).kind == _kubernetes.OK
    assert all(entry["ready"] for entry in cluster.kubernetes_nodes())


def changed_tasks(output):
    """The tasks that reported a change, with their result lines: what a rerun that should change nothing did."""
    task, changed = None, []
    for line in output.splitlines():
        if line.startswith("TASK ["):
            task = line
        elif line.startswith("changed:"):
            changed.append("%s\n    %s" % (task, line[:400]))
    return "\n".join(changed) or output[-4000:]


def test_both_cas_rotated_with_the_rotation_directory_encrypted(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=1, workers=1, talos_version="v1.15.0", kubelet_restart_delay=0.05)
    rotation_dir = str(tmp_path / "rotation")
    variables = {"rotate_kubernetes": True, "rotate_ca_kubeconfig": str(cluster.kubeconfig_path), "rotate_ca_encrypt": "always"}
    configs = {node.name: node.config_bytes() for node in cluster.nodes}

    refused = run_playbook(cluster, rotation_dir, extra_vars=variables)  # no vault secret: nothing may be written in clear
    assert refused.returncode != 0 and "encrypt=always but no vault secret is loaded" in refused.output
    assert lock_released(rotation_dir)
    assert {node.name: node.config_bytes() for node in cluster.nodes} == configs and not os.path.exists(rotation_dir)

    password_file = tmp_path / "vault-password"
    password_file.write_text("s3cret vault password\n")
    rotated = run_playbook(cluster, rotation_dir, "--vault-password-file", str(password_file), extra_vars=variables)
    assert rotated.returncode == 0, rotated.output[-6000:]
    assert list_nodes(cluster.kubeconfig_path).kind == _kubernetes.OK  # the user's kubeconfig stays readable by kubectl
    assert lock_released(rotation_dir)
    stored = {os.path.relpath(os.path.join(folder, name), rotation_dir): read(os.path.join(folder, name))
              for folder, _dirs, names in os.walk(rotation_dir) for name in names}
    assert {"talos/ca.key", "talos/talosconfig", "kubernetes/ca.key", "kubernetes/kubeconfig", "kubernetes/previous-kubeconfig"} <= set(stored)
    for name, data in stored.items():
        if name.endswith("audit.jsonl"):
            assert all(list(json.loads(line)) == ["vault"] for line in data.splitlines()), name
        else:
            assert data.startswith(b"$ANSIBLE_VAULT;"), "%s is stored in clear" % name
    rerun = run_playbook(cluster, rotation_dir, "--vault-password-file", str(password_file), extra_vars=variables)
    assert rerun.returncode == 0 and all(counts["changed"] == 0 for counts in rerun.recap.values()), changed_tasks(rerun.output)


def test_a_cluster_mid_upgrade_is_rotated_in_each_node_s_own_config_shape(make_sim_cluster, tmp_path):
    # Half the nodes on v1.15 (KubeAPIServerCAConfig; workers with accepted CAs only), half on v1.13 (cluster.ca):
    # the shape is read per node, and each keeps its own.
    versions = ["v1.15.0", "v1.13.4", "v1.15.0", "v1.13.4"]
    cluster = make_sim_cluster(controlplanes=2, workers=2, talos_version=versions, kubelet_restart_delay=0.05)
    shapes = {node.name: "KubeAPIServerCAConfig" if node.talos_version == "v1.15.0" else "cluster.ca" for node in cluster.nodes}
    rotation_dir = str(tmp_path / "rotation")
    with ReadinessWatch(cluster) as watch:
        run = run_playbook(cluster, rotation_dir,
                           extra_vars={"rotate_talos": False, "rotate_kubernetes": True, "rotate_ca_kubeconfig": str(cluster.kubeconfig_path)})
    assert run.returncode == 0, run.output[-8000:]
    new_ca = pem_to_der(read(os.path.join(rotation_dir, "kubernetes", "ca.crt")))
    for node in cluster.nodes:
        issuing, accepted = kubernetes_ca_fields(node)
        if shapes[node.name] == "KubeAPIServerCAConfig" and not node.controlplane:
            assert (issuing, accepted) == (None, [new_ca]), node.name
        else:
            assert (issuing, accepted) == (new_ca, []), node.name
        assert (b"kind: KubeAPIServerCAConfig" in node.config_bytes()) == (shapes[node.name] == "KubeAPIServerCAConfig"), node.name
    assert {message for _name, message in watch.not_ready} <= {"kubelet is not running"}, watch.not_ready  # never trust
    assert list_nodes(cluster.kubeconfig_path).kind == _kubernetes.OK
