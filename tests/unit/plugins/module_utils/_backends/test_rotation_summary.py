"""talos_rotation_summary's backend, table style: each outcome's headline, state, next step and node rows, no simulator."""

import base64

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._backends import rotation_summary
from ansible_collections.talosops.pki.plugins.module_utils._errors import TalosPKIError

CP, W1, W2 = "10.5.0.2", "10.5.0.5", "10.5.0.6"
NAMES = {CP: "cp-1", W1: "w-1", W2: "w-2"}


@pytest.fixture(name="rotation_dir")
def fixture_rotation_dir(tmp_path):
    path = str(tmp_path / "rotation" / "talos")
    _rotation_store.create(path, "talos", _pki.generate_ca("talos").crt, _pki.generate_ca("talos"))
    return path


def patch(node, phase, before, after, started=100.0, finished=101.0):
    return {"node": node, "phase": phase, "progress_before": before, "progress_after": after, "changed": before != after,
            "started": started, "finished": finished}


def params(rotation_dir, **overrides):
    values = {name: spec.get("default") for name, spec in rotation_summary.ARGUMENT_SPEC.items()}
    values.update(kind="talos", rotation_dir=rotation_dir, controlplanes=[CP], workers=[W1, W2], node_names=NAMES, phases=["accept"])
    values.update(overrides)
    return values


ACCEPTED = [patch(CP, "accept", "pending", "accepted"), patch(W1, "accept", "pending", "accepted", 101.0, 102.5),
            patch(W2, "accept", "pending", "accepted", 101.0, 102.0)]
DONE = [patch(node, "remove", "removed", "removed") for node in (CP, W1, W2)]
OUTCOMES = {
    # id: (overrides, check_mode, headline, state, next step starts with)
    "accept only": (dict(patches=ACCEPTED), False, "Talos API CA rotation: accept phase done",
                    "every node accepts the new CA; the old CA still issues", "run the swap phase"),
    "whole rotation": (dict(phases=["accept", "swap", "remove"], patches=[patch(n, "remove", "swapped", "removed") for n in NAMES]),
                       False, "Talos API CA rotated: accept, swap, remove phases done",
                       "rotation complete: every node trusts the new CA only", "hand out talosconfigs"),
    "no-op rerun": (dict(phases=["accept", "swap", "remove"], patches=DONE), False,
                    "Talos API CA rotation: nothing to do: the rotation in ", "rotation complete: every node trusts the new CA only", None),
    "check mode": (dict(patches=ACCEPTED, throwaway=True), True, "Talos API CA rotation, check mode: nothing was changed; 3 of 3 nodes would move",
                   "would be: every node accepts the new CA; the old CA still issues", "run the same command without --check"),
    "check mode, nothing to do": (dict(patches=DONE), True, "Talos API CA rotation, check mode: nothing was changed; no node would change",
                                  "would be: rotation complete: every node trusts the new CA only", None),
    "failure": (dict(patches=ACCEPTED[:2], failed=True), False, "Talos API CA rotation STOPPED in this run (2 of 3 nodes moved",
                "nodes part way: accepted on 2, pending on 1", "fix the cause reported above"),
    "caller's state": (dict(patches=ACCEPTED, state="rolled back", next_step="start again"), False,
                       "Talos API CA rotation: accept phase done", "rolled back", "start again"),
}


@pytest.mark.parametrize("outcome", OUTCOMES, ids=list(OUTCOMES))
def test_each_outcome_has_a_truthful_headline_state_and_next_step(rotation_dir, outcome):
    overrides, check_mode, headline, state, next_step = OUTCOMES[outcome]
    result = rotation_summary.run(params(rotation_dir, **overrides), check_mode=check_mode)
    summary = result["summary"]
    assert not result["changed"]
    assert summary["headline"].startswith(headline), summary["headline"]
    assert summary["state"] == state
    if next_step is None:
        assert summary["next_step"] is None
    else:
        assert summary["next_step"].startswith(next_step), summary["next_step"]
    assert result["lines"][0] == summary["headline"] and result["lines"][1] == "state: " + state


def test_nothing_to_do_says_how_to_start_a_new_rotation(rotation_dir):
    summary = rotation_summary.run(params(rotation_dir, patches=DONE))["summary"]
    assert "rotate_ca_start_new=true" in summary["headline"] and summary["phase_seconds"] == {}


def test_rows_name_every_node_with_its_address_before_and_after(rotation_dir):
    result = rotation_summary.run(params(rotation_dir, patches=ACCEPTED[:2], failed=True,
                                         preflight_nodes={W2: {"talos": {"progress": "pending"}}}))
    rows = [" ".join(line.split()) for line in result["lines"] if line.split()[0] in NAMES.values()]
    assert rows == ["cp-1 10.5.0.2 controlplane pending -> accepted", "w-1 10.5.0.5 worker pending -> accepted",
                    "w-2 10.5.0.6 worker pending -> pending (unchanged)"]
    assert result["summary"]["phase_seconds"] == {"accept": 2.5}  # first start to last end, across nodes


def test_check_mode_shows_would_be_and_no_throwaway_folder(rotation_dir):
    lines = rotation_summary.run(params(rotation_dir, patches=ACCEPTED, throwaway=True), check_mode=True)["lines"]
    assert "cp-1 10.5.0.2 controlplane pending would be accepted" in [" ".join(line.split()) for line in lines]
    assert not [line for line in lines if rotation_dir in line or "audit" in line]


def test_the_admin_talosconfig_s_expiry_is_shown(rotation_dir, tmp_path):
    store = _rotation_store.load(rotation_dir, kind="talos")
    client = _pki.issue_client_certificate(store.ca())
    path = tmp_path / "talosconfig"
    path.write_text("context: prod\ncontexts:\n  prod:\n    endpoints: [10.5.0.2]\n    ca: %s\n    crt: %s\n    key: %s\n" % tuple(
        base64.b64encode(pem).decode() for pem in (store.ca().crt, client.crt, client.key)))
    result = rotation_summary.run(params(rotation_dir, phases=["remove"], patches=[patch(n, "remove", "swapped", "removed") for n in NAMES],
                                         talosconfig={"path": str(path), "context": "prod", "changed": True}))
    expires = _pki.describe_certificate(client.crt)["not_after"]
    assert "talosconfig %s: updated; client certificate expires %s" % (path, expires) in result["lines"]
    assert "BEGIN" not in repr(result)


def test_a_folder_without_a_rotation_is_an_error(tmp_path):
    with pytest.raises(TalosPKIError, match="no talos CA rotation in"):
        rotation_summary.run(params(str(tmp_path / "none")))
