"""KubeletWatch: a restart seen through the watch, one missed during a reconnect, and timeouts that name the node."""

import asyncio

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _kubelet
from ansible_collections.talosops.pki.plugins.module_utils._errors import DeadlineExceededError, TalosAPIError

NODE = "10.5.0.7"
STEP = "the swap phase of the Kubernetes CA rotation"


def state(running, healthy, version, event="updated"):
    return {"event": event, "id": "kubelet", "running": running, "healthy": healthy, "unknown": False, "version": str(version)}


class FakeClient:
    """watch_service yields the scripted events of one stream per call; a stream ends, or raises, as scripted.

    Events of a stream after the marker AFTER_PATCH are held back until patched() is called.
    """

    AFTER_PATCH = object()

    def __init__(self, *streams):
        self.streams = list(streams)
        self.opened = 0
        self._patched = asyncio.Event()

    def patched(self):
        self._patched.set()

    async def watch_service(self, service_id, node=None):
        assert (service_id, node) == ("kubelet", NODE)
        self.opened += 1
        script = self.streams.pop(0) if self.streams else [asyncio.Event()]
        for item in script:
            if item is self.AFTER_PATCH:
                await self._patched.wait()
            elif isinstance(item, Exception):
                raise item
            elif isinstance(item, asyncio.Event):
                await item.wait()  # a stream that stays open and silent
            else:
                await asyncio.sleep(0.01)
                yield item


def run_watch(client, timeout=1.0, before_patch=None):
    async def scenario():
        async with _kubelet.KubeletWatch(client, NODE, timeout, STEP) as kubelet:
            await kubelet.wait_ready()
            if before_patch:
                before_patch(kubelet)
            client.patched()
            return await kubelet.wait_restart()
    return asyncio.run(scenario())


def test_restart_seen_down_then_running_then_healthy():
    client = FakeClient([state(True, True, 5, "created"), FakeClient.AFTER_PATCH, state(False, False, 6), state(True, False, 7),
                         state(True, True, 8), asyncio.Event()])
    outcome = run_watch(client)
    assert outcome["restarted"] and outcome["transitions"] == ["stopped", "running (not healthy yet)", "running and healthy"]
    assert client.opened == 1


def test_restart_missed_while_the_stream_was_down_is_recognised_by_the_version():
    # The stream breaks right after the patch; the reopened one restates the state, two versions further.
    client = FakeClient([state(True, True, 5, "created"), FakeClient.AFTER_PATCH, TalosAPIError("connection lost")],
                        [state(True, True, 8, "created"), asyncio.Event()])
    assert run_watch(client)["restarted"]
    assert client.opened == 2


def test_a_reopened_stream_with_the_same_version_is_not_a_restart():
    client = FakeClient([state(True, True, 5, "created"), FakeClient.AFTER_PATCH],
                        [state(True, True, 5, "created"), asyncio.Event()])
    with pytest.raises(DeadlineExceededError, match="did not restart within 0.5s"):
        run_watch(client, timeout=0.5)


def test_waits_for_a_kubelet_still_restarting_before_the_patch():
    client = FakeClient([state(True, False, 7, "created"), state(True, True, 8), FakeClient.AFTER_PATCH, state(False, False, 9),
                         state(True, True, 11), asyncio.Event()])
    seen = []
    run_watch(client, before_patch=lambda kubelet: seen.append(dict(kubelet.state)))
    assert seen[0]["version"] == "8"


def test_timeout_after_the_patch_names_node_step_and_what_to_check():
    client = FakeClient([state(True, True, 5, "created"), FakeClient.AFTER_PATCH, state(False, False, 6), asyncio.Event()])
    with pytest.raises(DeadlineExceededError) as error:
        run_watch(client, timeout=0.4)
    message = str(error.value)
    assert error.value.node == NODE
    assert NODE in message and STEP in message and "come back running and healthy within 0.4s" in message
    assert "last seen: stopped" in message and "talosctl -n %s service kubelet" % NODE in message and "rerun" in message


def test_unhealthy_kubelet_before_the_patch_applies_nothing():
    client = FakeClient([state(False, False, 5, "created"), asyncio.Event()])
    with pytest.raises(DeadlineExceededError, match="nothing was applied") as error:
        run_watch(client, timeout=0.3)
    assert "is stopped" in str(error.value)


def test_no_watch_at_all_fails_before_the_patch():
    client = FakeClient(*([TalosAPIError("PermissionDenied: not authorized")] for _attempt in range(50)))
    with pytest.raises(DeadlineExceededError, match="cannot watch the kubelet service") as error:
        run_watch(client, timeout=0.3)
    assert "PermissionDenied: not authorized" in str(error.value)


@pytest.mark.parametrize("value,text", [(None, "never seen"), (state(False, False, 1), "stopped"),
                                        (state(True, False, 1), "running (not healthy yet)"), (state(True, True, 1), "running and healthy")])
def test_describe(value, text):
    assert _kubelet.describe(value) == text
