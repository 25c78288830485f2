"""KubeServiceAccountConfig (Talos v1.14+): reading the service-account keys and editing only them."""

import pytest
import yaml as pyyaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import (
    LOCATION_LEGACY_SERVICE_ACCOUNT,
    LOCATION_SERVICE_ACCOUNT_CONFIG,
    MachineConfig,
)

from talos_reference import reference_path  # pylint: disable=import-error


def _read(name):
    with open(reference_path(*name.split("/")), "rb") as handle:
        return handle.read()


def _rsa():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    return private, _public(key)


def _public(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _sa_document(data):
    return next(doc for doc in pyyaml.safe_load_all(data) if doc and doc.get("kind") == LOCATION_SERVICE_ACCOUNT_CONFIG)


def _without_sa(data):
    return [doc for doc in pyyaml.safe_load_all(data) if doc and doc.get("kind") != LOCATION_SERVICE_ACCOUNT_CONFIG]


def test_locations_per_version():
    assert MachineConfig.parse(_read("machineconfig-v1.15/base-controlplane.yaml")).service_account_location \
        == LOCATION_SERVICE_ACCOUNT_CONFIG
    assert MachineConfig.parse(_read("machineconfig-v1.13/base-controlplane.yaml")).service_account_location \
        == LOCATION_LEGACY_SERVICE_ACCOUNT
    assert MachineConfig.parse(_read("machineconfig-v1.15/base-worker.yaml")).service_account_location is None
    assert MachineConfig.parse(_read("machineconfig-v1.13/base-controlplane.yaml")).get_service_account() is None


def test_reads_the_reference_signing_key():
    data = _read("machineconfig-v1.15/base-controlplane.yaml")
    fields = MachineConfig.parse(data).get_service_account()
    assert fields.signing_key.decode() == _sa_document(data)["issuer"]["privateKey"]
    assert fields.accepted == ()


def test_graceful_phases_edit_only_the_service_account_keys():
    data = _read("machineconfig-v1.15/base-controlplane.yaml")
    config = MachineConfig.parse(data)
    old_key = config.get_service_account().signing_key
    old_public = _public(serialization.load_pem_private_key(old_key, None))
    new_key, new_public = _rsa()

    assert config.set_service_account(old_key, [new_public])  # accept
    assert _without_sa(config.to_bytes()) == _without_sa(data)
    document = _sa_document(config.to_bytes())
    assert document["accepted"] == {"publicKeys": [new_public.decode()]}
    assert document["issuer"]["issuerURL"] == "https://base:6443"
    assert not config.set_service_account(old_key, [new_public])  # rerun: nothing to write

    assert config.set_service_account(new_key, [old_public])  # swap
    document = _sa_document(config.to_bytes())
    assert document["issuer"]["privateKey"] == new_key.decode()
    assert document["accepted"]["publicKeys"] == [old_public.decode()]

    assert config.set_service_account(new_key, [])  # remove: the empty list goes, as Talos omits it
    assert "accepted" not in _sa_document(config.to_bytes())
    assert _without_sa(config.to_bytes()) == _without_sa(data)
    assert MachineConfig.parse(config.to_bytes()).get_service_account().signing_key == new_key


def test_accepted_issuers_and_audiences_survive_the_remove():
    data = _read("machineconfig-v1.15/base-controlplane.yaml").replace(
        b"    issuerURL: https://base:6443\n",
        b"    issuerURL: https://base:6443\naccepted:\n    issuers:\n        - https://old:6443\n")
    config = MachineConfig.parse(data)
    key = config.get_service_account().signing_key
    _new_key, new_public = _rsa()
    assert config.set_service_account(key, [new_public])
    expected = {"publicKeys": [new_public.decode()], "issuers": ["https://old:6443"]}
    assert _sa_document(config.to_bytes())["accepted"] == expected
    assert config.set_service_account(key, [])
    assert _sa_document(config.to_bytes())["accepted"] == {"issuers": ["https://old:6443"]}


def test_refusals():
    legacy = MachineConfig.parse(_read("machineconfig-v1.13/base-controlplane.yaml"), source="cp-1 (10.5.0.2)")
    _key, public = _rsa()
    with pytest.raises(ConfigError, match=r"cp-1 \(10.5.0.2\) has no KubeServiceAccountConfig.*v1.14\+"):
        legacy.set_service_account(_key, [public])
    config = MachineConfig.parse(_read("machineconfig-v1.15/base-controlplane.yaml"))
    key = config.get_service_account().signing_key
    with pytest.raises(ConfigError, match="PUBLIC KEY"):
        config.set_service_account(key, [key])  # a private key where a public one belongs
    with pytest.raises(ConfigError, match="signing key"):
        config.set_service_account(None, [public])
    ec_private = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    bad = _read("machineconfig-v1.15/base-controlplane.yaml").replace(
        b"    issuerURL: https://base:6443\n", b"    issuerURL: https://base:6443\naccepted:\n    publicKeys:\n        - |\n"
        + b"".join(b"            " + line + b"\n" for line in ec_private.splitlines()))
    with pytest.raises(ConfigError, match=r"accepted.publicKeys\[0\].*PUBLIC KEY"):
        MachineConfig.parse(bad).get_service_account()
