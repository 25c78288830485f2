"""apid routing: the `node` header through a control-plane endpoint, workers, the `nodes` header."""

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from talos_sim import wire
from talos_sim.testing import admin_credentials, call, field_numbers, get_request, wire_fields

VERSION = "/machine.MachineService/Version"
GET = "/cosi.resource.State/Get"
LIST = "/cosi.resource.State/List"
OS_ROOT = get_request("secrets", "OSRootSecrets.secrets.talos.dev", "os")


def refused(cluster, address, path, request=None, **kwargs):
    with pytest.raises(GRPCError) as error:
        call(admin_credentials(cluster), address, path, request, **kwargs)
    return error.value


def test_node_header_reaches_every_node_through_the_endpoint(module_sim_cluster):
    cluster = module_sim_cluster
    for node in cluster.nodes:  # the endpoint itself included: apid proxies to itself too
        raw = call(admin_credentials(cluster), cluster.endpoint, VERSION, node=node.address, raw=True)
        reply = wire.message_class("machine.VersionResponse").FromString(raw)
        assert reply.messages[0].version.tag == node.talos_version
        assert not reply.messages[0].HasField("metadata")  # one-to-one replies are forwarded unchanged
        resource = call(admin_credentials(cluster), cluster.endpoint, GET, OS_ROOT, node=node.address).resource
        assert resource.metadata.id == "os"
        members = wire.message_class("cosi.resource.ListRequest")(namespace="cluster", type="Members.cluster.talos.dev")
        assert call(admin_credentials(cluster), cluster.endpoint, LIST, members, node=node.address)


def test_workers_do_not_forward(module_sim_cluster):
    cluster = module_sim_cluster
    worker, other = cluster.workers
    error = refused(cluster, worker.address, VERSION, node=other.address)
    assert error.status == Status.PERMISSION_DENIED and error.message == "no request forwarding"
    assert refused(cluster, worker.address, VERSION, node=cluster.endpoint).status == Status.PERMISSION_DENIED
    # A worker still answers a request addressed to itself.
    assert call(admin_credentials(cluster), worker.address, VERSION, node=worker.address).messages[0].version.tag


def test_nodes_header_is_refused_for_cosi_and_fans_out_machine_calls(module_sim_cluster):
    cluster = module_sim_cluster
    targets = [node.address for node in cluster.nodes[:3]]
    error = refused(cluster, cluster.endpoint, GET, OS_ROOT, nodes=targets)
    assert error.status == Status.INVALID_ARGUMENT and "one-2-many proxying is not supported" in error.message
    raw = call(admin_credentials(cluster), cluster.endpoint, VERSION, nodes=targets, raw=True)
    reply = wire.message_class("machine.VersionResponse").FromString(raw)
    assert [message.metadata.hostname for message in reply.messages] == targets
    # apid appends the metadata (field 1) after each reply's own fields (2, 3, 4).
    assert [field_numbers(entry) for _number, entry in wire_fields(raw)] == [[2, 3, 4, 1]] * 3


def test_fan_out_reports_a_failed_node_inside_an_ok_reply(make_sim_cluster):
    cluster = make_sim_cluster(controlplanes=1, workers=2)
    down = cluster.workers[1]
    down.down()
    targets = [cluster.workers[0].address, down.address]
    reply = call(admin_credentials(cluster), cluster.endpoint, VERSION, nodes=targets)
    ok, failed = reply.messages
    assert ok.version.tag and ok.metadata.hostname == targets[0]
    assert not failed.HasField("version") and failed.metadata.hostname == down.address
    assert failed.metadata.status.code == Status.UNAVAILABLE.value and "connection refused" in failed.metadata.error


def test_unknown_and_malformed_targets(module_sim_cluster):
    cluster = module_sim_cluster
    unused = "%s.250" % cluster.subnet  # nothing listens there
    error = refused(cluster, cluster.endpoint, VERSION, node=unused)
    assert error.status == Status.UNAVAILABLE and "connection refused" in error.message
    assert refused(cluster, cluster.endpoint, VERSION, node="no-such-node").status == Status.UNAVAILABLE
    assert refused(cluster, cluster.endpoint, VERSION, node=cluster.endpoint + ":50000").status == Status.INTERNAL
    error = refused(cluster, cluster.endpoint, VERSION, metadata=[("node", cluster.nodes[3].address),
                                                                  ("node", cluster.nodes[4].address)])
    assert error.status == Status.INVALID_ARGUMENT and "single-valued" in error.message
