"""Vantage health: controls judge each region; failures behind a broken vantage are inconclusive."""

from __future__ import annotations

import asyncio
import re
import textwrap
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from exporter.checks import expand
from exporter.config import load_config_text
from exporter.config.model import VantagePolicy
from exporter.exposition import render_scheduled
from exporter.probers import result as r
from exporter.results import ResultStore
from exporter.runtime import Runtime
from exporter.vantage import judge
from exporter.web.app import make_app
from tests.helpers.factories import make_check, make_result
from tests.servers.http import closed_port, start_http

OK, FAIL = make_result(), make_result(False, reason=r.CONN_TIMEOUT)


def controls(*results):
    return [(make_check(f"c{i}", control=True), res) for i, res in enumerate(results)]


@pytest.mark.parametrize(("results", "ratio", "healthy"), [
    ((), 0.5, True),  # no controls: nothing to judge by
    ((None, None), 0.5, True),  # not run yet
    ((OK, FAIL), 0.5, True),  # half of them succeed
    ((OK, FAIL, FAIL), 0.5, False),
    ((FAIL, FAIL), 0.5, False),
    ((FAIL, None), 0.5, True),  # a control that has not run yet is not failing
    ((FAIL, FAIL, None), 0.5, False),
    ((OK, OK, OK, FAIL), 1.0, False),
    ((FAIL, FAIL), 0.0, True),  # a ratio of 0 turns the judgement off
])
def test_verdict(results, ratio, healthy):
    verdict = judge("eu", controls(*results), ratio)
    assert verdict.healthy is healthy
    assert verdict.controls == len(results)
    assert [c.check for c in verdict.failing] == [f"c{i}" for i, res in enumerate(results) if res is FAIL]


def test_verdict_reason_names_the_failing_controls():
    verdict = judge("eu", controls(FAIL, FAIL, OK, FAIL), 0.5)
    assert verdict.reason == "3 of 4 controls failing: svc/c0, svc/c1, svc/c3"
    assert judge("eu", controls(OK), 0.5).reason == ""


def test_failures_behind_an_unhealthy_vantage_are_inconclusive_not_failures():
    control = make_check("control", region="ap", control=True)
    service = make_check("home", region="ap", service="shop")
    elsewhere = make_check("home", region="eu", service="shop")
    store = ResultStore()
    store.set_checks([control, service, elsewhere])

    store.record(service, FAIL)  # before any control has run: taken at face value
    assert store.get(service.key).failures == {r.CONN_TIMEOUT: 1} and not store.get(service.key).inconclusive
    store.record(control, FAIL)
    assert not store.vantage("ap").healthy and store.vantage("eu").healthy
    store.record(service, FAIL)
    store.record(service, FAIL)
    store.record(elsewhere, FAIL)
    state = store.get(service.key)
    assert (state.runs, state.failures, state.inconclusive, state.inconclusive_total) == (
        3, {r.CONN_TIMEOUT: 1}, True, 2)
    assert state.last is FAIL  # probe_success stays the raw result
    assert store.get(control.key).failures == {r.CONN_TIMEOUT: 1}  # a control's failure is a failure
    assert store.get(elsewhere.key).failures == {r.CONN_TIMEOUT: 1}  # other regions are not affected

    store.record(service, OK)
    assert not store.get(service.key).inconclusive
    store.record(control, OK)
    store.record(service, FAIL)  # the vantage is back: failures count again
    assert (state.failures, state.inconclusive, state.inconclusive_total) == ({r.CONN_TIMEOUT: 2}, False, 2)


def test_inconclusive_exposition():
    control = make_check("control", region="ap", service="ctl", control=True)
    service = make_check("home", region="ap", service="shop")
    store = ResultStore()
    store.set_checks([control, service])
    store.record(control, FAIL)
    store.record(service, FAIL)
    text = render_scheduled(store)
    ident = 'service="shop",provider="shop",region="ap",check="home",target="http://127.0.0.1:8080/",resolver=""'
    assert f"outage_probe_inconclusive{{{ident}}} 1\n" in text
    assert f"outage_probe_inconclusive_total{{{ident}}} 1\n" in text
    assert f"probe_success{{{ident}}} 0\n" in text
    assert f'outage_probe_failure_info{{{ident},reason="conn_timeout"}} 1\n' in text
    assert "outage_probe_failures_total{" + ident not in text
    assert 'check="control"' not in "".join(line for line in text.splitlines() if "inconclusive" in line)
    assert 'outage_vantage_healthy{region="ap"} 0\n' in text
    assert 'outage_vantage_controls{region="ap"} 1\n' in text
    assert 'outage_vantage_controls_failing{region="ap"} 1\n' in text
    assert ('outage_vantage_failing_control_info{region="ap",service="ctl",check="control",'
            'target="http://127.0.0.1:8080/"} 1\n') in text


