"""KubeAPI with a service-account bearer token: the token is a request header, never a file; the server is still
verified through the in-memory TLS context; no client certificate is loaded or presented with it."""

import ssl
import tempfile

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import KubeCredentials
from ansible_collections.talosops.pki.plugins.module_utils._kubernetes import KubeAPI

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDpjaSJ9.c2lnbmF0dXJl"


@pytest.fixture(name="credentials", scope="module")
def fixture_credentials():
    ca = _pki.generate_ca("kubernetes")
    other = _pki.generate_ca("kubernetes")
    # A client key that does not match the certificate: loading the pair would fail, so the token path must not load it.
    return KubeCredentials("admin@c", "c", "admin", "https://10.5.0.2:6443", ca.crt, ca.crt, other.key, None)


def test_a_bearer_token_writes_nothing_to_tmpdir_and_is_sent_as_a_header(credentials, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with KubeAPI(credentials, token=TOKEN) as api:
        assert list(tmp_path.iterdir()) == []
        assert api._headers["Authorization"] == "Bearer " + TOKEN  # pylint: disable=protected-access
        pool_options = api._pool.connection_pool_kw  # pylint: disable=protected-access
        assert "cert_file" not in pool_options and "key_file" not in pool_options and "ca_certs" not in pool_options
        context = pool_options["ssl_context"]
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert list(tmp_path.iterdir()) == []
