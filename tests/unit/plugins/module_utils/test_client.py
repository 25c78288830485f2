"""TalosClient against a grpclib server over real mutual TLS with Ed25519 certificates both ways."""

import asyncio
import gzip
import io
import os
import ssl
import stat
import tarfile
import tempfile
from types import SimpleNamespace

import pytest

pytest.importorskip("grpclib")

from grpclib.const import Status  # noqa: E402  pylint: disable=wrong-import-position
from grpclib.exceptions import GRPCError  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.talosops.pki.plugins.module_utils import _client  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.talosops.pki.plugins.module_utils import _talos_api_pb as pb  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.talosops.pki.plugins.module_utils._client import (  # noqa: E402  pylint: disable=wrong-import-position
    Credentials,
    TalosClient,
    run,
)
from ansible_collections.talosops.pki.plugins.module_utils._errors import (  # noqa: E402  pylint: disable=wrong-import-position
    ApplyInProgressError,
    CertificateExpiredError,
    ClientNotTrustedError,
    DeadlineExceededError,
    KeyMismatchError,
    NodeUnreachableError,
    NotFoundError,
    NotPEMError,
    PermissionDeniedError,
    ServerNotTrustedError,
    TalosAPIError,
    UnsupportedVersionError,
)

from _grpc_test_server import (  # noqa: E402  pylint: disable=wrong-import-position,import-error
    HOUR,
    NOW,
    FakeTalos,
    RunningServer,
    make_ca,
    make_client_cert,
    make_server_cert,
    server_ssl_context,
    talos_key_label,
)

message_class = pb.message_class
# Short retries keep the failure tests fast.
FAST_SETTINGS = {"retry_deadline": 1.0, "retry_interval": 0.02, "connect_timeout": 3.0, "call_timeout": 5.0}


@pytest.fixture(scope="module")
def pki():
    """A cluster CA with apid's server certificate and talosconfig client certificates."""
    ca = make_ca()
    admin = make_client_cert(ca)
    return SimpleNamespace(
        ca=ca,
        server=make_server_cert(ca),
        admin=admin,
        # Talos writes Ed25519 keys under its own PEM label.
        credentials=Credentials(ca=ca.crt, crt=admin.crt, key=talos_key_label(admin.key)),
    )


def serve(fake, pki, server=None, client_cas=None, max_tls=None, port=0):
    context = server_ssl_context(server or pki.server, client_cas or [pki.ca.crt], max_tls)
    return RunningServer(fake, context, port=port)


def client_for(server, credentials, endpoints=("127.0.0.1",), **settings):
    options = dict(FAST_SETTINGS, port=server.port if server else 50000)
    options.update(settings)
    return TalosClient(list(endpoints), credentials, **options)


def version_reply(tag="v1.9.0", hostname=""):
    version = message_class("machine.Version")(version={"tag": tag, "sha": "abc", "os": "Talos", "arch": "amd64"},
                                               platform={"name": "metal", "mode": "metal"}, features={"rbac": True})
    if hostname:
        version.metadata.hostname = hostname
    return message_class("machine.VersionResponse")(messages=[version])


def replying(reply):
    async def behaviour(_request, _stream):
        return reply
    return behaviour


def failing(times, status, message="scripted failure", then=None):
    """Fail the first `times` calls with `status` (every call when times is None), then answer `then`."""
    seen = {"calls": 0}

    async def behaviour(_request, _stream):
        seen["calls"] += 1
        if times is None or seen["calls"] <= times:
            raise GRPCError(status, message)
        return then
    return behaviour


def resource(resource_id, spec, version="3", resource_type="", namespace=""):
    res = message_class("cosi.resource.Resource")()
    res.metadata.id = resource_id
    res.metadata.version = version
    res.metadata.type = resource_type
    res.metadata.namespace = namespace
    res.metadata.phase = "running"
    if spec is not None:
        res.spec.proto_spec = spec.SerializeToString()
    return res


# --- routing, shapes, TLS success ---------------------------------------------------------------

