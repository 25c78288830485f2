"""The aggregator (front-proxy) CA rotation, end to end on a v1.15-shape simulated cluster (2 control planes + 1
worker): check mode changes nothing, the real run proves the front-proxy trust in each phase, a rerun changes nothing,
runs killed at phase boundaries resume, secrets.yaml gets certs.k8saggregator, no key in any output."""

import base64
import json
import os
import shutil

import pytest
import yaml

from _playbook import private_key_needles, run_playbook

from ansible_collections.talosops.pki.plugins.module_utils import _pki

# A short verification deadline: a failing check fails in seconds, not minutes.
AGGREGATOR_ONLY = {"rotate_talos": False, "rotate_aggregator": True, "rotate_ca_kubernetes_verify_deadline": 30}


def aggregator_fields(node):
    """(issuing certificate fingerprint, [accepted fingerprints]) of a control plane's KubeAggregatorCAConfig."""
    document = next(d for d in yaml.safe_load_all(node.config_bytes()) if d and d.get("kind") == "KubeAggregatorCAConfig")
    return (_pki.fingerprint(document["issuingCA"]["cert"].encode()),
            [_pki.fingerprint(pem.encode()) for pem in document.get("acceptedCAs") or []])


def configs(cluster):
    return {node.name: node.config_bytes() for node in cluster.nodes}


def secrets_aggregator_fingerprint(path):
    with open(path, encoding="utf-8") as handle:
        return _pki.fingerprint(base64.b64decode(yaml.safe_load(handle)["certs"]["k8saggregator"]["crt"]))


def old_secrets_keys(cluster):
    with open(cluster.secrets_path, encoding="utf-8") as handle:
        certs = yaml.safe_load(handle)["certs"]
    return [base64.b64decode(entry["key"]) for entry in certs.values() if entry.get("key")]


@pytest.fixture(scope="module", name="rotated")
def rotated_fixture(make_module_sim_cluster, tmp_path_factory):
    """One cluster, rotated: check mode, the real run, a rerun."""
    cluster = make_module_sim_cluster(controlplanes=2, workers=1, talos_version="v1.15.0")
    workdir = tmp_path_factory.mktemp("aggregator")
    secrets = str(workdir / "secrets.yaml")
    shutil.copy(cluster.secrets_path, secrets)
    rotation = str(workdir / "rotation")
    extra = dict(AGGREGATOR_ONLY, rotate_ca_secrets_file=secrets)
    before = configs(cluster)
    old = aggregator_fields(cluster.controlplanes[0])[0]
    check = run_playbook(cluster, rotation, "--check", "--diff", "-vvv", extra_vars=extra)
    after_check = configs(cluster)
    real = run_playbook(cluster, rotation, "-vvv", extra_vars=extra)
    rerun = run_playbook(cluster, rotation, extra_vars=extra)
    return {"cluster": cluster, "rotation": rotation, "secrets": secrets, "old": old, "before": before,
            "after_check": after_check, "check": check, "real": real, "rerun": rerun}


def test_check_mode_contacts_the_nodes_and_changes_nothing(rotated):
    check = rotated["check"]
    assert check.returncode == 0, check.output[-3000:]
    assert rotated["after_check"] == rotated["before"]
    controlplanes = rotated["cluster"].controlplanes
    assert "Aggregator (front-proxy) CA rotation, check mode: nothing was changed; %d of %d nodes would move" % (
        len(controlplanes), len(controlplanes)) in check.output
    rows = [" ".join(line.split()) for line in check.output.splitlines()]
    for node in controlplanes:  # the preflight's reading, through the three phases
        assert "%s %s controlplane pending would be removed" % (node.name, node.address) in rows


