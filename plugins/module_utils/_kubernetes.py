# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""The Kubernetes API over HTTPS (urllib3), with client-certificate or bearer-token credentials.

TLS verification always stays on: the server is checked against the kubeconfig's CA data or
a given CA bundle. The client certificate and key never reach a file: they are loaded into an
SSL context from memory (_files.load_cert_chain), which the connection pool uses, so a task
stopped in the middle of a slow call leaves nothing.

The few requests the collection makes (list Nodes and Secrets, discovery, a TokenRequest, read and
patch a workload, a SelfSubjectReview, list objects) are plain REST calls read as JSON. The official
`kubernetes` client is not used: importing it builds some 700 model classes (about a second of every
run's controller, which imports each action plugin), and its models refuse objects that leave out a
field they require (a Node without every NodeSystemInfo field, a CRD's objects).
"""

from __future__ import annotations

import base64
import json
import ssl
import traceback
from typing import NamedTuple
from urllib.parse import quote, urlencode, urlsplit

try:
    import urllib3
except ImportError:
    HAS_URLLIB3 = False
    URLLIB3_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_URLLIB3 = True
    URLLIB3_IMPORT_ERROR = None

from ansible_collections.talosops.pki.plugins.module_utils import _files, _pki
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig, find_kubeconfig
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import TalosConfig
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, TalosPKIError

DEFAULT_PORT = 6443
# Outcome kinds of one request, from the strongest proof to none.
OK, UNAUTHORIZED, FORBIDDEN, HTTP_ERROR, TLS_ERROR, UNREACHABLE = "ok", "unauthorized", "forbidden", "http_error", "tls_error", "unreachable"

# Workload kinds a restart can target, and their apps/v1 resource (plural) names.
WORKLOAD_KINDS = {"daemonset": "daemonsets", "deployment": "deployments", "statefulset": "statefulsets"}
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
# Talos' kube-apiserver: --requestheader-username-headers=X-Remote-User, --requestheader-allowed-names=front-proxy-client.
REQUESTHEADER_USERNAME_HEADER = "X-Remote-User"
FRONT_PROXY_CLIENT_NAME = "front-proxy-client"
SERVICE_ACCOUNT_TOKEN_TYPE = "kubernetes.io/service-account-token"

# How a task reaches the Kubernetes API (doc fragment talosops.pki._kubernetes): one argument spec for every module.
KUBE_AUTH_ARGUMENT_SPEC = {
    "kubeconfig": {"type": "path"},
    "context": {"type": "str"},
    "server_ca": {"type": "list", "elements": "path"},
    "request_timeout": {"type": "float", "default": 10.0},
}


def with_kube_auth(spec):
    """A module's argument spec merged with the Kubernetes API access options."""
    merged = dict(KUBE_AUTH_ARGUMENT_SPEC)
    merged.update(spec)
    return merged


class NodeStatus(NamedTuple):
    name: str
    addresses: tuple[str, ...]
    ready: str  # "True", "False" or "Unknown", as the Ready condition says
    reason: str | None
    message: str | None


class Outcome(NamedTuple):
    """What one request proved: `kind` is one of OK, UNAUTHORIZED, FORBIDDEN, HTTP_ERROR, TLS_ERROR, UNREACHABLE."""

    kind: str
    detail: str
    value: object = None


def api_targets(params, sealing=None):
    """What a check of the API servers uses, from the module options kubeconfig, context, server_ca and api_servers:
    (the kubeconfig's path, its credentials, the server CA bundle to verify with or None for the kubeconfig's, the server
    URLs). Files are read in clear under `sealing` (a _files.Sealing, or None)."""
    path = find_kubeconfig(params["kubeconfig"])
    credentials = Kubeconfig.load(path, sealing=sealing).credentials(params["context"])
    server_ca = _files.server_ca_bundle(params["server_ca"], sealing) if params["server_ca"] else None
    return path, credentials, server_ca, [server_url(server) for server in (params["api_servers"] or [credentials.server])]


def server_url(text, default_port=DEFAULT_PORT):
    """'https://h:p', 'h:p', 'h' or '[v6]:p' -> 'https://h:p' (TLS only)."""
    text = text.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError("%r is not an https URL of a Kubernetes API server (e.g. https://10.5.0.2:6443)." % text)
    host = "[%s]" % parts.hostname if ":" in parts.hostname else parts.hostname
    return "https://%s:%d" % (host, parts.port or default_port)


def ensure_urllib3():
    if not HAS_URLLIB3:
        raise TalosPKIError("the Python package urllib3 is needed on the controller for the Kubernetes API checks: "
                            "install it (pip install urllib3).")


class APIStatusError(Exception):
    """An answer outside 2xx (or a 2xx that is not JSON): `status` and the HTTP `reason` phrase."""

    def __init__(self, status, reason):
        super().__init__("%s %s" % (status, reason))
        self.status = status
        self.reason = reason


class KubeAPI:
    """`with KubeAPI(credentials, server=..., server_ca=...) as api:` one API server, one client identity."""

    def __init__(self, credentials, server=None, server_ca=None, request_timeout=10.0, token=None):
        """With `token`, requests carry that bearer token (a service-account token) instead of the client certificate."""
        ensure_urllib3()
        self.server = server_url(server or credentials.server)
        self.request_timeout = request_timeout
        self._credentials = credentials
        self._token = token
        self._server_ca = server_ca if server_ca is not None else credentials.ca
        if not self._server_ca:
            raise ConfigError("no CA to verify the API server %s with: the kubeconfig has no certificate-authority-data and no "
                              "server CA was given. TLS verification stays on; give the CA." % self.server)
        self._pool = None
        self._headers = {}

    def __enter__(self):
        try:
            context = ssl.create_default_context(cadata=self._server_ca.decode("ascii"))  # only this CA, hostname checked
            context.verify_mode = ssl.CERT_REQUIRED
            context.check_hostname = True
            context.minimum_version = ssl.TLSVersion.TLSv1_2
        except (ssl.SSLError, ValueError) as exc:  # ValueError: not ASCII, or no certificate in it
            raise ConfigError("the CA to verify the API server %s with is not PEM certificate data (%s): give the kubeconfig's "
                              "certificate-authority-data or a server CA bundle in PEM." % (self.server, _ssl_reason(exc))) from None
        if self._token is None:
            try:
                _files.load_cert_chain(context, self._credentials.crt, self._credentials.key)
            except ssl.SSLError as exc:
                raise ConfigError("the kubeconfig's client certificate and key cannot be used together (%s): take both from "
                                  "the same kubeconfig user." % _ssl_reason(exc)) from None
        # A bearer token is a header on each request, never a file; no client certificate is presented with it.
        self._headers = {"Accept": "application/json", "User-Agent": "talosops.pki"}
        if self._token is not None:
            self._headers["Authorization"] = "Bearer %s" % self._token
        pool = {"server_hostname": self._credentials.tls_server_name} if self._credentials.tls_server_name else {}
        # One try per call, no redirects: the callers retry on their own schedule and must see each failure as it is.
        self._pool = urllib3.PoolManager(cert_reqs=ssl.CERT_REQUIRED, ssl_context=context, retries=False, **pool)
        return self

    def __exit__(self, *exc_info):
        if self._pool is not None:
            self._pool.clear()
        self._pool = None

    def _request(self, method, path, body=None, content_type="application/json", headers=None, query=None):
        """One request; the answer's JSON document (a dict; {} when empty). APIStatusError outside 2xx."""
        url = self.server + path + ("?" + urlencode(query) if query else "")
        request_headers = dict(self._headers, **(headers or {}))
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            request_headers["Content-Type"] = content_type
        timeout = urllib3.Timeout(connect=self.request_timeout, read=self.request_timeout)
        response = self._pool.request(method, url, body=data, headers=request_headers, timeout=timeout, retries=False,
                                      redirect=False)
        if not 200 <= response.status <= 299:
            raise APIStatusError(response.status, response.reason or "")
        try:
            document = json.loads(response.data or b"{}")
        except ValueError:
            raise APIStatusError(502, "the answer is not JSON") from None
        return document if isinstance(document, dict) else {}

    def nodes(self):
        """Outcome whose value is the list of NodeStatus (on OK)."""
        return self._outcome(lambda: [_node_status(node) for node in _items(self._request("GET", "/api/v1/nodes"))])

    def core_resources(self):
        """GET /api/v1 (discovery, which every authenticated identity may read): proves who the server authenticates."""
        def call():
            self._request("GET", "/api/v1")
        return self._outcome(call)

    def service_account_token_secrets(self):
        """Outcome whose value lists the legacy token Secrets (type kubernetes.io/service-account-token) as (namespace,
        name, service account, token) on OK. The token is for the caller to inspect, never to return."""
        def call():
            listing = self._request("GET", "/api/v1/secrets", query={"fieldSelector": "type=%s" % SERVICE_ACCOUNT_TOKEN_TYPE})
            found = []
            for item in _items(listing):
                metadata = _mapping(item.get("metadata"))
                annotations = _mapping(metadata.get("annotations"))
                token = _base64_text(_mapping(item.get("data")).get("token"))
                found.append((metadata.get("namespace"), metadata.get("name"), annotations.get("kubernetes.io/service-account.name"),
                              token))
            return found
        return self._outcome(call)

    def token_request(self, namespace, name, expiration_seconds):
        """TokenRequest for a service account: Outcome whose value is (token, expiration timestamp) on OK."""
        def call():
            body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "spec": {"expirationSeconds": int(expiration_seconds)}}
            answer = self._request("POST", "/api/v1/namespaces/%s/serviceaccounts/%s/token" % (_segment(namespace), _segment(name)),
                                   body=body)
            status = _mapping(answer.get("status"))
            if not isinstance(status.get("token"), str) or not status["token"]:
                raise APIStatusError(502, "the TokenRequest answer holds no token")
            return status["token"], status.get("expirationTimestamp")
        return self._outcome(call)

    def _workload_path(self, kind, namespace, name):
        return "/apis/apps/v1/namespaces/%s/%s/%s" % (_segment(namespace), WORKLOAD_KINDS[kind], _segment(name))

    def read_workload(self, kind, namespace, name):
        """Outcome whose value is the workload's pod template annotations (dict) on OK."""
        def call():
            workload = self._request("GET", self._workload_path(kind, namespace, name))
            template = _mapping(_mapping(workload.get("spec")).get("template"))
            return dict(_mapping(_mapping(template.get("metadata")).get("annotations")))
        return self._outcome(call)

    def patch_template_annotations(self, kind, namespace, name, annotations, dry_run=False):
        """Strategic merge patch of spec.template.metadata.annotations, as `kubectl rollout restart` sends it."""
        def call():
            body = {"spec": {"template": {"metadata": {"annotations": dict(annotations)}}}}
            self._request("PATCH", self._workload_path(kind, namespace, name), body=body, content_type=STRATEGIC_MERGE_PATCH,
                          query={"dryRun": "All"} if dry_run else None)
        return self._outcome(call)

    def list_objects(self, path):
        """GET of a list path (e.g. /api/v1/pods, /apis/talos.dev/v1alpha1/serviceaccounts): Outcome whose value is the
        list's items as plain dicts on OK. 404: the server does not serve it (a CRD not installed)."""
        return self._outcome(lambda: _items(self._request("GET", path)))

    def secret_talosconfig_cas(self, namespace, name, key="talosconfig"):
        """The SHA-256 fingerprints of the CA certificates of the talosconfig held in a Secret (Talos' talos.dev
        ServiceAccount Secrets): Outcome whose value is a tuple, () when the Secret holds no readable talosconfig. Only
        the fingerprints leave this method; the client key in the same talosconfig is dropped here."""
        def call():
            secret = self._request("GET", "/api/v1/namespaces/%s/secrets/%s" % (_segment(namespace), _segment(name)))
            encoded = _mapping(secret.get("data")).get(key)
            try:
                context = TalosConfig.parse(base64.b64decode(encoded or ""), source="Secret %s/%s" % (namespace, name)).get_context()
                return tuple(_pki.fingerprint(certificate) for certificate in _pki.load_certificates(context.ca, "talosconfig CA"))
            except (TalosPKIError, ValueError):
                return ()
        return self._outcome(call)

    def who_am_i(self, remote_user=None):
        """Outcome whose value is the user name the API server authenticated (a SelfSubjectReview). With `remote_user`,
        the request carries X-Remote-User as a front proxy (the aggregation layer) sends it: kube-apiserver takes it as
        the identity only when the client certificate comes from its --requestheader-client-ca-file."""
        def call():
            body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
            review = self._request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body=body,
                                   headers={REQUESTHEADER_USERNAME_HEADER: remote_user} if remote_user else None)
            return _mapping(_mapping(review.get("status")).get("userInfo")).get("username")
        return self._outcome(call)

    def _outcome(self, call):
        try:
            return Outcome(OK, "ok", call())
        except APIStatusError as exc:
            return _api_exception_outcome(exc, self.server)
        except urllib3.exceptions.HTTPError as exc:
            return _transport_outcome(exc, self.server)


