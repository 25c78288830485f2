# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""The rotation directory: where a rotation's new CA lives, durable before any node sees it.

Layout of one CA rotation (one folder per CA kind, 0700; files 0600):

  <dir>/ca.crt            the new CA
  <dir>/ca.key            its key, under the PEM label Talos writes
  <dir>/previous-ca.crt   the CA being replaced
  <dir>/previous-ca.key   its key, kept for a rollback (control planes issue with it again)
  <dir>/rotation.json     kind, fingerprints, creation time, completion time once completed (no key material)
  <dir>/audit.jsonl       one JSON line per CA operation: time, event, node, phase, fingerprints (no key material)

A service-account key rotation has no certificates: sa.key (the new signing key), sa.pub (its
public key) and previous-sa.pub (the public key being replaced) take the places of ca.key,
ca.crt and previous-ca.crt; its fingerprints are those of the public keys' PKIX DER.

The set is written into a sibling temp folder and renamed into place, so the directory
either holds a whole rotation or none: a run killed mid-write leaves nothing half-made.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import stat
import tempfile
from typing import NamedTuple

from ansible_collections.talosops.pki.plugins.module_utils import _files, _pki
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, RotationStateError, TalosPKIError
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import SecretsBundle
from ansible_collections.talosops.pki.plugins.module_utils._redact import redact_fields

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
PREVIOUS_CA_CERT = "previous-ca.crt"
PREVIOUS_CA_KEY = "previous-ca.key"
STATE_FILE = "rotation.json"
AUDIT_LOG = "audit.jsonl"
FORMAT_VERSION = 1
SA_KEY = "sa.key"
SA_PUBLIC_KEY = "sa.pub"
PREVIOUS_SA_PUBLIC_KEY = "previous-sa.pub"
KIND_SERVICE_ACCOUNT = _pki.KIND_SERVICE_ACCOUNT
# The files of a whole rotation, per kind: (new key, new public part, previous public part).
_KIND_FILES = {KIND_SERVICE_ACCOUNT: (SA_KEY, SA_PUBLIC_KEY, PREVIOUS_SA_PUBLIC_KEY)}
_CA_FILES = (CA_KEY, CA_CERT, PREVIOUS_CA_CERT)

# What a rotation folder (rotate_ca_dir) holds: the lock, one rotation per CA kind, archived rotations, and the staging
# folders of a rotation being written. A folder holding anything else is not one of this collection's.
LOCK_FILE = "rotation.lock"
# Held (shared flock) by every process of a run that can apply a configuration: see _backends/rotation_lock.RunGuard.
APPLIERS_FILE = "rotation.appliers"
ROTATION_KINDS = ("talos", "kubernetes", "aggregator", KIND_SERVICE_ACCOUNT)
ARCHIVED_SUFFIX = ".archived-"
STAGING_SUFFIX = ".staging-"
ROLLED_BACK_SUFFIX = ".rolled-back-"
WITHDRAWN_SUFFIX = ".withdrawn-"