def test_the_rotation_moves_every_control_plane_to_the_new_ca_alone(rotated):
    real = rotated["real"]
    assert real.returncode == 0, real.output[-5000:]
    with open(os.path.join(rotated["rotation"], "aggregator", "rotation.json"), encoding="utf-8") as handle:
        state = json.load(handle)
    new = state["ca_fingerprint"]
    assert state["previous_ca_fingerprint"] == rotated["old"] != new
    for node in rotated["cluster"].controlplanes:
        assert aggregator_fields(node) == (new, [])
        assert [_pki.fingerprint(pem) for pem in node.requestheader_client_ca_pems] == [new]
        assert _pki.is_issued_by(node.front_proxy_client_certificate().cert_pem, node.requestheader_client_ca_pems[0])
    for node in rotated["cluster"].workers:
        assert node.config_bytes() == rotated["before"][node.name]
    assert secrets_aggregator_fingerprint(rotated["secrets"]) == new


def test_the_front_proxy_trust_was_proven_in_each_phase(rotated):
    output = rotated["real"].output
    for label, previous in (("new front-proxy CA accepted, old still accepted", "accepted"),
                            ("new front-proxy CA issuing, old still accepted", "accepted"),
                            ("new front-proxy CA only, old refused", "refused")):
        section = output.split("Verify | %s" % label)[1].split("TASK [")[0]
        result = json.loads(section[section.index("{"):section.rindex("}") + 1])
        assert result["front_proxy"]["probes"]["new"]["expect"] == "accepted"
        assert result["front_proxy"]["probes"]["previous"]["expect"] == previous
        servers = result["front_proxy"]["api_servers"]
        assert len(servers) == len(rotated["cluster"].controlplanes)
        assert all(report["ok"] for probes in servers.values() for report in probes.values())


def test_rerun_changes_nothing(rotated):
    rerun = rotated["rerun"]
    assert rerun.returncode == 0, rerun.output[-3000:]
    assert all(counts["changed"] == 0 for counts in rerun.recap.values()), rerun.recap


def test_audit_log_records_each_patch(rotated):
    with open(os.path.join(rotated["rotation"], "aggregator", "audit.jsonl"), encoding="utf-8") as handle:
        events = [json.loads(line) for line in handle]
    patched = [(event["node"], event["phase"]) for event in events if event["event"] == "node_patched"]
    controlplanes = [node.address for node in rotated["cluster"].controlplanes]
    assert patched == [(node, phase) for phase in ("accept", "swap", "remove") for node in controlplanes]


def test_no_key_in_any_output(rotated):
    new_key_path = os.path.join(rotated["rotation"], "aggregator", "ca.key")
    with open(new_key_path, "rb") as handle:
        new_key = handle.read()
    needles = private_key_needles(new_key, *old_secrets_keys(rotated["cluster"]))
    for run in (rotated["check"], rotated["real"], rotated["rerun"]):
        leaked = [needle for needle in needles if needle in run.output]
        assert not leaked, leaked[:3]
    assert os.stat(new_key_path).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("boundary", ["Verify | new front-proxy CA accepted", "Patch | aggregator CA, phase swap (control planes",
                                      "Verify | new front-proxy CA only"])
def test_killed_at_a_phase_boundary_and_rerun(make_sim_cluster, tmp_path, boundary):
    cluster = make_sim_cluster(controlplanes=2, workers=1, talos_version="v1.15.0")
    rotation = str(tmp_path / "rotation")
    host = cluster.controlplanes[0].name
    killed = run_playbook(cluster, rotation, kill_after="%s@%s" % (boundary, host), extra_vars=AGGREGATOR_ONLY)
    assert killed.returncode != 0
    assert "FAILED!" not in killed.output  # killed, not failed
    with open(os.path.join(rotation, "aggregator", "rotation.json"), encoding="utf-8") as handle:
        state = json.load(handle)
    # Killed mid-rotation: the first control plane already trusts the new CA.
    issuing, accepted = aggregator_fields(cluster.controlplanes[0])
    assert state["ca_fingerprint"] in [issuing] + accepted
    resumed = run_playbook(cluster, rotation, extra_vars=AGGREGATOR_ONLY)
    assert resumed.returncode == 0, resumed.output[-4000:]
    with open(os.path.join(rotation, "aggregator", "rotation.json"), encoding="utf-8") as handle:
        new = json.load(handle)["ca_fingerprint"]
    for node in cluster.controlplanes:
        assert aggregator_fields(node) == (new, [])


