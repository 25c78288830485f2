"""Encryption at rest has no hidden state: each rotation store reads and writes under the sealing it was built with.

Two stores with different sealings, used interleaved in one process (two asyncio tasks switching after every step, as
the waves of one controller do), each keep their own folder as their sealing says: sealed with its own vault password,
or in clear. With a process-wide sealing installed per task (what _files had before), whichever task installed it last
would seal, or fail to seal, the other's files.
"""

import asyncio
import json
import os
import types

import pytest
from ansible.parsing.vault import VaultLib, VaultSecret

from ansible_collections.talosops.pki.plugins.module_utils import _ansible, _files, _pki, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError

PASSWORDS = {"a": b"password of rotation a", "b": b"password of rotation b"}


def vault(name):
    return VaultLib([("default", VaultSecret(PASSWORDS[name]))])


def sealing_of(kind, folder):
    """`sealed-a` / `sealed-b`: the folder sealed with that vault password; `clear`: no sealing at all."""
    if kind == "clear":
        return None
    lib = vault(kind.split("-")[1])
    return _files.Sealing(str(folder), lib.encrypt, lib.decrypt)


async def use_store(path, sealing, old, new, steps):
    """Create a rotation, log to it, read it back and complete it, yielding to the other task between every step."""
    rotation = _rotation_store.create(path, "talos", old.crt, new, sealing=sealing)
    steps.append(path)
    await asyncio.sleep(0)
    rotation.record("node_patched", node="10.5.0.2", phase="accept")
    steps.append(path)
    await asyncio.sleep(0)
    rotation.keep_previous_ca_key(old.key)
    steps.append(path)
    await asyncio.sleep(0)
    loaded = _rotation_store.load(path, kind="talos", sealing=sealing)
    steps.append(path)
    await asyncio.sleep(0)
    assert loaded.mark_completed()
    loaded.record("rotation_completed", ca_fingerprint=loaded.ca_fingerprint)
    steps.append(path)
    await asyncio.sleep(0)
    again = _rotation_store.load(path, kind="talos", sealing=sealing)
    return again.ca(), again.previous_ca(), [entry["event"] for entry in again.entries()], again.completed


def assert_stored_as(path, kind, new):
    """Every file of the rotation at `path` is vault text of its own password (sealed-*) or clear (clear)."""
    names = sorted(os.listdir(path))
    assert names == sorted([_rotation_store.AUDIT_LOG, _rotation_store.CA_CERT, _rotation_store.CA_KEY,
                            _rotation_store.PREVIOUS_CA_CERT, _rotation_store.PREVIOUS_CA_KEY, _rotation_store.STATE_FILE])
    for name in names:
        with open(os.path.join(path, name), "rb") as handle:
            stored = handle.read()
        if name == _rotation_store.AUDIT_LOG:
            lines = [json.loads(line) for line in stored.splitlines()]
            assert len(lines) == 2, name
            if kind == "clear":
                assert [line["event"] for line in lines] == ["node_patched", "rotation_completed"], name
            else:
                assert all(list(line) == ["vault"] for line in lines), name
                assert json.loads(vault(kind[-1]).decrypt(lines[0]["vault"]))["event"] == "node_patched"
            continue
        if kind == "clear":
            assert not stored.startswith(_files.VAULT_HEADER), "%s of the clear rotation was sealed" % name
            continue
        assert stored.startswith(_files.VAULT_HEADER), "%s of the %s rotation is in clear" % (name, kind)
        assert new.crt.split(b"\n")[1] not in stored and b"PRIVATE KEY" not in stored, name
        vault(kind[-1]).decrypt(stored)  # its own password opens it (another one raises)
        other = "b" if kind == "sealed-a" else "a"
        with pytest.raises(Exception):
            vault(other).decrypt(stored)


@pytest.mark.parametrize("first,second", [("sealed-a", "clear"), ("clear", "sealed-a"), ("sealed-a", "sealed-b")])
def test_two_stores_with_different_sealings_used_interleaved(tmp_path, first, second):
    old = _pki.generate_ca("talos")
    cases = []
    for name, kind in (("one", first), ("two", second)):
        folder = tmp_path / name
        cases.append((str(folder / "talos"), kind, sealing_of(kind, folder), _pki.generate_ca("talos")))
    steps = []

    async def both():
        return await asyncio.gather(*(use_store(path, sealing, old, new, steps) for path, _kind, sealing, new in cases))

    outcomes = asyncio.run(both())
    # The two stores really took turns, step by step.
    assert steps[:4] == [cases[0][0], cases[1][0], cases[0][0], cases[1][0]]
    for (path, kind, sealing, new), (ca, previous, events, completed) in zip(cases, outcomes):
        assert ca == new and previous == old, path
        assert events == ["node_patched", "rotation_completed"] and completed, path
        assert_stored_as(path, kind, new)
        if sealing is not None:
            # The other store's sealing (or none) does not open it: only the sealing this store was built with does.
            with pytest.raises(ConfigError, match="no vault secret is loaded"):
                _rotation_store.load(path, kind="talos")


def test_a_store_keeps_its_sealing_while_another_is_used(tmp_path):
    """Used alternately without asyncio: a store built with a sealing writes sealed after a clear store wrote, and back."""
    old = _pki.generate_ca("talos")
    sealed_path, clear_path = str(tmp_path / "sealed" / "talos"), str(tmp_path / "clear" / "talos")
    sealed = _rotation_store.create(sealed_path, "talos", old.crt, _pki.generate_ca("talos"),
                                    sealing=sealing_of("sealed-a", tmp_path / "sealed"))
    clear = _rotation_store.create(clear_path, "talos", old.crt, _pki.generate_ca("talos"))
    for _round in range(2):
        sealed.record("node_patched", node="10.5.0.2", phase="accept")
        clear.record("node_patched", node="10.5.0.2", phase="accept")
    with open(sealed.file(_rotation_store.AUDIT_LOG), "rb") as handle:
        assert all(list(json.loads(line)) == ["vault"] for line in handle.read().splitlines())
    with open(clear.file(_rotation_store.AUDIT_LOG), "rb") as handle:
        assert [json.loads(line)["event"] for line in handle.read().splitlines()] == ["node_patched"] * 2
    assert [entry["node"] for entry in sealed.entries()] == ["10.5.0.2"] * 2


def test_execute_hands_its_sealing_to_the_backend_and_keeps_none(tmp_path):
    """_ansible.execute passes the action plugin's sealing to the backend as an argument, installs nothing, and a module
    process (no sealing) gives the backend None."""
    seen = []

    def run(params, check_mode=False, diff=False, sealing=None):
        seen.append(sealing)
        _files.atomic_write(params["path"], b"written", sealing=sealing)
        return {"changed": True}

    backend = types.SimpleNamespace(__name__="ansible_collections.talosops.pki.plugins.module_utils._backends.ca_generate",
                                    run=run)
    active = sealing_of("sealed-a", tmp_path)
    assert _ansible.execute(backend, {"path": str(tmp_path / "sealed")}, False, False, sealing=active) == {"changed": True}
    assert _ansible.execute(backend, {"path": str(tmp_path / "clear")}, False, False) == {"changed": True}
    assert seen == [active, None]
    assert (tmp_path / "sealed").read_bytes().startswith(_files.VAULT_HEADER)
    assert (tmp_path / "clear").read_bytes() == b"written"
