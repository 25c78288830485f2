# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""talosconfig (client credentials) and secrets.yaml (talosctl gen secrets) files.

Both are edited the same surgical way as machine configs (see _machineconfig.YAMLText): only the
context or certificate being changed is rewritten; other contexts, comments and secrets keep
their bytes. Both hold private keys, so they are written 0600, atomically.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError
from ansible_collections.talosops.pki.plugins.module_utils._files import PRIVATE_FILE_MODE, atomic_write, read_bytes, write_backup
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import (  # noqa: F401 pylint: disable=unused-import
    HAS_RUAMEL_YAML,
    KIND_AGGREGATOR,
    KIND_KUBERNETES,
    KIND_TALOS,
    RUAMEL_YAML_IMPORT_ERROR,
    YAMLText,
    certificate_ders,
    decode_base64_pem,
    encode_base64_pem,
    private_key_identity,
)

KIND_ETCD = "etcd"

DEFAULT_TALOSCONFIG = os.path.join("~", ".talos", "config")


def _single_document(yaml_text, what):
    documents = [doc for doc in yaml_text.documents if not (doc.id == "scalar" and doc.value == "")]
    if not documents:
        raise ConfigError("%s is empty: give a %s." % (yaml_text.source, what))
    if len(documents) > 1:
        raise ConfigError("%s holds %d YAML documents, a %s has one: keep only the first." % (yaml_text.source, len(documents), what))
    if documents[0].id != "mapping":
        raise ConfigError("%s is not a %s (its top level is not a mapping of keys)." % (yaml_text.source, what))
    return documents[0]


def _as_bytes(value):
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


# --- talosconfig -------------------------------------------------------------------------------

class TalosContext(NamedTuple):
    """One talosconfig context; ca/crt/key are PEM (ca may hold several CA certificates)."""

    name: str
    endpoints: tuple[str, ...]
    nodes: tuple[str, ...]
    ca: bytes
    crt: bytes
    key: bytes


def find_talosconfig(explicit_path=None, environ=None):
    """Path of the talosconfig to use, as talosctl picks it: explicit path, else $TALOSCONFIG, else ~/.talos/config.

    A source that is set but points nowhere is an error, not a reason to fall back: silently
    using another cluster's credentials would be worse.
    """
    environ = os.environ if environ is None else environ
    if explicit_path:
        path = os.path.expanduser(explicit_path)
        if os.path.isfile(path):
            return path
        raise ConfigError("no talosconfig found: tried %s (given explicitly), which does not exist or is not a file. "
                          "Check the path." % path)
    from_environment = environ.get("TALOSCONFIG")
    if from_environment:
        path = os.path.expanduser(from_environment)
        if os.path.isfile(path):
            return path
        raise ConfigError("no talosconfig found: tried %s (from $TALOSCONFIG), which does not exist or is not a file. "
                          "Fix or unset TALOSCONFIG, or give the path explicitly." % path)
    home = environ.get("HOME") or os.path.expanduser("~")
    path = os.path.join(home, ".talos", "config")
    if os.path.isfile(path):
        return path
    raise ConfigError("no talosconfig found: no path given, $TALOSCONFIG not set, and the default %s does not exist. "
                      "Give the talosconfig path, set TALOSCONFIG, or create one (talosctl gen config / talosctl config merge)." % path)


