"""Service-account key rotation (issue 17 item 2) against the simulator: the phases of talos_machine_patch
ca=service_account on every control plane, with tokens proving what kube-apiserver trusts in each phase."""

import base64
import os

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._auth import AUTH_ARGUMENT_SPEC
from ansible_collections.talosops.pki.plugins.module_utils._backends import ca_generate, machine_patch, service_account_token
from ansible_collections.talosops.pki.plugins.module_utils._errors import RotationStateError
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import MachineConfig

from ansible_collections.talosops.pki.plugins.module_utils._rotation_store import load as load_rotation
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import SecretsBundle

from _playbook import cluster_private_keys as private_keys_of, lock_released, private_key_needles, run_playbook  # pylint: disable=import-error
from talos_sim.kubernetes import legacy_token_secret
from test_simulator_service_account import issue_token, token_status  # pylint: disable=import-error


def generate(cluster, rotation_dir, **overrides):
    params = {"path": os.path.join(rotation_dir, "service_account"), "kind": "service_account", "algorithm": "rsa-2048",
              "validity_hours": 87600, "previous_ca": _pki.public_key_pem(cluster.secrets.service_account_key_pem).decode(),
              "create": True,
              "start_new": False, "talosconfig": None, "secrets_file": None, "previous_talosconfig": None,
              "return_key": False}
    params.update(overrides)
    return ca_generate.run(params)


def patch(cluster, rotation, node, phase, check_mode=False, diff=False):
    auth = {name: spec.get("default") for name, spec in AUTH_ARGUMENT_SPEC.items()}
    params = dict(auth, talosconfig=cluster.talosconfig_path, node=node.address, phase=phase, ca="service_account",
                  rotation_dir=rotation["path"], machine_type=None, apply_mode="no_reboot", wait_kubelet=False,
                  kubelet_timeout=300.0, remove_stray_cas=False)
    return machine_patch.run(params, check_mode=check_mode, diff=diff)


def key_lines(cluster, rotation):
    """The base64 body lines of every service-account private key the cluster had or gets."""
    with open(os.path.join(rotation["path"], "sa.key"), "rb") as handle:
        keys = [handle.read(), cluster.secrets.service_account_key_pem]
    lines = {line.strip() for key in keys for line in key.decode().splitlines() if "-----" not in line}
    assert len(lines) > 10
    return lines


def configs(cluster):
    return {node.name: node.config_bytes() for node in cluster.nodes}


def test_phases_keep_old_tokens_until_remove_then_only_new_ones_work(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=3, workers=1, talos_version="v1.15.0")
    rotation = generate(cluster, str(tmp_path))
    before = issue_token(cluster, cluster.controlplanes[0])
    everywhere = {node.name: 200 for node in cluster.controlplanes}

    for phase in ("accept", "swap"):
        for node in cluster.controlplanes:
            result = patch(cluster, rotation, node, phase)
            assert result["changed"] and result["issuing_ca_fingerprint"]
            assert "PRIVATE KEY" not in repr(result)
        cluster.settle()
        assert token_status(cluster, before) == everywhere, phase
    after = issue_token(cluster, cluster.controlplanes[2])
    assert token_status(cluster, after) == everywhere

    # Check mode of the remove: a server-side dry run, nothing changes.
    untouched = configs(cluster)
    dry = patch(cluster, rotation, cluster.controlplanes[0], "remove", check_mode=True, diff=True)
    assert dry["changed"] and dry["dry_run_summary"].startswith("Dry run summary")
    assert "-accepted:" in dry["dry_run_summary"]
    assert not key_lines(cluster, rotation) & set(repr(dry).replace("\\n", "\n").split())
    assert dry["diff"]["after"]["accepted_public_keys"] == []
    assert configs(cluster) == untouched

    for node in cluster.controlplanes:
        assert patch(cluster, rotation, node, "remove")["progress_after"] == "removed"
    cluster.settle()
    assert token_status(cluster, before) == {node.name: 401 for node in cluster.controlplanes}
    assert token_status(cluster, after) == everywhere

    # A rerun of any phase changes nothing; the workers were never touched.
    untouched = configs(cluster)
    for phase in ("accept", "swap", "remove"):
        assert not patch(cluster, rotation, cluster.controlplanes[1], phase)["changed"]
    assert configs(cluster) == untouched
    with open(rotation["audit_log_path"], encoding="utf-8") as handle:
        assert handle.read().count('"event": "node_patched"') == 9


def test_remove_before_swap_is_refused_and_a_killed_run_resumes_from_the_nodes(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=2, workers=0, talos_version="v1.15.0")
    rotation = generate(cluster, str(tmp_path))
    first, second = cluster.controlplanes
    patch(cluster, rotation, first, "accept")
    with pytest.raises(RotationStateError, match="has not swapped"):
        patch(cluster, rotation, first, "remove")
    # "Killed" after the first node's accept: the swap of every node brings the second one along (accept first).
    rotation = generate(cluster, str(tmp_path))  # reused from disk, not regenerated
    assert not rotation["changed"]
    for node in (first, second):
        assert patch(cluster, rotation, node, "swap")["progress_after"] == "swapped"
    cluster.settle()
    assert issue_token(cluster, second).count(".") == 2


