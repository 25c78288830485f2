"""TalosClient against the simulated Talos cluster (tests/simulator/talos_sim).

Written against the simulator's planned API (SimCluster(controlplanes, workers, workdir),
start(), stop(), talosconfig_path, endpoint, nodes[].address/.machine_type/.name); every
test is skipped while talos_sim has no SimCluster. Each operation runs through the
endpoint with the `node` header and directly against the node.
"""

import asyncio
import base64
import datetime

import pytest

yaml = pytest.importorskip("yaml")
talos_sim = pytest.importorskip("talos_sim")
pytest.importorskip("grpclib")

# pylint: disable=wrong-import-position
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from ansible_collections.talosops.pki.plugins.module_utils._client import Credentials, TalosClient, run  # noqa: E402
from ansible_collections.talosops.pki.plugins.module_utils._errors import (  # noqa: E402
    ClientNotTrustedError,
    NotFoundError,
    PermissionDeniedError,
    ServerNotTrustedError,
)

SimCluster = getattr(talos_sim, "SimCluster", None)
pytestmark = pytest.mark.skipif(SimCluster is None, reason="tests/simulator/talos_sim has no SimCluster yet")

CONTROL_PLANE_TYPES = ("init", "controlplane")
SETTINGS = {"connect_timeout": 5.0, "call_timeout": 20.0, "retry_deadline": 5.0, "retry_interval": 0.1}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    sim = SimCluster(controlplanes=3, workers=2, workdir=tmp_path_factory.mktemp("talos-sim"))
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="module")
def talosconfig(cluster):
    with open(cluster.talosconfig_path, "rb") as handle:
        document = yaml.safe_load(handle)
    context = document["contexts"][document["context"]]
    # talosconfig values are base64 of the PEM text
    credentials = Credentials(*(base64.b64decode(context[name]) for name in ("ca", "crt", "key")))
    return credentials, list(context.get("endpoints") or [cluster.endpoint])


def control_planes(cluster):
    return [node for node in cluster.nodes if node.machine_type in CONTROL_PLANE_TYPES]


def workers(cluster):
    return [node for node in cluster.nodes if node.machine_type == "worker"]


def client(cluster, credentials, endpoints=None, **settings):
    options = dict(SETTINGS, port=getattr(cluster, "port", 50000))
    options.update(settings)
    return TalosClient(endpoints or [cluster.endpoint], credentials, **options)


def routes(cluster):
    """(endpoints, node) pairs: through the endpoint with the node header, and straight to the node."""
    for node in cluster.nodes:
        yield node, [cluster.endpoint], node.address
        yield node, [node.address], None


def test_version_everywhere(cluster, talosconfig):
    credentials, endpoints = talosconfig

    async def scenario():
        answers = []
        async with client(cluster, credentials, endpoints) as through_endpoints:
            answers.append((None, await through_endpoints.version()))
        for node, via, header in routes(cluster):
            async with client(cluster, credentials, via) as talos:
                answers.append((node, await talos.version(node=header)))
        return answers

    for node, version in run(scenario()):
        assert version["tag"].startswith("v1.")
        if node is not None:
            assert version["node"] == node.address


def test_machine_config_everywhere(cluster, talosconfig):
    credentials, _endpoints = talosconfig

    async def scenario():
        configs = []
        for node, via, header in routes(cluster):
            async with client(cluster, credentials, via) as talos:
                configs.append((node, await talos.machine_config(node=header)))
        return configs

    for node, config in run(scenario()):
        first_document = next(yaml.safe_load_all(config))
        expected = "worker" if node.machine_type == "worker" else CONTROL_PLANE_TYPES
        assert first_document["machine"]["type"] in expected


def test_os_root_everywhere(cluster, talosconfig):
    credentials, _endpoints = talosconfig

    async def scenario():
        roots = []
        for node, via, header in routes(cluster):
            async with client(cluster, credentials, via) as talos:
                roots.append((node, await talos.os_root(node=header)))
        return roots

    for node, root in run(scenario()):
        if node.machine_type == "worker":
            assert root["issuing_ca"] is None
            assert root["accepted_cas"]
        else:
            assert root["issuing_ca"]["key"]
            # the talosconfig trusts the issuing OS CA
            assert x509.load_pem_x509_certificate(root["issuing_ca"]["crt"]) in x509.load_pem_x509_certificates(credentials.ca)


def test_kubernetes_root_on_control_planes_only(cluster, talosconfig):
    credentials, _endpoints = talosconfig

    async def scenario():
        outcomes = []
        for node, via, header in routes(cluster):
            async with client(cluster, credentials, via) as talos:
                try:
                    outcomes.append((node, await talos.kubernetes_root(node=header)))
                except NotFoundError as error:
                    outcomes.append((node, error))
        return outcomes

    for node, outcome in run(scenario()):
        if node.machine_type == "worker":
            assert isinstance(outcome, NotFoundError)
        else:
            assert outcome["issuing_ca"]["crt"] and outcome["issuing_ca"]["key"]


