#!/usr/bin/env python
"""A CA rotation one node at a time in the order of `talosctl rotate-ca`, with the collection's own client: the baseline.

What the phase engine (issue 14) is measured against. It follows siderolabs/talos pkg/rotate/pki (TALOS-FACTS §7),
written with this collection's module_utils (TalosClient, MachineConfig, _rotation, _pki, KubeletWatch, KubeAPI), so
the only difference to the playbook is the shape of the work: one node after the other, one client per phase.

Talos API CA (pkg/rotate/pki/talos): read the CA from a control plane's OSRootSecrets, make the new CA and an os:admin
client certificate from it; verify every node with the current talosconfig; accept (the new CA joins
machine.acceptedCAs) node by node; verify with the new client certificate and the old server CA; swap (machine.ca =
new, with its key on control planes; the old CA stays accepted) node by node through a client trusting old + new;
verify with the new talosconfig; remove the old CA node by node; verify; write the new talosconfig (0600). Control
planes before workers in every phase; each verify is Version on each node through the endpoint (`node` header); each
patch reads the active MachineConfig, edits the CA fields and applies it (no_reboot).

Kubernetes API CA (pkg/rotate/pki/kubernetes): read the CA from KubernetesRootSecrets; verify (every Kubernetes Node
Ready, retried every 1 s for 3 min); accept, swap and remove node by node, each patch waiting for the node's kubelet
to restart (down, then running and healthy: a Watch of Services/kubelet); after the swap fetch a new kubeconfig from
a control plane and verify with it; verify after the remove.

Runs against the files of a simulated cluster that is already up (--workdir: its inventory.yml, talosconfig and
kubeconfig; e.g. `make sim SIM_ARGS="--apply-delay 0.15"`), or starts a fresh one (--controlplanes, --workers,
--apply-delay, --kubelet-restart). Prints each step's seconds, then one JSON line {"flow", "nodes", "seconds"} (what
bench/phase_engine.py reads).

Usage: bench/baseline_one_node.py --flow talos|kubernetes [--workdir DIR | --controlplanes 3 --workers 97
                                  --apply-delay 0.15 --kubelet-restart 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time

import yaml

# Import paths: talos_sim, the collection.
import _common  # noqa: F401  pylint: disable=unused-import
from talos_sim import SimCluster  # pylint: disable=wrong-import-order
from ansible_collections.talosops.pki.plugins.module_utils import _pki, _rotation  # pylint: disable=wrong-import-order
from ansible_collections.talosops.pki.plugins.module_utils._client import Credentials, TalosClient  # pylint: disable=wrong-import-order
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig  # pylint: disable=wrong-import-order
from ansible_collections.talosops.pki.plugins.module_utils._kubelet import KubeletWatch  # pylint: disable=wrong-import-order
from ansible_collections.talosops.pki.plugins.module_utils._kubernetes import OK, KubeAPI  # pylint: disable=wrong-import-order
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import MachineConfig  # pylint: disable=wrong-import-order
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import TalosConfig, TalosContext  # pylint: disable=wrong-import-order

KUBELET_TIMEOUT = 300.0
READY_DEADLINE, READY_INTERVAL = 180.0, 1.0  # pkg/rotate/pki/kubernetes: all Nodes Ready, retried 3 min every 1 s


class ClusterFiles:
    """What the baseline needs from a simulated cluster's folder: node addresses in the talosctl order, credentials."""

    def __init__(self, workdir):
        with open(os.path.join(workdir, "inventory.yml"), encoding="utf-8") as handle:
            groups = yaml.safe_load(handle)["all"]["children"]

        def addresses(group):
            return [host["talos_node_address"] for host in (groups.get(group, {}).get("hosts") or {}).values()]
        self.controlplanes, self.workers = addresses("controlplane"), addresses("worker")
        self.nodes = self.controlplanes + self.workers  # init/control planes first, then workers, in every phase
        self.talosconfig = os.path.join(workdir, "talosconfig")
        self.context = TalosConfig.load(self.talosconfig).get_context()
        self.endpoints = list(self.context.endpoints)
        self.kubeconfig = os.path.join(workdir, "kubeconfig")
        self.output = workdir


