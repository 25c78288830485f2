"""The simulated kube-apiserver (talos_sim.kubernetes) against real clients.

The clients are the ones the collection and its users run: the kubernetes Python client
and kubectl (the gcloud dispatcher, which picks kubectl 1.27 … 1.33 from /version). TLS
verification stays on everywhere. The server runs on its own asyncio loop in a background
thread, as inside the simulated cluster, behind a fake view this file controls.

Both CAs have the subject Talos gives every Kubernetes CA (O=kubernetes), and leaves carry
an AuthorityKeyIdentifier as Go's x509 writes it: OpenSSL-based clients need it to pick
the right issuer among same-named CAs.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import http.client
import ipaddress
import itertools
import json
import os
import socket
import ssl
import subprocess
import tempfile
import threading
from dataclasses import dataclass

import kubernetes.client
import kubernetes.config
import pytest
import urllib3
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes.client.rest import ApiException

from talos_sim.kubernetes import KubeAPIServer, human_duration, render_kubeconfig

UNAUTHORIZED = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
_HOSTS = (f"127.0.99.{number}" for number in itertools.count(10))


def fresh_host() -> str:
    """A loopback address no other test of this module listens on."""
    return next(_HOSTS)


# ---------------------------------------------------------------------------------------
# PKI, as Talos makes it (TALOS-FACTS §3)


@dataclass(frozen=True)
class Pair:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:  # SEC1 "EC PRIVATE KEY", the label Talos writes
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def new_kubernetes_ca() -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kubernetes")])
    start = _now() - datetime.timedelta(minutes=5)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(hours=87600))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier(os.urandom(20)), critical=False)
            .sign(key, hashes.SHA256()))
    return Pair(cert, key)


def issue(ca: Pair, *, common_name: str | None = None, organizations=(), ips=(), server=False, client=False) -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    if common_name:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    ca_key_id = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    start = _now() - datetime.timedelta(minutes=5)
    builder = (x509.CertificateBuilder().subject_name(x509.Name(attributes)).issuer_name(ca.cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + datetime.timedelta(hours=24))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id), critical=False))
    if ips:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]), critical=False)
    return Pair(builder.sign(ca.key, hashes.SHA256()), key)


# ---------------------------------------------------------------------------------------
# The fake view and the running server


class FakeView:
    """What the cluster hands the API server; tests change it and call refresh_tls()."""

    def __init__(self, host: str, client_cas: bytes, serving: Pair, nodes: list):
        self.host = host
        self.client_cas = client_cas
        self.serving = serving
        self.nodes = nodes
        self.up = True

    def apiserver_client_cas(self, host):
        assert host == self.host
        return self.client_cas

    def apiserver_serving_certificate(self, host):
        assert host == self.host
        return self.serving.cert_pem, self.serving.key_pem

    def kubernetes_nodes(self):
        return [dict(node) for node in self.nodes]

    def is_up(self, host):
        return self.up


@pytest.fixture(scope="module")
def loop():
    """The cluster's loop: a background thread drives it."""
    event_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=event_loop.run_forever, name="sim-loop", daemon=True)
    thread.start()
    yield event_loop
    event_loop.call_soon_threadsafe(event_loop.stop)
    thread.join()
    event_loop.close()


def on_loop(event_loop, coroutine):
    return asyncio.run_coroutine_threadsafe(coroutine, event_loop).result(timeout=60)