class Rotation:
    """A rotation directory that exists on disk and is whole.

    `sealing` (a _files.Sealing, or None) is how its files are encrypted at rest: given when the store is
    built (load, create), used by every read and write of the store, never looked up elsewhere.
    """

    def __init__(self, path, state, sealing=None):
        self.path = path
        self.state = state
        self.sealing = sealing

    @property
    def kind(self):
        return self.state["kind"]

    @property
    def ca_fingerprint(self):
        return self.state["ca_fingerprint"]

    @property
    def previous_ca_fingerprint(self):
        return self.state["previous_ca_fingerprint"]

    @property
    def created(self):
        return self.state["created"]

    @property
    def completed(self):
        """When the run that finished this rotation wrote its credentials (UTC, ISO 8601), or None while it is in progress."""
        return self.state.get("completed")

    def mark_completed(self):
        """Record that every node runs the new CA alone and the credentials were written: only now may it be archived."""
        if self.completed:
            return False
        self.state = dict(self.state, completed=_now())
        _files.atomic_write(self.file(STATE_FILE), _state_bytes(self.state), sealing=self.sealing)
        return True

    def file(self, name):
        return os.path.join(self.path, name)

    def read(self, name, what):
        """The bytes of the store's file `name` in clear (`what` names it in errors)."""
        return _files.read_bytes(self.file(name), what, sealing=self.sealing)

    def ca(self):
        """The new CA with its key (PEM bytes), validated as a pair."""
        crt = self.read(CA_CERT, "rotation CA certificate")
        key = self.read(CA_KEY, "rotation CA key")
        _pki.check_key_pair(crt, key, what="rotation CA in %s" % self.path)
        return _pki.CertAndKey(crt, key)

    def ca_cert(self):
        """The new CA's certificate (PEM bytes), without reading its key."""
        return self.read(CA_CERT, "rotation CA certificate")

    def previous_ca_cert(self):
        return self.read(PREVIOUS_CA_CERT, "previous CA certificate")

    @property
    def has_previous_ca_key(self):
        return os.path.isfile(self.file(PREVIOUS_CA_KEY))

    def previous_ca(self):
        """The CA being replaced with its key (PEM bytes), validated as a pair: what a rollback issues with again."""
        if not self.has_previous_ca_key:
            raise RotationStateError(
                "%s holds no key of the CA being replaced (%s): the rotation was started by a version of this collection that "
                "did not keep it, so control planes cannot issue with that CA again. Finish the rotation instead (run again "
                "without rotate_ca_rollback), or put the old CA's key from the cluster's secrets.yaml into %s (0600)." % (
                    self.path, PREVIOUS_CA_KEY, self.file(PREVIOUS_CA_KEY)))
        crt = self.previous_ca_cert()
        key = self.read(PREVIOUS_CA_KEY, "previous CA key")
        _pki.check_key_pair(crt, key, what="previous CA in %s" % self.path)
        return _pki.CertAndKey(crt, key)

    def keep_previous_ca_key(self, key):
        """Store the key of the CA being replaced (0600, sealed like the rest) once it is checked against its certificate."""
        _pki.check_key_pair(self.previous_ca_cert(), key, what="previous CA key for %s" % self.path)
        _files.atomic_write(self.file(PREVIOUS_CA_KEY), key, sealing=self.sealing)

    def signing_key(self):
        """The new service-account signing key (PEM), checked against the fingerprint recorded at creation."""
        key = self.read(SA_KEY, "rotation service-account key")
        if _pki.public_key_fingerprint(key, "rotation service-account key") != self.ca_fingerprint:
            raise RotationStateError("%s: %s does not match the fingerprint recorded in %s. The directory was altered: restore "
                                     "it." % (self.path, SA_KEY, STATE_FILE))
        return key

    def public_key(self):
        return self.read(SA_PUBLIC_KEY, "rotation service-account public key")

    def previous_public_key(self):
        return self.read(PREVIOUS_SA_PUBLIC_KEY, "previous service-account public key")

    def record(self, event, **fields):
        """Append one operation to the audit log. Callers pass public facts only (fingerprints, never PEM or keys);
        text in them is redacted all the same (an error a node sent may quote its config).

        One line per write on a file opened O_APPEND: lines from concurrent forks do not interleave.
        """
        entry = dict(redact_fields(fields), time=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), event=event,
                     kind=self.kind)
        try:
            _files.append_line(self.file(AUDIT_LOG), json.dumps(entry, sort_keys=True).encode(), sealing=self.sealing)
        except OSError as exc:
            raise TalosPKIError("cannot append to the audit log %s: %s. The log is as it was before this entry; the rotation "
                                "directory must stay writable: %s." % (self.file(AUDIT_LOG), exc.strerror or exc, _files.remedy(exc))) from exc

    def entries(self, since=None):
        """The audit log's entries (dicts, oldest first), those written at or after `since` (epoch seconds) when given.

        Lines sealed under a vault secret ({"vault": ...}) are decrypted; a line that is not whole JSON (none is written,
        but a hand-edited log may hold one) is skipped rather than failing a summary.
        """
        path = self.file(AUDIT_LOG)
        if not os.path.isfile(path):
            return []
        with open(path, "rb") as handle:
            lines = handle.read().splitlines()
        found = []
        for line in lines:
            try:
                entry = json.loads(line)
                if isinstance(entry, dict) and set(entry) == {"vault"}:
                    entry = json.loads(_files.unsealed(path, entry["vault"].encode(), self.sealing))
            except ValueError:
                continue
            if not isinstance(entry, dict):
                continue
            if since is not None and entry_time(entry) < since:
                continue
            found.append(entry)
        return found

    def facts(self):
        """Paths and public facts for task output: never key material."""
        if self.kind == KIND_SERVICE_ACCOUNT:
            return {
                "path": self.path,
                "kind": self.kind,
                "key_path": self.file(SA_KEY),
                "public_key_path": self.file(SA_PUBLIC_KEY),
                "previous_public_key_path": self.file(PREVIOUS_SA_PUBLIC_KEY),
                "ca_fingerprint": self.ca_fingerprint,
                "previous_ca_fingerprint": self.previous_ca_fingerprint,
                "created": self.state["created"],
                "completed": self.completed,
                "audit_log_path": self.file(AUDIT_LOG),
            }
        return {
            "path": self.path,
            "kind": self.kind,
            "ca_cert_path": self.file(CA_CERT),
            "ca_key_path": self.file(CA_KEY),
            "previous_ca_cert_path": self.file(PREVIOUS_CA_CERT),
            "previous_ca_key_kept": self.has_previous_ca_key,
            "ca_fingerprint": self.ca_fingerprint,
            "previous_ca_fingerprint": self.previous_ca_fingerprint,
            "created": self.state["created"],
            "completed": self.completed,
            "rotation_id": self.state.get("id"),
            "audit_log_path": self.file(AUDIT_LOG),
        }


