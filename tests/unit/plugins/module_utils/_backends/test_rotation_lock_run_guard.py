"""RunGuard: a process that can apply a configuration stops when its ansible-playbook ends, and holds the run's lock until it has.

The process trees are real: a stand-in "playbook" process takes the lock for itself and starts a stand-in "worker" as its
child, which enters a RunGuard as talos_machine_patch does; the test kills the playbook and watches both.
"""

import errno
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.talosops.pki.plugins.module_utils._backends import rotation_lock
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, RotationStateError

# The stand-in ansible-playbook: takes the lock as its own (owner_pid is its pid), starts the worker - itself (as the
# action plugins run) or as the child of a middle process (as a module process runs under its worker) - reports, waits.
PLAYBOOK = r"""
import json, os, subprocess, sys, time
from ansible_collections.talosops.pki.plugins.module_utils._backends import rotation_lock
rotation_lock.owner_pid = os.getpid
folder, mode, worker, depth = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
held = rotation_lock.run({"path": folder, "wait": 0})
middle = ["-c", "import subprocess, sys; subprocess.call(sys.argv[1:])", sys.executable] if depth == 2 else []
subprocess.Popen([sys.executable] + middle + ["-c", worker, folder, mode])
print(json.dumps({"holder_pid": held["holder"]["holder_pid"]}), flush=True)
time.sleep(300)
"""

# The stand-in worker: holds a RunGuard; "survive" stands for a worker the watchdog cannot reach in time (its kill is
# replaced, so that what the guard still does afterwards can be seen); waits for a line on stdin before it ends.
WORKER = r"""
import os, sys, time
from ansible_collections.talosops.pki.plugins.module_utils._backends import rotation_lock
from ansible_collections.talosops.pki.plugins.module_utils._errors import RotationStateError
folder, mode = sys.argv[1], sys.argv[2]
if mode == "survive":
    def no_kill(pid, signum):
        os.write(1, b"watchdog fired\n")
    os.kill = no_kill
with rotation_lock.RunGuard(folder) as guard:
    guard.check()
    os.write(1, b"held %d\n" % os.getpid())
    if mode == "tempdir":  # a TLS context being built when the playbook dies: a key file on disk, for a moment
        from ansible_collections.talosops.pki.plugins.module_utils import _files
        with _files.private_tempdir() as private:
            with open(os.path.join(private, "client.key"), "w") as key:
                key.write("not really a key")
            os.write(1, ("tempdir %s\n" % private).encode())
            while guard.alive():
                time.sleep(0.02)
            time.sleep(0.5)
    while guard.alive():
        time.sleep(0.02)
    try:
        guard.check("apply a configuration to 10.5.0.2")
        os.write(1, b"applied\n")
    except RotationStateError as error:
        os.write(1, ("refused: %s\n" % error).encode())
    sys.stdin.readline()
os.write(1, b"released\n")
"""


