"""A small Kubernetes API server for the simulated Talos control planes.

Each simulated control-plane node runs one :class:`KubeAPIServer` (port 6443 in the
cluster). It serves what a CA rotation needs from kube-apiserver and answers the way
kube-apiserver answers for those paths, so that the collection, kubectl (1.27 … 1.33)
and the kubernetes Python client can be pointed at it unchanged:

* ``/version``, ``/healthz``, ``/livez``, ``/readyz``;
* discovery: ``/api``, ``/apis`` (aggregated discovery ``apidiscovery.k8s.io/v2`` when the
  client asks for it, legacy ``APIVersions``/``APIGroupList`` otherwise), ``/api/v1``, and
  ``/apis/{group}`` / ``/apis/{group}/{version}`` of the groups whose lists are served (``_API_GROUPS``:
  APIServices, webhook configurations, Talos' ServiceAccounts once the cluster serves that CRD);
* ``/api/v1/nodes`` and ``/api/v1/nodes/{name}``, as objects or, when the client sends
  ``as=Table`` in ``Accept`` (kubectl get), as server-side printed ``meta.k8s.io/v1`` Tables
  with the columns kube-apiserver prints (NAME STATUS ROLES AGE VERSION + wide columns);
  ``labelSelector`` and ``fieldSelector`` (``metadata.name``, ``spec.unschedulable``) work;
* the cluster-wide lists a consumer report reads (``_OBJECT_LISTS``: pods, APIServices, validating and
  mutating webhook configurations, Talos' ``talos.dev/v1alpha1`` ServiceAccounts when the cluster serves that
  CRD), one Secret (``/api/v1/namespaces/{ns}/secrets/{name}``), and one apps/v1 workload (GET, and
  the PATCH of ``kubectl rollout restart``, ``dryRun=All`` honoured);
* every other path: a 404 ``Status`` like kube-apiserver's not-found handler.

Everything else it needs comes from the cluster through ``view`` (see ``KubeAPIServer``).

Design decisions
----------------

Client authentication (x509, anonymous disabled).
    kube-apiserver asks for a client certificate without letting the TLS layer reject
    it; its x509 authenticator then verifies the certificate on *every request* against
    the *current* client-CA bundle, and an unverifiable certificate, or none, gives
    ``401 Unauthorized``. Python's ``ssl`` cannot ask for a certificate without verifying
    it (no verify callback), so authentication is split in two layers:

    1. the TLS layer (``CERT_OPTIONAL``) trusts a *superset*: every CA the view ever
       returned from ``apiserver_client_cas(host)`` on this server, plus the CAs of the
       optional view method ``apiserver_handshake_cas(host)`` (see ``KubeAPIServer``);
    2. each request is then authenticated against the CAs of the *last* ``refresh_tls()``
       only (issuer signature, validity, ClientAuth usage on leaf and CA, non-empty CN),
       exactly like kube-apiserver's per-request check.

    Hence: a certificate from a CA that was trusted and is no longer (the case that matters
    after a rotation drops the old CA) gets the real ``401``, also on a connection opened
    while it was still trusted. A certificate from a CA this server has never been told
    about fails the TLS handshake with the alert ``unknown_ca`` (kubectl: "remote error:
    tls: unknown certificate authority") instead of ``401``: the one place where the
    simulator is stricter than kube-apiserver. Both are "refused"; code that must tell
    them apart should treat a TLS alert after a completed TCP connect as "not
    authenticated", which is correct against both. The cluster avoids the difference for
    every CA it knows of by listing them in ``apiserver_handshake_cas``.

    Same-named CAs: every Talos Kubernetes CA has the subject ``O=kubernetes``. OpenSSL
    (this server's TLS layer, and Python clients) picks an issuer among same-named CAs by
    the leaf's AuthorityKeyIdentifier only and does not try the others, so leaves must
    carry an AKI equal to their CA's SubjectKeyIdentifier, as Go's x509 writes them.
    Without it, a valid certificate fails with "certificate signature failure" as soon
    as old and new CA are trusted together. The per-request check tries every same-named
    CA, as Go does.

Dynamic TLS.
    ``refresh_tls()`` builds a fresh ``ssl.SSLContext`` (serving certificate + trust
    superset) and swaps one reference. The listening context has an ``sni_callback``
    (OpenSSL runs it for every ClientHello, with or without SNI) that points the new
    connection at the current context, so new handshakes see the new certificate and
    trust while established connections keep theirs: kube-apiserver's dynamic serving
    certificates behave the same way. Verification of the client certificate uses the
    swapped context's trust store (OpenSSL reads it from the SSL's current SSL_CTX);
    the verify *mode* stays the listening context's, so both are ``CERT_OPTIONAL``.
    TLS session tickets are disabled so that no resumed session can skip a handshake
    against the current state. The TLS records are driven through ``ssl.MemoryBIO``
    (``_TLSStream``) rather than asyncio's TLS transport, because asyncio closes the
    socket without sending the alert of a refused handshake: clients would see a bare EOF,
    as from a dead server, instead of the TLS error a trust problem gives.

Node down.
    ``view.is_up(host)`` is followed every 50 ms: while it is false the listening socket
    is closed, so clients get "connection refused" as from a dead machine (not a TLS
    error that would look like a trust problem, and not a reset, which client-go retries
    for about 10 s), and established connections are aborted. A connection accepted in
    the moment between the node going down and the next poll is reset before any TLS
    byte; a request arriving on an established connection then is not answered either. Nodes whose ``ready_reason`` is ``NodeStatusUnknown`` get every
    condition ``Unknown``, as the node lifecycle controller writes when a kubelet stops
    posting (kubectl prints NotReady for both False and Unknown).

HTTP.
    HTTP/1.1 only (ALPN ``http/1.1``; kubectl and client-go fall back from h2), keep-alive,
    any number of concurrent connections, bounded request line/headers (64 KiB) and body
    (1 MiB), idle connections closed after 5 minutes.

Deviations from kube-apiserver, on purpose: read-only (``GET``/``HEAD``; writes answer
405) except TokenRequest and the pod-template annotation patch of a workload, no watch (``?watch=true``
answers 405), no ``limit``/``continue`` paging (everything
in one page), JSON only (no protobuf/YAML: 406 if JSON is not acceptable), no OpenAPI,
no bearer tokens, authorisation is "``system:masters`` may do everything, other
authenticated users may read discovery/version/health only" (RBAC's default bootstrap
policy for those paths), client certificates must be issued directly by a trusted CA
(no intermediates), the unknown-CA handshake failure described above, the lists of ``_OBJECT_LISTS`` announced
with the verb ``list`` only and answered as lists, never as server-side Tables (kubectl prints them itself), Talos'
namespaced ServiceAccounts listed cluster-wide only, and pods and the apps/v1 workloads served without being
advertised in discovery (a client that resolves resources through discovery, as kubectl does, does not find them;
the collection asks for the paths).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import email.utils
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import urllib.parse
import uuid
from collections import deque

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_LOG = logging.getLogger(__name__)

DEFAULT_KUBERNETES_VERSION = "v1.33.0"

# Request bounds: kube-apiserver (Go net/http) allows 1 MiB of headers; we only serve
# reads, so 64 KiB of request line + headers and 1 MiB of body are plenty.
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_COUNT = 100
MAX_BODY_BYTES = 1024 * 1024
HANDSHAKE_TIMEOUT_SECONDS = 10.0
IDLE_TIMEOUT_SECONDS = 300.0
REQUEST_LOG_SIZE = 2000

_JSON = "application/json"
_AGGREGATED_DISCOVERY_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
_TOKEN_REQUEST_PATH = re.compile(r"/api/v1/namespaces/([^/]+)/serviceaccounts/([^/]+)/token")
# Cluster-wide lists (GET, all namespaces) of the objects that hold or trust a rotated CA or key, as kube-apiserver serves
# them: path -> (resource as "plural.group", list kind, apiVersion). The objects come from the view's optional
# ``kubernetes_objects(resource)``, which answers None for a resource the cluster does not serve (a CRD not installed).
_OBJECT_LISTS = {
    "/api/v1/pods": ("pods", "PodList", "v1"),
    "/apis/apiregistration.k8s.io/v1/apiservices": ("apiservices.apiregistration.k8s.io", "APIServiceList", "apiregistration.k8s.io/v1"),
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations": (
        "validatingwebhookconfigurations.admissionregistration.k8s.io", "ValidatingWebhookConfigurationList",
        "admissionregistration.k8s.io/v1"),
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations": (
        "mutatingwebhookconfigurations.admissionregistration.k8s.io", "MutatingWebhookConfigurationList",
        "admissionregistration.k8s.io/v1"),
    # Talos' "Talos API access from Kubernetes" CRD (machine.features.kubernetesTalosAPIAccess).
    "/apis/talos.dev/v1alpha1/serviceaccounts": ("serviceaccounts.talos.dev", "ServiceAccountList", "talos.dev/v1alpha1"),
}
# The API groups besides the core one whose lists above are served, announced in discovery as kube-apiserver announces
# them (/apis, /apis/{group}, /apis/{group}/{version}): group -> (version, resources). A resource is announced only while
# the cluster serves it (the view's ``kubernetes_objects`` answers a list, not None), a group only with one such resource:
# the talos.dev group exists once Talos' CRD does. Verbs are those served here: list, cluster-wide.
_API_GROUPS = {
    "admissionregistration.k8s.io": ("v1", (
        {"name": "mutatingwebhookconfigurations", "singularName": "mutatingwebhookconfiguration", "namespaced": False,
         "kind": "MutatingWebhookConfiguration", "categories": ["api-extensions"]},
        {"name": "validatingwebhookconfigurations", "singularName": "validatingwebhookconfiguration", "namespaced": False,
         "kind": "ValidatingWebhookConfiguration", "categories": ["api-extensions"]},
    )),
    "apiregistration.k8s.io": ("v1", (
        {"name": "apiservices", "singularName": "apiservice", "namespaced": False, "kind": "APIService",
         "categories": ["api-extensions"]},
    )),
    # Talos' CRD is namespaced; only its cluster-wide list (kubectl get -A) is served here.
    "talos.dev": ("v1alpha1", (
        {"name": "serviceaccounts", "singularName": "serviceaccount", "namespaced": True, "kind": "ServiceAccount"},
    )),
}
_GROUP_DISCOVERY_PATH = re.compile(r"/apis/([^/]+)(?:/([^/]+))?/?")
_SECRET_PATH = re.compile(r"/api/v1/namespaces/([^/]+)/secrets/([^/]+)")
# One workload (GET, and PATCH with a strategic merge patch of the pod template, as `kubectl rollout restart` sends it).
_WORKLOAD_PATH = re.compile(r"/apis/apps/v1/namespaces/([^/]+)/(deployments|daemonsets|statefulsets)/([^/]+)")
_WORKLOAD_KINDS = {"deployments": "Deployment", "daemonsets": "DaemonSet", "statefulsets": "StatefulSet"}
# The service accounts every cluster has (kube-controller-manager creates "default" in each namespace).
_SERVICE_ACCOUNTS = frozenset((namespace, "default")
                              for namespace in ("default", "kube-system", "kube-public", "kube-node-lease"))
_PUBLIC_PATHS = frozenset({  # what RBAC's bootstrap policy lets every authenticated user read
    "/version", "/version/", "/healthz", "/livez", "/readyz",
    "/api", "/api/", "/api/v1", "/api/v1/", "/apis", "/apis/",
})
_HEALTH_CHECKS = ("ping", "log", "etcd", "poststarthook/start-apiserver-admission-initializer")
_NODE_ROLE_LABEL_PREFIX = "node-role.kubernetes.io/"
_CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
_REASON_PHRASES = {
    200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 413: "Request Entity Too Large", 415: "Unsupported Media Type",
    422: "Unprocessable Entity", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported",
}
_STATUS_REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
    405: "MethodNotAllowed", 406: "NotAcceptable", 413: "RequestEntityTooLarge", 415: "UnsupportedMediaType",
    422: "Invalid", 500: "InternalError", 503: "ServiceUnavailable",
}


def render_kubeconfig(server_url: str, ca_bundle_pem: bytes, client_crt_pem: bytes, client_key_pem: bytes,
                      cluster_name: str = "talos-sim", user: str = "admin@talos-sim") -> bytes:
    """A kubeconfig shaped like the one Talos hands out (``talosctl kubeconfig``).

    The ``*-data`` fields are base64 of the PEM bytes, as kubectl and client-go expect;
    the context is named after the user and defaults to the ``default`` namespace.
    """
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": {
            "server": server_url,
            "certificate-authority-data": b64(ca_bundle_pem),
        }}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(client_crt_pem),
            "client-key-data": b64(client_key_pem),
        }}],
        "contexts": [{"name": user, "context": {"cluster": cluster_name, "namespace": "default", "user": user}}],
        "current-context": user,
        "preferences": {},
    }
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False).encode("utf-8")


# ---------------------------------------------------------------------------------------
# Small value types


@dataclasses.dataclass(frozen=True)
class _TLSState:
    """Everything a handshake or an authentication decision reads, swapped as one object."""

    generation: int
    context: ssl.SSLContext
    client_cas: tuple  # of x509.Certificate: the CAs of the last refresh, for per-request checks
    requestheader_cas: tuple = ()  # --requestheader-client-ca-file of the last refresh


@dataclasses.dataclass(frozen=True)
class _User:
    name: str
    groups: tuple

    @property
    def is_admin(self) -> bool:
        return "system:masters" in self.groups


@dataclasses.dataclass
class _Connection:
    number: int
    peer: str
    client_certificate: x509.Certificate | None
    # Per-connection cache of the authentication result, valid for one TLS generation.
    authenticated_generation: int = -1
    user: _User | None = None


@dataclasses.dataclass
class _Request:
    method: str
    target: str
    path: str
    query: dict
    version: str
    headers: dict
    body: bytes

    @property
    def keep_alive(self) -> bool:
        tokens = {token.strip().lower() for token in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


@dataclasses.dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = _JSON
    close: bool = False


class _HTTPError(Exception):
    """A request we refuse before routing it; the connection is closed after the answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class _SelectorError(ValueError):
    pass