class Steps:
    """Times the named steps of one run and prints each as it ends."""

    def __init__(self):
        self.seconds = []

    async def run(self, name, coroutine):
        started = time.monotonic()
        result = await coroutine
        self.seconds.append((name, time.monotonic() - started))
        print("%7.2f s  %s" % (self.seconds[-1][1], name), flush=True)
        return result


def _node_cas(fields):
    return _rotation.NodeCAs(_pki.fingerprint(fields.issuing_crt) if fields.issuing_crt else None,
                             tuple(_pki.fingerprint(crt) for crt in fields.accepted))


async def patch_node(client, node, kind, phase, old, new, wait_kubelet=False):
    """Read the node's config, set its `kind` CA fields to the state of `phase` (old/new: CertAndKey), apply it."""
    old_fp, new_fp = _pki.fingerprint(old.crt), _pki.fingerprint(new.crt)
    config = MachineConfig.parse(await client.machine_config(node=node), source="machine config of %s" % node)
    fields = config.get_ca(kind)
    before = _node_cas(fields)
    issuing, accepted = _rotation.desired_state(phase, before, old_fp, new_fp, node=node)
    if (issuing, tuple(accepted)) == tuple(before):
        return False
    known = {_pki.fingerprint(crt): crt for crt in (fields.issuing_crt, old.crt, new.crt) + tuple(fields.accepted) if crt}
    key = fields.issuing_key
    if issuing == new_fp and before.issuing != new_fp:
        key = new.key if config.is_control_plane else None  # workers never hold a CA key
    config.set_ca(kind, known[issuing] if issuing else None, key, tuple(known[fp] for fp in accepted))
    data = config.to_bytes()
    if not wait_kubelet:
        await client.apply_configuration(data, node=node, mode="no_reboot")
        return True
    async with KubeletWatch(client, node, KUBELET_TIMEOUT, "the %s phase" % phase) as kubelet:
        await kubelet.wait_ready()
        await client.apply_configuration(data, node=node, mode="no_reboot")
        await kubelet.wait_restart()
    return True


async def each_node(files, credentials, action):
    """`action(client, node)` on every node, one after the other, on one client (one connection) for the whole step."""
    async with TalosClient(files.endpoints, credentials) as client:
        for node in files.nodes:
            await action(client, node)


async def talos_flow(files, steps):
    context = files.context
    current = Credentials(ca=context.ca, crt=context.crt, key=context.key)
    async with TalosClient(files.endpoints, current) as client:
        root = await client.os_root(node=files.controlplanes[0])
    old = _pki.CertAndKey(root["issuing_ca"]["crt"], None)
    new = _pki.generate_ca(_pki.KIND_TALOS)
    admin = _pki.issue_client_certificate(new, roles=("os:admin",))

    def version(client, node):
        return client.version(node=node)

    def patch(phase):
        return lambda client, node: patch_node(client, node, _pki.KIND_TALOS, phase, old, new)

    await steps.run("verify with the current talosconfig", each_node(files, current, version))
    await steps.run("accept the new CA, node by node", each_node(files, current, patch("accept")))
    await steps.run("verify with the new client certificate", each_node(files, Credentials(old.crt, admin.crt, admin.key), version))
    await steps.run("swap to the new CA, node by node", each_node(files, Credentials(old.crt + new.crt, admin.crt, admin.key), patch("swap")))
    final = Credentials(new.crt, admin.crt, admin.key)
    await steps.run("verify with the new talosconfig", each_node(files, final, version))
    await steps.run("remove the old CA, node by node", each_node(files, final, patch("remove")))
    await steps.run("verify after the remove", each_node(files, final, version))
    path = os.path.join(files.output, "talosconfig.baseline")
    TalosConfig.new(TalosContext(context.name, context.endpoints, context.nodes, new.crt, admin.crt, admin.key)).save(path)


