"""docs/metrics.md is the contract: what /metrics and /probe emit must match it exactly, both ways."""

from __future__ import annotations

import pytest

from exporter.checks import Check
from exporter.config.model import AuthoritativeCheck, RoutingConfig, RoutingPrefix, StatusPage, TwoPath
from exporter.exposition import SelfMetrics, render_metrics, render_probe_result
from exporter.exposition.probe import UNEXPORTED_DETAILS
from exporter.exposition.routing import SignalsCollector
from exporter.lab.demo import scenario_metric
from exporter.looplag import LoopLagMonitor
from exporter.probers import result as r
from exporter.probers.result import NameserverResult, ProbeResult, ZoneReport
from exporter.results import ResultStore
from exporter.routing.feed import RoutingFeed
from exporter.routing.signals import Signals
from exporter.scheduler import Scheduler
from exporter.statuspage import StatusPagePoller
from tests.helpers.contract import (
    contract_problems,
    documented_but_missing,
    parse_failure_reasons,
    parse_metrics_doc,
)
from tests.helpers.factories import make_check, make_result
from tests.helpers.promtool import promtool_check_metrics

ALL_DETAIL_KEYS = {value for name, value in vars(r).items() if name.startswith("D_")}
ALL_PHASES = {value for name, value in vars(r).items() if name.startswith("PHASE_")}

HTTP_OK = make_result(
    phases={"resolve": 0.002, "connect": 0.01, "tls": 0.03, "processing": 0.05, "transfer": 0.004},
    details={
        r.D_IP_PROTOCOL: 4, r.D_ADDRESS: "127.0.0.1", r.D_TLS: 1, r.D_TLS_VERSION: "TLS 1.3",
        r.D_CERT_EXPIRY: 1.9e9, r.D_HTTP_STATUS: 200, r.D_HTTP_VERSION: 1.1, r.D_HTTP_REDIRECTS: 1,
        r.D_HTTP_CONTENT_LENGTH: 512, r.D_HTTP_BODY_BYTES: 2048, r.D_FAILED_DUE_TO_REGEX: 0,
        r.D_PINNED_SUCCESS: 1, r.D_PINNED_DURATION: 0.04, r.D_PINNED_STATUS: 200, r.D_PINNED_AGE: 12.5,
        r.D_PINNED_ADDRESS: "127.0.0.2",
    },
)
DNS_OK = make_result(
    phases={"connect": 0.0001, "tls": 0.004, "request": 0.02, "resolve": 0.001},
    details={
        r.D_IP_PROTOCOL: 6, r.D_ADDRESS: "::1", r.D_DNS_RCODE: 0, r.D_DNS_ANSWER_RRS: 2,
        r.D_DNS_AUTHORITY_RRS: 1, r.D_DNS_ADDITIONAL_RRS: 0, r.D_DNS_MIN_TTL: 300, r.D_DNS_NEGATIVE_TTL: 60,
        r.D_DNS_SERIAL: 2021100401, r.D_DNS_AA: 1, r.D_DNS_TRANSPORT: "tcp", r.D_DNS_TRUNCATED: 1,
        r.D_TLS: 1, r.D_TLS_VERSION: "TLS 1.2", r.D_CERT_EXPIRY: 1.8e9,
    },
)
TCP_OK = make_result(
    phases={"resolve": 0.001, "connect": 0.002, "tls": 0.01},
    details={r.D_IP_PROTOCOL: 4, r.D_TLS: 1, r.D_TLS_VERSION: "TLS 1.3", r.D_CERT_EXPIRY: 1.7e9},
)
HTTP_FAILED = make_result(False, reason=r.HTTP_STATUS, details={r.D_HTTP_STATUS: 503, r.D_IP_PROTOCOL: 4})
DNS_FAILED = make_result(False, reason=r.DNS_TIMEOUT, phases={"connect": 0.0001})
ZONE = AuthoritativeCheck(zone="example.test")
ZONE_RESULT = make_result(
    False,
    reason=r.DNS_TIMEOUT,
    zone=ZoneReport(
        zone="example.test",
        nameservers=(
            NameserverResult("ns1.example.test", "127.0.0.53", "udp", True, None, 0.002, 0, True, 2021100401),
            NameserverResult("ns1.example.test", "127.0.0.53", "tcp", False, r.DNS_NOT_AUTHORITATIVE, 0.003, 0,
                             False, 2021100401),
            NameserverResult("ns2.example.test", "127.0.0.54", "udp", False, r.DNS_TIMEOUT, 0.5),
        ),
        discovery_success=True,
        last_discovery=1_700_000_000.0,
        set_changes=1,
    ),
)
FIXTURE_RESULTS: dict[str, list[ProbeResult]] = {
    "http": [HTTP_OK, HTTP_FAILED],
    "dns": [DNS_OK, DNS_FAILED],
    "tcp": [TCP_OK],
}


