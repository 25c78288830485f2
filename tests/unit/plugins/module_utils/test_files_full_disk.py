"""A disk that fills up mid-run: files keep their previous content, audit lines are whole or absent, and the error
names the path, says what did (not) change and what to do."""

import errno
import json
import os
import types

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _files, _pki, _rotation_store as store
from ansible_collections.talosops.pki.plugins.module_utils._backends import machine_patch
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError, RotationStateError, TalosPKIError

REAL_WRITE = os.write


def full_disk(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_file_whose_write_hits_a_full_disk_keeps_its_previous_content(tmp_path, monkeypatch):
    path = str(tmp_path / "talosconfig")
    _files.atomic_write(path, b"old content")
    monkeypatch.setattr(os, "fsync", full_disk)  # ENOSPC shows up at fsync on many file systems, after mkstemp
    with pytest.raises(ConfigError) as refused:
        _files.atomic_write(path, b"new content")
    message = str(refused.value)
    assert message.startswith("cannot write %s: No space left on device. It was not changed" % path)
    assert "free space" in message
    monkeypatch.undo()
    assert _files.read_bytes(path, "talosconfig") == b"old content"
    assert os.listdir(tmp_path) == ["talosconfig"]  # no temporary file left beside it


@pytest.mark.parametrize("cut", [0, 7])
def test_an_audit_line_cut_short_by_a_full_disk_is_taken_back(tmp_path, monkeypatch, cut):
    path = str(tmp_path / "audit.jsonl")
    _files.append_line(path, b'{"event": "first"}')

    def short_write(handle, data):
        return REAL_WRITE(handle, data[:cut]) if cut else full_disk()
    monkeypatch.setattr(os, "write", short_write)
    with pytest.raises(OSError) as failed:
        _files.append_line(path, b'{"event": "second", "node": "10.5.0.2"}')
    assert failed.value.errno == errno.ENOSPC
    monkeypatch.undo()
    _files.append_line(path, b'{"event": "third"}')
    with open(path, "rb") as handle:
        assert [json.loads(line)["event"] for line in handle] == ["first", "third"]


def test_a_full_audit_log_is_a_clear_error_that_names_it(tmp_path, monkeypatch):
    old, new = _pki.generate_ca("talos"), _pki.generate_ca("talos")
    rotation = store.create(str(tmp_path / "talos"), "talos", old.crt, new)
    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(TalosPKIError) as refused:
        rotation.record("node_patched", node="10.5.0.2")
    assert "cannot append to the audit log %s: No space left on device" % rotation.file(store.AUDIT_LOG) in str(refused.value)
    assert "free space" in str(refused.value)


def test_a_node_patched_whose_audit_entry_cannot_be_written_is_reported_as_patched(monkeypatch):
    class Rotation:
        def record(self, *_args, **_fields):
            raise TalosPKIError("cannot append to the audit log /r/talos/audit.jsonl: No space left on device.")

    async def patched(*_args, **_kwargs):  # the node's patch went through; only its audit entry fails
        return {"changed": True, "node": "10.5.0.3", "phase": "accept", "progress_before": "pending", "progress_after": "accepted",
                "issuing_ca_fingerprint": "ab" * 32, "accepted_ca_fingerprints": ["cd" * 32], "apply_mode": "no_reboot"}

    class Client:
        async def __aenter__(self):
            return self

        async def __aexit__(self, *_exc_info):
            return None

    class Guard:
        check = None

        def __enter__(self):
            return self

        def __exit__(self, *_exc_info):
            return None
    monkeypatch.setattr(machine_patch._rotation_store, "load", lambda *_args, **_kwargs: Rotation())
    monkeypatch.setattr(machine_patch, "Target", lambda params, sealing=None: types.SimpleNamespace(client=Client, credentials=types.SimpleNamespace(crt=None)))
    monkeypatch.setattr(machine_patch, "RunGuard", lambda folder=None: Guard())
    monkeypatch.setattr(machine_patch, "_patch", patched)
    params = {name: spec.get("default") for name, spec in machine_patch.ARGUMENT_SPEC.items()}
    params.update(node="10.5.0.3", phase="accept", rotation_dir="/r/talos")
    with pytest.raises(RotationStateError) as refused:
        machine_patch.run(params)
    message = str(refused.value)
    assert message.startswith("10.5.0.3 WAS patched (accept phase of the talos CA rotation: pending -> accepted)")
    assert "/r/talos/audit.jsonl: No space left on device" in message and "resumes" in message


def test_a_disk_that_fills_while_a_rotation_is_created_leaves_nothing_and_says_so(tmp_path, monkeypatch):
    old, new = _pki.generate_ca("talos"), _pki.generate_ca("talos")
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(TalosPKIError) as refused:
        store.create(str(tmp_path / "talos"), "talos", old.crt, new)
    message = str(refused.value)
    assert message.startswith("cannot write the rotation directory %s: cannot write " % (tmp_path / "talos"))
    assert "No space left on device" in message and "Nothing was created, so no node can have seen the new CA" in message
    assert os.listdir(tmp_path) == []
