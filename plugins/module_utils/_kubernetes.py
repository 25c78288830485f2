# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""The Kubernetes API through the official `kubernetes` Python client, with client-certificate credentials.

TLS verification always stays on: the server is checked against the kubeconfig's CA data or
a given CA bundle. The client certificate and key reach the client (urllib3 reads files) through
a 0700 temporary folder that exists only while a KubeAPI is open; kubernetes.config's own loader
is not used because it leaves such files in /tmp until the process ends.
"""

from __future__ import annotations

import base64
import os
import traceback
from typing import NamedTuple
from urllib.parse import urlsplit

try:
    import kubernetes.client
    # Imported here, not on first use: the client loads API classes lazily and building their models takes about a
    # second. Ansible imports an action plugin (and so this) in its main process, and every worker it forks inherits it.
    from kubernetes.client import AppsV1Api, CoreV1Api
    from kubernetes.client.exceptions import ApiException
    import urllib3
except ImportError:
    HAS_KUBERNETES = False
    KUBERNETES_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_KUBERNETES = True
    KUBERNETES_IMPORT_ERROR = None

from ansible_collections.talosops.pki.plugins.module_utils import _files
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, TalosPKIError

DEFAULT_PORT = 6443
# Outcome kinds of one request, from the strongest proof to none.
OK, UNAUTHORIZED, FORBIDDEN, HTTP_ERROR, TLS_ERROR, UNREACHABLE = "ok", "unauthorized", "forbidden", "http_error", "tls_error", "unreachable"

# Workload kinds a restart can target: (AppsV1Api method suffix, what `kubectl rollout restart` calls it).
WORKLOAD_KINDS = {"daemonset": "daemon_set", "deployment": "deployment", "statefulset": "stateful_set"}
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
SERVICE_ACCOUNT_TOKEN_TYPE = "kubernetes.io/service-account-token"


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
        self._folder = None
        self._api = None

    def __enter__(self):
        self._folder = _files.private_tempdir()
        path = self._folder.__enter__()
        try:
            configuration = kubernetes.client.Configuration()
            configuration.host = self.server
            configuration.verify_ssl = True
            configuration.ssl_ca_cert = _write(path, "ca.crt", self._server_ca)
            if self._token is not None:
                configuration.api_key = {"authorization": self._token}
                configuration.api_key_prefix = {"authorization": "Bearer"}
            else:
                configuration.cert_file = _write(path, "client.crt", self._credentials.crt)
                configuration.key_file = _write(path, "client.key", self._credentials.key)
            if self._credentials.tls_server_name:
                configuration.tls_server_name = self._credentials.tls_server_name
            # One try per call: the callers retry on their own schedule and must see each failure as it is.
            configuration.retries = False
            self._api = kubernetes.client.ApiClient(configuration)
        except BaseException:
            self._folder.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info):
        try:
            if self._api is not None:
                self._api.close()
        finally:
            self._api = None
            self._folder.__exit__(*exc_info)

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

    def _outcome(self, call):
        try:
            return Outcome(OK, "ok", call())
        except ApiException as exc:
            return _api_exception_outcome(exc, self.server)
        except urllib3.exceptions.HTTPError as exc:
            return _transport_outcome(exc, self.server)


def _write(folder, name, data):
    path = os.path.join(folder, name)
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _files.PRIVATE_FILE_MODE)
    with os.fdopen(handle, "wb") as stream:
        stream.write(data)
    return path


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
