# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""talos_rotation_lock: one rotation at a time per rotation directory, for the life of the ansible-playbook process.

The lock is an flock() on <dir>/rotation.lock. Every task runs in a short-lived worker
process, so the worker hands the locked file to a small holder process that lives exactly
as long as the ansible-playbook process (the worker's parent). When that process ends,
however it ends (SIGKILL included), the holder removes the lock file (and the folders the
lock created, when still empty: a refused run leaves nothing behind) and exits, and the
kernel drops the lock. The next run needs no manual step; a lock file left by a holder that
was itself killed is simply locked again. Since holders remove the file, a taker checks,
once it holds the lock, that the path still names the file it locked.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import getpass
import json
import os
import socket
import subprocess
import sys
import time

from ansible_collections.talosops.pki.plugins.module_utils import _files, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, TalosPKIError

ARGUMENT_SPEC = {
    "path": {"type": "path", "required": True},
    "wait": {"type": "float", "default": 10.0},
}

LOCK_FILE = _rotation_store.LOCK_FILE
POLL_INTERVAL = 0.1

# Run by the holder process, with the locked file as an inherited descriptor: once the process
# given by pid ends, remove the lock file and the given folders if empty (still holding the
# lock), then exit, which releases it. Arguments: pid, lock file, folders (innermost first).
HOLDER = """
import os, select, sys, time
pid, path, folders = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
try:
    handle = os.pidfd_open(pid)
except (AttributeError, OSError):
    handle = None
if handle is not None:
    select.select([handle], [], [])
else:
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        except PermissionError:
            pass
        time.sleep(0.2)
try:
    os.unlink(path)
    for folder in folders:
        os.rmdir(folder)
except OSError:
    pass
"""


def owner_pid():
    """The ansible-playbook process: the action plugin runs in one of its forked workers."""
    return os.getppid()


def run(params, check_mode=False, diff=False):
    if params["wait"] < 0:
        raise TalosPKIError("wait is %s: give the seconds to wait for a lock whose run is ending (0 or more)." % params["wait"])
    folder = os.path.abspath(params["path"])
    path = os.path.join(folder, LOCK_FILE)
    # Only a new, empty or rotation folder is used, and an existing one keeps its mode.
    _rotation_store.check_rotation_folder(folder)
    me = _owner_facts(owner_pid())
    if check_mode:
        return _test(path, me)
    created = _missing_folders(folder)
    handle, holder = _acquire(folder, path, me, params["wait"])
    if holder is not None:
        return {"changed": False, "path": path, "holder": holder}
    try:
        holder = dict(me, holder_pid=_start_holder(handle, me["pid"], path, created))
        os.ftruncate(handle, 0)
        os.pwrite(handle, json.dumps(holder, sort_keys=True).encode() + b"\n", 0)
        os.fsync(handle)
    finally:
        os.close(handle)
    # Bookkeeping beside the rotation, not a change to the cluster.
    return {"changed": False, "path": path, "holder": holder}


def _missing_folders(folder):
    """The folders ensure_private_dir(folder) would create, innermost first."""
    missing = []
    while not os.path.lexists(folder) and os.path.dirname(folder) != folder:
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


def _owner_facts(pid):
    return {"pid": pid, "host": socket.gethostname(), "user": _user(),
            "since": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def _user():
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _open(path, flags):
    try:
        return os.open(path, flags | os.O_CLOEXEC, _files.PRIVATE_FILE_MODE)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise ConfigError("%s is a directory: the rotation lock must be a file there. Move it away." % path) from None
    except OSError as exc:
        raise ConfigError("cannot open the rotation lock %s: %s. Choose a writable rotation directory." % (path, exc.strerror)) from exc


def _acquire(folder, path, me, wait):
    """(locked descriptor, None); (None, holder facts) when this playbook already holds the lock; else refuses."""
    deadline = time.monotonic() + wait
    while True:
        _files.ensure_private_dir(folder)
        try:
            handle = _open(path, os.O_RDWR | os.O_CREAT)
        except FileNotFoundError:
            continue  # the folder went away with the previous holder: make it again
        if _try_lock(handle):
            if _names_file(path, handle):
                return handle, None
            os.close(handle)  # a holder removed it in the meantime: lock the file that is there now
            continue
        os.close(handle)
        holder = _read_holder(path)
        if _same_owner(holder, me):
            return None, holder
        # A holder whose playbook is still running on this host will not let go soon: refuse at once.
        if _alive_here(holder) or time.monotonic() >= deadline:
            raise ConfigError(_held_message(path, holder))
        time.sleep(POLL_INTERVAL)


def _names_file(path, handle):
    try:
        return os.path.samestat(os.stat(path), os.fstat(handle))
    except FileNotFoundError:
        return False


def _test(path, me):
    """Check mode: report whether a real run could take the lock, creating nothing."""
    try:
        handle = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return {"changed": False, "path": path, "holder": None}
    except OSError as exc:
        raise ConfigError("cannot open the rotation lock %s: %s. Choose a readable rotation directory." % (path, exc.strerror)) from exc
    try:
        if _try_lock(handle):
            return {"changed": False, "path": path, "holder": None}
    finally:
        os.close(handle)  # also releases the lock just tested
    holder = _read_holder(path)
    if _same_owner(holder, me):
        return {"changed": False, "path": path, "holder": holder}
    raise ConfigError(_held_message(path, holder))


def _try_lock(handle):
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise ConfigError("cannot lock the rotation lock file: %s. The rotation directory must be on a filesystem with "
                          "file locks (a local disk, NFSv4, CephFS)." % exc.strerror) from exc


def _read_holder(path):
    try:
        with open(path, "rb") as handle:
            holder = json.loads(handle.read().decode() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _same_owner(holder, me):
    return holder.get("pid") == me["pid"] and holder.get("host") == me["host"]


def _alive_here(holder):
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _held_message(path, holder):
    who = ("ansible-playbook pid %s on host %s, user %s, since %s" % (
        holder.get("pid"), holder.get("host"), holder.get("user"), holder.get("since")) if holder else "a run whose details are not readable")
    return ("another rotation is running with this rotation directory (%s holds %s): two rotations at once would fight over the "
            "nodes' CAs. Wait for it to end, or stop it; the lock goes with that ansible-playbook process, even when it is "
            "killed, so no file needs removing afterwards. Nothing was changed." % (who, path))


def _start_holder(handle, pid, path, created):
    """A process that keeps the locked file open until ansible-playbook (pid) ends; its own session, so that a signal to
    the playbook's process group does not reach it before the playbook is gone."""
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-S", "-c", HOLDER, str(pid), path] + created, pass_fds=(handle,), start_new_session=True, cwd="/",
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process.pid
