"""The Talos API of one simulated node: apid's routing and proxying, machined's handlers.

Upstream split: apid authenticates (mTLS), extracts roles, and routes by the `node`/`nodes`
metadata (internal/app/apid/pkg/director); machined authorizes and serves. Both run here in
one handler per gRPC method.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import io
import ipaddress
import ssl
import tarfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpclib.client
import grpclib.server
import h2.exceptions
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpclib.const import Cardinality, Handler
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from . import pki, resources, wire

if TYPE_CHECKING:
    from .node import SimNode

ROLE_METADATA = "talos-role"  # constants.APIAuthzRoleMetadataKey
KNOWN_ROLES = ("os:admin", "os:operator", "os:reader", "os:etcd:backup", "os:impersonator")
READ_ROLES = {"os:admin", "os:operator", "os:reader"}
ADMIN = {"os:admin"}
# Method prefixes apid allows to fan out with the deprecated `nodes` metadata (director.go).
FAN_OUT_PREFIXES = ("/machine.MachineService/", "/cluster.ClusterService/", "/inspect.InspectService/",
                    "/storage.StorageService/", "/time.TimeService/")
KUBECONFIG_CHUNK = 1024
HANDSHAKE_TIMEOUT = 10.0
NOT_AUTHORIZED = "not authorized"


# --- peers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    roles: frozenset
    eku_error: str | None

    def effective_roles(self, metadata) -> frozenset:
        """Roles for this call: an impersonator (another apid) may carry the caller's roles."""
        if "os:impersonator" in self.roles:
            carried = [role for role in metadata.getall(ROLE_METADATA, []) if role in KNOWN_ROLES]
            if carried:
                return frozenset(carried)
        return self.roles


@functools.lru_cache(maxsize=1024)
def _peer_from_der(chain: tuple[bytes, ...]) -> Peer:
    """Roles and the apid EKU check for a verified client chain (cached per certificate)."""
    certs = [x509.load_der_x509_certificate(der) for der in chain]
    eku_error = None
    for cert in certs:
        try:
            if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                continue
        except x509.ExtensionNotFound:
            pass
        try:
            usages = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        except x509.ExtensionNotFound:
            usages = []
        if usages != [ExtendedKeyUsageOID.CLIENT_AUTH]:
            eku_error = "x509: certificate specifies an incompatible key usage"
    organizations = [attr.value for attr in certs[0].subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return Peer(frozenset(org for org in organizations if org in KNOWN_ROLES), eku_error)


def peer_of(ssl_object) -> Peer:
    # Python >= 3.13 exposes the verified chain; before that only the leaf is visible.
    if hasattr(ssl_object, "get_verified_chain"):
        chain = tuple(cert if isinstance(cert, bytes) else cert.public_bytes()
                      for cert in ssl_object.get_verified_chain())
    else:
        chain = (ssl_object.getpeercert(binary_form=True),)
    return _peer_from_der(chain)


class Connection(asyncio.Protocol):
    """One client connection. TLS is terminated here with ssl.MemoryBIO; grpclib's HTTP/2
    protocol (`inner`) sees this object as its transport.

    Doing TLS by hand, rather than with asyncio's SSL transport, matters twice: a refused
    handshake sends OpenSSL's alert before the close (asyncio drops it, and the client would
    see a bare EOF where Go's apid sends `bad certificate`/`unknown ca`), and each connection
    takes the node's TLS context current when it is accepted, so new connections see new
    trust while established ones keep what they negotiated (apid does the same).
    """

    def __init__(self, inner, node: "SimNode"):
        self.inner = inner
        self.node = node
        self.transport = None  # the TCP transport
        self.peer: Peer | None = None
        self.peername = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = None
        self._established = False
        self._handshake_timer = None

    # --- TCP side ----------------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        self.peername = transport.get_extra_info("peername")
        self._tls = self.node.server_context().wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._handshake_timer = asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT, transport.abort)
        self.node.connections[self.peername] = self

    def data_received(self, data):
        self._incoming.write(data)
        if self._established or self._handshake():
            self._receive()

    def eof_received(self):
        return False  # the peer closed its side: close ours, connection_lost follows

    def connection_lost(self, exc):
        self._handshake_timer.cancel()
        self.node.connections.pop(self.peername, None)
        if self._established:
            self.inner.connection_lost(exc)

    def pause_writing(self):
        if self._established:
            self.inner.pause_writing()

    def resume_writing(self):
        if self._established:
            self.inner.resume_writing()

    def _flush(self):
        data = self._outgoing.read()
        if data:
            self.transport.write(data)

    def _handshake(self) -> bool:
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except (ssl.SSLError, OSError):
            self._flush()  # OpenSSL's alert (e.g. unknown ca) goes out before the close
            self.transport.close()
            return False
        self._flush()
        self._handshake_timer.cancel()
        self._established = True
        self.peer = peer_of(self._tls)
        self.inner.connection_made(self)
        return True

    def _receive(self):
        plaintext = bytearray()
        closed = False
        while True:
            try:
                chunk = self._tls.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                # The client sent close_notify: answer with ours, as Go's tls.Conn does.
                with contextlib.suppress(ssl.SSLError, OSError):
                    self._tls.unwrap()
                closed = True
                break
            except ssl.SSLError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            plaintext += chunk
        self._flush()
        if plaintext:
            self.inner.data_received(bytes(plaintext))
        if closed:
            self.transport.close()

    # --- transport side, for grpclib ---------------------------------------------------------

    def write(self, data):
        if not self.transport.is_closing():
            self._tls.write(data)
            self._flush()

    def is_closing(self):
        return self.transport.is_closing()

    def close(self):
        if self._established and not self.transport.is_closing():
            with contextlib.suppress(ssl.SSLError, OSError):
                self._tls.unwrap()  # close_notify
            self._flush()
        self.transport.close()

    def abort(self):
        self.transport.abort()

    def get_extra_info(self, name, default=None):
        if name == "ssl_object":
            return self._tls
        if name == "peercert":
            return self._tls.getpeercert()
        return self.transport.get_extra_info(name, default)


