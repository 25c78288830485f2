# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""Read and edit the root CA fields of Talos machine configs without disturbing anything else.

A machine config is sent back to the node byte for byte as we produce it, and users diff it,
so a YAML round trip is not acceptable: it re-flows comments, quoting, `0o644`-style values
and indentation. Instead YAMLText composes the file (libyaml, else ruamel.yaml) only to learn where the
owned values are (line/column marks), splices new text into exactly those spans, re-parses,
and checks that every node the rotation does not own is still the same.

The PEM helpers and YAMLText are shared with _talosconfig.py (talosconfig, secrets.yaml).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
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

try:  # PyYAML's binding of libyaml (ansible-core needs PyYAML; its wheels bring libyaml): only its composer
    import yaml as _pyyaml
    _LIBYAML_LOADER = _pyyaml.CSafeLoader
except (ImportError, AttributeError):  # PyYAML without libyaml: ruamel.yaml composes everything
    _LIBYAML_LOADER = None

from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError

KIND_TALOS = "talos"
KIND_KUBERNETES = "kubernetes"
KIND_AGGREGATOR = "aggregator"
KIND_SERVICE_ACCOUNT = "service_account"

MACHINE_TYPES = ("init", "controlplane", "worker")
LOCATION_CLUSTER_CA = "cluster.ca"
LOCATION_KUBE_APISERVER_CA_CONFIG = "KubeAPIServerCAConfig"
# The aggregator (front-proxy) CA: a v1.14+ document with accepted CAs, or the legacy v1alpha1 field without any.
LOCATION_AGGREGATOR_CA_CONFIG = "KubeAggregatorCAConfig"
LOCATION_LEGACY_AGGREGATOR_CA = "cluster.aggregatorCA"
# The service-account key: likewise a v1.14+ document with accepted public keys, or the legacy field without any.
LOCATION_SERVICE_ACCOUNT_CONFIG = "KubeServiceAccountConfig"
LOCATION_LEGACY_SERVICE_ACCOUNT = "cluster.serviceAccount"

_V1ALPHA1 = "v1alpha1"
# Documents that declare a shared virtual IP by their `name` (Talos v1.12+).
VIP_DOCUMENT_KINDS = ("Layer2VIPConfig", "HCloudVIPConfig")
_ACCEPTED = "acceptedCAs"
_KEY = "key"


class CAFields(NamedTuple):
    """One CA as a node config holds it: PEM bytes (decoded from base64 where stored so)."""

    issuing_crt: bytes | None
    issuing_key: bytes | None
    accepted: tuple[bytes, ...]


class ServiceAccountFields(NamedTuple):
    """The service-account keys of a v1.14+ control plane: the signing key (PEM) and the accepted public keys (PEM)."""

    signing_key: bytes | None
    accepted: tuple[bytes, ...]


# --- PEM --------------------------------------------------------------------------------

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.S)
_CERTIFICATE_LABEL = "CERTIFICATE"


class PEMBlock(NamedTuple):
    """One PEM block: its label and the DER bytes of its body."""

    label: str
    der: bytes


def pem_blocks(pem, what):
    """Split PEM text into blocks; ConfigError naming `what` when it is not clean PEM.

    Whitespace and line wrapping inside and around blocks are ignored, so two PEM texts of
    the same certificate compare equal through their DER.
    """
    if isinstance(pem, bytes):
        try:
            pem = pem.decode("ascii")
        except UnicodeDecodeError:
            raise ConfigError("%s is not PEM text (it contains non-ASCII bytes): give the PEM file content." % what) from None
    blocks = []
    position = 0
    for match in _PEM_BLOCK.finditer(pem):
        if pem[position:match.start()].strip():
            raise ConfigError("%s has text outside its PEM blocks: keep only -----BEGIN/END----- blocks." % what)
        body = "".join(match.group(2).split())
        try:
            der = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            der = b""
        if not der:
            raise ConfigError("%s has a damaged %s PEM block (its body is not base64; encrypted keys are not supported): "
                              "give the PEM exactly as written by talosctl or openssl." % (what, match.group(1)))
        blocks.append(PEMBlock(match.group(1), der))
        position = match.end()
    if pem[position:].strip() or not blocks:
        raise ConfigError("%s is not PEM (no complete -----BEGIN ...----- / -----END ...----- block): give the PEM text itself." % what)
    return blocks


def certificate_ders(pem, what, single=True):
    """DER of every certificate in `pem` (exactly one when `single`)."""
    blocks = pem_blocks(pem, what)
    for block in blocks:
        if block.label != _CERTIFICATE_LABEL:
            raise ConfigError("%s holds a %s block where only CERTIFICATE blocks belong: put the certificate there, "
                              "not its key." % (what, block.label))
    if single and len(blocks) != 1:
        raise ConfigError("%s holds %d certificates, expected exactly one: give a single CA certificate." % (what, len(blocks)))
    return tuple(block.der for block in blocks)


def private_key_identity(pem, what):
    """(label, DER) of the single private key in `pem`: equal for the same key written the same way.

    The label counts: Talos writes `ED25519 PRIVATE KEY` / `EC PRIVATE KEY`, and a relabelled key
    is a different file content.
    """
    blocks = pem_blocks(pem, what)
    if len(blocks) != 1 or not blocks[0].label.endswith("PRIVATE KEY"):
        raise ConfigError("%s must be exactly one private key PEM block (found: %s): give the CA's private key."
                          % (what, ", ".join(block.label for block in blocks)))
    return blocks[0]


def public_key_der(pem, what):
    """DER of the single public key in `pem` (a PKIX `PUBLIC KEY` block, as --service-account-key-file reads)."""
    blocks = pem_blocks(pem, what)
    if len(blocks) != 1 or blocks[0].label != "PUBLIC KEY":
        raise ConfigError("%s must be exactly one PUBLIC KEY PEM block (found: %s): give the public key, never the "
                          "private one." % (what, ", ".join(block.label for block in blocks)))
    return blocks[0].der


def decode_base64_pem(value, what):
    """PEM bytes from the base64 text Talos stores in v1alpha1 configs, talosconfig and secrets."""
    compact = "".join(value.split())
    if compact.startswith("-----BEGIN"):
        raise ConfigError("%s holds raw PEM, but Talos stores the base64 of the PEM text there: replace it with the "
                          "base64 encoding (e.g. `base64 -w0 < ca.crt`)." % what)
    try:
        decoded = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("%s is not valid base64: Talos stores the base64 of the PEM text there; "
                          "restore the value generated by talosctl." % what) from None
    if b"-----BEGIN" not in decoded:
        raise ConfigError("%s is base64 but does not decode to PEM text: Talos stores the base64 of the PEM "
                          "(-----BEGIN ...) there; restore the value generated by talosctl." % what)
    return decoded


def encode_base64_pem(pem):
    """The base64 text Talos writes for PEM bytes: standard alphabet, one line."""
    return base64.b64encode(pem).decode("ascii")


def _to_bytes(value):
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


# --- surgical YAML editing -----------------------------------------------------------------

class Literal(str):
    """A value to write as a literal block scalar (`|`): raw PEM in v1.14+ documents."""


_PLAIN_SAFE = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_.@/+=-]*|\d{1,3}(?:\.\d{1,3}){3})$")
# Words YAML 1.1 (PyYAML, older tools) or 1.2 would read as booleans or null.
_RESERVED_WORDS = frozenset(("y", "n", "yes", "no", "true", "false", "on", "off", "null"))
_DEFAULT_INDENT = 4  # what talosctl (Go yaml.v3 with SetIndent(4)) writes


