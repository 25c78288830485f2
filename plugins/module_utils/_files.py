# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""Private file handling: atomic 0600 writes, 0700 directories, short-lived key folders."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile

from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


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


def read_bytes(path, what):
    """Read a whole file, turning OS errors into a ConfigError that names `what` it is."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError as exc:
        raise ConfigError("%s %s does not exist: check the path." % (what, path)) from exc
    except IsADirectoryError as exc:
        raise ConfigError("%s %s is a directory, expected a file." % (what, path)) from exc
    except OSError as exc:
        raise ConfigError("cannot read %s %s: %s." % (what, path, exc.strerror)) from exc


@contextlib.contextmanager
def private_tempdir():
    """A 0700 temporary directory removed on exit, for key files that must touch disk briefly.

    ssl.SSLContext.load_cert_chain only reads files: keys go here and are gone right after.
    """
    path = tempfile.mkdtemp(prefix="talosops-pki-")
    try:
        os.chmod(path, PRIVATE_DIR_MODE)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
