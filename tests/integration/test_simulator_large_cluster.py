"""A simulated cluster of more than 253 nodes continues in the next /24s (the 3 + 297 benchmark of issue 14)."""

import pytest

from talos_sim import SimCluster
from talos_sim.cluster import MAX_NODES
from talos_sim.testing import admin_credentials, call

VERSION = "/machine.MachineService/Version"


def test_nodes_beyond_253_live_in_the_next_subnet(make_sim_cluster):
    cluster = make_sim_cluster(controlplanes=1, workers=MAX_NODES + 1)
    assert len(cluster.subnets) == 2 and cluster.subnet == cluster.subnets[0]
    first, second = cluster.subnets
    assert second.split(".")[:2] == first.split(".")[:2] and int(second.split(".")[2]) == int(first.split(".")[2]) + 1
    assert [node.address for node in cluster.nodes[MAX_NODES - 1:]] == ["%s.253" % first, "%s.1" % second, "%s.2" % second]
    assert len({node.address for node in cluster.nodes}) == len(cluster.nodes)
    for node in (cluster.nodes[MAX_NODES - 1], cluster.nodes[-1]):
        reply = call(admin_credentials(cluster), cluster.endpoint, VERSION, node=node.address)
        assert reply.messages[0].version.tag == node.talos_version
    with open(cluster.inventory_path, encoding="utf-8") as handle:
        assert cluster.nodes[-1].address in handle.read()
    # both /24s are reserved: another cluster cannot take the second one
    with pytest.raises(OSError):
        SimCluster(1, 0, subnet=second).start()


def test_size_limits(tmp_path):
    with pytest.raises(ValueError, match="with a VIP"):
        SimCluster(3, MAX_NODES - 3, tmp_path / "vip", vip=True)
    with pytest.raises(ValueError, match="choose a lower third number"):
        SimCluster(1, MAX_NODES, tmp_path / "edge", subnet="127.77.255").start()