def render_inline(value, style=None):
    """One-line YAML text for a string: plain when it reads back as the same string, else quoted.

    `style` keeps the quoting the file already used for that value (`'` or `"`).
    """
    if style == "'" and "'" not in value and "\n" not in value:
        return "'%s'" % value
    if style != '"' and value and _PLAIN_SAFE.match(value) and value.lower() not in _RESERVED_WORDS:
        return value
    # JSON string syntax is valid YAML double-quoted syntax (same escapes).
    return json.dumps(value, ensure_ascii=False)


def _is_mapping(node):
    return node is not None and node.id == "mapping"


def _is_sequence(node):
    return node is not None and node.id == "sequence"


def _is_scalar(node):
    return node is not None and node.id == "scalar"


def _child(mapping, key):
    """The value node of `key` in a mapping node (the first one), else None."""
    if not _is_mapping(mapping):
        return None
    return next((value for key_node, value in mapping.value if _is_scalar(key_node) and key_node.value == key), None)


def _items(sequence):
    return list(sequence.value) if _is_sequence(sequence) else []


def _is_empty(node):
    """True for an absent value (`key:` with nothing, `~`, `null`)."""
    return node is None or (_is_scalar(node) and node.style is None and node.value in ("", "~", "null", "Null", "NULL"))


def _is_block(node):
    return node.id in ("mapping", "sequence") and not node.flow_style


def _tag(node):
    return getattr(node.tag, "value", node.tag)


COMPOSER_LIBYAML = "libyaml"
COMPOSER_RUAMEL = "ruamel.yaml"
# Characters on which the two composers read a text differently: a byte order mark (libyaml drops it, also after
# `---`; ruamel.yaml keeps it in the next key) and the YAML 1.1 line breaks NEL, LS and PS (line breaks to libyaml only).
_RUAMEL_ONLY_CHARACTERS = ("\ufeff", "\x85", "\u2028", "\u2029")


def compose_all(text):
    """The node trees of the documents in `text` (nodes with value, style, flow_style, tag, start/end marks)."""
    return compose(text)[0]


def compose(text):
    """(documents, composer) - see compose_all.

    libyaml composes a machine config some 50 times faster than ruamel.yaml (0.1 ms against 7 ms for a
    commented worker config: most of a wave's time at a hundred nodes), with the same marks (character
    offsets, lines, columns) - tests/unit/.../test_machineconfig_composer.py compares the two node by node.
    Where they differ, ruamel.yaml composes: an empty plain value (`key:`, libyaml marks it at the colon,
    ruamel.yaml at the next token), a text without a final line break (other end lines), a byte order mark
    anywhere, NEL / LS / PS characters (line breaks in YAML 1.1 only). A text libyaml refuses goes to
    ruamel.yaml too, which reads it or words the error. libyaml takes a little more than ruamel.yaml (a tab
    as a separator); the node's own parser still judges what is applied.
    Tags and folded scalars may differ between the two (libyaml resolves plain scalars as YAML 1.1): shapes
    are compared only between two compositions by the same composer (YAMLText.shape).
    """
    if _LIBYAML_LOADER is not None and text.endswith("\n") and not any(char in text for char in _RUAMEL_ONLY_CHARACTERS):
        try:
            documents = list(_pyyaml.compose_all(text, Loader=_LIBYAML_LOADER))
        except _pyyaml.YAMLError:
            documents = None
        if documents is not None and _as_ruamel_composes(documents):
            return documents, COMPOSER_LIBYAML
    return list(YAML(typ="rt").compose_all(text)), COMPOSER_RUAMEL


def _as_ruamel_composes(nodes):
    """Give plain scalars ruamel.yaml's style (None; libyaml says ''); False when an empty plain value is found."""
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if node.id == "scalar":
            if node.style == "":
                if node.value == "":
                    return False
                node.style = None
        elif node.id == "mapping":
            for key, value in node.value:
                stack.append(key)
                stack.append(value)
        else:
            stack.extend(node.value)
    return True


