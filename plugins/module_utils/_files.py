# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""Private file handling: atomic 0600 writes, 0700 directories, short-lived key folders.

Encryption at rest: a task run by the controller may be given a Sealing (built from the play's
vault secrets). It is passed explicitly to every function here that stores or reads bytes, never
kept in this module: every file written under its folder goes through `seal` (ansible-vault), and
every file read that is vault-encrypted, wherever it is, goes through `unseal`. Without one
(`sealing=None`, what a module process has), nothing is sealed and vault text is refused with
what to do.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
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
    """How files are encrypted at rest during one task: folder sealed (or None), seal(bytes), unseal(bytes).

    Passed to the functions of this module (and to the objects that store files through them) as `sealing`;
    None there means the same as Sealing(): nothing sealed, nothing unsealed.
    """

    def __init__(self, folder=None, seal=None, unseal=None):
        self.folder = os.path.realpath(folder) if folder else None
        self.seal = seal
        self.unseal = unseal

    def covers(self, path):
        if self.folder is None or self.seal is None:
            return False
        real = os.path.realpath(path)
        return real == self.folder or real.startswith(self.folder + os.sep)


def _covers(sealing, path):
    return sealing is not None and sealing.covers(path)


def sealed_for(path, data, sealing=None):
    """`data` as it is to be stored at `path`: vault-encrypted when `sealing` covers the path."""
    return sealing.seal(data) if _covers(sealing, path) else data


def unsealed(path, data, sealing=None):
    """Stored bytes of `path` in clear: vault-encrypted content is decrypted with `sealing`, or refused with what to do."""
    if not data.startswith(VAULT_HEADER):
        return data
    if sealing is None or sealing.unseal is None:
        raise ConfigError("%s is encrypted with ansible-vault and no vault secret is loaded: give the vault password the "
                          "rotation was started with (--vault-id or --vault-password-file; in AWX a Vault credential)." % path)
    try:
        return sealing.unseal(data)
    except Exception as exc:  # pylint: disable=broad-except
        raise ConfigError("cannot decrypt %s with the vault secrets loaded (%s): give the vault password the rotation was "
                          "started with." % (path, exc)) from exc


def ensure_private_dir(path):
    """Create `path` and any missing parents, each 0700 whatever the umask; an existing folder is left as it is.

    Only folders made here are given a mode: the mode of a folder the collection did not create (a home,
    a shared 1777 folder) is never changed.
    """
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ConfigError("%s exists and is not a directory: point the rotation directory elsewhere "
                          "or move that file away." % path)
    missing = []
    folder = os.path.abspath(path)
    while not os.path.lexists(folder) and os.path.dirname(folder) != folder:
        missing.append(folder)
        folder = os.path.dirname(folder)
    try:
        for folder in reversed(missing):
            try:
                os.mkdir(folder, PRIVATE_DIR_MODE)
            except FileExistsError:
                continue  # made by a concurrent run in the meantime: not ours to change
            # mkdir's mode is masked by the umask (0700 under 0277 is 0500): set it exactly on what was made here.
            os.chmod(folder, PRIVATE_DIR_MODE)
    except OSError as exc:
        raise ConfigError("cannot create private directory %s: %s. Choose a writable location." % (path, exc.strerror)) from exc
    if not os.path.isdir(path):
        raise ConfigError("%s exists and is not a directory: point the rotation directory elsewhere "
                          "or move that file away." % path)
    return path


def write_target(path):
    """The file a write to `path` changes: `path` itself, or the final target of a symbolic link.

    A link (e.g. ~/.talos/config into a dotfiles repository) is written through, never replaced by a
    regular file: the file it points at is the one that must get the new content.
    """
    if not os.path.islink(path):
        return path
    target = os.path.realpath(path)
    if os.path.isdir(target):
        raise ConfigError("%s is a symbolic link to the directory %s, not to a file: point it at a file, or give the file's "
                          "path. Nothing was written." % (path, target))
    if not os.path.isdir(os.path.dirname(target)):
        raise ConfigError("%s is a symbolic link to %s, whose folder does not exist: fix or remove the link. Nothing was "
                          "written." % (path, target))
    return target