def test_version_direct_and_through_node_header(pki):
    fake = FakeTalos()
    fake.on("Version", replying(version_reply()))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            direct = await client.version()
            routed = await client.version(node="10.0.0.5")
        return direct, routed

    direct, routed = run(scenario())
    assert direct == {"node": "127.0.0.1", "hostname": None, "tag": "v1.9.0", "sha": "abc", "arch": "amd64", "os": "Talos",
                      "platform": "metal", "platform_mode": "metal", "rbac": True}
    assert routed["node"] == "10.0.0.5"
    first, second = fake.calls("Version")
    assert "node" not in first.metadata
    assert second.metadata["node"] == "10.0.0.5"


@pytest.mark.parametrize("server_ca_name", ["old", "new"])
@pytest.mark.parametrize("bundle_order", [("old", "new"), ("new", "old")])
def test_bundle_with_old_and_new_ca_of_same_subject_trusts_either(server_ca_name, bundle_order):
    # Mid-rotation the talosconfig trusts two CAs whose subjects are both just O=talos.
    cas = {"old": make_ca(), "new": make_ca()}
    admin = make_client_cert(cas["old"])
    credentials = Credentials(ca=b"".join(cas[name].crt for name in bundle_order), crt=admin.crt, key=admin.key)
    fake = FakeTalos()
    fake.on("Version", replying(version_reply()))

    async def scenario():
        context = server_ssl_context(make_server_cert(cas[server_ca_name]), [cas["old"].crt])
        async with RunningServer(fake, context) as server, client_for(server, credentials) as client:
            return await client.version()

    assert run(scenario())["tag"] == "v1.9.0"


def test_tls12_only_server_works(pki):
    fake = FakeTalos()
    fake.on("Version", replying(version_reply()))

    async def scenario():
        async with serve(fake, pki, max_tls=ssl.TLSVersion.TLSv1_2) as server, client_for(server, pki.credentials) as client:
            return await client.version()

    assert run(scenario())["tag"] == "v1.9.0"


@pytest.mark.parametrize("memfd", [True, False], ids=["memory-file", "no-memfd-fallback"])
def test_the_key_is_loaded_from_memory_or_a_private_temp_dir_removed_before_connecting(pki, tmp_path, monkeypatch, memfd):
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp_root))
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    if not memfd:
        monkeypatch.delattr(os, "memfd_create", raising=False)
    elif not hasattr(os, "memfd_create"):
        pytest.skip("no memfd_create on this system: the fallback case covers it")
    seen = []
    original = ssl.SSLContext.load_cert_chain

    def recording_load_cert_chain(context, certfile, keyfile=None, password=None):
        folder = os.path.dirname(keyfile)
        in_memory, in_temp_dir = keyfile.startswith("/proc/self/fd/"), os.path.basename(folder).startswith("talosops-pki-")
        if in_memory or in_temp_dir:  # the client's load, not the test server's
            with open(keyfile, "rb") as handle:
                label = handle.readline()
            modes = (stat.S_IMODE(os.stat(folder).st_mode), stat.S_IMODE(os.stat(keyfile).st_mode)) if in_temp_dir else None
            seen.append((in_memory, in_temp_dir, modes, label))
        return original(context, certfile, keyfile, password)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", recording_load_cert_chain)
    fake = FakeTalos()
    fake.on("Version", replying(version_reply()))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            await client.version()
            return list(temp_root.iterdir())

    assert run(scenario()) == []
    # Talos' "ED25519 PRIVATE KEY" label was rewritten to the PKCS#8 label OpenSSL reads.
    if memfd:  # an anonymous memory file: nothing on any file system, nothing left by a killed process
        assert seen == [(True, False, None, b"-----BEGIN PRIVATE KEY-----\n")]
    else:
        assert seen == [(False, True, (0o700, 0o600), b"-----BEGIN PRIVATE KEY-----\n")]


def test_close_makes_the_next_call_handshake_again(pki):
    # "Does the node trust X now" needs a new connection: apid keeps established ones.
    fake = FakeTalos()
    fake.on("Version", replying(version_reply()))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            await client.version()
            await client.version()
            before = list(server.handshakes)
            await client.close()
            await client.version()
            return before, list(server.handshakes)

    before, after = run(scenario())
    assert before == ["ok"] and after == ["ok", "ok"]


