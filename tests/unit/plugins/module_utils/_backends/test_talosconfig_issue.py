"""talos_talosconfig's backend, without a node: issue, keep, reissue keeping roles, refuse bad input, never leak keys."""

import base64
import datetime
import os
import stat

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._backends import talosconfig
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import TalosConfig, TalosContext


@pytest.fixture(name="old_ca", scope="module")
def fixture_old_ca():
    return _pki.generate_ca("talos")


@pytest.fixture(name="rotation")
def fixture_rotation(tmp_path, old_ca):
    """A Talos API CA rotation directory: new CA (with key), previous CA certificate."""
    return _rotation_store.create(str(tmp_path / "rotation" / "talos"), "talos", old_ca.crt, _pki.generate_ca("talos"))


def params(path, **overrides):
    values = {"path": str(path), "ca_dir": None, "secrets_file": None, "reissue": False, "context": None, "name": None,
              "roles": None, "validity_hours": 8760, "endpoints": None, "nodes": None, "make_current": True, "backup": False,
              "encrypt_dir": None, "encrypt": "auto"}
    values.update(overrides)
    return values


def context_of(path, name):
    return TalosConfig.load(str(path)).get_context(name)


def organizations(context):
    return _pki.describe_certificate(context.crt)["organization"]


def assert_no_key(value):
    text = repr(value)
    assert "PRIVATE KEY" not in text
    for line in text.split("\\n"):
        assert not line.startswith("MC4CAQAw"), "a base64 key body leaked"


def old_talosconfig(path, old_ca, contexts):
    """A talosconfig of users whose certificates come from the old CA: {name: roles}."""
    document = None
    for name, roles in contexts.items():
        issued = _pki.issue_client_certificate(old_ca, roles=roles)
        context = TalosContext(name, ("10.5.0.2", "10.5.0.3"), ("10.5.0.4",), old_ca.crt, issued.crt, issued.key)
        if document is None:
            document = TalosConfig.new(context)
        else:
            document.set_context(context, make_current=False)
    document.save(str(path))
    return path


# --- issue ------------------------------------------------------------------------------------

@pytest.mark.parametrize("roles", [["os:admin"], ["os:reader"], ["os:operator", "os:etcd:backup"]])
def test_issues_a_user_context_with_its_roles_as_organizations(tmp_path, rotation, roles):
    path = tmp_path / "alice" / "talosconfig"
    result = talosconfig.run(params(path, ca_dir=rotation.path, name="alice", roles=roles, endpoints=["10.5.0.2"],
                                    nodes=["10.5.0.3"], validity_hours=48), diff=True)
    assert result["changed"] and result["contexts"][0]["action"] == "issued"
    context = context_of(path, "alice")
    facts = _pki.describe_certificate(context.crt)
    assert facts["organization"] == roles and facts["common_name"] == "alice"
    assert facts["extended_key_usage"] == ["client_auth"] and facts["key_type"] == "ed25519"
    assert _pki.is_issued_by(context.crt, rotation.ca().crt)
    assert [_pki.fingerprint(crt) for crt in _pki.split_pem_certificates(context.ca)] == [rotation.ca_fingerprint]
    assert context.endpoints == ("10.5.0.2",) and context.nodes == ("10.5.0.3",)
    not_after = datetime.datetime.strptime(facts["not_after"], "%Y-%m-%dT%H:%M:%SZ")
    not_before = datetime.datetime.strptime(facts["not_before"], "%Y-%m-%dT%H:%M:%SZ")
    assert not_after - not_before == datetime.timedelta(hours=48)
    assert TalosConfig.load(str(path)).current_context_name == "alice"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert result["contexts"][0]["client_certificate"]["roles"] == roles
    assert result["diff"]["before"] == {"alice": None}
    assert result["diff"]["after"]["alice"]["client_certificate"]["fingerprint_sha256"] == facts["fingerprint_sha256"]
    assert_no_key(result)


def test_rerun_keeps_the_file_and_a_change_of_roles_reissues(tmp_path, rotation):
    path = tmp_path / "talosconfig"
    first = talosconfig.run(params(path, ca_dir=rotation.path, context="ops", roles=["os:operator"], endpoints=["10.5.0.2"]))
    before = path.read_bytes()
    again = talosconfig.run(params(path, ca_dir=rotation.path, context="ops", roles=["os:operator"], endpoints=["10.5.0.2"]))
    assert not again["changed"] and again["contexts"][0]["action"] == "kept" and path.read_bytes() == before
    assert again["contexts"][0]["client_certificate"]["fingerprint_sha256"] == first["contexts"][0]["client_certificate"]["fingerprint_sha256"]
    changed = talosconfig.run(params(path, ca_dir=rotation.path, context="ops", roles=["os:reader"], endpoints=["10.5.0.2"]))
    assert changed["changed"] and changed["contexts"][0]["action"] == "reissued" and "roles differ" in changed["contexts"][0]["reason"]
    assert organizations(context_of(path, "ops")) == ["os:reader"]


