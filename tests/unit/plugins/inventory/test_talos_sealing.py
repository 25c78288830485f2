"""The inventory plugin reads a vault-encrypted rotation folder with the vault secrets given to the run, and writes nothing."""

import os
import types

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.parsing.vault import VaultLib, VaultSecret

from ansible_collections.talosops.pki.plugins.inventory import talos
from ansible_collections.talosops.pki.plugins.module_utils import _files, _pki, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._client import Credentials
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError

PASSWORD = b"the rotation's vault password"
TALOSCONFIG_CA = b"-----BEGIN CERTIFICATE-----\ntalosconfig CA\n-----END CERTIFICATE-----\n"


@pytest.fixture(name="sealed_rotation")
def fixture_sealed_rotation(tmp_path):
    """A Talos API CA rotation folder written under a vault secret: (folder given to the plugin, old CA, new CA)."""
    vault = VaultLib([("default", VaultSecret(PASSWORD))])
    old, new = _pki.generate_ca("talos"), _pki.generate_ca("talos")
    folder = tmp_path / "rotation"
    _rotation_store.create(str(folder / "talos"), "talos", old.crt, new,
                           sealing=_files.Sealing(str(folder), vault.encrypt, vault.decrypt))
    with open(os.path.join(folder, "talos", _rotation_store.CA_CERT), "rb") as handle:
        assert handle.read().startswith(_files.VAULT_HEADER)
    return str(folder), old, new


def trust(monkeypatch, folder, secrets):
    """The server CA bundle the plugin's target trusts after _trust_rotation, with `secrets` loaded in its DataLoader."""
    plugin = talos.InventoryModule()
    options = {"rotation_dir": folder, "server_ca": None}
    monkeypatch.setattr(plugin, "get_option", options.__getitem__)
    plugin.loader = DataLoader()
    plugin.loader.set_vault_secrets(secrets)
    target = types.SimpleNamespace(credentials=Credentials(ca=TALOSCONFIG_CA, crt=b"crt", key=b"key"))
    plugin._trust_rotation(target)  # pylint: disable=protected-access
    return target.credentials.ca


def test_an_encrypted_rotation_is_trusted_with_the_vault_secret(monkeypatch, sealed_rotation):
    folder, old, new = sealed_rotation
    before = {name: os.stat(os.path.join(folder, "talos", name)).st_mtime_ns for name in os.listdir(os.path.join(folder, "talos"))}
    bundle = trust(monkeypatch, folder, [("default", VaultSecret(PASSWORD))])
    assert bundle == TALOSCONFIG_CA + old.crt + new.crt
    after = {name: os.stat(os.path.join(folder, "talos", name)).st_mtime_ns for name in os.listdir(os.path.join(folder, "talos"))}
    assert after == before  # read only


def test_without_the_vault_secret_the_plugin_says_what_to_give(monkeypatch, sealed_rotation):
    folder, _old, _new = sealed_rotation
    with pytest.raises(ConfigError, match="encrypted with ansible-vault and no vault secret is loaded: give the vault password"):
        trust(monkeypatch, folder, [])