class ApidServer(grpclib.server.Server):
    """grpclib server whose connections are tracked per node."""

    def __init__(self, node: "SimNode"):
        super().__init__([_Service(node)], codec=wire.Codec())
        self._node = node

    def _protocol_factory(self):
        # grpclib 0.4 builds one H2Protocol per connection here: wrapping it puts our TLS
        # layer under it and lets the node see every connection, idle ones included.
        return Connection(super()._protocol_factory(), self._node)


class _Service:
    def __init__(self, node: "SimNode"):
        self.node = node

    def __mapping__(self):
        mapping = {}
        for path, (request_type, reply_type, streaming) in wire.METHODS.items():
            mapping[path] = Handler(
                functools.partial(handle, self.node, path, streaming),
                Cardinality.UNARY_STREAM if streaming else Cardinality.UNARY_UNARY,
                wire.message_class(request_type),
                wire.message_class(reply_type),
            )
        return mapping


# --- routing ----------------------------------------------------------------------------------


async def handle(node: "SimNode", path: str, streaming: bool, stream) -> None:
    connection = node.connections.get(stream.peer.addr())
    if connection is None or connection.peer is None:
        raise GRPCError(wire.Status.UNAVAILABLE, "connection is closing")
    peer = connection.peer
    if peer.eku_error:
        # Go refuses such a certificate inside the handshake (bad_certificate alert); Python's
        # ssl cannot, so the first call on the connection says it instead.
        raise GRPCError(wire.Status.UNAUTHENTICATED, "tls: bad certificate (%s)" % peer.eku_error)
    request = await stream.recv_message()
    metadata = stream.metadata
    if path != "/machine.MachineService/ApplyConfiguration" and node.latency:
        await asyncio.sleep(node.latency)
    roles = peer.effective_roles(metadata)

    if "proxyfrom" in metadata:
        # Already routed by another apid: never route again.
        await LOCAL[path](node, request, stream, roles)
        return
    nodes = metadata.getall("nodes", [])
    targets = metadata.getall("node", [])
    if len(targets) > 1:
        raise GRPCError(wire.Status.INVALID_ARGUMENT, "node metadata must be single-valued")
    forwarding = node.proxy_context() is not None
    if not forwarding:
        # A worker without a client certificate serves requests addressed to itself only.
        if targets and node.is_local_target(targets[0]):
            targets = []
        if len(nodes) == 1 and node.is_local_target(nodes[0]):
            nodes = []
    if nodes:
        if not path.startswith(FAN_OUT_PREFIXES):
            raise GRPCError(wire.Status.INVALID_ARGUMENT, "one-2-many proxying is not supported for method %s" % path)
        if not forwarding:
            raise GRPCError(wire.Status.PERMISSION_DENIED, "no request forwarding")
        await _fan_out(node, path, streaming, request, stream, roles, nodes)
    elif targets:
        if not forwarding:
            raise GRPCError(wire.Status.PERMISSION_DENIED, "no request forwarding")
        await _forward_one(node, path, streaming, request, stream, roles, targets[0])
    else:
        await LOCAL[path](node, request, stream, roles)


