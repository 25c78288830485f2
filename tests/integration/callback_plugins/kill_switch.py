# Test-only callback: SIGKILL ansible-playbook right after a chosen task finishes on a chosen host,
# to prove that a rotation interrupted at that point resumes. Enabled by the tests through
# ANSIBLE_CALLBACKS_ENABLED=kill_switch and configured by TALOSOPS_KILL_AFTER="<task name substring>@<host>".
# "<task name substring>@<host>+<seconds>" kills that many seconds after the task starts instead, while it runs
# (e.g. in the middle of a kubelet wait).
from __future__ import annotations

import os
import signal
import threading

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: kill_switch
type: aggregate
short_description: kill the run after a given task on a given host (tests only)
description: Reads TALOSOPS_KILL_AFTER as "<task name substring>@<host>" or "<task name substring>@<host>+<seconds after its start>".
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "kill_switch"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        spec = os.environ.get("TALOSOPS_KILL_AFTER", "")
        self._task, self._host = spec.rsplit("@", 1) if "@" in spec else ("", "")
        self._delay = None
        if "+" in self._host:
            self._host, delay = self._host.split("+", 1)
            self._delay = float(delay)

    def _matches(self, task_name, host):
        return self._task and self._task in task_name and host.get_name() == self._host

    @staticmethod
    def _kill():
        os.killpg(os.getpgrp(), signal.SIGKILL)

    def v2_runner_on_start(self, host, task):
        if self._delay is not None and self._matches(task.get_name(), host):
            threading.Timer(self._delay, self._kill).start()

    def v2_runner_on_ok(self, result):
        if self._delay is None and self._matches(result.task_name, result._host):  # pylint: disable=protected-access
            self._kill()
