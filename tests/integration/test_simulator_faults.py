"""Faults on demand: node down/up, slow responses, failing applies, dropped connections."""

import asyncio
import socket

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from talos_sim import pki
from talos_sim.testing import SimClient, accept_os_ca, admin_credentials, apply_request, call, run, watch_request

VERSION = "/machine.MachineService/Version"
APPLY = "/machine.MachineService/ApplyConfiguration"


def test_node_down_and_up(sim_cluster):
    cluster = sim_cluster
    worker = cluster.workers[0]
    worker.down()
    assert not worker.is_up
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((worker.address, 50000), timeout=2).close()
    with pytest.raises(GRPCError) as error:
        call(admin_credentials(cluster), cluster.endpoint, VERSION, node=worker.address)
    assert error.value.status == Status.UNAVAILABLE and "connection refused" in error.value.message
    worker.up()
    assert call(admin_credentials(cluster), cluster.endpoint, VERSION, node=worker.address).messages[0].version.tag
    assert call(admin_credentials(cluster), worker.address, VERSION).messages[0].version.tag


def test_slow_responses(sim_cluster):
    cluster = sim_cluster
    node = cluster.controlplanes[1]
    assert call(admin_credentials(cluster), node.address, VERSION, timeout=1.0).messages
    node.set_latency(2.0)
    with pytest.raises(asyncio.TimeoutError):
        call(admin_credentials(cluster), node.address, VERSION, timeout=0.3)
    node.set_latency(0)
    assert call(admin_credentials(cluster), node.address, VERSION, timeout=1.0).messages


@pytest.mark.parametrize("status", [Status.UNAVAILABLE, Status.FAILED_PRECONDITION])
def test_failing_applies(sim_cluster, status):
    cluster = sim_cluster
    node = cluster.workers[1]
    data = accept_os_ca(node.config_bytes(), pki.new_os_ca().cert_pem)
    node.fail_next_applies(2, status)
    for _attempt in range(2):
        with pytest.raises(GRPCError) as error:
            call(admin_credentials(cluster), cluster.endpoint, APPLY, apply_request(data), node=node.address)
        assert error.value.status == status
        assert node.config_bytes() != data
    call(admin_credentials(cluster), cluster.endpoint, APPLY, apply_request(data), node=node.address)
    assert node.config_bytes() == data


def test_dropped_connections_end_open_streams(sim_cluster):
    cluster = sim_cluster
    node = cluster.workers[0]
    kubelet = watch_request("runtime", "Services.v1alpha1.talos.dev", "kubelet")

    async def watch(drop: bool):
        async with SimClient(*admin_credentials(cluster)) as client:
            async with client.watch(node.address, kubelet) as stream:
                await stream.recv_message()
                await stream.recv_message()
                if drop:
                    await asyncio.get_running_loop().run_in_executor(None, node.drop_connections)
                try:
                    await asyncio.wait_for(stream.recv_message(), 1.0)
                except asyncio.TimeoutError:
                    return "still open"
                except (StreamTerminatedError, ConnectionError):
                    return "dropped"
            return "ended"

    assert run(watch(drop=False)) == "still open"
    assert run(watch(drop=True)) == "dropped"
    assert node.is_up and call(admin_credentials(cluster), node.address, VERSION).messages
