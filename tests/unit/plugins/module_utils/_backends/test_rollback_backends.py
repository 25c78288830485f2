"""The rollback's backend pieces without a node: the old CA's key kept at generate, the rolled-back folder, the preflight's
refusals. (The swap back issuing with the kept key on a real config: tests/integration/test_rollback.py.)"""

import json
import os

import pytest
from ansible.parsing.vault import VaultLib, VaultSecret

from ansible_collections.talosops.pki.plugins.module_utils import _files, _pki, _rotation, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._backends import ca_generate, cluster_info, machine_patch
from ansible_collections.talosops.pki.plugins.module_utils._errors import RotationStateError

SOURCE = {"talosconfig": "/nonexistent/talosconfig", "context": None, "endpoints": None}


@pytest.fixture(name="old_ca", scope="module")
def fixture_old_ca():
    return _pki.generate_ca("talos")


@pytest.fixture(name="root")
def fixture_root(monkeypatch, old_ca):
    """What the endpoint's root secrets hold: by default the old CA with its key. The test may change it."""
    held = {"issuing_ca": {"crt": old_ca.crt, "key": old_ca.key}, "accepted_cas": []}
    reads = []

    async def read_root(target, kind):
        reads.append((target, kind))
        return held
    monkeypatch.setattr(ca_generate, "Target", lambda source, sealing=None: source)
    monkeypatch.setattr(ca_generate, "_read_root", read_root)
    return held, reads


def params(path, old_ca, **overrides):
    values = {"path": str(path), "kind": "talos", "algorithm": None, "validity_hours": 87600, "previous_ca": old_ca.crt.decode(),
              "create": True, "start_new": False, "talosconfig": None, "secrets_file": None, "previous_talosconfig": None,
              "return_key": False, "previous_ca_source": SOURCE, "rolled_back": False}
    values.update(overrides)
    return values


def test_the_old_key_is_kept_with_the_new_ca_private(tmp_path, old_ca, root):
    result = ca_generate.run(params(tmp_path / "talos", old_ca))
    key_path = tmp_path / "talos" / _rotation_store.PREVIOUS_CA_KEY
    assert result["previous_ca_key_kept"] is True
    assert key_path.read_bytes() == old_ca.key and os.stat(key_path).st_mode & 0o777 == 0o600
    assert _rotation_store.load(str(tmp_path / "talos")).previous_ca() == old_ca
    assert "PRIVATE KEY" not in json.dumps(result)
    assert root[1] and root[1][0][1] == "talos"


def test_the_old_key_is_vault_encrypted_like_the_new_one(tmp_path, old_ca, root):
    vault = VaultLib([("default", VaultSecret(b"correct horse battery staple"))])
    sealing = _files.Sealing(str(tmp_path), vault.encrypt, vault.decrypt)
    ca_generate.run(params(tmp_path / "talos", old_ca), sealing=sealing)
    assert _rotation_store.load(str(tmp_path / "talos"), sealing=sealing).previous_ca().key == old_ca.key
    for name in (_rotation_store.CA_KEY, _rotation_store.PREVIOUS_CA_KEY):
        stored = (tmp_path / "talos" / name).read_bytes()
        assert stored.startswith(b"$ANSIBLE_VAULT;") and b"PRIVATE KEY" not in stored


def test_no_key_when_the_endpoint_issues_with_another_ca(tmp_path, old_ca, root):
    root[0]["issuing_ca"] = dict(zip(("crt", "key"), _pki.generate_ca("talos")))
    result = ca_generate.run(params(tmp_path / "talos", old_ca))
    assert result["previous_ca_key_kept"] is False
    with pytest.raises(RotationStateError, match="holds no key of the CA being replaced"):
        _rotation_store.load(str(tmp_path / "talos")).previous_ca()