def test_combined_flags_run_talos_kubernetes_then_aggregator(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=1, workers=1, talos_version="v1.15.0")
    old = aggregator_fields(cluster.controlplanes[0])[0]
    run = run_playbook(cluster, str(tmp_path / "rotation"), extra_vars={
        "rotate_talos": True, "rotate_kubernetes": True, "rotate_aggregator": True, "rotate_ca_kubernetes_verify_deadline": 60,
        "rotate_ca_kubeconfig": str(cluster.kubeconfig_path)})
    assert run.returncode == 0, run.output[-4000:]
    starts = [run.output.index("TASK [talosops.pki.rotate_ca : %s" % name)
              for name in ("Rotate the Talos API CA", "Rotate the Kubernetes API CA", "Rotate the aggregator (front-proxy) CA")]
    assert starts == sorted(starts)
    for kind in ("talos", "kubernetes", "aggregator"):
        assert os.path.isfile(os.path.join(str(tmp_path / "rotation"), kind, "rotation.json"))
    issuing, accepted = aggregator_fields(cluster.controlplanes[0])
    assert issuing != old and accepted == []


def test_phases_as_separate_jobs_refuse_to_skip_a_phase(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=2, workers=1, talos_version="v1.15.0")
    rotation = str(tmp_path / "rotation")
    accept = run_playbook(cluster, rotation, extra_vars=dict(AGGREGATOR_ONLY, rotate_ca_phases=["accept"]))
    assert accept.returncode == 0, accept.output[-3000:]
    before = configs(cluster)
    remove = run_playbook(cluster, rotation, extra_vars=dict(AGGREGATOR_ONLY, rotate_ca_phases=["remove"]))
    assert remove.returncode != 0
    assert "starts with the remove phase of the aggregator CA rotation" in remove.output
    assert "run the swap phase first" in remove.output
    assert configs(cluster) == before
    rest = run_playbook(cluster, rotation, extra_vars=dict(AGGREGATOR_ONLY, rotate_ca_phases=["swap", "remove"]))
    assert rest.returncode == 0, rest.output[-3000:]
    with open(os.path.join(rotation, "aggregator", "rotation.json"), encoding="utf-8") as handle:
        new = json.load(handle)["ca_fingerprint"]
    assert all(aggregator_fields(node) == (new, []) for node in cluster.controlplanes)


def test_a_secrets_file_of_another_cluster_is_refused_before_any_change(make_sim_cluster, tmp_path):
    cluster = make_sim_cluster(controlplanes=1, workers=1, talos_version="v1.15.0")
    secrets = str(tmp_path / "secrets.yaml")
    shutil.copy(cluster.secrets_path, secrets)
    with open(secrets, encoding="utf-8") as handle:
        bundle = yaml.safe_load(handle)
    stranger = _pki.generate_ca(_pki.KIND_AGGREGATOR)
    bundle["certs"]["k8saggregator"] = {"crt": base64.b64encode(stranger.crt).decode(), "key": base64.b64encode(stranger.key).decode()}
    with open(secrets, "w", encoding="utf-8") as handle:
        yaml.safe_dump(bundle, handle)
    before = configs(cluster)
    run = run_playbook(cluster, str(tmp_path / "rotation"), extra_vars=dict(AGGREGATOR_ONLY, rotate_ca_secrets_file=secrets))
    assert run.returncode != 0
    assert "holds a aggregator CA" in run.output and "belongs to another cluster" in run.output
    assert "Traceback" not in run.output
    assert configs(cluster) == before