def atomic_write(path, data, mode=PRIVATE_FILE_MODE, sealing=None):
    """Write bytes to `path` atomically: a temp file with `mode` beside the file, fsync, rename.

    The file never exists with a wider mode, and a reader sees the old or the new content,
    never a mix. A symbolic link is written through: the temp file goes beside the link's
    target, which keeps its mode and owner, and the link stays a link. Under `sealing`, a target
    in its folder is stored vault-encrypted. Returns `path`.
    """
    target = write_target(path)
    folder = os.path.dirname(os.path.abspath(target))
    data = sealed_for(target, data, sealing)
    keep = os.stat(target) if target != path and os.path.exists(target) else None
    try:
        fd, tmp_path = tempfile.mkstemp(dir=folder, prefix=".%s." % os.path.basename(target))
    except OSError as exc:
        raise ConfigError("cannot write %s: %s. Check that %s exists and is writable." % (target, exc.strerror, folder)) from exc
    try:
        os.fchmod(fd, stat.S_IMODE(keep.st_mode) if keep else mode)
        if keep and (keep.st_uid, keep.st_gid) != (os.geteuid(), os.getegid()):
            _keep_owner(fd, keep, path, target)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_path)
        if isinstance(exc, OSError):  # ENOSPC or EDQUOT while writing, EIO on fsync...: the target is as it was
            raise ConfigError("cannot write %s: %s. It was not changed (it keeps its previous content, or still does not "
                              "exist): %s." % (path, exc.strerror or exc, remedy(exc))) from exc
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def write_problem(path, what):
    """Why atomic_write(path) would fail, or None: for files written only at the end of a rotation, checked before any change.

    A link that cannot be written through, a folder this user cannot write to, or a link target whose owner this
    user cannot give the new file (atomic_write keeps it).
    """
    try:
        target = write_target(path)
    except ConfigError as exc:
        return "%s: %s" % (what, exc)
    folder = os.path.dirname(os.path.abspath(target))
    if os.path.isdir(folder) and not os.access(folder, os.W_OK | os.X_OK):
        return ("%s %s cannot be written: this user may not create files in its folder %s, where it is replaced atomically. "
                "Make that folder writable, or give another path." % (what, path, folder))
    if target != path and os.path.exists(target) and os.geteuid() != 0:
        facts = os.stat(target)
        if facts.st_uid != os.geteuid() or facts.st_gid not in set(os.getgroups()) | {os.getegid()}:
            return ("%s %s is a symbolic link to %s, owned by uid %d gid %d: this user cannot write a file with that owner, "
                    "which the write through the link keeps. Run as that user, or replace the link by the file." % (
                        what, path, target, facts.st_uid, facts.st_gid))
    return None


def _keep_owner(fd, keep, path, target):
    try:
        os.fchown(fd, keep.st_uid, keep.st_gid)
    except OSError as exc:
        raise ConfigError("%s is a symbolic link to %s, owned by uid %d gid %d, and this user cannot write a file with that owner "
                          "(%s): run as that user, or replace the link by the file. Nothing was written." % (
                              path, target, keep.st_uid, keep.st_gid, exc.strerror)) from exc


def write_backup(path, data, sealing=None):
    """Keep `data` (the old content of `path`) as PATH.bak-<UTC timestamp>, 0600, never over an existing file; returns its path.

    Sealed like any write when `sealing` covers the backup's folder.
    """
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    candidate = "%s.bak-%s" % (path, stamp)
    counter = 1
    while os.path.lexists(candidate):
        candidate = "%s.bak-%s-%d" % (path, stamp, counter)
        counter += 1
    return atomic_write(candidate, data, sealing=sealing)


