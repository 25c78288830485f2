"""SSL contexts for the simulated apid: mutual TLS >= 1.2, ALPN h2, any key type OpenSSL 3 knows.

`ssl.SSLContext.load_cert_chain` only reads files, so key material goes through a private
0700 directory that is removed right after loading (TALOS-FACTS.md §1).
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile

from . import pki


def _load_chain(context: ssl.SSLContext, cert_key: pki.CertKey) -> None:
    folder = tempfile.mkdtemp(prefix="talos-sim-")
    try:
        os.chmod(folder, 0o700)
        cert_path, key_path = os.path.join(folder, "crt.pem"), os.path.join(folder, "key.pem")
        with open(cert_path, "wb") as handle:
            handle.write(cert_key.cert_pem)
        with open(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
            handle.write(pki.pkcs8_pem(cert_key.key))
        context.load_cert_chain(cert_path, key_path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _bundle(pems) -> str:
    return "".join(pem.decode() if pem.endswith(b"\n") else pem.decode() + "\n" for pem in pems)


def server_context(certificate: pki.CertKey, client_ca_pems) -> ssl.SSLContext:
    """apid's server side: present `certificate`, require a client cert from `client_ca_pems`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])
    # No session resumption: every connection is verified against the trust of its moment.
    context.options |= ssl.OP_NO_TICKET
    context.num_tickets = 0
    _load_chain(context, certificate)
    context.load_verify_locations(cadata=_bundle(client_ca_pems))
    return context


def client_context(certificate: pki.CertKey, server_ca_pems) -> ssl.SSLContext:
    """A client presenting `certificate` and trusting servers issued by `server_ca_pems`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    _load_chain(context, certificate)
    context.load_verify_locations(cadata=_bundle(server_ca_pems))
    return context
