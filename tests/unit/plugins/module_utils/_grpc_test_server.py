"""A small Talos-shaped gRPC server for the client's unit tests, over real mutual TLS.

The certificates follow Talos (TALOS-FACTS.md §3, §4): an Ed25519 CA with O=talos and both
EKUs, an Ed25519 server leaf with the node IP as SAN and EKU ServerAuth, Ed25519 client
leaves with the role as O and EKU exactly [ClientAuth]. Leaves carry AuthorityKeyIdentifier
so a trust bundle holding two CAs with the same subject (old and new, mid-rotation) still
picks the right issuer.

Tests register one coroutine per gRPC method path; each receives the request message and
the grpclib server stream, and returns the reply (unary) or a list of replies (stream).
Every request and its metadata are recorded for the test to inspect.
"""

import asyncio
import datetime
import ipaddress
import select
import selectors
import socket
import ssl
import tempfile
import threading
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpclib.const import Cardinality, Handler
from grpclib.server import Server

from ansible_collections.talosops.pki.plugins.module_utils import _talos_api_pb as pb

NOW = datetime.datetime.now(datetime.timezone.utc)
HOUR = datetime.timedelta(hours=1)


class KeyPair(NamedTuple):
    """PEM certificate and key, plus the objects for signing more certificates."""

    crt: bytes
    key: bytes
    certificate: x509.Certificate
    private_key: object


def _pem_key(private_key):
    return private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())


def _signature_hash(private_key):
    # Ed25519 signs without a separate digest; ECDSA needs one.
    return None if isinstance(private_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def make_ca(organization="talos", key_type="ed25519", not_before=None, not_after=None):
    """A self-signed CA shaped like Talos' OS CA."""
    private_key = ed25519.Ed25519PrivateKey.generate() if key_type == "ed25519" else ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])
    builder = (x509.CertificateBuilder()
               .subject_name(name).issuer_name(name)
               .public_key(private_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before or NOW - HOUR)
               .not_valid_after(not_after or NOW + 24 * HOUR)
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                              critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(private_key.public_key()), critical=False))
    certificate = builder.sign(private_key, _signature_hash(private_key))
    return KeyPair(certificate.public_bytes(serialization.Encoding.PEM), _pem_key(private_key), certificate, private_key)


def _make_leaf(ca, subject, usage, sans=(), not_before=None, not_after=None):
    private_key = ed25519.Ed25519PrivateKey.generate()
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(ca.certificate.subject)
               .public_key(private_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before or NOW - HOUR)
               .not_valid_after(not_after or NOW + 24 * HOUR)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key()),
                              critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    certificate = builder.sign(ca.private_key, _signature_hash(ca.private_key))
    return KeyPair(certificate.public_bytes(serialization.Encoding.PEM), _pem_key(private_key), certificate, private_key)


def make_server_cert(ca, addresses=("127.0.0.1",), **validity):
    """An apid-style server certificate: node addresses as IP SANs, EKU ServerAuth."""
    sans = [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node.example")])
    return _make_leaf(ca, subject, ExtendedKeyUsageOID.SERVER_AUTH, sans, **validity)


def make_client_cert(ca, roles=("os:admin",), **validity):
    """A talosconfig-style client certificate: no CN, O = roles, EKU exactly ClientAuth."""
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, role) for role in roles])
    return _make_leaf(ca, subject, ExtendedKeyUsageOID.CLIENT_AUTH, **validity)


def talos_key_label(key_pem):
    """Relabel a PKCS#8 Ed25519 key the way Talos writes it."""
    return key_pem.replace(b"-----BEGIN PRIVATE KEY-----", b"-----BEGIN ED25519 PRIVATE KEY-----").replace(
        b"-----END PRIVATE KEY-----", b"-----END ED25519 PRIVATE KEY-----")