def test_members_match_the_cluster(cluster, talosconfig):
    credentials, _endpoints = talosconfig
    node = cluster.nodes[-1]

    async def scenario():
        async with client(cluster, credentials) as talos:
            return await talos.members(), await talos.members(node=node.address)

    for members in run(scenario()):
        by_address = {address: member for member in members for address in member["addresses"]}
        for sim_node in cluster.nodes:
            member = by_address[sim_node.address]
            expected = "worker" if sim_node.machine_type == "worker" else CONTROL_PLANE_TYPES
            assert member["machine_type"] in expected


def test_apply_unchanged_config_without_reboot(cluster, talosconfig):
    credentials, _endpoints = talosconfig
    worker = workers(cluster)[0] if workers(cluster) else cluster.nodes[-1]

    async def scenario():
        results = []
        for via, header in (([cluster.endpoint], worker.address), ([worker.address], None)):
            async with client(cluster, credentials, via) as talos:
                config = await talos.machine_config(node=header)
                results.append(await talos.apply_configuration(config, node=header, dry_run=True))
                results.append(await talos.apply_configuration(config, node=header))
                # the bytes survive an apply unchanged
                assert await talos.machine_config(node=header) == config
        return results

    dry, applied, direct_dry, direct_applied = run(scenario())
    for result in (dry, direct_dry):
        assert result["mode_details"].startswith("Dry run summary")
    for result in (applied, direct_applied):
        assert result["mode"] == "no_reboot"


def test_watch_kubelet(cluster, talosconfig):
    credentials, _endpoints = talosconfig
    node = cluster.nodes[-1]

    async def first_event(talos, header):
        async for event in talos.watch_service("kubelet", node=header):
            return event
        return None

    async def scenario():
        events = []
        for via, header in (([cluster.endpoint], node.address), ([node.address], None)):
            async with client(cluster, credentials, via) as talos:
                events.append(await asyncio.wait_for(first_event(talos, header), 20))
        return events

    for event in run(scenario()):
        assert event["id"] == "kubelet"
        assert set(event) == {"event", "id", "running", "healthy", "unknown", "version"}


def test_kubeconfig_from_a_control_plane(cluster, talosconfig):
    credentials, _endpoints = talosconfig
    control_plane = control_planes(cluster)[-1]

    async def scenario():
        results = []
        for via, header in (([cluster.endpoint], control_plane.address), ([control_plane.address], None)):
            async with client(cluster, credentials, via) as talos:
                results.append(await talos.kubeconfig(node=header))
        return results

    for kubeconfig in run(scenario()):
        document = yaml.safe_load(kubeconfig)
        assert document["kind"] == "Config" and document["clusters"]


def _client_certificate(issuer_crt, issuer_key, roles):
    """A talosconfig-style client certificate (O=roles, EKU exactly ClientAuth) signed by an Ed25519 CA."""
    issuer = x509.load_pem_x509_certificate(issuer_crt)
    issuer_key = serialization.load_pem_private_key(
        issuer_key.replace(b"ED25519 PRIVATE KEY", b"PRIVATE KEY"), password=None)
    key = ed25519.Ed25519PrivateKey.generate()
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, role) for role in roles]))
                   .issuer_name(issuer.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                   .add_extension(_authority_key_identifier(issuer, issuer_key), critical=False)
                   .sign(issuer_key, None))
    return (certificate.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _authority_key_identifier(issuer, issuer_key):
    """As Go does: the issuer's SubjectKeyId (random in Talos CAs), not a hash of its public key."""
    try:
        subject_key_id = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(subject_key_id)


def _self_signed_ca():
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "talos")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .sign(key, None))
    return (certificate.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def test_refusals_are_named(cluster, talosconfig):
    credentials, _endpoints = talosconfig
    stranger_crt, stranger_key = _self_signed_ca()
    foreign_crt, foreign_key = _client_certificate(stranger_crt, stranger_key, ["os:admin"])

    async def os_ca():
        async with client(cluster, credentials) as talos:
            return (await talos.os_root())["issuing_ca"]

    issuing = run(os_ca())
    reader_crt, reader_key = _client_certificate(issuing["crt"], issuing["key"], ["os:reader"])

    async def as_reader():
        async with client(cluster, Credentials(credentials.ca, reader_crt, reader_key)) as talos:
            version = await talos.version()
            await talos.machine_config(node=cluster.nodes[-1].address)
        return version

    with pytest.raises(PermissionDeniedError, match="os:reader"):
        run(as_reader())

    async def as_stranger():
        async with client(cluster, Credentials(credentials.ca, foreign_crt, foreign_key)) as talos:
            await talos.version()

    with pytest.raises(ClientNotTrustedError):
        run(as_stranger())

    async def trusting_the_wrong_ca():
        async with client(cluster, Credentials(stranger_crt, credentials.crt, credentials.key)) as talos:
            await talos.version()

    with pytest.raises(ServerNotTrustedError):
        run(trusting_the_wrong_ca())
