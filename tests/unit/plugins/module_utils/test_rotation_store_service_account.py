"""The rotation directory of a service-account key rotation: the new key on disk (0600, sealed) before any node sees it."""

import json
import os

import pytest
from ansible.parsing.vault import VaultLib, VaultSecret

from ansible_collections.talosops.pki.plugins.module_utils import _files, _pki, _rotation_store as store
from ansible_collections.talosops.pki.plugins.module_utils._errors import RotationStateError


@pytest.fixture(name="keys", scope="module")
def fixture_keys():
    # ECDSA keeps the test fast; the RSA default is covered by test_generate_rsa_4096_by_default.
    return _pki.generate_service_account_key("ecdsa-p256"), _pki.generate_service_account_key("ecdsa-p256")


def test_create_then_load_round_trip(tmp_path, keys):
    old, new = keys
    path = str(tmp_path / "rotation" / store.KIND_SERVICE_ACCOUNT)
    created = store.create_service_account(path, _pki.public_key_pem(old), new)
    loaded = store.load(path, kind=store.KIND_SERVICE_ACCOUNT)
    assert loaded.ca_fingerprint == created.ca_fingerprint == _pki.public_key_fingerprint(new)
    assert loaded.previous_ca_fingerprint == _pki.public_key_fingerprint(old)
    assert loaded.signing_key() == new
    assert loaded.public_key() == _pki.public_key_pem(new)
    assert loaded.previous_public_key() == _pki.public_key_pem(old)
    facts = json.dumps(loaded.facts())
    assert "PRIVATE KEY" not in facts and "PUBLIC KEY" not in facts
    assert sorted(os.listdir(path)) == ["previous-sa.pub", "rotation.json", "sa.key", "sa.pub"]
    for name in os.listdir(path):
        assert os.stat(os.path.join(path, name)).st_mode & 0o777 == 0o600, name
    # The rotation folder accepts the new kind's folder.
    store.check_rotation_folder(str(tmp_path / "rotation"))


def test_the_previous_key_may_be_given_as_its_private_key_without_storing_it(tmp_path, keys):
    old, new = keys
    path = str(tmp_path / store.KIND_SERVICE_ACCOUNT)
    store.create_service_account(path, old, new)
    for name in os.listdir(path):
        with open(os.path.join(path, name), "rb") as handle:
            assert old not in handle.read()


def test_an_altered_key_is_refused(tmp_path, keys):
    old, new = keys
    path = str(tmp_path / store.KIND_SERVICE_ACCOUNT)
    rotation = store.create_service_account(path, old, new)
    os.chmod(rotation.file(store.SA_KEY), 0o600)
    with open(rotation.file(store.SA_KEY), "wb") as handle:
        handle.write(old)
    with pytest.raises(RotationStateError, match="sa.key does not match"):
        store.load(path).signing_key()


def test_a_kind_mismatch_is_refused(tmp_path, keys):
    path = str(tmp_path / store.KIND_SERVICE_ACCOUNT)
    store.create_service_account(path, keys[0], keys[1])
    with pytest.raises(RotationStateError, match="holds a service_account CA rotation, not a kubernetes one"):
        store.load(path, kind="kubernetes")


def test_the_key_is_vault_encrypted_when_a_secret_is_loaded(tmp_path, keys):
    vault = VaultLib([("default", VaultSecret(b"test-password"))])
    path = str(tmp_path / "rotation" / store.KIND_SERVICE_ACCOUNT)
    sealing = _files.Sealing(str(tmp_path / "rotation"), vault.encrypt, vault.decrypt)
    store.create_service_account(path, keys[0], keys[1], sealing=sealing)
    assert store.load(path, sealing=sealing).signing_key() == keys[1]
    with open(os.path.join(path, store.SA_KEY), "rb") as handle:
        sealed = handle.read()
    assert sealed.startswith(b"$ANSIBLE_VAULT") and b"PRIVATE KEY" not in sealed


def test_generate_rsa_4096_by_default():
    key = _pki.generate_service_account_key()
    assert key.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert _pki.key_type(key) == "rsa-4096"
    with pytest.raises(_pki.UnsupportedKeyError, match="ed25519"):
        _pki.generate_service_account_key("ed25519")
