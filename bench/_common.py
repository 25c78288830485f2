"""What every benchmark under bench/ shares: import paths, running ansible-playbook, per-task times, peak memory.

Importing it puts tests/ (collection_root), tests/simulator (talos_sim) and the collection (ansible_collections.
talosops.pki) on sys.path. run_playbook() runs a playbook as a user does (ansible-playbook from this Python's bin
folder, the checkout exposed as the collection) and returns its wall time, exit code, the time of each task (from its
header to the next one) and, when asked, the peak memory of ansible-playbook and all its children (RSS and PSS, each
summed over the process tree, sampled from /proc).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tests"), os.path.join(ROOT, "tests", "simulator")]

from collection_root import collections_root  # noqa: E402  pylint: disable=wrong-import-position

COLLECTIONS = collections_root()
sys.path.insert(0, COLLECTIONS)

PLAYBOOKS = os.path.join(ROOT, "playbooks")
ROLE_PREFIX = "talosops.pki.rotate_ca : "


def tool(name):
    """Path of an entry point (ansible-playbook, ...) next to this Python."""
    return os.path.join(os.path.dirname(sys.executable), name)


def ansible_env(**extra):
    """The environment to run Ansible against this checkout: the collection on its path, plain unbuffered output."""
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR="1", PYTHONUNBUFFERED="1", **extra)


class PlaybookRun(NamedTuple):
    seconds: float
    returncode: int
    tasks: list  # [(task name, seconds)] in the order they ran
    peak_rss: int | None  # bytes, when sampled: RSS summed over the tree
    peak_pss: int | None  # bytes, when sampled: PSS summed (shared pages split between the processes sharing them)
    errors: list  # the lines that report a failure (fatal, [ERROR])
    tail: str  # the last lines of the output, for a failed run


def run_playbook(inventory, playbook, forks=5, extra=None, memory=False, args=(), echo_errors=True):
    """Run `playbook` (a path, or a name under playbooks/) over `inventory` with `extra` vars; see PlaybookRun."""
    if not os.path.isabs(playbook):
        playbook = os.path.join(PLAYBOOKS, playbook)
    command = [tool("ansible-playbook"), "-i", str(inventory), playbook, "-f", str(forks)]
    if extra:
        command += ["-e", json.dumps(extra)]
    command += list(args)
    tasks, errors, tail, current, current_start = [], [], [], None, None
    began = time.monotonic()
    with subprocess.Popen(command, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as run, \
            TreeMemory(run.pid, enabled=memory) as sampled:
        for line in run.stdout:
            now = time.monotonic()
            if line.startswith(("TASK [", "PLAY RECAP")):
                if current:
                    tasks.append((current, now - current_start))
                current, current_start = line.split("]")[0][6:].replace(ROLE_PREFIX, ""), now
            if line.startswith(("fatal", "[ERROR]")):
                errors.append(line.rstrip())
                if echo_errors:
                    print(line.rstrip())
            tail = (tail + [line])[-60:]
    return PlaybookRun(time.monotonic() - began, run.returncode, tasks, sampled.peak if memory else None,
                       sampled.peak_pss if memory else None, errors, "".join(tail))


def print_slowest(tasks, count=12):
    for name, seconds in sorted(tasks, key=lambda item: -item[1])[:count]:
        print("%7.2f s  %s" % (seconds, name))


def task_seconds(tasks, prefix):
    """Total seconds of the tasks whose name starts with `prefix`."""
    return sum(seconds for name, seconds in tasks if name.startswith(prefix))


# --- memory of a process tree ---------------------------------------------------------------------


def _children_map():
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as handle:
                stat = handle.read()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ")".
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _memory(pid):
    """(RSS, PSS) of one process in bytes; (0, 0) when it is gone or a kernel thread."""
    rss = pss = 0
    try:
        with open("/proc/%d/smaps_rollup" % pid, "rb") as handle:
            for line in handle:
                if line.startswith(b"Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith(b"Pss:"):
                    pss = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    return rss, pss


def tree_memory(root):
    """(RSS, PSS) in bytes of `root` and all its descendants right now, each summed over the processes. The RSS sum
    counts a page shared by N processes N times (as adding up `ps` does: forked Ansible workers share most of their
    pages with ansible-playbook); the PSS sum counts it once."""
    children, rss, pss, todo = _children_map(), 0, 0, [root]
    while todo:
        pid = todo.pop()
        one = _memory(pid)
        rss, pss = rss + one[0], pss + one[1]
        todo.extend(children.get(pid, ()))
    return rss, pss


class TreeMemory:
    """`with TreeMemory(pid) as sampled:` samples tree_memory(pid) every `interval` seconds in a thread; `sampled.peak`
    (RSS) and `sampled.peak_pss`."""

    def __init__(self, pid, interval=0.1, enabled=True):
        self.pid, self.interval, self.enabled = pid, interval, enabled
        self.peak = self.peak_pss = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = None

    def _sample(self):
        while True:
            rss, pss = tree_memory(self.pid)
            self.peak, self.peak_pss = max(self.peak, rss), max(self.peak_pss, pss)
            self.samples += 1
            if self._stop.wait(self.interval):
                return

    def __enter__(self):
        if self.enabled:
            self._thread = threading.Thread(target=self._sample, name="tree-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def mib(size):
    return size / (1024 * 1024)


def verdict(ok):
    return "PASS" if ok else "MISS"