class TalosConfig:
    """A talosconfig: `context: NAME` and `contexts: {NAME: {endpoints, nodes, ca, crt, key}}` (base64 PEM)."""

    def __init__(self, yaml_text, source):
        self._yaml = yaml_text
        self.source = source
        self._contexts()

    @classmethod
    def load(cls, path, sealing=None):
        """Read (in clear under `sealing`, a _files.Sealing) and parse the talosconfig at `path`."""
        return cls.parse(read_bytes(path, "talosconfig", sealing=sealing), path)

    @classmethod
    def parse(cls, data, source="talosconfig"):
        """Parse talosconfig bytes; ConfigError when they are not a talosconfig."""
        return cls(YAMLText.from_bytes(data, source), source)

    @classmethod
    def empty(cls, source="talosconfig"):
        """A talosconfig without contexts (what talosctl writes before the first `config add`); fill it with set_context()."""
        return cls.parse(b'context: ""\ncontexts: {}\n', source)

    @classmethod
    def new(cls, context, source="talosconfig"):
        """A talosconfig holding only `context`, which is also the current context, laid out as talosctl writes it."""
        _check_context(context)
        renderer = YAMLText("", source)
        text = "%s\n%s\n" % (renderer.render_entry("context", context.name, 0),
                             renderer.render_entry("contexts", {context.name: _context_value(context)}, 0))
        return cls.parse(text.encode("utf-8"), source)

    def to_bytes(self):
        """The talosconfig as bytes."""
        return self._yaml.to_bytes()

    def save(self, path, sealing=None):
        """Write atomically with mode 0600 (it holds a private key), sealed when `sealing` covers `path`."""
        atomic_write(path, self.to_bytes(), PRIVATE_FILE_MODE, sealing=sealing)
        return path

    def _root(self):
        return _single_document(self._yaml, "talosconfig")

    def _contexts(self):
        root = self._root()
        found = self._yaml.entry(root, "contexts", "")
        if found is None or (found[1].id == "scalar" and found[1].style is None and found[1].value in ("", "~", "null")):
            raise ConfigError("%s has no `contexts`: it is not a talosconfig, or it is empty. Use the talosconfig written by "
                              "`talosctl gen config` (or merge one with `talosctl config merge`)." % self.source)
        if found[1].id != "mapping":
            raise ConfigError("%s: `contexts` must be a mapping of context names to contexts: restore the file talosctl wrote." % self.source)
        return found[1]

    @property
    def context_names(self):
        """Context names, in file order."""
        return tuple(key.value for key, _value in self._contexts().value if key.id == "scalar")

    @property
    def current_context_name(self):
        """The `context:` value, or None when unset."""
        found = self._yaml.entry(self._root(), "context", "")
        if found is None or found[1].id != "scalar" or not found[1].value.strip():
            return None
        if found[1].style is None and found[1].value in ("~", "null"):
            return None
        return found[1].value

    def _context_node(self, name):
        found = self._yaml.entry(self._contexts(), name, "contexts")
        if found is None:
            raise ConfigError("context %s not found in %s; available: %s" % (name, self.source, ", ".join(self.context_names) or "none"))
        if found[1].id != "mapping":
            raise ConfigError("%s: context %s must be a mapping with endpoints, ca, crt and key: restore it from talosctl." % (self.source, name))
        return found

    def _strings(self, context, name, field):
        found = self._yaml.entry(context, field, "contexts." + name)
        if found is None or (found[1].id == "scalar" and found[1].style is None and found[1].value in ("", "~", "null")):
            return ()
        if found[1].id != "sequence" or any(item.id != "scalar" for item in found[1].value):
            raise ConfigError("%s: context %s: `%s` must be a list of addresses (e.g. `- 10.5.0.2`)." % (self.source, name, field))
        return tuple(item.value for item in found[1].value)

    def _pem(self, context, name, field):
        found = self._yaml.entry(context, field, "contexts." + name)
        what = "%s: context %s field `%s`" % (self.source, name, field)
        if found is None or found[1].id != "scalar" or not found[1].value.strip():
            hint = " (contexts that authenticate otherwise, e.g. Omni `auth:`, cannot drive a CA rotation)" if field != "ca" else ""
            raise ConfigError("%s is missing or empty%s: use a talosconfig with client certificates, as written by "
                              "`talosctl gen config` or `talosctl config new`." % (what, hint))
        pem = decode_base64_pem(found[1].value, what)
        if field == "key":
            private_key_identity(pem, what)
        else:
            certificate_ders(pem, what, single=field == "crt")
        return pem

    def get_context(self, name=None):
        """The context `name` (None: the current one) with PEM decoded from base64."""
        if name is None:
            name = self.current_context_name
            if name is None:
                raise ConfigError("%s has no current context (`context:` is missing or empty): name the context to use, "
                                  "or select one with `talosctl config context NAME`." % self.source)
        _key, context = self._context_node(name)
        return TalosContext(name=name,
                            endpoints=self._strings(context, name, "endpoints"),
                            nodes=self._strings(context, name, "nodes"),
                            ca=self._pem(context, name, "ca"),
                            crt=self._pem(context, name, "crt"),
                            key=self._pem(context, name, "key"))

    def _current_identity(self, name):
        """Comparable state of an existing context, None where a field is unreadable (so it gets rewritten)."""
        _key, context = self._context_node(name)
        identity = {}
        for field, reader in (("endpoints", self._strings), ("nodes", self._strings), ("ca", self._pem), ("crt", self._pem), ("key", self._pem)):
            try:
                value = reader(context, name, field)
            except ConfigError:
                identity[field] = None
                continue
            identity[field] = _field_identity(field, value)
        return identity

    def set_context(self, context, make_current=True):
        """Add or replace one context (other contexts keep their bytes); True when the text changed."""
        _check_context(context)
        wanted = {field: _field_identity(field, getattr(context, field)) for field in ("endpoints", "nodes", "ca", "crt", "key")}
        original = self._yaml.text
        document_index = self._yaml.documents.index(self._root())
        owned = {(document_index, ("contexts", context.name))}
        if self._contexts().flow_style:
            owned.add((document_index, ("contexts",)))  # an empty `contexts: {}` is rewritten in block style
        if make_current:
            owned.add((document_index, ("context",)))
        shape_before = self._yaml.shape(owned)
        try:
            self._write_context(context, wanted)
            if make_current and self.current_context_name != context.name:
                self._yaml.set_scalar_entry(self._root(), "context", context.name, (), "", at_start=True)
            if self._current_identity(context.name) != wanted or self._yaml.shape(owned) != shape_before:
                raise ConfigError("%s: the edit of context %s did not read back as intended; nothing was changed. "
                                  "Please report this." % (self.source, context.name))
        except BaseException:
            self._yaml.reload(original)
            raise
        return self._yaml.text != original

    def _write_context(self, context, wanted):
        contexts = self._contexts()
        found = self._yaml.entry(contexts, context.name, "contexts")
        if found is None:
            if contexts.flow_style and not contexts.value:
                key_node, value_node = self._yaml.entry(self._root(), "contexts", "")
                self._yaml.replace_entry(key_node, value_node, {context.name: _context_value(context)}, "contexts")
            else:
                self._yaml.insert_entry(contexts, context.name, _context_value(context), (), "contexts")
            return
        if found[1].id != "mapping" or found[1].flow_style:
            self._yaml.replace_entry(found[0], found[1], _context_value(context), "contexts." + context.name)
            return
        current = self._current_identity(context.name)
        where = "contexts." + context.name
        # Each field is rewritten only when it differs, and in talosctl's field order when inserted.
        for field, after in (("endpoints", ()), ("nodes", ("endpoints",)), ("ca", ("nodes", "endpoints")),
                             ("crt", ("ca", "nodes", "endpoints")), ("key", ("crt", "ca", "nodes", "endpoints"))):
            if current[field] == wanted[field]:
                continue
            mapping = self._context_node(context.name)[1]
            value = getattr(context, field)
            if field in ("endpoints", "nodes"):
                if value:
                    self._yaml.set_block_entry(mapping, field, list(value), after, where, at_start=True)
                else:
                    existing = self._yaml.entry(mapping, field, where)
                    if existing is not None:
                        self._yaml.remove_entry(existing[0], existing[1], where + "." + field)
            else:
                self._yaml.set_scalar_entry(mapping, field, encode_base64_pem(_as_bytes(value)), after, where, at_start=True)


