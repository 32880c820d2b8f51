"""Grafana dashboards of outage-exporter, as code.

Run ``python dashboards/generate.py`` to (re)write ``dashboards/json/*.json``. The JSON is committed so
Grafana's file provisioning (deploy/grafana/provisioning/) can load it without running anything;
tests/test_dashboards.py fails when the committed files drift from this generator.

Built with Grafana's typed builders (the ``grafana-foundation-sdk`` package, the build generated for the
Grafana of deploy/compose, see GRAFANA_VERSION): a field or option Grafana does not know fails here, not in
a browser.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import TypeVar

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, statetimeline, statushistory, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.heatmap import HeatmapColorMode, HeatmapColorScale
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT_DIR = Path(__file__).resolve().parent / "json"
GRAFANA_VERSION = "11.6.0"  # the image in deploy/compose/compose.yaml; the SDK build must be generated for it
PROMETHEUS_UID = "outage-prometheus"  # pinned in deploy/grafana/provisioning/datasources/
ALERTMANAGER_UID = "outage-alertmanager"
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
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
PROV = 'provider=~"$provider"'
MONITORED = 'outage_probe_check_info{control="false", prober!="authoritative"}'
CONTROLS = 'outage_probe_check_info{control="true", prober!="authoritative"}'
INCIDENT_ALERT = "OutageProviderOutage"  # one incident per provider (alerts/rules/alerts.yml)

# The grid's numeric states; value mappings turn them into words and colours.
DOWN, DEGRADED, UP, INCONCLUSIVE = 0, 1, 2, 3
# Statuspage component statuses in order of severity: the panel's numeric value is the index.
COMPONENT_STATUSES = [("operational", "green"), ("degraded_performance", "yellow"), ("partial_outage", "orange"),
                      ("major_outage", "red"), ("under_maintenance", "blue"), ("unknown", "gray")]

PanelBuilder = (timeseries.Panel | stat.Panel | table.Panel | statushistory.Panel | statetimeline.Panel
                | heatmap.Panel | db.Panel)
P = TypeVar("P", timeseries.Panel, stat.Panel, table.Panel, statushistory.Panel, statetimeline.Panel,
            heatmap.Panel, db.Panel)


def value_mappings(values: Iterable[tuple[str, str]], *, null: str | None = "no data") -> list[dm.ValueMapping]:
    """Mappings for the numbers 0, 1, ... in order, each to (text, colour); ``null`` names a missing value."""
    pairs = list(values)
    out: list[dm.ValueMapping] = [dm.ValueMap(options={
        str(i): dm.ValueMappingResult(text=text, color=color, index=i) for i, (text, color) in enumerate(pairs)})]
    if null is not None:
        out.append(dm.SpecialValueMap(options=dm.DashboardSpecialValueMapOptions(
            match=dm.SpecialValueMatch.NULL,
            result=dm.ValueMappingResult(text=null, color="gray", index=len(pairs)))))
    return out


STATE_MAPPINGS = value_mappings([("down", "red"), ("degraded", "orange"), ("up", "green"),
                                 ("inconclusive", "purple")])
UP_DOWN_MAPPINGS = value_mappings([("down", "red"), ("up", "green")])
ROUTE_MAPPINGS = value_mappings([("routed", "green"), ("withdrawn", "red")])
FEED_MAPPINGS = value_mappings([("inconclusive", "purple"), ("conclusive", "green")], null="off")
RCODE_MAPPINGS = value_mappings([("NOERROR", "green"), ("FORMERR", "orange"), ("SERVFAIL", "red"),
                                 ("NXDOMAIN", "dark-red"), ("NOTIMP", "orange"), ("REFUSED", "red")], null=None)
SERIALS_MAPPINGS = value_mappings([("differ", "red"), ("agree", "green")], null=None)
RELOAD_MAPPINGS = value_mappings([("failed", "red"), ("ok", "green")], null=None)
COMPONENT_MAPPINGS = value_mappings([(s.replace("_", " "), c) for s, c in COMPONENT_STATUSES])
INCIDENT_MAPPINGS = value_mappings([("no incident", "green"), ("incident open", "red")])


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


def component_status_expr() -> str:
    """The declared status of every configured component as the index of COMPONENT_STATUSES (a status
    history maps numbers, not label values, to colours)."""
    by = "max by (provider, service, component)"
    sel = f'{PROV}, service=~"$service"'
    return "\nor ".join(f'{by} (outage_statuspage_component_status{{status="{status}", {sel}}} == 1) * 0 + {i}'
                        for i, (status, _) in enumerate(COMPONENT_STATUSES))


def query(expr: str, legend: str = "", *, instant: bool = False,
          fmt: PromQueryFormat = PromQueryFormat.TIME_SERIES) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend).format(fmt).datasource(DS)
    return q.instant() if instant else q.range()


def panel(builder: P, title: str, description: str, unit: str, *queries: prometheus.Dataquery,
          w: int = 12, h: int = 8, mappings: list[dm.ValueMapping] | None = None,
          links: list[db.DashboardLink] | None = None, minmax: tuple[float, float] | None = None) -> P:
    """What every panel has: title, description, unit, size, queries (A, B, ...) on the datasource variable;
    mapped panels colour by their mappings alone."""
    builder.title(title).description(description).datasource(DS).unit(unit).span(w).height(h)
    for i, q in enumerate(queries):
        builder.with_target(q.ref_id(chr(ord("A") + i)))
    if mappings:
        builder.mappings(mappings)
    if mappings and not isinstance(builder, table.Panel):  # a table shows the mapped text, uncoloured
        builder.color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
        builder.thresholds(db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE)
                           .steps([dm.Threshold(value=None, color="gray")]))
    if links:
        builder.data_links(links)
    if minmax is not None:
        builder.min(minmax[0]).max(minmax[1])
    return builder


def ts(title: str, description: str, unit: str, *queries: prometheus.Dataquery, **kw) -> timeseries.Panel:
    return panel(timeseries.Panel(), title, description, unit, *queries, **kw)


def big(title: str, description: str, expr: str, unit: str = "none", **kw) -> stat.Panel:
    """A single number (a stat panel) from an instant query."""
    kw.setdefault("w", 6)
    kw.setdefault("h", 4)
    return panel(stat.Panel(), title, description, unit, query(expr, instant=True), **kw)


def status(title: str, description: str, expr: str, legend: str, mappings: list[dm.ValueMapping],
           **kw) -> statushistory.Panel:
    kw.setdefault("w", 24)
    return panel(statushistory.Panel(), title, description, "none", query(expr, legend), mappings=mappings, **kw)


def detail_link() -> db.DashboardLink:
    return db.DashboardLink("Service detail for ${__field.labels.service}").url(
        f"/d/{UIDS['service']}?var-service=${{__field.labels.service}}&${{datasource:queryparam}}"
        "&${__url_time_range}")


Item = db.Row | PanelBuilder


def overview() -> list[Item]:
    return [
        db.Row("Now"),
        big("Services down", "Services failing from enough regions to page (the region quorum of the "
            "alerting rules).", f'sum(service:outage_quorum_failing:bool{{signal="any", {SEL}}}) or vector(0)'),
        big("Regions affected", "Regions from which at least one monitored service is failing.",
            f'count(max by (region) (service_region:outage_failing:bool{{signal="any", {SEL}}}) == 1)'
            " or vector(0)"),
        big("Firing alerts", "Alerts of the project's rules firing in Prometheus (the ALERTS series).",
            'count(ALERTS{alertstate="firing"}) or vector(0)'),
        big("Unhealthy vantages", "Regions whose control checks say the probing network itself is broken; "
            "failures seen from there are inconclusive.",
            'count(outage_vantage_healthy{region=~"$region"} == 0) or vector(0)'),
        status("Service x region", "State of every monitored service from every region: down is the "
               "alerting rules' verdict, degraded means a probe failed in the last minute, inconclusive "
               "means the region's vantage was unhealthy. Click a cell for the service's detail.",
               GRID_EXPR, "{{service}} / {{region}}", STATE_MAPPINGS, h=10, links=[detail_link()]),
        db.Row("Controls"),
        status("Control checks", "Sites expected to stay up, per region. When they fail the region's "
               "vantage is unhealthy and service failures there are inconclusive.",
               CONTROL_GRID_EXPR, "{{service}} / {{region}}", STATE_MAPPINGS, w=16, h=6),
        panel(stat.Panel(), "Vantage per region", "1 while the region's controls say its network is healthy.",
              "none", query('outage_vantage_healthy{region=~"$region"}', "{{region}}", instant=True),
              w=8, h=6, mappings=UP_DOWN_MAPPINGS),
        db.Row("Providers and causes"),
        ts("Regions failing per provider", "Share of the regions in which at least half of the provider's "
           "services fail.", "percentunit",
           query('provider:outage_regions_failing:ratio{provider=~"$provider"}', "{{provider}}"), minmax=(0, 1)),
        panel(table.Panel(), "Dominant failure reason per service", "The failure reason behind most failed runs "
              "of each service over the last 5 minutes, as a share of its runs.", "percentunit",
              query(f"topk by (service) (1, sum by (service, reason) "
                    f"(service_region_reason:outage_probe_failures:ratio_rate5m{{{SEL}}}))",
                    instant=True, fmt=PromQueryFormat.TABLE),
              links=[detail_link()]),
        alert_list(),
        *routing_and_declared(),
        *incidents(),
    ]


def alert_list() -> db.Panel:
    """The SDK has no builder for the alert list panel: the generic panel builder with its options."""
    return panel(db.Panel().type("alertlist"), "Alerts", "Alerts firing and pending in Alertmanager, from the "
                 "provisioned Alertmanager data source.", "none", w=24, h=8).options({
                     "viewMode": "list", "groupMode": "default", "maxItems": 50, "sortOrder": 1,
                     "stateFilter": {"firing": True, "pending": True}, "alertInstanceLabelFilter": "",
                     "datasource": ALERTMANAGER_UID})


def routing_and_declared() -> list[Item]:
    """BGP visibility of the providers' prefixes, and what their status pages declare next to what the
    probes measure (docs/alerts.md, "Routing and declared status")."""
    table_query = {"instant": True, "fmt": PromQueryFormat.TABLE}
    return [
        db.Row("Routing (BGP) and declared status"),
        status("Prefixes", "Per watched prefix: withdrawn when most route-collector peers that saw it "
               "withdrew it (with a conclusive feed). Prefixes hold the providers' nameservers or edges.",
               f"max by (prefix, provider, role) (outage_routing_prefix_lost{{{PROV}}})",
               "{{provider}} {{role}} {{prefix}}", ROUTE_MAPPINGS, w=18, h=6),
        panel(stat.Panel(), "Routing feed", "Conclusive while the feed is connected, synced and heard from; "
              "otherwise the routing signal decides nothing.", "none",
              query("min(outage_routing_feed_conclusive)", instant=True), w=6, h=6, mappings=FEED_MAPPINGS),
        ts("Collector peers seeing each prefix", "Peers whose latest message announced the prefix (dashed: "
           "peers that saw it).", "none",
           query(f"max by (prefix, provider) (outage_routing_prefix_peers{{{PROV}}})", "{{provider}} {{prefix}}"),
           query(f"max by (prefix, provider) (outage_routing_prefix_peers_max{{{PROV}}})",
                 "{{provider}} {{prefix}} saw")),
        panel(table.Panel(), "Declared vs measured", "What each provider's status page declares (indicator; no "
              "row when the page never answered), whether it answers now, and how many of its services the "
              "probes find down.", "none",
              query(f"max by (provider, indicator) (outage_statuspage_indicator{{{PROV}}} == 1)", **table_query),
              query(f"max by (provider) (outage_statuspage_up{{{PROV}}})", **table_query),
              query(f"provider:outage_services_down:count{{{PROV}}}", **table_query))
        .with_transformation(dm.DataTransformerConfig(id_val="merge", options={})),
        status("Declared component status", "Status each provider's page gives the components mapped to "
               "the services, from its latest valid summary (kept while the page does not answer): compare "
               "with Service x region.", component_status_expr(), "{{provider}} {{component}} ({{service}})",
               COMPONENT_MAPPINGS),
    ]


def incidents() -> list[Item]:
    """Incidents as the alerting rules open them: one per provider while its services are down together."""
    firing = f'ALERTS{{alertname="{INCIDENT_ALERT}", alertstate="firing", {PROV}}}'
    return [
        db.Row("Incidents"),
        big("Open incidents", f"Providers with an open incident ({INCIDENT_ALERT}): several of their services "
            "down together from most regions, open until the last one is back.",
            f"count({firing}) or vector(0)", h=6),
        panel(statetimeline.Panel(), "Incidents per provider", "When each provider's incident opened and "
              "closed; hover for the time. Services that recover late stay inside the incident.", "none",
              query(f"max by (provider) ({firing})"
                    f" or max by (provider) (provider:outage_services:count{{{PROV}}}) * 0", "{{provider}}"),
              w=18, h=6, mappings=INCIDENT_MAPPINGS),
    ]


def service_detail() -> list[Item]:
    hist = f"rate(outage_probe_latency_seconds_bucket{{{SVC}}}[$__rate_interval])"
    return [
        db.Row("Availability"),
        ts("Availability per region", "Share of successful probes of the service's monitored checks over "
           "the last 5 minutes, per region (inconclusive runs included).", "percentunit",
           query(f"service_region:probe_success:avg5m{{{SVC}}}", "{{region}}"), minmax=(0, 1)),
        ts("Failure reasons", "Failed runs per second by reason (inconclusive runs excluded).", "ops",
           query(f"sum by (region, reason) (rate(outage_probe_failures_total{{{SVC}}}[$__rate_interval]))",
                 "{{region}} {{reason}}")),
        db.Row("Latency"),
        ts("Latency percentiles", "Probe run duration percentiles over every check of the service.", "s",
           *[query(f"histogram_quantile({q}, sum by (region, le) ({hist}))", f"p{int(q * 100)} {{{{region}}}}")
             for q in (0.5, 0.9, 0.99)]),
        panel(heatmap.Panel(), "Latency heatmap", "Distribution of probe run durations "
              "(outage_probe_latency_seconds).", "s",
              query(f"sum by (le) ({hist})", "{{le}}", fmt=PromQueryFormat.HEATMAP))
        .calculate(False).y_axis(heatmap.YAxisConfig().unit("s")).cell_gap(1)
        # Grafana's own colour defaults: the SDK's model would write zero steps and exponent.
        .color(heatmap.HeatmapColorOptions().scheme("Oranges").mode(HeatmapColorMode.SCHEME).fill("dark-orange")
               .scale(HeatmapColorScale.EXPONENTIAL).exponent(0.5).steps(64)),
        db.Row("HTTP"),
        ts("HTTP phases", "Duration of each HTTP phase of the latest probe, averaged over regions: where "
           "the time goes (resolve, connect, tls, processing, transfer).", "s",
           query(f"avg by (phase) (probe_http_duration_seconds{{{SVC}}})", "{{phase}}"))
        .stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL)).fill_opacity(40),
        ts("HTTP status codes", "Final status code of the latest probe per region and target; 0 when no "
           "response arrived.", "none",
           query(f"probe_http_status_code{{{SVC}}}", "{{region}} {{target}}")),
        ts("Two-path results", "Probe over the freshly resolved address vs the pinned last-known address. "
           "Resolved failing while pinned succeeds: DNS gone, origin alive.", "none",
           query(f"outage_http_path_success{{{SVC}}}", "{{region}} {{path}}"), minmax=(0, 1)),
        ts("TLS certificate expiry", "Time left until the earliest-expiring certificate of the presented "
           "chain expires.", "s",
           query(f"probe_ssl_earliest_cert_expiry{{{SVC}}} - time()", "{{region}} {{target}}")),
        db.Row("DNS"),
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


def dns_health() -> list[Item]:
    return [
        db.Row("Resolvers"),
        panel(table.Panel(), "Rcode: resolver x service", "Latest DNS response code of every service through "
              "every resolver (worst over regions). Missing cells: the resolver did not answer.", "none",
              query(f"max by (service, resolver) (outage_probe_dns_rcode{{{SEL}}})", instant=True,
                    fmt=PromQueryFormat.TABLE),
              w=24, mappings=RCODE_MAPPINGS, links=[detail_link()])
        .with_transformation(dm.DataTransformerConfig(id_val="groupingToMatrix", options={
            "columnField": "resolver", "rowField": "service", "valueField": "Value"})),
        ts("Answer TTL", "Smallest TTL of the answer: how long resolvers may keep serving it.", "s",
           query(f"min by (service, resolver) (outage_probe_dns_answer_ttl_seconds{{{SEL}}})",
                 "{{service}} {{resolver}}")),
        ts("Negative TTL", "For NXDOMAIN and NODATA answers, how long resolvers may keep repeating the "
           "failure after it is fixed (RFC 2308).", "s",
           query(f"max by (service, resolver) (outage_probe_dns_negative_ttl_seconds{{{SEL}}})",
                 "{{service}} {{resolver}}")),
        db.Row("Authoritative nameservers"),
        ts("Nameservers answering per zone", "Share of the zone's nameserver addresses that answer "
           "authoritatively over at least one transport.", "percentunit",
           query(f"sum by (zone) (outage_dns_zone_nameservers_answering{{{SEL}}})"
                 f" / sum by (zone) (outage_dns_zone_nameservers{{{SEL}}})", "{{zone}}"), minmax=(0, 1)),
        status("SOA serials agree", "1 while every answering nameserver of the zone reports the same SOA "
               "serial; 0 means a zone transfer lags or is stuck.",
               f"min by (zone) (outage_dns_zone_serials_agree{{{SEL}}})", "{{zone}}", SERIALS_MAPPINGS, w=12),
        ts("Nameserver failure reasons", "Nameserver addresses not up, by reason (dns_timeout for "
           "black-holed servers, dns_refused, dns_not_authoritative...).", "none",
           query(f"count by (zone, reason) (outage_dns_authoritative_failure_info{{{SEL}}})",
                 "{{zone}} {{reason}}")),
    ]


def exporter_health() -> list[Item]:
    return [
        db.Row("Throughput"),
        ts("Probe rate", "Probe runs completed per second.", "ops",
           query(f"sum by (region) (rate(outage_probe_runs_total{{{SEL}}}[$__rate_interval]))", "{{region}}")),
        ts("Failures by reason", "Failed probe runs per second by reason, all checks.", "ops",
           query(f"sum by (reason) (rate(outage_probe_failures_total{{{SEL}}}[$__rate_interval]))",
                 "{{reason}}")),
        db.Row("Scheduling"),
        ts("Scheduler lag p99", "Delay between a run's due time and its start, including the wait for a "
           "concurrency slot.", "s",
           query("histogram_quantile(0.99, sum by (instance, le) "
                 "(rate(outage_exporter_scheduler_lag_seconds_bucket[$__rate_interval])))", "{{instance}}")),
        ts("Event loop lag p99", "How late the event loop wakes up; lag here inflates every measured "
           "latency.", "s",
           query("histogram_quantile(0.99, sum by (instance, le) "
                 "(rate(outage_exporter_event_loop_lag_seconds_bucket[$__rate_interval])))", "{{instance}}")),
        ts("Probes in flight", "Scheduled probes running right now (bounded by defaults.concurrency).",
           "none", query("outage_exporter_probes_in_flight", "{{instance}}"),
           query("outage_exporter_scheduled_checks", "scheduled checks {{instance}}")),
        ts("Missed and late runs", "Runs skipped because the previous run of the check was still in flight, "
           "and runs started more than 1 s late.", "ops",
           query("rate(outage_exporter_scheduler_skipped_runs_total[$__rate_interval])", "skipped {{instance}}"),
           query("rate(outage_exporter_scheduler_late_runs_total[$__rate_interval])", "late {{instance}}")),
        db.Row("Configuration and vantage"),
        panel(stat.Panel(), "Config reload", "Whether the latest configuration load succeeded (the previous "
              "one keeps running when it did not).", "none",
              query("outage_exporter_config_last_reload_successful", "{{instance}}", instant=True),
              w=8, h=6, mappings=RELOAD_MAPPINGS),
        status("Vantage per region", "1 while the region's controls say its network is healthy.",
               'outage_vantage_healthy{region=~"$region"}', "{{region}}", UP_DOWN_MAPPINGS, w=16, h=6),
        db.Row("Workers"),
        panel(stat.Panel(), "Worker processes", "Processes probing the scheduled checks (--workers; 1 when the "
              "exporter probes them itself). With more, the scheduling panels above show sums over the workers.",
              "none",
              query("outage_exporter_workers", "{{instance}}", instant=True), w=6, h=6),
        ts("Worker restarts", "Worker processes that died without being asked (killed, crashed) and were "
           "started again; each also leaves a log line.", "none",
           query("increase(outage_exporter_worker_restarts_total[$__rate_interval])", "{{instance}}"), w=18, h=6),
    ]


def query_variable(name: str, label: str, expr: str, *, multi: bool = True) -> db.QueryVariable:
    var = (db.QueryVariable(name).label(label).datasource(DS).query({"query": expr, "refId": f"{name}-var"})
           .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC)
           .multi(multi).include_all(multi))
    if multi:
        var.all_value(".*").current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
    return var


def variables(*, one_service: bool = False) -> list[db.QueryVariable | db.DatasourceVariable]:
    """Data source, provider, service and region; the detail dashboard shows one service at a time."""
    return [
        db.DatasourceVariable("datasource").label("Data source").type("prometheus")
        .current(dm.VariableOption(selected=True, text="Prometheus", value=PROMETHEUS_UID)),
        query_variable("provider", "Provider", "label_values(outage_probe_check_info, provider)"),
        query_variable("service", "Service", 'label_values(outage_probe_check_info{provider=~"$provider"}, service)',
                       multi=not one_service),
        query_variable("region", "Region", "label_values(outage_vantage_healthy, region)"),
    ]


class PrometheusAnnotation(dm.AnnotationQuery):
    """The SDK's annotation model lacks the Prometheus annotation editor's fields; they are added here."""

    def __init__(self, *, step: str, title_format: str, text_format: str, tag_keys: str, **kw) -> None:
        super().__init__(**kw)
        self.step, self.title_format, self.text_format, self.tag_keys = step, title_format, text_format, tag_keys

    def to_json(self) -> dict[str, object]:
        return {**super().to_json(), "step": self.step, "titleFormat": self.title_format,
                "textFormat": self.text_format, "tagKeys": self.tag_keys, "useValueForTime": False}


class PrometheusAnnotationBuilder(db.AnnotationQuery):
    """The SDK's annotation builder, building a PrometheusAnnotation."""

    def __init__(self, *, step: str, title_format: str, text_format: str, tag_keys: str) -> None:
        self._internal = PrometheusAnnotation(step=step, title_format=title_format, text_format=text_format,
                                              tag_keys=tag_keys)


