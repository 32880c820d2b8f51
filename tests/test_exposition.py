from __future__ import annotations

import asyncio
import dataclasses
import re

import pytest

from exporter.exposition import (
    CONTENT_TYPE,
    SelfMetrics,
    render_metrics,
    render_metrics_async,
    render_probe_result,
    render_scheduled,
)
from exporter.exposition.probe import escape_label_value, format_value
from exporter.exposition.scheduled import SCHEDULED_FAMILIES, prepare_scheduled, render_scheduled_chunks_async
from exporter.looplag import LoopLagMonitor
from exporter.probers import result as r
from exporter.results import ResultStore
from exporter.scheduler import Scheduler
from tests.helpers.factories import make_check, make_result

ID = 'service="s",provider="p",region="r",check="home",target="http://t/",resolver=""'


def _check(**changes):
    """The check ID describes; ``changes`` keep its key (same check, new settings)."""
    check = make_check("home", service="s", provider="p", region="r", target="http://t/", interval=15.0)
    return dataclasses.replace(check, **changes) if changes else check


def _store(*checks):
    store = ResultStore()
    store.set_checks(list(checks))
    return store


def _family(text: str, name: str) -> list[str]:
    """The sample lines of one family (name or name_suffix), without HELP/TYPE."""
    pattern = re.compile(rf"^{re.escape(name)}(_bucket|_sum|_count)?[{{ ]")
    return [line for line in text.splitlines() if pattern.match(line)]


