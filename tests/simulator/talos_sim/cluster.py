"""A simulated Talos cluster: N control planes and M workers on loopback addresses, one process.

The cluster runs an asyncio event loop in a background thread, so a pytest process or a CLI
can drive it synchronously. Each node listens on 127.A.B.x:50000 (one /24 per cluster) and
each control plane also runs a Kubernetes API server on :6443 (talos_sim.kubernetes).
"""

from __future__ import annotations

import asyncio
import datetime
import errno
import hashlib
import json
import os
import random
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence

import yaml

from . import machineconfig, pki, yamlgen
from .kubernetes import KubeAPIServer, render_kubeconfig
from .node import APID_PORT, SimNode

KUBE_APISERVER_PORT = 6443
_CLAIM_HOST = 254  # 127.A.B.254:50000 is held for the cluster's lifetime to reserve its /24
MAX_NODES = 253  # per /24: hosts .1 to .253
MAX_SUBNETS = 4  # a larger cluster continues in the next /24s: 127.A.B+1.1, ...


class SimCluster:
    """A simulated Talos cluster.

    talos_version: one tag ("v1.13.4") for every node, a list of tags (control planes first,
    then workers), or a callable (index, machine_type) -> tag. v1.14+ nodes keep the
    Kubernetes CA in a KubeAPIServerCAConfig document.
    subnet: "127.A.B" (or "127.A.B.0/24") to choose the /24; None picks a free one. A cluster of more than 253
    nodes continues in the next /24s (127.A.B+1.1 ...), each reserved the same way (up to MAX_SUBNETS).
    controller_delay: seconds between an applied config and the controllers reacting to it
    (certificate reissue, trustd, kubelet restart). Talos does this asynchronously.
    apply_delay: seconds every ApplyConfiguration that is not a dry run takes on every node (inside the node's apply
    lock, before the configuration takes effect), as machined takes to validate, persist and activate one; reads,
    dry runs and every other call stay as fast as they are. Benchmarks use 0.15.
    split_members: emulate the Kubernetes discovery registry, where a control plane's Members
    lists only control planes and a worker's only workers (off: discovery service, all nodes).
    init_node: the first control plane has machine.type init, as clusters bootstrapped before Talos v1.x still do.
    discovery: False emulates cluster discovery turned off (cluster.discovery.enabled: false): Members is empty
    on every node.
    vip: the control planes' configs declare a shared virtual IP (<subnet>.253), which the first
    control plane holds: it answers there too and lists it first among its member addresses.
    ca_validity: lifetimes of the cluster's root CAs, {"os"|"kubernetes"|"etcd"|"aggregator": timedelta}, for a cluster
    whose CA expires soon (talosctl makes 10-year CAs).
    """

    def __init__(self, controlplanes: int = 3, workers: int = 2, workdir: str | os.PathLike | None = None,
                 talos_version: str | Sequence[str] | Callable[[int, str], str] = "v1.13.4",
                 kubelet_restart_delay: float = 0.2, subnet: str | None = None, *, name: str = "talos-sim",
                 kubernetes_version: str = "v1.34.1", controller_delay: float = 0.0, reboot_duration: float = 1.0,
                 trustd_retry_interval: float = 1.0, split_members: bool = False, vip: bool = False,
                 discovery: bool = True, init_node: bool = False, ca_validity: dict | None = None,
                 apply_delay: float = 0.0):
        if controlplanes < 1:
            raise ValueError("a cluster needs at least one control plane")
        if controlplanes + workers > (MAX_NODES - 1 if vip else MAX_NODES * MAX_SUBNETS):
            raise ValueError("at most %d nodes fit in %d /24s (with a VIP, at most %d in one)" % (
                MAX_NODES * MAX_SUBNETS, MAX_SUBNETS, MAX_NODES - 1))
        self.name = name
        self.kubernetes_version = kubernetes_version
        self.kubelet_restart_delay = kubelet_restart_delay
        self.controller_delay = controller_delay
        if apply_delay < 0:
            raise ValueError("apply_delay is a number of seconds, at least 0")
        self.apply_delay = float(apply_delay)
        self.reboot_duration = reboot_duration
        self.trustd_retry_interval = trustd_retry_interval
        self.split_members = split_members
        self._want_vip = vip
        self.discovery = discovery
        self.init_node = init_node
        self.ca_validity = dict(ca_validity or {})
        self.vip: str | None = None
        self.build_date = "2025-06-02T10:00:00Z"
        self._counts = (controlplanes, workers)
        self._versions = self._resolve_versions(talos_version, controlplanes, workers)
        self._requested_subnet = subnet
        self._own_workdir = workdir is None
        self.workdir = os.path.abspath(tempfile.mkdtemp(prefix="talos-sim-") if workdir is None else os.fspath(workdir))
        self.talosconfig_path = os.path.join(self.workdir, "talosconfig")
        self.secrets_path = os.path.join(self.workdir, "secrets.yaml")
        self.inventory_path = os.path.join(self.workdir, "inventory.yml")
        self.kubeconfig_path = os.path.join(self.workdir, "kubeconfig")
        self.nodes_path = os.path.join(self.workdir, "nodes.json")
        self.nodes: list[SimNode] = []
        self.secrets: machineconfig.ClusterSecrets | None = None
        self.admin: pki.CertKey | None = None
        self.subnet: str | None = None
        self.created: datetime.datetime | None = None
        self.startup_seconds: float | None = None
        self._by_key: dict[str, SimNode] = {}
        self._kube_servers: dict[str, KubeAPIServer] = {}
        self._kubernetes_cas_seen: dict[bytes, bytes] = {}
        self.subnets: list[str] = []
        self._claims: list[socket.socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def _resolve_versions(talos_version, controlplanes: int, workers: int) -> list[str]:
        types = ["controlplane"] * controlplanes + ["worker"] * workers
        if isinstance(talos_version, str):
            versions = [talos_version] * len(types)
        elif callable(talos_version):
            versions = [talos_version(index, machine_type) for index, machine_type in enumerate(types)]
        else:
            versions = list(talos_version)
            if len(versions) != len(types):
                raise ValueError("talos_version lists %d tags for %d nodes" % (len(versions), len(types)))
        for tag in versions:
            machineconfig.TalosVersion.parse(tag)
        return versions

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> "SimCluster":
        """Generate secrets and configs, start every node; returns when all of them serve."""
        if self.nodes:
            raise RuntimeError("a SimCluster starts once: make a new one")
        started = time.monotonic()
        self.created = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        self.subnets = self._claim_subnets(self._requested_subnet)
        self.subnet = self.subnets[0]
        self.vip = "%s.%d" % (self.subnet, MAX_NODES) if self._want_vip else None
        self.secrets = machineconfig.ClusterSecrets.generate(self.name, self.ca_validity)
        self.secrets_objects: list[dict] = []
        self._talos_sa_secrets: dict = {}
        # Objects kube-apiserver lists, by "plural.group" (see kubernetes_objects); tests seed them. A resource missing here
        # is not served (404): Talos' talos.dev ServiceAccount CRD exists only once a test sets "serviceaccounts.talos.dev".
        self.kube_objects: dict[str, list[dict]] = {resource: [] for resource in (
            "pods", "apiservices.apiregistration.k8s.io", "validatingwebhookconfigurations.admissionregistration.k8s.io",
            "mutatingwebhookconfigurations.admissionregistration.k8s.io", "deployments.apps", "daemonsets.apps",
            "statefulsets.apps")}
        self.admin = pki.talos_client_certificate(self.secrets.os_ca)
        self._create_nodes()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="talos-sim-%s" % self.subnet, daemon=True)
        self._thread.start()
        try:
            self.run(self._start_nodes())
            self._write_files()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Stop every listener and the loop; idempotent."""
        if self._thread is not None:
            try:
                self.run(self._stop_nodes())
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join()
                self._loop.close()
                self._thread = self._loop = None
        for claim in self._claims:
            claim.close()
        self._claims = []
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "SimCluster":
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    def run(self, coroutine, timeout: float = 120.0):
        """Run a coroutine on the cluster's loop from another thread and return its result."""
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("the cluster is not running")
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("SimCluster.run() called from the cluster's own loop: await the coroutine instead")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def settle(self) -> None:
        """Return once the controllers have reacted to everything applied so far.

        Controllers run controller_delay after an apply (call_soon when 0): a callback queued
        on the loop after that delay runs after them. Kubelet restarts take longer
        (kubelet_restart_delay) and are not waited for.
        """
        self.run(asyncio.sleep(self.controller_delay + 0.001))

    def _subnet_count(self) -> int:
        return -(-sum(self._counts) // MAX_NODES)

    def _claim_subnets(self, requested: str | None) -> list[str]:
        """The /24s of this cluster (the first one, then the next ones for a cluster of more than 253 nodes), each
        reserved by binding its .254:50000 for the cluster's lifetime."""
        count = self._subnet_count()
        if requested is not None:
            prefix = requested.split("/")[0]
            parts = prefix.split(".")
            if parts[-1] == "0" and len(parts) == 4:
                parts = parts[:3]
            if len(parts) != 3 or parts[0] != "127" or not all(part.isdigit() and int(part) < 256 for part in parts):
                raise ValueError("subnet must be 127.A.B (a loopback /24), got %r" % requested)
            if int(parts[2]) + count > 256:
                raise ValueError("%d nodes need %d /24s from %s on: choose a lower third number" % (sum(self._counts), count, requested))
            candidates = [(int(parts[1]), int(parts[2]))]
        else:
            # Random /24s far from 127.0.0.x; several clusters (and processes) can run at once.
            candidates = [(random.randint(100, 250), random.randint(0, 256 - count)) for _try in range(200)]
        for second, third in candidates:
            subnets = ["127.%d.%d" % (second, third + offset) for offset in range(count)]
            claims = []
            try:
                for subnet in subnets:
                    claim = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    claims.append(claim)
                    claim.bind(("%s.%d" % (subnet, _CLAIM_HOST), APID_PORT))
            except OSError as exc:
                for claim in claims:
                    claim.close()
                if exc.errno != errno.EADDRINUSE or requested is not None:
                    raise
                continue
            self._claims = claims
            return subnets
        raise RuntimeError("no free loopback /24 found")

    def _address(self, index: int) -> str:
        """Address of the node at `index` (control planes first): .1 to .253 of each /24 in turn."""
        subnet, host = divmod(index, MAX_NODES)
        return "%s.%d" % (self.subnets[subnet], host + 1)

    def _create_nodes(self) -> None:
        controlplanes, workers = self._counts
        endpoint = "%s.1" % self.subnet
        for index in range(controlplanes + workers):
            tier = "controlplane" if index < controlplanes else "worker"
            machine_type = "init" if index == 0 and self.init_node else tier
            number = index + 1 if index < controlplanes else index - controlplanes + 1
            tag = self._versions[index]
            config = machineconfig.generate(self.secrets, machine_type, machineconfig.TalosVersion.parse(tag),
                                            endpoint, self.kubernetes_version,
                                            vip=self.vip if tier == "controlplane" else None)
            node = SimNode(self, "%s-%s-%d" % (self.name, tier, number), self._address(index),
                           machine_type, tag, config)
            self.nodes.append(node)
            self._by_key[node.address] = self._by_key[node.name] = node

    async def _start_nodes(self) -> None:
        # Control planes first: workers get their certificates from a control plane's trustd.
        for node in self.controlplanes:
            node.boot()
        await asyncio.gather(*(node.start() for node in self.controlplanes))
        for node in self.workers:
            node.boot()
        await asyncio.gather(*(node.start() for node in self.workers))
        for node in self.nodes:
            node.start_kubelet(self.current_kubernetes_issuer())
        for node in self.nodes if self.discovery else ():
            if not self.split_members:
                node.publish_members(self.nodes)
            else:
                node.publish_members(self.controlplanes if node.controlplane else self.workers)
        for node in self.controlplanes:
            self.note_kubernetes_cas(node)
            server = KubeAPIServer(node.address, KUBE_APISERVER_PORT, self, kubernetes_version=self.kubernetes_version)
            await server.start()
            self._kube_servers[node.address] = server

    async def _stop_nodes(self) -> None:
        for server in self._kube_servers.values():
            await server.stop()
        self._kube_servers.clear()
        await asyncio.gather(*(node.stop() for node in self.nodes), return_exceptions=True)
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # --- lookups ----------------------------------------------------------------------------

    @property
    def controlplanes(self) -> list[SimNode]:
        return [node for node in self.nodes if node.controlplane]

    @property
    def workers(self) -> list[SimNode]:
        return [node for node in self.nodes if not node.controlplane]

    @property
    def endpoint(self) -> str:
        """The first control plane's address, the default Talos API endpoint."""
        return self.controlplanes[0].address

    def node(self, address_or_name: str) -> SimNode:
        try:
            return self._by_key[address_or_name]
        except KeyError:
            raise KeyError("no node %r in this cluster" % address_or_name) from None

    def version_sha(self, tag: str) -> str:
        return hashlib.sha1(tag.encode()).hexdigest()[:8]

    # --- Kubernetes: the view talos_sim.kubernetes.KubeAPIServer reads ------------------------

    def current_kubernetes_issuer(self) -> pki.CertKey | None:
        """The CA the cluster signs kubelet client certificates with right now (controller-manager
        on the first control plane that is up), or None when no control plane is up."""
        for node in self.controlplanes:
            if node.is_up:
                return node.kubernetes_issuing
        return None

    def kubernetes_ca_changed(self, node: SimNode) -> None:
        self.note_kubernetes_cas(node)
        server = self._kube_servers.get(node.address)
        if server is not None:
            server.refresh_tls()

    def aggregator_ca_changed(self, node: SimNode) -> None:
        self.note_kubernetes_cas(node)
        server = self._kube_servers.get(node.address)
        if server is not None:
            server.refresh_tls()

    def apiserver_requestheader_cas(self, host: str) -> bytes:
        """That control plane's front-proxy bundle (--requestheader-client-ca-file)."""
        return b"".join(self.node(host).requestheader_client_ca_pems)

    def note_kubernetes_cas(self, node: SimNode) -> None:
        # Client and front-proxy CAs alike: kube-apiserver's handshake accepts both pools.
        for pem in node.kubernetes_pool_pems + node.requestheader_client_ca_pems:
            self._kubernetes_cas_seen.setdefault(pki.fingerprint(pki.load_certificate(pem)), pem)

    def apiserver_client_cas(self, host: str) -> bytes:
        """That control plane's issuing Kubernetes CA followed by its accepted CAs."""
        node = self.node(host)
        issuing = node.kubernetes_issuing
        pems = [issuing.cert_pem] + [pem for pem in node.kubernetes_pool_pems
                                     if pki.fingerprint(pki.load_certificate(pem)) != issuing.fingerprint]
        return b"".join(pems)

    def kubernetes_secrets(self) -> list[dict]:
        """Secret objects kube-apiserver lists (tests add legacy service-account token Secrets to `self.secrets_objects`),
        and the Secret Talos keeps for each talos.dev ServiceAccount."""
        return list(self.secrets_objects) + self._talos_service_account_secrets()

    def _talos_service_account_secrets(self) -> list[dict]:
        """Talos' kubeaccess CRD controller (on a control plane): for each talos.dev ServiceAccount whose namespace and roles
        are allowed, a Secret of the same name with a talosconfig (endpoint talos.default, the issuing OS CA, a 6 h client
        certificate with the roles), rewritten when the issuing CA changes (needsUpdate: CA mismatch)."""
        issuing = next((node.os_issuing for node in self.controlplanes if node.is_up and node.os_issuing is not None), None)
        secrets = []
        for account in self.kube_objects.get("serviceaccounts.talos.dev") or []:
            if issuing is None:
                break
            metadata = account.get("metadata") or {}
            roles = tuple((account.get("spec") or {}).get("roles") or ())
            key = (issuing.fingerprint, metadata.get("namespace"), metadata.get("name"), roles)
            if key not in self._talos_sa_secrets:
                client = pki.issue(issuing, organizations=roles, client=True, validity=datetime.timedelta(hours=6))
                talosconfig = yamlgen.dump({"context": "default", "contexts": {"default": {
                    "endpoints": ["talos.default"], "ca": pki.b64(issuing.cert_pem), "crt": pki.b64(client.cert_pem),
                    "key": pki.b64(client.key_pem)}}}).encode()
                self._talos_sa_secrets[key] = {
                    "metadata": {"namespace": metadata.get("namespace"), "name": metadata.get("name"),
                                 "ownerReferences": [{"apiVersion": "talos.dev/v1alpha1", "kind": "ServiceAccount",
                                                      "name": metadata.get("name"), "controller": True,
                                                      "blockOwnerDeletion": True,
                                                      "uid": metadata.get("uid") or "00000000-0000-0000-0000-000000000000"}]},
                    "type": "Opaque", "data": {"talosconfig": pki.b64(talosconfig)}}
            secrets.append(self._talos_sa_secrets[key])
        return secrets

    def kubernetes_objects(self, resource: str) -> list[dict] | None:
        """The objects of one resource ("plural.group"), the list itself (a PATCH of a workload updates it), or None when
        the cluster does not serve that resource."""
        return self.kube_objects.get(resource)

    def apiserver_service_account(self, host: str) -> dict | None:
        """That control plane's service-account keys, as KubernetesRoot hands them to kube-apiserver."""
        trust = self.node(host).service_account
        if trust is None or trust.signing_key is None:
            return None
        return {
            "signing_key_pem": trust.signing_key_pem,
            "verification_key_pems": tuple(pki.public_key_pem(key) for key in trust.verification_keys),
            "issuers": trust.issuers,
            "audiences": trust.audiences,
        }

    def apiserver_handshake_cas(self, host: str) -> bytes:
        # Every Kubernetes CA the cluster has seen passes the handshake, so a certificate
        # from a CA dropped by a rotation gets kube-apiserver's 401, not a TLS alert.
        return b"".join(self._kubernetes_cas_seen.values())

    def apiserver_serving_certificate(self, host: str) -> tuple[bytes, bytes]:
        certificate = self.node(host).apiserver_certificate()
        return certificate.cert_pem, certificate.key_pem

    def is_up(self, host: str) -> bool:
        return self.node(host).is_up

    def kubernetes_nodes(self) -> list[dict]:
        controlplanes = [node for node in self.controlplanes if node.is_up]
        return [dict(name=node.name, address=node.address,
                     role="control-plane" if node.controlplane else "worker",
                     kubelet_version=self.kubernetes_version, created=self.created.isoformat(),
                     **dict(zip(("ready", "ready_reason", "ready_message"), self._readiness(node, controlplanes))))
                for node in self.nodes]

    @staticmethod
    def _readiness(node: SimNode, controlplanes: list[SimNode]) -> tuple[bool, str, str]:
        """Ready while the kubelet runs and trust holds both ways with every API server."""
        if not node.is_up:
            return False, "NodeStatusUnknown", "Kubelet stopped posting node status."
        kubelet = node.kubelet
        if not (kubelet.running and kubelet.healthy) or kubelet.client_issuer is None:
            return False, "KubeletNotReady", "kubelet is not running"
        node_pool = node.kubernetes_pool_fingerprints
        for controlplane in controlplanes:
            if kubelet.client_issuer.fingerprint not in controlplane.kubernetes_pool_fingerprints:
                return False, "KubeletNotReady", ("the API server on %s does not trust the kubelet client certificate"
                                                  % controlplane.address)
            if controlplane.kubernetes_issuing.fingerprint not in node_pool:
                return False, "KubeletNotReady", ("the kubelet does not trust the serving certificate of the API "
                                                  "server on %s" % controlplane.address)
        return True, "KubeletReady", "kubelet is posting ready status"

    def render_kubeconfig(self, server_address: str, ca_pems, client: pki.CertKey) -> bytes:
        return render_kubeconfig("https://%s:%d" % (server_address, KUBE_APISERVER_PORT), b"".join(ca_pems),
                                 client.cert_pem, client.key_pem, cluster_name=self.name, user="admin@%s" % self.name)

    def refresh_kubeconfig(self) -> str:
        """Rewrite kubeconfig_path from the endpoint's current Kubernetes CA; returns the path."""
        _write_private(self.kubeconfig_path, self.run(self._endpoint_kubeconfig()))
        return self.kubeconfig_path

    async def _endpoint_kubeconfig(self) -> bytes:
        return self.controlplanes[0].admin_kubeconfig()

    # --- files ------------------------------------------------------------------------------

    def talosconfig(self, client: pki.CertKey | None = None) -> bytes:
        """A talosconfig for this cluster (the admin certificate unless `client` is given)."""
        client = client or self.admin
        return yamlgen.dump({"context": self.name, "contexts": {self.name: {
            "endpoints": [node.address for node in self.controlplanes],
            "nodes": [node.address for node in self.nodes],
            "ca": pki.b64(self.secrets.os_ca.cert_pem),
            "crt": pki.b64(client.cert_pem),
            "key": pki.b64(client.key_pem),
        }}}).encode()

    def inventory(self) -> bytes:
        groups = {}
        for group, members in (("controlplane", self.controlplanes), ("worker", self.workers)):
            groups[group] = {"hosts": {node.name: {"talos_node_address": node.address} for node in members}}
        document = {"all": {
            "vars": {"talos_endpoints": [node.address for node in self.controlplanes],
                     "talos_talosconfig": self.talosconfig_path, "ansible_connection": "local",
                     # Local modules run with ansible-playbook's own Python (where grpclib etc. live).
                     "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
            "children": groups,
        }}
        return yaml.safe_dump(document, sort_keys=False, default_flow_style=False).encode()

    def _write_files(self) -> None:
        os.makedirs(self.workdir, exist_ok=True)
        _write_private(self.talosconfig_path, self.talosconfig())
        _write_private(self.secrets_path, self.secrets.secrets_yaml())
        _write_private(self.kubeconfig_path, self.controlplanes[0].admin_kubeconfig())
        _write_private(self.inventory_path, self.inventory(), mode=0o644)
        nodes = [{"name": node.name, "address": node.address, "type": node.machine_type} for node in self.nodes]
        _write_private(self.nodes_path, (json.dumps(nodes, indent=2) + "\n").encode(), mode=0o644)


def _write_private(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write through a same-folder temporary file created with `mode`, then rename."""
    folder = os.path.dirname(path)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".%s." % os.path.basename(path))
    try:
        os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