def load(path, kind=None, sealing=None):
    """The rotation at `path` (a store reading and writing under `sealing`), or None when there is none. Refuses a directory
    that is not a whole rotation."""
    state_path = os.path.join(path, STATE_FILE)
    if not os.path.exists(path):
        return None
    if not os.path.isdir(path):
        raise RotationStateError("%s exists and is not a directory: point the rotation directory elsewhere or move that file away." % path)
    if not os.path.exists(state_path):
        if os.listdir(path):
            raise RotationStateError(
                "%s is not empty but holds no %s: it is not a rotation directory of this collection. Use an empty or new "
                "directory." % (path, STATE_FILE))
        return None
    try:
        state = json.loads(_files.read_bytes(state_path, "rotation state", sealing=sealing))
    except ValueError as exc:
        raise RotationStateError("%s is not valid JSON (%s): restore it from a backup or move the directory away." % (state_path, exc)) from exc
    missing = [name for name in _KIND_FILES.get(state.get("kind"), _CA_FILES) if not os.path.isfile(os.path.join(path, name))]
    if missing or state.get("format") != FORMAT_VERSION:
        raise RotationStateError("rotation directory %s is incomplete or of an unknown format (missing: %s): restore it from a backup; "
                                 "if no node has seen its CA yet, move it away and start again." % (path, ", ".join(missing) or "none"))
    if kind is not None and state.get("kind") != kind:
        raise RotationStateError("%s holds a %s CA rotation, not a %s one: use a separate directory per CA kind." % (path, state.get("kind"), kind))
    rotation = Rotation(path, state, sealing)
    if rotation.kind == KIND_SERVICE_ACCOUNT:
        if _pki.public_key_fingerprint(rotation.public_key(), "rotation service-account public key") != rotation.ca_fingerprint:
            raise RotationStateError("%s: %s does not match the fingerprint recorded in %s. The directory was altered: restore "
                                     "it." % (path, SA_PUBLIC_KEY, STATE_FILE))
        return rotation
    if _pki.fingerprint(rotation.ca_cert()) != rotation.ca_fingerprint:
        raise RotationStateError("%s: ca.crt does not match the fingerprint recorded in %s. The directory was altered: restore it." % (path, STATE_FILE))
    return rotation


def is_rotation_folder_entry(name):
    """Whether `name`, an entry of a rotation folder, is one the collection writes there."""
    if name in (LOCK_FILE, APPLIERS_FILE) or name in ROTATION_KINDS:
        return True
    moved_aside = (ARCHIVED_SUFFIX, ROLLED_BACK_SUFFIX, WITHDRAWN_SUFFIX)
    return any(any(name.startswith(kind + suffix) for suffix in moved_aside) or name.startswith(".%s%s" % (kind, STAGING_SUFFIX))
               for kind in ROTATION_KINDS)


