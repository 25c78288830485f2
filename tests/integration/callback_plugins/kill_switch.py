# Test-only callback: SIGKILL ansible-playbook right after a chosen task finishes on a chosen host,
# to prove that a rotation interrupted at that point resumes. Enabled by the tests through
# ANSIBLE_CALLBACKS_ENABLED=kill_switch and configured by TALOSOPS_KILL_AFTER="<task name substring>@<host>".
from __future__ import annotations

import os
import signal

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: kill_switch
type: aggregate
short_description: kill the run after a given task on a given host (tests only)
description: Reads TALOSOPS_KILL_AFTER as "<task name substring>@<host>".
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

    def v2_runner_on_ok(self, result):
        if self._task and self._task in result.task_name and result._host.get_name() == self._host:  # pylint: disable=protected-access
            os.killpg(os.getpgrp(), signal.SIGKILL)
