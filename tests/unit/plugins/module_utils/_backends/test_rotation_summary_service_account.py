"""talos_rotation_summary's backend for the service-account signing key (kind service_account), table style over audit
logs written by hand as talos_machine_patch and talos_ca_generate write them: control planes only, public keys in place
of CAs, what the flow proved about tokens; and the line that says which CA each node has after a run (or a rollback)
that stopped part way."""

import json

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._backends import rotation_summary
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError

from test_rotation_summary import ALL, CP, NAMES, SINCE, T, W1, W2, moved, preflight, rows, stamp, wave, write_log  # pylint: disable=import-error

CP2, CP3 = "10.5.0.3", "10.5.0.4"
SA_NAMES = {CP: "cp-1", CP2: "cp-2", CP3: "cp-3"}
CONTROLPLANES = [CP, CP2, CP3]
SECRETS = "/srv/cluster/secrets.yaml"


@pytest.fixture(name="sa_dir")
def fixture_sa_dir(tmp_path):
    path = str(tmp_path / "rotation" / "service_account")
    previous = _pki.public_key_pem(_pki.generate_service_account_key("ecdsa-p256"))
    _rotation_store.create_service_account(path, previous, _pki.generate_service_account_key("rsa-4096"))
    return path


def sa(entry):
    """An entry as a service-account rotation writes it (kind service_account; waves of one control plane)."""
    entry = dict(entry, kind="service_account")
    if entry["event"] == "wave_patched":
        entry["ca"] = "service_account"
    return entry


def sa_preflight(sa_dir, progress):
    """talos_cluster_info's nodes: each control plane's service-account keys (public-key fingerprints) at `progress`."""
    rotation = _rotation_store.load(sa_dir)
    old, new = rotation.previous_ca_fingerprint, rotation.ca_fingerprint
    fields = {"pending": (old, [old]), "accepted": (old, [old, new]), "swapped": (new, [old]), "removed": (new, [])}
    nodes = {}
    for node in CONTROLPLANES:
        issuing, accepted = fields[progress[node] if isinstance(progress, dict) else progress]
        nodes[node] = {"service_account": {"location": "KubeServiceAccountConfig", "issuing_ca": issuing, "accepted_cas": accepted}}
    return nodes


def sa_params(sa_dir, **overrides):
    values = {name: spec.get("default") for name, spec in rotation_summary.ARGUMENT_SPEC.items()}
    values.update(kind="service_account", rotation_dir=sa_dir, controlplanes=CONTROLPLANES, workers=[], node_names=SA_NAMES,
                  phases=["accept"], since=SINCE)
    values.update(overrides)
    return values


def one_by_one(phase, before, after, base):
    """The flow patches one control plane per task: a node_patched and a wave of one per control plane."""
    entries = []
    for index, node in enumerate(CONTROLPLANES):
        at = base + index
        entries += [sa(moved(node, phase, before, after, at + 0.4)), sa(wave(phase, "controlplane", 1, [node], [node], at, at + 0.5))]
    return entries


ACCEPT = one_by_one("accept", "pending", "accepted", 0.0)
EVERYTHING = ACCEPT + one_by_one("swap", "accepted", "swapped", 4.0) + one_by_one("remove", "swapped", "removed", 8.0) + [
    {"event": "secrets_file_updated", "time": stamp(T + 12), "kind": "service_account", "path": SECRETS},
    {"event": "rotation_completed", "time": stamp(T + 12), "kind": "service_account"}]
# The second control plane refused every apply in the swap phase: the first one signs with the new key.
STOPPED = ACCEPT + one_by_one("swap", "accepted", "swapped", 4.0)[:2] + [
    sa(wave("swap", "controlplane", 1, [CP2], [], 5.0, 7.0, failed=[CP2]))]
LEGACY = [{"namespace": "kube-system", "name": "legacy-ci-token", "signed_by_listed_key": True},
          {"namespace": "ci", "name": "other-key-token", "signed_by_listed_key": False}]

