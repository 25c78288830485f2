"""Certificates and keys the simulated cluster issues, with the parameters Talos uses.

Independent on purpose from the collection's own PKI code: a bug there must not be hidden
by the same bug here. Parameters follow TALOS-FACTS.md §3 (siderolabs/talos
pkg/machinery/config/generate/secrets and siderolabs/crypto x509).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = datetime.timedelta(hours=87600)
CLIENT_VALIDITY = datetime.timedelta(hours=8760)
# apid/trustd leaf certificates: x509.DefaultCertificateValidityDuration in siderolabs/crypto.
SERVER_VALIDITY = datetime.timedelta(hours=24)
# Backdating absorbs clock differences between the simulator and a client checking NotBefore.
_BACKDATE = datetime.timedelta(minutes=5)

_TALOS_KEY_LABELS = {
    "ED25519 PRIVATE KEY": "PRIVATE KEY",  # Talos writes PKCS#8 bodies under this label
}
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.S)


class PEMError(ValueError):
    """PEM text that does not hold what it should."""


@dataclass(frozen=True)
class CertKey:
    """A certificate with its private key, both as parsed objects and as Talos writes them."""

    cert: x509.Certificate
    key: object  # a cryptography private key
    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def from_objects(cls, cert, key):
        return cls(cert, key, cert.public_bytes(serialization.Encoding.PEM), talos_key_pem(key))

    @property
    def fingerprint(self) -> bytes:
        return fingerprint(self.cert)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def fingerprint(cert: x509.Certificate) -> bytes:
    """SHA-256 of the DER: CAs are compared by certificate, not by PEM text (§2)."""
    return cert.fingerprint(hashes.SHA256())


def talos_key_pem(key) -> bytes:
    """PEM of a private key under the label Talos itself writes (§2)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        body = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
        return body.replace(b"BEGIN PRIVATE KEY", b"BEGIN ED25519 PRIVATE KEY").replace(
            b"END PRIVATE KEY", b"END ED25519 PRIVATE KEY")
    # EC -> "EC PRIVATE KEY" (SEC1), RSA -> "RSA PRIVATE KEY" (PKCS#1): the traditional formats.
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def pkcs8_pem(key) -> bytes:
    """PEM that Python's ssl module loads for any key type."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private_key(pem: bytes):
    """Read any private key label Talos reads (ED25519/EC/RSA PRIVATE KEY, PRIVATE KEY)."""
    blocks = _PEM_BLOCK.findall(pem)
    if len(blocks) != 1:
        raise PEMError("expected exactly one PEM private key block")
    label = blocks[0].decode()
    text = pem
    if label in _TALOS_KEY_LABELS:
        # cryptography refuses the ED25519 label although the body is plain PKCS#8.
        text = pem.replace(label.encode(), _TALOS_KEY_LABELS[label].encode())
    elif label not in ("EC PRIVATE KEY", "RSA PRIVATE KEY", "PRIVATE KEY"):
        raise PEMError("unsupported private key PEM label %r" % label)
    try:
        return serialization.load_pem_private_key(text, password=None)
    except ValueError as exc:
        raise PEMError("cannot parse private key: %s" % exc) from exc


def load_public_key(pem: bytes):
    """A PKIX "PUBLIC KEY" or PKCS#1 "RSA PUBLIC KEY" block (what --service-account-key-file reads)."""
    blocks = _PEM_BLOCK.findall(pem)
    if len(blocks) != 1 or blocks[0].decode() not in ("PUBLIC KEY", "RSA PUBLIC KEY"):
        raise PEMError("expected exactly one PEM public key block")
    try:
        return serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise PEMError("cannot parse public key: %s" % exc) from exc


def public_key_pem(key) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    """Every CERTIFICATE block of a PEM bundle; anything else in it is an error."""
    blocks = [match.group(0) for match in _PEM_BLOCK.finditer(pem)]
    if not blocks:
        raise PEMError("no PEM certificate found")
    certs = []
    for block in blocks:
        if not block.startswith(b"-----BEGIN CERTIFICATE-----"):
            raise PEMError("PEM block is not a CERTIFICATE")
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError as exc:
            raise PEMError("cannot parse certificate: %s" % exc) from exc
    return certs


def load_certificate(pem: bytes) -> x509.Certificate:
    certs = load_certificates(pem)
    if len(certs) != 1:
        raise PEMError("expected one certificate, found %d" % len(certs))
    return certs[0]


def key_matches(cert: x509.Certificate, key) -> bool:
    public = cert.public_key()
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return public.public_bytes(*raw) == key.public_key().public_bytes(*raw)


