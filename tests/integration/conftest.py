"""Simulated Talos clusters for the integration tests (tests/simulator/talos_sim).

`sim_cluster`: a fresh 3 control planes + 2 workers cluster (Talos v1.13.4) per test.
`make_sim_cluster(**kwargs)`: start clusters with any SimCluster arguments; all stopped at teardown.
`module_sim_cluster`: one 3 + 2 cluster shared by a module, for tests that change nothing.
"""

import pytest

from talos_sim import SimCluster


def _factory(workdir_factory):
    clusters = []

    def make(**kwargs):
        kwargs.setdefault("workdir", workdir_factory())
        cluster = SimCluster(**kwargs)
        cluster.start()
        clusters.append(cluster)
        return cluster

    return make, clusters


@pytest.fixture
def make_sim_cluster(tmp_path_factory):
    make, clusters = _factory(lambda: tmp_path_factory.mktemp("talos-sim"))
    yield make
    for cluster in clusters:
        cluster.stop()


@pytest.fixture
def sim_cluster(make_sim_cluster):
    return make_sim_cluster(controlplanes=3, workers=2)


@pytest.fixture(scope="module")
def make_module_sim_cluster(tmp_path_factory):
    make, clusters = _factory(lambda: tmp_path_factory.mktemp("talos-sim"))
    yield make
    for cluster in clusters:
        cluster.stop()


@pytest.fixture(scope="module")
def module_sim_cluster(make_module_sim_cluster):
    return make_module_sim_cluster(controlplanes=3, workers=2)
