"""TalosClient.apply_configuration(guard=...): asked right before every attempt goes out; what it raises stops the call unsent."""

import pytest

pytest.importorskip("grpclib")

from grpclib.const import Status  # noqa: E402  pylint: disable=wrong-import-position
from grpclib.exceptions import GRPCError  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.talosops.pki.plugins.module_utils import _talos_api_pb as pb  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.talosops.pki.plugins.module_utils._client import Credentials, TalosClient, run  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.talosops.pki.plugins.module_utils._errors import RotationStateError  # noqa: E402  pylint: disable=wrong-import-position

from _grpc_test_server import (  # noqa: E402  pylint: disable=wrong-import-position,import-error
    FakeTalos,
    RunningServer,
    make_ca,
    make_client_cert,
    make_server_cert,
    server_ssl_context,
)

APPLIED = pb.message_class("machine.ApplyConfigurationResponse")(messages=[{"mode": 2, "mode_details": "Applied"}])


class Guard:
    """Stands for rotation_lock.RunGuard.check: records what it is asked, raises from the `gone_at`-th question on."""

    def __init__(self, gone_at=None):
        self.asked = []
        self.gone_at = gone_at

    def __call__(self, what):
        self.asked.append(what)
        if self.gone_at is not None and len(self.asked) >= self.gone_at:
            raise RotationStateError("the run has ended: not going to %s" % what)


def busy_then_applied(busy):
    seen = {"calls": 0}

    async def behaviour(_request, _stream):
        seen["calls"] += 1
        if seen["calls"] <= busy:
            raise GRPCError(Status.FAILED_PRECONDITION, "another apply configuration call is in progress")
        return APPLIED
    return behaviour


def apply_with(fake, guard, **call):
    ca = make_ca()
    admin = make_client_cert(ca)
    credentials = Credentials(ca=ca.crt, crt=admin.crt, key=admin.key)

    async def scenario():
        async with RunningServer(fake, server_ssl_context(make_server_cert(ca), [ca.crt])) as server:
            async with TalosClient(["127.0.0.1"], credentials, port=server.port, retry_deadline=5.0, retry_interval=0.02,
                                   connect_timeout=3.0, call_timeout=5.0) as client:
                await client.version()  # connected and trusted before the apply: only the apply meets the guard
                return await client.apply_configuration(b"version: v1alpha1\n", node="10.5.0.2", guard=guard, **call)
    return run(scenario())


def version_reply():
    version = pb.message_class("machine.Version")(version={"tag": "v1.13.4"})
    return pb.message_class("machine.VersionResponse")(messages=[version])


def scripted(apply_behaviour):
    fake = FakeTalos()

    async def version(_request, _stream):
        return version_reply()
    fake.on("Version", version)
    fake.on("ApplyConfiguration", apply_behaviour)
    return fake


def test_the_guard_is_asked_before_the_apply_and_before_each_retry():
    fake, guard = scripted(busy_then_applied(2)), Guard()
    assert apply_with(fake, guard)["mode_details"] == "Applied"
    assert len(fake.calls("ApplyConfiguration")) == 3
    assert len(guard.asked) == 3 and len(set(guard.asked)) == 1
    assert guard.asked[0].startswith("send ApplyConfiguration (no_reboot) to node 10.5.0.2 via endpoint 127.0.0.1:")


def test_a_guard_that_raises_first_stops_the_apply_before_anything_is_sent():
    fake, guard = scripted(busy_then_applied(0)), Guard(gone_at=1)
    with pytest.raises(RotationStateError, match="not going to send ApplyConfiguration"):
        apply_with(fake, guard)
    assert fake.calls("ApplyConfiguration") == []


def test_a_guard_that_raises_between_retries_stops_them():
    fake, guard = scripted(busy_then_applied(5)), Guard(gone_at=3)
    with pytest.raises(RotationStateError):
        apply_with(fake, guard)
    assert len(fake.calls("ApplyConfiguration")) == 2  # the third attempt never left


def test_other_calls_do_not_ask_the_guard():
    fake, guard = scripted(busy_then_applied(0)), Guard()
    apply_with(fake, guard, dry_run=True)
    assert len(guard.asked) == 1 and len(fake.calls("Version")) == 1
