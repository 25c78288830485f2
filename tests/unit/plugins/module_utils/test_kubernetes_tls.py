"""KubeAPI's TLS material: a CA or client pair that cannot be loaded is a clear error before any request, and loading
the pair writes nothing to $TMPDIR."""

import tempfile

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import KubeCredentials
from ansible_collections.talosops.pki.plugins.module_utils._kubernetes import KubeAPI


@pytest.fixture(name="credentials", scope="module")
def fixture_credentials():
    ca = _pki.generate_ca("kubernetes")
    other = _pki.generate_ca("kubernetes")
    return KubeCredentials("admin@c", "c", "admin", "https://10.5.0.2:6443", ca.crt, ca.crt, ca.key, None), other


def test_a_usable_pair_is_loaded_without_a_file_in_tmpdir(credentials, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with KubeAPI(credentials[0]) as api:
        assert api.server == "https://10.5.0.2:6443"
        assert list(tmp_path.iterdir()) == []


def test_a_key_of_another_certificate_is_refused_before_any_request(credentials):
    good, other = credentials
    with pytest.raises(ConfigError, match="client certificate and key cannot be used together .* same kubeconfig user"):
        with KubeAPI(good._replace(key=other.key)):
            pass


def test_a_server_ca_that_is_not_pem_is_refused_before_any_request(credentials):
    with pytest.raises(ConfigError, match="the CA to verify the API server https://10.5.0.2:6443 with is not PEM certificate data"):
        with KubeAPI(credentials[0], server_ca=b"not a certificate"):
            pass