class Tree:
    """One stand-in playbook and its worker; everything left is killed at the end."""

    def __init__(self, folder, mode, depth=1):
        self.folder = str(folder)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path for path in sys.path if path))
        self.playbook = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, "-c", PLAYBOOK, self.folder, mode, WORKER, str(depth)], env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True)
        self.lines = []
        self._seen = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.holder_pid = json.loads(self.read_line(lambda line: line.startswith("{")))["holder_pid"]
        self.worker_pid = int(self.read_line(lambda line: line.startswith("held ")).split()[1])
        # Handles on processes that are not our children: readable once they have ended.
        self.holder, self.worker = os.pidfd_open(self.holder_pid), os.pidfd_open(self.worker_pid)

    def _read(self):
        for line in self.playbook.stdout:
            with self._seen:
                self.lines.append(line.strip())
                self._seen.notify_all()

    def read_line(self, wanted, seconds=30.0):
        with self._seen:
            found = self._seen.wait_for(lambda: [line for line in self.lines if wanted(line)], seconds)
        if not found:
            raise AssertionError("no such line from the process tree; it printed %r" % self.lines)
        return found[0]

    def kill_playbook(self, signum=signal.SIGKILL):
        self.playbook.send_signal(signum)
        self.playbook.wait()
        return time.monotonic()

    def release_worker(self):
        self.playbook.stdin.write("\n")
        self.playbook.stdin.flush()

    def close(self):
        for pid in (self.worker_pid, self.holder_pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.playbook.poll() is None:
            self.playbook.kill()
            self.playbook.wait()
        self._reader.join(10.0)  # every writer is gone: the pipe ends
        self.playbook.stdout.close()
        self.playbook.stdin.close()
        os.close(self.holder)
        os.close(self.worker)


@pytest.fixture(name="tree")
def fixture_tree(tmp_path):
    trees = []

    def start(mode, depth=1):
        trees.append(Tree(tmp_path / "rotation", mode, depth))
        return trees[-1]
    yield start
    for started in trees:
        started.close()


def ended(handle, seconds):
    return bool(select.select([handle], [], [], seconds)[0])


def lock_file(tree):
    return os.path.join(tree.folder, rotation_lock.LOCK_FILE)


@pytest.mark.parametrize("depth", [1, 2], ids=["worker", "module process under a worker"])
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGHUP], ids=["SIGKILL", "SIGHUP"])
def test_a_worker_is_killed_when_its_playbook_dies_and_only_then_the_lock_goes(tree, signum, depth):
    started = tree("kill", depth)
    killed_at = started.kill_playbook(signum)
    assert ended(started.worker, 5.0), "the worker outlived its playbook"
    assert time.monotonic() - killed_at < 5.0
    assert ended(started.holder, 5.0), "the holder did not let go once the worker had ended"
    assert not os.path.exists(lock_file(started)) and not os.path.exists(started.folder)
    assert "applied" not in started.lines


def test_a_worker_is_not_killed_while_a_key_file_is_on_disk(tree):
    started = tree("tempdir")
    private = started.read_line(lambda line: line.startswith("tempdir ")).split(" ", 1)[1]
    assert os.path.exists(os.path.join(private, "client.key"))
    started.kill_playbook()
    assert ended(started.worker, 10.0) and ended(started.holder, 5.0)
    assert not os.path.exists(private), "the worker was killed with a key file on disk"
    assert "applied" not in started.lines


def test_the_lock_stays_while_a_worker_outlives_its_playbook(tree, monkeypatch):
    started = tree("survive")
    started.kill_playbook()
    started.read_line(lambda line: line == "watchdog fired")
    refused = started.read_line(lambda line: line.startswith("refused: "))
    assert "ansible-playbook pid %d, the run of this task, has ended: not going to apply a configuration to 10.5.0.2. " \
           "Nothing was sent." % started.playbook.pid in refused
    # The playbook is gone, the worker is not: the lock is not free, whoever asks.
    assert not ended(started.holder, 1.0), "the holder let go while a worker of the run still ran"
    assert os.path.exists(lock_file(started))
    other = subprocess.Popen(["sleep", "300"])  # pylint: disable=consider-using-with
    try:
        monkeypatch.setattr(rotation_lock, "owner_pid", lambda: other.pid)
        for check_mode in (True, False):
            with pytest.raises(ConfigError) as held:
                rotation_lock.run({"path": started.folder, "wait": 0.3}, check_mode=check_mode)
            assert "that ansible-playbook has ended, but a process of its run that can still apply a configuration" in str(held.value)
            assert "fuser -v %s" % os.path.join(started.folder, rotation_lock.APPLIERS_FILE) in str(held.value)
        started.release_worker()
        assert ended(started.worker, 5.0) and ended(started.holder, 5.0)
        assert not os.path.exists(lock_file(started))
        assert rotation_lock.run({"path": started.folder, "wait": 0})["holder"]["pid"] == other.pid
    finally:
        other.kill()
        other.wait()


def test_a_guard_is_refused_where_no_run_holds_the_lock(tmp_path):
    with pytest.raises(RotationStateError, match="the rotation lock in %s is not held" % tmp_path):
        with rotation_lock.RunGuard(str(tmp_path)):
            pass


@pytest.fixture(name="foreign_lock")
def fixture_foreign_lock(tmp_path, monkeypatch):
    """A lock held for a playbook that is not an ancestor of this process."""
    other = subprocess.Popen(["sleep", "300"])  # pylint: disable=consider-using-with
    monkeypatch.setattr(rotation_lock, "owner_pid", lambda: other.pid)
    held = rotation_lock.run({"path": str(tmp_path), "wait": 0})
    yield held
    other.kill()
    other.wait()
    os.waitpid(held["holder"]["holder_pid"], 0)