def _check_context(context):
    if not isinstance(context, TalosContext):
        raise TypeError("expected a TalosContext, got %r" % type(context).__name__)
    if not context.name or not isinstance(context.name, str):
        raise ConfigError("a talosconfig context needs a name.")
    for field in ("endpoints", "nodes"):
        values = getattr(context, field)
        if isinstance(values, (str, bytes)) or any(not isinstance(value, str) or not value.strip() for value in values):
            raise ConfigError("context %s: %s must be a list of non-empty addresses." % (context.name, field))
    certificate_ders(_as_bytes(context.ca), "the CA bundle of context %s" % context.name, single=False)
    certificate_ders(_as_bytes(context.crt), "the client certificate of context %s" % context.name)
    private_key_identity(_as_bytes(context.key), "the client key of context %s" % context.name)


def _field_identity(field, value):
    if field in ("endpoints", "nodes"):
        return tuple(value)
    value = _as_bytes(value)
    if field == "key":
        return private_key_identity(value, "key")
    return certificate_ders(value, field, single=False)


def _context_value(context):
    value = {"endpoints": list(context.endpoints)}
    if context.nodes:
        value["nodes"] = list(context.nodes)
    for field in ("ca", "crt", "key"):
        value[field] = encode_base64_pem(_as_bytes(getattr(context, field)))
    return value


# --- secrets bundle --------------------------------------------------------------------------

