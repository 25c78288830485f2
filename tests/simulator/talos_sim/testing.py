"""Test-side helpers: a minimal Talos API client and machine-config edits.

Deliberately independent of the collection's client (plugins/module_utils/_client.py): the
simulator's tests must not share a bug with the code they are meant to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gzip
import io
import tarfile

import grpclib.client
import yaml
from grpclib.const import Cardinality
from grpclib.exceptions import StreamTerminatedError

from . import machineconfig, pki, tlsctx, wire, yamlgen

PORT = 50000


class SimClient:
    """Calls the Talos API with one client certificate; one cached connection per address.

    `fresh=True` on a call opens a new connection (a new TLS handshake) for that call.
    """

    def __init__(self, ca_pems, certificate: pki.CertKey):
        self.context = tlsctx.client_context(certificate, ca_pems)
        self._channels: dict[str, grpclib.client.Channel] = {}

    def channel(self, address: str, fresh: bool = False) -> grpclib.client.Channel:
        if fresh or address not in self._channels:
            channel = grpclib.client.Channel(address, PORT, ssl=self.context, codec=wire.Codec())
            if fresh:
                return channel
            self._channels[address] = channel
        return self._channels[address]

    async def call(self, address: str, path: str, request=None, *, node: str | None = None, nodes=(),
                   metadata=(), timeout: float = 10.0, fresh: bool = False, raw: bool = False):
        """The reply (unary) or the list of replies (server stream); GRPCError on a status."""
        request_name, reply_name, streaming = wire.METHODS[path]
        if request is None:
            request = wire.message_class(request_name)()
        pairs = list(metadata) + ([("node", node)] if node else []) + [("nodes", target) for target in nodes]
        channel = self.channel(address, fresh)
        reply_type = wire.Raw if raw else wire.message_class(reply_name)
        try:
            async with channel.request(path, Cardinality.UNARY_STREAM if streaming else Cardinality.UNARY_UNARY,
                                       wire.message_class(request_name), reply_type, timeout=timeout,
                                       metadata=pairs) as stream:
                await stream.send_message(request, end=True)
                replies = [reply async for reply in stream]
        finally:
            if fresh:
                channel.close()
                await asyncio.sleep(0.005)
        return replies if streaming else replies[0]

    def watch(self, address: str, request, *, node: str | None = None, timeout: float = 30.0):
        """Open a COSI Watch stream; use as `async with client.watch(...) as stream`."""
        name, _reply, _streaming = wire.METHODS["/cosi.resource.State/Watch"]
        stream = self.channel(address).request(
            "/cosi.resource.State/Watch", Cardinality.UNARY_STREAM, wire.message_class(name),
            wire.message_class("cosi.resource.WatchResponse"), timeout=timeout,
            metadata=[("node", node)] if node else [])
        return _WatchStream(stream, request)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    async def __aenter__(self) -> "SimClient":
        return self

    async def __aexit__(self, *_exc) -> None:
        self.close()
        await asyncio.sleep(0.005)  # TLS shutdown: close_notify both ways, then the socket


class _WatchStream:
    def __init__(self, stream, request):
        self._stream = stream
        self._request = request

    async def __aenter__(self):
        await self._stream.__aenter__()
        await self._stream.send_message(self._request, end=True)
        return self._stream

    async def __aexit__(self, *exc):
        with contextlib.suppress(StreamTerminatedError, ConnectionError):
            await self._stream.cancel()  # a broken stream is over already
        return await self._stream.__aexit__(*exc)


def run(coroutine):
    """Run a coroutine on a fresh event loop (the test's side, not the cluster's)."""
    return asyncio.run(coroutine)


def admin_credentials(cluster) -> tuple[list[bytes], pki.CertKey]:
    """The talosconfig's admin certificate, trusting the cluster's original OS CA."""
    return [cluster.secrets.os_ca.cert_pem], cluster.admin


def admin_client(cluster) -> SimClient:
    return SimClient(*admin_credentials(cluster))


def call(credentials, address: str, path: str, request=None, **kwargs):
    """One call on a new connection from synchronous test code; credentials = (ca_pems, cert)."""
    async def once():
        async with SimClient(*credentials) as client:
            return await client.call(address, path, request, **kwargs)
    return asyncio.run(once())


# --- resources ----------------------------------------------------------------------------------


def get_request(namespace: str, rtype: str, rid: str):
    return wire.message_class("cosi.resource.GetRequest")(
        namespace=namespace, type=rtype, id=rid, options=wire.message_class("cosi.resource.GetOptions")())


def watch_request(namespace: str, rtype: str, rid: str | None):
    request = wire.message_class("cosi.resource.WatchRequest")(
        namespace=namespace, type=rtype, options=wire.message_class("cosi.resource.WatchOptions")(), api_version=1)
    if rid is not None:
        request.id = rid
    return request


def wire_fields(data: bytes) -> list[tuple[int, object]]:
    """(field number, value) pairs of a serialized message in wire order; bytes for
    length-delimited fields, int for varints, raw bytes for fixed-size ones."""
    fields, offset = [], 0
    while offset < len(data):
        tag, offset = wire.read_varint(data, offset)
        kind = tag & 7
        if kind == 0:
            value, offset = wire.read_varint(data, offset)
        elif kind == 2:
            length, offset = wire.read_varint(data, offset)
            value, offset = data[offset:offset + length], offset + length
        else:
            size = 8 if kind == 1 else 4
            value, offset = data[offset:offset + size], offset + size
        fields.append((tag >> 3, value))
    return fields


def field_numbers(data: bytes) -> list[int]:
    return [number for number, _value in wire_fields(data)]


def decode_spec(resource, message_name: str):
    return wire.message_class(message_name).FromString(resource.spec.proto_spec)


def apply_request(data: bytes, mode: str = "NO_REBOOT", dry_run: bool = False, try_timeout: float | None = None):
    request_class = wire.message_class("machine.ApplyConfigurationRequest")
    request = request_class(data=data, mode=getattr(request_class, mode), dry_run=dry_run)
    if try_timeout is not None:
        request.try_mode_timeout.seconds = int(try_timeout)
        request.try_mode_timeout.nanos = int((try_timeout - int(try_timeout)) * 1e9)
    return request


def kubeconfig_from_stream(chunks) -> bytes:
    """Concatenate Kubeconfig chunks and read exactly one tar member, as talosctl does."""
    archive = gzip.decompress(b"".join(chunk.bytes for chunk in chunks))
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r|") as tar:
        member = tar.next()
        return member.name, tar.extractfile(member).read(), archive


# --- machine-config edits -------------------------------------------------------------------------


def load_documents(data: bytes) -> list[dict]:
    return [document for document in yaml.safe_load_all(data) if document is not None]


def dump_documents(documents: list[dict]) -> bytes:
    return yamlgen.dump_all(documents).encode()


def _v1alpha1(documents):
    return next(document for document in documents if "kind" not in document)


def edit_config(data: bytes, edit) -> bytes:
    """Apply `edit(documents)` to a parsed copy and write it back Talos-style."""
    documents = copy.deepcopy(load_documents(data))
    edit(documents)
    return dump_documents(documents)


def accept_os_ca(data: bytes, ca_pem: bytes) -> bytes:
    """machine.acceptedCAs += ca."""
    def edit(documents):
        machine = _v1alpha1(documents)["machine"]
        machine.setdefault("acceptedCAs", []).append({"crt": pki.b64(ca_pem)})
    return edit_config(data, edit)


def swap_os_ca(data: bytes, new_ca: pki.CertKey, keep_accepted: list[bytes]) -> bytes:
    """machine.ca := new (key on control planes only), acceptedCAs := keep_accepted."""
    def edit(documents):
        machine = _v1alpha1(documents)["machine"]
        controlplane = machine["type"] != "worker"
        machine["ca"] = {"crt": pki.b64(new_ca.cert_pem), "key": pki.b64(new_ca.key_pem) if controlplane else ""}
        machine["acceptedCAs"] = [{"crt": pki.b64(pem)} for pem in keep_accepted]
        if not keep_accepted:
            del machine["acceptedCAs"]
    return edit_config(data, edit)


def accept_kubernetes_ca(data: bytes, ca_pem: bytes) -> bytes:
    """Add an accepted Kubernetes CA in whichever shape the config uses."""
    def edit(documents):
        for document in documents:
            if document.get("kind") == machineconfig.KUBE_CA_KIND:
                document.setdefault("acceptedCAs", []).append(ca_pem.decode())
                return
        _v1alpha1(documents)["cluster"].setdefault("acceptedCAs", []).append({"crt": pki.b64(ca_pem)})
    return edit_config(data, edit)


def swap_kubernetes_ca(data: bytes, new_ca: pki.CertKey, keep_accepted: list[bytes]) -> bytes:
    """Issuing Kubernetes CA := new (key on control planes only), accepted := keep_accepted."""
    def edit(documents):
        v1alpha1 = _v1alpha1(documents)
        controlplane = v1alpha1["machine"]["type"] != "worker"
        for document in documents:
            if document.get("kind") == machineconfig.KUBE_CA_KIND:
                document.pop("issuingCA", None)
                document.pop("acceptedCAs", None)
                if controlplane:
                    document["issuingCA"] = {"cert": new_ca.cert_pem.decode(), "key": new_ca.key_pem.decode()}
                # A worker has no issuing CA here: the new CA goes first in its accepted list.
                accepted = [pem.decode() for pem in keep_accepted]
                if not controlplane:
                    accepted.insert(0, new_ca.cert_pem.decode())
                if accepted:
                    document["acceptedCAs"] = accepted
                return
        cluster = v1alpha1["cluster"]
        cluster["ca"] = {"crt": pki.b64(new_ca.cert_pem), "key": pki.b64(new_ca.key_pem) if controlplane else ""}
        cluster.pop("acceptedCAs", None)
        if keep_accepted:
            cluster["acceptedCAs"] = [{"crt": pki.b64(pem)} for pem in keep_accepted]
    return edit_config(data, edit)