def test_a_guard_is_refused_under_another_runs_lock(tmp_path, foreign_lock):
    with pytest.raises(RotationStateError) as refused:
        with rotation_lock.RunGuard(str(tmp_path)):
            pass
    assert "ansible-playbook pid %d, the run holding the rotation lock in %s, has ended or is not the run of this task" % (
        foreign_lock["holder"]["pid"], tmp_path) in str(refused.value)
    assert "Nothing was sent" in str(refused.value)
    _assert_not_shared(tmp_path)  # the refused guard let its share go


def test_a_guard_is_refused_once_the_holder_is_letting_go(tmp_path, foreign_lock):
    assert foreign_lock["holder"]
    # What the holder does once its playbook has ended: the exclusive lock on the appliers file.
    handle = os.open(os.path.join(tmp_path, rotation_lock.APPLIERS_FILE), os.O_RDWR)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(RotationStateError, match="the run that held the rotation lock in %s has ended" % tmp_path):
            with rotation_lock.RunGuard(str(tmp_path)):
                pass
    finally:
        os.close(handle)


def test_a_guard_is_refused_when_the_lock_is_from_another_host(tmp_path, foreign_lock, monkeypatch):
    assert foreign_lock["holder"]
    holder = dict(foreign_lock["holder"], pid=os.getppid(), host="elsewhere")
    monkeypatch.setattr(rotation_lock, "_read_holder", lambda path: holder)
    with pytest.raises(RotationStateError, match="is held from host elsewhere, not from this one"):
        with rotation_lock.RunGuard(str(tmp_path)):
            pass


def test_a_guard_for_a_live_playbook_lets_applies_through_and_stops_its_watchdog(monkeypatch):
    monkeypatch.setattr(rotation_lock, "owner_pid", os.getppid)  # pytest's parent stands for the playbook
    threads = threading.active_count()
    with rotation_lock.RunGuard() as guard:
        assert guard.pid == os.getppid() and guard.alive()
        guard.check("apply a configuration to 10.5.0.2")
        assert threading.active_count() == threads + 1
    assert threading.active_count() == threads


def test_a_guard_refuses_a_playbook_that_is_not_an_ancestor(monkeypatch):
    other = subprocess.Popen(["sleep", "300"])  # pylint: disable=consider-using-with
    try:
        monkeypatch.setattr(rotation_lock, "owner_pid", lambda: other.pid)
        with pytest.raises(RotationStateError, match="pid %d" % other.pid):
            with rotation_lock.RunGuard():
                pass
    finally:
        other.kill()
        other.wait()


def test_ancestry_is_read_from_proc():
    assert rotation_lock._is_ancestor(os.getppid())  # pylint: disable=protected-access
    assert not rotation_lock._is_ancestor(os.getpid())  # pylint: disable=protected-access
    with subprocess.Popen(["sleep", "300"]) as child:
        try:
            assert not rotation_lock._is_ancestor(child.pid)  # pylint: disable=protected-access
        finally:
            child.kill()


def _assert_not_shared(folder):
    handle = os.open(os.path.join(folder, rotation_lock.APPLIERS_FILE), os.O_RDWR)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        assert exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN), "a shared lock is still held"
        raise
    finally:
        os.close(handle)


def test_the_holder_still_lets_go_when_the_appliers_file_was_removed(tmp_path, monkeypatch):
    playbook = subprocess.Popen(["sleep", "300"])  # pylint: disable=consider-using-with
    monkeypatch.setattr(rotation_lock, "owner_pid", lambda: playbook.pid)
    folder = tmp_path / "rotation"
    holder_pid = rotation_lock.run({"path": str(folder), "wait": 0})["holder"]["holder_pid"]
    os.unlink(folder / rotation_lock.APPLIERS_FILE)
    playbook.kill()
    playbook.wait()
    os.waitpid(holder_pid, 0)
    assert not folder.exists()  # lock file gone, and the folder the lock made
