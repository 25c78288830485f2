# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""Async client for the few Talos API calls a CA rotation needs.

gRPC runs on grpclib over Python's ssl, not grpcio: grpcio's BoringSSL cannot handshake with
the Ed25519 leaves Talos issues. Every failure becomes one of the TalosAPIError subclasses in
_errors with a message that names the endpoint and the node and says what to do.

Routing follows talosctl: without `node` the endpoint answers itself; with `node` the call
carries the `node` metadata and the endpoint proxies it. With several endpoints, a connection
failure moves on to the next one and the client stays there afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import io
import ipaddress
import os
import re
import ssl
import tarfile
import traceback
import zlib
from typing import NamedTuple, Sequence

try:
    from grpclib.client import Channel
    from grpclib.const import Cardinality
    from grpclib.exceptions import GRPCError, StreamTerminatedError
except ImportError:
    HAS_GRPCLIB = False
    GRPCLIB_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_GRPCLIB = True
    GRPCLIB_IMPORT_ERROR = None

try:
    from cryptography import x509
    from cryptography.x509.oid import NameOID
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None

from ansible_collections.talosops.pki.plugins.module_utils._errors import (
    ApplyInProgressError,
    CertificateExpiredError,
    ClientNotTrustedError,
    DeadlineExceededError,
    KeyMismatchError,
    NodeUnreachableError,
    NotFoundError,
    NotPEMError,
    PermissionDeniedError,
    ServerNotTrustedError,
    TalosAPIError,
    UnsupportedVersionError,
)
from ansible_collections.talosops.pki.plugins.module_utils._files import load_cert_chain
from ansible_collections.talosops.pki.plugins.module_utils._talos_api_pb import (
    HAS_PROTOBUF,
    METHODS,
    PROTOBUF_IMPORT_ERROR,
    message_class,
)

DEFAULT_PORT = 50000

# gRPC status codes; the same numbers appear in google.rpc.Status inside common.Metadata.
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
PERMISSION_DENIED = 7
# apid's PermissionDenied message when a node that does not proxy (a worker) gets a request for another node.
_NO_FORWARDING = "no request forwarding"
FAILED_PRECONDITION = 9
UNIMPLEMENTED = 12
UNAVAILABLE = 14
UNAUTHENTICATED = 16
_STATUS_NAMES = {
    0: "OK", 1: "Canceled", 2: "Unknown", 3: "InvalidArgument", 4: "DeadlineExceeded", 5: "NotFound",
    6: "AlreadyExists", 7: "PermissionDenied", 8: "ResourceExhausted", 9: "FailedPrecondition", 10: "Aborted",
    11: "OutOfRange", 12: "Unimplemented", 13: "Internal", 14: "Unavailable", 15: "DataLoss", 16: "Unauthenticated",
}

APPLY_MODES = {"reboot": 0, "auto": 1, "no_reboot": 2, "staged": 3, "try": 4}
_APPLY_MODE_NAMES = {value: name for name, value in APPLY_MODES.items()}
_MACHINE_TYPES = {0: "unknown", 1: "init", 2: "controlplane", 3: "worker"}
_EVENT_TYPES = {0: "created", 1: "updated", 2: "destroyed", 3: "bootstrapped", 4: "errored", 5: "noop"}

_VERSION = "/machine.MachineService/Version"
_APPLY = "/machine.MachineService/ApplyConfiguration"
_KUBECONFIG = "/machine.MachineService/Kubeconfig"
_COSI_GET = "/cosi.resource.State/Get"
_COSI_LIST = "/cosi.resource.State/List"
_COSI_WATCH = "/cosi.resource.State/Watch"

# OpenSSL verify codes that deserve their own message.
_VERIFY_NOT_YET_VALID = 9
_VERIFY_EXPIRED = 10
_VERIFY_NAME_MISMATCHES = (62, 63, 64)  # host name, e-mail, IP address
# TLS alerts a server sends when it refuses the client certificate.
_CLIENT_REFUSED_ALERTS = (
    "TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE", "SSLV3_ALERT_CERTIFICATE_UNKNOWN", "SSLV3_ALERT_CERTIFICATE_REVOKED",
    "TLSV1_ALERT_ACCESS_DENIED",
)
_CLIENT_EXPIRED_ALERT = "SSLV3_ALERT_CERTIFICATE_EXPIRED"

_TALOS_KEY_LABEL = re.compile(rb"-----(BEGIN|END) ED25519 PRIVATE KEY-----")