def test_failover_to_next_endpoint_then_sticky(pki):
    fake = FakeTalos()
    fake.on("Version", replying(version_reply()))
    accepted = []

    async def refuse_tls(_reader, writer):
        accepted.append(1)
        writer.close()

    async def scenario():
        dead = await asyncio.start_server(refuse_tls, "127.0.0.2", 0)
        dead_port = dead.sockets[0].getsockname()[1]
        try:
            async with serve(fake, pki) as server:
                endpoints = ["127.0.0.2:%d" % dead_port, "127.0.0.1:%d" % server.port]
                async with client_for(None, pki.credentials, endpoints=endpoints) as client:
                    first = await client.version()
                    client.close()
                    second = await client.version()
            return first, second
        finally:
            dead.close()
            await dead.wait_closed()

    first, second = run(scenario())
    assert first["node"] == second["node"] == "127.0.0.1"
    assert len(accepted) == 1


# --- TLS failures ----------------------------------------------------------------------------

def test_server_not_signed_by_our_ca(pki):
    stranger = make_ca()

    async def scenario():
        async with serve(FakeTalos(), pki, server=make_server_cert(stranger)) as server, \
                client_for(server, pki.credentials) as client:
            await client.version()

    with pytest.raises(ServerNotTrustedError) as raised:
        run(scenario())
    message = str(raised.value)
    assert "is this talosconfig for this cluster" in message and "trust both the old and the new CA" in message
    assert "127.0.0.1:" in message and raised.value.node == "127.0.0.1"


def test_server_certificate_without_the_endpoint_address(pki):
    async def scenario():
        async with serve(FakeTalos(), pki, server=make_server_cert(pki.ca, addresses=["10.9.9.9"])) as server, \
                client_for(server, pki.credentials) as client:
            await client.version()

    with pytest.raises(ServerNotTrustedError, match="not valid for 127.0.0.1"):
        run(scenario())


def test_server_certificate_expired(pki):
    expired = make_server_cert(pki.ca, not_before=NOW - 3 * HOUR, not_after=NOW - 2 * HOUR)

    async def scenario():
        async with serve(FakeTalos(), pki, server=expired) as server, client_for(server, pki.credentials) as client:
            await client.version()

    with pytest.raises(CertificateExpiredError, match="expired or not yet valid"):
        run(scenario())


