"""The simulator's transport and trust rules (TALOS-FACTS §1, §4), each shown both ways."""

import asyncio
import datetime
import socket
import ssl
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from talos_sim import pki, tlsctx
from talos_sim.testing import SimClient, admin_credentials, apply_request, call, run, swap_os_ca

VERSION = "/machine.MachineService/Version"
APPLY = "/machine.MachineService/ApplyConfiguration"


def handshake(address, context, read=True):
    """A raw TLS connection to apid; returns the server certificate, raises on refusal."""
    with socket.create_connection((address, 50000), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=address) as tls:
            if read:
                # TLS 1.3 clients learn about a refused certificate on their first read.
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                tls.recv(1)
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def client_with(cluster, certificate, tls_max=None):
    context = tlsctx.client_context(certificate, [cluster.secrets.os_ca.cert_pem])
    if tls_max:
        context.maximum_version = tls_max
    return context


def test_server_and_client_certificates_are_ed25519(module_sim_cluster):
    cluster = module_sim_cluster
    assert isinstance(cluster.admin.key, ed25519.Ed25519PrivateKey)
    for node in cluster.nodes:
        server = handshake(node.address, client_with(cluster, cluster.admin))
        assert isinstance(server.public_key(), ed25519.Ed25519PublicKey)
        assert pki.is_issued_by(server, cluster.secrets.os_ca.cert)
        assert call(admin_credentials(cluster), node.address, VERSION).messages[0].version.tag == "v1.13.4"


def test_server_certificate_names_the_node(module_sim_cluster):
    for node in module_sim_cluster.nodes:
        server = handshake(node.address, client_with(module_sim_cluster, module_sim_cluster.admin))
        names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} >= {node.address, "127.0.0.1"}
        assert node.name in names.get_values_for_type(x509.DNSName)
        assert server.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == node.name
        assert list(server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
            ExtendedKeyUsageOID.SERVER_AUTH]
        not_before, not_after = pki.validity(server)
        assert not_after - not_before == datetime.timedelta(hours=24)


def test_only_tls12_and_later_with_alpn_h2(module_sim_cluster):
    cluster = module_sim_cluster
    context = client_with(cluster, cluster.admin, tls_max=ssl.TLSVersion.TLSv1_2)
    with socket.create_connection((cluster.endpoint, 50000), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=cluster.endpoint) as tls:
            assert tls.version() == "TLSv1.2"
            assert tls.selected_alpn_protocol() == "h2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # asking for TLS 1.0/1.1 on purpose
        old = client_with(cluster, cluster.admin, tls_max=ssl.TLSVersion.TLSv1_1)
        old.minimum_version = ssl.TLSVersion.TLSv1
    old.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        handshake(cluster.endpoint, old, read=False)


def test_client_eku_must_be_exactly_client_auth(module_sim_cluster):
    cluster = module_sim_cluster
    os_ca = cluster.secrets.os_ca
    exact = pki.issue(os_ca, organizations=["os:admin"], client=True, validity=pki.CLIENT_VALIDITY)
    both = pki.issue(os_ca, organizations=["os:admin"], client=True, server=True, validity=pki.CLIENT_VALIDITY)
    assert call(([os_ca.cert_pem], exact), cluster.endpoint, VERSION).messages[0].version.tag
    with pytest.raises(GRPCError) as refused:
        call(([os_ca.cert_pem], both), cluster.endpoint, VERSION)
    assert refused.value.status == Status.UNAUTHENTICATED
    assert "tls: bad certificate" in refused.value.message
    assert "incompatible key usage" in refused.value.message


def test_unknown_ca_client_is_refused_by_the_tls_layer(module_sim_cluster):
    cluster = module_sim_cluster
    stranger_ca = pki.new_os_ca()
    stranger = pki.talos_client_certificate(stranger_ca)
    known = handshake(cluster.endpoint, client_with(cluster, cluster.admin, tls_max=ssl.TLSVersion.TLSv1_2))
    assert known.issuer == cluster.secrets.os_ca.cert.subject
    # TLS 1.2: the server's alert ends the handshake itself.
    with pytest.raises(ssl.SSLError, match="unknown ca"):
        handshake(cluster.endpoint, client_with(cluster, stranger, tls_max=ssl.TLSVersion.TLSv1_2), read=False)
    # TLS 1.3: the handshake completes on the client side, the alert arrives with the first read.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        handshake(cluster.endpoint, client_with(cluster, stranger))
    with pytest.raises(Exception) as grpc_refused:
        call(([cluster.secrets.os_ca.cert_pem], stranger), cluster.endpoint, VERSION)
    assert not isinstance(grpc_refused.value, GRPCError)  # never reaches gRPC


def test_established_connection_survives_ca_change_new_connections_see_new_trust(sim_cluster):
    cluster = sim_cluster
    controlplane = cluster.controlplanes[0]
    old_ca = cluster.secrets.os_ca
    new_ca = pki.new_os_ca()
    new_admin = pki.talos_client_certificate(new_ca)
    both_cas = [old_ca.cert_pem, new_ca.cert_pem]
    # The new CA is issuing and the old one is dropped: only new handshakes notice.
    swapped = swap_os_ca(controlplane.config_bytes(), new_ca, keep_accepted=[])

    async def scenario():
        async with SimClient(*admin_credentials(cluster)) as old_client, \
                SimClient(both_cas, new_admin) as new_client:
            with pytest.raises(Exception):
                await new_client.call(controlplane.address, VERSION, fresh=True)  # not trusted yet
            await old_client.call(controlplane.address, VERSION)  # opens the long-lived connection
            await old_client.call(controlplane.address, APPLY, apply_request(swapped))
            for _poll in range(50):  # the controllers react just after the reply
                if pki.load_certificate(controlplane.server_certificate_pem).issuer == new_ca.cert.subject and \
                        pki.is_issued_by(pki.load_certificate(controlplane.server_certificate_pem), new_ca.cert):
                    break
                await asyncio.sleep(0.02)
            still = await old_client.call(controlplane.address, VERSION)  # same connection: still served
            assert still.messages[0].version.tag
            with pytest.raises(Exception):
                await old_client.call(controlplane.address, VERSION, fresh=True)  # new handshake: refused
            fresh = await new_client.call(controlplane.address, VERSION, fresh=True)
            assert fresh.messages[0].version.tag

    run(scenario())