_SECRETS_CA_NAMES = {KIND_TALOS: "os", KIND_KUBERNETES: "k8s", KIND_ETCD: "etcd", KIND_AGGREGATOR: "k8saggregator"}
# Order in which talosctl writes certs (Go struct order), used to place a missing entry.
_SECRETS_CERT_ORDER = ("etcd", "k8s", "k8saggregator", "k8sserviceaccount", "os")
_SECRETS_SERVICE_ACCOUNT = "k8sserviceaccount"  # certs.k8sserviceaccount{key}: a key, no certificate


class SecretsBundle:
    """secrets.yaml from `talosctl gen secrets`: cluster, secrets, trustdinfo, certs.{etcd,k8s,k8saggregator,k8sserviceaccount,os}."""

    def __init__(self, yaml_text, source):
        self._yaml = yaml_text
        self.source = source
        self._certs()

    @classmethod
    def load(cls, path, sealing=None):
        """Read (in clear under `sealing`, a _files.Sealing) and parse the secrets bundle at `path`."""
        return cls.parse(read_bytes(path, "secrets bundle", sealing=sealing), path)

    @classmethod
    def parse(cls, data, source="secrets bundle"):
        """Parse secrets bundle bytes; ConfigError when they are not a talosctl secrets bundle."""
        return cls(YAMLText.from_bytes(data, source), source)

    def to_bytes(self):
        """The bundle as bytes."""
        return self._yaml.to_bytes()

    def _root(self):
        return _single_document(self._yaml, "secrets bundle")

    def _certs(self):
        certs = self._yaml.mapping_at(self._root(), ("certs",))
        if certs is None:
            raise ConfigError("%s has no `certs` section: it is not a secrets bundle from `talosctl gen secrets`; give that file." % self.source)
        return certs

    @property
    def cluster_id(self):
        """cluster.id (the base64 cluster identity)."""
        cluster = self._yaml.mapping_at(self._root(), ("cluster",))
        found = self._yaml.entry(cluster, "id", "cluster") if cluster is not None else None
        if found is None or found[1].id != "scalar" or not found[1].value:
            raise ConfigError("%s has no cluster.id: restore the bundle written by `talosctl gen secrets`." % self.source)
        return found[1].value

    def _name(self, kind):
        if kind not in _SECRETS_CA_NAMES:
            raise ValueError("unknown CA kind %r: use one of %s" % (kind, ", ".join(sorted(_SECRETS_CA_NAMES))))
        return _SECRETS_CA_NAMES[kind]

    def get_ca(self, kind):
        """(certificate PEM, key PEM) of the CA `kind` (talos -> certs.os, kubernetes -> certs.k8s, etcd, aggregator -> certs.k8saggregator)."""
        name = self._name(kind)
        where = "certs." + name
        pair = self._yaml.mapping_at(self._certs(), (name,), "certs")
        if pair is None:
            raise ConfigError("%s has no %s: restore it from the bundle written by `talosctl gen secrets`." % (self.source, where))
        values = []
        for field in ("crt", "key"):
            found = self._yaml.entry(pair, field, where)
            what = "%s: %s.%s" % (self.source, where, field)
            if found is None or found[1].id != "scalar" or not found[1].value.strip():
                raise ConfigError("%s is missing or empty: restore it from the bundle written by `talosctl gen secrets`." % what)
            pem = decode_base64_pem(found[1].value, what)
            if field == "key":
                private_key_identity(pem, what)
            else:
                certificate_ders(pem, what)
            values.append(pem)
        return values[0], values[1]

    def get_service_account_key(self):
        """The service-account signing key (PEM) of certs.k8sserviceaccount.key."""
        where = "certs.%s.key" % _SECRETS_SERVICE_ACCOUNT
        holder = self._yaml.mapping_at(self._certs(), (_SECRETS_SERVICE_ACCOUNT,), "certs")
        found = self._yaml.entry(holder, "key", "certs." + _SECRETS_SERVICE_ACCOUNT) if holder is not None else None
        what = "%s: %s" % (self.source, where)
        if found is None or found[1].id != "scalar" or not found[1].value.strip():
            raise ConfigError("%s is missing or empty: restore it from the bundle written by `talosctl gen secrets`." % what)
        pem = decode_base64_pem(found[1].value, what)
        private_key_identity(pem, what)
        return pem

    def set_service_account_key(self, key_pem):
        """Replace certs.k8sserviceaccount.key (base64 PEM, the only field there); True when the text changed."""
        key_pem = _as_bytes(key_pem)
        wanted = private_key_identity(key_pem, "the new service-account key")
        try:
            current = private_key_identity(self.get_service_account_key(), "service-account key")
        except ConfigError:
            current = None
        if current == wanted:
            return False
        original = self._yaml.text
        where = "certs." + _SECRETS_SERVICE_ACCOUNT
        try:
            found = self._yaml.entry(self._certs(), _SECRETS_SERVICE_ACCOUNT, "certs")
            if found is not None and found[1].id == "mapping" and not found[1].flow_style:
                self._yaml.set_scalar_entry(found[1], "key", encode_base64_pem(key_pem), (), where, at_start=True)
            elif found is not None:
                self._yaml.replace_entry(found[0], found[1], {"key": encode_base64_pem(key_pem)}, where)
            else:
                before = _SECRETS_CERT_ORDER[:_SECRETS_CERT_ORDER.index(_SECRETS_SERVICE_ACCOUNT)][::-1]
                self._yaml.insert_entry(self._certs(), _SECRETS_SERVICE_ACCOUNT, {"key": encode_base64_pem(key_pem)}, before, "certs")
            if private_key_identity(self.get_service_account_key(), "service-account key") != wanted:
                raise ConfigError("%s: the edit of %s did not read back as intended; nothing was changed. Please report this."
                                  % (self.source, where))
        except BaseException:
            self._yaml.reload(original)
            raise
        return self._yaml.text != original

    def set_ca(self, kind, crt_pem, key_pem):
        """Replace certs.<kind> crt and key (base64 PEM); True when the text changed."""
        name = self._name(kind)
        crt_pem = _as_bytes(crt_pem)
        key_pem = _as_bytes(key_pem)
        wanted = (certificate_ders(crt_pem, "the new %s CA certificate" % kind)[0], private_key_identity(key_pem, "the new %s CA key" % kind))
        try:
            current = _pair_identity(*self.get_ca(kind))
        except ConfigError:
            current = (None, None)  # unreadable or absent: rewrite it
        if current == wanted:
            return False
        original = self._yaml.text
        owned = {(self._yaml.documents.index(self._root()), ("certs", name))}
        shape_before = self._yaml.shape(owned)
        try:
            self._write_pair(name, current, wanted, crt_pem, key_pem)
            if _pair_identity(*self.get_ca(kind)) != wanted or self._yaml.shape(owned) != shape_before:
                raise ConfigError("%s: the edit of certs.%s did not read back as intended; nothing was changed. Please report this." % (self.source, name))
        except BaseException:
            self._yaml.reload(original)
            raise
        return self._yaml.text != original

    def _write_pair(self, name, current, wanted, crt_pem, key_pem):
        where = "certs." + name
        found = self._yaml.entry(self._certs(), name, "certs")
        if found is not None and found[1].id == "mapping" and not found[1].flow_style:
            if current[0] != wanted[0]:
                self._yaml.set_scalar_entry(found[1], "crt", encode_base64_pem(crt_pem), (), where, at_start=True)
            if current[1] != wanted[1]:
                pair = self._yaml.entry(self._certs(), name, "certs")[1]
                self._yaml.set_scalar_entry(pair, "key", encode_base64_pem(key_pem), ("crt",), where)
            return
        value = {"crt": encode_base64_pem(crt_pem), "key": encode_base64_pem(key_pem)}
        if found is not None:
            self._yaml.replace_entry(found[0], found[1], value, where)
        else:
            before = _SECRETS_CERT_ORDER[:_SECRETS_CERT_ORDER.index(name)][::-1]  # the nearest preceding name first
            self._yaml.insert_entry(self._certs(), name, value, before, "certs", at_start=True)

    def save(self, path, backup=True, sealing=None):
        """Write `path` (0600, atomically, sealed when `sealing` covers it); when its content changes and `backup`, first keep
        the old file.

        The old content goes to PATH.bak-<UTC timestamp> (0600): the only copy of the previous
        CA keys must not be lost. Returns the backup path, or None when none was written.
        """
        data = self.to_bytes()
        backup_path = None
        if backup and os.path.lexists(path):
            old = read_bytes(path, "secrets bundle", sealing=sealing)
            if old != data:
                backup_path = write_backup(path, old, sealing=sealing)
        atomic_write(path, data, PRIVATE_FILE_MODE, sealing=sealing)
        return backup_path


def _pair_identity(crt_pem, key_pem):
    return certificate_ders(crt_pem, "crt")[0], private_key_identity(key_pem, "key")