class YAMLText:
    """YAML text plus its composed node tree, edited by splicing text at node positions.

    Every edit replaces one span (a scalar, or whole lines of one `key: value` entry), then
    re-parses: node marks of a previous parse must not be reused after an edit.
    """

    def __init__(self, text, source):
        self.source = source
        self.text = ""
        self.documents = []
        self.composer = None
        self.indent_step = _DEFAULT_INDENT
        self.sequence_offset = _DEFAULT_INDENT
        self._load(text)

    @classmethod
    def from_bytes(cls, data, source):
        """Parse bytes (UTF-8, as Talos writes) or str."""
        if isinstance(data, str):
            return cls(data, source)
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError("%s is not UTF-8 text (invalid byte at offset %d): give the YAML file itself." % (source, exc.start)) from None
        return cls(text, source)

    def to_bytes(self):
        """The current text as UTF-8 bytes."""
        return self.text.encode("utf-8")

    @property
    def newline(self):
        """Line ending to use for inserted lines: the file's own."""
        return "\r\n" if "\r\n" in self.text else "\n"

    def _load(self, text):
        if not HAS_RUAMEL_YAML:
            raise ConfigError("the Python library ruamel.yaml is needed to read %s: install it on the controller "
                              "(pip install ruamel.yaml)." % self.source)
        try:
            documents, composer = compose(text)
        except YAMLError as exc:
            # The exception text quotes the offending line, which may hold key material: report position only.
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            where = " at line %d, column %d" % (mark.line + 1, mark.column + 1) if mark is not None else ""
            problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or type(exc).__name__
            raise ConfigError("%s is not valid YAML%s: %s. Fix the file (or fetch it again from the node)." % (self.source, where, problem)) from None
        except RecursionError:
            # Nothing the collection reads nests more than a few levels: this is not the file it should be.
            raise ConfigError("%s nests YAML collections deeper than Python can read: it is not a machine config, talosconfig or "
                              "secrets bundle. Check the path, or fetch the file again." % self.source) from None
        self.text = text
        self.documents = documents
        self.composer = composer
        self._infer_layout()

    def reload(self, text):
        """Replace the whole text (e.g. to undo a failed edit)."""
        self._load(text)

    def _infer_layout(self):
        """Learn the file's indentation so inserted blocks look like their neighbours."""
        step = None
        offset = None
        pending = [doc for doc in self.documents if doc is not None]
        while pending and (step is None or offset is None):
            node = pending.pop(0)
            if _is_mapping(node):
                for key_node, value_node in node.value:
                    if _is_mapping(value_node) and not value_node.flow_style and step is None:
                        step = value_node.start_mark.column - key_node.start_mark.column
                    if _is_sequence(value_node) and not value_node.flow_style and offset is None:
                        offset = value_node.start_mark.column - key_node.start_mark.column
                    pending.append(value_node)
            elif _is_sequence(node):
                pending.extend(node.value)
        self.indent_step = step if step and step > 0 else _DEFAULT_INDENT
        self.sequence_offset = offset if offset is not None and offset >= 0 else self.indent_step

    # -- navigation ----------------------------------------------------------------------

    def entry(self, mapping, key, where):
        """(key node, value node) of `key` in `mapping`, None when absent; duplicates are an error."""
        found = None
        for key_node, value_node in mapping.value:
            if _is_scalar(key_node) and key_node.value == key:
                if found is not None:
                    raise ConfigError("%s: %s appears twice (lines %d and %d): keep only one." % (
                        self.source, _join(where, key), found[0].start_mark.line + 1, key_node.start_mark.line + 1))
                found = (key_node, value_node)
        return found

    def mapping_at(self, node, path, where=""):
        """The mapping at `path` under `node`; None when a step is absent or empty."""
        for index, key in enumerate(path):
            found = self.entry(node, key, _join(where, *path[:index]))
            if found is None or _is_empty(found[1]):
                return None
            node = found[1]
            if not _is_mapping(node):
                raise ConfigError("%s: %s must be a mapping (key: value lines), found a %s: restore the structure "
                                  "talosctl generates." % (self.source, _join(where, *path[:index + 1]), node.id))
        return node

    def scalar_value(self, node, what):
        """The string of a scalar node; ConfigError when it is a list or mapping."""
        if not _is_scalar(node):
            raise ConfigError("%s: %s must be a single value, found a %s." % (self.source, what, node.id))
        return node.value

    # -- spans ---------------------------------------------------------------------------

    def _after_colon(self, key_node):
        colon = self.text.find(":", key_node.end_mark.index)
        if colon < 0:  # pragma: no cover - a parsed mapping entry always has its colon
            raise ConfigError("%s: cannot locate the value of %s." % (self.source, key_node.value))
        return colon + 1

    def content_end(self, node):
        """Index just after the last character of a node, excluding trailing comments and blank lines.

        Marks of block collections and block scalars extend to the next token, across comments
        that belong to the following lines; those must stay outside the edited span.
        """
        if _is_scalar(node):
            if node.style in ("|", ">"):
                end = node.end_mark.index
                while end > node.start_mark.index and self.text[end - 1] in " \t\r\n":
                    end -= 1
                return end
            return node.end_mark.index
        if node.flow_style:
            return node.end_mark.index
        if _is_mapping(node):
            return self.entry_end(*node.value[-1])
        last = node.value[-1]
        if _is_empty(last) and last.value == "":
            raise ConfigError("%s: a list ends with an empty item (line %d): remove the lone `-`." % (self.source, last.start_mark.line + 1))
        return self.content_end(last)

    def entry_end(self, key_node, value_node):
        """End of a `key: value` entry's content."""
        if _is_scalar(value_node) and value_node.style is None and value_node.value == "":
            # An empty value's mark points at the next token; the entry ends at its colon.
            return self._after_colon(key_node)
        return self.content_end(value_node)

    def _line_start(self, index):
        return self.text.rfind("\n", 0, index) + 1

    def _line_end(self, index):
        """Index after the line break that ends the line holding `index` (or the text's end)."""
        newline = self.text.find("\n", index)
        return len(self.text) if newline < 0 else newline + 1

    def _entry_lines(self, key_node, value_node, where):
        """Whole lines of a block-style entry: from its key's line start to after its last line break."""
        line_start = self._line_start(key_node.start_mark.index)
        if self.text[line_start:key_node.start_mark.index].strip():
            raise ConfigError("%s: %s does not start its own line (flow style or `- key:` form): the rotation edits only "
                              "block-style YAML as talosctl writes it; rewrite that part in block style." % (self.source, where))
        end = self.entry_end(key_node, value_node)
        line_end = self._line_end(end)
        rest = self.text[end:line_end].strip()
        if rest and not rest.startswith("#"):
            raise ConfigError("%s: %s shares its last line with other content: rewrite that part in block style." % (self.source, where))
        return line_start, line_end

    # -- edits ---------------------------------------------------------------------------

    def _splice(self, start, end, new_text, what):
        text = self.text[:start] + new_text + self.text[end:]
        try:
            self._load(text)
        except ConfigError as exc:  # pragma: no cover - would be a bug in the renderer
            raise ConfigError("%s: editing %s produced invalid YAML (%s); nothing was changed. Please report this." % (self.source, what, exc)) from None

    def render_literal(self, header, value, indent):
        """`|` block text for `value` with content lines at `indent` (no final line break)."""
        lines = value.replace("\r\n", "\n").rstrip("\n").split("\n")
        newline = self.newline
        return header + "".join(newline + (" " * indent + line if line else "") for line in lines)

    def render_entry(self, key, value, column, sequence_offset=None):
        """`key: value` text for an entry whose key sits at `column` (first line not indented, no final break).

        Values: str (one line), Literal (`|` block), dict (block mapping), list/tuple (block sequence).
        """
        head = render_inline(key) + ":"
        if isinstance(value, Literal):
            return head + " " + self.render_literal("|", value, column + self.indent_step)
        if isinstance(value, str):
            return head + " " + render_inline(value)
        newline = self.newline
        if isinstance(value, dict):
            if not value:
                return head + " {}"
            child = column + self.indent_step
            return head + "".join(newline + " " * child + self.render_entry(k, v, child) for k, v in value.items())
        if not value:
            return head + " []"
        dash = column + (self.sequence_offset if sequence_offset is None else sequence_offset)
        return head + "".join(newline + " " * dash + "- " + self._render_item(item, dash + 2) for item in value)

    def _render_item(self, item, column):
        if isinstance(item, Literal):
            return self.render_literal("|", item, column)
        if isinstance(item, str):
            return render_inline(item)
        if isinstance(item, dict) and item:
            return (self.newline + " " * column).join(self.render_entry(k, v, column) for k, v in item.items())
        raise TypeError("cannot render list item %r" % (item,))

    def replace_scalar(self, key_node, value_node, value, where):
        """Replace a scalar value in place, keeping its quoting (or `|` header and indentation)."""
        start = value_node.start_mark.index
        end = self.entry_end(key_node, value_node)
        if _is_empty(value_node) and value_node.value == "":
            start = end
            value_node = None
        if isinstance(value, Literal):
            header = "|"
            indent = key_node.start_mark.column + self.indent_step
            if value_node is not None and value_node.style == "|":
                header_end = self.text.find("\n", start)
                header = self.text[start:header_end].rstrip("\r")
                for line in self.text[header_end + 1:end].split("\n"):
                    if line.strip():
                        indent = len(line) - len(line.lstrip(" "))
                        break
            new_text = self.render_literal(header, value, indent)
        else:
            keep_quotes = value_node is not None and value_node.style in ("'", '"') and value_node.value != ""
            new_text = render_inline(value, value_node.style if keep_quotes else None)
        if value_node is None:
            new_text = " " + new_text
        self._splice(start, end, new_text, where)

    def replace_entry(self, key_node, value_node, value, where, sequence_offset=None):
        """Rewrite a whole `key: value` entry (the key keeps its place and column)."""
        self._entry_lines(key_node, value_node, where)  # refuses entries that are not block style
        start = key_node.start_mark.index
        end = self.entry_end(key_node, value_node)
        self._splice(start, end, self.render_entry(key_node.value, value, key_node.start_mark.column, sequence_offset), where)

    def remove_entry(self, key_node, value_node, where):
        """Delete the lines of one entry; comments above it belong to the neighbours and stay."""
        start, end = self._entry_lines(key_node, value_node, where)
        if end == len(self.text) and not self.text.endswith("\n") and start > 0:
            # Last line without a final line break: drop the break before it so the file still ends the same way.
            start -= 2 if self.text[start - 2:start] == "\r\n" else 1
        self._splice(start, end, "", where)

    def insert_entry(self, mapping, key, value, after, where, at_start=False):
        """Add `key: value` to a block mapping after the first existing key of `after`.

        Without such a key it goes to the mapping's end, or its start with `at_start`. The new entry
        takes the mapping's indentation, so it sits next to its siblings as talosctl would have
        written it.
        """
        if not _is_mapping(mapping) or mapping.flow_style or not mapping.value:
            raise ConfigError("%s: %s is written in flow style ({...}): the rotation edits only block-style YAML as "
                              "talosctl writes it; rewrite it in block style." % (self.source, where or "the document"))
        anchor = None
        for candidate in after:
            anchor = self.entry(mapping, candidate, where)
            if anchor is not None:
                break
        column = mapping.value[0][0].start_mark.column
        rendered = " " * column + self.render_entry(key, value, column)
        if anchor is None and at_start:
            first_key = mapping.value[0][0]
            line_start = self._line_start(first_key.start_mark.index)
            if self.text[line_start:first_key.start_mark.index].strip():
                raise ConfigError("%s: %s does not start its own line: rewrite that part in block style." % (self.source, first_key.value))
            self._splice(line_start, line_start, rendered + self.newline, _join(where, key))
            return
        if anchor is None:
            anchor = mapping.value[-1]
        self._entry_lines(anchor[0], anchor[1], _join(where, anchor[0].value))  # the anchor must be block style too
        position = self._line_end(self.entry_end(*anchor))
        if position == len(self.text) and not self.text.endswith("\n"):
            self._splice(position, position, self.newline + rendered, _join(where, key))
        else:
            self._splice(position, position, rendered + self.newline, _join(where, key))

    def set_scalar_entry(self, mapping, key, value, after, where, at_start=False):
        """Bring `key` of a block mapping to a one-value state: edit in place, insert, or rewrite."""
        found = self.entry(mapping, key, where)
        if found is None:
            self.insert_entry(mapping, key, value, after, where, at_start)
        elif _is_scalar(found[1]):
            self.check_no_anchor(found[1], _join(where, key))
            self.replace_scalar(found[0], found[1], value, _join(where, key))
        else:
            self.replace_entry(found[0], found[1], value, _join(where, key))

    def set_block_entry(self, mapping, key, value, after, where, at_start=False):
        """Bring `key` to a list or mapping value: rewrite the entry (keeping its list indentation) or insert it."""
        found = self.entry(mapping, key, where)
        if found is None:
            self.insert_entry(mapping, key, value, after, where, at_start)
            return
        self.check_no_anchor(found[1], _join(where, key))
        offset = None
        if _is_sequence(found[1]) and not found[1].flow_style:
            offset = found[1].start_mark.column - found[0].start_mark.column
        self.replace_entry(found[0], found[1], value, _join(where, key), sequence_offset=offset)

    def check_no_anchor(self, node, where):
        """Refuse to edit a value that carries a YAML anchor: other places may alias it."""
        if self.text[node.start_mark.index:node.start_mark.index + 1] == "&":
            raise ConfigError("%s: %s carries a YAML anchor (&name): editing it would also change every alias. "
                              "Write the value out instead of anchoring it." % (self.source, where))

    # -- verification --------------------------------------------------------------------

    def shape(self, skip):
        """A comparable picture of every node except the entries in `skip` ({(document index, key path)}).

        Used before/after an edit to prove nothing outside the owned entries changed meaning or style. Two shapes
        are equal when their pictures are, composed the same way: an edit can change which composer reads the text
        (an empty value added or removed), and then both texts are composed again with ruamel.yaml to compare.
        """
        return _Shape(self, self.text, self.composer, skip,
                      tuple(self._shape(doc, index, (), skip) for index, doc in enumerate(self.documents)))

    def _shape(self, node, doc_index, path, skip):
        if node is None:
            return None
        if _is_scalar(node):
            return ("scalar", _tag(node), node.value, node.style)
        if _is_mapping(node):
            entries = []
            for key_node, value_node in node.value:
                key = key_node.value if _is_scalar(key_node) else repr(self._shape(key_node, doc_index, path, skip))
                if (doc_index, path + (key,)) in skip:
                    continue
                entries.append((key, self._shape(value_node, doc_index, path + (key,), skip)))
            return ("mapping", _tag(node), bool(node.flow_style), tuple(entries))
        return ("sequence", _tag(node), bool(node.flow_style),
                tuple(self._shape(item, doc_index, path + ("[%d]" % index,), skip) for index, item in enumerate(node.value)))