OUTCOMES = {
    # id: (entries, overrides, preflight progress, check mode, headline, state, next step starts with, rows, lines that must be there)
    "accept only": (ACCEPT, {}, "pending", False, "Service-account signing key rotation: accept phase done",
                    "every control plane accepts the new public key; the old key still signs", "run the swap phase",
                    ["pending accepted"] * 3, ["token of the old key: accepted until the remove phase"]),
    "all three phases": (EVERYTHING, dict(phases=ALL, old_token_refused=True, legacy_secrets=LEGACY), "pending", False,
                         "Service-account signing key rotated: accept, swap, remove phases done",
                         "rotation complete: every control plane accepts tokens of the new key only",
                         "recreate the legacy token Secrets", ["pending removed"] * 3,
                         ["token of the old key: refused by every kube-apiserver",
                          "legacy token Secrets signed by the old key (never refreshed; they stop working at remove): "
                          "kube-system/legacy-ci-token",
                          "secrets bundle %s: holds the new key" % SECRETS]),
    "accept and swap": (ACCEPT + one_by_one("swap", "accepted", "swapped", 4.0), dict(phases=["accept", "swap"]), "pending",
                        False, "Service-account signing key rotation: accept, swap phases done",
                        "every control plane signs with the new key and still accepts tokens of the old one",
                        "once projected tokens are refreshed", ["pending swapped"] * 3, []),
    "stopped in the swap": (STOPPED, dict(phases=ALL, failed=True), "pending", False,
                            "Service-account signing key rotation STOPPED in this run (3 of 3 nodes moved before the failure)",
                            "nodes part way: swapped on 1, accepted on 2", "fix the cause reported above",
                            ["pending swapped", "pending accepted", "pending accepted"],
                            ["where the nodes stand: accepted (the old key signs, the new public key is also accepted): cp-2, "
                             "cp-3; swapped (the new key signs, the old public key is still accepted): cp-1"]),
    "check mode projects the preflight": ([], dict(phases=ALL, throwaway=True, legacy_secrets=LEGACY), "pending", True,
                                          "Service-account signing key rotation, check mode: nothing was changed; 3 of 3 "
                                          "nodes would move",
                                          "would be: rotation complete: every control plane accepts tokens of the new key only",
                                          "run the same command without --check", ["pending removed"] * 3,
                                          ["token of the old key: not checked in check mode"]),
    "check mode, remove after a swap job": (ACCEPT, dict(phases=["remove"]), "swapped", True,
                                            "Service-account signing key rotation, check mode: nothing was changed; 3 of 3",
                                            "would be: rotation complete: every control plane accepts tokens of the new key only",
                                            "run the same command without --check", ["swapped removed"] * 3, []),
    "rerun that changed nothing": ([sa(wave(phase, "controlplane", 1, [node], [], 0.1, 0.2)) for phase in ALL for node in CONTROLPLANES],
                                   dict(phases=ALL), "removed", False,
                                   "Service-account signing key rotation: nothing to do: the rotation in ",
                                   "rotation complete: every control plane accepts tokens of the new key only", None,
                                   ["removed removed"] * 3, []),
}


@pytest.mark.parametrize("outcome", OUTCOMES, ids=list(OUTCOMES))
def test_each_service_account_outcome(sa_dir, outcome):
    entries, overrides, progress, check_mode, headline, state, next_step, expected_rows, expected_lines = OUTCOMES[outcome]
    write_log(sa_dir, entries)
    result = rotation_summary.run(sa_params(sa_dir, preflight_nodes=sa_preflight(sa_dir, progress), **overrides),
                                  check_mode=check_mode)
    summary = result["summary"]
    assert summary["headline"].startswith(headline), summary["headline"]
    assert summary["state"] == state
    if next_step is None:
        assert summary["next_step"] is None
    else:
        assert summary["next_step"].startswith(next_step), summary["next_step"]
    assert rows(result["lines"], SA_NAMES) == expected_rows, result["lines"]
    for line in expected_lines:
        assert line in result["lines"], result["lines"]
    assert [row["tier"] for row in summary["nodes"]] == ["controlplane"] * 3


