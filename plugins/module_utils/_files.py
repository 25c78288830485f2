# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""Private file handling: atomic 0600 writes, 0700 directories, short-lived key folders.

Encryption at rest: for one task, the controller may install a sealing (see `sealing`). Every
file then written under its folder goes through `seal` (ansible-vault), and every file read
that is vault-encrypted, wherever it is, goes through `unseal`; code that reads and writes
files through this module needs to know nothing about it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import stat
import tempfile
import threading

from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
VAULT_HEADER = b"$ANSIBLE_VAULT;"


# Options of the modules that write into a rotation directory: which folder is encrypted at rest, and when.
ENCRYPTION_ARGUMENT_SPEC = {
    "encrypt_dir": {"type": "path"},
    "encrypt": {"type": "str", "default": "auto", "choices": ["auto", "always", "never"]},
}


def with_encryption(spec):
    """A module's argument spec merged with the encryption-at-rest options."""
    merged = dict(ENCRYPTION_ARGUMENT_SPEC)
    merged.update(spec)
    return merged


class Sealing:
    """How files are encrypted at rest during one task: folder sealed (or None), seal(bytes), unseal(bytes)."""

    def __init__(self, folder=None, seal=None, unseal=None):
        self.folder = os.path.realpath(folder) if folder else None
        self.seal = seal
        self.unseal = unseal

    def covers(self, path):
        if self.folder is None or self.seal is None:
            return False
        real = os.path.realpath(path)
        return real == self.folder or real.startswith(self.folder + os.sep)


_SEALING = Sealing()


@contextlib.contextmanager
def sealing(active):
    """Install `active` (a Sealing) for the duration of one task."""
    global _SEALING  # pylint: disable=global-statement
    previous, _SEALING = _SEALING, active
    try:
        yield active
    finally:
        _SEALING = previous


def sealed_for(path, data):
    """`data` as it is to be stored at `path`: vault-encrypted when a sealing covers the path."""
    return _SEALING.seal(data) if _SEALING.covers(path) else data


def unsealed(path, data):
    """Stored bytes of `path` in clear: vault-encrypted content is decrypted, or refused with what to do."""
    if not data.startswith(VAULT_HEADER):
        return data
    if _SEALING.unseal is None:
        raise ConfigError("%s is encrypted with ansible-vault and no vault secret is loaded: give the vault password the "
                          "rotation was started with (--vault-id or --vault-password-file; in AWX a Vault credential)." % path)
    try:
        return _SEALING.unseal(data)
    except Exception as exc:  # pylint: disable=broad-except
        raise ConfigError("cannot decrypt %s with the vault secrets loaded (%s): give the vault password the rotation was "
                          "started with." % (path, exc)) from exc


def ensure_private_dir(path):
    """Create `path` (and parents) as 0700, or tighten an existing directory to 0700."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError("%s exists and is not a directory: point the rotation directory elsewhere "
                          "or move that file away." % path)
    try:
        os.makedirs(path, mode=PRIVATE_DIR_MODE, exist_ok=True)
        if stat.S_IMODE(os.stat(path).st_mode) != PRIVATE_DIR_MODE:
            os.chmod(path, PRIVATE_DIR_MODE)
    except OSError as exc:
        raise ConfigError("cannot create private directory %s: %s. Choose a writable location." % (path, exc.strerror)) from exc
    return path


def atomic_write(path, data, mode=PRIVATE_FILE_MODE):
    """Write bytes to `path` atomically: a same-folder temp file with `mode`, fsync, rename.

    The file never exists with a wider mode, and a reader sees the old or the new content,
    never a mix.
    """
    folder = os.path.dirname(os.path.abspath(path))
    data = sealed_for(path, data)
    try:
        fd, tmp_path = tempfile.mkstemp(dir=folder, prefix=".%s." % os.path.basename(path))
    except OSError as exc:
        raise ConfigError("cannot write %s: %s. Check that %s exists and is writable." % (path, exc.strerror, folder)) from exc
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_path)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def write_backup(path, data):
    """Keep `data` (the old content of `path`) as PATH.bak-<UTC timestamp>, 0600, never over an existing file; returns its path."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    candidate = "%s.bak-%s" % (path, stamp)
    counter = 1
    while os.path.lexists(candidate):
        candidate = "%s.bak-%s-%d" % (path, stamp, counter)
        counter += 1
    return atomic_write(candidate, data)


def read_bytes(path, what):
    """Read a whole file, turning OS errors into a ConfigError that names `what` it is."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError as exc:
        raise ConfigError("%s %s does not exist: check the path." % (what, path)) from exc
    except IsADirectoryError as exc:
        raise ConfigError("%s %s is a directory, expected a file." % (what, path)) from exc
    except OSError as exc:
        raise ConfigError("cannot read %s %s: %s." % (what, path, exc.strerror)) from exc
    return unsealed(path, data)


def append_line(path, line):
    """Append one line (bytes, no newline) to a 0600 file: one write() on O_APPEND, so concurrent writers do not interleave.

    Under a sealing the line is stored as a JSON object {"vault": <vault text>}, still one line.
    """
    if _SEALING.covers(path):
        line = json.dumps({"vault": _SEALING.seal(line).decode("ascii")}).encode()
    handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        os.write(handle, line + b"\n")
    finally:
        os.close(handle)


# Held by a thread while one of its private temporary directories exists. A process about to kill itself takes it
# first (rotation_lock.RunGuard), so that the kill leaves no key file behind.
PRIVATE_TEMPDIRS = threading.RLock()


@contextlib.contextmanager
def private_tempdir():
    """A 0700 temporary directory removed on exit, for key files that must touch disk briefly.

    ssl.SSLContext.load_cert_chain only reads files: keys go here and are gone right after.
    """
    with PRIVATE_TEMPDIRS:
        path = tempfile.mkdtemp(prefix="talosops-pki-")
        try:
            os.chmod(path, PRIVATE_DIR_MODE)
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