def test_new_endpoints_keep_the_certificate(tmp_path, rotation):
    path = tmp_path / "talosconfig"
    first = talosconfig.run(params(path, ca_dir=rotation.path, context="ops", endpoints=["10.5.0.2"]))
    moved = talosconfig.run(params(path, ca_dir=rotation.path, context="ops", endpoints=["10.5.0.9"]))
    assert moved["changed"] and moved["contexts"][0]["action"] == "updated"
    assert context_of(path, "ops").endpoints == ("10.5.0.9",)
    assert moved["contexts"][0]["client_certificate"]["fingerprint_sha256"] == first["contexts"][0]["client_certificate"]["fingerprint_sha256"]


def test_near_expiry_is_renewed(tmp_path, rotation):
    path = tmp_path / "talosconfig"
    talosconfig.run(params(path, ca_dir=rotation.path, context="ops", endpoints=["10.5.0.2"], validity_hours=48))
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=30)
    kept = talosconfig.run(params(path, ca_dir=rotation.path, context="ops", endpoints=["10.5.0.2"], validity_hours=48), now=soon)
    assert not kept["changed"]  # 18 of 48 hours left: more than a fifth
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=40)
    renewed = talosconfig.run(params(path, ca_dir=rotation.path, context="ops", endpoints=["10.5.0.2"], validity_hours=48), now=later)
    assert renewed["changed"] and "expires" in renewed["contexts"][0]["reason"]


def test_check_mode_writes_nothing_and_says_what_it_would_issue(tmp_path, rotation):
    path = tmp_path / "talosconfig"
    result = talosconfig.run(params(path, ca_dir=rotation.path, context="ops", roles=["os:reader"], endpoints=["10.5.0.2"]),
                             check_mode=True, diff=True)
    assert result["changed"] and not path.exists()
    planned = result["contexts"][0]["client_certificate"]
    assert planned["roles"] == ["os:reader"] and planned["fingerprint_sha256"] is None and planned["not_after"]
    assert result["summary"] == ["%s context ops: would be issued, roles os:reader, expires %s" % (path, planned["not_after"])]
    assert_no_key(result)


def test_other_contexts_keep_their_bytes_and_a_backup_is_kept(tmp_path, rotation, old_ca):
    path = old_talosconfig(tmp_path / "talosconfig", old_ca, {"other": ["os:admin"]})
    before = path.read_bytes()
    result = talosconfig.run(params(path, ca_dir=rotation.path, context="ops", endpoints=["10.5.0.2"], make_current=False,
                                    backup=True))
    assert open(result["backup"], "rb").read() == before and stat.S_IMODE(os.stat(result["backup"]).st_mode) == 0o600
    document = TalosConfig.load(str(path))
    assert document.context_names == ("other", "ops") and document.current_context_name == "other"
    assert document.get_context("other") == TalosConfig.parse(before).get_context("other")


def test_from_a_secrets_file(tmp_path):
    ca = _pki.generate_ca("talos")
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("certs:\n    os:\n        crt: %s\n        key: %s\n" % (
        base64.b64encode(ca.crt).decode(), base64.b64encode(ca.key).decode()))
    path = tmp_path / "talosconfig"
    talosconfig.run(params(path, secrets_file=str(secrets), context="ops", endpoints=["10.5.0.2"]))
    assert _pki.is_issued_by(context_of(path, "ops").crt, ca.crt)


# --- refusals ---------------------------------------------------------------------------------

@pytest.mark.parametrize("roles, word", [(["os:root"], "os:root"), (["os:impersonator"], "os:impersonator"), ([], "(none)")])
def test_unknown_roles_are_refused(tmp_path, rotation, roles, word):
    path = tmp_path / "talosconfig"
    with pytest.raises(ConfigError, match="not a Talos role") as refused:
        talosconfig.run(params(path, ca_dir=rotation.path, context="ops", roles=roles, endpoints=["10.5.0.2"]))
    assert word in str(refused.value) and not path.exists()


