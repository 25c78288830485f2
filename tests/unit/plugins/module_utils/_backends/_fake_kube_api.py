"""A tiny HTTPS Kubernetes API for unit tests: real TLS, real requests from the collection, recorded.

Answers like kube-apiserver for the few paths the collection uses: GET /api/v1/nodes, and GET and
PATCH of apps/v1 daemonsets, deployments and statefulsets. Client certificates pass the TLS layer
when any known CA issued them; each request is then authenticated against `authenticated_cas`
only (401 otherwise), as kube-apiserver's x509 authenticator does after a CA is dropped.
"""

import base64
import copy
import http.server
import json
import os
import ssl
import tempfile
import threading
import urllib.parse

import yaml

from ansible_collections.talosops.pki.plugins.module_utils import _pki

PLURALS = {"daemonsets": "DaemonSet", "deployments": "Deployment", "statefulsets": "StatefulSet"}


def node(name, address, ready="True", reason="KubeletReady", message="kubelet is posting ready status"):
    return {"metadata": {"name": name}, "status": {
        "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
        "conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": message,
                        "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}


def workload(kind, namespace, name, annotations=None):
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}, "annotations": dict(annotations or {})},
                                  "spec": {"containers": [{"name": name, "image": "registry.k8s.io/%s:v1" % name}]}}}}


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}


class FakeKubeAPI:
    """`with FakeKubeAPI(serving_ca, [ca, ...]) as api:` api.url, api.requests, api.nodes, api.workloads."""

    def __init__(self, serving_ca, client_cas, authenticated_cas=None):
        self.serving = _pki.issue_server_certificate(serving_ca, "kube-apiserver", ip_addresses=("127.0.0.1",))
        self.serving_ca_pem = serving_ca.crt
        self.client_cas = list(client_cas)
        self.authenticated_cas = list(authenticated_cas if authenticated_cas is not None else client_cas)
        self.nodes = []
        self.workloads = {}  # (plural, namespace, name) -> object
        self.requests = []
        self._server = None
        self._thread = None
        self._folder = None

    @property
    def url(self):
        return "https://127.0.0.1:%d" % self._server.server_address[1]

    def add_workload(self, plural, namespace, name, annotations=None):
        self.workloads[(plural, namespace, name)] = workload(PLURALS[plural], namespace, name, annotations)

    def __enter__(self):
        self._folder = tempfile.mkdtemp()
        crt, key = os.path.join(self._folder, "tls.crt"), os.path.join(self._folder, "tls.key")
        with open(crt, "wb") as handle:
            handle.write(self.serving.crt)
        with open(key, "wb") as handle:
            handle.write(self.serving.key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(crt, key)
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(cadata=b"".join(ca.crt for ca in self.client_cas).decode())
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args):
                pass

            def do_GET(self):  # noqa: N802  (http.server's naming)
                fake.handle(self, "GET")

            def do_PATCH(self):  # noqa: N802
                fake.handle(self, "PATCH")

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc):
        self._server.shutdown()
        self._server.server_close()
        for name in os.listdir(self._folder):
            os.unlink(os.path.join(self._folder, name))
        os.rmdir(self._folder)

    def kubeconfig(self, path, client, ca_pem=None, server=None):
        """Write a kubeconfig for `client` (CertAndKey) trusting `ca_pem` (default: the serving CA)."""
        def b64(data):
            return base64.b64encode(data).decode()
        document = {"apiVersion": "v1", "kind": "Config", "current-context": "admin@fake",
                    "clusters": [{"name": "fake", "cluster": {"server": server or self.url,
                                                              "certificate-authority-data": b64(ca_pem or self.serving_ca_pem)}}],
                    "users": [{"name": "admin@fake", "user": {"client-certificate-data": b64(client.crt),
                                                              "client-key-data": b64(client.key)}}],
                    "contexts": [{"name": "admin@fake", "context": {"cluster": "fake", "user": "admin@fake"}}]}
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(document, handle)
        return str(path)

    # -- request handling -------------------------------------------------------------------

    def handle(self, request, method):
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        parsed = urllib.parse.urlsplit(request.path)
        self.requests.append({"method": method, "path": parsed.path, "query": urllib.parse.parse_qs(parsed.query),
                              "content_type": request.headers.get("Content-Type"), "body": json.loads(body) if body else None})
        peer = request.connection.getpeercert(binary_form=True)
        if not peer or not any(_pki.is_issued_by(_der_to_pem(peer), ca.crt) for ca in self.authenticated_cas):
            return self._answer(request, 401, status(401, "Unauthorized", "Unauthorized"))
        parts = parsed.path.strip("/").split("/")
        if method == "GET" and parsed.path == "/api/v1/nodes":
            return self._answer(request, 200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": self.nodes})
        if len(parts) == 7 and parts[:4] == ["apis", "apps", "v1", "namespaces"] and parts[5] in PLURALS:
            key = (parts[5], parts[4], parts[6])
            if key not in self.workloads:
                return self._answer(request, 404, status(404, "NotFound", '%s.apps "%s" not found' % (parts[5], parts[6])))
            if method == "GET":
                return self._answer(request, 200, self.workloads[key])
            patched = copy.deepcopy(self.workloads[key])
            annotations = json.loads(body)["spec"]["template"]["metadata"]["annotations"]
            patched["spec"]["template"]["metadata"].setdefault("annotations", {}).update(annotations)
            if "All" not in urllib.parse.parse_qs(parsed.query).get("dryRun", []):
                self.workloads[key] = patched
            return self._answer(request, 200, patched)
        return self._answer(request, 404, status(404, "NotFound", "the server could not find the requested resource"))

    @staticmethod
    def _answer(request, code, document):
        payload = json.dumps(document).encode()
        request.send_response(code)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)


def _der_to_pem(der):
    body = base64.b64encode(der).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return ("-----BEGIN CERTIFICATE-----\n%s\n-----END CERTIFICATE-----\n" % "\n".join(lines)).encode()