class _Shape:
    """YAMLText.shape's picture of one text, comparable with the picture of another text however each was composed."""

    __hash__ = None

    def __init__(self, yaml_text, text, composer, skip, picture):
        self._yaml_text = yaml_text
        self._text = text
        self.composer = composer
        self._skip = skip
        self.picture = picture

    def _ruamel_picture(self):
        if self.composer == COMPOSER_RUAMEL:
            return self.picture
        documents = list(YAML(typ="rt").compose_all(self._text))
        return tuple(self._yaml_text._shape(doc, index, (), self._skip) for index, doc in enumerate(documents))  # pylint: disable=protected-access

    def __eq__(self, other):
        if not isinstance(other, _Shape):
            return NotImplemented
        if self.composer == other.composer:
            return self.picture == other.picture
        try:
            return self._ruamel_picture() == other._ruamel_picture()  # pylint: disable=protected-access
        except YAMLError:  # a text only libyaml reads (a tab as a separator): not the same shape, the edit is refused
            return False


def _join(*parts):
    return ".".join(part for part in parts if part)


# --- machine config --------------------------------------------------------------------------

class _CASlot(NamedTuple):
    """Where one CA lives in a machine config."""

    document: str                 # _V1ALPHA1 or LOCATION_KUBE_APISERVER_CA_CONFIG
    parent: tuple[str, ...]       # mapping holding the issuing and accepted entries
    issuing: str                  # "ca" (v1alpha1) or "issuingCA" (v1.14+ document)
    cert_field: str               # "crt" (v1alpha1) or "cert" (v1.14+ document)
    base64: bool                  # True: base64 of PEM (v1alpha1); False: raw PEM strings
    issuing_after: tuple[str, ...]  # existing keys after which a missing issuing entry goes (Talos field order)
    empty_key_on_worker: bool     # v1alpha1 workers carry `key: ""`


_TALOS_SLOT = _CASlot(_V1ALPHA1, ("machine",), "ca", "crt", True, ("token", "type"), True)
_CLUSTER_CA_SLOT = _CASlot(_V1ALPHA1, ("cluster",), "ca", "crt", True,
                           ("secretboxEncryptionSecret", "aescbcEncryptionSecret", "token", "network", "clusterName"), True)
_KUBE_CA_DOCUMENT_SLOT = _CASlot(LOCATION_KUBE_APISERVER_CA_CONFIG, (), "issuingCA", "cert", False, ("kind", "apiVersion"), False)
_AGGREGATOR_DOCUMENT_SLOT = _CASlot(LOCATION_AGGREGATOR_CA_CONFIG, (), "issuingCA", "cert", False, ("kind", "apiVersion"), False)


