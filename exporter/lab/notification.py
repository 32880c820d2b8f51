"""The title and text of a notification, as alerts/templates/outage.tmpl renders them, from a webhook payload.

Alertmanager's webhook sends data, not rendered text, so the lab's terminal and sink render it here: the same
words, order and layout as the shipped templates' ``outage.title`` and ``outage.text`` (a test renders the
captured payloads under tests/testdata/notifications/ both ways and compares). Only the labels and
annotations the rules produce are read.
"""

from __future__ import annotations

import datetime
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path

# The ranking of outage.causes and outage.text: most specific cause first, the generic "down" ones last.
CAUSES: dict[str, str] = {
    "OutageProviderRoutingLost": "routing, BGP routes withdrawn",
    "OutageRoutingPrefixLost": "routing, BGP routes withdrawn (probes still pass)",
    "OutageDNSNameserversUnreachable": "DNS, authoritative nameservers unreachable",
    "OutageDNSResolutionFailing": "DNS, resolution failing",
    "OutageResolverFailing": "DNS, a vantage's resolver failing",
    "OutageDNSSerialsDisagree": "DNS, nameservers serve different zone serials",
    "OutageTLSCertificateExpired": "TLS certificate expired",
    "OutageTLSCertificateExpiring": "TLS certificate expiring",
    "OutageHTTPServerErrors": "HTTP 5xx",
    "OutageLatencyRegression": "slower than usual",
    "OutageErrorBudgetBurn": "error budget burning fast",
    "OutageVantagesLost": "most prober vantages lost",
    "OutageVantageUnhealthy": "prober vantage unhealthy",
    "OutageRoutingFeedDown": "routing feed down",
    "OutageExporterAbsent": "no exporter target",
    "OutageExporterDown": "exporter down",
    "OutageProbesStale": "probes stopped",
    "OutageProbesMissing": "probes never ran",
    "OutageExporterSchedulerLagging": "probes start late",
    "OutageExporterInternalError": "exporter internal errors",
    "OutageExporterConfigReloadFailed": "config reload failed",
    "OutageExporterConfigFileUnreadable": "config file unreadable",
    "OutageExporterWorkerRestarting": "probing workers restarting",
    "OutageWatchdog": "watchdog",
    "OutageProviderOutage": "services down together",
    "OutageServiceDownMultiRegion": "down from most regions",
    "OutageServiceDownInRegion": "failing from one region",
}
GENERIC = ("OutageProviderOutage", "OutageServiceDownMultiRegion", "OutageServiceDownInRegion")
DOWN = ("OutageProviderOutage", "OutageServiceDownMultiRegion", "OutageHTTPServerErrors",
        "OutageDNSResolutionFailing", "OutageDNSNameserversUnreachable", "OutageProviderRoutingLost")
TEMPLATE = Path(__file__).resolve().parents[2] / "alerts" / "templates" / "outage.tmpl"
DEFAULT_GRAFANA_URL = "http://localhost:3000"

Alert = Mapping[str, object]


def grafana_url(template: Path = TEMPLATE) -> str:
    """``outage.grafana_url`` of the shipped template (edited by the operator), else the default."""
    try:
        m = re.search(r'\{\{ define "outage\.grafana_url" \}\}(.*?)\{\{ end \}\}', template.read_text())
    except OSError:
        return DEFAULT_GRAFANA_URL
    return m.group(1) if m else DEFAULT_GRAFANA_URL


def _labels(alert: Alert) -> Mapping[str, str]:
    return alert.get("labels") or {}  # type: ignore[return-value]


def _annotations(alert: Alert) -> Mapping[str, str]:
    return alert.get("annotations") or {}  # type: ignore[return-value]


def _about(payload: Mapping) -> list[Alert]:
    """The alerts a notification is about: the firing ones; all of them once the group resolved."""
    alerts = list(payload.get("alerts") or [])
    if payload.get("status") == "resolved":
        return alerts
    return [a for a in alerts if a.get("status") == "firing"]


def _extract(pattern: str, text: str) -> str:
    """Go's ``reReplaceAll "(?s)^.*PATTERN.*$" "$1"`` for a pattern known to match."""
    return re.sub(rf"(?s)^.*{pattern}.*$", r"\1", text)


def subject(payload: Mapping) -> str:
    common = payload.get("commonLabels") or {}
    for key in ("provider", "service", "region"):
        if common.get(key):
            return common[key]
    return "outage-exporter"


def state(payload: Mapping) -> str:
    if payload.get("status") == "resolved":
        return "RESOLVED"
    value = ""
    for alert in (a for a in payload.get("alerts") or [] if a.get("status") == "firing"):
        name = _labels(alert).get("alertname", "")
        if name in DOWN:
            value = "DOWN"
        elif name == "OutageServiceDownInRegion" and value != "DOWN":
            value = "DEGRADED"
    severity = (payload.get("commonLabels") or {}).get("severity", "")
    return value or severity.upper() or "FIRING"