# Stands for "the client's call_timeout" where None already means "no deadline" (watches).
_CALL_TIMEOUT = object()

_SERVER_CA_HINT = ("the endpoint's certificate is not signed by any CA in the talosconfig's ca: is this talosconfig "
                   "for this cluster? Mid-rotation, trust both the old and the new CA")


def missing_requirements():
    """Names and import tracebacks of the Python packages this client needs but cannot import."""
    missing = []
    for name, present, error in (("grpclib", HAS_GRPCLIB, GRPCLIB_IMPORT_ERROR),
                                 ("protobuf", HAS_PROTOBUF, PROTOBUF_IMPORT_ERROR),
                                 ("cryptography", HAS_CRYPTOGRAPHY, CRYPTOGRAPHY_IMPORT_ERROR)):
        if not present:
            missing.append((name, error))
    return missing


def run(coroutine):
    """Run `coroutine` to completion on a fresh event loop, for callers that are not async.

    Open and close the TalosClient inside the coroutine: its connections belong to that loop.
    """
    return asyncio.run(coroutine)


class Credentials(NamedTuple):
    """PEM material from a talosconfig context (already base64-decoded).

    ca: the CAs to trust for the server, possibly several (old and new mid-rotation);
    crt/key: our client certificate and key. The key may carry Talos' "ED25519 PRIVATE KEY" label.
    """

    ca: bytes
    crt: bytes
    key: bytes

    def __repr__(self):
        # Never show key bytes, even in a traceback's locals.
        return "Credentials(ca=<%d bytes>, crt=<%d bytes>, key=<redacted>)" % (len(self.ca), len(self.crt))


class _Done:
    """An awaitable that is already finished: lets close() be called plainly or awaited."""

    def __await__(self):
        return iter(())


class _Endpoint:
    """One talosconfig endpoint and its lazily opened channel."""

    def __init__(self, text, default_port):
        self.host, self.port = _split_endpoint(text, default_port)
        self.label = "[%s]:%d" % (self.host, self.port) if ":" in self.host else "%s:%d" % (self.host, self.port)
        self.channel = None


