"""The role's consumer report after each swap (tasks/consumers.yml), end to end on a v1.15-shape simulated cluster: the
pods reading a talos.dev ServiceAccount Secret and the aggregated API servers are printed one line each and counted in
the summary, the workloads listed for a flow (rotate_ca_kubernetes_restart_workloads, `after`) are restarted once per
new CA, check mode changes nothing, a rerun restarts nothing, no secret in any output."""

import base64
import hashlib
import json
import os

import pytest

from _playbook import cluster_private_keys, cluster_secret_values, node_ca_fields, private_key_needles, run_playbook

from test_kubernetes_consumers import deployment, pod

RESTARTED_FOR = "talosops.pki/restarted-for-%s-ca"
WORKLOADS = [{"namespace": "kube-system", "kind": "deployment", "name": "talos-ccm", "after": ["talos"]},
             {"namespace": "kube-system", "kind": "deployment", "name": "metrics-server", "after": ["aggregator"]},
             # Listed for the Kubernetes API CA only (no `after`): this run rotates no Kubernetes API CA.
             {"namespace": "kube-system", "kind": "deployment", "name": "coredns"}]
EXTRA = {"rotate_talos": True, "rotate_aggregator": True, "rotate_ca_kubernetes_verify_deadline": 30,
         "rotate_ca_kubernetes_restart_workloads": WORKLOADS}


def annotations(cluster, name):
    item = next(item for item in cluster.kube_objects["deployments.apps"] if item["metadata"]["name"] == name)
    return dict(item["spec"]["template"]["metadata"].get("annotations") or {})


def fingerprint(rotation, kind):
    with open(os.path.join(rotation, kind, "rotation.json"), encoding="utf-8") as handle:
        return json.load(handle)["ca_fingerprint"]


@pytest.fixture(scope="module", name="runs")
def runs_fixture(make_module_sim_cluster, tmp_path_factory):
    cluster = make_module_sim_cluster(controlplanes=1, workers=1, talos_version="v1.15.0")
    objects = cluster.kube_objects
    objects["serviceaccounts.talos.dev"] = [{"metadata": {"namespace": "kube-system", "name": "talos-ccm"},
                                             "spec": {"roles": ["os:reader"]}}]
    objects["pods"] = [pod("kube-system", "talos-ccm-5c8d7-q9w2e", "ReplicaSet", "talos-ccm-5c8d7", secret="talos-ccm",
                           template_hash="5c8d7")]
    objects["apiservices.apiregistration.k8s.io"] = [
        {"metadata": {"name": "v1beta1.metrics.k8s.io"},
         "spec": {"service": {"namespace": "kube-system", "name": "metrics-server"}, "group": "metrics.k8s.io",
                  "version": "v1beta1", "caBundle": base64.b64encode(cluster.secrets.k8s_ca.cert_pem).decode()},
         "status": {"conditions": [{"type": "Available", "status": "True", "reason": "Passed"}]}}]
    objects["deployments.apps"] = [deployment("kube-system", name) for name in ("talos-ccm", "metrics-server", "coredns")]
    rotation = str(tmp_path_factory.mktemp("consumers") / "rotation")
    before = {node.name: node.config_bytes() for node in cluster.nodes}
    check = run_playbook(cluster, rotation, "--check", "--diff", extra_vars=EXTRA)
    after_check = ({node.name: node.config_bytes() for node in cluster.nodes},
                   {name: annotations(cluster, name) for name in ("talos-ccm", "metrics-server", "coredns")})
    real = run_playbook(cluster, rotation, "-vvv", extra_vars=EXTRA)
    restarted = {name: annotations(cluster, name) for name in ("talos-ccm", "metrics-server", "coredns")}
    rerun = run_playbook(cluster, rotation, extra_vars=EXTRA)
    return {"cluster": cluster, "rotation": rotation, "before": before, "check": check, "after_check": after_check,
            "real": real, "restarted": restarted, "rerun": rerun}


def test_check_mode_lists_the_consumers_and_changes_nothing(runs):
    check = runs["check"]
    assert check.returncode == 0, check.output[-4000:]
    assert runs["after_check"][0] == runs["before"]
    assert all(not value for value in runs["after_check"][1].values())  # restarts were server-side dry runs
    assert "pod kube-system/talos-ccm-5c8d7-q9w2e (deployment kube-system/talos-ccm" in check.output


def test_the_run_prints_each_consumer_and_counts_them_in_the_summary(runs):
    real = runs["real"]
    assert real.returncode == 0, real.output[-4000:]
    # Talos rewrote the ServiceAccount's Secret for the new CA before the pod was restarted.
    assert ("talos.dev ServiceAccount kube-system/talos-ccm: its Secret holds the new CA; pod kube-system/talos-ccm-5c8d7-q9w2e"
            in real.output)
    assert "restarted by this run" in real.output
    assert "aggregated API v1beta1.metrics.k8s.io (service kube-system/metrics-server, Available=True)" in real.output
    assert "talos consumers: 1 pods reading a talos.dev ServiceAccount Secret" in real.output
    assert "aggregator consumers: 1 aggregated APIs to check" in real.output


def test_listed_workloads_are_restarted_after_their_flow_only(runs):
    restarted, rotation = runs["restarted"], runs["rotation"]
    assert restarted["talos-ccm"][RESTARTED_FOR % "talos"] == fingerprint(rotation, "talos")
    assert restarted["metrics-server"][RESTARTED_FOR % "aggregator"] == fingerprint(rotation, "aggregator")
    assert RESTARTED_FOR % "aggregator" not in restarted["talos-ccm"]
    assert restarted["coredns"] == {}  # the Kubernetes API CA's, which this run does not rotate


def test_rerun_restarts_nothing(runs):
    rerun = runs["rerun"]
    assert rerun.returncode == 0, rerun.output[-4000:]
    assert all(counts["changed"] == 0 for counts in rerun.recap.values()), rerun.recap
    assert {name: annotations(runs["cluster"], name) for name in runs["restarted"]} == runs["restarted"]


def test_no_secret_in_any_output(runs):
    keys = cluster_private_keys(runs["cluster"])
    for kind in ("talos", "aggregator"):
        with open(os.path.join(runs["rotation"], kind, "ca.key"), "rb") as handle:
            keys.append(handle.read())
    needles = private_key_needles(*keys) | cluster_secret_values(runs["cluster"])
    for run in (runs["check"], runs["real"], runs["rerun"]):
        leaked = [needle for needle in needles if needle in run.output]
        assert not leaked, leaked[:3]


def test_a_report_that_cannot_list_is_printed_and_the_rotation_goes_on(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=1, workers=1, talos_version="v1.15.0")
    cluster.kube_objects["serviceaccounts.talos.dev"] = [{"metadata": {"namespace": "kube-system", "name": "talos-ccm"},
                                                          "spec": {"roles": ["os:reader"]}}]
    del cluster.kube_objects["pods"]  # the pod list answers 404: the report fails after the swap
    rotation = str(tmp_path / "rotation")
    run = run_playbook(cluster, rotation, extra_vars={"rotate_talos": True})
    assert run.returncode == 0, run.output[-4000:]
    assert "could not list what still holds the old talos material (the rotation goes on): listing /api/v1/pods failed" in run.output
    new = fingerprint(rotation, "talos")
    for node in cluster.nodes:  # the rotation went through the remove phase
        issuing, accepted = node_ca_fields(node)
        assert hashlib.sha256(issuing).hexdigest() == new and accepted == []