def _all_ready(credentials, expected):
    """Poll the Kubernetes API until every expected node is Ready (True), as talosctl's verify does."""
    deadline = time.monotonic() + READY_DEADLINE
    while True:
        with KubeAPI(credentials) as api:
            outcome = api.nodes()
        ready = {node.name for node in outcome.value or () if node.ready == "True"} if outcome.kind == OK else set()
        if len(ready) >= expected:
            return len(ready)
        if time.monotonic() > deadline:
            raise RuntimeError("only %d of %d Kubernetes nodes Ready after %ss (%s)" % (len(ready), expected, READY_DEADLINE, outcome.detail))
        time.sleep(READY_INTERVAL)


async def ready(credentials, expected):
    return await asyncio.to_thread(_all_ready, credentials, expected)


async def kubernetes_flow(files, steps):
    talos = Credentials(ca=files.context.ca, crt=files.context.crt, key=files.context.key)
    async with TalosClient(files.endpoints, talos) as client:
        root = await client.kubernetes_root(node=files.controlplanes[0])
    old = _pki.CertAndKey(root["issuing_ca"]["crt"], None)
    new = _pki.generate_ca(_pki.KIND_KUBERNETES)
    kube = Kubeconfig.load(files.kubeconfig).credentials()

    def patch(phase):
        return lambda client, node: patch_node(client, node, _pki.KIND_KUBERNETES, phase, old, new, wait_kubelet=True)

    await steps.run("verify: every node Ready", ready(kube, len(files.nodes)))
    await steps.run("accept the new CA, node by node (kubelet restarts)", each_node(files, talos, patch("accept")))
    await steps.run("swap to the new CA, node by node (kubelet restarts)", each_node(files, talos, patch("swap")))

    async def fetch_kubeconfig():
        async with TalosClient(files.endpoints, talos) as client:
            return Kubeconfig.parse(await client.kubeconfig(node=files.controlplanes[0]), "new kubeconfig").credentials()
    kube = await steps.run("fetch a new kubeconfig", fetch_kubeconfig())
    await steps.run("verify with it: every node Ready", ready(kube, len(files.nodes)))
    await steps.run("remove the old CA, node by node (kubelet restarts)", each_node(files, talos, patch("remove")))
    await steps.run("verify after the remove", ready(kube, len(files.nodes)))


FLOWS = {"talos": talos_flow, "kubernetes": kubernetes_flow}


def rotate(flow, workdir):
    """Seconds of the whole one-node-at-a-time rotation of `flow` on the cluster whose files are in `workdir`."""
    files, steps = ClusterFiles(workdir), Steps()
    started = time.monotonic()
    asyncio.run(FLOWS[flow](files, steps))
    return len(files.nodes), time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flow", choices=sorted(FLOWS), required=True)
    parser.add_argument("--workdir", help="folder of a running simulated cluster (inventory.yml, talosconfig, kubeconfig)")
    parser.add_argument("--controlplanes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=97)
    parser.add_argument("--apply-delay", type=float, default=0.15, help="seconds each simulated config apply takes")
    parser.add_argument("--kubelet-restart", type=float, default=2.0, help="simulated kubelet restart delay (s)")
    args = parser.parse_args()
    if args.workdir:
        nodes, seconds = rotate(args.flow, args.workdir)
    else:
        workdir = tempfile.mkdtemp(prefix="talosops-bench-baseline-")
        with SimCluster(controlplanes=args.controlplanes, workers=args.workers, workdir=workdir, apply_delay=args.apply_delay,
                        kubelet_restart_delay=args.kubelet_restart):
            nodes, seconds = rotate(args.flow, workdir)
    print("one node at a time, %s flow, %d nodes: %.1f s" % (args.flow, nodes, seconds))
    print(json.dumps({"flow": args.flow, "nodes": nodes, "seconds": round(seconds, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