def _timeout(stream) -> float | None:
    return stream.deadline.time_remaining() if stream.deadline is not None else None


async def _forward_one(node, path, streaming, request, stream, roles, target):
    backend = node.backends.get(target)

    async def relay(reply: bytes):
        await stream.send_message(reply)

    await backend.call(path, streaming, request.SerializeToString(), roles, _timeout(stream), relay)


def _metadata_bytes(target: str, error: GRPCError | None = None) -> bytes:
    metadata = wire.message_class("common.Metadata")(hostname=target)
    if error is not None:
        metadata.error = "rpc error: code = %s desc = %s" % (_go_code(error.status), error.message or "")
        metadata.status.code = error.status.value
        metadata.status.message = error.message or ""
    # common.Empty{metadata = 1}
    return wire.field(1, metadata.SerializeToString())


def _append_info(reply: bytes, target: str) -> bytes:
    """apid AppendInfo for a unary reply: metadata appended inside the first `messages` entry."""
    tag, offset = wire.read_varint(reply)
    if tag != (1 << 3 | 2):
        raise GRPCError(wire.Status.INTERNAL, "unexpected message format: %d" % tag)
    offset = wire.read_varint(reply, offset)[1]
    inner = reply[offset:] + _metadata_bytes(target)
    return wire.field(1, inner)


async def _fan_out(node, path, streaming, request, stream, roles, targets):
    """One-to-many proxying: replies carry metadata; a failed node is a metadata-only entry."""
    payload = request.SerializeToString()
    if streaming:
        for target in targets:
            async def relay(reply: bytes, target=target):
                await stream.send_message(reply + _metadata_bytes(target))
            try:
                await node.backends.get(target).call(path, True, payload, roles, _timeout(stream), relay)
            except GRPCError as error:
                await stream.send_message(_metadata_bytes(target, error))
        return

    async def one(target):
        replies = []

        async def collect(reply: bytes):
            replies.append(reply)
        try:
            await node.backends.get(target).call(path, False, payload, roles, _timeout(stream), collect)
        except GRPCError as error:
            return wire.field(1, _metadata_bytes(target, error))
        return _append_info(replies[0], target)

    parts = await asyncio.gather(*(one(target) for target in targets))
    await stream.send_message(b"".join(parts))


def _go_code(status: wire.Status) -> str:
    return "".join(word.capitalize() for word in status.name.split("_")).replace("Ok", "OK")


# --- proxy backends ---------------------------------------------------------------------------


