"""The rotation's admin talosconfig (rotate_ca_dir/talos/talosconfig) as its own step, through talos_talosconfig with
trust_previous_ca: a client certificate from the new CA, trusting the old and the new server CA; 0600, sealed under a vault
secret, recorded in the audit log, kept on a rerun, and kept as it is when talos_ca_generate wrote it (a rotation started by
an older version)."""

import base64
import json
import os

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _files, _pki, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._backends import ca_generate, talosconfig
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import TalosConfig


@pytest.fixture(name="old_ca", scope="module")
def fixture_old_ca():
    return _pki.generate_ca("talos")


@pytest.fixture(name="rotation")
def fixture_rotation(tmp_path, old_ca):
    return _rotation_store.create(str(tmp_path / "rotation" / "talos"), "talos", old_ca.crt, _pki.generate_ca("talos"))


def params(path, rotation, **overrides):
    values = {name: spec.get("default") for name, spec in talosconfig.ARGUMENT_SPEC.items()}
    values.update(path=str(path), ca_dir=rotation.path, context="prod", endpoints=["10.5.0.2"], trust_previous_ca=True)
    values.update(overrides)
    return values


def events(rotation):
    path = rotation.file(_rotation_store.AUDIT_LOG)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["event"] for line in handle]


def test_the_admin_talosconfig_trusts_both_server_cas_and_is_kept_on_a_rerun(tmp_path, rotation, old_ca):
    path = tmp_path / "rotation" / "talos" / "talosconfig"
    first = talosconfig.run(params(path, rotation))
    context = TalosConfig.load(str(path)).get_context("prod")
    assert _pki.is_issued_by(context.crt, rotation.ca_cert())
    assert _pki.describe_certificate(context.crt)["organization"] == ["os:admin"]
    # The new CA first, then the one it replaces: either may serve a node until the rotation ends.
    bundle = [_pki.fingerprint(crt) for crt in _pki.split_pem_certificates(context.ca)]
    assert bundle == [rotation.ca_fingerprint, _pki.fingerprint(old_ca.crt)]
    assert first["contexts"][0]["ca_fingerprints"] == [rotation.ca_fingerprint, rotation.previous_ca_fingerprint]
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert events(rotation) == ["talosconfig_written"]
    before = path.read_bytes()
    again = talosconfig.run(params(path, rotation))
    assert not again["changed"] and path.read_bytes() == before and events(rotation) == ["talosconfig_written"]


def test_a_talosconfig_written_by_talos_ca_generate_is_kept_as_it_is(tmp_path, rotation, old_ca):
    """A rotation started by a version that wrote the admin talosconfig in talos_ca_generate: the new step keeps it."""
    path = tmp_path / "rotation" / "talos" / "talosconfig"
    ca_generate.run({"path": rotation.path, "kind": "talos", "algorithm": None, "validity_hours": 87600,
                     "previous_ca": old_ca.crt.decode(), "create": False, "start_new": False, "complete": False,
                     "talosconfig": {"path": str(path), "context": "prod", "endpoints": ["10.5.0.2"], "nodes": None,
                                     "roles": ["os:admin"], "trust_previous_ca": True, "validity_hours": 8760},
                     "secrets_file": None, "previous_talosconfig": None, "return_key": False})
    before = path.read_bytes()
    result = talosconfig.run(params(path, rotation))
    assert not result["changed"] and result["contexts"][0]["action"] == "kept" and path.read_bytes() == before


def test_a_context_that_trusts_the_new_ca_alone_gets_both_keeping_its_certificate(tmp_path, rotation):
    path = tmp_path / "talosconfig"
    alone = talosconfig.run(params(path, rotation, trust_previous_ca=False))
    assert alone["contexts"][0]["ca_fingerprints"] == [rotation.ca_fingerprint]
    both = talosconfig.run(params(path, rotation))
    assert both["changed"] and both["contexts"][0]["action"] == "updated"
    assert "the CA and the CA it replaces" in both["contexts"][0]["reason"]
    assert both["contexts"][0]["client_certificate"]["fingerprint_sha256"] == \
        alone["contexts"][0]["client_certificate"]["fingerprint_sha256"]


def test_check_mode_writes_nothing_and_records_nothing(tmp_path, rotation):
    path = tmp_path / "rotation" / "talos" / "talosconfig"
    result = talosconfig.run(params(path, rotation), check_mode=True)
    assert result["changed"] and not path.exists() and events(rotation) == []
    assert result["contexts"][0]["ca_fingerprints"] == [rotation.ca_fingerprint, rotation.previous_ca_fingerprint]


def test_under_a_vault_secret_the_file_is_sealed(tmp_path, rotation):
    def seal(data):
        return b"$ANSIBLE_VAULT;1.1;AES256\n" + base64.b64encode(data)

    def unseal(data):
        return base64.b64decode(data.split(b"\n", 1)[1])

    path = tmp_path / "rotation" / "talos" / "talosconfig"
    sealing = _files.Sealing(str(tmp_path / "rotation"), seal, unseal)
    talosconfig.run(params(path, rotation), sealing=sealing)
    assert TalosConfig.load(str(path), sealing=sealing).get_context("prod").endpoints == ("10.5.0.2",)
    assert path.read_bytes().startswith(_files.VAULT_HEADER) and b"PRIVATE KEY" not in path.read_bytes()


def test_trusting_the_previous_ca_needs_a_rotation_directory(tmp_path, old_ca):
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("certs:\n    os:\n        crt: %s\n        key: %s\n" % (
        base64.b64encode(old_ca.crt).decode(), base64.b64encode(old_ca.key).decode()))
    with pytest.raises(ConfigError, match="trust_previous_ca needs ca_dir"):
        talosconfig.run({name: spec.get("default") for name, spec in talosconfig.ARGUMENT_SPEC.items()}
                        | {"path": str(tmp_path / "talosconfig"), "secrets_file": str(secrets), "context": "prod",
                           "endpoints": ["10.5.0.2"], "trust_previous_ca": True})
    assert not (tmp_path / "talosconfig").exists()
