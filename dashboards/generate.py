"""Grafana dashboards of outage-exporter, as code.

Run ``python dashboards/generate.py`` to (re)write ``dashboards/json/*.json``. The JSON is committed so
Grafana's file provisioning (deploy/grafana/provisioning/) can load it without running anything;
tests/test_dashboards.py fails when the committed files drift from this generator. Standard library only.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "json"
PROMETHEUS_UID = "outage-prometheus"  # pinned in deploy/grafana/provisioning/datasources/
ALERTMANAGER_UID = "outage-alertmanager"
DS = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24

UIDS = {
    "overview": "outage-overview",
    "service": "outage-service",
    "dns": "outage-dns",
    "exporter": "outage-exporter-health",
}
TITLES = {
    "overview": "Outage overview",
    "service": "Service detail",
    "dns": "DNS health",
    "exporter": "Exporter health",
}

# Filters shared by the queries: the template variables, and "monitored" checks (not controls).
SEL = 'service=~"$service", provider=~"$provider", region=~"$region"'
SVC = 'service="$service", region=~"$region"'
MONITORED = 'outage_probe_check_info{control="false", prober!="authoritative"}'
CONTROLS = 'outage_probe_check_info{control="true", prober!="authoritative"}'

# The grid's numeric states; value mappings turn them into words and colours.
DOWN, DEGRADED, UP, INCONCLUSIVE = 0, 1, 2, 3
STATE_MAPPINGS = [{
    "type": "value",
    "options": {
        str(DOWN): {"text": "down", "color": "red", "index": 0},
        str(DEGRADED): {"text": "degraded", "color": "orange", "index": 1},
        str(UP): {"text": "up", "color": "green", "index": 2},
        str(INCONCLUSIVE): {"text": "inconclusive", "color": "purple", "index": 3},
    },
}, {"type": "special", "options": {"match": "null", "result": {"text": "no data", "color": "gray", "index": 4}}}]
UP_DOWN_MAPPINGS = [{"type": "value", "options": {
    "0": {"text": "down", "color": "red", "index": 0},
    "1": {"text": "up", "color": "green", "index": 1},
}}, {"type": "special", "options": {"match": "null", "result": {"text": "no data", "color": "gray", "index": 2}}}]
ROUTE_MAPPINGS = [{"type": "value", "options": {
    "0": {"text": "routed", "color": "green", "index": 0},
    "1": {"text": "withdrawn", "color": "red", "index": 1},
}}, {"type": "special", "options": {"match": "null", "result": {"text": "no data", "color": "gray", "index": 2}}}]
FEED_MAPPINGS = [{"type": "value", "options": {
    "0": {"text": "inconclusive", "color": "purple", "index": 0},
    "1": {"text": "conclusive", "color": "green", "index": 1},
}}, {"type": "special", "options": {"match": "null", "result": {"text": "off", "color": "gray", "index": 2}}}]
RCODE_MAPPINGS = [{"type": "value", "options": {
    "0": {"text": "NOERROR", "color": "green", "index": 0},
    "1": {"text": "FORMERR", "color": "orange", "index": 1},
    "2": {"text": "SERVFAIL", "color": "red", "index": 2},
    "3": {"text": "NXDOMAIN", "color": "dark-red", "index": 3},
    "4": {"text": "NOTIMP", "color": "orange", "index": 4},
    "5": {"text": "REFUSED", "color": "red", "index": 5},
}}]


def grid_state(checks: str, failing: str) -> str:
    """State per service and region: inconclusive, else down (the alerting rules' verdict), else degraded
    (some probe failed in the last minute), else up."""
    avail = (f"avg by (service, region) (avg_over_time(probe_success{{{SEL}}}[1m])"
             f" and ignoring (module, prober, control) {checks})")
    return (
        f"(max by (service, region) (outage_probe_inconclusive{{{SEL}}}) == 1) * 0 + {INCONCLUSIVE}\n"
        f"or ({failing}) * 0 + {DOWN}\n"
        f"or ({avail} < 1) * 0 + {DEGRADED}\n"
        f"or {avail} * 0 + {UP}"
    )


GRID_EXPR = grid_state(
    MONITORED, f'max by (service, region) (service_region:outage_failing:bool{{signal="any", {SEL}}}) == 1')
CONTROL_GRID_EXPR = grid_state(
    CONTROLS, "max by (service, region) (avg_over_time(probe_success{" + SEL + "}[30s])"
    " and ignoring (module, prober, control) " + CONTROLS + ") < 0.5")


@dataclass
class Target:
    expr: str
    legend: str = ""
    instant: bool = False
    fmt: str = "time_series"


@dataclass
class Panel:
    """One Grafana panel; ``extra`` is merged into its JSON for type-specific options."""

    title: str
    description: str
    kind: str
    unit: str
    targets: list[Target]
    w: int = 12
    h: int = 8
    mappings: list[dict] = field(default_factory=list)
    links: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    minmax: tuple[float | None, float | None] = (None, None)


@dataclass
class Row:
    title: str


def detail_link() -> dict:
    return {"title": "Service detail for ${__field.labels.service}",
            "url": f"/d/{UIDS['service']}?var-service=${{__field.labels.service}}&${{datasource:queryparam}}"
                   "&${__url_time_range}"}


def ts(title: str, description: str, unit: str, *targets: Target, **kw) -> Panel:
    return Panel(title, description, "timeseries", unit, list(targets), **kw)


def stat(title: str, description: str, expr: str, unit: str = "none", **kw) -> Panel:
    kw.setdefault("w", 6)
    kw.setdefault("h", 4)
    return Panel(title, description, "stat", unit, [Target(expr, instant=True)], **kw)


def status(title: str, description: str, expr: str, legend: str, mappings: list[dict], **kw) -> Panel:
    kw.setdefault("w", 24)
    return Panel(title, description, "status-history", "none", [Target(expr, legend)], mappings=mappings,
                 **kw)


def overview() -> list[Panel | Row]:
    return [
        Row("Now"),
        stat("Services down", "Services failing from enough regions to page (the region quorum of the "
             "alerting rules).", f'sum(service:outage_quorum_failing:bool{{signal="any", {SEL}}}) or vector(0)'),
        stat("Regions affected", "Regions from which at least one monitored service is failing.",
             f'count(max by (region) (service_region:outage_failing:bool{{signal="any", {SEL}}}) == 1)'
             " or vector(0)"),
        stat("Firing alerts", "Alerts of the project's rules firing in Prometheus (the ALERTS series).",
             'count(ALERTS{alertstate="firing"}) or vector(0)'),
        stat("Unhealthy vantages", "Regions whose control checks say the probing network itself is broken; "
             "failures seen from there are inconclusive.",
             'count(outage_vantage_healthy{region=~"$region"} == 0) or vector(0)'),
        status("Service x region", "State of every monitored service from every region: down is the "
               "alerting rules' verdict, degraded means a probe failed in the last minute, inconclusive "
               "means the region's vantage was unhealthy. Click a cell for the service's detail.",
               GRID_EXPR, "{{service}} / {{region}}", STATE_MAPPINGS, h=10, links=[detail_link()]),
        Row("Controls"),
        status("Control checks", "Sites expected to stay up, per region. When they fail the region's "
               "vantage is unhealthy and service failures there are inconclusive.",
               CONTROL_GRID_EXPR, "{{service}} / {{region}}", STATE_MAPPINGS, w=16, h=6),
        Panel("Vantage per region", "1 while the region's controls say its network is healthy.",
              "stat", "none", [Target('outage_vantage_healthy{region=~"$region"}', "{{region}}", instant=True)],
              w=8, h=6, mappings=UP_DOWN_MAPPINGS),
        Row("Providers and causes"),
        ts("Regions failing per provider", "Share of the regions in which at least half of the provider's "
           "services fail.", "percentunit",
           Target('provider:outage_regions_failing:ratio{provider=~"$provider"}', "{{provider}}"),
           minmax=(0, 1)),
        Panel("Dominant failure reason per service", "The failure reason behind most failed runs of each "
              "service over the last 5 minutes, as a share of its runs.", "table", "percentunit",
              [Target(f"topk by (service) (1, sum by (service, reason) "
                      f"(service_region_reason:outage_probe_failures:ratio_rate5m{{{SEL}}}))",
                      instant=True, fmt="table")],
              links=[detail_link()]),
        Panel("Alerts", "Alerts firing and pending in Alertmanager, from the provisioned Alertmanager "
              "data source.", "alertlist", "none", [], w=24, h=8,
              extra={"options": {"viewMode": "list", "groupMode": "default", "maxItems": 50,
                                 "sortOrder": 1, "stateFilter": {"firing": True, "pending": True},
                                 "alertInstanceLabelFilter": "", "datasource": ALERTMANAGER_UID}}),
        *routing_and_declared(),
    ]


def routing_and_declared() -> list[Panel | Row]:
    """BGP visibility of the providers' prefixes, and what their status pages declare next to what the
    probes measure (docs/alerts.md, "Routing and declared status")."""
    prov = 'provider=~"$provider"'
    return [
        Row("Routing (BGP) and declared status"),
        status("Prefixes", "Per watched prefix: withdrawn when most route-collector peers that saw it "
               "withdrew it (with a conclusive feed). Prefixes hold the providers' nameservers or edges.",
               f"max by (prefix, provider, role) (outage_routing_prefix_lost{{{prov}}})",
               "{{provider}} {{role}} {{prefix}}", ROUTE_MAPPINGS, w=18, h=6),
        Panel("Routing feed", "Conclusive while the feed is connected, synced and heard from; otherwise "
              "the routing signal decides nothing.", "stat", "none",
              [Target("min(outage_routing_feed_conclusive)", instant=True)], w=6, h=6, mappings=FEED_MAPPINGS),
        ts("Collector peers seeing each prefix", "Peers whose latest message announced the prefix (dashed: "
           "peers that saw it).", "none",
           Target(f"max by (prefix, provider) (outage_routing_prefix_peers{{{prov}}})", "{{provider}} {{prefix}}"),
           Target(f"max by (prefix, provider) (outage_routing_prefix_peers_max{{{prov}}})",
                  "{{provider}} {{prefix}} saw")),
        Panel("Declared vs measured", "What each provider's status page declares (indicator; no row when "
              "the page never answered), whether it answers now, and how many of its services the probes "
              "find down.", "table", "none",
              [Target(f"max by (provider, indicator) (outage_statuspage_indicator{{{prov}}} == 1)",
                      instant=True, fmt="table"),
               Target(f"max by (provider) (outage_statuspage_up{{{prov}}})", instant=True, fmt="table"),
               Target(f"provider:outage_services_down:count{{{prov}}}", instant=True, fmt="table")],
              extra={"transformations": [{"id": "merge", "options": {}}]}),
    ]


def service_detail() -> list[Panel | Row]:
    hist = f"rate(outage_probe_latency_seconds_bucket{{{SVC}}}[$__rate_interval])"
    return [
        Row("Availability"),
        ts("Availability per region", "Share of successful probes of the service's monitored checks over "
           "the last 5 minutes, per region (inconclusive runs included).", "percentunit",
           Target(f"service_region:probe_success:avg5m{{{SVC}}}", "{{region}}"), minmax=(0, 1)),
        ts("Failure reasons", "Failed runs per second by reason (inconclusive runs excluded).", "ops",
           Target(f"sum by (region, reason) (rate(outage_probe_failures_total{{{SVC}}}[$__rate_interval]))",
                  "{{region}} {{reason}}")),
        Row("Latency"),
        ts("Latency percentiles", "Probe run duration percentiles over every check of the service.", "s",
           *[Target(f"histogram_quantile({q}, sum by (region, le) ({hist}))", f"p{int(q * 100)} {{{{region}}}}")
             for q in (0.5, 0.9, 0.99)]),
        Panel("Latency heatmap", "Distribution of probe run durations (outage_probe_latency_seconds).",
              "heatmap", "s", [Target(f"sum by (le) ({hist})", "{{le}}", fmt="heatmap")],
              extra={"options": {"calculate": False, "yAxis": {"unit": "s"},
                                 "cellGap": 1, "color": {"scheme": "Oranges", "mode": "scheme"}}}),
        Row("HTTP"),
        ts("HTTP phases", "Duration of each HTTP phase of the latest probe, averaged over regions: where "
           "the time goes (resolve, connect, tls, processing, transfer).", "s",
           Target(f"avg by (phase) (probe_http_duration_seconds{{{SVC}}})", "{{phase}}"),
           extra={"fieldConfig": {"defaults": {"custom": {"stacking": {"mode": "normal"}, "fillOpacity": 40}}}}),
        ts("HTTP status codes", "Final status code of the latest probe per region and target; 0 when no "
           "response arrived.", "none",
           Target(f"probe_http_status_code{{{SVC}}}", "{{region}} {{target}}")),
        ts("Two-path results", "Probe over the freshly resolved address vs the pinned last-known address. "
           "Resolved failing while pinned succeeds: DNS gone, origin alive.", "none",
           Target(f"outage_http_path_success{{{SVC}}}", "{{region}} {{path}}"), minmax=(0, 1)),
        ts("TLS certificate expiry", "Time left until the earliest-expiring certificate of the presented "
           "chain expires.", "s",
           Target(f"probe_ssl_earliest_cert_expiry{{{SVC}}} - time()", "{{region}} {{target}}")),
        Row("DNS"),
        status("DNS per resolver", "Whether each resolver answered the service's DNS query at all.",
               f"probe_dns_query_succeeded{{{SVC}}}", "{{region}} {{resolver}}", UP_DOWN_MAPPINGS, w=12),
        status("DNS rcode per resolver", "Response code of the latest answer per resolver (absent while "
               "the resolver does not answer).", f"outage_probe_dns_rcode{{{SVC}}}",
               "{{region}} {{resolver}}", RCODE_MAPPINGS, w=12),
        status("Authoritative nameservers", "Whether each nameserver address of the service's zones "
               "answers the SOA query authoritatively, per transport.",
               f"outage_dns_authoritative_up{{{SVC}}}",
               "{{region}} {{nameserver}} {{address}} {{transport}}", UP_DOWN_MAPPINGS, h=10),
    ]


def dns_health() -> list[Panel | Row]:
    return [
        Row("Resolvers"),
        Panel("Rcode: resolver x service", "Latest DNS response code of every service through every "
              "resolver (worst over regions). Missing cells: the resolver did not answer.", "table", "none",
              [Target(f"max by (service, resolver) (outage_probe_dns_rcode{{{SEL}}})", instant=True,
                      fmt="table")],
              w=24, mappings=RCODE_MAPPINGS, links=[detail_link()],
              extra={"transformations": [{"id": "groupingToMatrix", "options": {
                  "columnField": "resolver", "rowField": "service", "valueField": "Value"}}]}),
        ts("Answer TTL", "Smallest TTL of the answer: how long resolvers may keep serving it.", "s",
           Target(f"min by (service, resolver) (outage_probe_dns_answer_ttl_seconds{{{SEL}}})",
                  "{{service}} {{resolver}}")),
        ts("Negative TTL", "For NXDOMAIN and NODATA answers, how long resolvers may keep repeating the "
           "failure after it is fixed (RFC 2308).", "s",
           Target(f"max by (service, resolver) (outage_probe_dns_negative_ttl_seconds{{{SEL}}})",
                  "{{service}} {{resolver}}")),
        Row("Authoritative nameservers"),
        ts("Nameservers answering per zone", "Share of the zone's nameserver addresses that answer "
           "authoritatively over at least one transport.", "percentunit",
           Target(f"sum by (zone) (outage_dns_zone_nameservers_answering{{{SEL}}})"
                  f" / sum by (zone) (outage_dns_zone_nameservers{{{SEL}}})", "{{zone}}"), minmax=(0, 1)),
        status("SOA serials agree", "1 while every answering nameserver of the zone reports the same SOA "
               "serial; 0 means a zone transfer lags or is stuck.",
               f"min by (zone) (outage_dns_zone_serials_agree{{{SEL}}})", "{{zone}}",
               [{"type": "value", "options": {"0": {"text": "differ", "color": "red", "index": 0},
                                              "1": {"text": "agree", "color": "green", "index": 1}}}], w=12),
        ts("Nameserver failure reasons", "Nameserver addresses not up, by reason (dns_timeout for "
           "black-holed servers, dns_refused, dns_not_authoritative...).", "none",
           Target(f"count by (zone, reason) (outage_dns_authoritative_failure_info{{{SEL}}})",
                  "{{zone}} {{reason}}")),
    ]


def exporter_health() -> list[Panel | Row]:
    return [
        Row("Throughput"),
        ts("Probe rate", "Probe runs completed per second.", "ops",
           Target(f"sum by (region) (rate(outage_probe_runs_total{{{SEL}}}[$__rate_interval]))",
                  "{{region}}")),
        ts("Failures by reason", "Failed probe runs per second by reason, all checks.", "ops",
           Target(f"sum by (reason) (rate(outage_probe_failures_total{{{SEL}}}[$__rate_interval]))",
                  "{{reason}}")),
        Row("Scheduling"),
        ts("Scheduler lag p99", "Delay between a run's due time and its start, including the wait for a "
           "concurrency slot.", "s",
           Target("histogram_quantile(0.99, sum by (instance, le) "
                  "(rate(outage_exporter_scheduler_lag_seconds_bucket[$__rate_interval])))", "{{instance}}")),
        ts("Event loop lag p99", "How late the event loop wakes up; lag here inflates every measured "
           "latency.", "s",
           Target("histogram_quantile(0.99, sum by (instance, le) "
                  "(rate(outage_exporter_event_loop_lag_seconds_bucket[$__rate_interval])))", "{{instance}}")),
        ts("Probes in flight", "Scheduled probes running right now (bounded by defaults.concurrency).",
           "none", Target("outage_exporter_probes_in_flight", "{{instance}}"),
           Target("outage_exporter_scheduled_checks", "scheduled checks {{instance}}")),
        ts("Missed and late runs", "Runs skipped because the previous run of the check was still in flight, "
           "and runs started more than 1 s late.", "ops",
           Target("rate(outage_exporter_scheduler_skipped_runs_total[$__rate_interval])", "skipped {{instance}}"),
           Target("rate(outage_exporter_scheduler_late_runs_total[$__rate_interval])", "late {{instance}}")),
        Row("Configuration and vantage"),
        Panel("Config reload", "Whether the latest configuration load succeeded (the previous one keeps "
              "running when it did not).", "stat", "none",
              [Target("outage_exporter_config_last_reload_successful", "{{instance}}", instant=True)],
              w=8, h=6, mappings=[{"type": "value", "options": {
                  "0": {"text": "failed", "color": "red", "index": 0},
                  "1": {"text": "ok", "color": "green", "index": 1}}}]),
        status("Vantage per region", "1 while the region's controls say its network is healthy.",
               'outage_vantage_healthy{region=~"$region"}', "{{region}}", UP_DOWN_MAPPINGS, w=16, h=6),
    ]


def variables() -> list[dict]:
    def query_var(name: str, label: str, query: str, *, multi: bool = True) -> dict:
        var = {"name": name, "label": label, "type": "query", "datasource": DS,
               "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
               "refresh": 2, "sort": 1, "multi": multi, "includeAll": multi,
               "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if multi else {}}
        if multi:
            var["allValue"] = ".*"
        return var

    return [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {"selected": True, "text": "Prometheus", "value": PROMETHEUS_UID}, "refresh": 1},
        query_var("provider", "Provider", "label_values(outage_probe_check_info, provider)"),
        query_var("service", "Service",
                  'label_values(outage_probe_check_info{provider=~"$provider"}, service)'),
        query_var("region", "Region", "label_values(outage_vantage_healthy, region)"),
    ]


def service_variables() -> list[dict]:
    """The detail dashboard shows one service at a time."""
    out = variables()
    out[2] = {**out[2], "multi": False, "includeAll": False, "current": {}}
    out[2].pop("allValue", None)
    return out


def layout(items: list[Panel | Row]) -> list[dict]:
    """Place panels left to right, wrapping at the grid width; rows take a full line of height 1."""
    panels, x, y, line_h = [], 0, 0, 0
    for pid, item in enumerate(items, start=1):
        if isinstance(item, Row):
            y += line_h
            x, line_h = 0, 0
            panels.append({"id": pid, "type": "row", "title": item.title, "collapsed": False, "panels": [],
                           "gridPos": {"x": 0, "y": y, "w": GRID_WIDTH, "h": 1}})
            y += 1
            continue
        if x + item.w > GRID_WIDTH:
            y += line_h
            x, line_h = 0, 0
        panels.append(panel_json(item, pid, {"x": x, "y": y, "w": item.w, "h": item.h}))
        x += item.w
        line_h = max(line_h, item.h)
    return panels


def panel_json(p: Panel, pid: int, pos: dict) -> dict:
    defaults: dict = {"unit": p.unit, "mappings": p.mappings, "links": p.links}
    if p.minmax[0] is not None:
        defaults["min"] = p.minmax[0]
    if p.minmax[1] is not None:
        defaults["max"] = p.minmax[1]
    if p.kind in ("status-history", "stat") and p.mappings:
        defaults["color"] = {"mode": "thresholds"}
        defaults["thresholds"] = {"mode": "absolute", "steps": [{"color": "gray", "value": None}]}
    out: dict = {
        "id": pid, "type": p.kind, "title": p.title, "description": p.description, "datasource": DS,
        "gridPos": pos, "fieldConfig": {"defaults": defaults, "overrides": []},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DS, "expr": t.expr, "legendFormat": t.legend,
                     "instant": t.instant, "range": not t.instant, "format": t.fmt}
                    for i, t in enumerate(p.targets)],
    }
    for key, value in p.extra.items():
        if key == "fieldConfig":
            out["fieldConfig"]["defaults"].update(value["defaults"])
        else:
            out[key] = value
    return out


def dashboard(key: str, items: list[Panel | Row], *, tags: list[str], templating: list[dict]) -> dict:
    return {
        "uid": UIDS[key], "title": TITLES[key], "tags": ["outage-exporter", *tags], "editable": True,
        "schemaVersion": 39, "version": 1, "timezone": "browser", "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"}, "graphTooltip": 1,
        "templating": {"list": templating},
        "annotations": {"list": [{
            "name": "Firing alerts", "enable": True, "iconColor": "red", "datasource": DS,
            "expr": 'ALERTS{alertstate="firing", service=~"$service|"}', "step": "30s",
            "titleFormat": "{{alertname}}", "textFormat": "{{service}} {{region}} {{provider}}",
            "tagKeys": "alertname,severity", "useValueForTime": False}]},
        "links": [{"title": TITLES[k], "type": "link", "url": f"/d/{uid}", "icon": "dashboard",
                   "keepTime": True, "includeVars": True, "targetBlank": False, "tooltip": "", "tags": [],
                   "asDropdown": False}
                  for k, uid in UIDS.items() if k != key],
        "panels": layout(items),
    }


def build() -> dict[str, dict]:
    """Every dashboard by file name (without .json)."""
    return {
        "outage-overview": dashboard("overview", overview(), tags=["home"], templating=variables()),
        "service-detail": dashboard("service", service_detail(), tags=[], templating=service_variables()),
        "dns-health": dashboard("dns", dns_health(), tags=["dns"], templating=variables()),
        "exporter-health": dashboard("exporter", exporter_health(), tags=["exporter"],
                                     templating=variables()),
    }


def render(board: dict) -> str:
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def main(out_dir: Path = OUT_DIR) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, board in build().items():
        (out_dir / f"{name}.json").write_text(render(board))
    return 0


if __name__ == "__main__":
    sys.exit(main())