def test_v1_13_and_workers_are_refused_before_any_change(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=1, workers=1, talos_version="v1.13.4")
    assert MachineConfig.parse(cluster.controlplanes[0].config_bytes()).get_service_account() is None
    rotation = generate(cluster, str(tmp_path),
                        previous_ca=_pki.public_key_pem(cluster.secrets.service_account_key_pem).decode())
    untouched = configs(cluster)
    with pytest.raises(RotationStateError, match=r"Talos v1.13 or older.*Upgrade the node to Talos v1.14\+"):
        patch(cluster, rotation, cluster.controlplanes[0], "accept")
    with pytest.raises(RotationStateError, match="is a worker"):
        patch(cluster, rotation, cluster.workers[0], "accept")
    assert configs(cluster) == untouched


def token_params(cluster, path, **overrides):
    params = {name: spec.get("default") for name, spec in service_account_token.ARGUMENT_SPEC.items()}
    params.update(kubeconfig=cluster.refresh_kubeconfig(), path=str(path), encrypt="never",
                  api_servers=[node.address for node in cluster.controlplanes], deadline=5.0, retry_interval=0.2)
    params.update(overrides)
    return params


def test_token_module_issues_once_and_proves_acceptance_and_refusal(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=2, workers=0, talos_version="v1.15.0")
    path = tmp_path / "previous-token"
    assert service_account_token.run(token_params(cluster, path), check_mode=True)["changed"]
    assert not path.exists()
    issued = service_account_token.run(token_params(cluster, path))
    token = path.read_text().strip()
    assert issued["changed"] and os.stat(path).st_mode & 0o777 == 0o600
    assert token not in repr(issued) and issued["algorithm"] == "ES256"
    assert issued["subject"] == "system:serviceaccount:default:default"
    assert not service_account_token.run(token_params(cluster, path))["changed"]  # kept on rerun
    assert path.read_text().strip() == token
    ok = service_account_token.run(token_params(cluster, path, state="authenticated"))
    assert not ok.get("failed") and token not in repr(ok)
    refused = service_account_token.run(token_params(cluster, path, state="refused", deadline=0.5))
    assert refused["failed"] and "still authenticates" in refused["msg"] and token not in repr(refused)

    rotation = generate(cluster, str(tmp_path))
    for phase in ("accept", "swap", "remove"):
        for node in cluster.controlplanes:
            patch(cluster, rotation, node, phase)
    cluster.settle()
    assert not service_account_token.run(token_params(cluster, path, state="refused")).get("failed")
    fresh = service_account_token.run(token_params(cluster, tmp_path / "new-token"))
    assert fresh["algorithm"] == "RS256" and fresh["key_id"] != issued["key_id"]
    assert not service_account_token.run(token_params(cluster, tmp_path / "new-token", state="authenticated")).get("failed")


# --- the playbook, as an operator runs it ----------------------------------------------------------------------------

SA_ONLY = {"rotate_talos": False, "rotate_service_account": True, "rotate_ca_service_account_remove_wait": 0,
           "rotate_ca_service_account_algorithm": "rsa-2048", "rotate_ca_kubernetes_verify_deadline": 30}


def sa_state(cluster):
    """Per control plane: (signing public-key fingerprint, accepted fingerprints)."""
    state = {}
    for node in cluster.controlplanes:
        fields = MachineConfig.parse(node.config_bytes()).get_service_account()
        state[node.name] = (_pki.public_key_fingerprint(fields.signing_key),
                            tuple(_pki.public_key_fingerprint(pem) for pem in fields.accepted))
    return state


def assert_no_secret(cluster, rotation_dir, *outputs):
    sa_dir = os.path.join(rotation_dir, "service_account")
    keys = [cluster.secrets.service_account_key_pem] + private_keys_of(cluster)
    if os.path.exists(os.path.join(sa_dir, "sa.key")):
        with open(os.path.join(sa_dir, "sa.key"), "rb") as handle:
            keys.append(handle.read())
    needles = private_key_needles(*keys)
    for name in ("previous-token", "new-token"):
        if os.path.exists(os.path.join(sa_dir, name)):
            with open(os.path.join(sa_dir, name), encoding="ascii") as handle:
                token = handle.read().strip()
            needles.update({token, token.split(".")[2][:40]})
    for text in outputs:
        leaked = [needle for needle in needles if needle in text]
        assert not leaked, [text[max(0, text.index(needle) - 600):text.index(needle) + 200] for needle in leaked[:2]]


