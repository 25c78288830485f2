"""talos_cert_info without a cluster: every CA of every config shape, strays, disagreements, days left, bad files."""

import datetime

import pytest
from talos_sim import machineconfig as sim_config
from talos_sim import pki as sim_pki

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._backends import cert_info
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import MachineConfig

NOW = datetime.datetime(2026, 12, 6, 12, tzinfo=datetime.timezone.utc)


@pytest.fixture(scope="module")
def secrets():
    return sim_config.ClusterSecrets.generate("unit", {"etcd": datetime.timedelta(days=10)})


def config(secrets, machine_type, tag):
    data = sim_config.generate(secrets, machine_type, sim_config.TalosVersion.parse(tag), "10.5.0.2", "v1.34.1")
    return MachineConfig.parse(data, "machine config of %s" % machine_type)


def params(**extra):
    values = {name: spec.get("default") for name, spec in cert_info.ARGUMENT_SPEC.items()}
    values.update(cluster="unit", nodes=[], node_names={"10.5.0.2": "cp-1"})
    values.update(extra)
    return values


@pytest.mark.parametrize("tag", ["v1.13.4", "v1.15.0"])
def test_every_ca_and_the_signing_key_in_both_config_shapes(secrets, tag):
    controlplane, worker = config(secrets, "controlplane", tag), config(secrets, "worker", tag)
    found = controlplane.report_cas()
    assert set(found) == {"talos", "kubernetes", "aggregator", "etcd", "service_account"}
    assert _pki.same_certificate(found["aggregator"].issuing_crt, secrets.aggregator_ca.cert_pem)
    assert _pki.same_certificate(found["etcd"].issuing_crt, secrets.etcd_ca.cert_pem)
    assert _pki.public_key_fingerprint(found["service_account"].issuing_key) == _pki.public_key_fingerprint(
        secrets.service_account_key_pem)
    assert set(worker.report_cas()) == {"talos", "kubernetes"}  # workers hold no aggregator, etcd or service-account material
    assert controlplane.cluster_identity == (secrets.cluster_id, "unit")

    report = cert_info.Report(params(), NOW)
    report.add_node_cas({"10.5.0.2": ({}, controlplane), "10.5.0.5": ({}, worker)})
    by_kind = {entry["kind"]: entry for entry in report.entries}
    assert by_kind["talos"]["where"] == ["cp-1 (10.5.0.2)", "10.5.0.5"]
    assert by_kind["kubernetes"]["role"] == "issuing" and "10.5.0.5" in by_kind["kubernetes"]["where"]
    assert by_kind["etcd"]["days_left"] == 9 and by_kind["etcd"]["status"] == "warn"  # 10 days minus the 5-minute backdate
    assert by_kind["service_account"]["days_left"] is None and by_kind["service_account"]["status"] == "no expiry"
    assert report.disagreements == {} and report.stray_cas == {}


def test_stray_accepted_cas_and_disagreeing_nodes(secrets):
    stray = sim_pki.new_os_ca()
    other = sim_pki.new_os_ca()
    first = config(secrets, "controlplane", "v1.13.4")
    fields = first.get_ca("talos")
    first.set_ca("talos", fields.issuing_crt, fields.issuing_key, (stray.cert_pem,))
    second = config(secrets, "controlplane", "v1.13.4")
    second.set_ca("talos", other.cert_pem, other.key_pem, ())
    report = cert_info.Report(params(), NOW)
    report.add_node_cas({"10.5.0.2": ({}, first), "10.5.0.3": ({}, second)})
    assert report.stray_cas["talos"][0]["fingerprint"] == stray.fingerprint.hex()
    assert [entry["role"] for entry in report.entries if entry["kind"] == "talos"].count("stray accepted") == 1
    assert sorted(report.disagreements["talos"]) == sorted([_pki.fingerprint(secrets.os_ca.cert_pem), other.fingerprint.hex()])


def test_days_left_round_down_and_go_negative():
    assert cert_info.days_left("2026-12-07T11:59:59Z", NOW) == 0
    assert cert_info.days_left("2026-12-07T12:00:00Z", NOW) == 1
    assert cert_info.days_left("2026-12-06T11:00:00Z", NOW) == -1
    assert cert_info.status_of(-1, 90) == "expired" and cert_info.status_of(89, 90) == "warn" and cert_info.status_of(90, 90) == "ok"


def test_unreadable_files_and_an_unreachable_cluster_are_entries_not_failures(tmp_path):
    broken = tmp_path / "talosconfig"
    broken.write_text("context: x\n")
    result = cert_info.run(params(talosconfig=str(tmp_path / "missing"), nodes=["10.5.0.2"], talosconfigs=[str(broken)],
                                  secrets_files=[str(tmp_path / "absent.yaml")]), now=NOW)
    assert "failed" not in result and result["alerts"] == 3
    assert [entry["role"] for entry in result["entries"]] == ["error"] * 3
    assert result["entries"][1]["where"] == [str(broken)] and result["entries"][1]["item"] == "unreadable talosconfig"


