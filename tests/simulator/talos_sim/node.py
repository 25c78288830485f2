"""One simulated Talos node: active config, controllers, apid listener, kubelet, faults.

Everything here runs on the cluster's event loop. Public methods that tests call from
another thread (faults, config_bytes) are thread-safe: they either read immutable values or
hand the work to the loop through the cluster.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import secrets as _random
import ssl
import string
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from grpclib.exceptions import GRPCError

from . import apid, machineconfig, pki, resources, tlsctx, wire

if TYPE_CHECKING:
    from .cluster import SimCluster

APID_PORT = 50000
DEFAULT_TRY_TIMEOUT = 60.0  # constants.ConfigTryTimeout upstream
_MODE = wire.message_class("machine.ApplyConfigurationRequest")


def go_duration(seconds: float) -> str:
    """Format like Go's time.Duration.String() for the values a try timeout takes."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    secs_text = ("%.9f" % secs).rstrip("0").rstrip(".") or "0"
    if hours:
        return "%dh%dm%ss" % (hours, minutes, secs_text)
    if minutes:
        return "%dm%ss" % (minutes, secs_text)
    return "%ss" % secs_text


class TrustdError(Exception):
    """A worker could not get its certificate from a control plane's trustd."""


@dataclass
class Kubelet:
    running: bool = False
    healthy: bool = False
    # Issuer of the kubelet's client certificate, fixed at the kubelet's last start.
    client_issuer: pki.CertKey | None = None