def firing_alerts() -> PrometheusAnnotationBuilder:
    builder = PrometheusAnnotationBuilder(step="30s", title_format="{{alertname}}",
                                          text_format="{{service}} {{region}} {{provider}}",
                                          tag_keys="alertname,severity")
    return (builder.name("Firing alerts").enable(True).icon_color("red").datasource(DS)
            .expr('ALERTS{alertstate="firing", service=~"$service|"}'))


def dashboard(key: str, items: list[Item], *, tags: list[str], one_service: bool = False) -> dm.Dashboard:
    board = (db.Dashboard(TITLES[key]).uid(UIDS[key]).tags(["outage-exporter", *tags]).editable().version(1)
             .timezone("browser").refresh("30s").time("now-1h", "now").tooltip(dm.DashboardCursorSync.CROSSHAIR)
             .variables(variables(one_service=one_service)).annotation(firing_alerts())
             .links([db.DashboardLink(TITLES[k]).type(dm.DashboardLinkType.LINK).url(f"/d/{uid}").icon("dashboard")
                     .keep_time(True).include_vars(True).target_blank(False).tooltip("").tags([]).as_dropdown(False)
                     for k, uid in UIDS.items() if k != key]))
    for item in items:
        if isinstance(item, db.Row):
            board.with_row(item)
        else:
            board.with_panel(item)
    built = board.build()
    for pid, built_panel in enumerate(built.panels or [], start=1):
        built_panel.id_val = pid
    return built


