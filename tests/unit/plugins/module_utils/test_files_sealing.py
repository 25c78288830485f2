"""Encryption at rest: what is written under the sealed folder is vault-encrypted, and read back in clear."""

import json
import os

import pytest
from ansible.parsing.vault import VaultLib, VaultSecret

from ansible_collections.talosops.pki.plugins.module_utils import _files, _pki, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError

KEY_PEM = b"-----BEGIN ED25519 PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIOr8aQ3Z\n-----END ED25519 PRIVATE KEY-----\n"


@pytest.fixture(name="vault")
def fixture_vault():
    return VaultLib([("default", VaultSecret(b"correct horse battery staple"))])


def sealing(vault, folder):
    return _files.Sealing(str(folder), vault.encrypt, vault.decrypt)


def test_files_under_the_folder_are_encrypted_and_read_back(tmp_path, vault):
    sealed_dir, plain_dir = tmp_path / "rotation", tmp_path / "elsewhere"
    sealed_dir.mkdir()
    plain_dir.mkdir()
    active = sealing(vault, sealed_dir)
    _files.atomic_write(str(sealed_dir / "ca.key"), KEY_PEM, sealing=active)
    _files.atomic_write(str(plain_dir / "talosconfig"), b"context: sim\n", sealing=active)
    assert _files.read_bytes(str(sealed_dir / "ca.key"), "key", sealing=active) == KEY_PEM
    stored = (sealed_dir / "ca.key").read_bytes()
    assert stored.startswith(b"$ANSIBLE_VAULT;1.1;AES256") and b"PRIVATE KEY" not in stored
    assert os.stat(sealed_dir / "ca.key").st_mode & 0o777 == 0o600
    assert (plain_dir / "talosconfig").read_bytes() == b"context: sim\n"  # outside the folder: in clear


def test_an_encrypted_file_without_the_secret_is_a_clear_error(tmp_path, vault):
    _files.atomic_write(str(tmp_path / "ca.key"), KEY_PEM, sealing=sealing(vault, tmp_path))
    for without in (None, _files.Sealing()):
        with pytest.raises(ConfigError, match="encrypted with ansible-vault and no vault secret is loaded: give the vault password"):
            _files.read_bytes(str(tmp_path / "ca.key"), "key", sealing=without)
    other = VaultLib([("default", VaultSecret(b"another password"))])
    with pytest.raises(ConfigError, match="cannot decrypt .* give the vault password the rotation was started with"):
        _files.read_bytes(str(tmp_path / "ca.key"), "key", sealing=_files.Sealing(None, None, other.decrypt))


def test_a_whole_rotation_directory_is_encrypted_audit_lines_included(tmp_path, vault):
    old, new = _pki.generate_ca("talos"), _pki.generate_ca("talos")
    path = str(tmp_path / "rotation" / "talos")
    active = sealing(vault, tmp_path / "rotation")
    rotation = _rotation_store.create(path, "talos", old.crt, new, sealing=active)
    rotation.record("node_patched", node="10.5.0.2", phase="accept")
    loaded = _rotation_store.load(path, kind="talos", sealing=active)
    assert loaded.ca() == new and loaded.ca_fingerprint == _pki.fingerprint(new.crt)
    assert [entry["node"] for entry in loaded.entries()] == ["10.5.0.2"]
    for name in os.listdir(path):
        stored = open(os.path.join(path, name), "rb").read()
        if name == _rotation_store.AUDIT_LOG:
            (entry,) = [json.loads(line) for line in stored.splitlines()]
            assert list(entry) == ["vault"]
            assert json.loads(vault.decrypt(entry["vault"]))["node"] == "10.5.0.2"
        else:
            assert stored.startswith(b"$ANSIBLE_VAULT;"), name
            assert new.crt.split(b"\n")[1] not in stored and b"talos" not in stored, name
    # Without the sealing, a later run without the secret is told what to do.
    with pytest.raises(ConfigError, match="no vault secret is loaded"):
        _rotation_store.load(path, kind="talos")


def test_without_a_sealing_nothing_is_sealed(tmp_path, vault):
    sealing(vault, tmp_path)  # built, never given: it must change nothing
    _files.atomic_write(str(tmp_path / "after"), b"clear")
    _files.append_line(str(tmp_path / "log"), b'{"event": "x"}')
    assert (tmp_path / "after").read_bytes() == b"clear"
    assert (tmp_path / "log").read_bytes() == b'{"event": "x"}\n'