@pytest.mark.parametrize("max_tls", [None, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"])
def test_client_certificate_refused_by_the_node(pki, max_tls):
    # With TLS 1.3 the refusal arrives only after the handshake, on the first read.
    other = make_ca()
    foreign = make_client_cert(other)
    credentials = Credentials(ca=pki.ca.crt, crt=foreign.crt, key=foreign.key)
    fake = FakeTalos()
    fake.on("Version", replying(version_reply()))

    async def scenario():
        async with serve(fake, pki, max_tls=max_tls) as server, client_for(server, credentials) as client:
            await client.version()

    with pytest.raises(ClientNotTrustedError, match="TLSV1_ALERT_UNKNOWN_CA") as raised:
        run(scenario())
    assert "machine.acceptedCAs" in str(raised.value)
    assert fake.calls("Version") == []


def test_expired_client_certificate_is_refused_before_connecting(pki):
    expired = make_client_cert(pki.ca, not_before=NOW - 3 * HOUR, not_after=NOW - 2 * HOUR)
    credentials = Credentials(ca=pki.ca.crt, crt=expired.crt, key=expired.key)

    handshakes = []

    async def scenario():
        async with serve(FakeTalos(), pki) as server:
            try:
                async with client_for(server, credentials) as client:
                    await client.version()
            finally:
                handshakes.extend(server.handshakes)

    with pytest.raises(CertificateExpiredError, match="client certificate expired at"):
        run(scenario())
    assert not handshakes


def test_client_certificate_expired_in_the_nodes_view_is_named(pki):
    client = TalosClient(["127.0.0.1"], pki.credentials)
    endpoint = client.endpoints[0]
    call = client._call("/machine.MachineService/Version", None, None, "Version")  # pylint: disable=protected-access
    refusal = ssl.SSLError(1, "alert")
    refusal.reason = "SSLV3_ALERT_CERTIFICATE_EXPIRED"
    assert isinstance(client._tls_error(refusal, endpoint, call), CertificateExpiredError)  # pylint: disable=protected-access
    for alert in ("SSLV3_ALERT_BAD_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED", "TLSV1_ALERT_UNKNOWN_CA"):
        refusal.reason = alert
        assert isinstance(client._tls_error(refusal, endpoint, call), ClientNotTrustedError)  # pylint: disable=protected-access


def test_unauthenticated_status_means_client_not_trusted(pki):
    fake = FakeTalos()
    fake.on("Version", failing(None, Status.UNAUTHENTICATED, "no client certificate"))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            await client.version(node="10.0.0.7")

    with pytest.raises(ClientNotTrustedError, match="no client certificate") as raised:
        run(scenario())
    assert raised.value.node == "10.0.0.7"


def test_bad_credentials_are_named():
    ca = make_ca()
    first, second = make_client_cert(ca), make_client_cert(ca)
    with pytest.raises(KeyMismatchError):
        TalosClient(["127.0.0.1"], Credentials(ca=ca.crt, crt=first.crt, key=second.key))._context()  # pylint: disable=protected-access
    with pytest.raises(NotPEMError, match="base64"):
        TalosClient(["127.0.0.1"], Credentials(ca=b"TFMwdExTMUNSVWRKVGlCRFJWSlU=", crt=first.crt, key=first.key))._context()  # pylint: disable=protected-access
    with pytest.raises(NotPEMError):
        TalosClient(["127.0.0.1"], Credentials(ca=ca.crt, crt=b"garbage", key=first.key))._context()  # pylint: disable=protected-access


def test_credentials_repr_hides_the_key(pki):
    assert b"PRIVATE" not in repr(pki.credentials).encode() and "redacted" in repr(pki.credentials)


# --- gRPC status mapping and retries ------------------------------------------------------------

def test_permission_denied_names_our_role(pki):
    reader = make_client_cert(pki.ca, roles=("os:reader",))
    credentials = Credentials(ca=pki.ca.crt, crt=reader.crt, key=reader.key)
    fake = FakeTalos()
    fake.on("Get", failing(None, Status.PERMISSION_DENIED, "not authorized"))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, credentials) as client:
            await client.os_root(node="10.0.0.5")

    with pytest.raises(PermissionDeniedError) as raised:
        run(scenario())
    message = str(raised.value)
    assert "os:reader" in message and "os:admin" in message and "10.0.0.5" in message
    assert len(fake.calls("Get")) == 1


def test_unavailable_is_retried_then_succeeds(pki):
    fake = FakeTalos()
    fake.on("Version", failing(3, Status.UNAVAILABLE, "connection refused", then=version_reply()))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            return await client.version(node="10.0.0.6")

    assert run(scenario())["tag"] == "v1.9.0"
    assert len(fake.calls("Version")) == 4


def test_unavailable_until_the_deadline_is_node_unreachable(pki):
    fake = FakeTalos()
    fake.on("Version", failing(None, Status.UNAVAILABLE, "dial tcp 10.0.0.6:50000: connect: no route to host"))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials, retry_deadline=0.4) as client:
            await client.version(node="10.0.0.6")

    with pytest.raises(NodeUnreachableError, match="no route to host") as raised:
        run(scenario())
    assert raised.value.node == "10.0.0.6"
    assert len(fake.calls("Version")) > 2