def _store() -> ResultStore:
    """One check per fixture result (so each is some check's latest), one that saw every failure reason,
    and one that never ran."""
    recorded: list[tuple[Check, ProbeResult]] = []
    for prober, results in FIXTURE_RESULTS.items():
        for i, result in enumerate(results):
            two_path = TwoPath() if prober == "http" else None
            check = make_check(f"{prober}-{i}", prober=prober, service=f"svc-{prober}", control=(i == 0),
                               two_path=two_path)
            recorded.append((check, result))
    every_reason = make_check("every-reason", prober="tcp")
    recorded += [(every_reason, make_result(False, reason=reason)) for reason in r.REASONS]
    recorded.append((make_check("authns", service="svc-zone", authoritative=ZONE), ZONE_RESULT))
    # a region whose only control fails: its vantage is unhealthy and its other failure inconclusive
    recorded.append((make_check("control", region="ap", service="ctl", control=True), make_result(False)))
    recorded.append((make_check("home", region="ap", service="svc-ap"), make_result(False)))
    never_ran = make_check("idle", prober="http", service="idle")
    store = ResultStore()
    store.set_checks(list(dict.fromkeys([check for check, _ in recorded] + [never_ran])))
    for check, result in recorded:
        store.record(check, result)
    return store


def _self_metrics() -> SelfMetrics:
    scheduler = Scheduler(ResultStore(), {}, concurrency=4)
    looplag = LoopLagMonitor()
    looplag.observe(0.002)
    metrics = SelfMetrics(scheduler=scheduler, looplag=looplag)
    metrics.reload_succeeded(timestamp=1_700_000_000.0)
    metrics.reload_failed("bad yaml")
    metrics.probe_endpoint_request("http_2xx")
    metrics.probe_endpoint_failure("http_2xx", "conn_refused")
    metrics.web_config_loaded(True)
    metrics.config_files_checked([("http_auth", "/etc/prober/token", True), ("http_auth", "/etc/prober/ca.pem", False)])
    scenario_metric(metrics.registry).labels("facebook-2021-10-04", "nameservers-unreachable", "3").set(1)  # demo
    metrics.registry.register(SignalsCollector(_signals()))
    return metrics


def _signals() -> Signals:
    """A routing feed and a status page poller with some state (not started: nothing is contacted)."""
    signals = Signals()
    feed = RoutingFeed(RoutingConfig(enabled=True, prefixes=(RoutingPrefix("192.0.2.0/24", "meta"),)))
    feed.state.load_initial("192.0.2.0/24", {"rrc00|198.51.100.1", "rrc21|198.51.100.2"})
    signals.routing = feed
    page = StatusPage("meta", "http://127.0.0.1:9/", (("WhatsApp", "whatsapp"),))
    signals.statuspages = StatusPagePoller((page,))
    signals.statuspages.states["meta"].indicator = "major"
    return signals


@pytest.fixture(scope="module")
def docs():
    return parse_metrics_doc()


@pytest.fixture(scope="module")
def metrics_text() -> str:
    store = _store()
    metrics = _self_metrics()
    return render_metrics(store, metrics.scheduler, metrics).decode()


@pytest.fixture(scope="module")
def probe_texts() -> list[str]:
    return [
        render_probe_result(result, prober) for prober, results in FIXTURE_RESULTS.items() for result in results
    ]


def test_fixtures_cover_every_detail_phase_and_reason():
    used_details = {key for results in FIXTURE_RESULTS.values() for res in results for key in res.details}
    used_phases = {phase for results in FIXTURE_RESULTS.values() for res in results for phase in res.phases}
    assert used_details == ALL_DETAIL_KEYS
    assert used_phases == ALL_PHASES
    assert UNEXPORTED_DETAILS < ALL_DETAIL_KEYS


def test_metrics_output_matches_docs(docs, metrics_text):
    assert contract_problems(metrics_text, docs) == []


def test_probe_output_matches_docs(docs, probe_texts):
    for text in probe_texts:
        assert contract_problems(text, docs, probe=True) == []


def test_every_documented_metric_is_emitted_on_metrics(docs, metrics_text):
    assert documented_but_missing(docs, [metrics_text]) == set()


def test_every_probe_section_metric_is_emitted_by_probe(docs, probe_texts):
    in_probe = {name for name, doc in docs.items() if doc.in_probe}
    assert documented_but_missing({n: docs[n] for n in in_probe}, probe_texts) == set()


def test_failure_reasons_documented_exactly():
    reasons = parse_failure_reasons()
    assert list(reasons) == list(r.REASONS)
    assert all(meaning for meaning in reasons.values())


def test_every_reason_is_exposed(metrics_text):
    for reason in set(r.REASONS) - r.PROBER_SIDE_REASONS:  # those are inconclusive, not failures
        assert f'reason="{reason}"' in metrics_text


def test_promtool_accepts_metrics(metrics_text):
    assert promtool_check_metrics(metrics_text) == ""


def test_promtool_accepts_probe_output(probe_texts):
    for text in probe_texts:
        assert promtool_check_metrics(text) == ""


def test_contract_check_catches_undocumented_and_wrong_labels(docs):
    text = (
        "# HELP outage_probe_bogus_total x\n# TYPE outage_probe_bogus_total counter\noutage_probe_bogus_total 1\n"
        "# HELP probe_success x\n# TYPE probe_success gauge\nprobe_success{service=\"a\"} 1\n"
    )
    problems = contract_problems(text, docs)
    assert problems[0] == "outage_probe_bogus_total: emitted but not documented in docs/metrics.md"
    assert problems[1].startswith("probe_success: series with labels ['service'], documented ['check',")
    assert len(problems) == 2