@dataclass
class Sim:
    host: str
    ca_a: Pair
    ca_b: Pair
    admin_a: Pair
    admin_b: Pair
    view: FakeView
    server: KubeAPIServer
    workdir: str

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.server.port}"

    def serve_from(self, ca: Pair) -> Pair:
        """Give the view a serving certificate issued by `ca` (what a swap does)."""
        self.view.serving = issue(ca, common_name="kube-apiserver", ips=[self.host, "127.0.0.1"], server=True)
        return self.view.serving

    def kubeconfig(self, ca_bundle: bytes, client: Pair | None, name: str) -> str:
        path = os.path.join(self.workdir, name)
        if client is None:
            data = yaml.safe_load(render_kubeconfig(self.url, ca_bundle, b"x", b"x"))
            data["users"][0]["user"] = {}
            content = yaml.safe_dump(data).encode()
        else:
            content = render_kubeconfig(self.url, ca_bundle, client.cert_pem, client.key_pem)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
            handle.write(content)
        return path

    def tls_context(self, ca_bundle: bytes, client: Pair | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=ca_bundle.decode())
        if client is not None:
            with tempfile.TemporaryDirectory() as directory:
                crt, key = os.path.join(directory, "c"), os.path.join(directory, "k")
                for path, data in ((crt, client.cert_pem), (key, client.key_pem)):
                    with open(path, "wb") as handle:
                        handle.write(data)
                context.load_cert_chain(crt, key)
        return context

    def https(self, ca_bundle: bytes, client: Pair | None = None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.server.port, timeout=30,
                                           context=self.tls_context(ca_bundle, client))

    def kubectl(self, kubeconfig: str, *args: str) -> subprocess.CompletedProcess:
        # A private HOME and cache dir: kubectl's discovery cache must not hide requests.
        home = os.path.join(self.workdir, "home")
        os.makedirs(home, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home}
        return subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "--cache-dir", os.path.join(home, "cache"),
                               *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=120,
                              check=False)


def request_json(connection: http.client.HTTPConnection, path: str, headers=None, method="GET"):
    connection.request(method, path, headers=headers or {})
    response = connection.getresponse()
    body = response.read()
    return response.status, response.getheader("Content-Type"), json.loads(body) if body.startswith(b"{") else body


def python_client(kubeconfig: str) -> kubernetes.client.ApiClient:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    configuration.retries = False  # surface the first TLS/connection error as is
    return kubernetes.client.ApiClient(configuration)


def failure_text(error) -> str:
    """The kubernetes client (>= 35) wraps TLS failures as ApiException(status=0) with the SSL error as reason."""
    return "%s %s" % (error, getattr(error, "reason", "") or "")


def ready_status(node) -> str:
    return next(condition.status for condition in node.status.conditions if condition.type == "Ready")