def test_connection_refused_is_retried_until_the_endpoint_listens(pki):
    fake = FakeTalos()
    fake.on("Version", replying(version_reply()))

    async def scenario():
        probe = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()

        async def start_late():
            await asyncio.sleep(0.3)
            return serve(fake, pki, port=port)

        starter = asyncio.ensure_future(start_late())
        client = client_for(None, pki.credentials, port=port, retry_deadline=5.0)
        server_context = await starter
        async with server_context:
            async with client:
                return await client.version()

    # The server starts 0.3 s after the first refused attempt, well inside the retry deadline.
    assert run(scenario())["tag"] == "v1.9.0"


def test_connection_refused_until_the_deadline(pki):
    async def scenario():
        probe = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        async with client_for(None, pki.credentials, port=port, retry_deadline=0.3) as client:
            await client.version()

    with pytest.raises(NodeUnreachableError, match="Connection refused") as raised:
        run(scenario())
    assert raised.value.node == "127.0.0.1"


def test_apply_in_progress_is_retried_then_succeeds(pki):
    reply = message_class("machine.ApplyConfigurationResponse")(messages=[{"mode": 2, "mode_details": "Applied"}])
    fake = FakeTalos()
    fake.on("ApplyConfiguration", failing(2, Status.FAILED_PRECONDITION, "apply in progress", then=reply))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            return await client.apply_configuration(b"version: v1alpha1\n", node="10.0.0.5")

    assert run(scenario()) == {"mode": "no_reboot", "mode_details": "Applied", "warnings": []}
    assert len(fake.calls("ApplyConfiguration")) == 3


def test_apply_in_progress_until_the_deadline(pki):
    fake = FakeTalos()
    fake.on("ApplyConfiguration", failing(None, Status.FAILED_PRECONDITION, "apply in progress"))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials, retry_deadline=0.3) as client:
            await client.apply_configuration(b"x", node="10.0.0.5")

    with pytest.raises(ApplyInProgressError, match="another configuration apply"):
        run(scenario())


def test_failed_precondition_is_not_retried_outside_apply(pki):
    fake = FakeTalos()
    fake.on("Version", failing(None, Status.FAILED_PRECONDITION, "odd"))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            await client.version()

    with pytest.raises(TalosAPIError, match="FailedPrecondition: odd") as raised:
        run(scenario())
    assert type(raised.value) is TalosAPIError  # pylint: disable=unidiomatic-typecheck
    assert len(fake.calls("Version")) == 1


def test_our_own_deadline(pki):
    async def slow(_request, _stream):
        await asyncio.sleep(2)
        return version_reply()

    fake = FakeTalos()
    fake.on("Version", slow)

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials, call_timeout=0.3) as client:
            await client.version(node="10.0.0.5")

    with pytest.raises(DeadlineExceededError, match="within 0.3s"):
        run(scenario())


def test_deadline_exceeded_status(pki):
    fake = FakeTalos()
    fake.on("Version", failing(None, Status.DEADLINE_EXCEEDED, "context deadline exceeded"))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            await client.version()

    with pytest.raises(DeadlineExceededError, match="context deadline exceeded"):
        run(scenario())


def test_not_found_on_a_worker(pki):
    fake = FakeTalos()
    fake.on("Get", failing(None, Status.NOT_FOUND, "resource KubernetesRootSecrets k8s doesn't exist"))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            await client.kubernetes_root(node="10.0.0.9")

    with pytest.raises(NotFoundError, match="only on control-plane nodes") as raised:
        run(scenario())
    assert raised.value.node == "10.0.0.9"


def test_other_status_is_a_plain_api_error(pki):
    fake = FakeTalos()
    fake.on("Version", failing(None, Status.INTERNAL, "boom"))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            await client.version(node="10.0.0.5")

    with pytest.raises(TalosAPIError, match=r"Internal: boom") as raised:
        run(scenario())
    assert type(raised.value) is TalosAPIError and "10.0.0.5" in str(raised.value)  # pylint: disable=unidiomatic-typecheck


def test_failed_node_inside_an_ok_reply(pki):
    # Fan-out style: a metadata-only message with error and status inside an OK call.
    failed = message_class("machine.Version")()
    failed.metadata.hostname = "10.0.0.8"
    failed.metadata.error = "permission denied"
    failed.metadata.status.code = 7
    fake = FakeTalos()
    fake.on("Version", replying(message_class("machine.VersionResponse")(messages=[failed])))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            await client.version(node="10.0.0.8")

    with pytest.raises(PermissionDeniedError) as raised:
        run(scenario())
    assert raised.value.node == "10.0.0.8"