def _split_endpoint(text, default_port):
    """'10.0.0.1', '10.0.0.1:50000', 'host', '[fd00::1]:50000' or 'fd00::1' -> (host, port)."""
    endpoint = text.strip()
    if not endpoint:
        raise ValueError("empty Talos endpoint")
    if "://" in endpoint or "/" in endpoint:
        # A name resolver would be asked for "https://10.5.0.2:50000" and fail after the retry deadline with "Unknown error".
        raise ValueError("Talos endpoint %r is a URL or a path, not an address: Talos endpoints carry no scheme (https://) "
                         "and no path" % text)
    if endpoint.startswith("["):
        host, _bracket, rest = endpoint[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif endpoint.count(":") == 1:
        host, port = endpoint.split(":")
    else:
        host, port = endpoint, ""
    try:
        return host, int(port) if port else default_port
    except ValueError:
        raise ValueError("Talos endpoint %r has an invalid port" % text) from None


class _ConnectionFailure(Exception):
    """No usable connection to one endpoint: try the next endpoint, then retry."""


class _StatusFailure(Exception):
    """A gRPC status from a call, or from a failed node's metadata inside an OK reply."""

    def __init__(self, code, message, node=None):
        super().__init__(message)
        self.code = code
        self.message = message or ""
        self.node = node


class _Call(NamedTuple):
    """What the retry and error mapping need to know about one API call."""

    path: str
    request: object
    node: str | None
    what: str
    timeout: float | None
    retry_codes: frozenset
    hints: dict
    guard: object = None  # called right before each attempt is sent (every retry, every endpoint); raises to stop it


class TalosClient:
    """Talos API over mutual TLS for a list of endpoints; use as `async with TalosClient(...) as client`."""

    def __init__(self, endpoints: Sequence[str], credentials: Credentials, *, port=DEFAULT_PORT, connect_timeout=10.0,
                 call_timeout=30.0, retry_deadline=10.0, retry_interval=0.1):
        missing = missing_requirements()
        if missing:
            raise TalosAPIError("the Talos API client needs the Python package(s) %s on the host that runs it: install them "
                                "(pip install grpclib protobuf cryptography)." % ", ".join(name for name, _error in missing))
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if not endpoints:
            raise ValueError("TalosClient needs at least one endpoint")
        self.endpoints = [_Endpoint(endpoint, port) for endpoint in endpoints]
        self.credentials = credentials
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self.retry_deadline = retry_deadline
        self.retry_interval = retry_interval
        self._active = 0
        self._ssl_context = None
        self._roles = ()
        self._loop = None

    def __repr__(self):
        return "TalosClient(%s)" % ", ".join(endpoint.label for endpoint in self.endpoints)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        self.close()

    def close(self):
        """Drop all connections; later calls open new ones (and so re-check trust). Works awaited or not."""
        for endpoint in self.endpoints:
            if endpoint.channel is not None:
                with contextlib.suppress(Exception):
                    endpoint.channel.close()
                endpoint.channel = None
        return _Done()

    # --- public calls ----------------------------------------------------------------------

    async def version(self, node=None):
        """Talos version of `node` (or of the endpoint itself)."""
        call = self._call(_VERSION, message_class("google.protobuf.Empty")(), node, "Version")
        reply = await self._unary(call)
        if not reply.messages:
            raise TalosAPIError("%s: the Version reply holds no version: is this a Talos API endpoint?" % self._where(node),
                                node=self._node_name(node))
        version = reply.messages[0]
        return {
            "node": self._node_name(node),
            "hostname": version.metadata.hostname or None,
            "tag": version.version.tag,
            "sha": version.version.sha,
            "arch": version.version.arch,
            "os": version.version.os,
            "platform": version.platform.name,
            "platform_mode": version.platform.mode,
            "rbac": version.features.rbac,
        }

    async def machine_config(self, node=None):
        """The active machine configuration's exact bytes (possibly several YAML documents)."""
        spec = await self._get_resource(node, "config", "MachineConfigs.config.talos.dev", "v1alpha1",
                                        "resource.config.MachineConfigSpec", "the active machine config")
        return spec.yaml_marshalled

    async def apply_configuration(self, data, node=None, *, mode="no_reboot", dry_run=False, try_timeout=None, guard=None):
        """Apply a full machine configuration. `mode` is one of APPLY_MODES; "reboot" only when asked for.

        `guard`, if given, is called right before the request goes out, on every attempt: what it raises stops the call
        with nothing sent (the run that asked for the change has ended: see rotation_lock.RunGuard).
        """
        if mode not in APPLY_MODES:
            raise ValueError("apply mode must be one of %s, not %r" % (", ".join(sorted(APPLY_MODES)), mode))
        if isinstance(data, str):
            data = data.encode("utf-8")
        request = message_class("machine.ApplyConfigurationRequest")(data=data, dry_run=dry_run)
        # Set from the argument every time: the proto3 default (0) is REBOOT.
        request.mode = APPLY_MODES[mode]
        if try_timeout is not None:
            request.try_mode_timeout.seconds = int(try_timeout)
            request.try_mode_timeout.nanos = int(round((try_timeout - int(try_timeout)) * 1e9))
        hints = {}
        if mode == "reboot":
            hints[UNIMPLEMENTED] = (UnsupportedVersionError, "this Talos version no longer supports apply mode reboot "
                                                             "(removed in v1.14): use mode auto or no_reboot")
        call = self._call(_APPLY, request, node, "ApplyConfiguration (%s%s)" % (mode, ", dry run" if dry_run else ""),
                          retry_codes=frozenset((UNAVAILABLE, FAILED_PRECONDITION)), hints=hints, guard=guard)
        reply = await self._unary(call)
        if not reply.messages:
            return {"mode": mode, "mode_details": "", "warnings": []}
        applied = reply.messages[0]
        return {
            "mode": _APPLY_MODE_NAMES.get(applied.mode, str(applied.mode)),
            "mode_details": applied.mode_details,
            "warnings": list(applied.warnings),
        }

    async def os_root(self, node=None):
        """The node's Talos API CAs: issuing CA (control planes only) and accepted CAs."""
        spec = await self._get_resource(node, "secrets", "OSRootSecrets.secrets.talos.dev", "os",
                                        "talos.resource.definitions.secrets.OSRootSpec", "the OS root secrets")
        return _root_secrets(spec)

    async def kubernetes_root(self, node=None):
        """The node's Kubernetes CAs; NotFoundError on workers, which do not have them."""
        hint = "KubernetesRootSecrets exists only on control-plane nodes: read it from a control plane"
        spec = await self._get_resource(node, "secrets", "KubernetesRootSecrets.secrets.talos.dev", "k8s",
                                        "talos.resource.definitions.secrets.KubernetesRootSpec",
                                        "the Kubernetes root secrets", not_found_hint=hint)
        return _root_secrets(spec)

    async def members(self, node=None):
        """Cluster members as discovered by `node` (or the endpoint)."""
        request = message_class("cosi.resource.ListRequest")(namespace="cluster", type="Members.cluster.talos.dev",
                                                             options=message_class("cosi.resource.ListOptions")())
        replies = await self._collect(self._call(_COSI_LIST, request, node, "List Members.cluster.talos.dev"))
        members = []
        for reply in replies:
            if not reply.HasField("resource"):
                continue
            spec = self._decode_spec(reply.resource, "talos.resource.definitions.cluster.MemberSpec", node)
            members.append({
                "id": reply.resource.metadata.id,
                "hostname": spec.hostname,
                "addresses": [self._address(address.ip, node) for address in spec.addresses],
                "machine_type": _MACHINE_TYPES.get(spec.machine_type, "unknown"),
                "operating_system": spec.operating_system,
            })
        return members

    async def watch_service(self, service_id, node=None, *, timeout=None):
        """Yield the events of one service (e.g. kubelet) until the caller stops; `timeout` bounds the whole watch."""
        request = message_class("cosi.resource.WatchRequest")(
            namespace="runtime", type="Services.v1alpha1.talos.dev", options=message_class("cosi.resource.WatchOptions")(),
            api_version=1)
        # Explicit presence: a set id, even "", asks for a single-resource watch.
        request.id = service_id
        call = self._call(_COSI_WATCH, request, node, "Watch service %s" % service_id, timeout=timeout)
        async with contextlib.aclosing(self._messages(call)) as replies:
            async for reply in replies:
                # Every Watch stream starts with an empty frame.
                for event in reply.event:
                    yield self._service_event(event, service_id, node)

    async def service(self, service_id, node=None):
        """One service's current state (e.g. kubelet), shaped like a watch_service event."""
        request = message_class("cosi.resource.GetRequest")(namespace="runtime", type="Services.v1alpha1.talos.dev", id=service_id,
                                                            options=message_class("cosi.resource.GetOptions")())
        reply = await self._unary(self._call(_COSI_GET, request, node, "reading service %s (Services.v1alpha1.talos.dev)" % service_id))
        event = message_class("cosi.resource.Event")(resource=reply.resource)
        return dict(self._service_event(event, service_id, node), event="current")

    async def kubeconfig(self, node=None):
        """An admin kubeconfig generated by a control-plane node."""
        replies = await self._collect(self._call(_KUBECONFIG, message_class("google.protobuf.Empty")(), node, "Kubeconfig"))
        archive = b"".join(reply.bytes for reply in replies)
        return self._kubeconfig_from_archive(archive, node)

    # --- calls, retries and failover -----------------------------------------------------------

    def _call(self, path, request, node, what, *, timeout=_CALL_TIMEOUT, retry_codes=frozenset((UNAVAILABLE,)), hints=None,
              guard=None):
        if node is not None and (not isinstance(node, str) or not node.strip()):
            raise ValueError("node must be a non-empty address or host name, not %r" % (node,))
        if timeout is _CALL_TIMEOUT:
            timeout = self.call_timeout
        return _Call(path, request, node, what, timeout, retry_codes, hints or {}, guard)

    async def _unary(self, call):
        async with contextlib.aclosing(self._messages(call)) as replies:
            async for reply in replies:
                return reply
        raise AssertionError("_stream yields a reply or raises")

    async def _collect(self, call):
        async with contextlib.aclosing(self._messages(call)) as replies:
            return [reply async for reply in replies]

    async def _messages(self, call):
        """Yield the replies of `call`; retry Unavailable (and call.retry_codes) until the first reply arrives."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.retry_deadline
        while True:
            received = False
            try:
                async with contextlib.aclosing(self._attempt(call)) as replies:
                    async for reply in replies:
                        received = True
                        yield reply
                return
            except _StatusFailure as failure:
                if received or failure.code not in call.retry_codes or loop.time() + self.retry_interval > give_up_at:
                    raise self._status_error(call, failure) from None
            except _ConnectionFailure as failure:
                if received or loop.time() + self.retry_interval > give_up_at:
                    raise self._unreachable_error(call, str(failure)) from None
            await asyncio.sleep(self.retry_interval)

    async def _attempt(self, call):
        """One try of `call`, moving to the next endpoint when a connection cannot be made."""
        problems = []
        for offset in range(len(self.endpoints)):
            index = (self._active + offset) % len(self.endpoints)
            endpoint = self.endpoints[index]
            try:
                channel = await self._connect(endpoint, call)
            except _ConnectionFailure as failure:
                problems.append("%s: %s" % (endpoint.label, failure))
                continue
            # Sticky: later calls start from the endpoint that answered.
            self._active = index
            received = False
            try:
                async with contextlib.aclosing(self._stream(channel, endpoint, call)) as replies:
                    async for reply in replies:
                        received = True
                        yield reply
                return
            except _ConnectionFailure as failure:
                if received:
                    # A stream that already delivered replies must not start over elsewhere.
                    raise
                problems.append("%s: %s" % (endpoint.label, failure))
        raise _ConnectionFailure("; ".join(problems))

    async def _connect(self, endpoint, call):
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Channels belong to the loop that opened them (run() makes a new loop each time).
            self.close()
            self._loop = loop
        if endpoint.channel is None:
            endpoint.channel = Channel(endpoint.host, endpoint.port, ssl=self._context())
        # This call's channel: while it connects, a concurrent call that lost the connection may reset endpoint.channel.
        channel = endpoint.channel
        try:
            # grpclib has no connect timeout of its own: connect explicitly to bound it and to see TLS errors as such.
            await asyncio.wait_for(channel.__connect__(), self.connect_timeout)
        except asyncio.TimeoutError:
            raise _ConnectionFailure("no TLS connection within %ss" % self.connect_timeout) from None
        except ssl.SSLError as exc:
            raise self._tls_error(exc, endpoint, call) from None
        except OSError as exc:
            raise _ConnectionFailure(_os_error_text(exc)) from None
        return channel

    async def _stream(self, channel, endpoint, call):
        request_name, reply_name, streaming = METHODS[call.path]
        metadata = [("node", call.node)] if call.node is not None else None
        cardinality = Cardinality.UNARY_STREAM if streaming else Cardinality.UNARY_UNARY
        if call.guard is not None:
            call.guard("send %s to %s" % (call.what, self._where(call.node, endpoint)))
        try:
            async with channel.request(call.path, cardinality, message_class(request_name), message_class(reply_name),
                                       timeout=call.timeout, metadata=metadata) as stream:
                await stream.send_message(call.request, end=True)
                if streaming:
                    reply = await stream.recv_message()
                    while reply is not None:
                        self._check_metadata(reply, call)
                        yield reply
                        reply = await stream.recv_message()
                    return
                # A unary reply is handed out only after the trailers, so a late error status is not missed.
                reply = await stream.recv_message()
        except GRPCError as exc:
            raise _StatusFailure(exc.status.value, exc.message, call.node) from None
        except asyncio.TimeoutError:
            raise DeadlineExceededError("%s: %s did not finish within %ss: the node may be overloaded or stuck; check it, or "
                                        "raise call_timeout." % (self._where(call.node, endpoint), call.what, call.timeout),
                                        node=self._node_name(call.node, endpoint)) from None
        except (StreamTerminatedError, OSError) as exc:
            # With TLS 1.3 a refused client certificate shows up only now, as a lost connection whose
            # reason grpclib drops: ask again on a fresh connection to learn why.
            channel.close()
            if endpoint.channel is channel:
                # A concurrent call may already have opened a fresh channel: keep that one.
                endpoint.channel = None
            refusal = await self._diagnose(endpoint, call)
            if refusal is not None:
                raise refusal from None
            raise _ConnectionFailure("connection lost (%s)" % _os_error_text(exc)) from None
        if reply is None:
            raise TalosAPIError("%s: %s returned no reply." % (self._where(call.node, endpoint), call.what),
                                node=self._node_name(call.node, endpoint))
        self._check_metadata(reply, call)
        yield reply

    async def _diagnose(self, endpoint, call):
        """Open a bare TLS connection and read once: returns the mapped error if the endpoint refuses us, else None.

        Nothing is sent after the handshake: a server that refuses the certificate then closes a connection with
        nothing unread, so its alert arrives (unread data would make the close a reset that hides the alert). A
        server that accepts us speaks first anyway (HTTP/2 servers send their SETTINGS at once).
        """
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(endpoint.host, endpoint.port, ssl=self._context()), self.connect_timeout)
            await asyncio.wait_for(reader.read(1), self.connect_timeout)
        except ssl.SSLError as exc:
            error = self._tls_error(exc, endpoint, call)
            return None if isinstance(error, _ConnectionFailure) else error
        except (OSError, asyncio.TimeoutError):
            return None
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        return None

    def _check_metadata(self, reply, call):
        """A failed node inside an OK reply (fan-out style) is a metadata-only message: raise for it."""
        entries = []
        fields = reply.DESCRIPTOR.fields_by_name
        if "messages" in fields:
            entries = [message.metadata for message in reply.messages if message.HasField("metadata")]
        elif "metadata" in fields and reply.HasField("metadata"):
            entries = [reply.metadata]
        for metadata in entries:
            if metadata.error:
                code = metadata.status.code if metadata.HasField("status") and metadata.status.code else 2
                raise _StatusFailure(code, metadata.error, metadata.hostname or call.node)

    # --- TLS ---------------------------------------------------------------------------------

    def _context(self):
        """The client SSL context, built once: server verified against our CA bundle, our cert loaded from memory."""
        if self._ssl_context is not None:
            return self._ssl_context
        self._roles = self._check_client_certificate()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname on by default
        context.verify_mode = ssl.CERT_REQUIRED
        context.check_hostname = True
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["h2"])
        if b"-----BEGIN CERTIFICATE-----" not in self.credentials.ca:
            raise NotPEMError("the talosconfig's ca is not a PEM certificate bundle (talosconfig values are base64 of "
                              "PEM: decode them first).")
        try:
            context.load_verify_locations(cadata=self.credentials.ca.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError) as exc:
            raise NotPEMError("the talosconfig's ca cannot be read as PEM certificates (%s): check the talosconfig." %
                              (getattr(exc, "reason", None) or exc.__class__.__name__)) from None
        key = _TALOS_KEY_LABEL.sub(rb"-----\1 PRIVATE KEY-----", self.credentials.key)
        try:
            load_cert_chain(context, self.credentials.crt, key)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise KeyMismatchError("the talosconfig's key does not belong to its crt: take both from the same "
                                       "talosconfig context.") from None
            raise NotPEMError("the talosconfig's crt/key cannot be loaded (%s): expected PEM certificate and "
                              "private key." % (exc.reason or exc.__class__.__name__)) from None
        self._ssl_context = context
        return context

    def _check_client_certificate(self):
        """Refuse an expired client certificate before connecting (the node's refusal would say less); return its roles."""
        try:
            certificate = x509.load_pem_x509_certificates(self.credentials.crt)[0]
        except ValueError:
            raise NotPEMError("the talosconfig's crt is not a PEM certificate (talosconfig values are base64 of PEM: "
                              "decode them first).") from None
        now = datetime.datetime.now(datetime.timezone.utc)
        if now > certificate.not_valid_after_utc:
            raise CertificateExpiredError("the talosconfig's client certificate expired at %s: generate a new talosconfig "
                                          "from the current Talos OS CA (talosctl config new, or this collection's client "
                                          "certificate task)." % certificate.not_valid_after_utc.isoformat())
        if now < certificate.not_valid_before_utc:
            raise CertificateExpiredError("the talosconfig's client certificate is not valid before %s: check this host's "
                                          "clock." % certificate.not_valid_before_utc.isoformat())
        return tuple(attribute.value for attribute in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))

    def _tls_error(self, exc, endpoint, call):
        """Map a TLS failure with `endpoint` to the error to raise (or a _ConnectionFailure when it may pass)."""
        where = "endpoint %s" % endpoint.label
        node = endpoint.host
        if isinstance(exc, ssl.SSLCertVerificationError):
            code = exc.verify_code
            detail = exc.verify_message
            if code in (_VERIFY_EXPIRED, _VERIFY_NOT_YET_VALID):
                return CertificateExpiredError("%s: a certificate in the endpoint's chain is expired or not yet valid (%s): "
                                               "check the clocks here and on the node; apid renews its own certificate "
                                               "every 12 h, so an expired CA in the talosconfig's ca is more likely." %
                                               (where, detail), node=node)
            if code in _VERIFY_NAME_MISMATCHES:
                return ServerNotTrustedError("%s: the endpoint's certificate is not valid for %s (%s): connect to an address "
                                             "its certificate lists (node IPs and machine.certSANs)." %
                                             (where, endpoint.host, detail), node=node)
            return ServerNotTrustedError("%s: %s (%s)." % (where, _SERVER_CA_HINT, detail), node=node)
        reason = exc.reason or ""
        if reason == _CLIENT_EXPIRED_ALERT:
            return CertificateExpiredError("%s refused our client certificate as expired (TLS alert %s): check the clocks "
                                           "here and on the node, and renew the talosconfig's certificate." %
                                           (where, reason), node=node)
        if reason in _CLIENT_REFUSED_ALERTS:
            return ClientNotTrustedError("%s refused our client certificate (TLS alert %s): the node does not trust the CA "
                                         "that issued the talosconfig's crt. Use a client certificate issued by a CA in "
                                         "the node's machine.ca or machine.acceptedCAs (mid-rotation: the new CA is "
                                         "accepted only after the accept phase)." % (where, reason), node=node)
        if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "RECORD_LAYER_FAILURE"):
            return TalosAPIError("%s does not speak TLS as apid does (%s): is the port right (Talos API: %d)?" %
                                 (where, reason, DEFAULT_PORT), node=node)
        if reason in ("UNEXPECTED_EOF_WHILE_READING", "") or "EOF" in reason:
            return _ConnectionFailure("TLS connection closed early (%s)" % (reason or exc))
        return TalosAPIError("%s: TLS handshake failed (%s) during %s." % (where, reason or exc, call.what), node=node)

    # --- error mapping -------------------------------------------------------------------------

    def _node_name(self, node, endpoint=None):
        if node is not None:
            return node
        return (endpoint or self.endpoints[self._active]).host

    def _where(self, node, endpoint=None):
        endpoint = endpoint or self.endpoints[self._active]
        if node is None:
            return "node %s (endpoint itself)" % endpoint.label
        return "node %s via endpoint %s" % (node, endpoint.label)

    def _status_error(self, call, failure):
        node = failure.node or call.node
        where = self._where(node)
        status = "%s: %s" % (_STATUS_NAMES.get(failure.code, "status %d" % failure.code), failure.message)
        node_name = self._node_name(node)
        if failure.code in call.hints:
            error_class, hint = call.hints[failure.code]
            return error_class("%s: %s failed (%s): %s." % (where, call.what, status, hint), node=node_name)
        if failure.code == UNAVAILABLE:
            return self._unreachable_error(call, status, node)
        if failure.code == FAILED_PRECONDITION and call.path == _APPLY:
            return ApplyInProgressError("%s: %s refused (%s) for %ss: another configuration apply is still in progress; "
                                        "wait for it to finish and run again." % (where, call.what, status, self.retry_deadline),
                                        node=node_name)
        if failure.code == PERMISSION_DENIED and node is not None and _NO_FORWARDING in failure.message:
            endpoint = self.endpoints[self._active].label
            return PermissionDeniedError("%s: %s refused (%s): endpoint %s does not forward requests to other nodes, which is "
                                         "what a worker's apid does (only control planes proxy the `node` header). Use the "
                                         "control planes' addresses as endpoints (talos_endpoints / rotate_ca_endpoints, or "
                                         "the talosconfig context's endpoints)." % (where, call.what, status, endpoint),
                                         node=node_name)
        if failure.code == PERMISSION_DENIED:
            return PermissionDeniedError("%s: %s denied (%s) for our client certificate's role(s) %s: reading CA secrets "
                                         "and the machine config, and applying configuration, need os:admin; use an os:admin "
                                         "talosconfig." % (where, call.what, status, ", ".join(self._roles) or "(none)"),
                                         node=node_name)
        if failure.code == UNAUTHENTICATED:
            return ClientNotTrustedError("%s: %s refused our client certificate (%s): use a talosconfig whose certificate the "
                                         "node trusts." % (where, call.what, status), node=node_name)
        if failure.code == DEADLINE_EXCEEDED:
            return DeadlineExceededError("%s: %s ran out of time on the node side (%s): check the node, or raise "
                                         "call_timeout." % (where, call.what, status), node=node_name)
        if failure.code == NOT_FOUND:
            return NotFoundError("%s: %s found nothing (%s): check the node address and its Talos version." %
                                 (where, call.what, status), node=node_name)
        if failure.code == UNIMPLEMENTED:
            return UnsupportedVersionError("%s: %s is not implemented there (%s): the node's Talos version is too old or too "
                                           "new for this collection." % (where, call.what, status), node=node_name)
        return TalosAPIError("%s: %s failed (%s)." % (where, call.what, status), node=node_name)

    def _unreachable_error(self, call, detail, node=None):
        node = node or call.node
        labels = ", ".join(endpoint.label for endpoint in self.endpoints)
        if node is None:
            target = "endpoint(s) %s" % labels
        else:
            target = "node %s via endpoint(s) %s" % (node, labels)
        hint = "check that the node is up and that apid listens on port %d" % self.endpoints[0].port
        if call.node is not None:
            hint += "; mid-rotation, also check that the node trusts the CA that issued the endpoint's certificates"
        return NodeUnreachableError("%s: %s got no answer within %ss (last error: %s): %s." %
                                    (target, call.what, self.retry_deadline, detail, hint), node=self._node_name(node))

    # --- decoding ------------------------------------------------------------------------------

    async def _get_resource(self, node, namespace, resource_type, resource_id, spec_name, what, not_found_hint=None):
        request = message_class("cosi.resource.GetRequest")(namespace=namespace, type=resource_type, id=resource_id,
                                                            options=message_class("cosi.resource.GetOptions")())
        hints = {NOT_FOUND: (NotFoundError, not_found_hint)} if not_found_hint else {}
        reply = await self._unary(self._call(_COSI_GET, request, node, "reading %s (%s)" % (what, resource_type),
                                             hints=hints))
        return self._decode_spec(reply.resource, spec_name, node)

    def _decode_spec(self, resource, spec_name, node):
        # A spec whose fields all hold defaults encodes to zero bytes: absent means defaults.
        try:
            return message_class(spec_name).FromString(resource.spec.proto_spec)
        except Exception as exc:  # protobuf's DecodeError is not importable without protobuf
            raise TalosAPIError("%s: the %s of %s cannot be decoded (%s): is this Talos version supported?" %
                                (self._where(node), spec_name, resource.metadata.id, exc), node=self._node_name(node)) from None

    def _address(self, raw, node):
        try:
            return str(ipaddress.ip_address(raw))
        except ValueError:
            raise TalosAPIError("%s: a member address of %d bytes is neither IPv4 nor IPv6." % (self._where(node), len(raw)),
                                node=self._node_name(node)) from None

    def _service_event(self, event, service_id, node):
        event_name = _EVENT_TYPES.get(event.event_type, str(event.event_type))
        if event_name == "errored":
            raise TalosAPIError("%s: watching service %s failed: %s." % (self._where(node), service_id, event.error),
                                node=self._node_name(node))
        resource = event.resource
        spec = self._decode_spec(resource, "talos.resource.definitions.v1alpha1.ServiceSpec", node)
        return {
            "event": event_name,
            "id": resource.metadata.id or service_id,
            "running": spec.running,
            "healthy": spec.healthy,
            "unknown": spec.unknown,
            "version": resource.metadata.version,
        }

    def _kubeconfig_from_archive(self, archive, node):
        """The single file of the gzip'd tar Talos streams; it has no end-of-archive blocks, so read one member only."""
        problem = None
        try:
            # A decompress object, unlike gzip.decompress, does not insist on a complete trailer.
            tar_bytes = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(archive)
            with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r|") as tar:
                member = tar.next()
                while member is not None and not member.isfile():
                    member = tar.next()
                if member is None:
                    problem = "the archive holds no file"
                else:
                    content = tar.extractfile(member).read()
                    if len(content) != member.size:
                        problem = "the archive is truncated"
                    else:
                        return content
        except (zlib.error, tarfile.TarError, EOFError) as exc:
            problem = "%s: %s" % (exc.__class__.__name__, exc)
        raise TalosAPIError("%s: the Kubeconfig stream is not a gzip'd tar with the kubeconfig (%s): is this a "
                            "control-plane node?" % (self._where(node), problem), node=self._node_name(node))


def _root_secrets(spec):
    issuing = None
    if spec.HasField("issuing_ca") and spec.issuing_ca.crt:
        issuing = {"crt": spec.issuing_ca.crt, "key": spec.issuing_ca.key}
    return {"issuing_ca": issuing, "accepted_cas": [accepted.crt for accepted in spec.accepted_c_as]}


def _os_error_text(exc):
    # asyncio words a refused connection as "Connect call failed (...)": the errno says it plainly.
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or exc.__class__.__name__