def _ssl_reason(exc):
    return getattr(exc, "reason", None) or str(exc) or exc.__class__.__name__


def _mapping(value):
    """`value` when the API gave an object there, else {} (a field left out or null)."""
    return value if isinstance(value, dict) else {}


def _items(listing):
    """The objects of a list answer (the ones that are objects)."""
    items = listing.get("items")
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _base64_text(value):
    """The text a Secret's base64 data field holds; "" when it is missing or not base64 (nothing to inspect)."""
    if not isinstance(value, str):
        return ""
    try:
        return base64.b64decode(value, validate=True).decode("ascii", "replace")
    except ValueError:  # binascii.Error
        return ""


def _segment(text):
    """A name or namespace as one URL path segment."""
    return quote(str(text), safe="")


def _node_status(node):
    status = _mapping(node.get("status"))
    conditions = [condition for condition in status.get("conditions") or [] if isinstance(condition, dict)]
    ready = next((condition for condition in conditions if condition.get("type") == "Ready"), None)
    addresses = tuple(address["address"] for address in status.get("addresses") or []
                      if isinstance(address, dict) and address.get("address"))
    name = _mapping(node.get("metadata")).get("name")
    if ready is None:
        return NodeStatus(name, addresses, "Unknown", "NoReadyCondition", "the node reports no Ready condition yet")
    return NodeStatus(name, addresses, ready.get("status"), ready.get("reason"), ready.get("message"))