class Backend:
    """A cached connection from an endpoint to another node's apid (backend.APID upstream)."""

    def __init__(self, node: "SimNode", target: str):
        self.node = node
        self.target = target
        self.channel = grpclib.client.Channel(target, 50000, ssl=node.proxy_context(), codec=wire.Codec())
        self.in_flight = 0
        self.retiring = False

    def retire(self) -> None:
        """Close once idle: calls in progress finish on the old connection (graceful close)."""
        self.retiring = True
        if not self.in_flight:
            self.channel.close()

    async def call(self, path, streaming, payload, roles, timeout, on_reply) -> None:
        metadata = [("proxyfrom", self.node.address)] + [(ROLE_METADATA, role) for role in sorted(roles)]
        cardinality = Cardinality.UNARY_STREAM if streaming else Cardinality.UNARY_UNARY
        self.in_flight += 1
        try:
            async with self.channel.request(path, cardinality, wire.Raw, wire.Raw, timeout=timeout,
                                            metadata=metadata) as call:
                await call.send_message(payload, end=True)
                async for reply in call:
                    await on_reply(reply)
        except GRPCError:
            raise
        except asyncio.TimeoutError as exc:
            raise GRPCError(wire.Status.DEADLINE_EXCEEDED, "context deadline exceeded") from exc
        except (OSError, ssl.SSLError, StreamTerminatedError, ProtocolError, h2.exceptions.H2Error) as exc:
            raise GRPCError(wire.Status.UNAVAILABLE, _dial_error(self.target, exc)) from exc
        finally:
            self.in_flight -= 1
            if self.retiring and not self.in_flight:
                self.channel.close()


def _dial_error(target: str, exc: BaseException) -> str:
    """grpc-go's wording for connection failures, so clients can tell them apart."""
    if isinstance(exc, ConnectionRefusedError):
        reason = "transport: Error while dialing: dial tcp %s:50000: connect: connection refused" % target
    elif isinstance(exc, ssl.SSLCertVerificationError):
        reason = ("transport: authentication handshake failed: tls: failed to verify certificate: "
                  "x509: certificate signed by unknown authority")
    elif isinstance(exc, ssl.SSLError):
        reason = "transport: authentication handshake failed: remote error: tls: %s" % (exc.reason or exc)
    else:
        # With TLS 1.3 a refused client certificate shows up as the connection closing
        # right after the handshake.
        reason = "error reading server preface: %s" % (exc or type(exc).__name__)
    return 'connection error: desc = "%s"' % reason


class Backends:
    """APIDFactory: one cached backend per target, flushed when the node's certificates change."""

    def __init__(self, node: "SimNode"):
        self.node = node
        self._cache: dict[str, Backend] = {}

    def get(self, target: str) -> Backend:
        backend = self._cache.get(target)
        if backend is not None:
            return backend
        if ":" in target and not target.startswith("["):
            raise GRPCError(wire.Status.INTERNAL, "invalid target %r" % target)
        try:
            address = ipaddress.ip_address(target)
        except ValueError:
            # Targets are IPs here: this simulator has no resolver for node names.
            raise GRPCError(wire.Status.UNAVAILABLE, 'connection error: desc = "transport: Error while dialing: '
                            'dial tcp: lookup %s: no such host"' % target) from None
        if not address.is_loopback:
            # Never dial off this machine: answer as an unreachable address would.
            raise GRPCError(wire.Status.UNAVAILABLE, 'connection error: desc = "transport: Error while dialing: '
                            'dial tcp %s:50000: connect: no route to host"' % target)
        backend = self._cache[target] = Backend(self.node, target)
        return backend

    def flush(self) -> None:
        for backend in self._cache.values():
            backend.retire()
        self._cache.clear()

    async def close_all(self) -> None:
        for backend in self._cache.values():
            backend.channel.close()
        self._cache.clear()


# --- machined handlers ------------------------------------------------------------------------


def _authorize(roles, allowed) -> None:
    if not roles & allowed:
        raise GRPCError(wire.Status.PERMISSION_DENIED, NOT_AUTHORIZED)


async def version(node: "SimNode", _request, stream, roles) -> None:
    _authorize(roles, READ_ROLES)
    cls = wire.message_class
    message = cls("machine.Version")(
        version=cls("machine.VersionInfo")(tag=node.talos_version, sha=node.cluster.version_sha(node.talos_version),
                                           built=node.cluster.build_date, go_version="go1.24.11", os="linux",
                                           arch=node.arch),
        platform=cls("machine.PlatformInfo")(name=node.platform, mode=node.platform),
        features=cls("machine.FeaturesInfo")(rbac=True),
    )
    await stream.send_message(cls("machine.VersionResponse")(messages=[message]))


async def apply_configuration(node: "SimNode", request, stream, roles) -> None:
    _authorize(roles, ADMIN)
    await stream.send_message(await node.apply_configuration(request))


