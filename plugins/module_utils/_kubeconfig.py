# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""Kubeconfig files: find them as kubectl does, read client-certificate credentials, merge a cluster's entries.

A user's kubeconfig usually holds other clusters too, so writing the rotated admin credentials
replaces only the entries of this cluster (cluster, user and context of the same names) and
keeps everything else. Key material never leaves this module except to a 0600 file or to the
TLS context of a Kubernetes API request (loaded from memory, _files.load_cert_chain).
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import traceback
from typing import NamedTuple

try:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError
except ImportError:
    HAS_RUAMEL_YAML = False
    RUAMEL_YAML_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_RUAMEL_YAML = True
    RUAMEL_YAML_IMPORT_ERROR = None

from ansible_collections.talosops.pki.plugins.module_utils import _files, _pki
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError

_SECTIONS = (("clusters", "cluster"), ("users", "user"), ("contexts", "context"))


class KubeCredentials(NamedTuple):
    """What a client-certificate kubeconfig context gives: PEM bytes, the server URL and the entry names."""

    context: str
    cluster: str
    user: str
    server: str
    ca: bytes | None
    crt: bytes
    key: bytes
    tls_server_name: str | None

    def __repr__(self):
        # Never show key bytes, even in a traceback's locals.
        return "KubeCredentials(context=%r, server=%r, key=<redacted>)" % (self.context, self.server)


def find_kubeconfig(explicit_path=None, environ=None):
    """The kubeconfig path kubectl would use: explicit path, else the first entry of $KUBECONFIG, else ~/.kube/config.

    The file need not exist (it is also where a new kubeconfig is written).
    """
    environ = os.environ if environ is None else environ
    if explicit_path:
        return os.path.expanduser(explicit_path)
    listed = [entry for entry in (environ.get("KUBECONFIG") or "").split(os.pathsep) if entry]
    if listed:
        return os.path.expanduser(listed[0])
    home = environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".kube", "config")


def _yaml():
    if not HAS_RUAMEL_YAML:
        raise ConfigError("the Python library ruamel.yaml is needed to read kubeconfig files: install it on the controller (pip install ruamel.yaml).")
    yaml = YAML(typ="rt")
    yaml.default_flow_style = False
    return yaml