# --- ApplyConfiguration mode ----------------------------------------------------------------

def test_apply_never_sends_reboot_unless_asked(pki):
    request_class = message_class("machine.ApplyConfigurationRequest")
    dry_reply = message_class("machine.ApplyConfigurationResponse")(messages=[{"mode": 2, "mode_details": "Dry run summary:\n..."}])
    fake = FakeTalos()
    fake.on("ApplyConfiguration", replying(dry_reply))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            default = await client.apply_configuration(b"cfg", node="10.0.0.5", dry_run=True)
            for mode in ("auto", "staged", "try", "no_reboot", "reboot"):
                await client.apply_configuration(b"cfg", node="10.0.0.5", mode=mode)
            with pytest.raises(ValueError):
                await client.apply_configuration(b"cfg", mode="REBOOT")
            return default

    default = run(scenario())
    assert default == {"mode": "no_reboot", "mode_details": "Dry run summary:\n...", "warnings": []}
    requests = [entry.request for entry in fake.calls("ApplyConfiguration")]
    assert [request.mode for request in requests] == [request_class.NO_REBOOT, request_class.AUTO, request_class.STAGED,
                                                      request_class.TRY, request_class.NO_REBOOT, request_class.REBOOT]
    assert requests[0].dry_run and requests[0].data == b"cfg"
    # field 4 = NO_REBOOT is on the wire
    assert b"\x20\x02" in requests[0].SerializeToString()


def test_apply_reports_reboot_mode_absent_on_the_wire_and_warnings(pki):
    reply = message_class("machine.ApplyConfigurationResponse")(messages=[{"warnings": ["w1", "w2"], "mode_details": "x"}])
    fake = FakeTalos()
    fake.on("ApplyConfiguration", replying(reply))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            return await client.apply_configuration(b"cfg", mode="auto")

    assert run(scenario()) == {"mode": "reboot", "mode_details": "x", "warnings": ["w1", "w2"]}


def test_apply_reboot_unimplemented_on_new_talos(pki):
    fake = FakeTalos()
    fake.on("ApplyConfiguration", failing(None, Status.UNIMPLEMENTED, "the REBOOT mode is not supported"))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            await client.apply_configuration(b"cfg", node="10.0.0.5", mode="reboot")

    with pytest.raises(UnsupportedVersionError, match="no_reboot"):
        run(scenario())


# --- resources ----------------------------------------------------------------------------------

def test_machine_config_reads_the_active_config(pki):
    config = b"version: v1alpha1\nmachine:\n  type: controlplane\n---\napiVersion: v1alpha1\nkind: Extra\n"
    spec = message_class("resource.config.MachineConfigSpec")(yaml_marshalled=config)
    fake = FakeTalos()
    fake.on("Get", replying(message_class("cosi.resource.GetResponse")(resource=resource("v1alpha1", spec))))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            return await client.machine_config(node="10.0.0.5")

    assert run(scenario()) == config
    request = fake.calls("Get")[0].request
    assert (request.namespace, request.type, request.id) == ("config", "MachineConfigs.config.talos.dev", "v1alpha1")
    assert request.HasField("options")


def test_os_root_on_control_plane_and_worker(pki):
    control_plane = message_class("talos.resource.definitions.secrets.OSRootSpec")(
        issuing_ca={"crt": b"NEW", "key": b"NEWKEY"}, accepted_c_as=[{"crt": b"OLD"}, {"crt": b"NEW"}], token="t")
    worker = message_class("talos.resource.definitions.secrets.OSRootSpec")(accepted_c_as=[{"crt": b"NEW"}])
    specs = {"10.0.0.1": control_plane, "10.0.0.2": worker}

    async def by_node(_request, stream):
        return message_class("cosi.resource.GetResponse")(resource=resource("os", specs[stream.metadata["node"]]))

    fake = FakeTalos()
    fake.on("Get", by_node)

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            return await client.os_root(node="10.0.0.1"), await client.os_root(node="10.0.0.2")

    assert run(scenario()) == ({"issuing_ca": {"crt": b"NEW", "key": b"NEWKEY"}, "accepted_cas": [b"OLD", b"NEW"]},
                               {"issuing_ca": None, "accepted_cas": [b"NEW"]})
    request = fake.calls("Get")[0].request
    assert (request.namespace, request.type, request.id) == ("secrets", "OSRootSecrets.secrets.talos.dev", "os")


