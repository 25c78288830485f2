# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE to talosops.pki: may change at any time.
"""Follow a node's kubelet through the restart a Kubernetes CA change causes: watched, bounded, named.

Talos restarts the kubelet when the node's Kubernetes CA bundle changes. Upstream waits for it
without a timeout and fails at once on a kubelet that was unhealthy before the patch (leaving
the cluster half patched). Here the watch on Services/kubelet is opened BEFORE the patch: a COSI
watch starts with the current state, so a restart faster than our next call is not missed, and
the wait has a deadline whose error names the node, the step and what to check.
"""

from __future__ import annotations

import asyncio
import contextlib

from ansible_collections.talosops.pki.plugins.module_utils._errors import DeadlineExceededError, TalosAPIError

SERVICE = "kubelet"
# Pause before reopening a watch stream that broke (the endpoint restarted, a connection dropped).
RECONNECT_INTERVAL = 0.2


class _Broken:
    """A watch stream ended or failed; the reader reopens it, the waiter only remembers why."""

    def __init__(self, error):
        self.error = error


def describe(state):
    """Short text for a service state: 'stopped', 'running (not healthy yet)' or 'running and healthy'."""
    if state is None:
        return "never seen"
    if not state["running"]:
        return "stopped"
    return "running and healthy" if state["healthy"] else "running (not healthy yet)"


def _version(state):
    try:
        return int(state["version"])
    except (TypeError, ValueError):
        return None


def is_ready(state):
    """A service state (dict with running, healthy) that counts as up: running and healthy."""
    return state is not None and state["running"] and state["healthy"]


class KubeletWatch:
    """`async with KubeletWatch(client, node, timeout, step) as kubelet:` then wait_ready(), patch, wait_restart().

    `step` names what is being done to the node in error messages (e.g. "the swap phase of the
    Kubernetes CA rotation").
    """

    def __init__(self, client, node, timeout, step):
        self._client = client
        self.node = node
        self.timeout = timeout
        self.step = step
        self.state = None
        self.transitions = []
        self._queue = asyncio.Queue()
        self._reader = None
        self._last_error = None

    async def __aenter__(self):
        self._reader = asyncio.get_running_loop().create_task(self._read())
        try:
            await self._first_state()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, *exc_info):
        await self._stop()

    async def _stop(self):
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None

    async def _read(self):
        """Feed the queue with events; reopen the watch whenever it ends (each new stream restates the current state)."""
        while True:
            try:
                async with contextlib.aclosing(self._client.watch_service(SERVICE, node=self.node)) as events:
                    async for event in events:
                        await self._queue.put(event)
                error = "the watch stream ended"
            except TalosAPIError as exc:
                error = str(exc)
            await self._queue.put(_Broken(error))
            await asyncio.sleep(RECONNECT_INTERVAL)

    async def _next(self, deadline):
        """The next event before `deadline` (loop time), or None when time is up; broken streams are noted and skipped."""
        loop = asyncio.get_running_loop()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                item = await asyncio.wait_for(self._queue.get(), remaining)
            except asyncio.TimeoutError:
                return None
            if isinstance(item, _Broken):
                self._last_error = item.error
                continue
            self.state = item
            return item

    async def _first_state(self):
        event = await self._next(asyncio.get_running_loop().time() + self.timeout)
        if event is None:
            raise DeadlineExceededError(
                "%s: cannot watch the kubelet service before %s (%s within %ss): nothing was applied. Check that the node is "
                "up and reachable through the endpoint (talosctl -n %s service kubelet)." % (
                    self.node, self.step, self._last_error or "no event", self.timeout, self.node), node=self.node)

    async def wait_ready(self):
        """Return once the kubelet runs and is healthy (a restart from an earlier change may still be going on)."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        while not is_ready(self.state):
            if await self._next(deadline) is None:
                raise DeadlineExceededError(
                    "%s: the kubelet is %s and did not become running and healthy within %ss, so %s was not started on this "
                    "node (nothing was applied). Check the kubelet there (talosctl -n %s service kubelet; talosctl -n %s logs "
                    "kubelet), then rerun." % (self.node, describe(self.state), self.timeout, self.step, self.node, self.node),
                    node=self.node)

    async def wait_restart(self):
        """After the patch: the kubelet must go down and come back running and healthy within the timeout."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.timeout
        version_at_patch = _version(self.state)
        seen_down = False
        while True:
            event = await self._next(deadline)
            if event is None:
                raise DeadlineExceededError(
                    "%s: after %s the kubelet did not %s within %ss (last seen: %s%s). The configuration is applied on the "
                    "node. Check the kubelet there (talosctl -n %s service kubelet; talosctl -n %s logs kubelet), or raise "
                    "the kubelet timeout; then rerun: the rotation resumes from the node's state." % (
                        self.node, self.step, "come back running and healthy" if seen_down else "restart", self.timeout,
                        describe(self.state), "; watch: %s" % self._last_error if self._last_error else "",
                        self.node, self.node), node=self.node)
            self.transitions.append(describe(event))
            if not event["running"]:
                seen_down = True
            if not is_ready(event):
                continue
            # A reopened stream restates the current state: a version two or more ahead of the one at the patch
            # means the stop and the start happened while the stream was down.
            missed = event["event"] == "created" and None not in (version_at_patch, _version(event)) and \
                _version(event) >= version_at_patch + 2
            if seen_down or missed:
                return {"restarted": True, "seconds": round(loop.time() - started, 3), "transitions": self.transitions}
