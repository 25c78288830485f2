"""The expiry report over a fleet: three simulated clusters in one inventory (one group per cluster), one of them with a
Talos API CA that expires in 30 days. The report lists every CA of every cluster with the right days left, flags that
cluster and exits non-zero; check mode changes nothing; no private key appears anywhere."""

import datetime
import json
import math
import os
import subprocess

import yaml

from _playbook import ANSIBLE_PLAYBOOK, REPO_ROOT, cluster_private_keys, private_key_needles

from ansible_collections.talosops.pki.plugins.module_utils import _pki

PLAYBOOK = os.path.join(REPO_ROOT, "playbooks", "cert_report.yml")
SHORT_LIVED = datetime.timedelta(days=30)
# talos_cert_info kind -> the simulator's secrets attribute
SECRETS_CAS = {"talos": "os_ca", "kubernetes": "k8s_ca", "aggregator": "aggregator_ca", "etcd": "etcd_ca"}


def fleet_inventory(clusters, path):
    """One group per cluster, with its cluster name, talosconfig, endpoints and kubeconfig as group vars."""
    children = {}
    for cluster in clusters:
        children[cluster.name] = {
            "hosts": {node.name: {"talos_node_address": node.address} for node in cluster.nodes},
            "vars": {"talos_cluster": cluster.name, "talos_talosconfig": cluster.talosconfig_path,
                     "talos_endpoints": [node.address for node in cluster.controlplanes],
                     "talos_kubeconfig": cluster.kubeconfig_path, "cert_report_secrets_files": [cluster.secrets_path]}}
    document = {"all": {"vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                        "children": children}}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(path)


def report(inventory, report_dir, *args, extra_vars=None):
    variables = dict({"cert_report_dir": str(report_dir)}, **(extra_vars or {}))
    completed = subprocess.run([ANSIBLE_PLAYBOOK, "-i", inventory, PLAYBOOK, "-f", "10", "-e", json.dumps(variables)] + list(args),
                               env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0"), capture_output=True, text=True,
                               timeout=600, check=False)
    return completed.returncode, completed.stdout + completed.stderr


def expected_days(pem, generated_at):
    not_after = datetime.datetime.fromisoformat(_pki.describe_certificate(pem)["not_after"].replace("Z", "+00:00"))
    moment = datetime.datetime.fromisoformat(generated_at.replace("Z", "+00:00"))
    return math.floor((not_after - moment).total_seconds() / 86400)


def test_report_over_three_clusters_flags_the_short_lived_ca_and_exits_non_zero(make_sim_cluster, tmp_path):
    clusters = [make_sim_cluster(controlplanes=1, workers=1, name="fleet-a"),
                make_sim_cluster(controlplanes=1, workers=1, name="fleet-b", ca_validity={"os": SHORT_LIVED}),
                make_sim_cluster(controlplanes=2, workers=1, name="fleet-c", talos_version="v1.15.0")]
    inventory = fleet_inventory(clusters, tmp_path / "fleet.yml")
    configs = {node.address: node.config_bytes() for cluster in clusters for node in cluster.nodes}
    needles = private_key_needles(*(key for cluster in clusters for key in cluster_private_keys(cluster)))

    # Check mode: the same reading and verdict, but no file written and nothing changed on any node.
    check_dir = tmp_path / "check-report"
    code, check_output = report(inventory, check_dir, "--check")
    assert code != 0, check_output[-4000:]
    assert "Talos API CA issuing of fleet-b: 29 days left" in check_output, check_output[-4000:]
    assert not check_dir.exists()
    assert {node.address: node.config_bytes() for cluster in clusters for node in cluster.nodes} == configs

    report_dir = tmp_path / "report"
    code, output = report(inventory, report_dir, "-vvv")
    assert code != 0, output[-4000:]
    assert "in fleet-b;" in output and "fleet-a" not in output.split("need attention")[1].split(";")[0]
    data = json.loads((report_dir / "cert-report.json").read_text())
    markdown = (report_dir / "cert-report.md").read_text()
    assert data["clusters"] == ["fleet-a", "fleet-b", "fleet-c"]

    for cluster in clusters:
        entries = [entry for entry in data["entries"] if entry["cluster"] == cluster.name]
        node_entries = {entry["kind"]: entry for entry in entries if entry["kind"] and entry["role"] in ("issuing", "signing key")}
        assert set(node_entries) == {"talos", "kubernetes", "aggregator", "etcd", "service_account"}, cluster.name
        for kind, attribute in SECRETS_CAS.items():
            ca = getattr(cluster.secrets, attribute)
            entry = node_entries[kind]
            assert entry["fingerprint"] == _pki.fingerprint(ca.cert_pem), (cluster.name, kind)
            assert entry["days_left"] == expected_days(ca.cert_pem, data["generated_at"]), (cluster.name, kind)
            short = cluster.name == "fleet-b" and kind == "talos"
            assert entry["status"] == ("warn" if short else "ok"), (cluster.name, kind, entry)
        holders = set(node_entries["talos"]["where"])
        assert holders == {"%s (%s)" % (node.name, node.address) for node in cluster.nodes}
        assert node_entries["service_account"]["days_left"] is None
        assert node_entries["service_account"]["fingerprint"] == _pki.public_key_fingerprint(cluster.secrets.service_account_key_pem)
        files = {entry["where"][0] for entry in entries if entry["role"] in ("client certificate", "secrets bundle")}
        assert files == {cluster.talosconfig_path, cluster.kubeconfig_path, cluster.secrets_path}
    assert data["entries"][0]["cluster"] == "fleet-b" and data["entries"][0]["kind"] == "talos"
    # The CA on the nodes, its copy in the secrets bundle, and the one-year admin certificate it issued (which stops
    # working with it: it counts down to the CA's expiry); everything else is a year or more away.
    assert sorted((entry["cluster"], entry["item"], entry["role"]) for entry in data["alerts"]) == [
        ("fleet-b", "Talos API CA", "issuing"), ("fleet-b", "Talos API CA", "secrets bundle"),
        ("fleet-b", "Talos API client certificate (context fleet-b)", "client certificate")]
    capped = next(entry for entry in data["alerts"] if entry["role"] == "client certificate")
    assert capped["days_left"] == data["entries"][0]["days_left"] and capped["certificate_not_after"] > capped["not_after"]
    assert data["entries"][3]["days_left"] >= 364
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| Days")]
    assert rows[0].startswith("| 29 | WARN | fleet-b | Talos API CA | issuing |"), markdown
    days = [int(row.split("|")[1]) for row in rows if row.split("|")[1].strip() != "-"]
    assert days == sorted(days)

    for name, text in (("check-mode output", check_output), ("output", output), ("JSON report", json.dumps(data)),
                       ("Markdown report", markdown)):
        assert not [needle for needle in needles if needle in text], "private key material in the %s" % name

    # Above the threshold nothing alerts: the exit code follows cert_report_warn_days.
    code, output = report(inventory, tmp_path / "relaxed", extra_vars={"cert_report_warn_days": 20})
    assert code == 0, output[-4000:]
    assert "Nothing below 20 days: the soonest expiry is in 29 days." in output


def test_an_unreachable_cluster_is_reported_not_hidden(make_sim_cluster, tmp_path):
    """One cluster down must not hide the others, and counts as an alert."""
    up = make_sim_cluster(controlplanes=1, workers=1, name="fleet-up")
    down = make_sim_cluster(controlplanes=1, workers=0, name="fleet-down")
    inventory = fleet_inventory([up, down], tmp_path / "fleet.yml")
    down.stop()
    code, output = report(inventory, tmp_path / "report", extra_vars={"cert_report_warn_days": 20})
    assert code != 0, output[-4000:]
    data = json.loads((tmp_path / "report" / "cert-report.json").read_text())
    assert [entry["cluster"] for entry in data["alerts"]] == ["fleet-down"] * len(data["alerts"]) and data["alerts"]
    assert data["alerts"][0]["status"] == "error"
    assert {entry["kind"] for entry in data["entries"] if entry["cluster"] == "fleet-up" and entry["kind"]} == {
        "talos", "kubernetes", "aggregator", "etcd", "service_account"}