def check_rotation_folder(path):
    """Refuse, before anything is written, a rotation folder (rotate_ca_dir) the collection must not use.

    A folder is used when it is new (made 0700 with its missing parents), empty, or already a rotation
    folder of this collection: it holds only entries the collection writes there (rotation.lock, talos/,
    kubernetes/, their archives). An existing folder is never re-moded, so one that other users may write
    to (e.g. mode 1777, as /tmp) is refused: they could plant the talos/ folder or a link in its place.
    """
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path):
        raise RotationStateError("%s exists and is not a directory: point the rotation directory elsewhere or move that file away." % path)
    foreign = sorted(name for name in os.listdir(path) if not is_rotation_folder_entry(name))
    if foreign:
        named = ", ".join(foreign[:5]) + (" and %d more" % (len(foreign) - 5) if len(foreign) > 5 else "")
        raise RotationStateError(
            "%s holds files that are not a rotation's (%s): it is not a rotation folder of this collection, and a rotation "
            "keeps CA keys there. Set rotate_ca_dir to a new or empty folder (default ~/.talos/rotation); nothing was "
            "changed." % (path, named))
    facts = os.stat(path)
    if facts.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or facts.st_uid != os.geteuid():
        raise RotationStateError(
            "%s (mode %04o, owner uid %d) can be written by other users: a rotation keeps CA keys there, and the collection "
            "never changes the mode of a folder it did not create. Set rotate_ca_dir to a new folder (it is created 0700), "
            "or make this one yours and private (chmod 0700); nothing was changed." % (path, stat.S_IMODE(facts.st_mode), facts.st_uid))


def create(path, kind, previous_ca_crt, new_ca, previous_ca_key=None, sealing=None):
    """Persist a new rotation atomically: keys and certificates land together, 0600 (sealed under `sealing`), before anyone
    uses them."""
    files = [(CA_KEY, new_ca.key), (CA_CERT, new_ca.crt), (PREVIOUS_CA_CERT, previous_ca_crt)]
    if previous_ca_key:
        files.append((PREVIOUS_CA_KEY, previous_ca_key))
    marker = _pki.rotation_marker(new_ca.crt)
    return _create(path, kind, _pki.fingerprint(new_ca.crt), _pki.fingerprint(previous_ca_crt), files,
                   rotation_id=marker["id"] if marker else None, sealing=sealing)


def create_service_account(path, previous_public_key, new_key, sealing=None):
    """Persist a new service-account key rotation atomically (sa.key 0600, encrypted like a CA key) before any node sees it."""
    public = _pki.public_key_pem(new_key, "new service-account key")
    previous = _pki.public_key_pem(previous_public_key, "previous service-account public key")
    return _create(path, KIND_SERVICE_ACCOUNT, _pki.public_key_fingerprint(public), _pki.public_key_fingerprint(previous),
                   ((SA_KEY, new_key), (SA_PUBLIC_KEY, public), (PREVIOUS_SA_PUBLIC_KEY, previous)), sealing=sealing)


def _create(path, kind, fingerprint, previous_fingerprint, files, rotation_id=None, sealing=None):
    if load(path, sealing=sealing) is not None:
        raise RotationStateError("%s already holds a rotation: resume it, or archive it to start a new one." % path)
    parent = os.path.dirname(os.path.abspath(path))
    _files.ensure_private_dir(parent)
    state = {
        "format": FORMAT_VERSION,
        "kind": kind,
        "ca_fingerprint": fingerprint,
        "previous_ca_fingerprint": previous_fingerprint,
        "created": _now(),
    }
    if rotation_id:
        state["id"] = rotation_id  # the rotation id the nodes show in the CA's rotation marker
    staging = tempfile.mkdtemp(prefix=".%s%s" % (os.path.basename(path), STAGING_SUFFIX), dir=parent)
    try:
        os.chmod(staging, _files.PRIVATE_DIR_MODE)
        for name, data in files:  # the key first: nothing refers to a rotation whose key is not on disk
            _files.atomic_write(os.path.join(staging, name), data, sealing=sealing)
        _files.atomic_write(os.path.join(staging, STATE_FILE), _state_bytes(state), sealing=sealing)
        if os.path.isdir(path):
            os.rmdir(path)  # empty (load() said so); rename cannot replace a directory
        os.rename(staging, path)
    except (OSError, ConfigError) as exc:  # ConfigError: atomic_write's, e.g. a disk that filled after mkstemp
        shutil.rmtree(staging, ignore_errors=True)
        reason = exc.strerror if isinstance(exc, OSError) else str(exc).rstrip(".")
        raise TalosPKIError("cannot write the rotation directory %s: %s. Nothing was created, so no node can have seen the new CA: "
                            "choose a writable location with free space and run again." % (path, reason)) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Rotation(path, state, sealing)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text):
    """Epoch seconds of a UTC time as this collection writes it (2026-01-02T03:04:05Z, with or without microseconds), or of
    a number of epoch seconds given as such; ConfigError for anything else."""
    if isinstance(text, (int, float)):
        return float(text)
    try:
        return float(text)
    except (TypeError, ValueError):
        pass
    try:
        moment = datetime.datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError("%r is not a time: give a UTC time such as 2026-01-02T03:04:05Z (as talos_rotation_lock's holder.since "
                          "says it), or epoch seconds." % (text,)) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def entry_time(entry):
    """When an audit entry was written, in epoch seconds (0 for an entry without a readable time)."""
    try:
        return parse_time(entry.get("time"))
    except ConfigError:
        return 0.0


