"""Service-account key rotation (issue 17 item 2) against the simulator: the phases of talos_machine_patch
ca=service_account on every control plane, with tokens proving what kube-apiserver trusts in each phase."""

import os

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._auth import AUTH_ARGUMENT_SPEC
from ansible_collections.talosops.pki.plugins.module_utils._backends import ca_generate, machine_patch, service_account_token
from ansible_collections.talosops.pki.plugins.module_utils._errors import RotationStateError
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import MachineConfig

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