def server_ssl_context(server_pair, client_ca_pems, max_tls=None):
    """Server side of apid's mutual TLS: client certificates required and checked."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if max_tls is not None:
        context.maximum_version = max_tls
    context.set_alpn_protocols(["h2"])
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=b"".join(client_ca_pems).decode())
    with tempfile.TemporaryDirectory() as folder:
        crt_path, key_path = folder + "/crt", folder + "/key"
        with open(crt_path, "wb") as handle:
            handle.write(server_pair.crt)
        with open(key_path, "wb") as handle:
            handle.write(server_pair.key)
        context.load_cert_chain(crt_path, key_path)
    return context


class Received(NamedTuple):
    """One request as the server saw it."""

    path: str
    request: object
    metadata: dict


class FakeTalos:
    """grpclib handlers for the Talos methods in _talos_api_pb.METHODS, scripted per test."""

    def __init__(self):
        self.behaviours = {}
        self.received = []

    def on(self, method, behaviour):
        """Script `method` (e.g. "Version" or "/machine.MachineService/Version") with an async callable."""
        self.behaviours[self._path(method)] = behaviour

    def calls(self, method):
        """Requests received for `method`, oldest first."""
        path = self._path(method)
        return [entry for entry in self.received if entry.path == path]

    @staticmethod
    def _path(method):
        if method.startswith("/"):
            return method
        matches = [path for path in pb.METHODS if path.rsplit("/", 1)[1] == method]
        assert len(matches) == 1, method
        return matches[0]

    def __mapping__(self):
        mapping = {}
        for path, (request_name, reply_name, streaming) in pb.METHODS.items():
            cardinality = Cardinality.UNARY_STREAM if streaming else Cardinality.UNARY_UNARY
            mapping[path] = Handler(self._handler(path, streaming), cardinality,
                                    pb.message_class(request_name), pb.message_class(reply_name))
        return mapping

    def _handler(self, path, streaming):
        async def handle(stream):
            request = await stream.recv_message()
            metadata = dict(stream.metadata.items())
            self.received.append(Received(path, request, metadata))
            behaviour = self.behaviours.get(path)
            if behaviour is None:
                from grpclib.const import Status  # pylint: disable=import-outside-toplevel
                from grpclib.exceptions import GRPCError  # pylint: disable=import-outside-toplevel
                raise GRPCError(Status.UNIMPLEMENTED, "not scripted in this test")
            reply = await behaviour(request, stream)
            if streaming:
                for message in reply:
                    await stream.send_message(message)
            else:
                await stream.send_message(reply)
        return handle


class RunningServer:
    """The fake behind a TLS front on 127.0.0.1, with an ephemeral (or given) port.

    asyncio's TLS server drops the alert it should send when it refuses a client
    certificate (the connection is closed with the alert still in its buffer), so a client
    would only see a reset. apid (Go) does send the alert: the TLS front here terminates
    TLS on blocking sockets in threads, which send it too, and forwards the plaintext
    HTTP/2 to the grpclib server.
    """

    def __init__(self, fake, context, port=0):
        self.fake = fake
        self.context = context
        self.requested_port = port
        self.port = None
        self.handshakes = []
        self._server = None
        self._backend_port = None
        self._listener = None
        self._stopping = threading.Event()
        self._threads = []
        self._sockets = []

    async def __aenter__(self):
        self._server = Server([self.fake])
        await self._server.start("127.0.0.1", 0)
        self._backend_port = self._server._server.sockets[0].getsockname()[1]  # pylint: disable=protected-access
        self._listener = socket.create_server(("127.0.0.1", self.requested_port))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._start_thread(self._accept_loop)
        return self

    async def __aexit__(self, *exc_info):
        self._stopping.set()
        for thread in self._threads:
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 5)
        self._listener.close()
        for sock in self._sockets:
            sock.close()
        self._server.close()
        await asyncio.wait_for(self._server.wait_closed(), 5)

    def _start_thread(self, target, *args):
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                raw, _address = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._sockets.append(raw)
            self._start_thread(self._serve_connection, raw)

    def _serve_connection(self, raw):
        raw.settimeout(5)
        try:
            tls = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.handshakes.append(getattr(exc, "reason", None) or repr(exc))
            raw.close()
            return
        self.handshakes.append("ok")
        self._sockets.append(tls)
        backend = socket.create_connection(("127.0.0.1", self._backend_port))
        self._sockets.append(backend)
        try:
            self._pump(tls, backend)
        except OSError:
            pass
        finally:
            backend.close()
            tls.close()

    def _pump(self, tls, backend):
        """Copy bytes both ways on one thread (an SSL object must not be used by two threads)."""
        tls.setblocking(False)
        backend.setblocking(False)
        selector = selectors.DefaultSelector()
        selector.register(tls, selectors.EVENT_READ)
        selector.register(backend, selectors.EVENT_READ)
        while not self._stopping.is_set():
            for key, _events in selector.select(timeout=0.05):
                if key.fileobj is tls:
                    chunks = []
                    try:
                        chunks.append(tls.recv(65536))
                        while tls.pending():
                            chunks.append(tls.recv(65536))
                    except ssl.SSLWantReadError:
                        pass
                    if chunks and not chunks[0]:
                        return
                    _send_all(backend, b"".join(chunks))
                else:
                    data = backend.recv(65536)
                    if not data:
                        return
                    _send_all(tls, data)


def _send_all(sock, data):
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            select.select([], [sock], [], 0.05)
            continue
        view = view[sent:]
