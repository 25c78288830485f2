# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""The one redaction of secrets in text the collection shows or stores.

Text that may quote a machine config (a node's dry-run diff, a node's error, an exception's
message) goes through `redact` before it reaches task output, an error message or the audit log.
It masks, in any Talos version's machine config (v1alpha1 and the v1.14+ documents), secrets
bundle, talosconfig or kubeconfig:

- the value of every entry whose name ends in token, secret, password, passphrase, key (not
  publicKey), key-data, auth or authorization: machine.token, cluster.token, cluster.secret,
  secretboxEncryptionSecret, aescbcEncryptionSecret, clusterSecret, encryption `keys[].secret`,
  privateKey, presharedKey, registry password/auth/identityToken, every CA `key`; inline values,
  block scalars (`key: |` and the more indented lines under it), JSON/flow entries and URL query
  parameters (`?jointoken=`);
- anything shaped like a bootstrap or trustd token (`abcdef.0123456789abcdef`), wherever it stands;
- the password of a URL's user info (`https://user:password@proxy`);
- PEM private key blocks, whole or cut by a diff hunk, and base64 of a PEM private key;
- any base64 line of 40 characters or more (a PEM body line: key lines cannot be told apart), hex
  digests (fingerprints) excepted.
"""

from __future__ import annotations

import base64
import binascii
import re

REDACTED = "<redacted>"

_SECRET_NAME = r"[A-Za-z0-9_.\-/]*?(?:token|secret|password|passphrase|(?<!public)key|key-data|auth|authorization)"
# One mapping entry per line: optional diff marker, indentation, list dashes, optionally quoted name, colon, value.
_ENTRY = re.compile(r"^(?P<lead>[+\- ]?[ \t]*(?:-[ \t]+)*)(?P<quote>[\"']?)(?P<name>%s)(?P=quote)[ \t]*:(?P<gap>[ \t]*)(?P<value>.*)$"
                    % _SECRET_NAME, re.IGNORECASE)
_EMPTY_VALUES = frozenset(("", '""', "''", "null", "~", "[]", "{}", '"",', "'',", "null,"))
# Entries inside a line: JSON/Python reprs ("token": "x"), flow mappings ({token: x}), URL queries (?token=x).
_INLINE = re.compile(r"(?P<name>(?:[\"']%s[\"']\s*:|[{,]\s*%s\s*:|[?&;]%s=)\s*)(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s,;&}\]\"'<]+)"
                     % (_SECRET_NAME, _SECRET_NAME, _SECRET_NAME), re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s/@]+(?=@)", re.IGNORECASE)
_PEM_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----", re.DOTALL)
# A PEM body line; not a hex digest (a certificate fingerprint is public and must stay readable).
_PEM_BODY_LINE = re.compile(r"^([+\- ]?\s*)(?![0-9a-f]+$)[A-Za-z0-9+/=]{40,}$", re.MULTILINE)
# The last, shorter line of a PEM body, right before its END marker (a diff hunk may cut the BEGIN line off).
_PEM_LAST_BODY_LINE = re.compile(r"^([+\- ]?\s*)[A-Za-z0-9+/=]+$(?=\n[+\- ]?\s*-----END [A-Z0-9 ]*PRIVATE KEY-----)", re.MULTILINE)
# base64 of "-----BEGIN " starts with this, whatever follows.
_BASE64_PEM = re.compile(r"LS0tLS1CRUdJTi[A-Za-z0-9+/]*={0,2}")
# A bootstrap/trustd token as Talos and kubeadm make them ("<6>.<16>" of [a-z0-9]), wherever it stands.
_TOKEN_SHAPE = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")
_DIFF_MARKERS = re.compile(r"^(?:@@ |--- |\+\+\+ )", re.MULTILINE)


def redact(text):
    """`text` with every secret value masked as <redacted> (see the module's docstring for what counts)."""
    if not text:
        return text
    if not isinstance(text, str):
        text = str(text)
    text = _PEM_PRIVATE_KEY.sub(REDACTED, text)
    text = _BASE64_PEM.sub(_base64_private_key, text)
    text = _TOKEN_SHAPE.sub(REDACTED, text)
    text = _redact_entries(text)
    text = _INLINE.sub(lambda match: match.group("name") + REDACTED, text)
    text = _URL_PASSWORD.sub(lambda match: match.group("head") + REDACTED, text)
    # A raw-PEM key block split across diff lines (v1.14+ documents hold raw PEM), or cut by the hunk's edge: its
    # base64 body lines are masked too, the short last one included.
    text = _PEM_LAST_BODY_LINE.sub(lambda match: match.group(1) + REDACTED, text)
    return _PEM_BODY_LINE.sub(lambda match: match.group(1) + REDACTED, text)


def redact_fields(fields):
    """A copy of a JSON-like value (dict, list, str...) with `redact` applied to every string in it."""
    if isinstance(fields, dict):
        return {key: redact_fields(value) for key, value in fields.items()}
    if isinstance(fields, (list, tuple)):
        return [redact_fields(value) for value in fields]
    if isinstance(fields, str):
        return redact(fields)
    return fields


def _base64_private_key(match):
    encoded = match.group(0)
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        return encoded
    return REDACTED if b"PRIVATE KEY" in decoded else encoded


def _redact_entries(text):
    """Mask the values of secret-named `name: value` lines, and the lines of a secret block scalar (`name: |`)."""
    diff = bool(_DIFF_MARKERS.search(text))
    lines = text.split("\n")
    block_indent = None  # indentation of the secret whose block scalar is being masked
    for number, line in enumerate(lines):
        body = line[1:] if diff and line[:1] in ("+", "-", " ") else line
        indent = len(body) - len(body.lstrip(" \t"))
        if block_indent is not None:
            if not body.strip():
                continue
            if indent > block_indent:
                lines[number] = line[:len(line) - len(body)] + body[:indent] + REDACTED
                continue
            block_indent = None
        match = _ENTRY.match(line)
        if match is None:
            continue
        value = match.group("value").strip()
        if value in _EMPTY_VALUES or value.startswith("#"):
            continue
        if value[:1] in ("|", ">"):
            # A block scalar's lines are deeper than the entry's name (after the diff marker).
            block_indent = match.start("name") - len(match.group("quote")) - (len(line) - len(body))
            continue
        lines[number] = line[:match.start("value")] + REDACTED
    return "\n".join(lines)
