"""talos_rotation_lock's backend: one run per rotation directory, released by the kernel when the playbook process ends."""

import json
import os
import signal
import stat
import subprocess
import time

import pytest

from ansible_collections.talosops.pki.plugins.module_utils._backends import rotation_lock
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, TalosPKIError


class Playbooks:
    """Stand-ins for ansible-playbook processes (the lock's owners), killed at the end."""

    def __init__(self, monkeypatch):
        self._monkeypatch = monkeypatch
        self.processes = []

    def start(self):
        process = subprocess.Popen(["sleep", "300"])  # pylint: disable=consider-using-with
        self.processes.append(process)
        return process

    def run_as(self, process):
        self._monkeypatch.setattr(rotation_lock, "owner_pid", lambda: process.pid)

    def kill(self, process):
        process.send_signal(signal.SIGKILL)
        process.wait()

    def close(self):
        for process in self.processes:
            if process.poll() is None:
                self.kill(process)


@pytest.fixture(name="playbooks")
def fixture_playbooks(monkeypatch):
    playbooks = Playbooks(monkeypatch)
    yield playbooks
    playbooks.close()


def take(path, check_mode=False, wait=10.0):
    return rotation_lock.run({"path": str(path), "wait": wait}, check_mode=check_mode)


def wait_for_exit(pid, seconds=10.0):
    """True once the holder (a child of this test process, which stands in for the task's worker) has exited."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return True
        time.sleep(0.05)
    return False


def free_in_check_mode(path, seconds=10.0):
    """Whether a check run sees the lock free within `seconds` (a holder whose playbook just ended needs a moment)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if take(path, check_mode=True)["holder"] is None:
                return True
        except ConfigError:
            pass
        time.sleep(0.05)
    return False


def test_the_lock_is_held_for_the_playbook_process_and_describes_it(playbooks, tmp_path):
    first = playbooks.start()
    playbooks.run_as(first)
    folder = tmp_path / "rotation"
    result = take(folder)
    assert result["changed"] is False
    assert result["path"] == str(folder / "rotation.lock")
    assert result["holder"]["pid"] == first.pid
    assert set(result["holder"]) == {"pid", "host", "user", "since", "holder_pid"}
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(folder / "rotation.lock").st_mode) == 0o600
    assert json.loads((folder / "rotation.lock").read_text()) == result["holder"]
    os.kill(result["holder"]["holder_pid"], 0)  # the holder runs


def test_a_second_run_is_refused_naming_the_first_and_the_first_keeps_it(playbooks, tmp_path):
    first, second = playbooks.start(), playbooks.start()
    playbooks.run_as(first)
    held = take(tmp_path)
    playbooks.run_as(second)
    with pytest.raises(ConfigError) as refused:
        take(tmp_path, wait=300)  # a live holder on this host is refused at once, not after `wait`
    message = str(refused.value)
    assert "another rotation is running with this rotation directory" in message
    assert "ansible-playbook pid %d" % first.pid in message
    assert "Nothing was changed" in message
    assert json.loads((tmp_path / "rotation.lock").read_text()) == held["holder"]


def test_the_same_playbook_takes_its_own_lock_again(playbooks, tmp_path):
    first = playbooks.start()
    playbooks.run_as(first)
    held = take(tmp_path)
    again = take(tmp_path)
    assert again["holder"] == held["holder"]


def test_a_killed_playbook_leaves_no_lock_behind(playbooks, tmp_path):
    first, second = playbooks.start(), playbooks.start()
    playbooks.run_as(first)
    holder_pid = take(tmp_path)["holder"]["holder_pid"]
    playbooks.kill(first)
    assert wait_for_exit(holder_pid), "the holder outlived the playbook it holds the lock for"
    assert not (tmp_path / "rotation.lock").exists()
    playbooks.run_as(second)
    assert take(tmp_path)["holder"]["pid"] == second.pid


def test_the_folders_the_lock_made_go_with_it_when_empty(playbooks, tmp_path):
    first = playbooks.start()
    playbooks.run_as(first)
    folder = tmp_path / "clusters" / "prod"
    holder_pid = take(folder)["holder"]["holder_pid"]
    assert folder.is_dir()
    playbooks.kill(first)
    assert wait_for_exit(holder_pid)
    assert os.listdir(tmp_path) == []  # a refused run leaves nothing behind


def test_a_folder_that_holds_a_rotation_stays(playbooks, tmp_path):
    first = playbooks.start()
    playbooks.run_as(first)
    folder = tmp_path / "rotation"
    holder_pid = take(folder)["holder"]["holder_pid"]
    (folder / "talos").mkdir()
    playbooks.kill(first)
    assert wait_for_exit(holder_pid)
    assert os.listdir(folder) == ["talos"]


def test_a_lock_file_left_by_a_killed_holder_is_taken_again(playbooks, tmp_path):
    (tmp_path / "rotation.lock").write_text('{"pid": 1, "host": "elsewhere"}')
    playbooks.run_as(playbooks.start())
    assert take(tmp_path, wait=0)["holder"]["host"] != "elsewhere"


def test_a_lock_whose_playbook_just_died_is_waited_for(playbooks, tmp_path):
    first, second = playbooks.start(), playbooks.start()
    playbooks.run_as(first)
    take(tmp_path)
    playbooks.kill(first)
    playbooks.run_as(second)  # right away: the holder may not have noticed yet
    assert take(tmp_path, wait=10)["holder"]["pid"] == second.pid


def test_check_mode_creates_nothing_and_reports_a_free_lock(playbooks, tmp_path):
    playbooks.run_as(playbooks.start())
    folder = tmp_path / "rotation"
    assert take(folder, check_mode=True) == {"changed": False, "path": str(folder / "rotation.lock"), "holder": None}
    assert not folder.exists()


def test_check_mode_is_refused_while_another_run_holds_the_lock_and_does_not_take_it(playbooks, tmp_path):
    first, second = playbooks.start(), playbooks.start()
    playbooks.run_as(first)
    take(tmp_path)
    playbooks.run_as(second)
    with pytest.raises(ConfigError, match="another rotation is running"):
        take(tmp_path, check_mode=True)
    playbooks.kill(first)
    playbooks.run_as(playbooks.start())
    assert free_in_check_mode(tmp_path)
    assert take(tmp_path)["holder"]["pid"] != first.pid  # the check did not keep the lock


def test_a_lock_path_that_is_a_directory_is_refused(playbooks, tmp_path):
    playbooks.run_as(playbooks.start())
    (tmp_path / "rotation.lock").mkdir()
    with pytest.raises(ConfigError, match="rotation.lock is a directory"):
        take(tmp_path)


def test_a_negative_wait_is_refused(tmp_path):
    with pytest.raises(TalosPKIError, match="wait is -1.0"):
        take(tmp_path, wait=-1.0)
    assert not (tmp_path / "rotation.lock").exists()