def talosconfig_text(ca, client):
    context = {"endpoints": ["10.5.0.2"], "ca": sim_pki.b64(ca.cert_pem), "crt": sim_pki.b64(client.cert_pem),
               "key": sim_pki.b64(client.key_pem)}
    return "context: unit\ncontexts:\n    unit:\n%s" % "".join(
        "        %s: %s\n" % (key, value if isinstance(value, str) else "[%s]" % ", ".join(value)) for key, value in context.items())


def test_credentials_the_nodes_refuse_and_a_stale_secrets_bundle_alert(secrets, tmp_path):
    nodes = {"10.5.0.2": ({}, config(secrets, "controlplane", "v1.13.4"))}
    own = tmp_path / "own"
    own.write_text(talosconfig_text(secrets.os_ca, sim_pki.talos_client_certificate(secrets.os_ca, roles=("os:reader",))))
    foreign_ca = sim_pki.new_os_ca()
    foreign = tmp_path / "foreign"
    foreign.write_text(talosconfig_text(foreign_ca, sim_pki.talos_client_certificate(foreign_ca)))
    current, stale = tmp_path / "secrets.yaml", tmp_path / "old-secrets.yaml"
    current.write_bytes(secrets.secrets_yaml())
    stale.write_bytes(sim_config.ClusterSecrets.generate("unit").secrets_yaml())

    report = cert_info.Report(params(), NOW)
    report.add_node_cas(nodes)
    report.add_file(str(own), "talosconfig", cert_info._talosconfig_certificates)
    report.add_file(str(foreign), "talosconfig", cert_info._talosconfig_certificates)
    report.add_file(str(current), "secrets bundle", cert_info._secrets_certificates)
    report.add_file(str(stale), "secrets bundle", cert_info._secrets_certificates)
    files = [entry for entry in report.entries if entry["role"] in ("client certificate", "secrets bundle")]
    by_file = {}
    for entry in files:
        by_file.setdefault(entry["where"][0], []).append(entry)
    assert [(entry["trusted"], entry["status"], entry["roles"]) for entry in by_file[str(own)]] == [(True, "ok", ["os:reader"])]
    assert [(entry["trusted"], entry["status"]) for entry in by_file[str(foreign)]] == [(False, "untrusted")]
    assert {entry["status"] for entry in by_file[str(current)]} == {"ok", "warn"}  # the 10-day etcd CA warns
    assert all(entry["in_cluster"] for entry in by_file[str(current)])
    assert [entry["status"] for entry in by_file[str(stale)]] == ["stale"] * 4


def test_a_client_certificate_counts_down_to_the_expiry_of_the_ca_that_issued_it(tmp_path):
    """A one-year admin certificate from a CA with 30 days left stops working in 30 days: the report says 30, not 365."""
    short = sim_config.ClusterSecrets.generate("unit", {"os": datetime.timedelta(days=30)})
    nodes = {"10.5.0.2": ({}, config(short, "controlplane", "v1.15.0"))}
    client = sim_pki.talos_client_certificate(short.os_ca)
    path = tmp_path / "talosconfig"
    path.write_text(talosconfig_text(short.os_ca, client))
    now = datetime.datetime.now(datetime.timezone.utc)

    report = cert_info.Report(params(), now)
    report.add_node_cas(nodes)
    report.add_file(str(path), "talosconfig", cert_info._talosconfig_certificates)
    entry = next(entry for entry in report.entries if entry["role"] == "client certificate")
    ca_entry = next(entry for entry in report.entries if entry["kind"] == "talos" and entry["role"] == "issuing")
    assert entry["trusted"] is True
    assert entry["not_after"] == ca_entry["not_after"] and entry["days_left"] == ca_entry["days_left"] <= 30
    assert entry["status"] == "warn"  # under the 90 warning days
    assert cert_info.days_left(entry["certificate_not_after"], now) >= 360  # its own date is kept beside
    assert "capped" in entry["note"]


def test_a_client_certificate_that_ends_before_its_ca_keeps_its_own_date(secrets, tmp_path):
    nodes = {"10.5.0.2": ({}, config(secrets, "controlplane", "v1.15.0"))}
    path = tmp_path / "talosconfig"
    path.write_text(talosconfig_text(secrets.os_ca, sim_pki.talos_client_certificate(secrets.os_ca)))
    report = cert_info.Report(params(), datetime.datetime.now(datetime.timezone.utc))
    report.add_node_cas(nodes)
    report.add_file(str(path), "talosconfig", cert_info._talosconfig_certificates)
    entry = next(entry for entry in report.entries if entry["role"] == "client certificate")
    assert "certificate_not_after" not in entry and entry["status"] == "ok" and 360 <= entry["days_left"] <= 366
