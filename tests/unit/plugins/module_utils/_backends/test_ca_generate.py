"""talos_ca_generate's backend: persist first, reuse on rerun, never write in check mode."""

import base64
import json
import os
import shutil

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._backends import ca_generate
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, RotationStateError
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import TalosConfig


@pytest.fixture(name="old_ca", scope="module")
def fixture_old_ca():
    return _pki.generate_ca("talos")


def params(path, old_ca, **overrides):
    values = {"path": str(path), "kind": "talos", "algorithm": None, "validity_hours": 87600, "previous_ca": old_ca.crt.decode(),
              "create": True, "start_new": False, "complete": False, "talosconfig": None, "secrets_file": None, "previous_talosconfig": None,
              "return_key": False}
    values.update(overrides)
    return values


def talosconfig_options(path, **overrides):
    values = {"path": str(path), "context": "sim", "endpoints": ["127.0.0.2"], "nodes": None, "roles": ["os:admin"],
              "trust_previous_ca": True, "validity_hours": 8760}
    values.update(overrides)
    return values


def write_secrets(path, ca):
    def b64(data):
        return base64.b64encode(data).decode()
    path.write_text("cluster:\n    id: abc\n    secret: s3cr3t\n# keep me\ncerts:\n    os:\n        crt: %s\n        key: %s\n" % (b64(ca.crt), b64(ca.key)))


def test_creates_then_reuses(tmp_path, old_ca):
    first = ca_generate.run(params(tmp_path / "talos", old_ca))
    assert first["changed"] and not first["throwaway"]
    assert first["previous_ca_fingerprint"] == _pki.fingerprint(old_ca.crt)
    assert first["ca"]["key_type"] == "ed25519" and first["ca"]["organization"] == ["talos"]
    assert "ca_key" not in first and "PRIVATE KEY" not in repr(first)
    second = ca_generate.run(params(tmp_path / "talos", old_ca))
    assert not second["changed"] and second["ca_fingerprint"] == first["ca_fingerprint"]
    # Generated once, recorded once; the log names fingerprints, never key material.
    audit = open(first["audit_log_path"], encoding="utf-8").read()
    assert [json.loads(line)["event"] for line in audit.splitlines()] == ["ca_generated"]
    assert first["ca_fingerprint"] in audit and "PRIVATE KEY" not in audit


def test_kubernetes_kind_defaults_to_ecdsa(tmp_path):
    old = _pki.generate_ca("kubernetes")
    result = ca_generate.run(params(tmp_path / "k8s", old, kind="kubernetes"))
    assert result["ca"]["key_type"] == "ecdsa-p256" and result["ca"]["organization"] == ["kubernetes"]


def test_check_mode_writes_nothing_in_the_rotation_dir(tmp_path, old_ca):
    result = ca_generate.run(params(tmp_path / "talos", old_ca, talosconfig=talosconfig_options(tmp_path / "tc")), check_mode=True)
    try:
        assert result["changed"] and result["throwaway"]
        assert not os.path.exists(tmp_path / "talos") and not os.path.exists(tmp_path / "tc")
        assert os.path.isfile(result["ca_key_path"]) and not result["path"].startswith(str(tmp_path))
    finally:
        shutil.rmtree(os.path.dirname(result["path"]))


def test_missing_rotation_with_create_false_is_refused(tmp_path, old_ca):
    with pytest.raises(RotationStateError, match="never start over"):
        ca_generate.run(params(tmp_path / "talos", old_ca, create=False))
    assert not os.path.exists(tmp_path / "talos")


@pytest.mark.parametrize("bad,message", [("not a pem", "PEM"), ("", "previous_ca is required")])
def test_bad_previous_ca_changes_nothing(tmp_path, old_ca, bad, message):
    with pytest.raises(Exception, match=message):
        ca_generate.run(params(tmp_path / "talos", old_ca, previous_ca=bad))
    assert not os.path.exists(tmp_path / "talos")


def test_leaf_as_previous_ca_is_refused(tmp_path, old_ca):
    leaf = _pki.issue_client_certificate(old_ca)
    with pytest.raises(Exception, match="leaf|not a CA"):
        ca_generate.run(params(tmp_path / "talos", old_ca, previous_ca=leaf.crt.decode()))


