"""The cert_report filter: one report from many clusters' talos_cert_info results, sorted and rendered in Python."""

import datetime

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.talosops.pki.plugins.filter.cert_report import cert_report

NOW = datetime.datetime(2026, 12, 6, tzinfo=datetime.timezone.utc)


def entry(cluster, item, days, status="ok", **extra):
    return dict({"cluster": cluster, "kind": "talos", "item": item, "role": "issuing", "where": ["cp-1 (10.5.0.2)"],
                 "subject": "O=talos", "fingerprint": "ab" * 32, "not_after": "2036-01-01T00:00:00Z", "days_left": days,
                 "status": status}, **extra)


def result(cluster, *entries):
    return {"changed": False, "cluster": cluster, "entries": list(entries)}


def test_entries_of_all_clusters_sorted_by_days_left_errors_first_keys_last():
    report = cert_report([
        result("a", entry("a", "Talos API CA", 3000), entry("a", "signing key", None, "no expiry")),
        {"skipped": True, "changed": False},
        result("b", entry("b", "Talos API CA", 29), entry("b", "unreadable node", None, "error", error="down")),
        result("c", entry("c", "etcd CA", 365)),
    ], 90, now=NOW)
    assert [(row["cluster"], row["item"]) for row in report["entries"]] == [
        ("b", "unreadable node"), ("b", "Talos API CA"), ("c", "etcd CA"), ("a", "Talos API CA"), ("a", "signing key")]
    assert report["clusters"] == ["a", "b", "c"] and report["clusters_alerting"] == ["b"]
    assert [row["item"] for row in report["alerts"]] == ["unreadable node", "Talos API CA"]
    assert report["min_days_left"] == 29
    assert "2 certificate(s) or source(s) need attention" in report["summary"] and "Talos API CA issuing of b: 29 days left" in report["summary"]


def test_the_report_threshold_overrides_each_task_and_expired_is_its_own_status():
    report = cert_report([result("a", entry("a", "Talos API CA", 100, "ok"), entry("a", "etcd CA", -2, "ok"))], 120, now=NOW)
    assert [(row["days_left"], row["status"]) for row in report["entries"]] == [(-2, "expired"), (100, "warn")]
    relaxed = cert_report([result("a", entry("a", "Talos API CA", 29, "warn"))], 20, now=NOW)
    assert relaxed["alerts"] == [] and relaxed["summary"] == "Nothing below 20 days: the soonest expiry is in 29 days."


def test_markdown_table_one_row_per_entry_in_order_with_cells_escaped():
    report = cert_report([result("a|b", entry("a|b", "Talos API CA", 29, where=["n%d" % i for i in range(5)]))], 90, now=NOW)
    lines = report["markdown"].splitlines()
    assert lines[0] == "# Certificate expiry report"
    assert "Generated 2026-12-06T00:00:00Z; threshold 90 days; 1 cluster(s): a|b." in lines
    header = lines.index("| Days left | Status | Cluster | Certificate | Role | Not after (UTC) | Fingerprint | Where |")
    assert lines[header + 2] == ("| 29 | WARN | a\\|b | Talos API CA | issuing | 2036-01-01T00:00:00Z | %s | n0, n1, n2 and 2 more |"
                                 % ("ab" * 8))


def test_a_failed_task_is_an_error_entry():
    report = cert_report([{"failed": True, "cluster": "x", "msg": "Unsupported parameters"}], 90, now=NOW)
    assert report["alerts"][0]["status"] == "error" and report["alerts"][0]["error"] == "Unsupported parameters"


@pytest.mark.parametrize("results, days", [("not a list", 90), ([], "soon")])
def test_bad_input_is_a_filter_error(results, days):
    with pytest.raises(AnsibleFilterError, match="cert_report"):
        cert_report(results, days)


def test_untrusted_and_stale_entries_stay_alerts_whatever_their_days_left():
    report = cert_report([result("a", entry("a", "talosconfig", 300, "untrusted"), entry("a", "secrets", 3000, "stale"))], 90, now=NOW)
    assert [row["status"] for row in report["alerts"]] == ["untrusted", "stale"]
    assert "issued by no CA the nodes hold" in report["summary"] and "its CA is no longer the cluster's" in report["summary"]