def _api_exception_outcome(exc, server):
    status = exc.status or 0
    reason = (exc.reason or "").strip()
    if status == 401:
        return Outcome(UNAUTHORIZED, "%s answered 401 Unauthorized: it does not authenticate this client certificate" % server)
    if status == 403:
        return Outcome(FORBIDDEN, "%s answered 403 Forbidden: the client certificate authenticates but lacks the permission" % server)
    return Outcome(HTTP_ERROR, "%s answered %d %s" % (server, status, reason), status)


def _transport_outcome(exc, server):
    text = _reason_text(exc)
    lowered = text.lower()
    if "certificate_verify_failed" in lowered or "certificate verify failed" in lowered:
        return Outcome(TLS_ERROR, "%s: the API server's certificate does not verify against the CA bundle in use (%s)" % (server, text))
    if "ssl" in lowered or "tls" in lowered or "alert" in lowered:
        return Outcome(TLS_ERROR, "%s: TLS handshake failed (%s)" % (server, text))
    return Outcome(UNREACHABLE, "%s: no answer (%s)" % (server, text))


def _reason_text(exc):
    """The innermost useful text of a urllib3/ssl error chain (MaxRetryError -> SSLError -> ssl.SSLError)."""
    seen = exc
    for _depth in range(5):
        inner = getattr(seen, "reason", None)
        if inner is None or inner is seen or isinstance(inner, str):
            break
        seen = inner
    text = str(seen) or seen.__class__.__name__
    return text if len(text) < 400 else text[:400] + "..."