def is_issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """True when `ca` signed `cert` (name chaining and signature)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def validity(cert: x509.Certificate) -> tuple[datetime.datetime, datetime.datetime]:
    """(NotBefore, NotAfter) as aware UTC datetimes (cryptography < 42 has naive ones only)."""
    if hasattr(cert, "not_valid_before_utc"):
        return cert.not_valid_before_utc, cert.not_valid_after_utc
    return (cert.not_valid_before.replace(tzinfo=datetime.timezone.utc),
            cert.not_valid_after.replace(tzinfo=datetime.timezone.utc))


def verifies_against(cert: x509.Certificate, pool) -> bool:
    """A one-level chain check: the simulator only issues leaves directly from roots."""
    not_before, not_after = validity(cert)
    if not not_before <= now() <= not_after:
        return False
    return any(is_issued_by(cert, ca) for ca in pool)


def new_key_like(ca_key):
    """A fresh key of the CA's type: the leaf key type follows the CA (siderolabs/crypto)."""
    if isinstance(ca_key, ed25519.Ed25519PrivateKey):
        return ed25519.Ed25519PrivateKey.generate()
    if isinstance(ca_key, ec.EllipticCurvePrivateKey):
        return ec.generate_private_key(ca_key.curve)
    if isinstance(ca_key, rsa.RSAPrivateKey):
        return rsa.generate_private_key(public_exponent=65537, key_size=ca_key.key_size)
    raise TypeError("unsupported CA key type %s" % type(ca_key).__name__)


def key_kind(key) -> str:
    """A name for a key's type, to reuse one leaf key per node and key type."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ec-%s" % key.curve.name
    return "rsa-%d" % key.key_size


def _signature_hash(ca_key):
    # Ed25519 signs without a separate digest; ECDSA-SHA256 and SHA256-RSA otherwise.
    return None if isinstance(ca_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _name(common_name: str | None = None, organizations=()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    if common_name:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def new_ca(kind: str, *, organization: str | None = None, common_name: str | None = None,
           validity=CA_VALIDITY) -> CertKey:
    """A self-signed root CA as `talosctl gen secrets` makes it (§3).

    kind: "ed25519" (Talos OS CA) or "ecdsa" (Kubernetes, etcd, aggregator CAs).
    """
    key = ed25519.Ed25519PrivateKey.generate() if kind == "ed25519" else ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name, [organization] if organization else [])
    start = now() - _BACKDATE
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        # Both EKUs on CAs: Go's EKU nesting check refuses client certs under a ServerAuth-only CA.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier(os.urandom(20)), critical=False)
        .sign(key, _signature_hash(key))
    )
    return CertKey.from_objects(cert, key)


def new_os_ca() -> CertKey:
    return new_ca("ed25519", organization="talos")


def new_kubernetes_ca() -> CertKey:
    return new_ca("ecdsa", organization="kubernetes")


def issue(ca: CertKey, *, key=None, common_name: str | None = None, organizations=(), ips=(), dns_names=(),
          server: bool = False, client: bool = False, validity=SERVER_VALIDITY) -> CertKey:
    """A leaf signed by `ca`; EKU is exactly what is asked (ServerAuth and/or ClientAuth).

    `key` lets a node reuse its key across reissues (Talos makes a new one each time; reusing
    keeps per-change work cheap and changes nothing a client can observe).
    """
    if key is None:
        key = new_key_like(ca.key)
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    start = now() - _BACKDATE
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    sans = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips] + [x509.DNSName(name) for name in dns_names]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    try:
        # Go's x509.CreateCertificate copies the parent's SubjectKeyId into AuthorityKeyId.
        # Every Talos OS CA is O=talos: OpenSSL needs it to pick the right one of two.
        ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                                        critical=False)
    except x509.ExtensionNotFound:
        pass
    return CertKey.from_objects(builder.sign(ca.key, _signature_hash(ca.key)), key)


def talos_client_certificate(os_ca: CertKey, roles=("os:admin",)) -> CertKey:
    """A talosconfig client certificate: no CN, O=roles, 1 year, EKU exactly [ClientAuth]."""
    return issue(os_ca, organizations=roles, client=True, validity=CLIENT_VALIDITY)


def b64(data: bytes) -> str:
    """The base64-of-PEM encoding of v1alpha1 configs, secrets.yaml and talosconfig (§2)."""
    return base64.b64encode(data).decode()


def b64decode_strict(text: str) -> bytes:
    """Decode standard base64 the way Go does: no stray characters, correct padding."""
    return base64.b64decode(text.encode(), validate=True)
