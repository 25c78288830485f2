"""talos_cluster_info refuses an inventory that mixes two clusters' nodes, naming them by inventory name and address."""

import pytest

from ansible_collections.talosops.pki.plugins.module_utils._backends import cluster_info
from ansible_collections.talosops.pki.plugins.module_utils._errors import NodeUnreachableError, TalosPKIError

PARAMS = {"controlplanes": ["10.5.0.2", "10.6.0.2"], "workers": ["10.5.0.5", "10.6.0.5"],
          "node_names": {"10.5.0.2": "a-cp-1", "10.6.0.2": "b-cp-1", "10.5.0.5": "a-w-1", "10.6.0.5": "b-w-1"}}
MEMBERS = [{"hostname": "a-cp-1", "addresses": ["10.5.0.2"]}, {"hostname": "a-w-1", "addresses": ["10.5.0.5"]}]
UNREACHABLE = 'node 10.6.0.2 via endpoint(s) 10.5.0.2:50000: Version got no answer within 10.0s (last error: Unavailable: %s)'


def test_nodes_that_are_not_members_are_named_as_another_clusters():
    failed = {node: NodeUnreachableError(UNREACHABLE % "x509: certificate signed by unknown authority", node=node)
              for node in ("10.6.0.2", "10.6.0.5")}
    error = cluster_info._unreadable(failed, MEMBERS, PARAMS, ("10.5.0.2",))
    message = str(error)
    assert "before any change: the inventory mixes nodes of different clusters" in message
    assert "b-cp-1 (10.6.0.2), b-w-1 (10.6.0.5) are not members of the cluster behind endpoint 10.5.0.2" in message
    assert "(the cluster of a-cp-1 (10.5.0.2), a-w-1 (10.5.0.5))" in message and "its own rotate_ca_dir" in message


def test_without_discovery_a_trust_failure_still_tells_another_cluster():
    failed = {"10.6.0.2": NodeUnreachableError(UNREACHABLE % "x509: certificate signed by unknown authority", node="10.6.0.2")}
    assert "b-cp-1 (10.6.0.2) is not a member of" in str(cluster_info._unreadable(failed, [], PARAMS, ("10.5.0.2",)))


def test_an_address_nothing_answers_on_keeps_its_error_with_a_hint():
    ghost = NodeUnreachableError(UNREACHABLE % "connection refused", node="10.6.0.2")
    with pytest.raises(NodeUnreachableError) as raised:
        cluster_info._unreadable({"10.6.0.2": ghost}, MEMBERS, PARAMS, ("10.5.0.2",))
    message = str(raised.value)
    assert message.startswith(str(ghost).rstrip(".")) and "mixes nodes" not in message
    assert "Moreover b-cp-1 (10.6.0.2) is not a member of the cluster behind endpoint 10.5.0.2: check the inventory" in message


def test_a_member_that_does_not_trust_the_endpoint_is_no_other_cluster():
    """Mid-rotation, a member may refuse the endpoint: that is the client's own message, not a mixed inventory."""
    refusing = NodeUnreachableError(UNREACHABLE % "x509: certificate signed by unknown authority", node="10.5.0.5")
    with pytest.raises(NodeUnreachableError) as raised:
        cluster_info._unreadable({"10.5.0.5": refusing}, MEMBERS, PARAMS, ("10.5.0.2",))
    assert raised.value is refusing


def test_a_member_that_is_down_keeps_its_own_error():
    down = NodeUnreachableError(UNREACHABLE % "connection refused", node="10.5.0.5")
    with pytest.raises(NodeUnreachableError) as raised:
        cluster_info._unreadable({"10.5.0.5": down}, MEMBERS, PARAMS, ("10.5.0.2",))
    assert raised.value is down and not isinstance(raised.value, type(None))
    assert issubclass(NodeUnreachableError, TalosPKIError)


def test_readable_nodes_of_two_cluster_ids_are_refused():
    nodes = {"10.5.0.2": {"cluster_id": "aaaa", "cluster_name": "a"}, "10.5.0.5": {"cluster_id": "aaaa", "cluster_name": "a"},
             "10.6.0.2": {"cluster_id": "bbbb", "cluster_name": "b"}}
    problems = cluster_info._mixed_clusters(nodes, PARAMS)
    assert len(problems) == 1
    assert "mixes nodes of 2 different clusters" in problems[0]
    assert "cluster a (id digest aaaa): a-cp-1 (10.5.0.2), a-w-1 (10.5.0.5); cluster b (id digest bbbb): b-cp-1 (10.6.0.2)" in problems[0]
    same = {node: dict(facts, cluster_id="aaaa") for node, facts in nodes.items()}
    assert cluster_info._mixed_clusters(same, PARAMS) == []


def test_readable_nodes_that_discovery_does_not_list_are_refused():
    """Two clusters made from one secrets bundle trust each other: discovery still tells them apart."""
    nodes = {address: {} for address in ("10.5.0.2", "10.5.0.5", "10.6.0.2")}
    problems = cluster_info._not_members(nodes, MEMBERS, PARAMS)
    assert len(problems) == 1
    assert problems[0].startswith("b-cp-1 (10.6.0.2) is not listed by the discovery of the cluster behind the endpoint "
                                  "(its members: a-cp-1, a-w-1): another cluster's node (a cluster that shares")
    assert cluster_info._not_members(nodes, [], PARAMS) == []  # discovery off: nothing known
    by_name = [{"hostname": "10.6.0.2", "addresses": []}] + MEMBERS
    assert cluster_info._not_members(nodes, by_name, PARAMS) == []