def test_talosconfig_is_issued_from_the_new_ca_and_kept(tmp_path, old_ca):
    options = talosconfig_options(tmp_path / "talosconfig")
    first = ca_generate.run(params(tmp_path / "talos", old_ca, talosconfig=options))
    context = TalosConfig.load(str(tmp_path / "talosconfig")).get_context("sim")
    new_ca = open(first["ca_cert_path"], "rb").read()
    assert _pki.is_issued_by(context.crt, new_ca)
    assert _pki.describe_certificate(context.crt)["organization"] == ["os:admin"]
    assert {_pki.fingerprint(c) for c in _pki.split_pem_certificates(context.ca)} == {first["ca_fingerprint"], first["previous_ca_fingerprint"]}
    assert os.stat(tmp_path / "talosconfig").st_mode & 0o777 == 0o600
    second = ca_generate.run(params(tmp_path / "talos", old_ca, talosconfig=options))
    assert not second["changed"] and TalosConfig.load(str(tmp_path / "talosconfig")).get_context("sim").crt == context.crt
    reader = ca_generate.run(params(tmp_path / "talos", old_ca, talosconfig=dict(options, roles=["os:reader"])))
    assert reader["talosconfig"]["changed"]
    assert _pki.describe_certificate(TalosConfig.load(str(tmp_path / "talosconfig")).get_context("sim").crt)["organization"] == ["os:reader"]


def test_secrets_bundle_updated_with_backup_then_unchanged(tmp_path, old_ca):
    secrets = tmp_path / "secrets.yaml"
    write_secrets(secrets, old_ca)
    before = secrets.read_bytes()
    first = ca_generate.run(params(tmp_path / "talos", old_ca, secrets_file=str(secrets)))
    assert first["secrets_file"]["changed"] and open(first["secrets_file"]["backup"], "rb").read() == before
    text = secrets.read_text()
    assert "# keep me" in text and "secret: s3cr3t" in text
    assert first["ca_fingerprint"] == _pki.fingerprint(base64.b64decode(text.split("crt: ")[1].split()[0]))
    again = ca_generate.run(params(tmp_path / "talos", old_ca, secrets_file=str(secrets)))
    assert not again["secrets_file"]["changed"]


def test_secrets_bundle_of_another_cluster_is_refused(tmp_path, old_ca):
    secrets = tmp_path / "secrets.yaml"
    write_secrets(secrets, _pki.generate_ca("talos"))
    before = secrets.read_bytes()
    with pytest.raises(ConfigError, match="another cluster"):
        ca_generate.run(params(tmp_path / "talos", old_ca, secrets_file=str(secrets)))
    assert secrets.read_bytes() == before


def test_start_new_resumes_a_rotation_in_progress_and_archives_only_a_completed_one(tmp_path, old_ca):
    first = ca_generate.run(params(tmp_path / "talos", old_ca))
    new_ca = open(first["ca_cert_path"]).read()
    # In progress, even with the new CA issuing everywhere (remove not done, credentials not written): resumed, not archived.
    for current in (old_ca.crt.decode(), new_ca):
        resumed = ca_generate.run(params(tmp_path / "talos", old_ca, previous_ca=current, start_new=True))
        assert not resumed["changed"] and resumed["archived"] is None and resumed["ca_fingerprint"] == first["ca_fingerprint"]
        assert "has not completed yet, so this run resumes it" in resumed["warnings"][0]
    # Completion is recorded once, by the step that wrote the credentials; check mode records nothing.
    assert ca_generate.run(params(tmp_path / "talos", old_ca, create=False, complete=True), check_mode=True)["completion"]["changed"]
    assert ca_generate.run(params(tmp_path / "talos", old_ca, create=False))["completed"] is None
    done = ca_generate.run(params(tmp_path / "talos", old_ca, create=False, complete=True))
    assert done["changed"] and done["completed"]
    assert not ca_generate.run(params(tmp_path / "talos", old_ca, create=False, complete=True))["changed"]
    # Completed, but the cluster no longer issues with its CA: someone else rotated since. Nothing is moved.
    with pytest.raises(RotationStateError, match="no longer its new CA"):
        ca_generate.run(params(tmp_path / "talos", old_ca, start_new=True))
    assert os.listdir(tmp_path) == ["talos"]
    second = ca_generate.run(params(tmp_path / "talos", old_ca, previous_ca=new_ca, start_new=True))
    assert second["changed"] and second["archived"] and os.path.isdir(second["archived"]) and second["completed"] is None
    assert second["previous_ca_fingerprint"] == first["ca_fingerprint"] != second["ca_fingerprint"]
    assert json.loads(open(os.path.join(second["archived"], "rotation.json")).read())["completed"] == done["completed"]


def test_return_key_hides_the_whole_result(tmp_path, old_ca):
    result = ca_generate.run(params(tmp_path / "talos", old_ca, return_key=True))
    assert result["_ansible_no_log"] is True and "PRIVATE KEY" in result["ca_key"]