@pytest.fixture
def sim(loop, tmp_path):
    host = fresh_host()
    ca_a, ca_b = new_kubernetes_ca(), new_kubernetes_ca()
    now = _now()
    nodes = [
        {"name": "cp-1", "address": host, "role": "control-plane", "ready": True, "ready_reason": "KubeletReady",
         "kubelet_version": "v1.33.0", "created": (now - datetime.timedelta(days=3)).isoformat()},
        {"name": "cp-2", "address": "127.0.98.2", "role": "control-plane", "ready": True,
         "ready_reason": "KubeletReady", "kubelet_version": "v1.33.0",
         "created": (now - datetime.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")},
        {"name": "worker-1", "address": "127.0.98.3", "role": "worker", "ready": False,
         "ready_reason": "KubeletNotReady", "kubelet_version": "v1.33.0",
         "created": (now - datetime.timedelta(days=10)).isoformat()},
    ]
    serving = issue(ca_a, common_name="kube-apiserver", ips=[host, "127.0.0.1"], server=True)
    view = FakeView(host, ca_a.cert_pem, serving, nodes)
    server = KubeAPIServer(host, 0, view)
    on_loop(loop, server.start())
    simulation = Sim(host, ca_a, ca_b,
                     issue(ca_a, common_name="admin", organizations=["system:masters"], client=True),
                     issue(ca_b, common_name="admin", organizations=["system:masters"], client=True),
                     view, server, str(tmp_path))
    yield simulation
    on_loop(loop, server.stop())


def refresh(sim: Sim) -> None:
    # From the test thread, not the loop's: the cluster may call it from any thread.
    sim.server.refresh_tls()


# ---------------------------------------------------------------------------------------
# Real clients


def test_python_client_lists_nodes_and_reads_version(sim):
    with python_client(sim.kubeconfig(sim.ca_a.cert_pem, sim.admin_a, "admin-a")) as api:
        nodes = kubernetes.client.CoreV1Api(api).list_node().items
        version = kubernetes.client.VersionApi(api).get_code()
        single = kubernetes.client.CoreV1Api(api).read_node("worker-1")
        with pytest.raises(ApiException) as missing:
            kubernetes.client.CoreV1Api(api).read_node("nope")

    assert [node.metadata.name for node in nodes] == ["cp-1", "cp-2", "worker-1"]
    assert {node.metadata.name: ready_status(node) for node in nodes} == {
        "cp-1": "True", "cp-2": "True", "worker-1": "False"}
    reasons = {node.metadata.name: next(c.reason for c in node.status.conditions if c.type == "Ready") for node in nodes}
    assert reasons["worker-1"] == "KubeletNotReady" and reasons["cp-1"] == "KubeletReady"
    control_planes = {node.metadata.name for node in nodes
                      if "node-role.kubernetes.io/control-plane" in node.metadata.labels}
    assert control_planes == {"cp-1", "cp-2"}
    assert [a.address for a in nodes[0].status.addresses if a.type == "InternalIP"] == [sim.host]
    assert {node.status.node_info.kubelet_version for node in nodes} == {"v1.33.0"}
    assert (_now() - nodes[0].metadata.creation_timestamp) > datetime.timedelta(days=2, hours=23)
    assert single.metadata.name == "worker-1" and ready_status(single) == "False"
    assert missing.value.status == 404
    assert json.loads(missing.value.body)["reason"] == "NotFound"
    assert json.loads(missing.value.body)["message"] == 'nodes "nope" not found'
    assert (version.git_version, version.major, version.minor) == ("v1.33.0", "1", "33")


def test_kubectl_get_nodes_and_version(sim):
    kubeconfig = sim.kubeconfig(sim.ca_a.cert_pem, sim.admin_a, "admin-a")
    sim.server.request_log.clear()

    listing = sim.kubectl(kubeconfig, "get", "nodes")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    rows = {fields[0]: fields[1:] for fields in (line.split() for line in lines[1:])}
    assert rows == {"cp-1": ["Ready", "control-plane", "3d", "v1.33.0"],
                    "cp-2": ["Ready", "control-plane", "3d", "v1.33.0"],
                    "worker-1": ["NotReady", "<none>", "10d", "v1.33.0"]}

    kubectl_requests = [entry for entry in sim.server.request_log if "kubectl" in entry["user_agent"]]
    for entry in kubectl_requests:  # shown with -s; the report lists them
        print("kubectl request:", entry["method"], entry["target"], "| Accept:", entry["accept"],
              "| UA:", entry["user_agent"], "|", entry["status"])
    listed = [entry for entry in kubectl_requests if entry["target"].startswith("/api/v1/nodes")]
    assert listed and "as=Table" in listed[-1]["accept"] and listed[-1]["status"] == 200

    wide = sim.kubectl(kubeconfig, "get", "nodes", "-o", "wide")
    assert wide.returncode == 0, wide.stderr
    header = wide.stdout.splitlines()[0].split()
    assert header[:7] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP", "EXTERNAL-IP"]
    wide_rows = {line.split()[0]: line.split() for line in wide.stdout.splitlines()[1:]}
    assert wide_rows["cp-1"][5] == sim.host and wide_rows["worker-1"][6] == "<none>"

    selected = sim.kubectl(kubeconfig, "get", "nodes", "-l", "!node-role.kubernetes.io/control-plane", "-o", "name")
    assert selected.returncode == 0, selected.stderr
    assert selected.stdout.split() == ["node/worker-1"]

    missing = sim.kubectl(kubeconfig, "get", "node", "nope")
    assert missing.returncode != 0
    assert 'nodes "nope" not found' in missing.stderr

    version = sim.kubectl(kubeconfig, "version", "-o", "json")
    assert version.returncode == 0, version.stderr
    assert json.loads(version.stdout)["serverVersion"]["gitVersion"] == "v1.33.0"


@pytest.mark.parametrize(("server_version", "discovery"), [("v1.27.16", "legacy"), ("v1.30.5", "aggregated")])
def test_older_kubectl_minors_chosen_by_the_dispatcher(sim, server_version, discovery):
    # The dispatcher runs the kubectl minor of the server: 1.27 asks for the v2beta1
    # aggregated discovery we do not serve and falls back to /api/v1; 1.30 takes v2.
    for node in sim.view.nodes:
        node["kubelet_version"] = server_version
    sim.server.request_log.clear()
    listing = sim.kubectl(sim.kubeconfig(sim.ca_a.cert_pem, sim.admin_a, "admin-a"), "get", "nodes", "--no-headers")
    assert listing.returncode == 0, listing.stderr
    assert {line.split()[0]: line.split()[1] for line in listing.stdout.splitlines()} == {
        "cp-1": "Ready", "cp-2": "Ready", "worker-1": "NotReady"}
    minor = server_version.rsplit(".", 1)[0]
    agents = {entry["user_agent"].split(" ")[0] for entry in sim.server.request_log}
    assert any(agent.startswith("kubectl/" + minor + ".") for agent in agents), agents
    legacy_requested = any(entry["target"].startswith("/api/v1?") for entry in sim.server.request_log)
    assert legacy_requested == (discovery == "legacy")


# ---------------------------------------------------------------------------------------
# Client authentication


def test_request_without_client_certificate_is_unauthorized(sim):
    status, _content_type, body = request_json(sim.https(sim.ca_a.cert_pem), "/api/v1/nodes")
    assert (status, body) == (401, UNAUTHORIZED)
    status, _content_type, body = request_json(sim.https(sim.ca_a.cert_pem), "/healthz")
    assert (status, body) == (401, UNAUTHORIZED)  # anonymous auth is off

    sim.server.request_log.clear()
    denied = sim.kubectl(sim.kubeconfig(sim.ca_a.cert_pem, None, "anonymous"), "get", "nodes")
    assert denied.returncode != 0
    # kubectl answers a 401 to a credential-less kubeconfig by asking for a username.
    assert "Please enter Username" in denied.stdout
    assert {entry["status"] for entry in sim.server.request_log} == {401}


def test_client_ca_unknown_to_the_server_is_refused_until_trusted_and_refreshed(sim):
    # A CA this server was never told about fails the handshake with a TLS alert (the one
    # place the simulator differs from kube-apiserver's 401, see the module docstring).
    kubeconfig_b = sim.kubeconfig(sim.ca_a.cert_pem, sim.admin_b, "admin-b")
    with python_client(kubeconfig_b) as api:
        with pytest.raises(ApiException) as refused:
            kubernetes.client.CoreV1Api(api).list_node()
    assert refused.value.status == 0 and "TLSV1_ALERT_UNKNOWN_CA" in failure_text(refused.value)
    refused_by_kubectl = sim.kubectl(kubeconfig_b, "get", "nodes")
    assert refused_by_kubectl.returncode != 0
    assert "remote error: tls: unknown certificate authority" in refused_by_kubectl.stderr
    port_before = sim.server.port

    sim.view.client_cas = sim.ca_a.cert_pem + sim.ca_b.cert_pem  # B becomes an accepted CA
    refresh(sim)

    assert sim.server.port == port_before  # same listener, no restart
    with python_client(kubeconfig_b) as api:
        assert len(kubernetes.client.CoreV1Api(api).list_node().items) == 3
    accepted = sim.kubectl(kubeconfig_b, "get", "nodes", "-o", "name")
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.split() == ["node/cp-1", "node/cp-2", "node/worker-1"]


def test_dropped_client_ca_gets_401_on_new_and_established_connections(sim):
    sim.view.client_cas = sim.ca_a.cert_pem + sim.ca_b.cert_pem
    refresh(sim)
    established = sim.https(sim.ca_a.cert_pem, sim.admin_b)
    assert request_json(established, "/api/v1/nodes")[0] == 200

    sim.view.client_cas = sim.ca_a.cert_pem  # the rotation drops B again
    refresh(sim)

    socket_before = established.sock
    assert request_json(established, "/api/v1/nodes")[::2] == (401, UNAUTHORIZED)
    assert established.sock is socket_before  # same TLS connection, authenticated per request
    assert request_json(sim.https(sim.ca_a.cert_pem, sim.admin_b), "/version")[::2] == (401, UNAUTHORIZED)
    denied = sim.kubectl(sim.kubeconfig(sim.ca_a.cert_pem, sim.admin_b, "admin-b"), "get", "nodes")
    assert denied.returncode != 0
    # kubectl 1.27-1.33 word the 401 differently: "(Unauthorized)" or "(the server has asked for ... credentials)".
    assert "You must be logged in to the server" in denied.stderr
    assert request_json(sim.https(sim.ca_a.cert_pem, sim.admin_a), "/api/v1/nodes")[0] == 200


def test_handshake_cas_turn_the_unknown_ca_alert_into_401(sim):
    # The optional view hook lets a CA through the handshake without trusting it.
    sim.view.apiserver_handshake_cas = lambda host: sim.ca_b.cert_pem
    sim.server.refresh_tls()
    connection = sim.https(sim.ca_a.cert_pem, sim.admin_b)
    assert request_json(connection, "/api/v1/nodes")[::2] == (401, UNAUTHORIZED)
    assert request_json(sim.https(sim.ca_a.cert_pem, sim.admin_a), "/api/v1/nodes")[0] == 200


def test_non_admin_user_reads_discovery_but_not_nodes(sim):
    viewer = issue(sim.ca_a, common_name="bob", organizations=["developers"], client=True)
    connection = sim.https(sim.ca_a.cert_pem, viewer)
    assert request_json(connection, "/version")[0] == 200
    status, _content_type, body = request_json(connection, "/api/v1/nodes")
    assert status == 403
    assert body["reason"] == "Forbidden"
    assert body["message"] == ('nodes is forbidden: User "bob" cannot list resource "nodes" in API group "" '
                               'at the cluster scope')
    no_common_name = issue(sim.ca_a, organizations=["system:masters"], client=True)
    assert request_json(sim.https(sim.ca_a.cert_pem, no_common_name), "/version")[::2] == (401, UNAUTHORIZED)


# ---------------------------------------------------------------------------------------
# Serving certificate rotation


def test_established_connection_survives_refresh_and_new_ones_see_the_new_certificate(sim):
    old_serving = sim.view.serving
    established = sim.https(sim.ca_a.cert_pem, sim.admin_a)
    assert request_json(established, "/api/v1/nodes")[0] == 200
    socket_before = established.sock
    local_address = socket_before.getsockname()

    new_serving = sim.serve_from(sim.ca_b)  # the swap: serving cert from B, both CAs trusted
    sim.view.client_cas = sim.ca_b.cert_pem + sim.ca_a.cert_pem
    refresh(sim)

    status, _content_type, body = request_json(established, "/api/v1/nodes")
    assert status == 200 and len(body["items"]) == 3
    assert established.sock is socket_before and established.sock.getsockname() == local_address
    assert established.sock.getpeercert(binary_form=True) == old_serving.cert.public_bytes(serialization.Encoding.DER)

    with pytest.raises(ssl.SSLCertVerificationError):
        request_json(sim.https(sim.ca_a.cert_pem, sim.admin_a), "/version")
    fresh = sim.https(sim.ca_a.cert_pem + sim.ca_b.cert_pem, sim.admin_a)
    assert request_json(fresh, "/version")[0] == 200
    assert fresh.sock.getpeercert(binary_form=True) == new_serving.cert.public_bytes(serialization.Encoding.DER)


def test_client_needs_the_serving_issuer_in_its_kubeconfig(sim):
    sim.serve_from(sim.ca_b)
    sim.view.client_cas = sim.ca_b.cert_pem + sim.ca_a.cert_pem
    refresh(sim)

    old_only = sim.kubeconfig(sim.ca_a.cert_pem, sim.admin_a, "old-ca-only")
    with python_client(old_only) as api:
        with pytest.raises(ApiException) as refused:
            kubernetes.client.VersionApi(api).get_code()
    assert refused.value.status == 0 and "CERTIFICATE_VERIFY_FAILED" in failure_text(refused.value)
    refused_by_kubectl = sim.kubectl(old_only, "get", "nodes")
    assert refused_by_kubectl.returncode != 0
    assert "x509: certificate signed by unknown authority" in refused_by_kubectl.stderr

    # Both orders: the two CAs share their subject (O=kubernetes), so order must not matter.
    for name, bundle in (("old-new", sim.ca_a.cert_pem + sim.ca_b.cert_pem),
                         ("new-old", sim.ca_b.cert_pem + sim.ca_a.cert_pem)):
        kubeconfig = sim.kubeconfig(bundle, sim.admin_a, name)
        with python_client(kubeconfig) as api:
            assert kubernetes.client.VersionApi(api).get_code().git_version == "v1.33.0"
        accepted = sim.kubectl(kubeconfig, "get", "nodes", "-o", "name")
        assert accepted.returncode == 0, accepted.stderr
        assert len(accepted.stdout.split()) == 3


# ---------------------------------------------------------------------------------------
# Node down


def connection_refused(sim: Sim) -> bool:
    try:
        socket.create_connection((sim.host, sim.server.port), timeout=30).close()
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:  # accepted in the moment before the server saw the node down
        return False
    return False


def eventually(predicate, what: str) -> None:
    # The server follows is_up() by polling it; wait for that, with a generous bound.
    for _attempt in range(400):
        if predicate():
            return
        threading.Event().wait(0.05)
    raise AssertionError("never happened: " + what)


def test_node_down_refuses_new_connections_and_closes_established_ones(sim):
    established = sim.https(sim.ca_a.cert_pem, sim.admin_a)
    assert request_json(established, "/healthz")[2] == b"ok"
    kubeconfig = sim.kubeconfig(sim.ca_a.cert_pem, sim.admin_a, "admin-a")

    sim.view.up = False
    eventually(lambda: connection_refused(sim), "connections refused while the node is down")
    with pytest.raises((ConnectionError, ssl.SSLError, http.client.RemoteDisconnected)):
        request_json(established, "/healthz")
    with python_client(kubeconfig) as api:
        with pytest.raises(urllib3.exceptions.NewConnectionError) as refused:
            kubernetes.client.VersionApi(api).get_code()
    assert "Connection refused" in str(refused.value)
    down = sim.kubectl(kubeconfig, "get", "nodes")
    assert down.returncode != 0
    assert "connection refused" in down.stderr

    sim.view.up = True
    eventually(lambda: not connection_refused(sim), "listening again once the node is up")
    assert request_json(sim.https(sim.ca_a.cert_pem, sim.admin_a), "/healthz")[2] == b"ok"
    assert sim.kubectl(kubeconfig, "get", "nodes", "-o", "name").returncode == 0


def test_connection_accepted_as_the_node_goes_down_is_reset(sim, loop):
    # Between the node going down and the next poll of is_up(), an accepted connection is
    # reset before any TLS byte. A server that polls once (at start) shows that moment.
    slow = KubeAPIServer(sim.host, 0, sim.view)
    slow.node_poll_seconds = 3600
    on_loop(loop, slow.start())
    try:
        sim.view.up = False
        context = sim.tls_context(sim.ca_a.cert_pem, sim.admin_a)
        with pytest.raises((ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError)):
            with socket.create_connection((sim.host, slow.port), timeout=30) as raw:
                context.wrap_socket(raw, server_hostname=sim.host)
    finally:
        on_loop(loop, slow.stop())


def test_silent_kubelet_makes_every_condition_unknown(sim):
    sim.view.nodes[2].update(ready_reason="NodeStatusUnknown", ready_message="Kubelet stopped posting node status.")
    sim.view.nodes[1].update(ready=False, ready_reason="KubeletNotReady", ready_message="kubelet is not running")
    with python_client(sim.kubeconfig(sim.ca_a.cert_pem, sim.admin_a, "admin-a")) as api:
        nodes = {node.metadata.name: node for node in kubernetes.client.CoreV1Api(api).list_node().items}
    assert {c.status for c in nodes["worker-1"].status.conditions} == {"Unknown"}
    assert next(c.message for c in nodes["cp-2"].status.conditions if c.type == "Ready") == "kubelet is not running"
    assert ready_status(nodes["cp-2"]) == "False"
    listing = sim.kubectl(sim.kubeconfig(sim.ca_a.cert_pem, sim.admin_a, "admin-a"), "get", "nodes", "--no-headers")
    assert listing.returncode == 0, listing.stderr
    assert {line.split()[0]: line.split()[1] for line in listing.stdout.splitlines()} == {
        "cp-1": "Ready", "cp-2": "NotReady", "worker-1": "NotReady"}


# ---------------------------------------------------------------------------------------
# HTTP surface


def test_discovery_answers_aggregated_or_legacy_as_asked(sim):
    connection = sim.https(sim.ca_a.cert_pem, sim.admin_a)
    aggregated = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    status, content_type, body = request_json(connection, "/api", {"Accept": aggregated})
    assert status == 200
    assert content_type == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    resources = body["items"][0]["versions"][0]["resources"]
    assert [(r["resource"], r["scope"], r["responseKind"]["kind"]) for r in resources] == [("nodes", "Cluster", "Node")]
    status, content_type, body = request_json(connection, "/apis", {"Accept": aggregated})
    assert (status, body["kind"], body["items"]) == (200, "APIGroupDiscoveryList", [])

    status, content_type, body = request_json(connection, "/api", {"Accept": "application/json"})
    assert (content_type, body["kind"], body["versions"]) == ("application/json", "APIVersions", ["v1"])
    assert request_json(connection, "/apis")[2] == {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
    resource_list = request_json(connection, "/api/v1")[2]
    assert [(r["name"], r["namespaced"], r["kind"]) for r in resource_list["resources"]] == [("nodes", False, "Node")]


def test_node_table_selectors_and_errors(sim):
    connection = sim.https(sim.ca_a.cert_pem, sim.admin_a)
    table_accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    status, _content_type, table = request_json(connection, "/api/v1/nodes/cp-2", {"Accept": table_accept})
    assert (status, table["kind"], table["apiVersion"]) == (200, "Table", "meta.k8s.io/v1")
    assert [c["name"] for c in table["columnDefinitions"][:5]] == ["Name", "Status", "Roles", "Age", "Version"]
    assert table["rows"][0]["cells"][:3] == ["cp-2", "Ready", "control-plane"]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"

    def names(query):
        status, _content_type, body = request_json(connection, "/api/v1/nodes?" + query)
        assert status == 200, body
        return [item["metadata"]["name"] for item in body["items"]]

    assert names("labelSelector=node-role.kubernetes.io/control-plane") == ["cp-1", "cp-2"]
    assert names("labelSelector=kubernetes.io/hostname%20in%20(cp-1,worker-1)") == ["cp-1", "worker-1"]
    assert names("labelSelector=kubernetes.io/hostname!=cp-1") == ["cp-2", "worker-1"]
    assert names("fieldSelector=metadata.name%3Dworker-1") == ["worker-1"]
    status, _content_type, body = request_json(connection, "/api/v1/nodes?fieldSelector=status.phase%3DRunning")
    assert (status, body["reason"]) == (400, "BadRequest")

    status, _content_type, body = request_json(connection, "/apis/apps/v1/deployments")
    assert (status, body["reason"], body["message"]) == (404, "NotFound", "the server could not find the requested resource")
    assert request_json(connection, "/api/v1/nodes", method="DELETE")[0] == 405
    assert request_json(connection, "/api/v1/nodes?watch=true")[0] == 405
    status, _content_type, body = request_json(connection, "/api/v1/nodes", {"Accept": "application/vnd.kubernetes.protobuf"})
    assert (status, body["reason"]) == (406, "NotAcceptable")
    connection.request("HEAD", "/version")
    head = connection.getresponse()
    assert head.status == 200 and head.read() == b"" and int(head.getheader("Content-Length")) > 0
    assert request_json(connection, "/version")[2]["gitVersion"] == "v1.33.0"  # still the same connection


def test_malformed_and_oversized_requests_are_refused(sim):
    context = sim.tls_context(sim.ca_a.cert_pem, sim.admin_a)

    def exchange(payload: bytes) -> bytes:
        with socket.create_connection((sim.host, sim.server.port), timeout=30) as raw:
            with context.wrap_socket(raw, server_hostname=sim.host) as tls:
                tls.sendall(payload)
                received = b""
                while chunk := tls.recv(65536):  # the server closes after refusing
                    received += chunk
                return received

    assert exchange(b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    huge = b"GET /version HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * (70 * 1024) + b"\r\n\r\n"
    assert exchange(huge).startswith(b"HTTP/1.1 431 ")
    too_long_body = b"POST /api/v1/nodes HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (2 * 1024 * 1024)
    assert exchange(too_long_body).startswith(b"HTTP/1.1 413 ")
    pipelined = exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /version HTTP/1.1\r\nHost: x\r\n"
                         b"Connection: close\r\n\r\n")
    assert pipelined.count(b"HTTP/1.1 200 OK") == 2 and b'"gitVersion":"v1.33.0"' in pipelined


def test_concurrent_clients(sim):
    results = []

    def worker():
        connection = sim.https(sim.ca_a.cert_pem, sim.admin_a)
        results.extend(request_json(connection, "/api/v1/nodes")[0] for _request in range(5))
        connection.close()

    threads = [threading.Thread(target=worker) for _client in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 80


def test_version_follows_the_local_kubelet_unless_given(sim):
    sim.view.nodes[0]["kubelet_version"] = "v1.31.4"
    info = request_json(sim.https(sim.ca_a.cert_pem, sim.admin_a), "/version")[2]
    assert (info["gitVersion"], info["major"], info["minor"]) == ("v1.31.4", "1", "31")
    assert "emulationMinor" not in info
    pinned = KubeAPIServer(sim.host, 0, sim.view, kubernetes_version="v1.33.2")
    assert pinned.kubernetes_version == "v1.33.2"


# ---------------------------------------------------------------------------------------
# Helpers the cluster uses


def test_render_kubeconfig_is_a_standard_kubeconfig():
    ca = new_kubernetes_ca()
    client = issue(ca, common_name="admin", organizations=["system:masters"], client=True)
    document = yaml.safe_load(render_kubeconfig("https://127.0.99.1:6443", ca.cert_pem, client.cert_pem,
                                                client.key_pem))
    assert document["current-context"] == "admin@talos-sim"
    context = document["contexts"][0]
    assert context == {"name": "admin@talos-sim",
                       "context": {"cluster": "talos-sim", "namespace": "default", "user": "admin@talos-sim"}}
    cluster = document["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.99.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == ca.cert_pem
    user = document["users"][0]["user"]
    assert base64.b64decode(user["client-certificate-data"]) == client.cert_pem
    assert base64.b64decode(user["client-key-data"]).startswith(b"-----BEGIN EC PRIVATE KEY-----")


@pytest.mark.parametrize(("seconds", "expected"), [
    (-5, "<invalid>"), (59, "59s"), (119, "119s"), (125, "2m5s"), (600, "10m"), (7200, "120m"),
    (3 * 3600 + 60, "3h1m"), (30 * 3600, "30h"), (3 * 86400, "3d"), (3 * 86400 + 7200, "3d2h"),
    (30 * 86400, "30d"), (3 * 365 * 86400 + 86400, "3y1d"), (9 * 365 * 86400, "9y"),
])
def test_age_is_printed_like_kube_apiserver(seconds, expected):
    assert human_duration(datetime.timedelta(seconds=seconds)) == expected
