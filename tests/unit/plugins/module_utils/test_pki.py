"""Certificates and keys made and read the way Talos does (plugins/module_utils/_pki.py)."""

import base64
import datetime
import importlib.util
import json
import re
import subprocess
import sys

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ansible_collections.talosops.pki.plugins.module_utils import _pki as pki
from ansible_collections.talosops.pki.plugins.module_utils._errors import (
    CertificateValidityError,
    KeyMismatchError,
    NotACAError,
    NotPEMError,
    PKIError,
    UnsupportedKeyError,
)

from talos_reference import reference_path  # pylint: disable=import-error


UTC = datetime.timezone.utc
HOUR = datetime.timedelta(hours=1)
# Inside the validity of every CA in the reference files (2023-10-12 .. 2033-05-22).
REFERENCE_NOW = datetime.datetime(2025, 6, 1, tzinfo=UTC)

EXPECTED_SUBJECT = {
    pki.KIND_TALOS: [(NameOID.ORGANIZATION_NAME, "talos")],
    pki.KIND_KUBERNETES: [(NameOID.ORGANIZATION_NAME, "kubernetes")],
    pki.KIND_ETCD: [(NameOID.ORGANIZATION_NAME, "etcd")],
    pki.KIND_AGGREGATOR: [(NameOID.COMMON_NAME, "front-proxy")],
}
TALOS_KEY_LABEL = {
    "ed25519": "ED25519 PRIVATE KEY",
    "ecdsa-p256": "EC PRIVATE KEY",
    "rsa-2048": "RSA PRIVATE KEY",
    "rsa-3072": "RSA PRIVATE KEY",
    "rsa-4096": "RSA PRIVATE KEY",
}


# --- fixtures and helpers --------------------------------------------------------------------

@pytest.fixture(scope="module")
def make_ca():
    """Generate each (kind, algorithm, variant) CA once per module: RSA 4096 is slow."""
    cache = {}

    def factory(kind=pki.KIND_TALOS, algorithm=None, variant="main"):
        cache_key = (kind, algorithm or pki.DEFAULT_ALGORITHM[kind], variant)
        if cache_key not in cache:
            cache[cache_key] = pki.generate_ca(kind, cache_key[1])
        return cache[cache_key]

    return factory


@pytest.fixture(scope="module")
def make_client():
    """One os:admin client certificate per CA, issued once per module."""
    cache = {}

    def factory(ca):
        if ca.crt not in cache:
            cache[ca.crt] = pki.issue_client_certificate(ca)
        return cache[ca.crt]

    return factory


def _cert(pem):
    return x509.load_pem_x509_certificate(pem)


def _pem_label(pem):
    return re.match(rb"-----BEGIN ([A-Z0-9 ]+)-----", pem).group(1).decode()


def _ext(certificate, extension_class):
    return certificate.extensions.get_extension_for_class(extension_class)


def _key_usage(**enabled):
    flags = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                           "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)
    flags.update(enabled)
    return x509.KeyUsage(**flags)


def _build_certificate(key, issuer_key=None, issuer_name=None, subject="test", is_ca=True, not_before=None,
                       not_after=None, usages=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
                       key_cert_sign=True):
    """A certificate with chosen flaws, built directly with cryptography (not with the code under test)."""
    now = datetime.datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject)])
    issuer_key = issuer_key or key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - HOUR)
        .not_valid_after(not_after or now + 24 * HOUR)
        .add_extension(_key_usage(digital_signature=True, key_cert_sign=is_ca and key_cert_sign), critical=True)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if usages is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    algorithm = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(issuer_key, algorithm).public_bytes(serialization.Encoding.PEM)


def _pkcs8(key_pem):
    key = pki.load_private_key(key_pem)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _key_body_lines(key_pem):
    """The base64 lines of a key: none of them may ever appear in an error message."""
    return [line for line in key_pem.decode().splitlines() if line and not line.startswith("-----")]


def _openssl_verify(tmp_path, ca_pem, leaf_pem, *options):
    ca_file = tmp_path / "ca.pem"
    leaf_file = tmp_path / "leaf.pem"
    ca_file.write_bytes(ca_pem)
    leaf_file.write_bytes(leaf_pem)
    return subprocess.run(["openssl", "verify", "-CAfile", str(ca_file), *options, str(leaf_file)],
                          capture_output=True, text=True, check=False)


# --- CA generation ---------------------------------------------------------------------------

# Every kind with the fast algorithms, every algorithm with the Talos kind: the subject depends
# only on the kind and the key only on the algorithm, and RSA 3072/4096 keys are slow to make.
CA_MATRIX = [(kind, algorithm) for kind in pki.KINDS for algorithm in ("ed25519", "ecdsa-p256", "rsa-2048")] + [
    (pki.KIND_TALOS, "rsa-3072"), (pki.KIND_TALOS, "rsa-4096")]


