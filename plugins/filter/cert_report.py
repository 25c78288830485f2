# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cert_report filter: many clusters' talos_cert_info results as one report (documented in cert_report.yml)."""

from __future__ import annotations

import datetime

from ansible.errors import AnsibleFilterError

ALERTS = ("warn", "expired", "error", "untrusted", "stale")
FINGERPRINT_SHOWN = 16
COLUMNS = ("Days left", "Status", "Cluster", "Certificate", "Role", "Not after (UTC)", "Fingerprint", "Where")
WHERE_SHOWN = 3


def _order(entry):
    """Unreadable sources first, then the fewest days left; keys (no expiry) last."""
    if entry.get("status") == "error":
        return (0, 0, entry.get("cluster") or "", entry.get("item") or "")
    if entry.get("days_left") is None:
        return (2, 0, entry.get("cluster") or "", entry.get("item") or "")
    return (1, entry["days_left"], entry.get("cluster") or "", entry.get("item") or "")


def _verdict(entry):
    if entry["status"] == "error":
        return "unreadable"
    if entry["status"] == "untrusted":
        return "issued by no CA the nodes hold, so they refuse it"
    if entry["status"] == "stale":
        return "its CA is no longer the cluster's"
    return "%d days left" % entry["days_left"]


def _cell(value):
    return str(value).replace("|", "\\|").replace("\n", " ")


def _where(places):
    places = list(places or ())
    shown = ", ".join(places[:WHERE_SHOWN])
    return shown if len(places) <= WHERE_SHOWN else "%s and %d more" % (shown, len(places) - WHERE_SHOWN)


def _markdown(report):
    lines = ["# Certificate expiry report", "",
             "Generated %s; threshold %d days; %d cluster(s): %s." % (
                 report["generated_at"], report["warn_days"], len(report["clusters"]), ", ".join(report["clusters"]) or "none"),
             "", report["summary"], "",
             "| %s |" % " | ".join(COLUMNS), "|%s|" % "|".join("---" for _column in COLUMNS)]
    for entry in report["entries"]:
        days = entry.get("days_left")
        status = entry.get("status") or ""
        lines.append("| %s |" % " | ".join(_cell(value) for value in (
            "-" if days is None else days, status.upper() if status in ALERTS else status, entry.get("cluster") or "",
            entry.get("item") or "", entry.get("role") or "", entry.get("not_after") or "-",
            (entry.get("fingerprint") or "-")[:FINGERPRINT_SHOWN], _where(entry.get("where")) + (
                " - %s" % entry["error"] if entry.get("error") else ""))))
    return "\n".join(lines) + "\n"


def cert_report(results, warn_days=90, now=None):
    """One report from talos_cert_info results (registered task results; skipped ones are ignored)."""
    if not isinstance(results, (list, tuple)):
        raise AnsibleFilterError("cert_report expects a list of talos_cert_info results, got %s" % type(results).__name__)
    try:
        warn_days = int(warn_days)
    except (TypeError, ValueError):
        raise AnsibleFilterError("cert_report: warn_days must be a whole number of days, got %r" % (warn_days,)) from None
    entries, clusters = [], []
    for result in results:
        if not isinstance(result, dict) or result.get("skipped"):
            continue
        cluster = result.get("cluster") or "(unnamed)"
        clusters.append(cluster)
        if result.get("failed"):
            entries.append({"cluster": cluster, "kind": None, "item": "talos_cert_info", "role": "error", "where": [],
                            "days_left": None, "status": "error", "error": result.get("msg") or "failed"})
            continue
        for entry in result.get("entries") or ():
            entry = dict(entry, cluster=entry.get("cluster") or cluster)
            # The playbook's threshold wins over the one each task was given (untrusted and stale stay so).
            if entry.get("days_left") is not None and entry.get("status") in ("ok", "warn", "expired"):
                days = entry["days_left"]
                entry["status"] = "expired" if days < 0 else "warn" if days < warn_days else "ok"
            entries.append(entry)
    entries.sort(key=_order)
    alerts = [entry for entry in entries if entry.get("status") in ALERTS]
    days = [entry["days_left"] for entry in entries if entry.get("days_left") is not None]
    moment = now or datetime.datetime.now(datetime.timezone.utc)
    report = {
        "generated_at": moment.strftime("%Y-%m-%dT%H:%M:%SZ"), "warn_days": warn_days, "clusters": sorted(set(clusters)),
        "entries": entries, "alerts": alerts, "min_days_left": min(days) if days else None,
        "clusters_alerting": sorted({entry["cluster"] for entry in alerts}),
    }
    if alerts:
        report["summary"] = ("%d certificate(s) or source(s) need attention (below %d days, expired, unreadable, untrusted or stale) in %s; the "
                             "soonest: %s." % (len(alerts), warn_days, ", ".join(report["clusters_alerting"]), "; ".join(
                                 "%s %s of %s: %s" % (entry["item"], entry["role"], entry["cluster"],
                                                      _verdict(entry))
                                 for entry in alerts[:3])))
    else:
        report["summary"] = "Nothing below %d days: the soonest expiry is in %s days." % (warn_days, report["min_days_left"])
    report["markdown"] = _markdown(report)
    return report


class FilterModule:
    """talosops.pki filters."""

    def filters(self):
        return {"cert_report": cert_report}