def test_a_lifetime_beyond_the_ca_is_refused(tmp_path, old_ca):
    short = _rotation_store.create(str(tmp_path / "r" / "talos"), "talos", old_ca.crt, _pki.generate_ca("talos", validity_hours=100))
    path = tmp_path / "talosconfig"
    with pytest.raises(ConfigError, match="outlive the CA") as refused:
        talosconfig.run(params(path, ca_dir=short.path, context="ops", endpoints=["10.5.0.2"], validity_hours=200))
    assert "at most 99 hours" in str(refused.value) or "at most 100 hours" in str(refused.value)
    assert not path.exists()


def test_a_ca_without_its_key_is_refused(tmp_path):
    ca = _pki.generate_ca("talos")
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("certs:\n    os:\n        crt: %s\n        key: \"\"\n" % base64.b64encode(ca.crt).decode())
    with pytest.raises(ConfigError, match="private key"):
        talosconfig.run(params(tmp_path / "talosconfig", secrets_file=str(secrets), context="ops", endpoints=["10.5.0.2"]))


def test_a_new_context_needs_endpoints(tmp_path, rotation):
    with pytest.raises(ConfigError, match="endpoints are required"):
        talosconfig.run(params(tmp_path / "talosconfig", ca_dir=rotation.path, context="ops"))


def test_a_ca_dir_that_is_not_a_rotation_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="holds no Talos API CA rotation"):
        talosconfig.run(params(tmp_path / "talosconfig", ca_dir=str(tmp_path / "none"), context="ops", endpoints=["10.5.0.2"]))


# --- reissue ----------------------------------------------------------------------------------

def test_reissue_keeps_each_context_roles_endpoints_and_nodes(tmp_path, rotation, old_ca):
    path = old_talosconfig(tmp_path / "talosconfig", old_ca, {"admin": ["os:admin"], "ops": ["os:operator"], "ro": ["os:reader"]})
    foreign_ca = _pki.generate_ca("talos")
    foreign = _pki.issue_client_certificate(foreign_ca)
    document = TalosConfig.load(str(path))
    document.set_context(TalosContext("elsewhere", ("192.0.2.1",), (), foreign_ca.crt, foreign.crt, foreign.key), make_current=False)
    document.save(str(path))
    before = TalosConfig.load(str(path))
    result = talosconfig.run(params(path, ca_dir=rotation.path, reissue=True, backup=True), diff=True)
    assert result["changed"] and [item["context"] for item in result["contexts"]] == ["admin", "ops", "ro"]
    assert all(item["action"] == "reissued" for item in result["contexts"])
    after = TalosConfig.load(str(path))
    for name, roles in (("admin", ["os:admin"]), ("ops", ["os:operator"]), ("ro", ["os:reader"])):
        context = after.get_context(name)
        assert organizations(context) == roles and _pki.is_issued_by(context.crt, rotation.ca().crt)
        assert (context.endpoints, context.nodes) == (("10.5.0.2", "10.5.0.3"), ("10.5.0.4",))
    assert after.get_context("elsewhere") == before.get_context("elsewhere")  # another cluster's context is not ours
    assert after.current_context_name == before.current_context_name
    assert TalosConfig.load(result["backup"]).get_context("ro") == before.get_context("ro")
    assert_no_key(result)
    again = talosconfig.run(params(path, ca_dir=rotation.path, reissue=True, backup=True))
    assert not again["changed"] and again["backup"] is None


def test_reissue_refuses_a_certificate_with_an_unknown_role_before_writing(tmp_path, rotation, old_ca):
    path = old_talosconfig(tmp_path / "talosconfig", old_ca, {"admin": ["os:admin"], "odd": ["example:custom"]})
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="context odd") as refused:
        talosconfig.run(params(path, ca_dir=rotation.path, reissue=True))
    assert "example:custom" in str(refused.value) and path.read_bytes() == before


def test_reissue_of_a_file_without_this_cluster_is_refused(tmp_path, rotation):
    other = _pki.generate_ca("talos")
    path = old_talosconfig(tmp_path / "talosconfig", other, {"admin": ["os:admin"]})
    with pytest.raises(ConfigError, match="no context of this cluster"):
        talosconfig.run(params(path, ca_dir=rotation.path, reissue=True))


def test_reissue_refuses_roles(tmp_path, rotation, old_ca):
    path = old_talosconfig(tmp_path / "talosconfig", old_ca, {"admin": ["os:admin"]})
    with pytest.raises(ConfigError, match="keeps each context's roles"):
        talosconfig.run(params(path, ca_dir=rotation.path, reissue=True, roles=["os:reader"]))