class Kubeconfig:
    """A kubeconfig document (kind Config); entries are looked up by name as kubectl does."""

    def __init__(self, document, source, base_dir=None, sealing=None):
        self.document = document
        self.source = source
        self.base_dir = base_dir
        self.sealing = sealing  # how files it refers to (client-key: PATH...) are read: a _files.Sealing or None
        if not isinstance(document, dict):
            raise ConfigError("%s is not a kubeconfig (expected a mapping with clusters, users and contexts)." % source)
        for section, _field in _SECTIONS:
            entries = document.get(section)
            if entries is not None and not isinstance(entries, list):
                raise ConfigError("%s: `%s` must be a list of named entries: restore the file kubectl or talosctl wrote." % (source, section))

    @classmethod
    def load(cls, path, sealing=None):
        """Read (in clear under `sealing`, a _files.Sealing) and parse the kubeconfig at `path`; the files it refers to are
        read under the same sealing."""
        return cls.parse(_files.read_bytes(path, "kubeconfig", sealing=sealing), path,
                         base_dir=os.path.dirname(os.path.abspath(path)), sealing=sealing)

    @classmethod
    def parse(cls, data, source="kubeconfig", base_dir=None, sealing=None):
        try:
            document = _yaml().load(data.decode("utf-8") if isinstance(data, bytes) else data)
        except (YAMLError, UnicodeDecodeError) as exc:
            # The YAML error text may quote a line holding key material: report the position only.
            mark = getattr(exc, "problem_mark", None)
            where = " at line %d" % (mark.line + 1) if mark is not None else ""
            raise ConfigError("%s is not valid YAML%s: fix the file or fetch the kubeconfig again." % (source, where)) from None
        except RecursionError:
            raise ConfigError("%s nests YAML collections deeper than Python can read: it is not a kubeconfig. Check the path, "
                              "or fetch the kubeconfig again." % source) from None
        if document is None:
            document = {}
        return cls(document, source, base_dir, sealing)

    @classmethod
    def empty(cls, source="kubeconfig"):
        return cls.parse("apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts: []\ncurrent-context: \"\"\npreferences: {}\n", source)

    def to_bytes(self):
        stream = io.StringIO()
        _yaml().dump(self.document, stream)
        return stream.getvalue().encode("utf-8")

    def save(self, path, sealing=None):
        """Write atomically with mode 0600 (it holds a private key), sealed when `sealing` covers `path`; a missing parent
        folder is created 0700."""
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            _files.ensure_private_dir(folder)
        _files.atomic_write(path, self.to_bytes(), _files.PRIVATE_FILE_MODE, sealing=sealing)
        return path

    # -- lookups --------------------------------------------------------------------------

    @property
    def current_context(self):
        return self.document.get("current-context") or None

    def names(self, section):
        return [entry.get("name") for entry in self.document.get(section) or [] if isinstance(entry, dict)]

    def entry(self, section, name):
        """The value (e.g. the `cluster:` mapping) of the entry called `name`, or None."""
        field = dict(_SECTIONS)[section]
        for item in self.document.get(section) or []:
            if isinstance(item, dict) and item.get("name") == name:
                value = item.get(field)
                if not isinstance(value, dict):
                    raise ConfigError("%s: %s entry %s has no `%s` mapping: restore it." % (self.source, section, name, field))
                return value
        return None

    def only_context(self):
        """The single context of a kubeconfig as Talos hands it out; ConfigError otherwise."""
        names = self.names("contexts")
        if len(names) != 1:
            raise ConfigError("%s: expected a kubeconfig with exactly one context (as Talos generates), found %d." % (self.source, len(names)))
        return names[0]

    def credentials(self, context=None):
        """Server, CA and client certificate of `context` (default: current-context)."""
        name = context or self.current_context
        if not name:
            raise ConfigError("%s has no current-context and no context was given: name the context to use." % self.source)
        ctx = self.entry("contexts", name)
        if ctx is None:
            raise ConfigError("%s has no context %s (it has: %s): name an existing context." % (
                self.source, name, ", ".join(str(n) for n in self.names("contexts")) or "none"))
        cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
        cluster, user = self.entry("clusters", cluster_name), self.entry("users", user_name)
        if cluster is None or user is None:
            raise ConfigError("%s: context %s refers to %s that is not in the file: restore the file." % (
                self.source, name, "cluster %s" % cluster_name if cluster is None else "user %s" % user_name))
        server = cluster.get("server")
        if not server or not str(server).startswith("https://"):
            raise ConfigError("%s: cluster %s has no https server URL (%r): TLS is required; fix the kubeconfig." % (self.source, cluster_name, server))
        if cluster.get("insecure-skip-tls-verify"):
            raise ConfigError("%s: cluster %s sets insecure-skip-tls-verify: this collection verifies the API server's certificate; "
                              "remove the flag and give its CA (certificate-authority-data)." % (self.source, cluster_name))
        ca = self.read_pem(cluster, "certificate-authority", "cluster %s" % cluster_name, required=False)
        if user.get("token") or user.get("exec") or user.get("auth-provider") or user.get("tokenFile"):
            if not (user.get("client-certificate-data") or user.get("client-certificate")):
                raise ConfigError("%s: user %s authenticates with a token or a plugin: the CA rotation checks need client-certificate "
                                  "credentials (the admin kubeconfig Talos issues)." % (self.source, user_name))
        crt = self.read_pem(user, "client-certificate", "user %s" % user_name)
        key = self.read_pem(user, "client-key", "user %s" % user_name)
        return KubeCredentials(name, cluster_name, user_name, str(server), ca, crt, key, cluster.get("tls-server-name") or None)

    def read_pem(self, mapping, field, where, required=True):
        """`<field>-data` (base64 of PEM) or `<field>` (a file, relative to the kubeconfig's folder), as kubectl reads them."""
        data = mapping.get(field + "-data")
        if data:
            try:
                return base64.b64decode("".join(str(data).split()), validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError("%s: %s %s-data is not base64: restore the value talosctl wrote." % (self.source, where, field)) from None
        path = mapping.get(field)
        if path:
            path = os.path.expanduser(str(path))
            if not os.path.isabs(path) and self.base_dir:
                path = os.path.join(self.base_dir, path)
            return _files.read_bytes(path, "%s %s of %s" % (where, field, self.source), sealing=self.sealing)
        if required:
            raise ConfigError("%s: %s has no %s-data: the CA rotation checks need client-certificate credentials." % (self.source, where, field))
        return None

    # -- merging --------------------------------------------------------------------------

    def renamed(self, name):
        """A copy whose single cluster, user and context are all called `name` (a second cluster named like the first)."""
        context = self.only_context()
        copy = Kubeconfig.parse(self.to_bytes(), self.source, sealing=self.sealing)
        for section, field in _SECTIONS:
            for item in copy.document.get(section) or []:
                item["name"] = name
        copy.entry("contexts", name).update({"cluster": name, "user": name})
        if copy.document.get("current-context") == context:
            copy.document["current-context"] = name
        return copy

    def for_user(self, name):
        """A copy whose single user and context are both called `name` (the cluster entry keeps its name), for another user."""
        context = self.only_context()
        copy = Kubeconfig.parse(self.to_bytes(), self.source, sealing=self.sealing)
        for section in ("users", "contexts"):
            for item in copy.document.get(section) or []:
                item["name"] = name
        copy.entry("contexts", name)["user"] = name
        if copy.document.get("current-context") == context:
            copy.document["current-context"] = name
        return copy

    def set_client_certificate(self, user, crt, key):
        """Replace user `user`'s client certificate and key (as -data values; file references are dropped)."""
        entry = self.entry("users", user)
        if entry is None:
            raise ConfigError("%s has no user %s: restore the file." % (self.source, user))
        for field in ("client-certificate", "client-key"):
            entry.pop(field, None)
        entry["client-certificate-data"] = base64.b64encode(crt).decode("ascii")
        entry["client-key-data"] = base64.b64encode(key).decode("ascii")

    def set_certificate_authority(self, cluster, ca):
        """Replace cluster `cluster`'s CA data (file references are dropped)."""
        entry = self.entry("clusters", cluster)
        if entry is None:
            raise ConfigError("%s has no cluster %s: restore the file." % (self.source, cluster))
        entry.pop("certificate-authority", None)
        entry["certificate-authority-data"] = base64.b64encode(ca).decode("ascii")

    def merge(self, other):
        """Take `other`'s clusters, users and contexts, replacing same-named entries in place; keep every other entry.

        current-context is set to `other`'s when this file has none (a new file); an existing choice is kept.
        """
        for section, _field in _SECTIONS:
            mine = self.document.get(section)
            if mine is None:
                mine = self.document[section] = []
            for item in other.document.get(section) or []:
                names = [entry.get("name") if isinstance(entry, dict) else None for entry in mine]
                if item.get("name") in names:
                    mine[names.index(item.get("name"))] = item
                else:
                    mine.append(item)
        for key in ("apiVersion", "kind"):
            self.document.setdefault(key, other.document.get(key))
        if not self.current_context:
            self.document["current-context"] = other.current_context


def describe(credentials):
    """Public facts about a context's credentials, for results and diffs: never key material."""
    client = _pki.describe_certificate(credentials.crt)
    cas = _pki.split_pem_certificates(credentials.ca) if credentials.ca else []
    return {
        "context": credentials.context,
        "server": credentials.server,
        "ca_fingerprints": [_pki.fingerprint(ca) for ca in cas],
        "client_certificate": {key: client[key] for key in ("fingerprint_sha256", "subject", "organization", "issuer", "not_after")
                               if key in client},
    }