def test_kubernetes_root(pki):
    spec = message_class("talos.resource.definitions.secrets.KubernetesRootSpec")(
        name="c", issuing_ca={"crt": b"K8S", "key": b"K8SKEY"}, accepted_c_as=[{"crt": b"K8S"}])
    fake = FakeTalos()
    fake.on("Get", replying(message_class("cosi.resource.GetResponse")(resource=resource("k8s", spec))))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            return await client.kubernetes_root()

    assert run(scenario()) == {"issuing_ca": {"crt": b"K8S", "key": b"K8SKEY"}, "accepted_cas": [b"K8S"]}
    request = fake.calls("Get")[0].request
    assert (request.namespace, request.type, request.id) == ("secrets", "KubernetesRootSecrets.secrets.talos.dev", "k8s")


def test_members(pki):
    member_class = message_class("talos.resource.definitions.cluster.MemberSpec")
    members = [
        member_class(node_id="a", hostname="cp-1", machine_type=1, operating_system="Talos (v1.9.0)",
                     addresses=[{"ip": bytes([10, 0, 0, 1])}, {"ip": bytes.fromhex("fd000000000000000000000000000001")}]),
        member_class(node_id="b", hostname="cp-2", machine_type=2, addresses=[{"ip": bytes([10, 0, 0, 2])}]),
        member_class(node_id="c", hostname="w-1", machine_type=3, addresses=[{"ip": bytes([10, 0, 0, 3])}]),
    ]

    async def listing(_request, _stream):
        return [message_class("cosi.resource.ListResponse")(resource=resource(spec.hostname, spec)) for spec in members]

    fake = FakeTalos()
    fake.on("List", listing)

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            return await client.members()

    result = run(scenario())
    assert result[0] == {"id": "cp-1", "hostname": "cp-1", "addresses": ["10.0.0.1", "fd00::1"], "machine_type": "init",
                         "operating_system": "Talos (v1.9.0)"}
    assert [member["machine_type"] for member in result] == ["init", "controlplane", "worker"]
    request = fake.calls("List")[0].request
    assert (request.namespace, request.type) == ("cluster", "Members.cluster.talos.dev")


def test_watch_service_skips_the_empty_first_frame_and_reads_a_specless_event(pki):
    spec_class = message_class("talos.resource.definitions.v1alpha1.ServiceSpec")
    response = message_class("cosi.resource.WatchResponse")

    def frame(event_type, spec, version):
        event = message_class("cosi.resource.Event")(event_type=event_type, resource=resource("kubelet", spec, version=version))
        return response(event=[event])

    frames = [
        response(),  # the empty first frame every Watch stream starts with
        frame(0, spec_class(running=True, healthy=True), "5"),  # CREATED: no event_type on the wire
        frame(1, None, "6"),  # all-false spec encodes to zero bytes
        frame(1, spec_class(running=True), "7"),
        frame(1, spec_class(running=True, healthy=True), "8"),
    ]

    async def watching(_request, _stream):
        return frames

    fake = FakeTalos()
    fake.on("Watch", watching)

    async def scenario():
        events = []
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            async for event in client.watch_service("kubelet", node="10.0.0.5"):
                events.append(event)
                if event["running"] and event["healthy"] and event["version"] == "8":
                    break
            # the client is still usable after leaving the watch early
            fake.on("Version", replying(version_reply()))
            await client.version()
        return events

    events = run(scenario())
    assert events == [
        {"event": "created", "id": "kubelet", "running": True, "healthy": True, "unknown": False, "version": "5"},
        {"event": "updated", "id": "kubelet", "running": False, "healthy": False, "unknown": False, "version": "6"},
        {"event": "updated", "id": "kubelet", "running": True, "healthy": False, "unknown": False, "version": "7"},
        {"event": "updated", "id": "kubelet", "running": True, "healthy": True, "unknown": False, "version": "8"},
    ]
    received = fake.calls("Watch")[0]
    assert received.metadata["node"] == "10.0.0.5"
    request = received.request
    assert request.HasField("id") and request.id == "kubelet"
    assert (request.namespace, request.type) == ("runtime", "Services.v1alpha1.talos.dev")