class SimNode:
    def __init__(self, cluster: "SimCluster", name: str, address: str, machine_type: str, talos_version: str,
                 config: bytes):
        self.cluster = cluster
        self.name = name
        self.address = address
        self.talos_version = talos_version
        self.version = machineconfig.TalosVersion.parse(talos_version)
        self.arch = "amd64"
        self.platform = "metal"
        self.node_id = "".join(_random.choice(string.ascii_letters + string.digits) for _position in range(43))
        self.resources = resources.ResourceStore()
        self.kubelet = Kubelet()
        # What real controllers would log, newest last (bounded: a stuck worker retries forever).
        self.controller_errors: collections.deque[str] = collections.deque(maxlen=200)

        self._active = machineconfig.parse(config, self.version)
        if self._active.machine_type != machine_type:
            raise ValueError("generated config has type %s, expected %s" % (self._active.machine_type, machine_type))
        self._staged: bytes | None = None
        self._try_rollback: asyncio.TimerHandle | None = None

        # apid state (what the secrets.API resource holds upstream)
        self._leaf_keys: dict[tuple[str, str], object] = {}
        self._os_issuing: pki.CertKey | None = None
        self._os_state = None       # OSRoot content the current certificates were made from
        self._k8s_state = None      # Kubernetes CA content the controllers last acted on
        self._k8s_issuing: pki.CertKey | None = None  # control planes: signs the API server certificate
        self._server_cert: pki.CertKey | None = None
        self._client_pool: tuple[bytes, ...] = ()
        self._impersonator: pki.CertKey | None = None
        self._trustd_cert: pki.CertKey | None = None
        self._server_ctx: ssl.SSLContext | None = None
        self._proxy_ctx: ssl.SSLContext | None = None
        self.backends = apid.Backends(self)
        self._apiserver_cert: pki.CertKey | None = None
        self._aggregator_state = None  # aggregator CA content the controllers last acted on
        self._front_proxy_cert: pki.CertKey | None = None
        self._trustd_retry: asyncio.Task | None = None
        self._kubelet_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()

        # listener and faults
        self._server: apid.ApidServer | None = None
        self.connections: dict[tuple, apid.Connection] = {}
        self._up = False
        self._rebooting = False
        self.latency = 0.0
        self._apply_failures: list[tuple[wire.Status, str]] = []
        self._apply_busy = False
        # Inspection: ApplyConfiguration requests received (dry runs and refused ones included), and when (time.monotonic())
        # each configuration that was not a dry run took effect, was staged or started a reboot.
        self.apply_requests = 0
        self.applied_at: list[float] = []

    # --- read-only views (thread-safe) ------------------------------------------------------

    @property
    def os_issuing(self) -> pki.CertKey | None:
        """The OS CA this control plane issues its certificates with now (None on a worker or before the first ones)."""
        return self._os_issuing

    @property
    def machine_type(self) -> str:
        return self._active.machine_type

    @property
    def controlplane(self) -> bool:
        return self._active.controlplane

    @property
    def is_up(self) -> bool:
        return self._up

    def config_bytes(self) -> bytes:
        """The exact bytes of the active machine config (as the MachineConfig resource holds them)."""
        return self._active.data

    def staged_config_bytes(self) -> bytes | None:
        return self._staged

    @property
    def server_certificate_pem(self) -> bytes:
        return self._server_cert.cert_pem

    @property
    def client_trust_pems(self) -> tuple[bytes, ...]:
        """The CAs this node's apid accepts client certificates from right now."""
        return self._client_pool

    @property
    def kubernetes_pool_pems(self) -> tuple[bytes, ...]:
        return self._active.kubernetes.pool_pems

    @property
    def kubernetes_pool_fingerprints(self) -> frozenset:
        return self._active.kubernetes.pool_fingerprints

    @property
    def service_account(self):
        """The service-account keys of the active config (machineconfig.ServiceAccountTrust), None on workers."""
        return self._active.service_account

    @property
    def kubernetes_issuing(self) -> pki.CertKey | None:
        """The Kubernetes CA this control plane's API server and controller-manager use (None on workers)."""
        return self._k8s_issuing

    def is_local_target(self, target: str) -> bool:
        return target == self.name or target in self.addresses

    @property
    def addresses(self) -> tuple[str, ...]:
        """Where this node answers: its own address, and the shared virtual IP while it holds it."""
        return (self.address,) + ((self.cluster.vip,) if self.holds_vip else ())

    @property
    def holds_vip(self) -> bool:
        return self.cluster.vip is not None and self is self.cluster.controlplanes[0]

    @property
    def member_addresses(self) -> list[str]:
        # Talos lists a held VIP among the member's addresses, even first (siderolabs/talos#10357).
        return list(reversed(self.addresses))

    def __repr__(self):
        return "<SimNode %s %s %s %s>" % (self.name, self.address, self.machine_type, self.talos_version)

    # --- faults (thread-safe: run on the loop) ----------------------------------------------

    def down(self) -> None:
        """Close the listener and every established connection; new connections are refused."""
        self.cluster.run(self._go_down())

    def up(self) -> None:
        """Listen again with the current certificates."""
        self.cluster.run(self._go_up())

    def drop_connections(self) -> None:
        """Abort established connections (clients see a reset); the listener stays open."""
        self.cluster.run(self._drop_connections())

    def set_latency(self, seconds: float) -> None:
        """Add `seconds` before every call this node handles (0 to remove)."""
        self.latency = float(seconds)

    def fail_next_applies(self, count: int, status: wire.Status = wire.Status.UNAVAILABLE,
                          message: str = "simulated failure") -> None:
        """Make the next `count` ApplyConfiguration calls fail with `status`."""
        self.cluster.run(self._queue_apply_failures(count, status, message))

    def clear_apply_failures(self) -> None:
        """Forget the ApplyConfiguration failures still queued (the node recovered)."""
        self.cluster.run(self._clear_apply_failures())

    def reboot(self) -> None:
        """Reboot: down for the cluster's reboot_duration, then up with the staged config if any."""
        self.cluster.run(self._reboot(None))

    async def _queue_apply_failures(self, count, status, message):
        self._apply_failures.extend([(status, message)] * count)

    async def _clear_apply_failures(self):
        self._apply_failures.clear()

    async def _drop_connections(self):
        for connection in list(self.connections.values()):
            connection.transport.abort()

    # --- boot -------------------------------------------------------------------------------

    def boot(self) -> None:
        """Derive everything from the config, as machined does at boot (synchronously)."""
        self._publish_resources()
        self._reconcile_api_certificates()
        self._reconcile_kubernetes()

    async def start(self) -> None:
        await self._go_up()

    async def stop(self) -> None:
        for task in list(self._tasks) + [self._trustd_retry, self._kubelet_task]:
            if task is not None:
                task.cancel()
        if self._try_rollback is not None:
            self._try_rollback.cancel()
        await self._go_down()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- listener ---------------------------------------------------------------------------

    def server_context(self) -> ssl.SSLContext:
        """The TLS context a connection accepted now gets (current certificate and trust)."""
        return self._server_ctx

    async def _go_up(self):
        if self._up:
            return
        self._server = apid.ApidServer(self)
        # TLS is terminated per connection by apid.Connection, not by the listener.
        await self._server.start(list(self.addresses), APID_PORT, reuse_address=True)
        self._up = True

    async def _go_down(self):
        if not self._up:
            return
        self._up = False
        self._server.close()
        await self._drop_connections()
        await self._server.wait_closed()
        self._server = None
        await self.backends.close_all()

    # --- resources --------------------------------------------------------------------------

    def _publish_resources(self):
        cfg = self._active
        self.resources.put(resources.MACHINE_CONFIG, "v1alpha1", resources.machine_config_spec(cfg.data))
        san_ips = tuple(san for san in cfg.cert_sans if _is_ip(san))
        san_dns = tuple(san for san in cfg.cert_sans if not _is_ip(san))
        self.resources.put(resources.OS_ROOT, "os", resources.os_root_spec(
            cfg.os.issuing_cert_pem if cfg.controlplane else None, cfg.os.issuing_key_pem,
            cfg.os.pool_pems, san_ips, san_dns, cfg.token), owner="secrets.RootController")
        if cfg.controlplane:
            self.resources.put(resources.KUBERNETES_ROOT, "k8s", resources.kubernetes_root_spec(
                self.cluster.name, cfg.kubernetes.issuing_cert_pem, cfg.kubernetes.issuing_key_pem,
                cfg.kubernetes.pool_pems,
                cfg.service_account.signing_key_pem if cfg.service_account else None,
                cfg.service_account.accepted_public_pems if cfg.service_account else ()),
                owner="secrets.RootController")

    def publish_members(self, members: list["SimNode"]) -> None:
        for member in members:
            self.resources.put(resources.MEMBERS, member.name, resources.member_spec(
                member.node_id, member.member_addresses, member.name, member.machine_type, member.talos_version),
                owner="cluster.MemberController")

    def _publish_kubelet(self):
        self.resources.put(resources.SERVICES, "kubelet",
                           resources.service_spec(self.kubelet.running, self.kubelet.healthy))

    # --- controllers ------------------------------------------------------------------------

    def _leaf_key(self, purpose: str, ca: pki.CertKey):
        """One key per node, purpose and key type: reissues reuse it (cheap, invisible to clients)."""
        kind = (purpose, pki.key_kind(ca.key))
        if kind not in self._leaf_keys:
            self._leaf_keys[kind] = pki.new_key_like(ca.key)
        return self._leaf_keys[kind]

    def _server_sans(self) -> tuple[list[str], list[str]]:
        ips = list(self.addresses) + ["127.0.0.1"] + [san for san in self._active.cert_sans if _is_ip(san)]
        dns = [self.name] + [san for san in self._active.cert_sans if not _is_ip(san)]
        return list(dict.fromkeys(ips)), list(dict.fromkeys(dns))

    def _reconcile(self):
        """What the controllers do after the active config changed."""
        self._publish_resources()
        self._reconcile_api_certificates()
        if self._reconcile_kubernetes():
            self._restart_kubelet()
        self._reconcile_aggregator()

    def _reconcile_aggregator(self):
        """KubernetesRoot changed: kube-apiserver restarts with the new front-proxy bundle, and Talos reissues its
        front-proxy client certificate from the issuing aggregator CA (KubernetesDynamicCerts)."""
        trust = self._active.aggregator
        state = trust.identity if trust is not None else None
        if state == self._aggregator_state:
            return
        self._aggregator_state = state
        self._front_proxy_cert = None
        if self.controlplane:
            self.cluster.aggregator_ca_changed(self)

    def _reconcile_kubernetes(self) -> bool:
        """Follow a change of the node's Kubernetes CA fields; True when there was one."""
        state = self._active.kubernetes.identity
        if state == self._k8s_state:
            return False
        self._k8s_state = state
        if self.controlplane:
            try:
                issuing = self._active.kubernetes.issuing()
            except pki.PEMError as exc:
                # The API server keeps its certificate, as with a failing controller upstream.
                self.controller_errors.append("kubernetes CA: %s" % exc)
            else:
                if self._k8s_issuing is None or issuing.fingerprint != self._k8s_issuing.fingerprint:
                    self._apiserver_cert = None
                self._k8s_issuing = issuing
            self.cluster.kubernetes_ca_changed(self)
        return True

    def _reconcile_api_certificates(self):
        cfg = self._active
        state = (cfg.machine_type, cfg.os.identity, cfg.cert_sans, cfg.token)
        if state == self._os_state:
            return  # OSRoot unchanged: a worker asks trustd again only when its own config changes
        if self.controlplane:
            self._generate_controlplane(state)
        else:
            if self._trustd_retry is not None:
                self._trustd_retry.cancel()
                self._trustd_retry = None
            self._generate_worker(state)

    def _generate_controlplane(self, state):
        """secrets.APIController generateControlPlane: everything from the node's own issuing CA."""
        try:
            issuing = self._active.os.issuing()
        except pki.PEMError as exc:
            # Upstream the controller fails and apid keeps serving its previous certificates.
            self.controller_errors.append("secrets.APIController: failed to parse CA certificate: %s" % exc)
            return
        ips, dns = self._server_sans()
        server = pki.issue(issuing, key=self._leaf_key("server", issuing), common_name=self.name, ips=ips,
                           dns_names=dns, server=True)
        self._impersonator = pki.issue(issuing, key=self._leaf_key("client", issuing), common_name=self.name,
                                       organizations=["os:impersonator"], client=True)
        self._trustd_cert = pki.issue(issuing, key=self._leaf_key("trustd", issuing), common_name=self.name,
                                      ips=ips, dns_names=dns, server=True)
        self._os_issuing = issuing
        self._os_state = state
        self._install(server, self._active.os.pool_pems)
        self._proxy_ctx = tlsctx.client_context(self._impersonator, self._client_pool)

    def _generate_worker(self, state):
        """secrets.APIController generateWorker: certificate and client trust bundle from trustd."""
        try:
            bundle, server = self._request_certificate()
        except TrustdError as exc:
            self.controller_errors.append("secrets.APIController: failed to sign API server CSR: %s" % exc)
            if self._server_cert is None:
                raise RuntimeError("%s cannot get its first apid certificate: %s" % (self.name, exc)) from exc
            self._trustd_retry = self._spawn(self._retry_trustd(state))
            return
        self._os_state = state
        self._install(server, bundle)

    async def _retry_trustd(self, state):
        # The controller fails and is restarted with a backoff: it keeps asking until it works.
        while True:
            await asyncio.sleep(self.cluster.trustd_retry_interval)
            try:
                bundle, server = self._request_certificate()
            except TrustdError as exc:
                self.controller_errors.append("secrets.APIController: failed to sign API server CSR: %s" % exc)
                continue
            self._os_state = state
            self._install(server, bundle)
            self._trustd_retry = None
            return

    def _request_certificate(self) -> tuple[tuple[bytes, ...], pki.CertKey]:
        """Ask the control planes' trustd in turn; the first one that works answers."""
        pool = self._active.os.pool
        errors = []
        for controlplane in self.cluster.controlplanes:
            try:
                return controlplane.trustd_sign(self, pool)
            except TrustdError as exc:
                errors.append("%s: %s" % (controlplane.address, exc))
        raise TrustdError("; ".join(errors) or "no control plane endpoints")

    def trustd_sign(self, worker: "SimNode", worker_pool) -> tuple[tuple[bytes, ...], pki.CertKey]:
        """trustd Certificate(): sign the worker's server certificate with this node's issuing CA.

        Modelled as an in-process call. The worker verifies trustd's own certificate against
        its pool first (gen.NewRemoteGenerator with the worker's accepted CAs); the token is
        machine.token (reg.go). The bundle is this control plane's accepted CAs at this moment.
        """
        if not self._up or self._trustd_cert is None:
            raise TrustdError("connection refused")
        if not pki.verifies_against(self._trustd_cert.cert, worker_pool):
            raise TrustdError("tls: failed to verify certificate: x509: certificate signed by unknown authority")
        if worker.config_token() != self._active.token:
            raise TrustdError("rpc error: code = PermissionDenied desc = not authorized")
        ips, dns = worker._server_sans()
        server = pki.issue(self._os_issuing, key=worker._leaf_key("server", self._os_issuing), common_name=worker.name,
                           ips=ips, dns_names=dns, server=True)
        return self._client_pool, server

    def config_token(self) -> str:
        return self._active.token

    def _install(self, server: pki.CertKey, client_pool: tuple[bytes, ...]):
        """Swap apid's certificate and client trust: for connections accepted from now on."""
        self._server_cert = server
        self._client_pool = tuple(client_pool)
        self._server_ctx = tlsctx.server_context(server, self._client_pool)
        # apid flushes its backend connections on a certificate change (APIDFactory.Flush).
        self.backends.flush()

    def proxy_context(self) -> ssl.SSLContext | None:
        return self._proxy_ctx

    # --- kubelet ----------------------------------------------------------------------------

    def start_kubelet(self, issuer: pki.CertKey | None):
        """The kubelet starts (boot): client certificate from `issuer`, running and healthy."""
        if self._kubelet_task is not None:
            self._kubelet_task.cancel()
        self.kubelet = Kubelet(True, True, issuer or self.kubelet.client_issuer)
        self._publish_kubelet()

    def _restart_kubelet(self):
        if self._kubelet_task is not None:
            self._kubelet_task.cancel()
        self.kubelet.running = self.kubelet.healthy = False
        self._publish_kubelet()
        self._kubelet_task = self._spawn(self._kubelet_comes_back())

    async def _kubelet_comes_back(self):
        await asyncio.sleep(self.cluster.kubelet_restart_delay)
        issuer = self.cluster.current_kubernetes_issuer()
        # The kubelet gets a new client certificate from the cluster's issuing CA as it starts.
        self.kubelet.client_issuer = issuer or self.kubelet.client_issuer
        self.kubelet.running = True
        self._publish_kubelet()
        await asyncio.sleep(self.cluster.kubelet_restart_delay / 2)
        self.kubelet.healthy = True
        self._publish_kubelet()

    @property
    def requestheader_client_ca_pems(self) -> tuple[bytes, ...]:
        """kube-apiserver's --requestheader-client-ca-file: the issuing aggregator CA first, then the accepted ones."""
        trust = self._active.aggregator
        if trust is None:
            return ()
        return ((trust.issuing_cert_pem,) if trust.issuing_cert_pem else ()) + trust.accepted_pems

    def front_proxy_client_certificate(self) -> pki.CertKey | None:
        """kube-apiserver's --proxy-client-cert-file: CN front-proxy-client, from the issuing aggregator CA."""
        trust = self._active.aggregator
        if self._front_proxy_cert is None and trust is not None:
            try:
                issuing = trust.issuing()
            except pki.PEMError as exc:
                self.controller_errors.append("aggregator CA: %s" % exc)
                return None
            if issuing is not None:
                self._front_proxy_cert = pki.issue(issuing, key=self._leaf_key("front-proxy", issuing),
                                                   common_name="front-proxy-client", client=True,
                                                   validity=pki.CLIENT_VALIDITY)
        return self._front_proxy_cert

    def apiserver_certificate(self) -> pki.CertKey:
        """kube-apiserver serving certificate from this control plane's issuing Kubernetes CA."""
        if self._apiserver_cert is None:
            issuing = self._k8s_issuing
            dns = [self.name, "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                   "kubernetes.default.svc.cluster.local", "localhost"]
            self._apiserver_cert = pki.issue(issuing, key=self._leaf_key("apiserver", issuing),
                                             common_name="kube-apiserver", ips=[self.address, "127.0.0.1", "10.96.0.1"],
                                             dns_names=dns, server=True, validity=pki.CLIENT_VALIDITY)
        return self._apiserver_cert

    # --- ApplyConfiguration -----------------------------------------------------------------

    async def apply_configuration(self, request) -> object:
        """machined's ApplyConfiguration, the checks in the order a rotation can meet them."""
        self.apply_requests += 1
        if self._apply_failures:
            status, message = self._apply_failures.pop(0)
            raise GRPCError(status, message)
        if self._apply_busy:
            raise GRPCError(wire.Status.FAILED_PRECONDITION, "another apply configuration call is in progress")
        self._apply_busy = True
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            if self.cluster.apply_delay and not request.dry_run:
                await asyncio.sleep(self.cluster.apply_delay)
            return self._apply(request)
        finally:
            self._apply_busy = False

    def _apply(self, request):
        mode = request.mode
        if mode == _MODE.REBOOT and not self.version.reboot_mode_supported:
            raise GRPCError(wire.Status.UNIMPLEMENTED,
                            "the REBOOT mode is not supported, please use AUTO or NO_REBOOT modes instead")
        try:
            new = machineconfig.parse(request.data, self.version)
        except machineconfig.ConfigError as exc:
            raise GRPCError(wire.Status.INVALID_ARGUMENT, str(exc)) from exc
        if new.machine_type != self._active.machine_type:
            raise GRPCError(wire.Status.INVALID_ARGUMENT, "machine type can't be changed (%s -> %s)"
                            % (self._active.machine_type, new.machine_type))
        immediate_error = machineconfig.immediate_error(self._active, new)
        if mode in (_MODE.NO_REBOOT, _MODE.TRY) and immediate_error:
            raise GRPCError(wire.Status.INVALID_ARGUMENT, immediate_error)
        if mode == _MODE.AUTO:
            mode = _MODE.REBOOT if immediate_error else _MODE.NO_REBOOT

        try_timeout = DEFAULT_TRY_TIMEOUT
        if request.HasField("try_mode_timeout"):
            try_timeout = request.try_mode_timeout.seconds + request.try_mode_timeout.nanos / 1e9
        details = {
            _MODE.REBOOT: "Applied configuration with a reboot",
            _MODE.NO_REBOOT: "Applied configuration without a reboot",
            _MODE.STAGED: "Staged configuration to be applied after the next reboot",
            _MODE.TRY: "Applied configuration in a try mode: it will be rolled back in %s" % go_duration(try_timeout),
        }[mode]
        reply = wire.message_class("machine.ApplyConfiguration")(mode=mode)
        if request.dry_run:
            reply.mode_details = "Dry run summary:\n%s (skipped in dry-run).\n\nConfig diff:\n\n%s" % (
                details, machineconfig.config_diff(self._active.data, new.data))
            return wire.message_class("machine.ApplyConfigurationResponse")(messages=[reply])

        reply.mode_details = details
        self.applied_at.append(time.monotonic())
        if mode != _MODE.TRY and self._try_rollback is not None:
            # Any other apply confirms the tried config (CancelConfigRollbackTimeout).
            self._try_rollback.cancel()
            self._try_rollback = None
        if mode == _MODE.STAGED:
            self._staged = new.data
        elif mode == _MODE.REBOOT:
            self._spawn(self._reboot(new))
        else:
            if mode == _MODE.TRY:
                previous = self._active
                if self._try_rollback is not None:
                    self._try_rollback.cancel()
                self._try_rollback = asyncio.get_running_loop().call_later(try_timeout, self._roll_back, previous)
            self._activate(new)
        return wire.message_class("machine.ApplyConfigurationResponse")(messages=[reply])

    def _activate(self, config: machineconfig.ParsedConfig):
        """Make `config` active now; controllers react after the cluster's controller_delay."""
        self._active = config
        self.resources.put(resources.MACHINE_CONFIG, "v1alpha1", resources.machine_config_spec(config.data))
        delay = self.cluster.controller_delay
        if delay:
            asyncio.get_running_loop().call_later(delay, self._reconcile)
        else:
            asyncio.get_running_loop().call_soon(self._reconcile)

    def _roll_back(self, previous: machineconfig.ParsedConfig):
        self._try_rollback = None
        self._activate(previous)

    async def _reboot(self, config: machineconfig.ParsedConfig | None):
        if self._rebooting:
            return
        self._rebooting = True
        try:
            await asyncio.sleep(0.05)  # the reply leaves before the node goes away
            await self._go_down()
            self.kubelet.running = self.kubelet.healthy = False
            self._publish_kubelet()
            await asyncio.sleep(self.cluster.reboot_duration)
            if config is None and self._staged is not None:
                config = machineconfig.parse(self._staged, self.version)
            self._staged = None
            if config is not None:
                self._active = config
            self.boot()
            await self._go_up()
            # Up first: a lone control plane's kubelet gets its certificate from its own API server.
            self.start_kubelet(self.cluster.current_kubernetes_issuer())
        finally:
            self._rebooting = False

    # --- Kubeconfig -------------------------------------------------------------------------

    def admin_kubeconfig(self) -> bytes:
        """An admin kubeconfig from this control plane's issuing Kubernetes CA."""
        issuing = self._active.kubernetes.issuing()
        client = pki.issue(issuing, common_name="admin", organizations=["system:masters"], client=True,
                           validity=pki.CLIENT_VALIDITY)
        return self.cluster.render_kubeconfig(self.address, self._active.kubernetes.pool_pems, client)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