@pytest.mark.parametrize(("kind", "algorithm"), CA_MATRIX)
def test_generated_ca_has_talos_parameters(make_ca, kind, algorithm):
    started = datetime.datetime.now(UTC)
    ca = make_ca(kind, algorithm)
    certificate = _cert(ca.crt)

    subject = [(attribute.oid, attribute.value) for attribute in certificate.subject]
    assert subject == EXPECTED_SUBJECT[kind]
    assert certificate.issuer == certificate.subject
    if kind != pki.KIND_AGGREGATOR:
        assert not certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)

    assert pki.key_type(certificate) == algorithm
    assert pki.key_type(ca.key) == algorithm
    assert _pem_label(ca.key) == TALOS_KEY_LABEL[algorithm]

    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc == datetime.timedelta(hours=87600)
    # make_ca may come from the cache of an earlier test: allow a minute either way.
    assert abs(certificate.not_valid_before_utc - started) < datetime.timedelta(minutes=1)

    constraints = _ext(certificate, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length is None
    usage = _ext(certificate, x509.KeyUsage)
    assert usage.critical
    assert usage.value == _key_usage(digital_signature=True, key_cert_sign=True)
    both_usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert list(_ext(certificate, x509.ExtendedKeyUsage).value) == both_usages
    assert len(_ext(certificate, x509.SubjectKeyIdentifier).value.digest) == 20
    assert 0 < certificate.serial_number < 2 ** 128

    certificate.verify_directly_issued_by(certificate)
    if algorithm == "ecdsa-p256":
        assert isinstance(certificate.signature_hash_algorithm, hashes.SHA256)
    pki.check_key_pair(ca.crt, ca.key)
    assert pki.validate_ca(ca.crt, ca.key) == certificate


@pytest.mark.parametrize("kind", pki.KINDS)
def test_default_algorithm_per_kind(make_ca, kind):
    expected = "ed25519" if kind == pki.KIND_TALOS else "ecdsa-p256"
    assert pki.DEFAULT_ALGORITHM[kind] == expected
    assert pki.key_type(make_ca(kind)[0]) == expected


def test_two_cas_differ_in_serial_subject_key_id_and_key(make_ca):
    first = _cert(make_ca(pki.KIND_TALOS).crt)
    second = _cert(make_ca(pki.KIND_TALOS, variant="second").crt)
    assert first.serial_number != second.serial_number
    assert _ext(first, x509.SubjectKeyIdentifier).value != _ext(second, x509.SubjectKeyIdentifier).value
    assert not pki.same_certificate(first, second)


def test_generate_ca_uses_given_time_and_validity():
    moment = datetime.datetime(2030, 2, 3, 4, 5, 6, 789, tzinfo=UTC)
    certificate = _cert(pki.generate_ca(pki.KIND_ETCD, validity_hours=48, now=moment).crt)
    assert certificate.not_valid_before_utc == moment.replace(microsecond=0)
    assert certificate.not_valid_after_utc == moment.replace(microsecond=0) + 48 * HOUR
    # A naive datetime is taken as UTC.
    naive = pki.generate_ca(pki.KIND_TALOS, now=datetime.datetime(2030, 2, 3, 4, 5, 6)).crt
    assert _cert(naive).not_valid_before_utc == datetime.datetime(2030, 2, 3, 4, 5, 6, tzinfo=UTC)


@pytest.mark.parametrize(("arguments", "error", "fragments"), [
    ({"kind": "os"}, PKIError, ["unknown CA kind 'os'", "talos, kubernetes, etcd, aggregator"]),
    ({"kind": "talos", "algorithm": "ecdsa-p384"}, UnsupportedKeyError, ["ecdsa-p384", "use one of ed25519"]),
    ({"kind": "talos", "algorithm": "rsa-1024"}, UnsupportedKeyError, ["rsa-1024", "rsa-2048"]),
    ({"kind": "talos", "validity_hours": 0}, PKIError, ["positive whole number of hours", "87600"]),
    ({"kind": "talos", "validity_hours": "10y"}, PKIError, ["positive whole number of hours"]),
], ids=["unknown-kind", "p384", "rsa-1024", "zero-hours", "text-hours"])
def test_generate_ca_refuses_bad_arguments(arguments, error, fragments):
    with pytest.raises(PKIError) as caught:
        pki.generate_ca(**arguments)
    assert caught.type is error
    for fragment in fragments:
        assert fragment in str(caught.value)


# --- leaf issuance ---------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", pki.ALGORITHMS)
def test_client_certificate_has_talos_parameters(make_ca, make_client, algorithm):
    started = datetime.datetime.now(UTC)
    ca = make_ca(pki.KIND_TALOS, algorithm)
    client = make_client(ca)
    certificate = _cert(client.crt)
    ca_certificate = _cert(ca.crt)

    assert [(attribute.oid, attribute.value) for attribute in certificate.subject] == [(NameOID.ORGANIZATION_NAME, "os:admin")]
    assert not certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert certificate.issuer == ca_certificate.subject
    assert list(_ext(certificate, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _ext(certificate, x509.KeyUsage).value == _key_usage(digital_signature=True)
    with pytest.raises(x509.ExtensionNotFound):
        _ext(certificate, x509.BasicConstraints)
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc == datetime.timedelta(hours=8760)
    assert abs(certificate.not_valid_before_utc - started) < datetime.timedelta(minutes=1)
    assert pki.key_type(certificate) == algorithm
    assert _pem_label(client.key) == TALOS_KEY_LABEL[algorithm]
    assert (_ext(certificate, x509.AuthorityKeyIdentifier).value.key_identifier
            == _ext(ca_certificate, x509.SubjectKeyIdentifier).value.digest)
    certificate.verify_directly_issued_by(ca_certificate)
    assert pki.validate_client_certificate(client.crt, client.key, ca_pems=ca.crt) == certificate


def test_client_certificate_has_one_organization_per_role(make_ca):
    client = pki.issue_client_certificate(make_ca(), roles=["os:reader", "os:etcd:backup"], validity_hours=2)
    certificate = _cert(client.crt)
    organizations = [attribute.value for attribute in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert organizations == ["os:reader", "os:etcd:backup"]
    assert all(len(rdn) == 1 for rdn in certificate.subject.rdns)
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc == 2 * HOUR
    # A role given as a plain string is one role, not one per character.
    single = _cert(pki.issue_client_certificate(make_ca(), roles="os:operator").crt)
    assert [attribute.value for attribute in single.subject] == ["os:operator"]


@pytest.mark.parametrize("roles", [(), [""], [None]], ids=["none", "empty-string", "not-a-string"])
def test_client_certificate_needs_roles(make_ca, roles):
    with pytest.raises(PKIError, match="at least one role"):
        pki.issue_client_certificate(make_ca(), roles=roles)


@pytest.mark.parametrize("algorithm", ["ed25519", "ecdsa-p256", "rsa-2048"])
def test_server_certificate(make_ca, algorithm):
    ca = make_ca(pki.KIND_TALOS, algorithm)
    server = pki.issue_server_certificate(ca, "cp-1.example.org", ip_addresses=["10.5.0.2", "fd00::2"],
                                          dns_names=["cp-1", "cp-1.example.org"])
    certificate = _cert(server.crt)
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "cp-1.example.org"
    assert list(_ext(certificate, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    names = _ext(certificate, x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["cp-1", "cp-1.example.org"]
    assert [str(address) for address in names.get_values_for_type(x509.IPAddress)] == ["10.5.0.2", "fd00::2"]
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc == 24 * HOUR
    assert pki.key_type(certificate) == algorithm
    pki.check_key_pair(server.crt, server.key, what="server")
    # A server certificate is not a client certificate for Talos.
    with pytest.raises(PKIError, match=r"exactly \[ClientAuth\]"):
        pki.validate_client_certificate(server.crt, server.key, ca_pems=ca.crt)


@pytest.mark.parametrize(("arguments", "fragment"), [
    ({"common_name": ""}, "needs a common name"),
    ({"common_name": "cp", "ip_addresses": ["cp-1"]}, "'cp-1' is not an IP address: put host names in dns_names"),
    ({"common_name": "cp", "dns_names": ["10.0.0.1"]}, "put it in ip_addresses"),
], ids=["no-cn", "name-as-ip", "ip-as-name"])
def test_server_certificate_refuses_bad_names(make_ca, arguments, fragment):
    with pytest.raises(PKIError) as caught:
        pki.issue_server_certificate(make_ca(), **arguments)
    assert caught.type is PKIError
    assert fragment in str(caught.value)


# --- openssl agrees --------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", pki.ALGORITHMS)
def test_openssl_verifies_issued_certificates(tmp_path, make_ca, make_client, algorithm):
    ca = make_ca(pki.KIND_TALOS, algorithm)
    client = make_client(ca)
    server = pki.issue_server_certificate(ca, "cp-1.example.org", ip_addresses=["10.5.0.2"], dns_names=["cp-1"])

    result = _openssl_verify(tmp_path, ca.crt, client.crt, "-purpose", "sslclient")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")

    result = _openssl_verify(tmp_path, ca.crt, server.crt, "-purpose", "sslserver", "-verify_ip", "10.5.0.2")
    assert result.returncode == 0, result.stdout + result.stderr
    result = _openssl_verify(tmp_path, ca.crt, server.crt, "-purpose", "sslserver", "-verify_hostname", "cp-1")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("algorithm", ["ed25519", "ecdsa-p256"])
def test_openssl_refuses_certificates_of_another_ca(tmp_path, make_ca, make_client, algorithm):
    other_ca = make_ca(pki.KIND_TALOS, algorithm, variant="other")
    client = make_client(make_ca(pki.KIND_TALOS, algorithm))
    result = _openssl_verify(tmp_path, other_ca.crt, client.crt, "-purpose", "sslclient")
    assert result.returncode != 0
    assert "unable to get local issuer certificate" in result.stdout + result.stderr


def test_openssl_refuses_a_client_certificate_as_server(tmp_path, make_ca, make_client):
    ca = make_ca()
    result = _openssl_verify(tmp_path, ca.crt, make_client(ca).crt, "-purpose", "sslserver")
    assert result.returncode != 0


# --- keys ------------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", pki.ALGORITHMS)
def test_written_key_reloads_byte_for_byte(make_ca, algorithm):
    ca = make_ca(pki.KIND_TALOS, algorithm)
    assert _pem_label(ca.key) == TALOS_KEY_LABEL[algorithm]
    key = pki.load_private_key(ca.key)
    assert pki.dump_private_key(key) == ca.key
    pki.check_key_pair(ca.crt, ca.key)
    pki.check_key_pair(ca.crt, key)


@pytest.mark.parametrize("algorithm", pki.ALGORITHMS)
def test_pkcs8_key_loads_and_is_written_under_talos_label(make_ca, algorithm):
    ca = make_ca(pki.KIND_TALOS, algorithm)
    pkcs8 = _pkcs8(ca.key)
    assert _pem_label(pkcs8) == "PRIVATE KEY"
    key = pki.load_private_key(pkcs8)
    pki.check_key_pair(ca.crt, pkcs8)
    assert pki.dump_private_key(key) == ca.key
    assert pki.dump_private_key(pkcs8) == ca.key  # PEM text is normalised too


def test_ed25519_key_body_is_pkcs8_under_talos_label(make_ca):
    ca = make_ca(pki.KIND_TALOS, "ed25519")
    body = base64.b64decode("".join(_key_body_lines(ca.key)))
    # The PKCS#8 wrapper of an Ed25519 key: what Go's MarshalPKCS8PrivateKey writes (48 bytes).
    assert len(body) == 48 and body.startswith(bytes.fromhex("302e020100300506032b657004220420"))
    # cryptography alone refuses the label; relabelled it reads the same key.
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(ca.key, password=None)
    relabelled = serialization.load_pem_private_key(ca.key.replace(b"ED25519 PRIVATE KEY", b"PRIVATE KEY"), password=None)
    assert pki.dump_private_key(relabelled) == ca.key


def test_key_loads_from_indented_crlf_text_and_str(make_ca):
    ca = make_ca(pki.KIND_KUBERNETES)
    mangled = b"\r\n".join(b"    " + line for line in ca.key.splitlines()) + b"\r\n"
    assert pki.dump_private_key(pki.load_private_key(mangled)) == ca.key
    assert pki.dump_private_key(pki.load_private_key(ca.key.decode())) == ca.key


def test_key_type_of_every_input_form(make_ca):
    ca = make_ca(pki.KIND_TALOS, "rsa-3072")
    key = pki.load_private_key(ca.key)
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for form in (ca.crt, ca.crt.decode(), _cert(ca.crt), ca.key, key, key.public_key(), public_pem):
        assert pki.key_type(form) == "rsa-3072"


def test_key_type_accepts_larger_rsa_than_listed():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2560)
    assert pki.key_type(key) == "rsa-2560"


# --- certificate helpers ---------------------------------------------------------------------

def test_fingerprint_matches_openssl(tmp_path, make_ca):
    ca = make_ca()
    path = tmp_path / "ca.pem"
    path.write_bytes(ca.crt)
    output = subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-fingerprint", "-sha256"],
                            capture_output=True, text=True, check=True).stdout
    expected = output.strip().split("=", 1)[1].replace(":", "").lower()
    assert pki.fingerprint(ca.crt) == expected
    assert pki.fingerprint(_cert(ca.crt)) == expected
    assert re.fullmatch(r"[0-9a-f]{64}", expected)


def test_same_certificate_ignores_pem_layout(make_ca):
    ca = make_ca()
    reflowed = b"\r\n".join(b"  " + line + b"  " for line in ca.crt.splitlines())
    assert pki.same_certificate(ca.crt, reflowed)
    assert pki.same_certificate(_cert(ca.crt), reflowed.decode())
    assert not pki.same_certificate(ca.crt, make_ca(pki.KIND_ETCD).crt)


def test_bundle_split_and_loaded_in_order(make_ca):
    first, second = make_ca().crt, make_ca(pki.KIND_KUBERNETES).crt
    bundle = b"# accepted CAs\n" + first.replace(b"\n", b"\r\n") + b"\nsome text\n" + second
    assert pki.split_pem_certificates(bundle) == [first, second]
    assert [pki.fingerprint(c) for c in pki.load_certificates(bundle)] == [pki.fingerprint(first), pki.fingerprint(second)]
    assert pki.same_certificate(pki.load_certificate(bundle), first)


def test_describe_certificate(make_ca, make_client):
    ca = make_ca(pki.KIND_TALOS, "ed25519")
    client = make_client(ca)
    described = pki.describe_certificate(client.crt)
    assert json.loads(json.dumps(described)) == described
    certificate = _cert(client.crt)
    assert described["subject"] == "O=os:admin"
    assert described["issuer"] == "O=talos"
    assert described["organization"] == ["os:admin"]
    assert described["common_name"] is None
    assert described["serial"] == format(certificate.serial_number, "x")
    assert described["fingerprint_sha256"] == pki.fingerprint(certificate)
    assert described["not_before"] == certificate.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert described["not_after"].endswith("Z")
    assert described["is_ca"] is False
    assert described["key_type"] == "ed25519"
    assert described["key_usage"] == ["digital_signature"]
    assert described["extended_key_usage"] == ["client_auth"]

    described_ca = pki.describe_certificate(make_ca(pki.KIND_AGGREGATOR).crt)
    assert described_ca["common_name"] == "front-proxy"
    assert described_ca["organization"] == []
    assert described_ca["is_ca"] is True
    assert described_ca["key_usage"] == ["digital_signature", "key_cert_sign"]
    assert described_ca["extended_key_usage"] == ["server_auth", "client_auth"]


def test_describe_names_a_key_talos_does_not_use():
    key = ec.generate_private_key(ec.SECP384R1())
    described = pki.describe_certificate(_build_certificate(key))
    assert described["key_type"] == "ecdsa-secp384r1"
    assert described["key_supported"] is False


def test_validation_at_a_given_time(make_ca, make_client):
    ca = make_ca()
    client = make_client(ca)
    not_after = _cert(client.crt).not_valid_after_utc
    pki.validate_client_certificate(client.crt, client.key, [ca.crt], now=not_after - HOUR)
    with pytest.raises(CertificateValidityError, match="expired"):
        pki.validate_client_certificate(client.crt, client.key, [ca.crt], now=not_after + HOUR)


def test_client_accepted_when_any_given_ca_issued_it(make_ca, make_client):
    ca = make_ca(pki.KIND_TALOS, "ecdsa-p256")
    client = make_client(ca)
    other = make_ca(pki.KIND_TALOS, "ecdsa-p256", variant="other")
    # A bundle, a list of PEM texts, and certificate objects are all accepted.
    pki.validate_client_certificate(client.crt, client.key, ca_pems=other.crt + ca.crt)
    pki.validate_client_certificate(client.crt, None, ca_pems=[other.crt, _cert(ca.crt)])


def test_is_issued_by_checks_name_and_signature(make_ca, make_client):
    ca = make_ca(pki.KIND_TALOS, "ed25519")
    client = make_client(ca)
    same_name_other_key = make_ca(pki.KIND_TALOS, "ed25519", variant="other")
    assert _cert(same_name_other_key.crt).subject == _cert(ca.crt).subject
    assert pki.is_issued_by(client.crt, ca.crt)
    assert pki.is_issued_by(_cert(client.crt), _cert(ca.crt).public_bytes(serialization.Encoding.PEM).decode())
    assert not pki.is_issued_by(client.crt, same_name_other_key.crt)
    assert not pki.is_issued_by(client.crt, make_ca(pki.KIND_KUBERNETES).crt)
    assert pki.is_issued_by(ca.crt, ca.crt)  # a root signs itself
    with pytest.raises(NotPEMError):
        pki.is_issued_by(client.crt, b"not a certificate")


def test_module_imports_without_cryptography(monkeypatch):
    # ansible-test sanity imports module_utils without cryptography: importing must work and
    # every entry point must then say what to install.
    monkeypatch.setitem(sys.modules, "cryptography", None)
    spec = importlib.util.spec_from_file_location("_pki_without_cryptography", pki.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.HAS_CRYPTOGRAPHY is False
    assert "cryptography" in module.CRYPTOGRAPHY_IMPORT_ERROR
    with pytest.raises(PKIError, match="pip install"):
        module.generate_ca(module.KIND_TALOS)
    with pytest.raises(PKIError, match="pip install"):
        module.load_certificate(b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")


# --- bad input: each raises its own class with a message that says what to do ----------------

def _expired_ca():
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(UTC)
    return _build_certificate(key, not_before=now - 48 * HOUR, not_after=now - 24 * HOUR)


def _future_ca():
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(UTC)
    return _build_certificate(key, not_before=now + 24 * HOUR, not_after=now + 48 * HOUR)


def _encrypted_pkcs8(ca):
    key = pki.load_private_key(ca.key)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(b"secret"))


def _encrypted_legacy(ca):
    key = pki.load_private_key(ca.key)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.BestAvailableEncryption(b"secret"))


def _leaf_with_usages(ca, usages, is_ca=False):
    ca_key = pki.load_private_key(ca.key)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    crt = _build_certificate(leaf_key, issuer_key=ca_key, issuer_name=_cert(ca.crt).subject, subject="os:admin",
                             is_ca=is_ca, usages=usages)
    return crt, pki.dump_private_key(leaf_key)


def _ca_with(key, **options):
    return _build_certificate(key, **options), pki.dump_private_key(key) if not isinstance(key, dsa.DSAPrivateKey) else None


# Each case: a function of (make_ca, make_client) returning (call, key PEMs that must not leak).
BAD_INPUTS = {
    "not-pem": (lambda ca, cl: (lambda: pki.load_certificate(b"hello world", what="machine.ca.crt"), []),
                NotPEMError, ["machine.ca.crt", "no PEM certificate", "give the certificate as PEM text"]),
    "empty-ca": (lambda ca, cl: (lambda: pki.validate_ca(b"", what="new Talos CA"), []),
                 NotPEMError, ["new Talos CA certificate is empty", "give the certificate as PEM"]),
    "empty-key": (lambda ca, cl: (lambda: pki.validate_ca(ca().crt, "", what="Talos CA"), []),
                  NotPEMError, ["Talos CA private key is empty", "give the private key as PEM"]),
    "base64-of-pem": (lambda ca, cl: (lambda: pki.load_certificate(base64.b64encode(ca().crt), what="machine.ca.crt"), []),
                      NotPEMError, ["base64-encoded PEM", "decode those values first"]),
    "der": (lambda ca, cl: (lambda: pki.load_certificate(_cert(ca().crt).public_bytes(serialization.Encoding.DER)), []),
            NotPEMError, ["binary DER", "openssl x509 -inform DER"]),
    "damaged": (lambda ca, cl: (lambda: pki.load_certificate(ca().crt.replace(b"M", b"*", 3)), []),
                NotPEMError, ["damaged", "copy the PEM text again"]),
    "key-as-certificate": (lambda ca, cl: (lambda: pki.load_certificate(ca().key, what="machine.ca.crt"), [ca().key]),
                           NotPEMError, ["holds a private key, not a certificate", "give the certificate"]),
    "certificate-as-key": (lambda ca, cl: (lambda: pki.load_private_key(ca().crt, what="machine.ca.key"), []),
                           NotPEMError, ["holds a certificate, not a private key", "give the private key"]),
    "two-keys": (lambda ca, cl: (lambda: pki.load_private_key(ca().key + ca(pki.KIND_ETCD).key), [ca().key]),
                 NotPEMError, ["holds 2 private keys", "give exactly one"]),
    "ed25519-label-sec1-body": (
        lambda ca, cl: (lambda: pki.load_private_key(ca(pki.KIND_ETCD).key.replace(b"EC PRIVATE KEY", b"ED25519 PRIVATE KEY")),
                        [ca(pki.KIND_ETCD).key]),
        NotPEMError, ["ED25519 PRIVATE KEY", "PKCS#8", "copy the key again"]),
    "leaf-as-ca": (lambda ca, cl: (lambda: pki.validate_ca(cl(ca()).crt, what="machine.ca"), []),
                   NotACAError, ["machine.ca", "is a leaf (not a CA)", "give the CA certificate, the one with basicConstraints CA:TRUE"]),
    "ca-without-cert-sign": (
        lambda ca, cl: (lambda: pki.validate_ca(_build_certificate(ec.generate_private_key(ec.SECP256R1()), key_cert_sign=False)), []),
        NotACAError, ["may not sign certificates", "KeyUsage includes Certificate Sign"]),
    "key-mismatch": (lambda ca, cl: (lambda: pki.validate_ca(ca().crt, ca(variant="other").key, what="Talos CA"),
                                     [ca(variant="other").key]),
                     KeyMismatchError, ["Talos CA private key does not belong to the Talos CA certificate",
                                        "give the key that was generated together with this certificate"]),
    "expired-ca": (lambda ca, cl: (lambda: pki.validate_ca(_expired_ca(), what="current Talos CA"), []),
                   CertificateValidityError, ["current Talos CA", "expired at", "generate a new CA"]),
    "not-yet-valid-ca": (lambda ca, cl: (lambda: pki.validate_ca(_future_ca()), []),
                         CertificateValidityError, ["is not valid yet", "check the clocks"]),
    "p384-ca": (lambda ca, cl: (lambda: pki.validate_ca(*_ca_with(ec.generate_private_key(ec.SECP384R1()))), []),
                UnsupportedKeyError, ["secp384r1", "Talos only uses P-256", "use one of ed25519"]),
    "dsa-ca": (lambda ca, cl: (lambda: pki.validate_ca(_ca_with(dsa.generate_private_key(2048))[0]), []),
               UnsupportedKeyError, ["DSA", "use one of ed25519"]),
    "rsa-1024-ca": (lambda ca, cl: (lambda: pki.validate_ca(*_ca_with(rsa.generate_private_key(65537, 1024))), []),
                    UnsupportedKeyError, ["RSA 1024 bits", "too weak", "at least 2048"]),
    "p384-key-type": (lambda ca, cl: (lambda: pki.key_type(ec.generate_private_key(ec.SECP384R1()), what="new key"), []),
                      UnsupportedKeyError, ["new key cannot be used", "P-256"]),
    "encrypted-pkcs8-key": (lambda ca, cl: (lambda: pki.load_private_key(_encrypted_pkcs8(ca()), what="CA key"), []),
                            UnsupportedKeyError, ["CA key is encrypted", "decrypt it first"]),
    "encrypted-legacy-key": (lambda ca, cl: (lambda: pki.load_private_key(_encrypted_legacy(ca(pki.KIND_ETCD))), []),
                             UnsupportedKeyError, ["is encrypted", "decrypt it first"]),
    "openssh-key": (lambda ca, cl: (lambda: pki.load_private_key(b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n"
                                                                 b"-----END OPENSSH PRIVATE KEY-----\n"), []),
                    UnsupportedKeyError, ["OPENSSH PRIVATE KEY", "convert it to PKCS#8"]),
    "server-and-client-auth": (
        lambda ca, cl: (lambda: pki.validate_client_certificate(
            *_leaf_with_usages(ca(), [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), ca_pems=ca().crt), []),
        PKIError, ["server_auth+client_auth", "refuses a client certificate whose ExtendedKeyUsage is not exactly [ClientAuth]",
                   "issue a new client certificate with ExtendedKeyUsage ClientAuth only"]),
    "client-without-eku": (
        lambda ca, cl: (lambda: pki.validate_client_certificate(*_leaf_with_usages(ca(), None)), []),
        PKIError, ["has no ExtendedKeyUsage", "issue a new client certificate"]),
    "ca-as-client": (lambda ca, cl: (lambda: pki.validate_client_certificate(ca().crt, ca().key), [ca().key]),
                     PKIError, ["is a CA certificate, not a client certificate", "give the client (leaf) certificate"]),
    "client-of-another-ca": (
        lambda ca, cl: (lambda: pki.validate_client_certificate(cl(ca()).crt, cl(ca()).key, ca_pems=[ca(variant="other").crt]),
                        [cl(ca()).key]),
        PKIError, ["was not issued by any of the 1 given CA certificates", "use a client certificate issued by one of them"]),
    "client-key-mismatch": (
        lambda ca, cl: (lambda: pki.validate_client_certificate(cl(ca()).crt, ca().key), [ca().key]),
        KeyMismatchError, ["does not belong", "give the key that was generated together"]),
    "issue-without-ca-key": (lambda ca, cl: (lambda: pki.issue_client_certificate(pki.CertAndKey(ca().crt, None)), []),
                             PKIError, ["issuing CA has no private key", "workers carry no CA key"]),
    "issue-from-leaf": (lambda ca, cl: (lambda: pki.issue_client_certificate(cl(ca())), [cl(ca()).key]),
                        NotACAError, ["issuing CA", "is a leaf"]),
    "issue-from-server-only-ca": (
        lambda ca, cl: (lambda: pki.issue_client_certificate(
            _ca_with(ec.generate_private_key(ec.SECP256R1()), usages=[ExtendedKeyUsageOID.SERVER_AUTH])), []),
        PKIError, ["ExtendedKeyUsage without client_auth", "use a CA with both ServerAuth and ClientAuth"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_specific_error_with_remedy(make_ca, make_client, case):
    build, error, fragments = BAD_INPUTS[case]
    call, secret_keys = build(make_ca, make_client)
    with pytest.raises(PKIError) as caught:
        call()
    message = str(caught.value)
    assert caught.type is error, message
    for fragment in fragments:
        assert fragment in message
    for key_pem in secret_keys:
        for line in _key_body_lines(key_pem):
            assert line not in message


# --- real files written by Talos -------------------------------------------------------------

def _reference(*parts):
    return reference_path(*parts)


def _bundle_entries(bundle):
    with open(_reference(bundle), encoding="utf-8") as handle:
        return yaml.safe_load(handle)["certs"]


@pytest.mark.parametrize("entry", ["os", "k8s", "etcd", "k8saggregator", "k8sserviceaccount"])
@pytest.mark.parametrize("bundle", ["secrets.yaml", "secrets-stability.yaml"])
def test_reference_secrets_bundle(bundle, entry):
    values = _bundle_entries(bundle)[entry]
    key_pem = base64.b64decode(values["key"])
    key = pki.load_private_key(key_pem, what="%s certs.%s.key" % (bundle, entry))
    # Re-written keys are byte-identical to what talosctl wrote.
    assert pki.dump_private_key(key) == key_pem
    if entry == "k8sserviceaccount":
        assert "crt" not in values
        assert pki.key_type(key) == "ecdsa-p256"
        return
    crt_pem = base64.b64decode(values["crt"])
    pki.check_key_pair(crt_pem, key_pem, what=entry)
    certificate = pki.validate_ca(crt_pem, key_pem, now=REFERENCE_NOW, what=entry)
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc == datetime.timedelta(hours=87600)
    described = pki.describe_certificate(crt_pem)
    if entry == "os":
        assert _pem_label(key_pem) == "ED25519 PRIVATE KEY"
        assert pki.key_type(crt_pem) == "ed25519"
        assert described["organization"] == ["talos"] and described["common_name"] is None
    else:
        assert _pem_label(key_pem) == "EC PRIVATE KEY"
        assert pki.key_type(crt_pem) == "ecdsa-p256"
    # A client certificate issued from the real CA verifies against it.
    client = pki.issue_client_certificate(pki.CertAndKey(crt_pem, key_pem), now=REFERENCE_NOW)
    pki.validate_client_certificate(client.crt, client.key, ca_pems=crt_pem, now=REFERENCE_NOW)
    # Go finds a parent by the raw issuer bytes: they must equal the CA's subject exactly
    # (Talos writes PrintableString, which must survive).
    assert _cert(client.crt).issuer.public_bytes() == _cert(crt_pem).subject.public_bytes()


def _v1alpha1_document(path):
    with open(path, encoding="utf-8") as handle:
        return next(document for document in yaml.safe_load_all(handle) if document and "machine" in document)


MACHINE_CONFIG_CAS = [
    (config, section)
    for config in ("machineconfig-v1.7/base-controlplane.yaml", "machineconfig-v1.7/base-worker.yaml",
                   "machineconfig-v1.13/base-controlplane.yaml", "machineconfig-v1.13/base-worker.yaml",
                   "machineconfig-commented/controlplane.yaml", "machineconfig-commented/worker.yaml")
    for section in ("machine", "cluster")
] + [("machineconfig-v1.15/base-controlplane.yaml", "machine"), ("machineconfig-v1.15/base-worker.yaml", "machine")]


@pytest.mark.parametrize(("config", "section"), MACHINE_CONFIG_CAS)
def test_reference_machine_config_ca(config, section):
    values = _v1alpha1_document(_reference(config))[section]["ca"]
    crt_pem = base64.b64decode(values["crt"])
    what = "%s %s.ca" % (config, section)
    if "worker" in config:
        assert values["key"] == ""  # workers carry no CA key
        key_pem = None
    else:
        key_pem = base64.b64decode(values["key"])
        assert pki.dump_private_key(pki.load_private_key(key_pem, what=what)) == key_pem
    pki.validate_ca(crt_pem, key_pem, now=REFERENCE_NOW, what=what)
    expected = "ed25519" if section == "machine" else "ecdsa-p256"
    assert pki.key_type(crt_pem) == expected
    if not config.startswith("machineconfig-commented"):
        # The stability configs were generated from secrets-stability.yaml: same certificates.
        entry = "os" if section == "machine" else "k8s"
        assert pki.same_certificate(crt_pem, base64.b64decode(_bundle_entries("secrets-stability.yaml")[entry]["crt"]))


def test_reference_v1_15_raw_pem_ca_documents():
    stability = _bundle_entries("secrets-stability.yaml")
    with open(_reference("machineconfig-v1.15/base-controlplane.yaml"), encoding="utf-8") as handle:
        control_plane = {document.get("kind"): document for document in yaml.safe_load_all(handle) if document}
    with open(_reference("machineconfig-v1.15/base-worker.yaml"), encoding="utf-8") as handle:
        worker = {document.get("kind"): document for document in yaml.safe_load_all(handle) if document}

    for kind, entry in (("KubeAPIServerCAConfig", "k8s"), ("KubeAggregatorCAConfig", "k8saggregator")):
        issuing = control_plane[kind]["issuingCA"]
        pki.validate_ca(issuing["cert"], issuing["key"], now=REFERENCE_NOW, what=kind)
        # Raw PEM here, base64 of PEM in the bundle: the same certificate and key.
        assert pki.same_certificate(issuing["cert"], base64.b64decode(stability[entry]["crt"]))
        assert pki.dump_private_key(issuing["key"]) == base64.b64decode(stability[entry]["key"])
    accepted = worker["KubeAPIServerCAConfig"]["acceptedCAs"]
    assert len(accepted) == 1
    assert pki.same_certificate(accepted[0], control_plane["KubeAPIServerCAConfig"]["issuingCA"]["cert"])
    # Talos writes the aggregator CA with an empty subject (the CommonName option is not applied).
    assert pki.describe_certificate(control_plane["KubeAggregatorCAConfig"]["issuingCA"]["cert"])["subject"] == ""