def read_bytes(path, what, sealing=None):
    """Read a whole file in clear (see `unsealed`), turning OS errors into a ConfigError that names `what` it is."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError as exc:
        raise ConfigError("%s %s does not exist: check the path." % (what, path)) from exc
    except IsADirectoryError as exc:
        raise ConfigError("%s %s is a directory, expected a file." % (what, path)) from exc
    except OSError as exc:
        raise ConfigError("cannot read %s %s: %s." % (what, path, exc.strerror)) from exc
    return unsealed(path, data, sealing)


def server_ca_bundle(paths, sealing=None):
    """The files `paths` (a task's server_ca option: PEM CA certificates) concatenated, each read in clear under `sealing`."""
    return b"".join(read_bytes(path, "server CA certificate", sealing=sealing) for path in paths)


def append_line(path, line, sealing=None):
    """Append one line (bytes, no newline) to a 0600 file: one write() on O_APPEND, so concurrent writers do not interleave.

    When `sealing` covers the path, the line is stored as a JSON object {"vault": <vault text>}, still one line.
    """
    if _covers(sealing, path):
        line = json.dumps({"vault": sealing.seal(line).decode("ascii")}).encode()
    data = line + b"\n"
    handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        # Locked, so that a line cut short by a full disk can be taken back without touching another writer's line.
        fcntl.flock(handle, fcntl.LOCK_EX)
        size = os.fstat(handle).st_size
        try:
            if os.write(handle, data) != len(data):
                raise OSError(errno.ENOSPC, "No space left on device (the line was cut short)", path)
            os.fsync(handle)  # the entry of a node that was patched outlives a crash of the controller
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(handle, size)  # every line stays whole JSON: the partial one goes
            raise
    finally:
        os.close(handle)  # releases the lock


def remedy(error):
    """What to do about an OSError on a file the collection writes."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free space on that file system (or point the rotation directory elsewhere) and run the playbook again"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "make it writable by the user running Ansible (or choose another location) and run the playbook again"
    return "fix the cause and run the playbook again"


def load_cert_chain(context, crt, key):
    """Load a client certificate (PEM bytes) and its key into an ssl.SSLContext without putting the key on a disk.

    ssl.SSLContext.load_cert_chain only reads files. Where the system has anonymous memory files (memfd, Linux), they
    are those files, named through /proc/self/fd: nothing reaches a file system, and a process killed at any moment
    (Ctrl-C, SIGTERM, SIGKILL from Ansible stopping its workers) leaves nothing behind. Elsewhere the files go through a
    0700 temporary folder that is removed right after loading, before any connection is made. Raises ssl.SSLError when
    the pair cannot be loaded.
    """
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        descriptors = []
        try:
            for name, data in (("client.crt", crt), ("client.key", key)):
                descriptors.append(os.memfd_create("talosops-pki-" + name, getattr(os, "MFD_CLOEXEC", 0)))
                view = memoryview(data)
                while view:
                    view = view[os.write(descriptors[-1], view):]
            context.load_cert_chain(*["/proc/self/fd/%d" % descriptor for descriptor in descriptors])
        finally:
            for descriptor in descriptors:
                os.close(descriptor)
        return
    with private_tempdir() as folder:
        paths = []
        for name, data in (("client.crt", crt), ("client.key", key)):
            paths.append(os.path.join(folder, name))
            handle = os.open(paths[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
        context.load_cert_chain(*paths)


# Held by a thread while one of its private temporary directories exists. A process about to kill itself takes it
# first (rotation_lock.RunGuard), so that the kill leaves no key file behind.
PRIVATE_TEMPDIRS = threading.RLock()


@contextlib.contextmanager
def private_tempdir():
    """A 0700 temporary directory removed on exit, for key files that must touch disk briefly (see load_cert_chain).

    Held under PRIVATE_TEMPDIRS, so that a watchdog killing the process waits until it is gone.
    """
    with PRIVATE_TEMPDIRS:
        path = tempfile.mkdtemp(prefix="talosops-pki-")
        try:
            os.chmod(path, PRIVATE_DIR_MODE)
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
