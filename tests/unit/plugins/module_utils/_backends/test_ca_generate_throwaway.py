"""The check-mode throwaway CA folder: a check run that failed or was killed leaves one (with a key) behind; the next
check run sweeps the folders whose ansible-playbook is gone, and nobody else's."""

import json
import os
import socket
import subprocess
import sys
import time

from ansible_collections.talosops.pki.plugins.module_utils._backends import ca_generate


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def leftover(tmp_path, name, owner=None, age=0):
    folder = tmp_path / (ca_generate.THROWAWAY_PREFIX + name)
    (folder / "ca").mkdir(parents=True)
    (folder / "ca" / "ca.key").write_text("key")
    if owner is not None:
        (folder / ca_generate.THROWAWAY_OWNER).write_text(json.dumps(owner))
    if age:
        os.utime(folder, (time.time() - age, time.time() - age))
    return folder


def test_a_new_throwaway_folder_sweeps_those_of_runs_that_are_over(tmp_path):
    host = socket.gethostname()
    dead = leftover(tmp_path, "dead", {"pid": dead_pid(), "host": host})
    alive = leftover(tmp_path, "alive", {"pid": os.getpid(), "host": host})
    elsewhere = leftover(tmp_path, "elsewhere", {"pid": dead_pid(), "host": host + "-other"})
    old_unowned = leftover(tmp_path, "old", age=2 * ca_generate.THROWAWAY_MAX_AGE)
    new_unowned = leftover(tmp_path, "new")
    unrelated = tmp_path / "someone-elses"
    unrelated.mkdir()

    path = ca_generate.throwaway_dir(str(tmp_path))

    assert path.endswith("/ca") and os.path.isdir(os.path.dirname(path))
    assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"
    owner = json.loads((tmp_path / os.path.basename(os.path.dirname(path)) / ca_generate.THROWAWAY_OWNER).read_text())
    assert owner["pid"] == os.getppid() and owner["host"] == host
    assert not dead.exists() and not old_unowned.exists()
    assert alive.exists() and elsewhere.exists() and new_unowned.exists() and unrelated.exists()