def build() -> dict[str, dm.Dashboard]:
    """Every dashboard by file name (without .json)."""
    check_sdk()
    return {
        "outage-overview": dashboard("overview", overview(), tags=["home"]),
        "service-detail": dashboard("service", service_detail(), tags=[], one_service=True),
        "dns-health": dashboard("dns", dns_health(), tags=["dns"]),
        "exporter-health": dashboard("exporter", exporter_health(), tags=["exporter"]),
    }


def check_sdk() -> None:
    """A build of the SDK for another Grafana writes models that Grafana would migrate or misread."""
    version = metadata.version("grafana-foundation-sdk")
    if version.rpartition("!")[2] != GRAFANA_VERSION:
        raise SystemExit(f"grafana-foundation-sdk {version} is not a build for Grafana {GRAFANA_VERSION}: "
                         "pip install -c constraints.txt -e '.[test]'")


def to_json(board: dm.Dashboard) -> dict:
    return json.loads(json.dumps(board, cls=JSONEncoder))


def render(board: dm.Dashboard) -> str:
    return json.dumps(to_json(board), indent=2, sort_keys=True) + "\n"


def main(out_dir: Path = OUT_DIR) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, board in build().items():
        (out_dir / f"{name}.json").write_text(render(board))
    return 0


if __name__ == "__main__":
    sys.exit(main())