def kubeconfig_archive(kubeconfig: bytes) -> bytes:
    """gzip'd tar with one `kubeconfig` entry and no end-of-archive blocks, as Talos streams it."""
    info = tarfile.TarInfo("kubeconfig")
    info.size = len(kubeconfig)
    info.mode = 0o600
    info.mtime = int(time.time())
    body = info.tobuf(format=tarfile.USTAR_FORMAT) + kubeconfig
    body += b"\0" * (-len(body) % tarfile.BLOCKSIZE)
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as archive:
        archive.write(body)
    return out.getvalue()


async def kubeconfig(node: "SimNode", _request, stream, roles) -> None:
    _authorize(roles, ADMIN)
    if not node.controlplane:
        raise GRPCError(wire.Status.UNIMPLEMENTED, "kubeconfig is only available on control plane nodes")
    try:
        archive = kubeconfig_archive(node.admin_kubeconfig())
    except pki.PEMError as exc:
        raise GRPCError(wire.Status.INTERNAL, "failed to generate kubeconfig: %s" % exc) from exc
    data = wire.message_class("common.Data")
    for start in range(0, len(archive), KUBECONFIG_CHUNK):
        await stream.send_message(data(bytes=archive[start:start + KUBECONFIG_CHUNK]))


def _resource_access(roles, rtype: str) -> None:
    if rtype not in resources.KNOWN_TYPES:
        raise GRPCError(wire.Status.PERMISSION_DENIED, "%s: no resource definition for %s" % (NOT_AUTHORIZED, rtype))
    _authorize(roles, ADMIN if rtype in resources.SENSITIVE_TYPES else READ_ROLES)


def _not_found(namespace, rtype, rid) -> GRPCError:
    return GRPCError(wire.Status.NOT_FOUND, "resource %s(%s/%s@undefined) doesn't exist" % (rtype, namespace, rid))


async def cosi_get(node: "SimNode", request, stream, roles) -> None:
    _resource_access(roles, request.type)
    found = node.resources.get(request.namespace, request.type, request.id)
    if found is None:
        raise _not_found(request.namespace, request.type, request.id)
    await stream.send_message(wire.message_class("cosi.resource.GetResponse")(resource=found.message()))


async def cosi_list(node: "SimNode", request, stream, roles) -> None:
    _resource_access(roles, request.type)
    reply = wire.message_class("cosi.resource.ListResponse")
    for item in node.resources.list(request.namespace, request.type):
        await stream.send_message(reply(resource=item.message()))


async def cosi_watch(node: "SimNode", request, stream, roles) -> None:
    """COSI Watch: an empty frame first; a single-resource watch then sends the current state
    (CREATED, i.e. no event_type on the wire; a DESTROYED tombstone if missing), then changes."""
    _resource_access(roles, request.type)
    single = request.HasField("id")
    rid = request.id if single else None
    queue = node.resources.watch(request.namespace, request.type, rid)
    response, event = wire.message_class("cosi.resource.WatchResponse"), wire.message_class("cosi.resource.Event")
    try:
        await stream.send_message(response())
        if single:
            current = node.resources.get(request.namespace, request.type, rid)
            if current is not None:
                initial = event(resource=current.message(), event_type=resources.CREATED)
            else:
                initial = event(resource=resources.tombstone(request.namespace, request.type, rid),
                                event_type=resources.DESTROYED)
            await stream.send_message(response(event=[initial]))
        while True:
            event_type, new, old = await queue.get()
            item = event(resource=new, event_type=event_type)
            if old is not None:
                item.old.CopyFrom(old)
            await stream.send_message(response(event=[item]))
    finally:
        node.resources.unwatch(request.namespace, request.type, rid, queue)


LOCAL = {
    "/machine.MachineService/Version": version,
    "/machine.MachineService/ApplyConfiguration": apply_configuration,
    "/machine.MachineService/Kubeconfig": kubeconfig,
    "/cosi.resource.State/Get": cosi_get,
    "/cosi.resource.State/List": cosi_list,
    "/cosi.resource.State/Watch": cosi_watch,
}