def _count_renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The plain label part of every result rendered from now on, in order (rendering is otherwise unchanged)."""
    from exporter.exposition import scheduled

    rendered: list[str] = []
    real = scheduled.write_result

    def counting(result, prober, plain, *rest):
        rendered.append(plain)
        real(result, prober, plain, *rest)

    monkeypatch.setattr(scheduled, "write_result", counting)
    return rendered


async def _keep_failing(store: ResultStore, checks, stop: asyncio.Event) -> None:
    """Record a timeout for every third check on each loop turn until ``stop``: results arriving mid-scrape."""
    while not stop.is_set():
        for check in checks[::3]:
            store.record(check, make_result(False, reason=r.TIMEOUT, finished_at=200.0))
        await asyncio.sleep(0)


def test_content_type_is_text_format_0_0_4():
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_exact_text_of_a_check_that_never_ran():
    store = _store(_check())
    zero_buckets = "".join(
        f'outage_probe_latency_seconds_bucket{{{ID},le="{le}"}} 0\n'
        for le in ("0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5",
                   "5.0", "10.0", "30.0", "+Inf")
    )
    assert render_scheduled(store) == (
        "# HELP outage_probe_check_info One series per scheduled check (value 1) from load on: its module, "
        "prober and whether it is a control.\n"
        "# TYPE outage_probe_check_info gauge\n"
        f'outage_probe_check_info{{{ID},module="http_module",prober="http",control="false"}} 1\n'
        "# HELP outage_probe_interval_seconds How often the check runs, in seconds.\n"
        "# TYPE outage_probe_interval_seconds gauge\n"
        f"outage_probe_interval_seconds{{{ID}}} 15.0\n"
        "# HELP outage_probe_runs_total Probe runs completed since the check was loaded.\n"
        "# TYPE outage_probe_runs_total counter\n"
        f"outage_probe_runs_total{{{ID}}} 0\n"
        "# HELP outage_probe_inconclusive_total Failed probe runs not counted as failures because the region's "
        "vantage was unhealthy.\n"
        "# TYPE outage_probe_inconclusive_total counter\n"
        f"outage_probe_inconclusive_total{{{ID}}} 0\n"
        "# HELP outage_probe_latency_seconds Duration of every probe run, in seconds.\n"
        "# TYPE outage_probe_latency_seconds histogram\n"
        + zero_buckets
        + f"outage_probe_latency_seconds_sum{{{ID}}} 0.0\n"
        f"outage_probe_latency_seconds_count{{{ID}}} 0\n"
        "# HELP outage_vantage_healthy Whether the region's control checks say its vantage is healthy (1) or "
        "not (0).\n"
        "# TYPE outage_vantage_healthy gauge\n"
        'outage_vantage_healthy{region="r"} 1\n'
        "# HELP outage_vantage_controls Control checks loaded in the region.\n"
        "# TYPE outage_vantage_controls gauge\n"
        'outage_vantage_controls{region="r"} 0\n'
        "# HELP outage_vantage_controls_failing Control checks of the region whose latest run failed.\n"
        "# TYPE outage_vantage_controls_failing gauge\n"
        'outage_vantage_controls_failing{region="r"} 0\n'
    )


def test_exact_text_of_one_successful_http_result():
    check = _check()
    store = _store(check)
    store.record(check, make_result(duration=0.25, phases={"connect": 0.01, "tls": 0.02},
                                    details={r.D_HTTP_STATUS: 200, r.D_TLS: 1, r.D_ADDRESS: "127.0.0.1"},
                                    finished_at=1700000000.5))
    text = render_scheduled(store)
    assert _family(text, "probe_success") == [f"probe_success{{{ID}}} 1"]
    assert _family(text, "probe_duration_seconds") == [f"probe_duration_seconds{{{ID}}} 0.25"]
    assert _family(text, "probe_http_duration_seconds") == [
        f'probe_http_duration_seconds{{{ID},phase="connect"}} 0.01',
        f'probe_http_duration_seconds{{{ID},phase="tls"}} 0.02',
    ]
    assert _family(text, "probe_http_status_code") == [f"probe_http_status_code{{{ID}}} 200"]
    assert _family(text, "probe_http_ssl") == [f"probe_http_ssl{{{ID}}} 1"]
    assert _family(text, "outage_probe_last_run_timestamp_seconds") == [
        f"outage_probe_last_run_timestamp_seconds{{{ID}}} 1700000000.5"
    ]
    assert _family(text, "outage_probe_runs_total") == [f"outage_probe_runs_total{{{ID}}} 1"]
    assert "outage_probe_failures_total" not in text
    assert "outage_probe_failure_info" not in text
    assert "127.0.0.1" not in text  # the address is a log detail, not a label


def test_phases_and_details_that_did_not_happen_are_absent():
    check = _check()
    store = _store(check)
    store.record(check, make_result(False, reason=r.CONN_REFUSED, phases={"connect": 0.001}))
    text = render_scheduled(store)
    for absent in ("probe_dns_lookup_time_seconds", "probe_http_status_code", "probe_http_ssl",
                   "probe_ssl_earliest_cert_expiry", "probe_tls_version_info", 'phase="tls"',
                   'phase="resolve"', 'phase="processing"', "probe_dns_query_succeeded"):
        assert absent not in text
    assert _family(text, "probe_http_duration_seconds") == [
        f'probe_http_duration_seconds{{{ID},phase="connect"}} 0.001'
    ]


def test_resolve_phase_feeds_dns_lookup_time_for_http_and_tcp_only():
    http = _check()
    tcp = make_check("tcp-check", prober="tcp", service="s", provider="p", region="r", target="t:443")
    dns = make_check("ns", prober="dns")
    store = _store(http, tcp, dns)
    for check in (http, tcp, dns):
        store.record(check, make_result(phases={"resolve": 0.004, "connect": 0.001}))
    text = render_scheduled(store)
    lookups = _family(text, "probe_dns_lookup_time_seconds")
    assert len(lookups) == 2 and all(line.endswith(" 0.004") for line in lookups)
    assert 'check="tcp-check"' in lookups[1]
    assert len(_family(text, "outage_probe_tcp_duration_seconds")) == 2
    assert len(_family(text, "probe_dns_duration_seconds")) == 2
    assert _family(text, "probe_dns_query_succeeded")[0].endswith(" 0")  # no rcode: no response


def test_label_values_are_escaped():
    check = _check(service='a"b\\c\nd', target="http://t/?q=\"x\"")
    store = _store(check)
    store.record(check, make_result(details={r.D_TLS_VERSION: 'TLS "1.3"'}))
    text = render_scheduled(store)
    assert 'service="a\\"b\\\\c\\nd"' in text
    assert 'target="http://t/?q=\\"x\\""' in text
    assert 'version="TLS \\"1.3\\""' in text
    assert all(line.count("\n") == 0 for line in text.split("\n"))  # no raw newline inside a line
    assert len(text.splitlines()) == text.count("\n")


def test_escape_label_value_and_format_value():
    assert escape_label_value("plain") == "plain"
    assert escape_label_value('\\"\n') == '\\\\\\"\\n'
    assert format_value(3) == "3"
    assert format_value(True) == "1"
    assert format_value(0.5) == "0.5"
    assert format_value(1e-05) == "1e-05"
    assert format_value(float("inf")) == "+Inf"
    assert format_value(float("-inf")) == "-Inf"
    assert format_value(float("nan")) == "NaN"
    assert format_value("200") is None  # type: ignore[arg-type]


def test_non_numeric_detail_is_dropped_not_rendered():
    check = _check()
    store = _store(check)
    store.record(check, make_result(details={r.D_HTTP_STATUS: "oops", r.D_HTTP_REDIRECTS: 2}))
    text = render_scheduled(store)
    assert "probe_http_status_code" not in text
    assert _family(text, "probe_http_redirects") == [f"probe_http_redirects{{{ID}}} 2"]


def test_latency_histogram_is_cumulative_and_inf_equals_count():
    check = _check()
    store = _store(check)
    for duration in (0.0005, 0.003, 0.003, 0.3, 45.0):
        store.record(check, make_result(duration=duration))
    lines = _family(render_scheduled(store), "outage_probe_latency_seconds")
    buckets = {re.search(r'le="([^"]+)"', line).group(1): int(line.rsplit(" ", 1)[1])
               for line in lines if "_bucket" in line}
    assert buckets == {
        "0.001": 1, "0.0025": 1, "0.005": 3, "0.01": 3, "0.025": 3, "0.05": 3, "0.1": 3, "0.25": 3,
        "0.5": 4, "1.0": 4, "2.5": 4, "5.0": 4, "10.0": 4, "30.0": 4, "+Inf": 5,
    }
    assert lines[-2] == f"outage_probe_latency_seconds_sum{{{ID}}} {0.0005 + 0.003 + 0.003 + 0.3 + 45.0!r}"
    assert lines[-1] == f"outage_probe_latency_seconds_count{{{ID}}} 5"


def test_failure_info_appears_while_failing_and_disappears_on_success():
    check = _check()
    store = _store(check)
    store.record(check, make_result(False, reason=r.DNS_SERVFAIL))
    text = render_scheduled(store)
    assert _family(text, "outage_probe_failure_info") == [f'outage_probe_failure_info{{{ID},reason="dns_servfail"}} 1']
    assert _family(text, "probe_success") == [f"probe_success{{{ID}}} 0"]
    store.record(check, make_result())
    text = render_scheduled(store)
    assert "outage_probe_failure_info{" not in text
    assert _family(text, "outage_probe_failures_total") == [
        f'outage_probe_failures_total{{{ID},reason="dns_servfail"}} 1'
    ]


def test_failure_reasons_accumulate_per_reason():
    check = _check()
    store = _store(check)
    for reason in (r.DNS_TIMEOUT, r.DNS_SERVFAIL, r.DNS_TIMEOUT):
        store.record(check, make_result(False, reason=reason))
    assert _family(render_scheduled(store), "outage_probe_failures_total") == [
        f'outage_probe_failures_total{{{ID},reason="dns_timeout"}} 2',
        f'outage_probe_failures_total{{{ID},reason="dns_servfail"}} 1',
    ]


def test_each_family_has_one_header_in_a_stable_order():
    checks = [_check(check=f"c{i}") for i in range(3)] + [make_check("ns", prober="dns")]
    store = _store(*checks)
    for check in checks:
        store.record(check, make_result(False, reason=r.TIMEOUT, phases={"connect": 0.1}))
        store.record(check, make_result(phases={"connect": 0.1}, details={r.D_IP_PROTOCOL: 4}))
    text = render_scheduled(store)
    types = re.findall(r"^# TYPE (\S+) ", text, flags=re.M)
    assert len(types) == len(set(types))
    order = [family.name for family in SCHEDULED_FAMILIES]
    assert types == sorted(types, key=order.index)
    assert text == render_scheduled(store)


def test_label_cache_follows_reloads():
    check = _check()
    store = _store(check)
    assert 'provider="p"' in render_scheduled(store)
    store.set_checks([_check(provider="q", control=True)])
    text = render_scheduled(store)
    assert 'provider="p"' not in text
    assert 'provider="q"' in text and 'control="true"' in text


def test_empty_store_renders_nothing():
    assert render_scheduled(ResultStore()) == ""


def test_probe_output_has_no_identity_labels():
    result = make_result(False, reason=r.DNS_SERVFAIL, duration=0.5, phases={"resolve": 0.5})
    assert render_probe_result(result, "http") == (
        "# HELP probe_success Whether the probe succeeded (1) or failed (0).\n"
        "# TYPE probe_success gauge\n"
        "probe_success 0\n"
        "# HELP probe_duration_seconds How long the probe took to complete, in seconds.\n"
        "# TYPE probe_duration_seconds gauge\n"
        "probe_duration_seconds 0.5\n"
        "# HELP outage_probe_failure_info Why the probe failed (value 1); absent when it succeeded.\n"
        "# TYPE outage_probe_failure_info gauge\n"
        'outage_probe_failure_info{reason="dns_servfail"} 1\n'
        "# HELP probe_http_duration_seconds Duration of each HTTP probe phase that ran, in seconds.\n"
        "# TYPE probe_http_duration_seconds gauge\n"
        'probe_http_duration_seconds{phase="resolve"} 0.5\n'
        "# HELP probe_dns_lookup_time_seconds Time spent resolving the target host name, in seconds.\n"
        "# TYPE probe_dns_lookup_time_seconds gauge\n"
        "probe_dns_lookup_time_seconds 0.5\n"
    )


def test_probe_output_for_dns():
    result = make_result(phases={"request": 0.02}, details={r.D_DNS_RCODE: 0, r.D_DNS_ANSWER_RRS: 1,
                                                            r.D_DNS_AA: 1, r.D_DNS_TRANSPORT: "udp"})
    lines = [line for line in render_probe_result(result, "dns").splitlines() if not line.startswith("#")]
    assert lines == [
        "probe_success 1",
        "probe_duration_seconds 0.05",
        'probe_dns_duration_seconds{phase="request"} 0.02',
        "probe_dns_query_succeeded 1",
        "outage_probe_dns_rcode 0",
        "probe_dns_answer_rrs 1",
        "outage_probe_dns_authoritative 1",
    ]


def _self_metrics() -> SelfMetrics:
    scheduler = Scheduler(ResultStore(), {}, concurrency=2)
    scheduler.stats.skipped_total = 3
    scheduler.stats.late_total = 2
    scheduler.stats.lag.observe(0.02)
    looplag = LoopLagMonitor()
    looplag.observe(0.3)
    return SelfMetrics(scheduler=scheduler, looplag=looplag, version="9.9.9")


def test_self_metrics_reload_state():
    metrics = _self_metrics()
    text = metrics.render().decode()
    assert "outage_exporter_config_last_reload_successful 0.0" in text
    metrics.reload_succeeded(timestamp=1700000000.0)
    metrics.reload_failed("line 3: bad indent")
    text = metrics.render().decode()
    assert "outage_exporter_config_last_reload_successful 0.0" in text
    assert "outage_exporter_config_last_reload_success_timestamp_seconds 1.7e+09" in text
    assert "outage_exporter_config_reloads_total 2.0" in text
    assert "outage_exporter_config_reload_failures_total 1.0" in text
    assert metrics.last_reload_error == "line 3: bad indent"
    metrics.reload_succeeded()
    assert "outage_exporter_config_last_reload_successful 1.0" in metrics.render().decode()
    assert metrics.last_reload_error is None


def test_self_metrics_scheduler_looplag_build_info_and_probe_requests():
    metrics = _self_metrics()
    metrics.probe_endpoint_request("http_2xx")
    metrics.probe_endpoint_request("http_2xx")
    text = metrics.render().decode()
    assert re.search(r'^outage_exporter_build_info\{python_version="3\.[^"]+",version="9\.9\.9"\} 1\.0$', text, re.M)
    assert "outage_exporter_scheduled_checks 0.0" in text
    assert "outage_exporter_probes_in_flight 0.0" in text
    assert "outage_exporter_scheduler_skipped_runs_total 3.0" in text
    assert "outage_exporter_scheduler_late_runs_total 2.0" in text
    assert 'outage_exporter_scheduler_lag_seconds_bucket{le="0.025"} 1.0' in text
    assert 'outage_exporter_scheduler_lag_seconds_bucket{le="0.01"} 0.0' in text
    assert 'outage_exporter_event_loop_lag_seconds_bucket{le="+Inf"} 1.0' in text
    assert 'outage_exporter_probe_endpoint_requests_total{module="http_2xx"} 2.0' in text
    assert "process_resident_memory_bytes" in text or "process_" not in text
    assert "python_gc_objects_collected_total" in text
    assert "_created" not in text


def test_render_metrics_is_self_metrics_then_scheduled():
    check = _check()
    store = _store(check)
    metrics = _self_metrics()
    body = render_metrics(store, metrics.scheduler, metrics)
    assert isinstance(body, bytes)
    text = body.decode()
    assert text.index("outage_exporter_build_info") < text.index("outage_probe_check_info")
    assert text.endswith(render_scheduled(store))


async def test_async_render_matches_sync_and_lets_other_tasks_run():
    checks = [make_check(f"c{i}") for i in range(1200)]
    store = _store(*checks)
    for check in checks:
        store.record(check, make_result(phases={"connect": 0.01}))
    metrics = _self_metrics()
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    body = await render_metrics_async(store, metrics.scheduler, metrics)
    task.cancel()
    assert ticks - before >= 2  # the loop ran other tasks between batches
    sync_body = render_metrics(store, metrics.scheduler, metrics).decode()
    strip = re.compile(r"^(process_|python_gc).*\n", re.M)  # runtime stats move between two renders
    assert strip.sub("", body.decode()) == strip.sub("", sync_body)


async def test_async_render_is_not_disturbed_by_a_reload_midway():
    checks = [make_check(f"c{i}") for i in range(1200)]
    store = _store(*checks)
    expected = render_scheduled(store)

    async def reload_soon():
        await asyncio.sleep(0)
        store.set_checks(checks[:1])

    reload = asyncio.create_task(reload_soon())
    chunks = await render_scheduled_chunks_async(store, batch=100)
    await reload
    assert b"".join(chunks).decode() == expected
    assert len(store) == 1


async def test_prepared_text_leaves_the_first_scrape_only_what_ran_since(monkeypatch):
    checks = [make_check(f"c{i}", service="s", provider="p", region="r", target="http://t/") for i in range(6)]
    store, fresh = _store(*checks), _store(*checks)
    for check in checks[:3]:
        result = make_result(details={r.D_HTTP_STATUS: 200})
        store.record(check, result)
        fresh.record(check, result)
    await prepare_scheduled(store, batch=2)
    rendered = _count_renders(monkeypatch)
    failed = make_result(False, reason=r.TIMEOUT)
    store.record(checks[4], failed)  # after preparing: must still show
    fresh.record(checks[4], failed)
    text = b"".join(await render_scheduled_chunks_async(store)).decode()
    assert rendered == [f'{{{ID.replace("home", "c4")}}} ']  # only the check with a new result
    assert text == render_scheduled(fresh)


@pytest.mark.parametrize("prober", ["http", "dns", "tcp"])
def test_probe_output_never_carries_identity_labels(prober):
    result = make_result(False, reason=r.TIMEOUT, phases={"resolve": 0.1, "connect": 0.2},
                         details={r.D_TLS_VERSION: "TLS 1.3", r.D_IP_PROTOCOL: 6})
    text = render_probe_result(result, prober)
    for label in ("service=", "provider=", "region=", "check=", "target=", "resolver="):
        assert label not in text


def test_text_follows_every_result_recorded_after_a_scrape():
    checks = [make_check(f"c{i}", service="s", provider="p", region="r", target="http://t/") for i in range(3)]
    store, fresh = _store(*checks), _store(*checks)
    render_scheduled(store)  # from here on, records re-render a check's text as they arrive
    history = [make_result(False, reason=r.TIMEOUT, phases={"connect": 0.1}),
               make_result(details={r.D_HTTP_STATUS: 200}), make_result(False, reason=r.HTTP_STATUS)]
    for i, result in enumerate(history):
        store.record(checks[i], result)
        fresh.record(checks[i], result)
    again = make_result(details={r.D_IP_PROTOCOL: 6})
    store.record(checks[0], again)
    fresh.record(checks[0], again)
    text = render_scheduled(store)
    assert text == render_scheduled(fresh)  # rendered whole from the state: same bytes
    assert _family(text, "outage_probe_failure_info") == [
        f'outage_probe_failure_info{{{ID.replace("home", "c2")},reason="{r.HTTP_STATUS}"}} 1'
    ]
    assert _family(text, "probe_ip_protocol") == [f'probe_ip_protocol{{{ID.replace("home", "c0")}}} 6']


async def test_async_scrape_shows_one_instant_even_if_results_arrive_meanwhile():
    checks = [make_check(f"c{i}") for i in range(50)]
    store = _store(*checks)
    for check in checks:
        store.record(check, make_result(phases={"connect": 0.01}))
    expected = render_scheduled(store)

    async def record_soon():
        await asyncio.sleep(0)
        for check in checks:
            store.record(check, make_result(False, reason=r.TIMEOUT))

    recording = asyncio.create_task(record_soon())
    chunks = await render_scheduled_chunks_async(store)
    await recording
    assert b"".join(chunks).decode() == expected
    assert render_scheduled(store) != expected  # the next scrape shows the new results


async def test_metrics_endpoint_sends_the_body_with_its_length():
    from types import SimpleNamespace

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from exporter.web.app import RUNTIME, metrics

    store = _store(*[make_check(f"c{i}") for i in range(20)])
    self_metrics = _self_metrics()
    app = web.Application()
    app[RUNTIME] = SimpleNamespace(store=store, scheduler=None, self_metrics=self_metrics)  # type: ignore[assignment]
    app.router.add_get("/metrics", metrics)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/metrics", headers={"Accept-Encoding": "gzip"})
        body = await resp.read()
        assert resp.status == 200
        assert resp.headers["Content-Type"] == CONTENT_TYPE
        assert int(resp.headers["Content-Length"]) == len(body)
        assert body.decode().endswith(render_scheduled(store))
        head = await client.head("/metrics")
        assert head.status == 200 and await head.read() == b""


def test_results_are_rendered_lazily_once_per_scrape(monkeypatch):
    rendered = _count_renders(monkeypatch)
    checks = [make_check(f"c{i}") for i in range(10)]
    store = _store(*checks)
    render_scheduled(store)
    for _ in range(5):
        for check in checks[:3]:
            store.record(check, make_result())
    assert rendered == []  # recording formats nothing
    text = render_scheduled(store)
    assert len(rendered) == 3  # each dirty check once, however often it ran
    assert render_scheduled(store) == text and len(rendered) == 3  # nothing new: nothing rendered
    assert all(line.endswith(" 5") for line in _family(text, "outage_probe_runs_total")[:3])


async def test_scrape_rendering_over_many_loop_turns_shows_the_instant_it_started():
    checks = [make_check(f"c{i}") for i in range(40)]
    store, before = _store(*checks), _store(*checks)
    render_scheduled(store)
    for check in checks:
        for s in (store, before):
            s.record(check, make_result(phases={"connect": 0.01}, finished_at=100.0))
    expected = render_scheduled(before)
    stop = asyncio.Event()
    scrapes = [asyncio.create_task(render_scheduled_chunks_async(store, batch=3)) for _ in range(2)]
    recording = asyncio.create_task(_keep_failing(store, checks, stop))  # starts once the first scrape is under way
    first, second = await asyncio.gather(*scrapes)
    stop.set()
    await recording
    assert b"".join(first).decode() == expected  # 40 dirty checks, 3 per turn, results arriving each turn
    later = b"".join(second).decode()  # the second scrape waited for the first, then showed what came since
    assert _family(later, "outage_probe_failure_info") and "reason=" not in expected
    fresh = _store(*checks)
    for check in checks:
        fresh.record(check, make_result(phases={"connect": 0.01}, finished_at=100.0))
    for check in checks[::3]:
        for _ in range(store.get(check.key).runs - 1):
            fresh.record(check, make_result(False, reason=r.TIMEOUT, finished_at=200.0))
    assert render_scheduled(store) == render_scheduled(fresh)


async def test_reload_while_a_scrape_renders_keeps_both_scrapes_whole():
    checks = [make_check(f"c{i}") for i in range(30)]
    store = _store(*checks)
    for check in checks:
        store.record(check, make_result())
    scraping = asyncio.create_task(render_scheduled_chunks_async(store, batch=2))
    await asyncio.sleep(0)
    store.set_checks(checks[:10])
    old = b"".join(await scraping).decode()
    assert len(_family(old, "outage_probe_runs_total")) == 30
    store.record(checks[0], make_result(False, reason=r.TIMEOUT))
    new = b"".join(await render_scheduled_chunks_async(store, batch=2)).decode()
    assert len(_family(new, "outage_probe_runs_total")) == 10
    assert _family(new, "outage_probe_failure_info") == [
        f'outage_probe_failure_info{{service="svc",provider="svc",region="eu",check="c0",'
        f'target="http://127.0.0.1:8080/",resolver="",reason="{r.TIMEOUT}"}} 1'
    ]


def test_reload_renders_only_checks_with_new_labels_or_new_results(monkeypatch):
    rendered = _count_renders(monkeypatch)
    checks = [make_check(f"c{i}", provider="p") for i in range(6)]
    store = _store(*checks)
    for check in checks:
        store.record(check, make_result(finished_at=1.0))
    render_scheduled(store)
    rendered.clear()
    store.record(checks[1], make_result(False, reason=r.TIMEOUT, finished_at=2.0))
    renamed = dataclasses.replace(checks[2], provider="q")  # same key, new label value
    store.set_checks([checks[5], checks[1], renamed, checks[0]])
    text = render_scheduled(store)
    assert sorted('check="c1"' in p for p in rendered) == [False, True]  # c1 (new result), c2 (new labels)
    assert any('check="c2",' in p and 'provider="q"' in p for p in rendered)
    fresh = _store(checks[5], checks[1], renamed, checks[0])
    for check in (checks[5], checks[1], renamed, checks[0]):
        fresh.record(check, make_result(finished_at=1.0))
    fresh.record(checks[1], make_result(False, reason=r.TIMEOUT, finished_at=2.0))
    assert text == render_scheduled(fresh)


async def test_dirty_checks_are_rendered_in_the_background_without_tearing_a_scrape(monkeypatch):
    from exporter.exposition import scheduled

    monkeypatch.setattr(scheduled, "FLUSH_FIRST_SECONDS", 0.0)  # flush on every loop turn
    checks = [make_check(f"c{i}") for i in range(40)]
    store = _store(*checks)
    render_scheduled(store)
    for check in checks:
        store.record(check, make_result(finished_at=100.0))
    rendered = _count_renders(monkeypatch)
    store.record(checks[0], make_result(finished_at=100.0))  # inside the loop: arms the background render
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(rendered) == 40  # rendered with no scrape asking
    stop = asyncio.Event()
    scrape = asyncio.create_task(render_scheduled_chunks_async(store, batch=3))  # starts first
    for check in checks:  # every check dirty: the scrape renders 3 per loop turn, background renders between
        store.record(check, make_result(finished_at=100.0))
    recording = asyncio.create_task(_keep_failing(store, checks, stop))
    text = b"".join(await scrape).decode()
    stop.set()
    await recording
    assert _family(text, "outage_probe_failure_info") == []
    assert [line.split()[-1] for line in _family(text, "outage_probe_last_run_timestamp_seconds")] == ["100.0"] * 40