def test_a_rotation_made_without_the_key_gets_it_on_a_later_run(tmp_path, old_ca, root):
    ca_generate.run(params(tmp_path / "talos", old_ca, previous_ca_source=None))
    assert not (tmp_path / "talos" / _rotation_store.PREVIOUS_CA_KEY).exists()
    assert not ca_generate.run(params(tmp_path / "talos", old_ca), check_mode=True)["previous_ca_key_kept"]  # check mode: nothing
    later = ca_generate.run(params(tmp_path / "talos", old_ca))
    assert later["changed"] and later["previous_ca_key_kept"]
    events = [json.loads(line)["event"] for line in (tmp_path / "talos" / _rotation_store.AUDIT_LOG).read_text().splitlines()]
    assert events == ["ca_generated", "previous_ca_key_kept"]


def test_check_mode_reads_no_key(tmp_path, old_ca, root):
    result = ca_generate.run(params(tmp_path / "talos", old_ca), check_mode=True)
    assert result["throwaway"] and not root[1] and not (tmp_path / "talos").exists()


def test_rolled_back_moves_the_folder_aside_with_an_audit_entry(tmp_path, old_ca, root):
    made = ca_generate.run(params(tmp_path / "talos", old_ca))
    dry = ca_generate.run(params(tmp_path / "talos", old_ca, create=False, rolled_back=True), check_mode=True)
    assert dry["rolled_back_to"].endswith(".rolled-back-<time>") and (tmp_path / "talos").is_dir()
    done = ca_generate.run(params(tmp_path / "talos", old_ca, create=False, rolled_back=True))
    assert not (tmp_path / "talos").exists() and os.path.isdir(done["rolled_back_to"])
    assert os.path.basename(done["rolled_back_to"]).startswith("talos.rolled-back-")
    last = json.loads(open(os.path.join(done["rolled_back_to"], _rotation_store.AUDIT_LOG), encoding="utf-8").read().splitlines()[-1])
    assert last["event"] == "rotation_rolled_back" and last["ca_fingerprint"] == made["ca_fingerprint"]
    with pytest.raises(RotationStateError, match="nothing to mark as rolled back"):
        ca_generate.run(params(tmp_path / "talos", old_ca, create=False, rolled_back=True))


# --- the preflight's refusals -----------------------------------------------------------------------------------------

class Rotation:
    def __init__(self, has_key=True):
        self.path, self.previous_ca_fingerprint, self.has_previous_ca_key = "/rotation/talos", "0" * 64, has_key

    def file(self, name):
        return os.path.join(self.path, name)


def nodes(**progress):
    return {node: {"machine_type": "worker" if node.startswith("w") else "controlplane", "talos": {"progress": where}}
            for node, where in progress.items()}


def test_a_rollback_is_refused_once_a_node_is_past_remove():
    problems = cluster_info._rollback_problems(nodes(cp1="removed", cp2="swapped", w1="swapped"), {"talos": Rotation()})
    assert len(problems) == 1
    assert "cannot be rolled back" in problems[0] and "cp1, which no longer accepts" in problems[0]
    assert "run again without rotate_ca_rollback" in problems[0] and "rotate_ca_start_new=true" in problems[0]


def test_a_rollback_is_refused_without_the_old_key_once_a_control_plane_swapped():
    problems = cluster_info._rollback_problems(nodes(cp1="swapped", w1="accepted"), {"talos": Rotation(has_key=False)})
    assert len(problems) == 1 and "previous-ca.key" in problems[0] and "cp1" in problems[0]
    # Before any control plane swapped the key is not needed: the control planes still hold the old one.
    assert cluster_info._rollback_problems(nodes(cp1="accepted", w1="swapped"), {"talos": Rotation(has_key=False)}) == []


def test_a_rollback_from_anywhere_before_remove_passes():
    for where in (_rotation.PENDING, _rotation.ACCEPTED, _rotation.SWAPPED):
        assert cluster_info._rollback_problems(nodes(cp1=where, w1=where), {"talos": Rotation()}) == []
    assert cluster_info._rollback_problems(nodes(cp1="pending"), {"talos": None}) == []


def test_machine_patch_accepts_the_rollback_phases():
    assert set(_rotation.ROLLBACK_PHASES) <= set(machine_patch.ARGUMENT_SPEC["phase"]["choices"])
