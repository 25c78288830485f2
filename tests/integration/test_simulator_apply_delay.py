"""SimCluster(apply_delay=...): every real ApplyConfiguration takes that long; reads and dry runs stay fast.

The benchmarks of the phase engine (bench/phase_engine.py) rest on this: "150 ms config applies" means the apply
itself, not every call (node.set_latency delays every call a node handles, reads and proxied calls included).
"""

import asyncio
import time

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from talos_sim import pki
from talos_sim.__main__ import _arguments
from talos_sim.testing import SimClient, accept_os_ca, admin_credentials, apply_request, get_request

APPLY = "/machine.MachineService/ApplyConfiguration"
VERSION = "/machine.MachineService/Version"
GET = "/cosi.resource.State/Get"
MACHINE_CONFIG = get_request("config", "MachineConfigs.config.talos.dev", "v1alpha1")
DELAY = 0.6


async def _timed(coroutine):
    started = time.monotonic()
    result = await coroutine
    return time.monotonic() - started, result


async def _calls(cluster, node):
    """Seconds of a Version, a config read, a dry run and a real apply to `node` through the endpoint (warm connection)."""
    data = accept_os_ca(node.config_bytes(), pki.new_os_ca().cert_pem)
    async with SimClient(*admin_credentials(cluster)) as client:
        await client.call(cluster.endpoint, VERSION, node=node.address)  # the handshakes happen here, not below
        seconds = {}
        seconds["version"], _reply = await _timed(client.call(cluster.endpoint, VERSION, node=node.address))
        seconds["read"], _reply = await _timed(client.call(cluster.endpoint, GET, MACHINE_CONFIG, node=node.address))
        seconds["dry_run"], _reply = await _timed(client.call(cluster.endpoint, APPLY, apply_request(data, dry_run=True),
                                                              node=node.address))
        before = len(node.applied_at)
        seconds["apply"], _reply = await _timed(client.call(cluster.endpoint, APPLY, apply_request(data), node=node.address))
        assert len(node.applied_at) == before + 1 and node.config_bytes() == data
    return seconds


def test_apply_takes_the_delay_and_nothing_else_does(make_sim_cluster):
    cluster = make_sim_cluster(controlplanes=1, workers=1, apply_delay=DELAY)
    assert cluster.apply_delay == DELAY
    for node in cluster.nodes:
        seconds = asyncio.run(_calls(cluster, node))
        assert seconds["apply"] >= DELAY, (node.name, seconds)
        for call in ("version", "read", "dry_run"):
            assert seconds[call] < DELAY * 0.8, (node.name, call, seconds)


def test_no_delay_by_default(make_sim_cluster):
    cluster = make_sim_cluster(controlplanes=1, workers=1)
    assert cluster.apply_delay == 0.0
    seconds = asyncio.run(_calls(cluster, cluster.workers[0]))
    assert seconds["apply"] < DELAY * 0.8, seconds


def test_a_second_apply_during_the_delay_is_refused(make_sim_cluster):
    """The delay is inside the node's apply lock: a concurrent apply meets FailedPrecondition, as on Talos."""
    cluster = make_sim_cluster(controlplanes=1, workers=1, apply_delay=DELAY)
    node = cluster.workers[0]
    data = accept_os_ca(node.config_bytes(), pki.new_os_ca().cert_pem)

    async def both():
        async with SimClient(*admin_credentials(cluster)) as client:
            first = asyncio.ensure_future(client.call(cluster.endpoint, APPLY, apply_request(data), node=node.address))
            await asyncio.sleep(DELAY / 3)
            with pytest.raises(GRPCError) as error:
                await client.call(cluster.endpoint, APPLY, apply_request(data), node=node.address)
            await first
            return error.value

    error = asyncio.run(both())
    assert error.status == Status.FAILED_PRECONDITION, error
    assert node.config_bytes() == data


def test_command_line_option():
    assert _arguments(["--workdir", "/tmp/x", "--apply-delay", "0.15"]).apply_delay == 0.15
    assert _arguments(["--workdir", "/tmp/x"]).apply_delay == 0.0


def test_negative_delay_is_refused():
    from talos_sim import SimCluster  # pylint: disable=import-outside-toplevel
    with pytest.raises(ValueError, match="apply_delay"):
        SimCluster(controlplanes=1, workers=0, apply_delay=-1)
