# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: rotation_progress
type: notification
short_description: Progress of each phase's node patches, wave by wave, with the waves left
version_added: 0.1.0
description:
  - For each C(talosops.pki.talos_machine_patch) task (each phase of the C(talosops.pki.rotate_ca) role patches its
    control planes in one task, then its workers in one, in waves), prints a line per wave - the nodes of that wave,
    how long it took, how many nodes are done and left, and an estimate of the time the waves left take (the average
    wave so far); a failed wave names its failed nodes. The waves come from the task's result.
  - A task that patches one node per host (C(node) rather than C(nodes)) gets a line each time a node is done, with
    the waves left estimated from the number of hosts seen patching at once.
  - A Kubernetes API CA rotation of a large cluster spends minutes waiting for kubelets; this shows it moving.
  - Adds to the output of the stdout callback (it prints nothing else and changes nothing).
  - Enable it with C(callbacks_enabled = talosops.pki.rotation_progress) in C(ansible.cfg), or
    E(ANSIBLE_CALLBACKS_ENABLED=talosops.pki.rotation_progress).
requirements:
  - enabled in callbacks_enabled
author:
  - talosops.pki contributors (@talosops)
"""

import math
import time

from ansible.plugins.callback import CallbackBase

PATCH_ACTIONS = ("talosops.pki.talos_machine_patch", "talos_machine_patch")


class _TaskProgress:
    """Counts of one patch task across its hosts."""

    def __init__(self, uuid, name, hosts):
        self.uuid = uuid
        self.name = name
        self.hosts = hosts
        self.started = time.monotonic()
        self.starts = {}  # host -> when it started
        self.patched = []  # (start, end) of each node patched (not skipped)
        self.done = 0
        self.skipped = 0
        self.widest = 0  # most patched nodes that ran at once: the wave size

    def start(self, host):
        self.starts[host] = time.monotonic()

    def finish(self, host, skipped):
        started = self.starts.pop(host, self.started)
        if skipped:
            self.skipped += 1
            return
        self.done += 1
        interval = (started, time.monotonic())
        self.patched.append(interval)
        overlapping = sum(1 for start, end in self.patched if start < interval[1] and end > interval[0])
        self.widest = max(self.widest, overlapping)

    def line(self):
        elapsed = time.monotonic() - self.started
        left = max(self.hosts - self.done - self.skipped, 0)
        text = "progress | %s: %d node%s done in %.0fs" % (self.name, self.done, "" if self.done == 1 else "s", elapsed)
        if not left:
            return text + ", none left"
        wave = max(self.widest, 1)
        waves_done = max(math.ceil(self.done / wave), 1)
        waves_left = math.ceil(left / wave)
        return text + "; %d left (at most; nodes of the other tier skip it): about %d more wave%s of %d, ~%.0fs" % (
            left, waves_left, "" if waves_left == 1 else "s", wave, elapsed / waves_done * waves_left)


def wave_lines(name, outcome):
    """One line per wave of a wave-mode talos_machine_patch result: its nodes, seconds, nodes done and left, time left."""
    planned = [wave for wave in outcome["waves"] if wave.get("nodes")]
    # The nodes that succeeded and those that failed (a failure stops before the next wave: its nodes are not counted).
    total = len(outcome.get("nodes") or []) + len(outcome.get("failed_nodes") or [])
    failed = set(outcome.get("failed_nodes") or [])
    lines, done, spent = [], 0, 0.0
    for index, wave in enumerate(planned, 1):
        nodes = wave["nodes"]
        seconds = float(wave.get("seconds") or 0.0)
        broken = [node for node in nodes if node in failed]
        done += len(nodes) - len(broken)
        spent += seconds
        text = "progress | %s: wave %d of %d, %d node%s in %.1fs (%d changed); %d of %d nodes done" % (
            name, index, len(planned), len(nodes), "" if len(nodes) == 1 else "s", seconds,
            len(wave.get("changed_nodes") or []), done, total)
        if broken:
            # The task's own message names each failed node by inventory name and address, with the reason.
            text += "; FAILED: %s (see the task's message)" % ", ".join(broken)
        elif done >= total:
            text += ", none left"
        else:
            left = max(math.ceil((total - done) / max(len(nodes), 1)), 1)
            text += "; about %d more wave%s, ~%.0fs" % (left, "" if left == 1 else "s", spent / index * left)
        lines.append(text)
    return lines


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "talosops.pki.rotation_progress"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._hosts = 0
        self._task = None

    def v2_playbook_on_play_start(self, play):
        manager = play.get_variable_manager()
        inventory = getattr(manager, "_inventory", None)
        self._hosts = len(inventory.get_hosts(play.hosts)) if inventory is not None else 0

    def v2_playbook_on_task_start(self, task, is_conditional):
        if task.action not in PATCH_ACTIONS:
            self._task = None
            return
        # The task's own name, without the role's prefix the task banner shows before it.
        self._task = _TaskProgress(task._uuid, (task.name or task.get_name()).strip(), self._hosts)  # pylint: disable=protected-access

    def v2_runner_on_start(self, host, task):
        if self._task is not None:
            self._task.start(host.get_name())

    def _finished(self, result, skipped=False):
        task = getattr(result, "task", None) or result._task  # pylint: disable=protected-access
        if self._task is None or task._uuid != self._task.uuid:  # pylint: disable=protected-access
            return
        outcome = getattr(result, "result", None) or result._result  # pylint: disable=protected-access
        if not skipped and isinstance(outcome, dict) and isinstance(outcome.get("waves"), list):
            for line in wave_lines(self._task.name, outcome):
                self._display.display(line)
            return
        host = getattr(result, "host", None) or result._host  # pylint: disable=protected-access
        self._task.finish(host.get_name(), skipped)
        if not skipped:
            self._display.display(self._task.line())

    def v2_runner_on_ok(self, result):
        self._finished(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._finished(result)

    def v2_runner_on_skipped(self, result):
        self._finished(result, skipped=True)

    def v2_runner_on_unreachable(self, result):
        self._finished(result)