def _state_bytes(state):
    return (json.dumps(state, indent=2, sort_keys=True) + "\n").encode()


def archive(path, suffix=ARCHIVED_SUFFIX):
    """Move a rotation aside (<path>.archived-<UTC time>) so a new one can start: a finished one (ARCHIVED_SUFFIX), or one
    that lost the race for the cluster and took its CA off the nodes again (WITHDRAWN_SUFFIX)."""
    return _move_aside(path, suffix)


def mark_rolled_back(path):
    """Move a rolled-back rotation aside (<path>.rolled-back-<UTC time>): kept for the record, never resumed."""
    return _move_aside(path, ROLLED_BACK_SUFFIX)


def _move_aside(path, suffix):
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = "%s%s%s" % (path.rstrip(os.sep), suffix, stamp)
    number = 1
    while os.path.lexists(target):  # two in the same second: never rename onto an earlier one
        number += 1
        target = "%s%s%s-%d" % (path.rstrip(os.sep), suffix, stamp, number)
    os.rename(path, target)
    return target


_CA_NAMES = {"talos": "Talos API CA", "kubernetes": "Kubernetes API CA", "aggregator": "aggregator (front-proxy) CA"}
_SECRETS_NAMES = {"talos": "certs.os", "kubernetes": "certs.k8s", "aggregator": "certs.k8saggregator"}


class SigningCA(NamedTuple):
    """A CA that issues client certificates: CertAndKey, the CA it replaced (certificate or None), where it is, its lifetime end."""

    ca: _pki.CertAndKey
    previous_crt: bytes | None
    source: str
    not_after: datetime.datetime


def signing_ca(kind, ca_dir=None, secrets_file=None, sealing=None):
    """The `kind` CA with its key, from a rotation directory (its new CA) or a secrets.yaml (both read under `sealing`), checked
    to sign client certificates."""
    if ca_dir:
        rotation = load(ca_dir, kind=kind, sealing=sealing)
        if rotation is None:
            raise ConfigError("ca_dir %s holds no %s rotation: give the rotation directory of the %s (<rotate_ca_dir>/%s), or "
                              "secrets_file." % (ca_dir, _CA_NAMES[kind], _CA_NAMES[kind], kind))
        ca, previous, source = rotation.ca(), rotation.previous_ca_cert(), "rotation directory %s" % rotation.path
    elif secrets_file:
        try:
            crt, key = SecretsBundle.load(secrets_file, sealing=sealing).get_ca(kind)
        except ConfigError as error:
            raise ConfigError("%s Client certificates can only be issued with the CA's private key." % error) from None
        ca, previous, source = _pki.CertAndKey(crt, key), None, "secrets file %s (%s)" % (secrets_file, _SECRETS_NAMES[kind])
    else:
        raise ConfigError("give ca_dir (a rotation directory) or secrets_file (a talosctl gen secrets bundle): the %s and its "
                          "key sign the client certificates." % _CA_NAMES[kind])
    certificate = _pki.validate_ca(ca.crt, ca.key, what="%s in %s" % (_CA_NAMES[kind], source), purposes=("client_auth",))
    return SigningCA(ca, previous, source, certificate.not_valid_after_utc)


def client_lifetime(signer, validity_hours, now):
    """validity_hours as a timedelta, refused when not positive or when a certificate issued `now` would outlive the CA."""
    if validity_hours < 1:
        raise ConfigError("validity_hours is %d: give the client certificate's lifetime as a positive number of hours "
                          "(Talos uses 8760, one year)." % validity_hours)
    lifetime = datetime.timedelta(hours=validity_hours)
    if now + lifetime > signer.not_after:
        raise ConfigError("validity_hours %d would make the client certificate outlive the CA in %s, which expires at %s: "
                          "give a lifetime of at most %d hours, or rotate the CA first." % (
                              validity_hours, signer.source, signer.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
                              int((signer.not_after - now).total_seconds() // 3600)))
    return lifetime