def causes(payload: Mapping) -> str:
    alerts = _about(payload)
    specific: list[str] = []
    generic: tuple[str, Alert] | None = None
    for name in CAUSES:
        first = next((a for a in alerts if _labels(a).get("alertname") == name), None)
        if first is None:
            continue
        if name in GENERIC:
            generic = generic or (name, first)
        else:
            specific.append(CAUSES[name])
    if specific:
        return "; ".join(specific)
    if generic is not None:
        name, example = generic
        description, reasons = _annotations(example).get("description", ""), "none"
        if re.search(r"Failing checks by reason: [a-z]", description):
            reasons = re.sub(r" [(][0-9]+[)]", "", _extract(r"Failing checks by reason: ([^.]*)[.]", description))
        elif re.search(r"are failing: [a-z]", description):
            reasons = _extract(r"are failing: ([^.]*)[.]", description)
        return CAUSES[name] if reasons == "none" else f"{CAUSES[name]} ({reasons})"
    name = _labels(alerts[0]).get("alertname", "") if alerts else ""
    return CAUSES.get(name, name)


def _unique(values: Sequence[str], sep: str) -> str:
    return sep.join(dict.fromkeys(v for v in values if v))


def regions(payload: Mapping) -> str:
    """``, eu-west + us-east``: the region labels, else the regions a multi-region description lists."""
    alerts = _about(payload)
    out = _unique([_labels(a).get("region", "") for a in alerts], " + ")
    for alert in alerts:
        if out:
            break
        name, description = _labels(alert).get("alertname"), _annotations(alert).get("description", "")
        if name == "OutageProviderOutage" and re.search(r"Failing regions [(]services failing there[)]: [a-z]",
                                                          description):
            found = _extract(r"Failing regions [(]services failing there[)]: ([^.]*)[.]", description)
            out = re.sub(r" [(][0-9]+[)]", "", found).replace(", ", " + ")
        elif name == "OutageServiceDownMultiRegion" and re.search(r"regions: [a-z]", description):
            out = _extract(r"regions: ([^.]*)[.]", description).replace(", ", " + ")
    return f", {out}" if out and out != "none" else ""


def title(payload: Mapping) -> str:
    """``outage.title``: "meta DOWN: DNS, authoritative nameservers unreachable, eu-west + us-east"."""
    return f"{subject(payload)} {state(payload)}: {causes(payload)}{regions(payload)}"


def services(payload: Mapping) -> str:
    alerts = _about(payload)
    out = _unique([_labels(a).get("service", "") for a in alerts], ", ")
    for alert in alerts:
        if out:
            break
        description = _annotations(alert).get("description", "")
        if _labels(alert).get("alertname") == "OutageProviderOutage" and re.search(
                r"down from most regions: [a-z]", description):
            out = _extract(r"down from most regions: ([^.]*)[.]", description)
    return out or "none named"


def parse_time(text: str) -> datetime.datetime:
    """An Alertmanager RFC 3339 time (nanoseconds allowed) as an aware datetime."""
    m = re.fullmatch(r"(.*?T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    fraction = (m.group(2) or "0")[:6].ljust(6, "0")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.datetime.fromisoformat(f"{m.group(1)}.{fraction}{zone}")


def _utc(when: datetime.datetime, fmt: str) -> str:
    return when.astimezone(datetime.UTC).strftime(fmt) + " UTC"


def since(payload: Mapping) -> str:
    alerts = _about(payload)
    start = min(parse_time(str(a.get("startsAt"))) for a in alerts)
    text = _utc(start, "%Y-%m-%d %H:%M:%S")
    if payload.get("status") == "resolved":
        end = max(parse_time(str(a.get("endsAt"))) for a in alerts)
        text += f", resolved {_utc(end, '%Y-%m-%d %H:%M:%S')}"
    return text


def dashboard(payload: Mapping, base: str | None = None) -> str:
    url = f"{base or grafana_url()}/d/outage-overview/outage-overview"
    provider = (payload.get("commonLabels") or {}).get("provider")
    return f"{url}?var-provider={urllib.parse.quote_plus(provider)}" if provider else url


def text(payload: Mapping, *, base: str | None = None) -> str:
    """``outage.text``: services, since, dashboard, then the alerts by cause with reasons and runbooks."""
    alerts = _about(payload)
    lines = [f"Services: {services(payload)}", f"Since: {since(payload)}",
             f"Dashboard: {dashboard(payload, base)}"]
    for name in [*CAUSES, ""]:
        group = [a for a in alerts if _labels(a).get("alertname") == name
                 or (name == "" and _labels(a).get("alertname") not in CAUSES)]
        for i, alert in enumerate(group):
            notes, alertname = _annotations(alert), _labels(alert).get("alertname", "")
            if i == 0:
                runbook = f", runbook: {notes['runbook_url']}" if notes.get("runbook_url") else ""
                lines += ["", f"{CAUSES.get(alertname, alertname)} ({alertname}){runbook}"]
            when = ("resolved" if alert.get("status") == "resolved"
                    else f"since {_utc(parse_time(str(alert.get('startsAt'))), '%H:%M:%S')}")
            lines.append(f"- {notes.get('description') or notes.get('summary', '')} [{when}]")
    return "\n".join(lines)
