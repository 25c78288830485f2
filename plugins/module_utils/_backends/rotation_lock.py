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

A run is not over when ansible-playbook is: ansible-core's workers call setsid() and outlive it (SIGKILL by an AWX
cancel or the OOM killer, SIGHUP from a dropped SSH session). So every process that can apply a configuration to a
node holds a RunGuard: a shared flock on <dir>/rotation.appliers, a check of the playbook's liveness right before
each ApplyConfiguration attempt, and a watchdog thread that SIGKILLs the process as soon as the playbook is gone. The
holder takes the exclusive lock on rotation.appliers (it waits for the last guard) before it lets the run's lock go.
Linux only: /proc, pidfd (polling where the kernel has none) and flock.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import getpass
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

from ansible_collections.talosops.pki.plugins.module_utils import _files, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, RotationStateError, TalosPKIError

ARGUMENT_SPEC = {
    "path": {"type": "path", "required": True},
    "wait": {"type": "float", "default": 10.0},
}

LOCK_FILE = _rotation_store.LOCK_FILE
# Every process of the run that can apply a configuration holds a shared flock on it (RunGuard).
APPLIERS_FILE = _rotation_store.APPLIERS_FILE
POLL_INTERVAL = 0.1
# How long a guard about to kill its process waits for a private temporary directory (a key file on disk) to go first.
KEY_FILES_GRACE = 5.0

# Run by the holder process, with the locked file and the appliers file as inherited descriptors: once the process
# given by pid ends and the last shared lock on the appliers file is gone (no process of the run can apply anything
# any more), remove both files and the given folders if empty (still holding the lock), then exit, which releases
# it. Arguments: pid, appliers descriptor, lock file, appliers file, folders (innermost first).
HOLDER = """
import fcntl, os, select, sys, time
pid, appliers, path, appliers_path, folders = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
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
fcntl.flock(appliers, fcntl.LOCK_EX)
for name in (appliers_path, path):
    try:
        os.unlink(name)
    except OSError:
        pass
try:
    for folder in folders:
        os.rmdir(folder)
except OSError:
    pass
"""


def owner_pid():
    """The ansible-playbook process: the action plugin runs in one of its forked workers."""
    return os.getppid()


def run(params, check_mode=False, diff=False, sealing=None):  # pylint: disable=unused-argument  # writes no sealed file
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
    appliers = None
    try:
        appliers = _open(os.path.join(folder, APPLIERS_FILE), os.O_RDWR | os.O_CREAT)
        holder = dict(me, holder_pid=_start_holder(handle, appliers, me["pid"], path, created))
        os.ftruncate(handle, 0)
        os.pwrite(handle, json.dumps(holder, sort_keys=True).encode() + b"\n", 0)
        os.fsync(handle)
    finally:
        os.close(handle)
        if appliers is not None:
            os.close(appliers)
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
    if holder and holder.get("host") == socket.gethostname() and not _alive_here(holder):
        return ("another rotation still holds this rotation directory (%s holds %s): that ansible-playbook has ended, but a "
                "process of its run that can still apply a configuration to a node has not exited yet; the lock goes when it "
                "does (`fuser -v %s` names it). Two rotations at once would fight over the nodes' CAs. Wait and rerun. "
                "Nothing was changed." % (who, path, os.path.join(os.path.dirname(path), APPLIERS_FILE)))
    return ("another rotation is running with this rotation directory (%s holds %s): two rotations at once would fight over the "
            "nodes' CAs. Wait for it to end, or stop it; the lock goes with that ansible-playbook process, even when it is "
            "killed, so no file needs removing afterwards. Nothing was changed." % (who, path))


def _start_holder(handle, appliers, pid, path, created):
    """A process that keeps the locked file open until ansible-playbook (pid) ends and no process of its run can apply
    anything any more; its own session, so that a signal to the playbook's process group does not reach it before the
    playbook is gone."""
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-S", "-c", HOLDER, str(pid), str(appliers), path, os.path.join(os.path.dirname(path), APPLIERS_FILE)]
        + created, pass_fds=(handle, appliers), start_new_session=True, cwd="/",
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process.pid