def test_playbook_rotates_the_service_account_key(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=3, workers=1, talos_version="v1.15.0")
    rotation_dir = str(tmp_path / "rotation")
    before_state, configs_before = sa_state(cluster), configs(cluster)
    old_token = issue_token(cluster, cluster.controlplanes[0])
    legacy = legacy_token_secret(cluster.secrets.service_account_key_pem, "kube-system", "legacy-ci-token")
    cluster.secrets_objects.append(legacy)
    legacy_token = base64.b64decode(legacy["data"]["token"]).decode()
    variables = dict(SA_ONLY, rotate_ca_secrets_file=str(cluster.secrets_path))

    check = run_playbook(cluster, rotation_dir, "--check", "--diff", "-vvv", extra_vars=variables)
    assert check.returncode == 0, check.output[-3000:]
    assert configs(cluster) == configs_before and not os.path.exists(os.path.join(rotation_dir, "service_account"))
    assert "Dry run summary" in check.output
    assert "1 legacy service-account token Secret(s)" in check.output and "kube-system/legacy-ci-token" in check.output

    real = run_playbook(cluster, rotation_dir, "-vvv", extra_vars=variables)
    assert real.returncode == 0, real.output[-3000:]
    after = sa_state(cluster)
    rotation = load_rotation(os.path.join(rotation_dir, "service_account"))
    assert set(after.values()) == {(rotation.ca_fingerprint, ())}
    assert rotation.previous_ca_fingerprint == next(iter(before_state.values()))[0]
    assert token_status(cluster, old_token) == {node.name: 401 for node in cluster.controlplanes}
    assert set(token_status(cluster, issue_token(cluster, cluster.controlplanes[1])).values()) == {200}
    assert "refused by every kube-apiserver" in real.output
    summary = next(line for line in real.output.splitlines() if "legacy token Secrets signed by the old key" in line)
    assert "legacy-ci-token" in summary
    assert set(token_status(cluster, legacy_token).values()) == {401}  # never refreshed: refused with its key
    # The workers were never touched; secrets.yaml holds the new key.
    assert all(configs(cluster)[node.name] == configs_before[node.name] for node in cluster.workers)
    assert SecretsBundle.load(str(cluster.secrets_path)).get_service_account_key() == rotation.signing_key()

    rerun = run_playbook(cluster, rotation_dir, extra_vars=variables)
    assert rerun.returncode == 0, rerun.output[-3000:]
    assert sa_state(cluster) == after and all(host["changed"] == 0 for host in rerun.recap.values()), rerun.recap
    assert legacy_token not in check.output + real.output + rerun.output
    assert_no_secret(cluster, rotation_dir, check.output, real.output, rerun.output)


def test_playbook_killed_at_phase_boundaries_resumes(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=2, workers=0, talos_version="v1.15.0")
    rotation_dir = str(tmp_path / "rotation")
    first = cluster.controlplanes[0].address
    for kill in ("Patch | control plane accept: %s" % first, "Swapped | keep a token signed by the new key"):
        killed = run_playbook(cluster, rotation_dir, kill_after="%s@%s" % (kill, cluster.controlplanes[0].name),
                              extra_vars=SA_ONLY)
        assert killed.returncode != 0
        assert lock_released(rotation_dir)
    resumed = run_playbook(cluster, rotation_dir, extra_vars=SA_ONLY)
    assert resumed.returncode == 0, resumed.output[-3000:]
    rotation = load_rotation(os.path.join(rotation_dir, "service_account"))
    assert set(sa_state(cluster).values()) == {(rotation.ca_fingerprint, ())}


def test_remove_as_a_later_job_and_v1_13_refused(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=1, workers=0, talos_version="v1.15.0")
    rotation_dir = str(tmp_path / "rotation")
    early = run_playbook(cluster, rotation_dir, extra_vars=dict(SA_ONLY, rotate_ca_phases=["remove"]))
    assert early.returncode != 0 and "run the phases" in early.output
    first = run_playbook(cluster, rotation_dir, extra_vars=dict(SA_ONLY, rotate_ca_phases=["accept", "swap"]))
    assert first.returncode == 0, first.output[-3000:]
    assert all(accepted for _signing, accepted in sa_state(cluster).values())  # the old key is still accepted
    later = run_playbook(cluster, rotation_dir, extra_vars=dict(SA_ONLY, rotate_ca_phases=["remove"]))
    assert later.returncode == 0, later.output[-3000:]
    assert all(not accepted for _signing, accepted in sa_state(cluster).values())

    old = make_sim_cluster(controlplanes=1, workers=1, talos_version="v1.13.4")
    untouched = configs(old)
    refused = run_playbook(old, str(tmp_path / "old-rotation"), extra_vars=SA_ONLY)
    assert refused.returncode != 0
    # The role's shape check (kube_documents.yml) refuses it first, naming the node, its address and Talos version.
    assert "has its service-account key in cluster.serviceAccount, not in a KubeServiceAccountConfig document" in refused.output
    assert "Talos v1.13.4" in refused.output and "Upgrade those nodes to Talos v1.14 or later" in refused.output
    assert configs(old) == untouched


def test_a_negative_wait_is_refused_before_any_change(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=1, workers=0, talos_version="v1.15.0")
    untouched = configs(cluster)
    refused = run_playbook(cluster, str(tmp_path / "rotation"),
                           extra_vars=dict(SA_ONLY, rotate_ca_service_account_remove_wait=-5))
    assert refused.returncode != 0 and "rotate_ca_service_account_remove_wait is -5" in refused.output
    assert configs(cluster) == untouched and not os.path.exists(tmp_path / "rotation" / "service_account")
