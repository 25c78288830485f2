"""What the role refuses about the other Kubernetes secrets, before any change: an etcd CA rotation (no accepted list
in any Talos version), and the aggregator / service-account flows on config shapes without accepted lists (v1.13)."""

import pytest

from _playbook import run_playbook


def configs(cluster):
    return {node.name: node.config_bytes() for node in cluster.nodes}


@pytest.fixture(scope="module", name="v113_cluster")
def v113_cluster_fixture(make_module_sim_cluster):
    return make_module_sim_cluster(controlplanes=2, workers=1, talos_version="v1.13.4")


def test_rotate_etcd_is_refused_with_the_explanation(v113_cluster, tmp_path):
    before = configs(v113_cluster)
    run = run_playbook(v113_cluster, str(tmp_path / "rotation"), extra_vars={"rotate_etcd": True, "rotate_kubernetes": True})
    assert run.returncode != 0
    assert "rotate_etcd (rotate_ca_etcd) is refused" in run.output
    assert "siderolabs/talos#8808" in run.output and "docs/rotation.md" in run.output
    assert "Traceback" not in run.output
    assert configs(v113_cluster) == before
    assert not (tmp_path / "rotation").exists()


@pytest.mark.parametrize("flag, what, document", [
    ("rotate_aggregator", "aggregator CA in cluster.aggregatorCA", "KubeAggregatorCAConfig"),
    ("rotate_service_account", "service-account key in cluster.serviceAccount", "KubeServiceAccountConfig"),
])
def test_v113_shape_is_refused_before_any_change_with_the_upgrade_hint(v113_cluster, tmp_path, flag, what, document):
    before = configs(v113_cluster)
    # With rotate_talos (the playbook's default) too: the refusal comes before the Talos API CA flow changes anything.
    run = run_playbook(v113_cluster, str(tmp_path / "rotation"), extra_vars={flag: True})
    assert run.returncode != 0
    assert "Refused before any change" in run.output
    for node in v113_cluster.nodes:
        if node.machine_type != "worker":
            assert "%s (%s, Talos v1.13.4) has its %s, not in a %s document" % (node.name, node.address, what, document) in run.output
    assert "Upgrade those nodes to Talos v1.14 or later" in run.output
    assert "Traceback" not in run.output
    assert configs(v113_cluster) == before
    assert not (tmp_path / "rotation" / "talos").exists()


def test_nothing_to_rotate_names_every_flag(v113_cluster, tmp_path):
    run = run_playbook(v113_cluster, str(tmp_path / "rotation"), extra_vars={"rotate_talos": False})
    assert run.returncode != 0
    assert "rotate_talos, rotate_kubernetes, rotate_aggregator and rotate_service_account" in run.output


def test_v115_shape_passes_the_shape_check_and_the_service_account_flow_runs(make_module_sim_cluster, tmp_path):
    # The shape check no longer stops a v1.14+ cluster: the service-account flow runs (here as a dry run, to its summary).
    cluster = make_module_sim_cluster(controlplanes=1, workers=1, talos_version="v1.15.0")
    before = configs(cluster)
    run = run_playbook(cluster, str(tmp_path / "rotation"), "--check",
                       extra_vars={"rotate_talos": False, "rotate_service_account": True,
                                   "rotate_ca_service_account_algorithm": "rsa-2048"})
    assert run.returncode == 0, run.output[-3000:]
    assert "does not rotate the service-account key" not in run.output
    assert "Service-account signing key rotation, check mode: nothing was changed" in run.output
    assert configs(cluster) == before


def test_a_rollback_of_the_aggregator_ca_is_refused_before_any_change(v113_cluster, tmp_path):
    before = configs(v113_cluster)
    run = run_playbook(v113_cluster, str(tmp_path / "rotation"), extra_vars={"rotate_aggregator": True, "rotate_ca_rollback": True})
    assert run.returncode != 0
    assert "a rollback covers the Talos API CA and the Kubernetes API CA only" in run.output
    assert "Traceback" not in run.output
    assert configs(v113_cluster) == before
    assert not (tmp_path / "rotation").exists()