def test_keys_are_shown_by_fingerprint_and_algorithm_never_as_pem(sa_dir):
    write_log(sa_dir, EVERYTHING)
    rotation = _rotation_store.load(sa_dir)
    result = rotation_summary.run(sa_params(sa_dir, phases=ALL, legacy_secrets=LEGACY))
    summary = result["summary"]
    assert summary["old_ca"] == {"fingerprint": rotation.previous_ca_fingerprint, "not_after": None, "algorithm": "ecdsa-p256"}
    assert summary["new_ca"]["algorithm"] == "rsa-4096" and summary["new_ca"]["fingerprint"] == rotation.ca_fingerprint
    assert "old key %s (ecdsa-p256); new key %s (rsa-4096)" % (rotation.previous_ca_fingerprint[:16], rotation.ca_fingerprint[:16]) \
        in result["lines"]
    assert summary["tokens"]["legacy_secrets_of_old_key"] == ["kube-system/legacy-ci-token"]
    # One wave per control plane and phase, as the flow patches them one at a time.
    assert [(wave["phase"], wave["nodes"]) for wave in summary["waves"]][:3] == [("accept", [node]) for node in CONTROLPLANES]
    assert "BEGIN" not in json.dumps(result)


def test_a_service_account_rotation_has_no_rollback_summary(sa_dir):
    with pytest.raises(ConfigError, match="phase rollback_swap does not apply to ca=service_account: the replaced signing key is not kept"):
        rotation_summary.run(sa_params(sa_dir, rollback=True, phases=["rollback_swap"]))


def test_the_other_kinds_show_no_token_lines(tmp_path):
    path = str(tmp_path / "rotation" / "talos")
    _rotation_store.create(path, "talos", _pki.generate_ca("talos").crt, _pki.generate_ca("talos"))
    values = {name: spec.get("default") for name, spec in rotation_summary.ARGUMENT_SPEC.items()}
    values.update(kind="talos", rotation_dir=path, controlplanes=[CP], workers=[W1, W2], node_names=NAMES, phases=["accept"])
    result = rotation_summary.run(values)
    assert "tokens" not in result["summary"] and not [line for line in result["lines"] if "token" in line]


# A Talos API CA rollback from swapped that stopped in its second step: the control plane and the first worker are back on
# the old CA alone, the second worker refused every apply of the drop.
ROLLBACK_STOPPED = [moved(node, "rollback_swap", "swapped", "accepted", 1.0) for node in NAMES] + [
    moved(CP, "rollback_accept", "accepted", "pending", 2.0), moved(W1, "rollback_accept", "accepted", "pending", 3.0),
    wave("rollback_accept", "worker", 1, [W1, W2], [W1], 2.5, 4.0, failed=[W2])]


def test_a_rollback_that_stopped_says_which_ca_each_node_has_and_to_rerun_it(tmp_path):
    path = str(tmp_path / "rotation" / "talos")
    _rotation_store.create(path, "talos", _pki.generate_ca("talos").crt, _pki.generate_ca("talos"))
    write_log(path, ROLLBACK_STOPPED)
    values = {name: spec.get("default") for name, spec in rotation_summary.ARGUMENT_SPEC.items()}
    values.update(kind="talos", rotation_dir=path, controlplanes=[CP], workers=[W1, W2], node_names=NAMES, since=SINCE,
                  phases=["rollback_swap", "rollback_accept"], rollback=True, failed=True,
                  preflight_nodes=preflight(path, "swapped"))
    result = rotation_summary.run(values)
    lines = [" ".join(line.split()) for line in result["lines"]]
    assert result["summary"]["headline"] == "Talos API CA rollback STOPPED in this run (3 of 3 nodes moved before the failure)"
    assert "w-2 10.5.0.6 worker swapped -> accepted (FAILED)" in lines, lines
    assert "where the nodes stand: pending (the old CA alone): cp-1, w-1; accepted (the old CA issues, the new one is also " \
           "accepted): w-2" in lines, lines
    assert result["summary"]["next_step"].startswith("fix the cause reported above, then rerun the same command: the rollback")