def test_the_ratio_is_set_per_region():
    config = load_config_text(textwrap.dedent("""
        regions:
          - {name: strict, resolvers: ["127.0.0.1:5353"], vantage: {min_healthy_ratio: 1}}
          - {name: lax, resolvers: ["127.0.0.1:5353"]}
        services:
          - name: ctl
            checks:
              - {name: a, module: {prober: tcp}, target: "127.0.0.1:1", control: true}
              - {name: b, module: {prober: tcp}, target: "127.0.0.1:2", control: true}
    """))
    checks = expand(config)
    assert {c.region: c.vantage for c in checks} == {"strict": VantagePolicy(1.0), "lax": VantagePolicy(0.5)}
    store = ResultStore()
    store.set_checks(checks)
    for check in checks:
        store.record(check, FAIL if check.check == "a" else OK)
    assert [(v.region, v.healthy) for v in store.vantages()] == [("strict", False), ("lax", True)]


async def test_landing_page_shows_inconclusive_cells(tmp_path):
    site = await start_http()
    closed = closed_port()
    dead = f"http://127.0.0.1:{closed.getsockname()[1]}/"
    path = tmp_path / "outage.yml"
    path.write_text(textwrap.dedent(f"""
        defaults: {{interval: 200ms, timeout: 150ms}}
        modules: {{http_2xx: {{prober: http}}}}
        regions:
          - {{name: cut-off, resolvers: ["127.0.0.1:5353"]}}
          - {{name: fine, resolvers: ["127.0.0.1:5353"]}}
        services:
          - name: shop
            checks:
              - {{name: home, module: http_2xx, target: "{dead}"}}
          - name: ctl
            checks:
              - {{name: cut, module: http_2xx, target: "{dead}", control: true, regions: [cut-off]}}
              - {{name: ok, module: http_2xx, target: "{site.url('/')}", control: true, regions: [fine]}}
    """))
    runtime = Runtime(str(path))
    await runtime.start()
    client = TestClient(TestServer(make_app(runtime)))
    await client.start_server()
    try:
        deadline = time.monotonic() + 5
        while not all(state.runs >= 2 for _, state in runtime.store.items()):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        page = await (await client.get("/")).text()
    finally:
        await client.close()
        await runtime.stop()
        await site.stop()
        closed.close()
    row = re.search(r"<tr><td>shop</td><td>shop</td>(.*?)</tr>", page)
    assert row is not None
    assert re.findall(r"<b>(\w+)</b>", row.group(1)) == ["inconclusive", "down"]  # cut-off, fine
    controls = re.search(r"<tr><td>ctl</td><td>ctl</td>(.*?)</tr>", page)
    assert controls is not None and re.findall(r"<b>(\w+)</b>", controls.group(1)) == ["down", "up"]


def test_vantage_changes_are_logged_with_the_failing_controls(caplog):
    controls_ = [make_check(f"c{i}", region="ap", service="ctl", control=True) for i in range(2)]
    store = ResultStore()
    store.set_checks(controls_)
    with caplog.at_level("INFO", logger="exporter.vantage"):
        store.record(controls_[0], FAIL)  # one of two: still healthy
        store.record(controls_[1], FAIL)
        store.record(controls_[1], FAIL)  # no news: not logged again
        store.record(controls_[0], OK)
    messages = [(rec.levelname, rec.getMessage(), rec.fields) for rec in caplog.records]
    assert messages == [
        ("WARNING", "vantage unhealthy: failures of the region's other checks are inconclusive",
         {"region": "ap", "reason": "2 of 2 controls failing: ctl/c0, ctl/c1"}),
        ("INFO", "vantage healthy again", {"region": "ap"}),
    ]
