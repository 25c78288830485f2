#!/usr/bin/env python
"""How fast the simulated Talos cluster starts, and what one rotation-shaped pass over it costs.

Prints, for 3 control planes + 50 and + 97 workers: the time from SimCluster.start() to
every node serving, then the time for one "phase" the way the collection drives it (per
node, on a new connection each time, through the endpoint with the `node` header: read
the MachineConfig, apply an accepted CA, check Version). Numbers only, no thresholds.

Usage: bench/sim_startup.py [--workers 50 97] [--repeat 3]
"""

import argparse
import asyncio
import statistics
import tempfile
import time

# Import paths: talos_sim.
import _common  # noqa: F401  pylint: disable=unused-import
from talos_sim import SimCluster, pki  # pylint: disable=wrong-import-order
from talos_sim.testing import (SimClient, accept_os_ca, admin_credentials, apply_request,  # pylint: disable=wrong-import-order
                               decode_spec, get_request)

GET = "/cosi.resource.State/Get"
APPLY = "/machine.MachineService/ApplyConfiguration"
VERSION = "/machine.MachineService/Version"


async def one_phase(cluster) -> float:
    new_ca = pki.new_os_ca()
    started = time.monotonic()
    for node in cluster.controlplanes + cluster.workers:
        async with SimClient(*admin_credentials(cluster)) as client:
            reply = await client.call(cluster.endpoint, GET, get_request("config", "MachineConfigs.config.talos.dev",
                                                                         "v1alpha1"), node=node.address)
        data = decode_spec(reply.resource, "resource.config.MachineConfigSpec").yaml_marshalled
        async with SimClient(*admin_credentials(cluster)) as client:
            await client.call(cluster.endpoint, APPLY, apply_request(accept_os_ca(data, new_ca.cert_pem)),
                              node=node.address)
        async with SimClient(*admin_credentials(cluster)) as client:
            await client.call(cluster.endpoint, VERSION, node=node.address)
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[50, 97])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for workers in args.workers:
        startups, phases = [], []
        for _repeat in range(args.repeat):
            with tempfile.TemporaryDirectory() as workdir:
                started = time.monotonic()
                with SimCluster(controlplanes=3, workers=workers, workdir=workdir) as cluster:
                    startups.append(time.monotonic() - started)
                    phases.append(asyncio.run(one_phase(cluster)))
        print("3 control planes + %d workers: startup %.2fs (median of %d, min %.2fs, max %.2fs); "
              "one phase over %d nodes %.2fs" % (workers, statistics.median(startups), len(startups), min(startups),
                                                 max(startups), workers + 3, statistics.median(phases)))


if __name__ == "__main__":
    main()
