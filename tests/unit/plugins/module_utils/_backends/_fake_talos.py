"""A fake Talos API for unit tests of the node service and the wave runner: no sockets, no simulator.

Nodes' machine configs are bytes in memory, built from the real Talos-generated reference configs (v1.13 legacy shape,
v1.15 documents). ApplyConfiguration parses what it gets (a config the collection broke fails here), replaces the node's
config unless it is a dry run, and restarts the kubelet when the node's Kubernetes CA bundle changed, as Talos does.
Every call is counted, with the most calls in flight at once, so a test can check the concurrency limit.
"""

import asyncio
import os

from ansible_collections.talosops.pki.plugins.module_utils import _pki, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._errors import TalosAPIError
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import MachineConfig

from talos_reference import reference_path  # pylint: disable=import-error

SHAPES = ("v1.13", "v1.15")


def reference_config(shape, machine_type):
    """The bytes of the real Talos-generated config of `shape` for a control plane or a worker."""
    name = "base-worker.yaml" if machine_type == "worker" else "base-controlplane.yaml"
    with open(reference_path("machineconfig-%s" % shape, name), "rb") as handle:
        return handle.read()


def current_ca(shape, kind):
    """The (crt, key) of CA `kind` the reference control plane of `shape` issues with."""
    fields = MachineConfig.parse(reference_config(shape, "controlplane")).get_ca(kind)
    return _pki.CertAndKey(fields.issuing_crt, fields.issuing_key)


def make_rotation(tmp_path, shape, kind):
    """A rotation folder replacing the reference cluster's CA (or service-account key) of `kind` with a new one."""
    path = os.path.join(str(tmp_path), "rotation", kind)
    if kind == _pki.KIND_SERVICE_ACCOUNT:
        signing_key = MachineConfig.parse(reference_config(shape, "controlplane")).get_service_account().signing_key
        return _rotation_store.create_service_account(path, _pki.public_key_pem(signing_key), _pki.generate_service_account_key("ecdsa-p256"))
    previous = current_ca(shape, kind)
    return _rotation_store.create(path, kind, previous.crt, _pki.generate_ca(kind), previous_ca_key=previous.key)


class FakeTalos:
    """Stands for _client.TalosClient (the calls the node service makes), over in-memory nodes."""

    def __init__(self, configs, delay=0.01, failures=None, kubelet_restarts=True):
        self.configs = dict(configs)  # node address -> machine config bytes
        self.delay = delay
        self.failures = dict(failures or {})  # node -> error text raised by its apply
        self.kubelet_restarts = kubelet_restarts
        self.calls = []  # (call, node, dry_run)
        self.in_flight = 0
        self.max_in_flight = 0
        self.opened = 0
        self._kubelet = {node: 1 for node in self.configs}
        self._watchers = {node: [] for node in self.configs}

    async def __aenter__(self):
        self.opened += 1
        return self

    async def __aexit__(self, *exc_info):
        return None

    async def _busy(self):
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1

    def applies(self, dry_run=None):
        return [node for call, node, dry in self.calls if call == "apply" and (dry_run is None or dry == dry_run)]

    async def machine_config(self, node=None):
        self.calls.append(("machine_config", node, False))
        if node not in self.configs:
            raise TalosAPIError("%s: no such node" % node, node=node)
        await self._busy()
        return self.configs[node]

    async def apply_configuration(self, data, node=None, *, mode="no_reboot", dry_run=False, try_timeout=None, guard=None):
        if guard is not None:
            guard()
        self.calls.append(("apply", node, dry_run))
        await self._busy()
        if node in self.failures:
            raise TalosAPIError("%s: %s" % (node, self.failures[node]), node=node)
        old, new = MachineConfig.parse(self.configs[node]), MachineConfig.parse(data)
        reply = {"mode": mode, "warnings": [], "mode_details": "Dry run summary:\nApplied configuration without a reboot"
                 if dry_run else "Applied configuration without a reboot"}
        if not dry_run:
            self.configs[node] = data
            if self.kubelet_restarts and _kube_bundle(old) != _kube_bundle(new):
                asyncio.get_running_loop().create_task(self._restart_kubelet(node))
        return reply

    async def _restart_kubelet(self, node):
        for running in (False, True):
            await asyncio.sleep(self.delay)
            self._kubelet[node] += 1
            for queue in self._watchers[node]:
                queue.put_nowait(_service(running, self._kubelet[node], "updated"))

    async def watch_service(self, service_id, node=None, *, timeout=None):
        assert service_id == "kubelet"
        self.calls.append(("watch_service", node, False))
        queue = asyncio.Queue()
        self._watchers[node].append(queue)
        try:
            yield _service(True, self._kubelet[node], "created")
            while True:
                yield await queue.get()
        finally:
            self._watchers[node].remove(queue)


def _service(running, version, event):
    return {"running": running, "healthy": running, "version": str(version), "event": event}


def _kube_bundle(config):
    try:
        fields = config.get_ca("kubernetes")
    except Exception:  # pylint: disable=broad-except  # a shape without it: no kubelet bundle to compare
        return None
    return tuple(_pki.fingerprint(crt) for crt in fields.accepted) + ((_pki.fingerprint(fields.issuing_crt),) if fields.issuing_crt else ())


class FakeTarget:
    """Stands for _auth.Target: the fake client, and a talosconfig certificate issued by `client_ca`."""

    def __init__(self, client, client_ca):
        self._client = client
        self.endpoints = ("10.5.0.2",)
        self.talosconfig_path = "/fake/talosconfig"
        crt, key = _pki.issue_client_certificate(client_ca)
        self.credentials = _Credentials(crt, key)

    def client(self, endpoints=None):
        return self._client


class _Credentials:
    def __init__(self, crt, key):
        self.crt, self.key = crt, key


class FakeGuard:
    """Stands for rotation_lock.RunGuard: counts entries and checks."""

    def __init__(self):
        self.entered = 0
        self.checks = 0

    def __call__(self, folder=None):
        return self

    def __enter__(self):
        self.entered += 1
        return self

    def __exit__(self, *exc_info):
        return None

    def check(self, what="apply a configuration"):
        self.checks += 1