# ---------------------------------------------------------------------------------------
# The server


class KubeAPIServer:
    """kube-apiserver emulation for one simulated control plane.

    ``view`` (implemented by the cluster) must offer:

    * ``apiserver_client_cas(host) -> bytes``: PEM bundle of the CAs whose client
      certificates this API server accepts (issuing Kubernetes CA + accepted CAs);
    * ``apiserver_serving_certificate(host) -> (crt_pem, key_pem)``: serving certificate
      (chain allowed) and its key (``EC PRIVATE KEY``, ``PRIVATE KEY``, … all work);
    * ``kubernetes_nodes() -> list[dict]``: ``name``, ``address``, ``role``
      (``"control-plane"``/``"worker"``), ``ready`` (bool), ``ready_reason``,
      ``kubelet_version``, ``created`` (ISO 8601); optional ``ready_message``,
      ``unschedulable`` (bool),
      ``labels`` (dict, added to the standard ones), ``os_image``, ``kernel_version``,
      ``container_runtime_version``;
    * ``is_up(host) -> bool``: False while the node is down.

    Optional: ``apiserver_handshake_cas(host) -> bytes``, extra CAs the TLS layer should
    let through the handshake so that their certificates get kube-apiserver's real
    ``401`` instead of a handshake failure (for instance every Kubernetes CA the cluster
    has seen on any node). It never makes a certificate authenticate: only the CAs of
    ``apiserver_client_cas`` at the last ``refresh_tls()`` do.

    Optional: ``apiserver_service_account(host) -> dict | None``, the service-account
    material of that control plane's KubernetesRoot: ``signing_key_pem`` (the issuer's
    private key, --service-account-signing-key-file), ``verification_key_pems`` (its public
    key first, then the accepted ones: --service-account-key-file), ``issuers`` and
    ``audiences``. Bearer tokens are verified against it and TokenRequest signs with it;
    without it no bearer token authenticates and TokenRequest answers 503.

    ``port`` 0 binds a free port; ``self.port`` holds the bound port after ``start()``.
    ``kubernetes_version`` (e.g. ``"v1.33.0"``) defaults to the ``kubelet_version`` of the
    node whose address is ``host``, else ``DEFAULT_KUBERNETES_VERSION``. kubectl's
    dispatcher picks the kubectl minor from it.

    ``request_log`` keeps the last requests (connection number, method, target, Accept,
    User-Agent, user, status) for tests and debugging.
    """

    node_poll_seconds = 0.05  # how often is_up() is followed to close/reopen the listener

    def __init__(self, host: str, port: int, view, *, kubernetes_version: str | None = None):
        self.host = host
        self.port = port
        self._view = view
        self._kubernetes_version = kubernetes_version
        self._state: _TLSState | None = None
        self._state_lock = threading.Lock()
        self._generations = itertools.count(1)
        # DER fingerprint -> PEM of every CA handed to the TLS layer so far (never shrinks).
        self._handshake_cas: dict[bytes, bytes] = {}
        self._listen_context = self._new_listening_context()
        self._listen_socket: socket.socket | None = None
        self._accept_task: asyncio.Task | None = None
        self._watch_task: asyncio.Task | None = None
        self._connection_tasks: set = set()
        self._transports: set = set()
        self._connection_numbers = itertools.count(1)
        # Node bookkeeping so that resourceVersion and lastTransitionTime behave.
        self._node_lock = threading.Lock()
        self._resource_versions = itertools.count(1000)
        self._node_snapshots: dict = {}  # name -> (view entry JSON, resourceVersion, Ready since, ready)
        self._list_resource_version = "1000"
        self.request_log: deque = deque(maxlen=REQUEST_LOG_SIZE)

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        if self._watch_task is not None:
            raise RuntimeError("KubeAPIServer %s:%s is already started" % (self.host, self.port))
        self.refresh_tls()
        self._open_listener()  # even when down: binding errors surface here, port 0 resolves
        self._watch_task = asyncio.get_running_loop().create_task(self._watch_node())
        _LOG.info("kube-apiserver %s:%d started (Kubernetes %s)", self.host, self.port, self.kubernetes_version)

    async def stop(self) -> None:
        if self._watch_task is None:
            return
        self._watch_task.cancel()
        await asyncio.gather(self._watch_task, return_exceptions=True)
        self._watch_task = None
        await self._close_listener()
        self._abort_connections()
        tasks = list(self._connection_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        _LOG.info("kube-apiserver %s:%d stopped", self.host, self.port)

    def _open_listener(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(128)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listen_socket = listener
        self.port = listener.getsockname()[1]
        self._accept_task = asyncio.get_running_loop().create_task(self._accept_loop(listener))

    async def _close_listener(self) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
            await asyncio.gather(self._accept_task, return_exceptions=True)
            self._accept_task = None
        if self._listen_socket is not None:
            self._listen_socket.close()
            self._listen_socket = None

    def _abort_connections(self) -> None:
        for transport in list(self._transports):
            transport.abort()

    async def _watch_node(self) -> None:
        """Follow view.is_up(): no listener while the node is down, as on a dead machine.

        Clients then get "connection refused" (which kubectl and client-go fail on at once)
        rather than a reset after accept (which client-go retries for ~10 s).
        """
        while True:
            try:
                up = self._is_up()
            except Exception:  # a view mid-change must not kill the watcher: keep the state
                _LOG.debug("is_up(%s) failed", self.host, exc_info=True)
                up = self._listen_socket is not None
            if not up and self._listen_socket is not None:
                await self._close_listener()
                self._abort_connections()
                _LOG.info("kube-apiserver %s:%d: node down, listener closed", self.host, self.port)
            elif up and self._listen_socket is None:
                try:
                    self._open_listener()
                    _LOG.info("kube-apiserver %s:%d: node up, listening again", self.host, self.port)
                except OSError as error:  # the port is taken for a moment: try again next tick
                    _LOG.warning("kube-apiserver %s:%d cannot listen again: %s", self.host, self.port, error)
            await asyncio.sleep(self.node_poll_seconds)

    # -- TLS ------------------------------------------------------------------------

    def refresh_tls(self) -> None:
        """Rebuild serving certificate, handshake trust and authentication CAs from the view.

        Thread-safe; new handshakes use the new state, established connections keep
        their TLS session, and their next request is authenticated against the new CAs.
        """
        client_cas_pem = self._view.apiserver_client_cas(self.host)
        crt_pem, key_pem = self._view.apiserver_serving_certificate(self.host)
        extra_pem = b""
        if hasattr(self._view, "apiserver_handshake_cas"):
            extra_pem = self._view.apiserver_handshake_cas(self.host) or b""
        client_cas = tuple(_load_certificates(client_cas_pem))
        requestheader_cas = ()
        if hasattr(self._view, "apiserver_requestheader_cas"):
            requestheader_cas = tuple(_load_certificates(self._view.apiserver_requestheader_cas(self.host) or b""))
        with self._state_lock:
            # kube-apiserver's TLS layer asks for client certificates from both pools.
            for certificate in client_cas + requestheader_cas + tuple(_load_certificates(extra_pem)):
                fingerprint = certificate.fingerprint(hashes.SHA256())
                self._handshake_cas.setdefault(
                    fingerprint, certificate.public_bytes(serialization.Encoding.PEM))
            context = self._new_serving_context(crt_pem, key_pem, b"".join(self._handshake_cas.values()))
            self._state = _TLSState(generation=next(self._generations), context=context, client_cas=client_cas,
                                    requestheader_cas=requestheader_cas)

    @staticmethod
    def _base_context() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2  # kube-apiserver's default minimum
        context.verify_mode = ssl.CERT_OPTIONAL  # ask for a client certificate, do not require one
        context.set_alpn_protocols(["http/1.1"])
        # No session resumption: every connection must handshake against the current state.
        context.options |= ssl.OP_NO_TICKET
        context.num_tickets = 0
        return context

    def _new_listening_context(self) -> ssl.SSLContext:
        context = self._base_context()
        context.sni_callback = self._select_context
        return context

    def _select_context(self, ssl_object, server_name, listening_context):
        # Runs inside OpenSSL's ClientHello processing for every new connection, SNI or not.
        ssl_object.context = self._state.context
        return None

    def _new_serving_context(self, crt_pem: bytes, key_pem: bytes, trusted_pem: bytes) -> ssl.SSLContext:
        context = self._base_context()
        if trusted_pem:
            context.load_verify_locations(cadata=trusted_pem.decode("ascii"))
        # load_cert_chain only reads files: a private directory that lives for one call.
        directory = tempfile.mkdtemp(prefix="talos-sim-apiserver-")
        try:
            crt_path = os.path.join(directory, "tls.crt")
            key_path = os.path.join(directory, "tls.key")
            for path, data in ((crt_path, crt_pem), (key_path, key_pem)):
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(data)
            context.load_cert_chain(crt_path, key_path)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return context

    # -- connections ------------------------------------------------------------------

    def _is_up(self) -> bool:
        return bool(self._view.is_up(self.host))

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                connection, peer = await loop.sock_accept(listener)
            except asyncio.CancelledError:
                raise
            except OSError as error:  # e.g. EMFILE: keep serving once descriptors free up
                _LOG.warning("kube-apiserver %s:%d accept failed: %s", self.host, self.port, error)
                await asyncio.sleep(0.1)
                continue
            if not self._is_up():  # went down since the last poll of _watch_node
                _reset_and_close(connection)
                continue
            task = loop.create_task(self._serve_socket(connection, "%s:%s" % peer[:2]))
            self._connection_tasks.add(task)
            task.add_done_callback(self._connection_tasks.discard)

    async def _serve_socket(self, connection: socket.socket, peer: str) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport = (await loop.connect_accepted_socket(lambda: protocol, connection))[0]
        except OSError:
            connection.close()
            return
        self._transports.add(transport)
        stream = _TLSStream(reader, asyncio.StreamWriter(transport, protocol, reader, loop), self._listen_context)
        try:
            try:
                await asyncio.wait_for(stream.handshake(), HANDSHAKE_TIMEOUT_SECONDS)
            except (ssl.SSLError, ConnectionError, asyncio.TimeoutError) as error:
                _LOG.info("kube-apiserver %s:%d TLS handshake with %s failed: %s", self.host, self.port, peer, error)
                return
            der = stream.ssl_object.getpeercert(binary_form=True)
            client = _Connection(number=next(self._connection_numbers), peer=peer,
                                 client_certificate=x509.load_der_x509_certificate(der) if der else None)
            await self._serve_requests(stream, client)
        except (ConnectionError, ssl.SSLError) as error:
            _LOG.debug("kube-apiserver %s:%d connection from %s ended: %s", self.host, self.port, peer, error)
        finally:
            self._transports.discard(transport)
            await stream.close()

    async def _serve_requests(self, stream: _TLSStream, client: _Connection) -> None:
        while True:
            try:
                request = await asyncio.wait_for(_read_request(stream), IDLE_TIMEOUT_SECONDS)
            except asyncio.TimeoutError:
                return
            except _HTTPError as error:
                response = _status_response(error.status, error.message)
                response.close = True
                self._log(client, None, response, None)
                await stream.write(_serialize_response(response, head_only=False))
                return
            if request is None:
                return
            if not self._is_up():
                # The node went down: a real node would not answer at all.
                stream.abort()
                return
            try:
                user = self._authenticate(client, request)
                response = self._route(request, user)
            except Exception:  # a bug here must show up as a 500, not a hung client
                _LOG.exception("kube-apiserver %s:%d failed on %s %s", self.host, self.port,
                               request.method, request.target)
                response = _status_response(500, "Internal error occurred: simulator failure")
            if not request.keep_alive:
                response.close = True
            self._log(client, request, response, user)
            await stream.write(_serialize_response(response, head_only=request.method == "HEAD"))
            if response.close:
                return

    def _log(self, client: _Connection, request: _Request | None, response: _Response, user: _User | None):
        entry = {
            "connection": client.number,
            "method": request.method if request else None,
            "target": request.target if request else None,
            "accept": request.headers.get("accept", "") if request else "",
            "user_agent": request.headers.get("user-agent", "") if request else "",
            "user": user.name if user else None,
            "status": response.status,
        }
        self.request_log.append(entry)
        _LOG.debug("kube-apiserver %s:%d %s", self.host, self.port, entry)

    # -- authentication -----------------------------------------------------------------

    def _authenticate(self, client: _Connection, request: _Request | None = None) -> _User | None:
        """kube-apiserver's union authenticator: the request header (front proxy), the client certificate, else the bearer token."""
        state = self._state
        # The request-header authenticator comes first in kube-apiserver's union: a client certificate from the
        # front-proxy bundle with an allowed CN makes the X-Remote-User / X-Remote-Group headers the identity.
        if request is not None:
            proxied = _requestheader_user(client.client_certificate, state.requestheader_cas, request.headers)
            if proxied is not None:
                return proxied
        if client.authenticated_generation != state.generation:
            client.user = _certificate_user(client.client_certificate, state.client_cas)
            client.authenticated_generation = state.generation
        if client.user is not None:
            return client.user
        authorization = request.headers.get("authorization", "")
        scheme, _separator, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return _token_user(token.strip(), self._service_account(), self._legacy_secret_holds)

    def _legacy_secret_holds(self, namespace: str, name: str, token: str) -> bool:
        """The legacy authenticator's lookup: the token Secret still exists and holds this token."""
        lookup = getattr(self._view, "kubernetes_secrets", None)
        for item in lookup() if lookup else []:
            metadata = item.get("metadata") or {}
            if (metadata.get("namespace"), metadata.get("name")) == (namespace, name):
                data = (item.get("data") or {}).get("token", "")
                return base64.b64decode(data).decode("ascii", "replace") == token
        return False

    def _service_account(self) -> dict | None:
        lookup = getattr(self._view, "apiserver_service_account", None)
        return lookup(self.host) if lookup is not None else None

    # -- routing --------------------------------------------------------------------------

    def _route(self, request: _Request, user: _User | None) -> _Response:
        if user is None:
            return _status_response(401, "Unauthorized")
        path = request.path
        if path == _SELF_SUBJECT_REVIEWS:
            # Allowed to every authenticated user (system:basic-user): who am I.
            if request.method != "POST":
                return _status_response(405, "the server does not allow this method on the requested resource")
            return _json_response({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                                   "metadata": {"creationTimestamp": None},
                                   "status": {"userInfo": {"username": user.name, "groups": list(user.groups)}}},
                                  status=201)
        node_match = re.fullmatch(r"/api/v1/nodes(?:/([^/]+))?", path)
        known = path in _PUBLIC_PATHS or node_match is not None
        if path == "/api/v1/secrets":
            return self._secrets(request, user)
        secret_match = _SECRET_PATH.fullmatch(path)
        if secret_match is not None:
            return self._secret(request, user, *(urllib.parse.unquote(part) for part in secret_match.groups()))
        if path in _OBJECT_LISTS:
            return self._object_list(request, user, *_OBJECT_LISTS[path])
        workload_match = _WORKLOAD_PATH.fullmatch(path)
        if workload_match is not None:
            return self._workload(request, user, *(urllib.parse.unquote(part) for part in workload_match.groups()))
        token_match = _TOKEN_REQUEST_PATH.fullmatch(path)
        if token_match is not None:
            return self._token_request(request, user, *(urllib.parse.unquote(part) for part in token_match.groups()))
        group_match = _GROUP_DISCOVERY_PATH.fullmatch(path)
        if group_match is not None and group_match.group(1) in self._served_groups():
            # Discovery: readable by every authenticated user (RBAC's system:discovery covers /apis/*).
            return self._group_discovery(request, *group_match.groups())
        if not user.is_admin and path not in _PUBLIC_PATHS:
            return self._forbidden(request, user, node_match)
        if not known:
            return _status_response(404, "the server could not find the requested resource")
        if request.method not in ("GET", "HEAD"):
            return _status_response(405, "the server does not allow this method on the requested resource")
        if path in ("/version", "/version/"):
            return _json_response(self._version_info())
        if path in ("/healthz", "/livez", "/readyz"):
            return self._health(path[1:], request)
        if path in ("/api", "/api/"):
            return self._core_discovery(request)
        if path in ("/apis", "/apis/"):
            return self._groups_discovery(request, self._served_groups())
        if path in ("/api/v1", "/api/v1/"):
            return _json_response(self._core_v1_resources())
        if _query_flag(request.query, "watch"):
            return _status_response(405, "watch is not supported by the simulated API server")
        name = urllib.parse.unquote(node_match.group(1)) if node_match.group(1) else None
        return self._nodes(request, name)

    def _secrets(self, request: _Request, user: _User) -> _Response:
        """GET /api/v1/secrets (all namespaces), fieldSelector `type=`: the Secrets of the view's optional
        ``kubernetes_secrets()`` (a list of Secret objects as dicts), admin only."""
        if not user.is_admin:
            return _status_response(403, 'secrets is forbidden: User %s cannot list resource "secrets" in API group "" at the '
                                    'cluster scope' % json.dumps(user.name), details={"kind": "secrets"})
        if request.method not in ("GET", "HEAD"):
            return _status_response(405, "the server does not allow this method on the requested resource")
        wanted = None
        for requirement in _split_requirements(_query_value(request.query, "fieldSelector") or ""):
            match = re.fullmatch(r"type\s*==?\s*(.*)", requirement)
            if not match:
                return _status_response(400, "field label not supported: %s" % requirement.split("=")[0])
            wanted = match.group(1)
        lookup = getattr(self._view, "kubernetes_secrets", None)
        items = [item for item in (lookup() if lookup else []) if wanted is None or item.get("type") == wanted]
        return _json_response({"kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                               "items": items})

    def _objects(self, resource: str):
        lookup = getattr(self._view, "kubernetes_objects", None)
        return lookup(resource) if lookup is not None else None

    def _object_list(self, request: _Request, user: _User, resource: str, list_kind: str, api_version: str) -> _Response:
        """GET of a cluster-wide list, admin only; 404 for a resource the cluster does not serve (no CRD)."""
        plural, _dot, group = resource.partition(".")
        items = self._objects(resource)
        if items is None:
            return _status_response(404, "the server could not find the requested resource")
        if not user.is_admin:
            return _status_response(403, '%s is forbidden: User %s cannot list resource "%s" in API group "%s" at the '
                                    'cluster scope' % (resource, json.dumps(user.name), plural, group),
                                    details={"group": group, "kind": plural} if group else {"kind": plural})
        if request.method not in ("GET", "HEAD"):
            return _status_response(405, "the server does not allow this method on the requested resource")
        if _query_flag(request.query, "watch"):
            return _status_response(405, "watch is not supported by the simulated API server")
        return _json_response({"kind": list_kind, "apiVersion": api_version, "metadata": {"resourceVersion": "1"},
                               "items": [dict(item, kind=list_kind[:-len("List")], apiVersion=api_version) for item in items]})

    def _workload(self, request: _Request, user: _User, namespace: str, plural: str, name: str) -> _Response:
        """GET or PATCH (strategic merge of spec.template.metadata.annotations; dryRun=All stores nothing) of one workload."""
        resource = "%s.apps" % plural
        if not user.is_admin:
            verb = "patch" if request.method == "PATCH" else "get"
            return _status_response(403, '%s.apps "%s" is forbidden: User %s cannot %s resource "%s" in API group "apps" in '
                                    'the namespace "%s"' % (plural, name, json.dumps(user.name), verb, plural, namespace),
                                    details={"name": name, "group": "apps", "kind": plural})
        items = self._objects(resource) or []
        found = next((item for item in items if (item.get("metadata") or {}).get("namespace") == namespace
                      and (item.get("metadata") or {}).get("name") == name), None)
        if found is None:
            return _status_response(404, '%s.apps "%s" not found' % (plural, name),
                                    details={"name": name, "group": "apps", "kind": plural})
        shown = dict(found, kind=_WORKLOAD_KINDS[plural], apiVersion="apps/v1")
        if request.method in ("GET", "HEAD"):
            return _json_response(shown)
        if request.method != "PATCH":
            return _status_response(405, "the server does not allow this method on the requested resource")
        content_type = (request.headers.get("content-type") or "").split(";")[0].strip()
        if content_type not in ("application/strategic-merge-patch+json", "application/merge-patch+json"):
            return _status_response(415, "the body of the request was in an unknown format - accepted media types include: "
                                    "application/json-patch+json, application/merge-patch+json, "
                                    "application/apply-patch+yaml, application/strategic-merge-patch+json")
        dry_run = _query_value(request.query, "dryRun")
        if dry_run not in (None, "All"):
            return _status_response(400, "Invalid dry run value: %s" % dry_run)
        try:
            patch = json.loads(request.body or b"{}")
            annotations = patch["spec"]["template"]["metadata"]["annotations"]
            if set(patch) != {"spec"} or set(patch["spec"]) != {"template"} or set(patch["spec"]["template"]) != {"metadata"} \
                    or set(patch["spec"]["template"]["metadata"]) != {"annotations"} or not isinstance(annotations, dict):
                raise KeyError("only pod template annotations")
        except (ValueError, KeyError, TypeError):
            # What the simulator applies: the pod template annotations of a rollout restart, nothing else.
            return _status_response(422, "the simulated API server only applies patches of spec.template.metadata.annotations")
        template = ((found.get("spec") or {}).get("template") or {})
        merged = dict((template.get("metadata") or {}).get("annotations") or {})
        merged.update({key: value for key, value in annotations.items() if value is not None})
        for key in [key for key, value in annotations.items() if value is None]:
            merged.pop(key, None)
        updated = dict(found, spec=dict(found.get("spec") or {}, template=dict(
            template, metadata=dict(template.get("metadata") or {}, annotations=merged))))
        if dry_run is None:
            items[items.index(found)] = updated
        return _json_response(dict(updated, kind=_WORKLOAD_KINDS[plural], apiVersion="apps/v1"))

    def _secret(self, request: _Request, user: _User, namespace: str, name: str) -> _Response:
        """GET of one Secret of the view's kubernetes_secrets(), admin only."""
        if not user.is_admin:
            return _status_response(403, 'secrets "%s" is forbidden: User %s cannot get resource "secrets" in API group "" in '
                                    'the namespace "%s"' % (name, json.dumps(user.name), namespace),
                                    details={"name": name, "kind": "secrets"})
        if request.method not in ("GET", "HEAD"):
            return _status_response(405, "the server does not allow this method on the requested resource")
        lookup = getattr(self._view, "kubernetes_secrets", None)
        for item in lookup() if lookup else []:
            metadata = item.get("metadata") or {}
            if (metadata.get("namespace"), metadata.get("name")) == (namespace, name):
                return _json_response(dict(item, kind="Secret", apiVersion="v1"))
        return _status_response(404, 'secrets "%s" not found' % name, details={"name": name, "kind": "secrets"})

    def _token_request(self, request: _Request, user: _User, namespace: str, name: str) -> _Response:
        """TokenRequest (POST .../serviceaccounts/{name}/token): a JWT signed with the signing key."""
        if not user.is_admin:
            return _status_response(403, 'serviceaccounts "%s" is forbidden: User %s cannot create resource '
                                    '"serviceaccounts/token" in API group "" in the namespace "%s"'
                                    % (name, json.dumps(user.name), namespace),
                                    details={"name": name, "kind": "serviceaccounts"})
        if request.method != "POST":
            return _status_response(405, "the server does not allow this method on the requested resource")
        if (namespace, name) not in _SERVICE_ACCOUNTS:
            return _status_response(404, 'serviceaccounts "%s" not found' % name,
                                    details={"name": name, "kind": "serviceaccounts"})
        try:
            body = json.loads(request.body or b"{}")
            spec = body.get("spec") or {}
            expiration = int(spec.get("expirationSeconds") or 3600)
            audiences = list(spec.get("audiences") or [])
        except (ValueError, TypeError, AttributeError):
            return _status_response(400, "the body of the request was in an unknown format")
        if expiration < 600:
            return _status_response(422, 'TokenRequest.authentication.k8s.io "%s" is invalid: spec.expirationSeconds: '
                                    'Invalid value: %d: may not specify a duration less than 10 minutes'
                                    % (name, expiration))
        material = self._service_account()
        if not material or not material.get("signing_key_pem"):
            return _status_response(503, "service account token signing is not configured")
        now = _now()
        expires = now + datetime.timedelta(seconds=expiration)
        claims = {
            "aud": audiences or list(material["audiences"]),
            "exp": int(expires.timestamp()), "iat": int(now.timestamp()), "nbf": int(now.timestamp()),
            "iss": material["issuers"][0], "jti": str(uuid.uuid4()),
            "kubernetes.io": {"namespace": namespace,
                              "serviceaccount": {"name": name, "uid": _service_account_uid(namespace, name)}},
            "sub": "system:serviceaccount:%s:%s" % (namespace, name),
        }
        token = sign_service_account_token(material["signing_key_pem"], claims)
        return _json_response({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
            "spec": {"audiences": claims["aud"], "expirationSeconds": expiration, "boundObjectRef": None},
            "status": {"token": token, "expirationTimestamp": _format_time(expires)},
        }, status=201)

    @staticmethod
    def _forbidden(request: _Request, user: _User, node_match) -> _Response:
        quoted_user = json.dumps(user.name)
        if node_match is None:
            message = "forbidden: User %s cannot %s path %s" % (quoted_user, request.method.lower(), json.dumps(request.path))
            return _status_response(403, message)
        name = node_match.group(1)
        verb = "get" if name else ("watch" if _query_flag(request.query, "watch") else "list")
        if request.method not in ("GET", "HEAD"):
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(request.method, verb)
        target = 'nodes "%s"' % name if name else "nodes"
        message = '%s is forbidden: User %s cannot %s resource "nodes" in API group "" at the cluster scope' % (
            target, quoted_user, verb)
        details = {"kind": "nodes"}
        if name:
            details["name"] = name
        return _status_response(403, message, details=details)

    # -- endpoints ------------------------------------------------------------------------

    @property
    def kubernetes_version(self) -> str:
        if self._kubernetes_version:
            return self._kubernetes_version
        try:
            for node in self._view.kubernetes_nodes():
                if node.get("address") == self.host and node.get("kubelet_version"):
                    return node["kubelet_version"]
        except Exception:  # the view may not be ready before the cluster is; keep the default
            _LOG.debug("kubernetes_nodes() failed while picking the version", exc_info=True)
        return DEFAULT_KUBERNETES_VERSION

    def _version_info(self) -> dict:
        git_version = self.kubernetes_version
        match = re.match(r"v?(\d+)\.(\d+)", git_version)
        major, minor = (match.group(1), match.group(2)) if match else ("1", "33")
        info = {"major": major, "minor": minor}
        if (int(major), int(minor)) >= (1, 33):  # kube-apiserver 1.33 added the emulation fields
            info.update({"emulationMajor": major, "emulationMinor": minor,
                         "minCompatibilityMajor": major, "minCompatibilityMinor": str(int(minor) - 1)})
        info.update({
            "gitVersion": git_version,
            "gitCommit": hashlib.sha1(git_version.encode()).hexdigest(),  # stable placeholder
            "gitTreeState": "clean",
            "buildDate": "2025-04-23T13:00:00Z",
            "goVersion": "go1.24.2",
            "compiler": "gc",
            "platform": "linux/amd64",
        })
        return info

    @staticmethod
    def _health(name: str, request: _Request) -> _Response:
        if "verbose" in request.query:
            lines = ["[+]%s ok" % check for check in _HEALTH_CHECKS]
            text = "\n".join(lines) + "\n%s check passed\n" % name
        else:
            text = "ok"
        return _Response(200, text.encode(), content_type="text/plain; charset=utf-8")

    def _core_discovery(self, request: _Request) -> _Response:
        choice = _negotiate_discovery(request.headers.get("accept"))
        if choice is None:
            return _not_acceptable()
        if choice == "aggregated":
            item = {"metadata": {"creationTimestamp": None},
                    "versions": [{"version": "v1", "resources": [_NODES_AGGREGATED], "freshness": "Current"}]}
            return _aggregated_response([item])
        return _json_response({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": "%s:%d" % (self.host, self.port)}],
        })

    def _served_groups(self) -> dict:
        """group -> (version, its resources the cluster serves now), for the groups with at least one."""
        served = {}
        for group, (version, resources) in _API_GROUPS.items():
            found = tuple(resource for resource in resources if self._objects("%s.%s" % (resource["name"], group)) is not None)
            if found:
                served[group] = (version, found)
        return served

    @staticmethod
    def _groups_discovery(request: _Request, groups: dict) -> _Response:
        """/apis: kube-apiserver's APIGroupList, or the aggregated APIGroupDiscoveryList (apidiscovery.k8s.io/v2)."""
        choice = _negotiate_discovery(request.headers.get("accept"))
        if choice is None:
            return _not_acceptable()
        if choice == "aggregated":
            return _aggregated_response([
                {"metadata": {"name": group, "creationTimestamp": None},
                 "versions": [{"version": version, "resources": [_aggregated_resource(group, version, resource)
                                                                 for resource in resources], "freshness": "Current"}]}
                for group, (version, resources) in sorted(groups.items())])
        return _json_response({"kind": "APIGroupList", "apiVersion": "v1",
                               "groups": [_api_group(group, version) for group, (version, _resources) in sorted(groups.items())]})

    def _group_discovery(self, request: _Request, group: str, version: str | None) -> _Response:
        """/apis/{group} (APIGroup) and /apis/{group}/{version} (APIResourceList) of a served group."""
        if request.method not in ("GET", "HEAD"):
            return _status_response(405, "the server does not allow this method on the requested resource")
        if _negotiate_discovery(request.headers.get("accept")) is None:
            return _not_acceptable()
        served_version, resources = self._served_groups()[group]
        if version is None:
            return _json_response(dict(_api_group(group, served_version), kind="APIGroup", apiVersion="v1"))
        if version != served_version:
            return _status_response(404, "the server could not find the requested resource")
        return _json_response({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "%s/%s" % (group, version),
                               "resources": [_api_resource(group, version, resource) for resource in resources]})

    @staticmethod
    def _core_v1_resources() -> dict:
        return {"kind": "APIResourceList", "groupVersion": "v1", "resources": [{
            "name": "nodes", "singularName": "node", "namespaced": False, "kind": "Node",
            "verbs": ["get", "list"], "shortNames": ["no"],
            "storageVersionHash": base64.b64encode(hashlib.sha256(b"/v1/nodes").digest()[:8]).decode(),
        }]}

    def _nodes(self, request: _Request, name: str | None) -> _Response:
        representation = _negotiate_object(request.headers.get("accept"))
        if representation is None:
            return _not_acceptable()
        try:
            label_selector = _parse_label_selector(_query_value(request.query, "labelSelector"))
            field_selector = _parse_field_selector(_query_value(request.query, "fieldSelector"))
        except _SelectorError as error:
            return _status_response(400, str(error))
        include = _query_value(request.query, "includeObject") or "Metadata"
        if include not in ("None", "Metadata", "Object"):
            return _status_response(400, "includeObject: Unsupported value: %s" % json.dumps(include))
        nodes, list_version = self._render_nodes()
        if name is not None:
            node = next((item for item in nodes if item["metadata"]["name"] == name), None)
            if node is None:
                return _status_response(404, 'nodes "%s" not found' % name, details={"name": name, "kind": "nodes"})
            if representation == "object":
                return _json_response(node)
            return _json_response(_node_table([node], representation, include, {}))
        nodes = [node for node in nodes if label_selector(node["metadata"]["labels"]) and field_selector(node)]
        if representation == "object":
            return _json_response({"kind": "NodeList", "apiVersion": "v1",
                                   "metadata": {"resourceVersion": list_version}, "items": nodes})
        return _json_response(_node_table(nodes, representation, include, {"resourceVersion": list_version}))

    def _render_nodes(self) -> tuple:
        """Node objects from the view, with stable uid/resourceVersion/transition times."""
        now = _now()
        rendered = []
        with self._node_lock:
            for entry in self._view.kubernetes_nodes():
                snapshot = json.dumps(entry, sort_keys=True, default=str)
                known = self._node_snapshots.get(entry["name"])
                if known is None:
                    version = str(next(self._resource_versions))
                    transition = _parse_time(entry.get("created")) or now
                    self._node_snapshots[entry["name"]] = (snapshot, version, transition, bool(entry.get("ready")))
                    self._list_resource_version = version
                elif known[0] != snapshot:
                    version = str(next(self._resource_versions))
                    transition = now if known[3] != bool(entry.get("ready")) else known[2]
                    self._node_snapshots[entry["name"]] = (snapshot, version, transition, bool(entry.get("ready")))
                    self._list_resource_version = version
                version, transition = self._node_snapshots[entry["name"]][1:3]
                rendered.append(_node_object(entry, version, transition, now))
            list_version = self._list_resource_version
        rendered.sort(key=lambda node: node["metadata"]["name"])
        return rendered, list_version


# ---------------------------------------------------------------------------------------
# TLS


class _TLSStream:
    """Server-side TLS over a plain asyncio stream, through ssl.MemoryBIO.

    asyncio's own TLS transport drops the alert OpenSSL writes when it refuses a client
    certificate and closes the socket, so the client would see a bare EOF, as from a dead
    server. Driving the BIOs here sends the alert first: clients report a TLS error
    (kubectl: "remote error: tls: unknown certificate authority"), which tells "not
    trusted" apart from "node down".
    """

    _CHUNK = 65536

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext):
        self._reader = reader
        self._writer = writer
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.ssl_object = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._buffer = bytearray()  # decrypted bytes not consumed yet

    async def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def _receive(self) -> None:
        data = await self._reader.read(self._CHUNK)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()  # OpenSSL then raises SSLEOFError/SSLZeroReturnError

    async def handshake(self) -> None:
        while True:
            try:
                self.ssl_object.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush()
                await self._receive()
                continue
            except ssl.SSLError:
                try:
                    await self._flush()  # the alert that says why
                except (ConnectionError, OSError):
                    pass
                raise
            await self._flush()
            return

    async def _fill(self) -> bool:
        """Decrypt more application data into the buffer; False at the end of the stream."""
        while True:
            try:
                data = self.ssl_object.read(self._CHUNK)
            except ssl.SSLWantReadError:
                await self._flush()  # TLS 1.3 may need to answer, e.g. a KeyUpdate
                await self._receive()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return False
            await self._flush()
            if not data:
                return False
            self._buffer += data
            return True

    async def readuntil(self, separator: bytes, limit: int) -> bytes:
        """Like StreamReader.readuntil, with the same exceptions, within `limit` bytes."""
        searched = 0
        while True:
            index = self._buffer.find(separator, searched)
            if index >= 0 and index + len(separator) <= limit:
                end = index + len(separator)
                chunk = bytes(self._buffer[:end])
                del self._buffer[:end]
                return chunk
            if index >= 0 or len(self._buffer) > limit:
                raise asyncio.LimitOverrunError("separator not found within %d bytes" % limit, len(self._buffer))
            searched = max(0, len(self._buffer) - len(separator) + 1)
            if not await self._fill():
                partial = bytes(self._buffer)
                self._buffer.clear()
                raise asyncio.IncompleteReadError(partial, None)

    async def readexactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            if not await self._fill():
                raise asyncio.IncompleteReadError(bytes(self._buffer), count)
        chunk = bytes(self._buffer[:count])
        del self._buffer[:count]
        return chunk

    async def write(self, data: bytes) -> None:
        self.ssl_object.write(data)  # a MemoryBIO takes everything at once
        await self._flush()

    def abort(self) -> None:
        self._writer.transport.abort()

    async def close(self) -> None:
        transport = self._writer.transport
        if transport.is_closing():
            return
        try:
            self.ssl_object.unwrap()  # queues close_notify; we do not wait for the peer's
        except (ssl.SSLError, ValueError):
            pass
        try:
            await self._flush()
        except (ConnectionError, OSError):
            pass
        transport.close()


# ---------------------------------------------------------------------------------------
# HTTP plumbing


async def _read_request(stream: _TLSStream) -> _Request | None:
    """One request off the stream; None when the client closed the connection cleanly."""
    try:
        head = await stream.readuntil(b"\r\n\r\n", MAX_HEADER_BYTES)
    except asyncio.IncompleteReadError as error:
        if error.partial.strip():
            raise _HTTPError(400, "incomplete request") from None
        return None
    except asyncio.LimitOverrunError:
        raise _HTTPError(431, "request header fields too large") from None
    lines = head.decode("latin-1").split("\r\n")
    while lines and not lines[0]:  # RFC 9112 lets a server skip empty lines before a request
        lines.pop(0)
    parts = lines[0].split(" ") if lines else []
    if len(parts) != 3 or not parts[1].startswith("/"):
        raise _HTTPError(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _HTTPError(505, "HTTP version not supported")
    headers: dict = {}
    header_lines = [line for line in lines[1:] if line]
    if len(header_lines) > MAX_HEADER_COUNT:
        raise _HTTPError(431, "too many header fields")
    for line in header_lines:
        name, separator, value = line.partition(":")
        if not separator or not name or name != name.strip():
            raise _HTTPError(400, "malformed header field")
        key = name.lower()
        value = value.strip()
        headers[key] = "%s, %s" % (headers[key], value) if key in headers else value
    if "transfer-encoding" in headers:
        raise _HTTPError(501, "Transfer-Encoding is not supported; send Content-Length")
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit():
        raise _HTTPError(400, "malformed Content-Length")
    length = int(length_text)
    if length > MAX_BODY_BYTES:
        raise _HTTPError(413, "request entity too large")
    body = await stream.readexactly(length) if length else b""
    split = urllib.parse.urlsplit(target)
    return _Request(method=method, target=target, path=split.path, version=version, headers=headers, body=body,
                    query=urllib.parse.parse_qs(split.query, keep_blank_values=True))


def _serialize_response(response: _Response, head_only: bool) -> bytes:
    # The headers kube-apiserver sends on every API answer (minus priority-and-fairness ones).
    lines = [
        "HTTP/1.1 %d %s" % (response.status, _REASON_PHRASES.get(response.status, "Unknown")),
        "Audit-Id: %s" % uuid.uuid4(),
        "Cache-Control: no-cache, private",
        "Content-Type: %s" % response.content_type,
        "Date: %s" % email.utils.formatdate(usegmt=True),
        "Content-Length: %d" % len(response.body),
    ]
    if response.content_type.startswith("text/"):
        lines.append("X-Content-Type-Options: nosniff")
    if response.close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


def _reset_and_close(connection: socket.socket) -> None:
    # SO_LINGER 0 turns close() into a RST: the client sees "connection reset".
    try:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        connection.close()


def _json_bytes(document) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode("utf-8") + b"\n"


def _json_response(document, status: int = 200) -> _Response:
    return _Response(status, _json_bytes(document))


def _status_response(code: int, message: str, details: dict | None = None) -> _Response:
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
              "reason": _STATUS_REASONS.get(code, "Unknown")}
    if details is not None or code in (403, 404):
        status["details"] = details or {}
    status["code"] = code
    return _json_response(status, status=code)


def _not_acceptable() -> _Response:
    return _status_response(406, "only the following media types are accepted: application/json")


def _api_group(group: str, version: str) -> dict:
    """One group of an APIGroupList (also the body of an APIGroup)."""
    group_version = {"groupVersion": "%s/%s" % (group, version), "version": version}
    return {"name": group, "versions": [group_version], "preferredVersion": dict(group_version)}


def _storage_version_hash(group: str, version: str, kind: str) -> str:
    return base64.b64encode(hashlib.sha256(("%s/%s, Kind=%s" % (group, version, kind)).encode()).digest()[:8]).decode()


def _api_resource(group: str, version: str, resource: dict) -> dict:
    """One resource of an APIResourceList, as kube-apiserver lists it (verbs: those served here)."""
    found = {"name": resource["name"], "singularName": resource["singularName"], "namespaced": resource["namespaced"],
             "kind": resource["kind"], "verbs": ["list"]}
    if resource.get("categories"):
        found["categories"] = list(resource["categories"])
    found["storageVersionHash"] = _storage_version_hash(group, version, resource["kind"])
    return found


def _aggregated_resource(group: str, version: str, resource: dict) -> dict:
    """One resource of aggregated discovery (apidiscovery.k8s.io/v2 APIResourceDiscovery)."""
    found = {"resource": resource["name"], "responseKind": {"group": group, "version": version, "kind": resource["kind"]},
             "scope": "Namespaced" if resource["namespaced"] else "Cluster", "singularResource": resource["singularName"],
             "verbs": ["list"]}
    if resource.get("categories"):
        found["categories"] = list(resource["categories"])
    return found


def _aggregated_response(items: list) -> _Response:
    document = {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {},
                "items": items}
    return _Response(200, _json_bytes(document), content_type=_AGGREGATED_DISCOVERY_CONTENT_TYPE)


def _query_value(query: dict, name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _query_flag(query: dict, name: str) -> bool:
    value = _query_value(query, name)
    return value is not None and value.lower() in ("true", "1", "")


# ---------------------------------------------------------------------------------------
# Content negotiation


def _parse_accept(header: str | None) -> list:
    """Media ranges of an Accept header as (type, params), best first (q, then order)."""
    ranges = []
    for index, item in enumerate((header or "").split(",")):
        pieces = [piece.strip() for piece in item.split(";")]
        if not pieces[0]:
            continue
        params = {}
        for piece in pieces[1:]:
            key, _equals, value = piece.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        try:
            quality = float(params.pop("q", "1"))
        except ValueError:
            quality = 0.0
        if quality > 0:
            ranges.append((-quality, index, pieces[0].lower(), params))
    ranges.sort()
    return [(media_type, params) for _quality, _position, media_type, params in ranges]


def _json_acceptable(media_type: str) -> bool:
    return media_type in (_JSON, "application/*", "*/*")


def _negotiate_discovery(header: str | None) -> str | None:
    """'aggregated', 'legacy' or None (nothing acceptable)."""
    if not header:
        return "legacy"
    for media_type, params in _parse_accept(header):
        if not _json_acceptable(media_type):
            continue
        if "as" not in params:
            return "legacy"
        if (params.get("as") == "APIGroupDiscoveryList" and params.get("g") == "apidiscovery.k8s.io"
                and params.get("v") == "v2"):
            return "aggregated"
    return None


def _negotiate_object(header: str | None) -> str | None:
    """'object', 'v1' / 'v1beta1' (a meta.k8s.io Table of that version) or None."""
    if not header:
        return "object"
    for media_type, params in _parse_accept(header):
        if not _json_acceptable(media_type):
            continue
        if "as" not in params:
            return "object"
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
            return params["v"]
    return None


# ---------------------------------------------------------------------------------------
# Nodes

_NODES_AGGREGATED = {
    "resource": "nodes",
    "responseKind": {"group": "", "version": "v1", "kind": "Node"},
    "scope": "Cluster",
    "singularResource": "node",
    "verbs": ["get", "list"],
    "shortNames": ["no"],
}

_NODE_COLUMNS = [
    {"name": "Name", "type": "string", "format": "name", "priority": 0,
     "description": "Name must be unique within a namespace."},
    {"name": "Status", "type": "string", "format": "", "priority": 0, "description": "The status of the node"},
    {"name": "Roles", "type": "string", "format": "", "priority": 0, "description": "The roles of the node"},
    {"name": "Age", "type": "string", "format": "", "priority": 0,
     "description": "CreationTimestamp is a timestamp representing the server time when this object was created."},
    {"name": "Version", "type": "string", "format": "", "priority": 0,
     "description": "Kubelet Version reported by the node."},
    {"name": "Internal-IP", "type": "string", "format": "", "priority": 1,
     "description": "List of addresses reachable to the node."},
    {"name": "External-IP", "type": "string", "format": "", "priority": 1,
     "description": "List of addresses reachable to the node."},
    {"name": "OS-Image", "type": "string", "format": "", "priority": 1,
     "description": "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."},
    {"name": "Kernel-Version", "type": "string", "format": "", "priority": 1,
     "description": "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."},
    {"name": "Container-Runtime", "type": "string", "format": "", "priority": 1,
     "description": "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."},
]


def _node_object(entry: dict, resource_version: str, transition: datetime.datetime,
                 now: datetime.datetime) -> dict:
    name = entry["name"]
    created = _parse_time(entry.get("created"))
    control_plane = entry.get("role") == "control-plane"
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
    }
    if control_plane:
        labels["node-role.kubernetes.io/control-plane"] = ""
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
    labels.update(entry.get("labels") or {})
    ready = bool(entry.get("ready"))
    reason = entry.get("ready_reason") or ("KubeletReady" if ready else "KubeletNotReady")
    message = entry.get("ready_message") or ("kubelet is posting ready status" if ready
                                             else "node is not ready: %s" % reason)
    # When the kubelet stops posting, the node lifecycle controller sets every condition to
    # Unknown with reason NodeStatusUnknown; kubectl still prints NotReady.
    silent = not ready and reason == "NodeStatusUnknown"
    heartbeat = _format_time(now)
    since = _format_time(created or transition)

    def pressure(kind: str, why: str, text: str) -> dict:
        if silent:
            return {"type": kind, "status": "Unknown", "lastHeartbeatTime": heartbeat,
                    "lastTransitionTime": _format_time(transition), "reason": "NodeStatusUnknown",
                    "message": "Kubelet stopped posting node status."}
        return {"type": kind, "status": "False", "lastHeartbeatTime": heartbeat, "lastTransitionTime": since,
                "reason": why, "message": text}

    conditions = [
        pressure("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        pressure("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        pressure("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        {"type": "Ready", "status": "True" if ready else ("Unknown" if silent else "False"),
         "lastHeartbeatTime": heartbeat, "lastTransitionTime": _format_time(transition), "reason": reason,
         "message": message},
    ]
    spec: dict = {"taints": [_CONTROL_PLANE_TAINT]} if control_plane else {}
    if entry.get("unschedulable"):
        spec["unschedulable"] = True
    identity = uuid.uuid5(uuid.NAMESPACE_URL, "talos-sim-node:%s:%s" % (name, entry.get("created")))
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": str(identity),
            "resourceVersion": resource_version,
            "creationTimestamp": _format_time(created) if created else None,
            "labels": labels,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                            "volumes.kubernetes.io/controller-managed-attach-detach": "true"},
        },
        "spec": spec,
        "status": {
            "capacity": {"cpu": "2", "ephemeral-storage": "10218772Ki", "memory": "4015876Ki", "pods": "110"},
            "allocatable": {"cpu": "1950m", "ephemeral-storage": "9417620364", "memory": "3553028Ki", "pods": "110"},
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": entry["address"]}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": identity.hex,
                "systemUUID": str(identity).upper(),
                "bootID": str(uuid.uuid5(identity, "boot")),
                "kernelVersion": entry.get("kernel_version", "6.12.0-talos"),
                "osImage": entry.get("os_image", "Talos (simulated)"),
                "containerRuntimeVersion": entry.get("container_runtime_version", "containerd://2.0.5"),
                "kubeletVersion": entry.get("kubelet_version", ""),
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


def _node_table(nodes: list, table_version: str, include: str, metadata: dict) -> dict:
    rows = []
    now = _now()
    for node in nodes:
        ready = next((c for c in node["status"]["conditions"] if c["type"] == "Ready"), None)
        status = [] if ready is None else ["Ready" if ready["status"] == "True" else "NotReady"]
        status = status or ["Unknown"]
        if node["spec"].get("unschedulable"):
            status.append("SchedulingDisabled")
        roles = sorted({key[len(_NODE_ROLE_LABEL_PREFIX):] for key in node["metadata"]["labels"]
                        if key.startswith(_NODE_ROLE_LABEL_PREFIX) and len(key) > len(_NODE_ROLE_LABEL_PREFIX)}
                       | ({node["metadata"]["labels"]["kubernetes.io/role"]}
                          if node["metadata"]["labels"].get("kubernetes.io/role") else set()))
        created = _parse_time(node["metadata"]["creationTimestamp"])
        addresses = node["status"]["addresses"]
        info = node["status"]["nodeInfo"]
        row = {"cells": [
            node["metadata"]["name"],
            ",".join(status),
            ",".join(roles) or "<none>",
            human_duration(now - created) if created else "<unknown>",
            info["kubeletVersion"],
            next((a["address"] for a in addresses if a["type"] == "InternalIP"), "<none>"),
            next((a["address"] for a in addresses if a["type"] == "ExternalIP"), "<none>"),
            info["osImage"] or "<unknown>",
            info["kernelVersion"] or "<unknown>",
            info["containerRuntimeVersion"] or "<unknown>",
        ]}
        if include == "Object":
            row["object"] = node
        elif include == "Metadata":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/%s" % table_version,
                             "metadata": node["metadata"]}
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/%s" % table_version, "metadata": metadata,
            "columnDefinitions": _NODE_COLUMNS, "rows": rows}


def human_duration(delta: datetime.timedelta) -> str:
    """k8s.io/apimachinery duration.HumanDuration, which kube-apiserver prints as AGE."""
    seconds = int(delta.total_seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60 * 2:
        return "%ds" % seconds
    minutes = seconds // 60
    if minutes < 10:
        rest = seconds % 60
        return "%dm" % minutes if rest == 0 else "%dm%ds" % (minutes, rest)
    if minutes < 60 * 3:
        return "%dm" % minutes
    hours = seconds // 3600
    if hours < 8:
        rest = minutes % 60
        return "%dh" % hours if rest == 0 else "%dh%dm" % (hours, rest)
    if hours < 48:
        return "%dh" % hours
    if hours < 24 * 8:
        rest = hours % 24
        return "%dd" % (hours // 24) if rest == 0 else "%dd%dh" % (hours // 24, rest)
    if hours < 24 * 365 * 2:
        return "%dd" % (hours // 24)
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        return "%dy" % (hours // 24 // 365) if rest == 0 else "%dy%dd" % (hours // 24 // 365, rest)
    return "%dy" % (hours // 24 // 365)


# ---------------------------------------------------------------------------------------
# Selectors (the subset of k8s.io/apimachinery labels/fields syntax clients send for nodes)

_LABEL_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_LABEL_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"


def _split_requirements(text: str) -> list:
    parts, depth, current = [], 0, ""
    for character in text:
        depth += {"(": 1, ")": -1}.get(character, 0)
        if character == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += character
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def _parse_label_selector(text: str | None):
    """A predicate over a label dict; raises _SelectorError like kube-apiserver's 400."""
    checks = []
    for requirement in _split_requirements(text or ""):
        match = re.fullmatch(r"(%s)\s+(in|notin)\s+\((.*)\)" % _LABEL_KEY, requirement)
        if match:
            key, operator = match.group(1), match.group(3)
            values = {value.strip() for value in match.group(4).split(",") if value.strip()}
            if operator == "in":
                checks.append(lambda labels, k=key, v=values: labels.get(k) in v)
            else:
                checks.append(lambda labels, k=key, v=values: labels.get(k) not in v)
            continue
        match = re.fullmatch(r"(!?)\s*(%s)" % _LABEL_KEY, requirement)
        if match:
            negate, key = match.group(1) == "!", match.group(2)
            checks.append(lambda labels, k=key, n=negate: (k in labels) != n)
            continue
        match = re.fullmatch(r"(%s)\s*(==|=|!=)\s*(%s)" % (_LABEL_KEY, _LABEL_VALUE), requirement)
        if match:
            key, operator, value = match.group(1), match.group(3), match.group(4) or ""
            if operator == "!=":
                checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                checks.append(lambda labels, k=key, v=value: labels.get(k) == v)
            continue
        raise _SelectorError("unable to parse requirement: %s" % json.dumps(requirement))
    return lambda labels: all(check(labels) for check in checks)


def _parse_field_selector(text: str | None):
    fields = {
        "metadata.name": lambda node: node["metadata"]["name"],
        "spec.unschedulable": lambda node: "true" if node["spec"].get("unschedulable") else "false",
    }
    checks = []
    for requirement in _split_requirements(text or ""):
        match = re.fullmatch(r"([^=!]+?)\s*(==|=|!=)\s*(.*)", requirement)
        if not match:
            raise _SelectorError("invalid selector: %s; can't understand %s" % (json.dumps(text), json.dumps(requirement)))
        field, operator, value = match.groups()
        if field not in fields:
            raise _SelectorError('field label not supported: %s' % field)
        getter = fields[field]
        if operator == "!=":
            checks.append(lambda node, g=getter, v=value: g(node) != v)
        else:
            checks.append(lambda node, g=getter, v=value: g(node) == v)
    return lambda node: all(check(node) for check in checks)


# ---------------------------------------------------------------------------------------
# Certificates


def _load_certificates(pem: bytes) -> list:
    if not pem or not pem.strip():
        return []
    return x509.load_pem_x509_certificates(pem)


def _validity(certificate: x509.Certificate) -> tuple:
    # cryptography >= 42 has the *_utc properties; older releases return naive UTC datetimes.
    before = getattr(certificate, "not_valid_before_utc", None)
    after = getattr(certificate, "not_valid_after_utc", None)
    if before is None:
        before = certificate.not_valid_before.replace(tzinfo=datetime.timezone.utc)
        after = certificate.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    return before, after


def _allows_client_auth(certificate: x509.Certificate) -> bool:
    # Go's x509 rule kube-apiserver applies: no EKU extension means "any"; otherwise the
    # certificate (leaf and CA alike) must list ClientAuth or anyExtendedKeyUsage.
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return ExtendedKeyUsageOID.CLIENT_AUTH in usages or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


_SELF_SUBJECT_REVIEWS = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
# Talos' kube-apiserver flags: --requestheader-allowed-names, -username-headers, -group-headers.
REQUESTHEADER_ALLOWED_NAMES = ("front-proxy-client",)
REQUESTHEADER_USERNAME_HEADER = "x-remote-user"
REQUESTHEADER_GROUP_HEADER = "x-remote-group"


def _requestheader_user(certificate: x509.Certificate | None, requestheader_cas: tuple, headers: dict) -> _User | None:
    """kube-apiserver's request-header authenticator: the X-Remote-User of a request whose client certificate comes
    from the front-proxy bundle with an allowed CN, else None (the x509 authenticator is asked next)."""
    username = headers.get(REQUESTHEADER_USERNAME_HEADER, "").strip()
    if not username or not requestheader_cas:
        return None
    proxy = _certificate_user(certificate, requestheader_cas)
    if proxy is None or proxy.name not in REQUESTHEADER_ALLOWED_NAMES:
        return None
    groups = tuple(group.strip() for group in headers.get(REQUESTHEADER_GROUP_HEADER, "").split(",") if group.strip())
    return _User(name=username, groups=groups + ("system:authenticated",))


def _certificate_user(certificate: x509.Certificate | None, trusted_cas: tuple) -> _User | None:
    """kube-apiserver's x509 authenticator: the user of a verified client certificate, else None."""
    if certificate is None:
        return None
    now = _now()
    before, after = _validity(certificate)
    if not before <= now <= after or not _allows_client_auth(certificate):
        return None
    verified = False
    for ca in trusted_cas:
        if ca.subject != certificate.issuer or not _is_ca(ca) or not _allows_client_auth(ca):
            continue
        ca_before, ca_after = _validity(ca)
        if not ca_before <= now <= ca_after:
            continue
        try:
            certificate.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue  # several CAs may share a subject (Talos: O=kubernetes): try them all
        verified = True
        break
    if not verified:
        return None
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names or not names[0].value:
        return None  # CommonNameUserConversion: no CN, no user
    groups = tuple(attribute.value for attribute in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    return _User(name=names[0].value, groups=groups + ("system:authenticated",))


# ---------------------------------------------------------------------------------------
# Service-account tokens (JWS compact, as k8s.io/apiserver/pkg/serviceaccount signs them)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def service_account_key_id(public_key) -> str:
    """The JWT `kid`: base64url SHA-256 of the public key's PKIX DER."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _b64url(hashlib.sha256(der).digest())


def _jws_algorithm(key) -> str:
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "RS256"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and key.curve.name == "secp256r1":
        return "ES256"
    raise ValueError("unsupported service-account key type")


def sign_service_account_token(signing_key_pem: bytes, claims: dict) -> str:
    """A JWT signed RS256 (RSA key) or ES256 (P-256 key), with the kid kube-apiserver writes."""
    key = serialization.load_pem_private_key(signing_key_pem, password=None)
    header = {"alg": _jws_algorithm(key), "kid": service_account_key_id(key.public_key())}
    signing_input = ("%s.%s" % (_b64url(_json_bytes_compact(header)), _b64url(_json_bytes_compact(claims)))).encode()
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return "%s.%s" % (signing_input.decode(), _b64url(signature))


def _json_bytes_compact(document) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def _verify_signature(public_key, algorithm: str, signing_input: bytes, signature: bytes) -> bool:
    try:
        if _jws_algorithm(public_key) != algorithm:
            return False
        if algorithm == "RS256":
            public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            if len(signature) != 64:
                return False
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            public_key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


LEGACY_ISSUER = "kubernetes/serviceaccount"


def _token_user(token: str, material: dict | None, legacy_secret_holds=None) -> _User | None:
    """kube-apiserver's service-account token authenticators: any verification key, then either a bound token (issuer,
    audience, lifetime) or a legacy Secret-based one (issuer kubernetes/serviceaccount, its Secret still holding it)."""
    if not material:
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header = json.loads(_b64url_decode(parts[0]))
        claims = json.loads(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") not in ("RS256", "ES256"):
        return None
    signing_input = ("%s.%s" % (parts[0], parts[1])).encode()
    keys = [serialization.load_pem_public_key(pem) for pem in material.get("verification_key_pems") or ()]
    if not any(_verify_signature(key, header["alg"], signing_input, signature) for key in keys):
        return None
    if claims.get("iss") == LEGACY_ISSUER:
        namespace = claims.get("kubernetes.io/serviceaccount/namespace")
        secret = claims.get("kubernetes.io/serviceaccount/secret.name")
        account = claims.get("kubernetes.io/serviceaccount/service-account.name")
        if not (namespace and secret and account and legacy_secret_holds and legacy_secret_holds(namespace, secret, token)):
            return None
        return _User(name="system:serviceaccount:%s:%s" % (namespace, account),
                     groups=("system:serviceaccounts", "system:serviceaccounts:%s" % namespace, "system:authenticated"))
    if claims.get("iss") not in material["issuers"]:
        return None
    audiences = claims.get("aud")
    audiences = [audiences] if isinstance(audiences, str) else audiences or []
    if not set(audiences) & set(material["audiences"]):
        return None
    now = _now().timestamp()
    leeway = 60  # jwt.DefaultLeeway
    if not isinstance(claims.get("exp"), (int, float)) or now > claims["exp"] + leeway:
        return None
    if isinstance(claims.get("nbf"), (int, float)) and now < claims["nbf"] - leeway:
        return None
    private = claims.get("kubernetes.io")
    subject = claims.get("sub", "")
    match = re.fullmatch(r"system:serviceaccount:([^:]+):([^:]+)", subject) if isinstance(subject, str) else None
    if not isinstance(private, dict) or match is None or private.get("namespace") != match.group(1):
        return None
    namespace = match.group(1)
    return _User(name=subject, groups=("system:serviceaccounts", "system:serviceaccounts:%s" % namespace,
                                       "system:authenticated"))


def legacy_token_secret(signing_key_pem: bytes, namespace: str, name: str, service_account: str = "default") -> dict:
    """A Secret of type kubernetes.io/service-account-token as the legacy token controller wrote them: a JWT without
    expiry, issuer kubernetes/serviceaccount, signed with the service-account key."""
    claims = {"iss": LEGACY_ISSUER, "kubernetes.io/serviceaccount/namespace": namespace,
              "kubernetes.io/serviceaccount/secret.name": name,
              "kubernetes.io/serviceaccount/service-account.name": service_account,
              "kubernetes.io/serviceaccount/service-account.uid": _service_account_uid(namespace, service_account),
              "sub": "system:serviceaccount:%s:%s" % (namespace, service_account)}
    token = sign_service_account_token(signing_key_pem, claims)
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
            "metadata": {"name": name, "namespace": namespace,
                         "annotations": {"kubernetes.io/service-account.name": service_account}},
            "data": {"token": base64.b64encode(token.encode()).decode(), "namespace": base64.b64encode(namespace.encode()).decode()}}


def _service_account_uid(namespace: str, name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "serviceaccount/%s/%s" % (namespace, name)))


# ---------------------------------------------------------------------------------------
# Time


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _parse_time(value) -> datetime.datetime | None:
    if not value:
        return None
    if isinstance(value, datetime.datetime):
        parsed = value
    else:
        text = str(value).strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"  # Python 3.10 fromisoformat does not read "Z"
        parsed = datetime.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.astimezone(datetime.timezone.utc)


def _format_time(value: datetime.datetime) -> str:
    # metav1.Time is RFC 3339 with whole seconds in UTC.
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
