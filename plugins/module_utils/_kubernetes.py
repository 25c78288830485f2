# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""The Kubernetes API through the official `kubernetes` Python client, with client-certificate credentials.

TLS verification always stays on: the server is checked against the kubeconfig's CA data or
a given CA bundle. The client certificate and key never reach a file: they are loaded into an
SSL context from memory (_files.load_cert_chain), which the client's connection pool uses; the
client's own file options (and kubernetes.config's loader, which leaves key files in /tmp until
the process ends) are not used, so a task stopped in the middle of a slow call leaves nothing.
"""

from __future__ import annotations

import base64
import json
import ssl
import traceback
from typing import NamedTuple
from urllib.parse import quote, urlsplit

try:
    import kubernetes.client
    # Imported here, not on first use: the client loads API classes lazily and building their models takes about a
    # second. Ansible imports an action plugin (and so this) in its main process, and every worker it forks inherits it.
    from kubernetes.client import AppsV1Api, AuthenticationV1Api, CoreV1Api
    from kubernetes.client.exceptions import ApiException
    import urllib3
except ImportError:
    HAS_KUBERNETES = False
    KUBERNETES_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_KUBERNETES = True
    KUBERNETES_IMPORT_ERROR = None

from ansible_collections.talosops.pki.plugins.module_utils import _files, _pki
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig, find_kubeconfig
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import TalosConfig
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, TalosPKIError

DEFAULT_PORT = 6443
# Outcome kinds of one request, from the strongest proof to none.
OK, UNAUTHORIZED, FORBIDDEN, HTTP_ERROR, TLS_ERROR, UNREACHABLE = "ok", "unauthorized", "forbidden", "http_error", "tls_error", "unreachable"

# Workload kinds a restart can target: (AppsV1Api method suffix, what `kubectl rollout restart` calls it).
WORKLOAD_KINDS = {"daemonset": "daemon_set", "deployment": "deployment", "statefulset": "stateful_set"}
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


def ensure_kubernetes():
    if not HAS_KUBERNETES:
        raise TalosPKIError("the Python package kubernetes is needed on the controller for the Kubernetes API checks: "
                            "install it (pip install kubernetes).")


class KubeAPI:
    """`with KubeAPI(credentials, server=..., server_ca=...) as api:` one API server, one client identity."""

    def __init__(self, credentials, server=None, server_ca=None, request_timeout=10.0, token=None):
        """With `token`, requests carry that bearer token (a service-account token) instead of the client certificate."""
        ensure_kubernetes()
        self.server = server_url(server or credentials.server)
        self.request_timeout = request_timeout
        self._credentials = credentials
        self._token = token
        self._server_ca = server_ca if server_ca is not None else credentials.ca
        if not self._server_ca:
            raise ConfigError("no CA to verify the API server %s with: the kubeconfig has no certificate-authority-data and no "
                              "server CA was given. TLS verification stays on; give the CA." % self.server)
        self._api = None

    def __enter__(self):
        try:
            context = ssl.create_default_context(cadata=self._server_ca.decode("ascii"))  # only this CA, hostname checked
            context.verify_mode = ssl.CERT_REQUIRED
            context.minimum_version = ssl.TLSVersion.TLSv1_2
        except (ssl.SSLError, ValueError) as exc:  # ValueError: not ASCII, or no certificate in it
            raise ConfigError("the CA to verify the API server %s with is not PEM certificate data (%s): give the kubeconfig's "
                              "certificate-authority-data or a server CA bundle in PEM." % (self.server, _ssl_reason(exc))) from None
        configuration = kubernetes.client.Configuration()
        if self._token is not None:
            # A bearer token is a header on each request, never a file; no client certificate is presented with it.
            configuration.api_key = {"authorization": self._token}
            configuration.api_key_prefix = {"authorization": "Bearer"}
        else:
            try:
                _files.load_cert_chain(context, self._credentials.crt, self._credentials.key)
            except ssl.SSLError as exc:
                raise ConfigError("the kubeconfig's client certificate and key cannot be used together (%s): take both from "
                                  "the same kubeconfig user." % _ssl_reason(exc)) from None
        configuration.host = self.server
        configuration.verify_ssl = True
        if self._credentials.tls_server_name:
            configuration.tls_server_name = self._credentials.tls_server_name
        # One try per call: the callers retry on their own schedule and must see each failure as it is.
        configuration.retries = False
        self._api = kubernetes.client.ApiClient(configuration)
        # The client builds its pool from file paths; this one carries the context that holds the key in memory.
        pool = {"server_hostname": self._credentials.tls_server_name} if self._credentials.tls_server_name else {}
        self._api.rest_client.pool_manager.clear()
        self._api.rest_client.pool_manager = urllib3.PoolManager(
            maxsize=configuration.connection_pool_maxsize, cert_reqs=ssl.CERT_REQUIRED, ssl_context=context, retries=False, **pool)
        return self

    def __exit__(self, *exc_info):
        if self._api is not None:
            self._api.close()
        self._api = None

    def _timeout(self):
        return (self.request_timeout, self.request_timeout)

    def nodes(self):
        """Outcome whose value is the list of NodeStatus (on OK)."""
        def call():
            listing = CoreV1Api(self._api).list_node(_request_timeout=self._timeout())
            return [_node_status(node) for node in listing.items or []]
        return self._outcome(call)

    def core_resources(self):
        """GET /api/v1 (discovery, which every authenticated identity may read): proves who the server authenticates."""
        def call():
            CoreV1Api(self._api).get_api_resources(_request_timeout=self._timeout())
        return self._outcome(call)

    def service_account_token_secrets(self):
        """Outcome whose value lists the legacy token Secrets (type kubernetes.io/service-account-token) as (namespace,
        name, service account, token) on OK. The token is for the caller to inspect, never to return."""
        def call():
            listing = CoreV1Api(self._api).list_secret_for_all_namespaces(
                field_selector="type=%s" % SERVICE_ACCOUNT_TOKEN_TYPE, _request_timeout=self._timeout())
            found = []
            for item in listing.items or []:
                annotations = item.metadata.annotations or {}
                token = base64.b64decode((item.data or {}).get("token") or "").decode("ascii", "replace")
                found.append((item.metadata.namespace, item.metadata.name,
                              annotations.get("kubernetes.io/service-account.name"), token))
            return found
        return self._outcome(call)

    def token_request(self, namespace, name, expiration_seconds):
        """TokenRequest for a service account: Outcome whose value is (token, expiration timestamp) on OK."""
        def call():
            body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "spec": {"expirationSeconds": int(expiration_seconds)}}
            answer = CoreV1Api(self._api).create_namespaced_service_account_token(
                name, namespace, body, _request_timeout=self._timeout())
            expires = answer.status.expiration_timestamp
            return answer.status.token, expires.strftime("%Y-%m-%dT%H:%M:%SZ") if hasattr(expires, "strftime") else str(expires)
        return self._outcome(call)

    def read_workload(self, kind, namespace, name):
        """Outcome whose value is the workload's pod template annotations (dict) on OK."""
        def call():
            workload = getattr(AppsV1Api(self._api), "read_namespaced_%s" % WORKLOAD_KINDS[kind])(
                name, namespace, _request_timeout=self._timeout())
            metadata = workload.spec.template.metadata if workload.spec and workload.spec.template else None
            return dict((metadata.annotations or {}) if metadata else {})
        return self._outcome(call)

    def patch_template_annotations(self, kind, namespace, name, annotations, dry_run=False):
        """Strategic merge patch of spec.template.metadata.annotations, as `kubectl rollout restart` sends it."""
        def call():
            body = {"spec": {"template": {"metadata": {"annotations": dict(annotations)}}}}
            extra = {"dry_run": "All"} if dry_run else {}
            getattr(AppsV1Api(self._api), "patch_namespaced_%s" % WORKLOAD_KINDS[kind])(
                name, namespace, body, _content_type=STRATEGIC_MERGE_PATCH, _request_timeout=self._timeout(), **extra)
        return self._outcome(call)

    def _get_json(self, path):
        """GET `path`, the JSON answer as plain data. Read without the client's models, which some objects (a CRD's) do
        not have, which refuse fields a server leaves out, and which take long to build for thousands of pods."""
        request = self._api.param_serialize(method="GET", resource_path=path, header_params={"Accept": "application/json"},
                                            auth_settings=["BearerToken"])
        response = self._api.call_api(*request, _request_timeout=self._timeout())
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        try:
            document = json.loads(response.data or b"{}")
        except ValueError:
            raise ApiException(status=502, reason="the answer is not JSON") from None
        return document if isinstance(document, dict) else {}

    def list_objects(self, path):
        """GET of a list path (e.g. /api/v1/pods, /apis/talos.dev/v1alpha1/serviceaccounts): Outcome whose value is the
        list's items as plain dicts on OK. 404: the server does not serve it (a CRD not installed)."""
        return self._outcome(lambda: list(self._get_json(path).get("items") or []))

    def secret_talosconfig_cas(self, namespace, name, key="talosconfig"):
        """The SHA-256 fingerprints of the CA certificates of the talosconfig held in a Secret (Talos' talos.dev
        ServiceAccount Secrets): Outcome whose value is a tuple, () when the Secret holds no readable talosconfig. Only
        the fingerprints leave this method; the client key in the same talosconfig is dropped here."""
        def call():
            secret = self._get_json("/api/v1/namespaces/%s/secrets/%s" % (quote(namespace, safe=""), quote(name, safe="")))
            encoded = (secret.get("data") or {}).get(key)
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
            if remote_user:
                self._api.set_default_header(REQUESTHEADER_USERNAME_HEADER, remote_user)
            body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
            review = AuthenticationV1Api(self._api).create_self_subject_review(body, _request_timeout=self._timeout())
            return review.status.user_info.username if review.status and review.status.user_info else None
        return self._outcome(call)

    def _outcome(self, call):
        try:
            return Outcome(OK, "ok", call())
        except ApiException as exc:
            return _api_exception_outcome(exc, self.server)
        except urllib3.exceptions.HTTPError as exc:
            return _transport_outcome(exc, self.server)


def _ssl_reason(exc):
    return getattr(exc, "reason", None) or str(exc) or exc.__class__.__name__


def _node_status(node):
    conditions = (node.status.conditions or []) if node.status else []
    ready = next((condition for condition in conditions if condition.type == "Ready"), None)
    addresses = tuple(address.address for address in (node.status.addresses or []) if address.address) if node.status else ()
    if ready is None:
        return NodeStatus(node.metadata.name, addresses, "Unknown", "NoReadyCondition", "the node reports no Ready condition yet")
    return NodeStatus(node.metadata.name, addresses, ready.status, ready.reason, ready.message)


def _api_exception_outcome(exc, server):
    status = exc.status or 0
    reason = (exc.reason or "").strip()
    if status == 401:
        return Outcome(UNAUTHORIZED, "%s answered 401 Unauthorized: it does not authenticate this client certificate" % server)
    if status == 403:
        return Outcome(FORBIDDEN, "%s answered 403 Forbidden: the client certificate authenticates but lacks the permission" % server)
    if status == 0:
        # The client wraps transport failures in an ApiException without a status.
        return _transport_outcome(exc, server)
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