class MachineConfig:
    """A Talos machine config (single or multi-document) whose root CA fields can be read and set.

    set_ca() changes only the owned entries (`machine.ca`, `machine.acceptedCAs`, `cluster.ca`,
    `cluster.acceptedCAs`, or `issuingCA`/`acceptedCAs` of the KubeAPIServerCAConfig document);
    every other byte of the file stays as it was. Within an owned entry, a changed certificate or
    key is replaced in place (quoting and `|` header kept), while a changed acceptedCAs list is
    rewritten whole, so comments between its items do not survive.
    """

    def __init__(self, yaml_text, source):
        self._yaml = yaml_text
        self.source = source
        self._validate()

    @classmethod
    def parse(cls, data, source="machine config"):
        """Parse machine config bytes; ConfigError when it is not a usable Talos machine config."""
        return cls(YAMLText.from_bytes(data, source), source)

    def to_bytes(self):
        """The config as bytes, ready to apply."""
        return self._yaml.to_bytes()

    # -- structure -----------------------------------------------------------------------

    def _documents_by_kind(self):
        v1alpha1 = []
        kube_ca = []
        for index, doc in enumerate(self._yaml.documents):
            if _is_empty(doc):
                continue
            if not _is_mapping(doc):
                raise ConfigError("%s: document %d is a %s, not a mapping: every Talos config document is a mapping "
                                  "(the v1alpha1 config or apiVersion/kind documents)." % (self.source, index + 1, doc.id))
            kind = self._yaml.entry(doc, "kind", "document %d" % (index + 1))
            if kind is None:
                version = self._yaml.entry(doc, "version", "document %d" % (index + 1))
                if version is None or not _is_scalar(version[1]) or version[1].value != _V1ALPHA1:
                    raise ConfigError("%s: document %d has neither `kind` nor `version: v1alpha1`: Talos cannot read it; "
                                      "remove it or add its apiVersion/kind." % (self.source, index + 1))
                v1alpha1.append(index)
            elif _is_scalar(kind[1]) and kind[1].value == LOCATION_KUBE_APISERVER_CA_CONFIG:
                kube_ca.append(index)
        return v1alpha1, kube_ca

    def _v1alpha1(self):
        v1alpha1, _kube_ca = self._documents_by_kind()
        return self._yaml.documents[v1alpha1[0]]

    def _kube_ca_document(self):
        _v1alpha1, kube_ca = self._documents_by_kind()
        return self._yaml.documents[kube_ca[0]] if kube_ca else None

    def _documents_of_kind(self, kind):
        """Indexes of the apiVersion/kind documents of `kind`."""
        found = []
        for index, doc in enumerate(self._yaml.documents):
            entry = self._yaml.entry(doc, "kind", "document %d" % (index + 1)) if _is_mapping(doc) else None
            if entry is not None and _is_scalar(entry[1]) and entry[1].value == kind:
                found.append(index)
        return found

    def _aggregator_document(self):
        found = self._documents_of_kind(LOCATION_AGGREGATOR_CA_CONFIG)
        return self._yaml.documents[found[0]] if found else None

    def _validate(self):
        v1alpha1, kube_ca = self._documents_by_kind()
        if not v1alpha1:
            raise ConfigError("%s has no v1alpha1 document (the one with `version: v1alpha1`, `machine:` and `cluster:`): "
                              "give the node's full machine config." % self.source)
        if len(v1alpha1) > 1:
            raise ConfigError("%s has %d v1alpha1 documents (documents %s): Talos accepts one; keep only one."
                              % (self.source, len(v1alpha1), ", ".join(str(index + 1) for index in v1alpha1)))
        if len(kube_ca) > 1:
            raise ConfigError("%s has %d KubeAPIServerCAConfig documents: Talos accepts one; keep only one." % (self.source, len(kube_ca)))
        doc = self._yaml.documents[v1alpha1[0]]
        machine = self._yaml.mapping_at(doc, ("machine",))
        if machine is None:
            raise ConfigError("%s: the v1alpha1 document has no `machine` section: give the node's full machine config." % self.source)
        machine_type = self._yaml.entry(machine, "type", "machine")
        if machine_type is None or not _is_scalar(machine_type[1]) or machine_type[1].value not in MACHINE_TYPES:
            raise ConfigError("%s: machine.type must be one of %s: set it to the node's role." % (self.source, ", ".join(MACHINE_TYPES)))
        if kube_ca:
            cluster = self._yaml.mapping_at(doc, ("cluster",))
            legacy = " and ".join("cluster." + key for key in ("ca", _ACCEPTED) if cluster is not None and self._present(cluster, key, "cluster"))
            if legacy:
                raise ConfigError("%s sets the Kubernetes CA twice, in %s and in the KubeAPIServerCAConfig document: Talos "
                                  "rejects that (validation conflict). Remove %s from the v1alpha1 document." % (self.source, legacy, legacy))
        self._validate_aggregator(doc)
        for kind in (KIND_TALOS, KIND_KUBERNETES):
            # Duplicate owned keys: YAML loaders keep the last one, Talos may disagree; refuse before editing either.
            slot = self._slot(kind)
            parent = self._slot_parent(slot)
            if parent is not None:
                self._yaml.entry(parent, slot.issuing, self._where(slot))
                self._yaml.entry(parent, _ACCEPTED, self._where(slot))

    def _validate_aggregator(self, v1alpha1_doc):
        documents = self._documents_of_kind(LOCATION_AGGREGATOR_CA_CONFIG)
        if len(documents) > 1:
            raise ConfigError("%s has %d %s documents: Talos accepts one; keep only one."
                              % (self.source, len(documents), LOCATION_AGGREGATOR_CA_CONFIG))
        cluster = self._yaml.mapping_at(v1alpha1_doc, ("cluster",))
        if documents and cluster is not None and self._present(cluster, "aggregatorCA", "cluster"):
            raise ConfigError("%s sets the aggregator CA twice, in %s and in the %s document: Talos rejects that. Remove "
                              "%s from the v1alpha1 document." % (
                                  self.source, LOCATION_LEGACY_AGGREGATOR_CA, LOCATION_AGGREGATOR_CA_CONFIG, LOCATION_LEGACY_AGGREGATOR_CA))
        if documents:
            parent = self._slot_parent(_AGGREGATOR_DOCUMENT_SLOT)
            if parent is not None:
                self._yaml.entry(parent, _AGGREGATOR_DOCUMENT_SLOT.issuing, LOCATION_AGGREGATOR_CA_CONFIG)
                self._yaml.entry(parent, _ACCEPTED, LOCATION_AGGREGATOR_CA_CONFIG)

    def _present(self, mapping, key, where):
        found = self._yaml.entry(mapping, key, where)
        return found is not None and not _is_empty(found[1])

    @property
    def machine_type(self):
        """`init`, `controlplane` or `worker`."""
        machine = self._yaml.mapping_at(self._v1alpha1(), ("machine",))
        return self._yaml.entry(machine, "type", "machine")[1].value

    @property
    def is_control_plane(self):
        """True for `init` and `controlplane` nodes (they hold CA keys)."""
        return self.machine_type != "worker"

    @property
    def kubernetes_ca_location(self):
        """`KubeAPIServerCAConfig` when that (v1.14+) document exists, else `cluster.ca`."""
        if self._kube_ca_document() is not None:
            return LOCATION_KUBE_APISERVER_CA_CONFIG
        return LOCATION_CLUSTER_CA

    @property
    def aggregator_ca_location(self):
        """Where the aggregator CA lives: `KubeAggregatorCAConfig` (v1.14+, rotatable), `cluster.aggregatorCA` (legacy,
        no accepted list), or None (a worker, or a config without one)."""
        if self._aggregator_document() is not None:
            return LOCATION_AGGREGATOR_CA_CONFIG
        cluster = self._yaml.mapping_at(self._v1alpha1(), ("cluster",))
        if cluster is not None and self._present(cluster, "aggregatorCA", "cluster"):
            return LOCATION_LEGACY_AGGREGATOR_CA
        return None

    @property
    def virtual_ips(self):
        """Shared virtual IPs the config declares: machine.network.interfaces[].vip.ip (and their vlans[]), and the
        names of Layer2VIPConfig / HCloudVIPConfig documents. Read leniently: an odd shape declares nothing."""
        found = []
        network = _child(_child(self._v1alpha1(), "machine"), "network")
        for interface in _items(_child(network, "interfaces")):
            for holder in [interface] + _items(_child(interface, "vlans")):
                found.append(_child(_child(holder, "vip"), "ip"))
        for document in self._yaml.documents:
            kind = _child(document, "kind")
            if _is_scalar(kind) and kind.value in VIP_DOCUMENT_KINDS:
                found.append(_child(document, "name"))
        return tuple(dict.fromkeys(node.value.strip() for node in found if _is_scalar(node) and node.value.strip()))

    # -- service-account keys (v1.14+) -------------------------------------------------------

    @property
    def service_account_location(self):
        """`KubeServiceAccountConfig` (v1.14+), `cluster.serviceAccount` (older: no accepted list), or None (workers)."""
        if _ServiceAccountDocument(self).document() is not None:
            return LOCATION_SERVICE_ACCOUNT_CONFIG
        cluster = self._yaml.mapping_at(self._v1alpha1(), ("cluster",))
        if cluster is not None and self._present(cluster, "serviceAccount", "cluster"):
            return LOCATION_LEGACY_SERVICE_ACCOUNT
        return None

    def get_service_account(self):
        """ServiceAccountFields of the KubeServiceAccountConfig document, None without one."""
        return _ServiceAccountDocument(self).get()

    def set_service_account(self, signing_key, accepted):
        """Bring issuer.privateKey and accepted.publicKeys to exactly this state; True when the text changed.

        Keys compare by DER (and label), so PEM whitespace differences write nothing."""
        return _ServiceAccountDocument(self).set(signing_key, accepted)

    # -- CA fields -----------------------------------------------------------------------

    def _slot(self, kind):
        if kind == KIND_TALOS:
            return _TALOS_SLOT
        if kind == KIND_KUBERNETES:
            return _KUBE_CA_DOCUMENT_SLOT if self._kube_ca_document() is not None else _CLUSTER_CA_SLOT
        if kind == KIND_AGGREGATOR:
            if self._aggregator_document() is None:
                # The legacy field has no accepted list: no state of a graceful rotation can be written there.
                raise ConfigError("%s has no %s document (its aggregator CA is %s): the aggregator CA can be rotated "
                                  "without downtime only on Talos v1.14+, where that document has accepted CAs. Upgrade "
                                  "the node to Talos v1.14 or later first." % (
                                      self.source, LOCATION_AGGREGATOR_CA_CONFIG,
                                      "in %s, without accepted CAs" % LOCATION_LEGACY_AGGREGATOR_CA
                                      if self.aggregator_ca_location else "not set at all"))
            return _AGGREGATOR_DOCUMENT_SLOT
        raise ValueError("unknown CA kind %r: use %r, %r or %r" % (kind, KIND_TALOS, KIND_KUBERNETES, KIND_AGGREGATOR))

    def _where(self, slot, *fields):
        if slot.document == _V1ALPHA1:
            return _join(*(slot.parent + fields))
        return slot.document + " " + (_join(*fields) or "document")

    def _slot_document(self, slot):
        if slot.document == _V1ALPHA1:
            return self._v1alpha1()
        if slot.document == LOCATION_AGGREGATOR_CA_CONFIG:
            return self._aggregator_document()
        return self._kube_ca_document()

    def _slot_parent(self, slot):
        return self._yaml.mapping_at(self._slot_document(slot), slot.parent)

    def _required_parent(self, slot):
        parent = self._slot_parent(slot)
        if parent is None:
            raise ConfigError("%s has no `%s` section to hold the CA: add the section as talosctl generates it."
                              % (self.source, self._where(slot)))
        if parent.flow_style:
            raise ConfigError("%s: `%s` is written in flow style ({...}): the rotation edits only block-style YAML as "
                              "talosctl writes it; rewrite it in block style." % (self.source, self._where(slot) or "the document"))
        return parent

    def _read_pem(self, slot, node, what, private):
        """PEM bytes of one CA field (None when empty); ConfigError when it is not what Talos expects."""
        value = self._yaml.scalar_value(node, what)
        if _is_empty(node) or value == "":
            return None
        label = "%s: %s" % (self.source, what)
        pem = decode_base64_pem(value, label) if slot.base64 else value.encode("utf-8")
        if private:
            private_key_identity(pem, label)
        else:
            certificate_ders(pem, label)
        return pem

    def _read_issuing(self, slot, parent):
        where = self._where(slot, slot.issuing)
        found = self._yaml.entry(parent, slot.issuing, self._where(slot))
        if found is None or _is_empty(found[1]):
            return None, None
        if not _is_mapping(found[1]):
            raise ConfigError("%s: %s must be a mapping with `%s` and `key`: restore the structure talosctl generates."
                              % (self.source, where, slot.cert_field))
        values = {}
        for field, private in ((slot.cert_field, False), (_KEY, True)):
            entry = self._yaml.entry(found[1], field, where)
            values[field] = None if entry is None else self._read_pem(slot, entry[1], _join(where, field), private)
        if values[slot.cert_field] is None and values[_KEY] is not None:
            raise ConfigError("%s: %s has a key but no certificate: put the CA certificate in %s."
                              % (self.source, where, _join(where, slot.cert_field)))
        return values[slot.cert_field], values[_KEY]

    def _read_accepted(self, slot, parent):
        where = self._where(slot, _ACCEPTED)
        found = self._yaml.entry(parent, _ACCEPTED, self._where(slot))
        if found is None or _is_empty(found[1]):
            return ()
        if not _is_sequence(found[1]):
            raise ConfigError("%s: %s must be a list: restore the structure talosctl generates." % (self.source, where))
        accepted = []
        for index, item in enumerate(found[1].value):
            item_where = "%s[%d]" % (where, index)
            if slot.base64:
                crt = self._yaml.entry(item, "crt", item_where) if _is_mapping(item) else None
                if crt is None:
                    raise ConfigError("%s: %s must be a mapping with `crt` (base64 of the CA certificate PEM)." % (self.source, item_where))
                pem = self._read_pem(slot, crt[1], item_where + ".crt", False)
            else:
                pem = self._read_pem(slot, item, item_where, False)
            if pem is None:
                raise ConfigError("%s: %s is empty: remove the entry or put a CA certificate there." % (self.source, item_where))
            accepted.append(pem)
        return tuple(accepted)

    def get_ca(self, kind):
        """The issuing CA (certificate, key or None) and accepted CAs of `kind` (KIND_TALOS / KIND_KUBERNETES)."""
        slot = self._slot(kind)
        parent = self._slot_parent(slot)
        if parent is None:
            return CAFields(None, None, ())
        issuing_crt, issuing_key = self._read_issuing(slot, parent)
        return CAFields(issuing_crt, issuing_key, self._read_accepted(slot, parent))

    def set_ca(self, kind, issuing_crt, issuing_key, accepted):
        """Bring the CA fields of `kind` to exactly this state; True when the text changed.

        Certificates are compared by DER, so a state that differs only in PEM whitespace or base64
        wrapping is already reached and nothing is written. Workers never hold a key.
        """
        slot = self._slot(kind)
        label = "the new %s CA" % kind
        issuing_crt = _to_bytes(issuing_crt) if issuing_crt else None
        issuing_key = _to_bytes(issuing_key) if issuing_key else None
        accepted = tuple(_to_bytes(pem) for pem in accepted)
        wanted = (certificate_ders(issuing_crt, label + " certificate")[0] if issuing_crt else None,
                  private_key_identity(issuing_key, label + " key") if issuing_key else None,
                  tuple(certificate_ders(pem, "accepted CA %d of %s" % (index + 1, kind))[0] for index, pem in enumerate(accepted)))
        self._check_state_allowed(slot, kind, issuing_crt, issuing_key, accepted)
        current = _identity(self.get_ca(kind))
        if current == wanted:
            return False
        original = self._yaml.text
        document_index = self._yaml.documents.index(self._slot_document(slot))
        owned = {(document_index, slot.parent + (slot.issuing,)), (document_index, slot.parent + (_ACCEPTED,))}
        shape_before = self._yaml.shape(owned)
        try:
            if current[:2] != wanted[:2]:
                self._write_issuing(slot, issuing_crt, issuing_key, current, wanted)
            if current[2] != wanted[2]:
                self._write_accepted(slot, accepted)
            if _identity(self.get_ca(kind)) != wanted or self._yaml.shape(owned) != shape_before:
                raise ConfigError("%s: the edit of the %s CA did not read back as intended; nothing was changed. "
                                  "Please report this with the config's layout (without its keys)." % (self.source, kind))
        except BaseException:
            self._yaml.reload(original)
            raise
        return self._yaml.text != original

    def _check_state_allowed(self, slot, kind, issuing_crt, issuing_key, accepted):
        where = self._where(slot, slot.issuing)
        if self.machine_type == "worker":
            if issuing_key:
                raise ConfigError("%s is a worker: workers never hold a CA key (Talos rejects it and workers get their "
                                  "certificates from trustd); set only the certificate in %s." % (self.source, where))
        elif not (issuing_crt and issuing_key):
            raise ConfigError("%s is a %s node: it needs the issuing %s CA certificate and its key in %s (it signs with it)."
                              % (self.source, self.machine_type, kind, where))
        if issuing_key and not issuing_crt:
            raise ConfigError("a %s CA key was given without its certificate for %s: give both." % (kind, self.source))
        if not issuing_crt and not accepted:
            raise ConfigError("that state would leave %s with no %s CA at all (neither %s nor %s): Talos needs an issuing "
                              "CA or accepted CAs." % (self.source, kind, where, self._where(slot, _ACCEPTED)))

    def _encode(self, slot, pem):
        if slot.base64:
            return encode_base64_pem(pem)
        return Literal(pem.decode("ascii"))

    def _issuing_mapping(self, slot):
        found = self._yaml.entry(self._required_parent(slot), slot.issuing, self._where(slot))
        return found[1]

    def _write_issuing(self, slot, issuing_crt, issuing_key, current, wanted):
        where = self._where(slot, slot.issuing)
        parent = self._required_parent(slot)
        found = self._yaml.entry(parent, slot.issuing, self._where(slot))
        if issuing_crt is None:
            if found is not None:
                self._yaml.remove_entry(found[0], found[1], where)
            return
        if found is not None and _is_mapping(found[1]) and not found[1].flow_style:
            if current[0] != wanted[0]:
                self._yaml.set_scalar_entry(found[1], slot.cert_field, self._encode(slot, issuing_crt), (), where)
            if current[1] != wanted[1]:
                mapping = self._issuing_mapping(slot)
                if issuing_key is not None:
                    self._yaml.set_scalar_entry(mapping, _KEY, self._encode(slot, issuing_key), (slot.cert_field,), where)
                elif self._yaml.entry(mapping, _KEY, where) is not None:
                    # A worker: keep the `key: ""` line Talos writes, emptied.
                    self._yaml.set_scalar_entry(mapping, _KEY, "", (slot.cert_field,), where)
            return
        value = {slot.cert_field: self._encode(slot, issuing_crt)}
        if issuing_key is not None:
            value[_KEY] = self._encode(slot, issuing_key)
        elif slot.empty_key_on_worker:
            value[_KEY] = ""
        if found is not None:
            self._yaml.check_no_anchor(found[1], where)
            self._yaml.replace_entry(found[0], found[1], value, where)
        else:
            self._yaml.insert_entry(parent, slot.issuing, value, slot.issuing_after, self._where(slot))

    def _write_accepted(self, slot, accepted):
        where = self._where(slot, _ACCEPTED)
        parent = self._required_parent(slot)
        found = self._yaml.entry(parent, _ACCEPTED, self._where(slot))
        if not accepted:
            # Talos omits an empty acceptedCAs (omitempty) in v1alpha1 and in KubeAPIServerCAConfig alike,
            # so the last removal deletes the key rather than leaving `acceptedCAs: []`.
            if found is not None:
                self._yaml.remove_entry(found[0], found[1], where)
            return
        if slot.base64:
            items = [{"crt": self._encode(slot, pem)} for pem in accepted]
        else:
            items = [self._encode(slot, pem) for pem in accepted]
        self._yaml.set_block_entry(parent, _ACCEPTED, items, (slot.issuing,) + slot.issuing_after, self._where(slot))

    # -- read-only views for reports (talos_cert_info) --------------------------------------

    def _document_of_kind(self, kind):
        return next((document for document in self._yaml.documents
                     if _is_scalar(_child(document, "kind")) and _child(document, "kind").value == kind), None)

    def _pem_value(self, node, base64_encoded, what):
        """PEM bytes of a certificate or key value (None when empty); ConfigError when it is not PEM."""
        if _is_empty(node) or not _is_scalar(node) or not node.value.strip():
            return None
        label = "%s: %s" % (self.source, what)
        return decode_base64_pem(node.value, label) if base64_encoded else node.value.encode("utf-8")

    @property
    def cluster_identity(self):
        """(cluster id, cluster name) as the config declares them - `cluster.id` / `cluster.clusterName`, or the v1.14+
        `DiscoveryIdentityConfig.clusterID` / `KubeClusterConfig.clusterName` - None where absent (a worker may lack both)."""
        cluster = _child(self._v1alpha1(), "cluster")
        values = []
        for field, kind, document_field in (("id", "DiscoveryIdentityConfig", "clusterID"),
                                            ("clusterName", "KubeClusterConfig", "clusterName")):
            node = _child(cluster, field)
            if not _is_scalar(node) or _is_empty(node):
                node = _child(self._document_of_kind(kind), document_field)
            values.append(node.value.strip() if _is_scalar(node) and not _is_empty(node) else None)
        return tuple(values)

    def report_cas(self):
        """Every CA and signing key the config holds, public parts only, for reports: {name: CAFields}.

        `talos`, `kubernetes` as get_ca(); `aggregator` (KubeAggregatorCAConfig or the legacy cluster.aggregatorCA, no
        accepted list there), `etcd` (cluster.etcd.ca); `service_account`: the issuer's private key in issuing_key and the
        accepted public keys in accepted (KubeServiceAccountConfig, or the legacy cluster.serviceAccount.key). A CA the
        config does not hold (workers hold no aggregator, etcd or service-account material) is absent.
        """
        found = {kind: self.get_ca(kind) for kind in (KIND_TALOS, KIND_KUBERNETES)}
        cluster = _child(self._v1alpha1(), "cluster")
        aggregator = self._document_of_kind("KubeAggregatorCAConfig")
        if aggregator is not None:
            issuing = _child(aggregator, "issuingCA")
            found["aggregator"] = CAFields(
                self._pem_value(_child(issuing, "cert"), False, "KubeAggregatorCAConfig issuingCA.cert"), None,
                tuple(pem for index, item in enumerate(_items(_child(aggregator, _ACCEPTED)))
                      for pem in [self._pem_value(item, False, "KubeAggregatorCAConfig acceptedCAs[%d]" % index)] if pem))
        else:
            crt = self._pem_value(_child(_child(cluster, "aggregatorCA"), "crt"), True, "cluster.aggregatorCA.crt")
            if crt:
                found["aggregator"] = CAFields(crt, None, ())
        crt = self._pem_value(_child(_child(_child(cluster, "etcd"), "ca"), "crt"), True, "cluster.etcd.ca.crt")
        if crt:
            found["etcd"] = CAFields(crt, None, ())
        service_account = self._document_of_kind("KubeServiceAccountConfig")
        if service_account is not None:
            key = self._pem_value(_child(_child(service_account, "issuer"), "privateKey"), False,
                                  "KubeServiceAccountConfig issuer.privateKey")
            accepted = _items(_child(_child(service_account, "accepted"), "publicKeys"))
            found["service_account"] = CAFields(None, key, tuple(
                pem for index, item in enumerate(accepted)
                for pem in [self._pem_value(item, False, "KubeServiceAccountConfig accepted.publicKeys[%d]" % index)] if pem))
        else:
            key = self._pem_value(_child(_child(cluster, "serviceAccount"), _KEY), True, "cluster.serviceAccount.key")
            if key:
                found["service_account"] = CAFields(None, key, ())
        return {name: fields for name, fields in found.items() if fields.issuing_crt or fields.issuing_key or fields.accepted}