class RunGuard:
    """Held, as a context manager, by a process that can apply a configuration to a node, for as long as it can.

    The run is the ansible-playbook process that holds the rotation lock in `folder` (without a folder: owner_pid()),
    and it must be an ancestor of this process. While held: a shared flock on the appliers file keeps the lock's holder
    from letting the lock go; a watchdog thread SIGKILLs this process as soon as the run is gone (nothing in flight goes
    on, whatever it was waiting for); check() refuses once it is gone, for the window before the watchdog has acted.
    """

    def __init__(self, folder=None):
        self.folder = os.path.abspath(folder) if folder else None
        self.pid = None
        self._appliers = None
        self._handle = None
        self._stop = None
        self._watchdog = None

    def __enter__(self):
        try:
            self.pid = self._take_share() if self.folder else owner_pid()
            if not _is_ancestor(self.pid):
                why = ("the run holding the rotation lock in %s, has ended or is not the run of this task" % self.folder
                       if self.folder else "the run of this task, has ended")
                raise RotationStateError(self._gone("ansible-playbook pid %s, %s" % (self.pid, why)))
            self._handle = _pidfd(self.pid)
            if self._handle is not None and not _is_ancestor(self.pid):
                raise RotationStateError(self._gone("ansible-playbook pid %s has ended" % self.pid))  # ended before the pidfd
            self._stop = os.pipe()
            self._watchdog = threading.Thread(target=self._watch, name="talosops-run-watchdog", daemon=True)
            self._watchdog.start()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *exc_info):
        self._close()

    def alive(self):
        """Whether the run's ansible-playbook process still runs."""
        if self._handle is not None:
            return not select.select([self._handle], [], [], 0)[0]
        return _is_ancestor(self.pid)

    def check(self, what="apply a configuration"):
        """Raise instead of letting `what` happen once the run is gone: call it right before each attempt."""
        if not self.alive():
            raise RotationStateError(self._gone("ansible-playbook pid %s, the run of this task, has ended" % self.pid, what))

    @staticmethod
    def _gone(why, what="apply a configuration"):
        return ("%s: not going to %s. Nothing was sent. Rerun the playbook: the rotation continues from where the nodes "
                "are." % (why, what))

    def _take_share(self):
        """Shared lock on the appliers file of the lock in self.folder; returns the pid of the playbook holding that lock."""
        path = os.path.join(self.folder, APPLIERS_FILE)
        try:
            self._appliers = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise RotationStateError("the rotation lock in %s is not held (%s: %s): this task applies configurations only for "
                                     "the run that holds it (talos_rotation_lock on that folder first). Nothing was sent."
                                     % (self.folder, path, exc.strerror)) from None
        try:
            fcntl.flock(self._appliers, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ConfigError("cannot lock %s: %s. The rotation directory must be on a filesystem with file locks (a "
                                  "local disk, NFSv4, CephFS)." % (path, exc.strerror)) from exc
            raise RotationStateError(self._gone("the run that held the rotation lock in %s has ended" % self.folder)) from None
        holder = _read_holder(os.path.join(self.folder, LOCK_FILE))
        if not _names_file(path, self._appliers) or not isinstance(holder.get("pid"), int):
            raise RotationStateError(self._gone("the run that held the rotation lock in %s has ended" % self.folder))
        if holder.get("host") != socket.gethostname():
            raise RotationStateError("the rotation lock in %s is held from host %s, not from this one (%s): a run applies "
                                     "configurations only under its own lock. Nothing was sent."
                                     % (self.folder, holder.get("host"), socket.gethostname()))
        return holder["pid"]

    def _watch(self):
        stop = self._stop[0]
        watched = [stop] if self._handle is None else [stop, self._handle]
        while True:
            ready = select.select(watched, [], [], POLL_INTERVAL if self._handle is None else None)[0]
            if stop in ready:
                return
            if not self.alive():
                # The run is gone: whatever this process does next, nobody asked for it any more. Not while a key sits in
                # a private temporary directory (a TLS context being built takes milliseconds): the kill would leave it.
                _files.PRIVATE_TEMPDIRS.acquire(timeout=KEY_FILES_GRACE)  # pylint: disable=consider-using-with
                os.kill(os.getpid(), signal.SIGKILL)
                return

    def _close(self):
        if self._watchdog is not None:
            os.write(self._stop[1], b"x")
            self._watchdog.join()
            self._watchdog = None
        for descriptor in (self._stop or ()) + (self._handle, self._appliers):
            if descriptor is not None:
                os.close(descriptor)  # the last one releases the shared lock
        self._stop = self._handle = self._appliers = None


def _pidfd(pid):
    """A pidfd on pid (readable once it has ended), or None where the kernel or Python has none."""
    try:
        return os.pidfd_open(pid)
    except AttributeError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EPERM):
            return None
        if exc.errno == errno.ESRCH:
            raise RotationStateError(RunGuard._gone("ansible-playbook pid %s has ended" % pid)) from None
        raise


def _parent_of(pid):
    with open("/proc/%d/stat" % pid, "rb") as handle:
        stat = handle.read()
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    return int(stat[stat.rindex(b")") + 2:].split()[1])


def _is_ancestor(pid):
    """Whether pid is this process's parent, grandparent, ...: a process whose parent has ended is given another one, so
    this is also the exact liveness test of an ancestor (a pid reused later cannot become an ancestor)."""
    current = os.getppid()
    while current != pid:
        if current <= 1:
            return False
        try:
            current = _parent_of(current)
        except (OSError, ValueError, IndexError):
            return False
    return True
