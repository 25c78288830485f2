"""talos_ca_generate kind=service_account: the new signing key persisted first, reused on rerun, nothing in check mode."""

import os
import shutil

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._backends import ca_generate
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, RotationStateError
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import SecretsBundle

from talos_reference import reference_path  # pylint: disable=import-error


@pytest.fixture(name="old_key", scope="module")
def fixture_old_key():
    return _pki.generate_service_account_key("ecdsa-p256")


def params(path, old_key, **overrides):
    values = {"path": str(path), "kind": "service_account", "algorithm": "ecdsa-p256", "validity_hours": 87600,
              "previous_ca": _pki.public_key_pem(old_key).decode(), "create": True, "start_new": False, "talosconfig": None,
              "secrets_file": None, "previous_talosconfig": None, "return_key": False}
    values.update(overrides)
    return values


def test_generate_then_reuse(tmp_path, old_key):
    path = tmp_path / "rotation" / "service_account"
    first = ca_generate.run(params(path, old_key))
    assert first["changed"] and not first["throwaway"]
    assert first["previous_ca_fingerprint"] == _pki.public_key_fingerprint(old_key)
    assert first["algorithm"] == "ecdsa-p256"
    assert "PRIVATE" not in repr(first)
    second = ca_generate.run(params(path, old_key))
    assert not second["changed"] and second["ca_fingerprint"] == first["ca_fingerprint"]
    with open(first["audit_log_path"], encoding="utf-8") as handle:
        assert '"event": "key_generated"' in handle.read()


def test_check_mode_writes_nothing(tmp_path, old_key):
    path = tmp_path / "rotation" / "service_account"
    result = ca_generate.run(params(path, old_key), check_mode=True)
    assert result["changed"] and result["throwaway"]
    assert not os.path.exists(path)
    shutil.rmtree(os.path.dirname(result["path"]))


def test_refusals(tmp_path, old_key):
    with pytest.raises(RotationStateError, match="previous_ca is required"):
        ca_generate.run(params(tmp_path / "a", old_key, previous_ca=None))
    with pytest.raises(RotationStateError, match="create=false"):
        ca_generate.run(params(tmp_path / "b", old_key, create=False))
    with pytest.raises(ConfigError, match="talosconfig does not apply"):
        ca_generate.run(params(tmp_path / "c", old_key, talosconfig={"path": "x"}))
    with pytest.raises(_pki.UnsupportedKeyError):
        ca_generate.run(params(tmp_path / "d", old_key, algorithm="ed25519"))
    assert not any(os.path.exists(tmp_path / name) for name in "abcd")


def test_secrets_bundle_key_updated_at_the_end(tmp_path):
    secrets = tmp_path / "secrets.yaml"
    shutil.copy(reference_path("secrets.yaml"), secrets)
    os.chmod(secrets, 0o600)
    old_key = SecretsBundle.load(str(secrets)).get_service_account_key()
    before = secrets.read_bytes()
    path = tmp_path / "rotation" / "service_account"
    result = ca_generate.run(params(path, old_key, secrets_file=str(secrets)))
    assert result["secrets_file"]["changed"]
    new_key = SecretsBundle.load(str(secrets)).get_service_account_key()
    assert _pki.public_key_fingerprint(new_key) == result["ca_fingerprint"]
    # Only that line changed; the rest of the bundle (certs.os, k8s, secrets) is as it was.
    changed = [pair for pair in zip(before.splitlines(), secrets.read_bytes().splitlines()) if pair[0] != pair[1]]
    assert len(changed) == 1 and changed[0][0].strip().startswith(b"key:")
    assert not ca_generate.run(params(path, old_key, secrets_file=str(secrets)))["changed"]

    other = tmp_path / "other.yaml"
    shutil.copy(reference_path("secrets.yaml"), other)
    fresh = ca_generate.run(params(tmp_path / "r2", _pki.generate_service_account_key("ecdsa-p256")))
    with pytest.raises(ConfigError, match="belongs to another cluster"):
        ca_generate.run(params(fresh["path"], old_key, secrets_file=str(other)))


def test_previous_key_as_hex_der_from_cluster_info(tmp_path, old_key):
    result = ca_generate.run(params(tmp_path / "sa", old_key, previous_ca=_pki.public_key_hex(old_key)))
    assert result["previous_ca_fingerprint"] == _pki.public_key_fingerprint(old_key)
    with pytest.raises(_pki.NotPEMError, match="neither PEM nor the hex"):
        ca_generate.run(params(tmp_path / "bad", old_key, previous_ca="zz-not-hex"))
