"""The rotation directory: whole or absent, private, and refusing anything it did not write."""

import json
import os

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki, _rotation_store as store
from ansible_collections.talosops.pki.plugins.module_utils._errors import RotationStateError, TalosPKIError


@pytest.fixture(name="cas", scope="module")
def fixture_cas():
    return _pki.generate_ca("talos"), _pki.generate_ca("talos")


def test_create_then_load_round_trip(tmp_path, cas):
    old, new = cas
    path = str(tmp_path / "rotation" / "talos")
    created = store.create(path, "talos", old.crt, new)
    loaded = store.load(path, kind="talos")
    assert loaded.ca_fingerprint == created.ca_fingerprint == _pki.fingerprint(new.crt)
    assert loaded.previous_ca_fingerprint == _pki.fingerprint(old.crt)
    assert loaded.ca() == new and loaded.previous_ca_cert() == old.crt
    assert "PRIVATE KEY" not in json.dumps(loaded.facts())  # paths and fingerprints only


def test_files_are_private(tmp_path, cas):
    old, new = cas
    path = str(tmp_path / "rotation" / "talos")
    store.create(path, "talos", old.crt, new)
    assert os.stat(path).st_mode & 0o777 == 0o700
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
    for name in os.listdir(path):
        assert os.stat(os.path.join(path, name)).st_mode & 0o777 == 0o600, name


def test_absent_and_empty_directories_hold_no_rotation(tmp_path):
    assert store.load(str(tmp_path / "missing")) is None
    (tmp_path / "empty").mkdir()
    assert store.load(str(tmp_path / "empty")) is None


def test_create_into_an_empty_directory(tmp_path, cas):
    (tmp_path / "talos").mkdir()
    store.create(str(tmp_path / "talos"), "talos", cas[0].crt, cas[1])
    assert store.load(str(tmp_path / "talos")) is not None


def test_a_failed_write_leaves_nothing(tmp_path, cas, monkeypatch):
    path = str(tmp_path / "talos")

    def fail(*_args, **_kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "rename", fail)
    with pytest.raises(Exception, match="No space left"):
        store.create(path, "talos", cas[0].crt, cas[1])
    assert not os.path.exists(path)
    assert os.listdir(tmp_path) == []  # no staging folder left behind either


def test_create_refuses_to_overwrite(tmp_path, cas):
    path = str(tmp_path / "talos")
    store.create(path, "talos", cas[0].crt, cas[1])
    with pytest.raises(RotationStateError, match="already holds a rotation"):
        store.create(path, "talos", cas[0].crt, _pki.generate_ca("talos"))


@pytest.mark.parametrize("damage,message", [
    (lambda path: os.remove(os.path.join(path, "ca.key")), "incomplete"),
    (lambda path: open(os.path.join(path, "rotation.json"), "w", encoding="utf-8").write("{"), "not valid JSON"),
    (lambda path: open(os.path.join(path, "ca.crt"), "wb").write(_pki.generate_ca("talos").crt), "was altered"),
])
def test_damaged_directories_are_refused(tmp_path, cas, damage, message):
    path = str(tmp_path / "talos")
    store.create(path, "talos", cas[0].crt, cas[1])
    damage(path)
    with pytest.raises(RotationStateError, match=message):
        store.load(path)


def test_foreign_content_and_files_are_refused(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "notes.txt").write_text("mine")
    with pytest.raises(RotationStateError, match="not a rotation directory"):
        store.load(str(tmp_path / "dir"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(RotationStateError, match="not a directory"):
        store.load(str(tmp_path / "file"))


def test_kind_mismatch_is_refused(tmp_path, cas):
    path = str(tmp_path / "talos")
    store.create(path, "talos", cas[0].crt, cas[1])
    with pytest.raises(RotationStateError, match="not a kubernetes one"):
        store.load(path, kind="kubernetes")


def test_archive_moves_it_aside(tmp_path, cas):
    path = str(tmp_path / "talos")
    store.create(path, "talos", cas[0].crt, cas[1])
    archived = store.archive(path)
    assert store.load(path) is None and store.load(archived).ca_fingerprint == _pki.fingerprint(cas[1].crt)


def test_audit_log_appends_one_private_json_line_per_record(tmp_path, cas):
    old, new = cas
    rotation = store.create(str(tmp_path / "rotation" / "talos"), "talos", old.crt, new)
    rotation.record("node_patched", node="10.5.0.2", phase="accept")
    rotation.record("node_patched", node="10.5.0.3", phase="accept")
    log = rotation.facts()["audit_log_path"]
    entries = [json.loads(line) for line in open(log, encoding="utf-8")]
    assert [(entry["event"], entry["node"], entry["kind"]) for entry in entries] == [
        ("node_patched", "10.5.0.2", "talos"), ("node_patched", "10.5.0.3", "talos")]
    assert all(entry["time"].endswith("Z") for entry in entries)
    assert os.stat(log).st_mode & 0o777 == 0o600
    # The log lives inside the rotation, which still loads.
    assert store.load(rotation.path, kind="talos").ca_fingerprint == rotation.ca_fingerprint


def test_an_audit_log_that_cannot_be_written_is_a_clear_error(tmp_path, cas):
    old, new = cas
    rotation = store.create(str(tmp_path / "rotation" / "talos"), "talos", old.crt, new)
    os.mkdir(rotation.file(store.AUDIT_LOG))  # something in the way (root may write anywhere, so no chmod)
    with pytest.raises(TalosPKIError, match="cannot append to the audit log .* must stay writable"):
        rotation.record("node_patched", node="10.5.0.2")
