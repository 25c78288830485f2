"""talos_ca_generate kind=service_account with start_new, as for the CAs (h12a): a rotation in progress is resumed with a
warning, only one recorded as completed (complete=true) is archived, and only while the control planes sign with its key."""

import os

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._backends import ca_generate
from ansible_collections.talosops.pki.plugins.module_utils._errors import RotationStateError


def params(path, current, **overrides):
    values = {"path": str(path), "kind": "service_account", "algorithm": "ecdsa-p256", "validity_hours": 87600,
              "previous_ca": _pki.public_key_pem(current).decode(), "create": True, "start_new": False, "talosconfig": None,
              "secrets_file": None, "previous_talosconfig": None, "return_key": False}
    values.update(overrides)
    return values


def test_start_new_resumes_a_rotation_in_progress_with_a_warning(tmp_path):
    old = _pki.generate_service_account_key("ecdsa-p256")
    path = tmp_path / "service_account"
    first = ca_generate.run(params(path, old))
    # The same command again after the swap (the control planes sign with the new key, remove not done yet).
    signing_new = ca_generate.run(params(path, ca_generate._rotation_store.load(str(path)).signing_key(), start_new=True))
    again = ca_generate.run(params(path, old, start_new=True))
    for result in (signing_new, again):
        assert result["ca_fingerprint"] == first["ca_fingerprint"] and result["archived"] is None and not result["changed"]
        assert "has not completed yet, so this run resumes it" in result["warnings"][0]
    assert os.listdir(tmp_path) == ["service_account"]


def test_a_completed_rotation_is_archived_by_start_new_only_while_its_key_signs(tmp_path):
    old = _pki.generate_service_account_key("ecdsa-p256")
    path = tmp_path / "service_account"
    first = ca_generate.run(params(path, old))
    done = ca_generate.run(params(path, old, create=False, complete=True))
    assert done["completed"] and done["completion"]["changed"] and done["changed"]
    assert not ca_generate.run(params(path, old, create=False, complete=True))["changed"]  # recorded once
    with pytest.raises(RotationStateError, match="no longer sign with its new key"):
        ca_generate.run(params(path, old, start_new=True))  # the cluster went back to another key since
    new_key = ca_generate._rotation_store.load(str(path)).signing_key()
    following = ca_generate.run(params(path, new_key, start_new=True))
    assert following["archived"] and os.path.basename(following["archived"]).startswith("service_account.archived-")
    assert following["changed"] and following["previous_ca_fingerprint"] == first["ca_fingerprint"]
    assert following["ca_fingerprint"] != first["ca_fingerprint"] and not following["completed"]