class _ServiceAccountDocument:
    """KubeServiceAccountConfig (Talos v1.14+, control planes only): `issuer.privateKey` and `accepted.publicKeys`,
    raw PEM. Edits touch only those two entries; issuerURL, accepted issuers and audiences stay as written."""

    _where = LOCATION_SERVICE_ACCOUNT_CONFIG

    def __init__(self, config):
        self._config = config
        self._yaml = config._yaml  # pylint: disable=protected-access
        self.source = config.source

    def document(self):
        found = [doc for doc in self._yaml.documents if _is_mapping(doc) and _is_scalar(_child(doc, "kind"))
                 and _child(doc, "kind").value == LOCATION_SERVICE_ACCOUNT_CONFIG]
        if len(found) > 1:
            raise ConfigError("%s has %d %s documents: Talos accepts one; keep only one."
                              % (self.source, len(found), LOCATION_SERVICE_ACCOUNT_CONFIG))
        return found[0] if found else None

    def get(self):
        document = self.document()
        if document is None:
            return None
        issuer = self._yaml.mapping_at(document, ("issuer",), self._where)
        key = None
        if issuer is not None:
            entry = self._yaml.entry(issuer, "privateKey", self._where + " issuer")
            if entry is not None and not _is_empty(entry[1]):
                value = self._yaml.scalar_value(entry[1], self._where + " issuer.privateKey")
                key = value.encode("utf-8")
                private_key_identity(key, "%s: %s issuer.privateKey" % (self.source, self._where))
        return ServiceAccountFields(key, self._read_accepted(document))

    def _read_accepted(self, document):
        accepted = self._yaml.mapping_at(document, ("accepted",), self._where)
        if accepted is None:
            return ()
        where = self._where + " accepted.publicKeys"
        found = self._yaml.entry(accepted, "publicKeys", self._where + " accepted")
        if found is None or _is_empty(found[1]):
            return ()
        if not _is_sequence(found[1]):
            raise ConfigError("%s: %s must be a list of PEM public keys: restore the structure Talos documents."
                              % (self.source, where))
        pems = []
        for index, item in enumerate(found[1].value):
            pem = self._yaml.scalar_value(item, "%s[%d]" % (where, index)).encode("utf-8")
            public_key_der(pem, "%s: %s[%d]" % (self.source, where, index))
            pems.append(pem)
        return tuple(pems)

    @staticmethod
    def identity(fields):
        return (private_key_identity(fields.signing_key, "signing key") if fields.signing_key else None,
                tuple(public_key_der(pem, "accepted public key") for pem in fields.accepted))

    def set(self, signing_key, accepted):
        document = self.document()
        if document is None:
            raise ConfigError("%s has no %s document: the service-account key can only be rotated gracefully on Talos "
                              "v1.14+ control planes; upgrade the node first." % (self.source, self._where))
        if not signing_key:
            raise ConfigError("%s: a control plane needs the service-account signing key in %s issuer.privateKey "
                              "(without it kube-apiserver stops)." % (self.source, self._where))
        signing_key = _to_bytes(signing_key)
        accepted = tuple(_to_bytes(pem) for pem in accepted)
        wanted = self.identity(ServiceAccountFields(signing_key, accepted))
        current = self.identity(self.get())
        if current == wanted:
            return False
        original = self._yaml.text
        try:
            if current[0] != wanted[0]:
                issuer = self._yaml.mapping_at(document, ("issuer",), self._where)
                if issuer is None or issuer.flow_style:
                    raise ConfigError("%s: %s has no block-style `issuer` mapping to hold the key: restore the structure "
                                      "talosctl generates." % (self.source, self._where))
                self._yaml.set_scalar_entry(issuer, "privateKey", Literal(signing_key.decode("ascii")), (),
                                            self._where + " issuer", at_start=True)
            if current[1] != wanted[1]:
                self._write_accepted(accepted)
            if self.identity(self.get()) != wanted:
                raise ConfigError("%s: the edit of %s did not read back as intended; nothing was changed. Please report "
                                  "this with the config's layout (without its keys)." % (self.source, self._where))
        except BaseException:
            self._yaml.reload(original)
            raise
        return self._yaml.text != original

    def _write_accepted(self, accepted):
        document = self.document()
        items = [Literal(pem.decode("ascii")) for pem in accepted]
        found = self._yaml.entry(document, "accepted", self._where)
        if found is None or _is_empty(found[1]):
            if not items:
                return
            value = {"publicKeys": items}
            if found is not None:
                self._yaml.replace_entry(found[0], found[1], value, self._where + " accepted")
            else:
                self._yaml.insert_entry(document, "accepted", value, ("issuer",), self._where)
            return
        mapping = self._yaml.mapping_at(document, ("accepted",), self._where)
        if mapping.flow_style:
            raise ConfigError("%s: %s accepted is written in flow style ({...}): rewrite it in block style."
                              % (self.source, self._where))
        keys = [key.value for key, _value in mapping.value if _is_scalar(key)]
        if not items:
            if keys == ["publicKeys"]:
                self._yaml.remove_entry(found[0], found[1], self._where + " accepted")
            else:
                entry = self._yaml.entry(mapping, "publicKeys", self._where + " accepted")
                if entry is not None:
                    self._yaml.remove_entry(entry[0], entry[1], self._where + " accepted.publicKeys")
            return
        self._yaml.set_block_entry(mapping, "publicKeys", items, (), self._where + " accepted", at_start=True)


def _identity(fields):
    """What decides equality of two CA states: certificate DERs and the key's (label, DER)."""
    return (certificate_ders(fields.issuing_crt, "issuing certificate")[0] if fields.issuing_crt else None,
            private_key_identity(fields.issuing_key, "issuing key") if fields.issuing_key else None,
            tuple(certificate_ders(pem, "accepted certificate")[0] for pem in fields.accepted))