def test_watch_error_event(pki):
    fake = FakeTalos()
    fake.on("Watch", replying([message_class("cosi.resource.WatchResponse")(event=[{"event_type": 4, "error": "lost it"}])]))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            return [event async for event in client.watch_service("kubelet")]

    with pytest.raises(TalosAPIError, match="lost it"):
        run(scenario())


def kubeconfig_archive(content, name="kubeconfig"):
    """A gzip'd tar with one entry and no end-of-archive blocks, as Talos streams it."""
    buffer = io.BytesIO()
    info = tarfile.TarInfo(name)
    info.size = len(content)
    info.mode = 0o600
    header = info.tobuf(format=tarfile.USTAR_FORMAT)
    padding = b"\0" * (-len(content) % 512)
    buffer.write(header + content + padding)
    return gzip.compress(buffer.getvalue())


@pytest.mark.parametrize("chunk", [7, 512, 100000])
def test_kubeconfig_from_a_tar_stream_without_end_blocks(pki, chunk):
    content = b"apiVersion: v1\nkind: Config\nclusters: []\n" * 40
    archive = kubeconfig_archive(content)
    data_class = message_class("common.Data")
    frames = [data_class(bytes=archive[offset:offset + chunk]) for offset in range(0, len(archive), chunk)]
    fake = FakeTalos()
    fake.on("Kubeconfig", replying(frames))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            return await client.kubeconfig(node="10.0.0.1")

    assert run(scenario()) == content


def test_kubeconfig_garbage_is_named(pki):
    fake = FakeTalos()
    fake.on("Kubeconfig", replying([message_class("common.Data")(bytes=b"not gzip")]))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            return await client.kubeconfig()

    with pytest.raises(TalosAPIError, match="gzip'd tar"):
        run(scenario())


# --- small pieces -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("10.0.0.1", ("10.0.0.1", 50000)),
    ("10.0.0.1:50001", ("10.0.0.1", 50001)),
    ("cp.example", ("cp.example", 50000)),
    ("fd00::1", ("fd00::1", 50000)),
    ("[fd00::1]:50001", ("fd00::1", 50001)),
    ("[fd00::1]", ("fd00::1", 50000)),
])
def test_split_endpoint(text, expected):
    assert _client._split_endpoint(text, 50000) == expected  # pylint: disable=protected-access


def test_run_uses_a_fresh_loop_each_time():
    async def current_loop():
        return asyncio.get_running_loop()

    assert run(current_loop()) is not run(current_loop())


def test_service_reads_one_services_current_state(pki):
    spec_class = message_class("talos.resource.definitions.v1alpha1.ServiceSpec")
    fake = FakeTalos()
    fake.on("Get", replying(message_class("cosi.resource.GetResponse")(
        resource=resource("kubelet", spec_class(running=True, healthy=False), version="12"))))

    async def scenario():
        async with serve(fake, pki) as server, client_for(server, pki.credentials) as client:
            return await client.service("kubelet", node="10.0.0.5")

    assert run(scenario()) == {"event": "current", "id": "kubelet", "running": True, "healthy": False, "unknown": False,
                               "version": "12"}
    received = fake.calls("Get")[0]
    assert received.metadata["node"] == "10.0.0.5"
    assert (received.request.namespace, received.request.type, received.request.id) == (
        "runtime", "Services.v1alpha1.talos.dev", "kubelet")
