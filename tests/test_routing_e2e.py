"""End to end with the routing signal: the lab replays 2021 (its RIS-Live feed withdraws Meta's nameserver
prefixes at the cut), the exporter with the lab's shipped config probes it, a real Prometheus evaluates the
shipped rules and a real Alertmanager pages a webhook sink. A second run takes only the feed down.

The 2021 replay runs at speed 4 from 2 story minutes before t0 (instead of 10), so a 300 s TTL lasts 75 s
of wall time and "before the caches drain" can be checked: the first page must name BGP within 30 s of
the withdrawals, while Meta's DNS checks still resolve from cache.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field, replace

import aiohttp
import pytest

from exporter.lab.catalog import RECORD_TTL
from exporter.lab.scenario import load_builtin, load_scenario_text
from exporter.lab.stack import Notification
from tests.helpers.labstack import lab_with_stack, require_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SPEED = 4.0
CUT = "dns-prefixes-withdrawn"

# The routing feed goes down for 100 s while every service is healthy: no page, no BGP cause.
FEED_DOWN = """
name: routing-feed-down
description: The routing feed disconnects and refuses connections for 100 seconds.
duration: 2m30s
default_speed: 1
phases:
  - {at: 0s, name: baseline}
  - at: +30s
    name: feed-down
    effects: [{routing_feed: {state: down}}]
  - at: +2m10s
    name: feed-up
    effects: [{routing_feed: {state: up}}]
"""


@dataclass
class Run:
    phases: dict[str, float] = field(default_factory=dict)
    notifications: list[Notification] = field(default_factory=list)
    meta_dns_ok_at_first_page: float | None = None  # meta DNS checks succeeding when the first page came
    meta_dns_checks: float | None = None
    status: dict = field(default_factory=dict)  # the exporter's /api/v1/status just after the first page
    landing: str = ""  # and its landing page

    def pages(self) -> list[Notification]:
        return [n for n in self.notifications if n.receiver == "pager" and n.payload.get("status") == "firing"]

    def timeline(self) -> str:
        return "\n".join(f"{n.received_at - min(self.phases.values()):6.1f}s {n.summary()[:160]}"
                         for n in self.notifications) + f"\nphases: {self.phases}"


async def _query_at(prometheus_url: str, promql: str, at: float) -> float | None:
    async with aiohttp.ClientSession() as http, http.get(prometheus_url + "/api/v1/query",
                                                         params={"query": promql, "time": str(at)}) as resp:
        result = (await resp.json())["data"]["result"]
    return float(result[0]["value"][1]) if result else None


async def _run(scenario, speed: float, seconds: float, *, stop_after_first_page: bool = False) -> Run:
    run = Run()
    async with lab_with_stack(scenario, speed,
                              on_phase=lambda phase: run.phases.__setitem__(phase.name, time.time())) as lab:
        started = time.time()
        while time.time() - started < seconds:
            await asyncio.sleep(1)
            if stop_after_first_page and any(n.receiver == "pager" for n in lab.stack.sink.notifications):
                await asyncio.sleep(2)
                break
        run.notifications = list(lab.stack.sink.notifications)
        pages = run.pages()
        if pages:
            first = min(n.received_at for n in pages)
            dns = 'probe_success{provider="meta",check="dns"}'
            run.meta_dns_ok_at_first_page = await _query_at(lab.stack.prometheus_url, f"sum({dns})", first)
            run.meta_dns_checks = await _query_at(lab.stack.prometheus_url, f"count({dns})", first)
            async with aiohttp.ClientSession() as http:
                async with http.get(lab.exporter_url + "/api/v1/status") as resp:
                    run.status = await resp.json()
                async with http.get(lab.exporter_url + "/") as resp:
                    run.landing = await resp.text()
    return run


@pytest.fixture(scope="module")
def runs() -> dict[str, Run]:
    require_stack()
    fb = load_builtin("facebook-2021-10-04")
    fb = replace(fb, phases=(replace(fb.phases[0], at=-120.0), *fb.phases[1:]))

    async def both():
        replay, feed_down = await asyncio.gather(
            _run(fb, SPEED, 120, stop_after_first_page=True),
            _run(load_scenario_text(FEED_DOWN), 1.0, 150),
        )
        return {"2021": replay, "feed-down": feed_down}

    return asyncio.run(both())


def test_2021_first_page_names_bgp_within_30_seconds_of_the_withdrawals(runs):
    run = runs["2021"]
    pages = run.pages()
    assert pages, run.timeline()
    first = min(pages, key=lambda n: n.received_at)
    cut = run.phases[CUT]
    print(f"\nfirst page {first.received_at - cut:.1f} s after the withdrawals: {first.summary()[:200]}")
    assert first.received_at - cut <= 30, run.timeline()
    assert first.payload["commonLabels"].get("provider") == "meta"
    text = json.dumps(first.payload)
    assert "BGP: 2 prefixes holding meta's nameservers withdrawn, seen by 0 of 5 peers" in text, text[:3000]


def test_2021_first_page_comes_before_any_resolver_cache_drained(runs):
    run = runs["2021"]
    first = min(n.received_at for n in run.pages())
    assert first - run.phases[CUT] < RECORD_TTL / SPEED - 15  # the TTL runs from the latest refresh: margin
    assert run.meta_dns_checks and run.meta_dns_ok_at_first_page == run.meta_dns_checks, run.timeline()


def test_2021_the_page_says_meta_status_page_is_unreachable(runs):
    first = min(runs["2021"].pages(), key=lambda n: n.received_at)
    text = json.dumps(first.payload)
    assert "OutageProviderRoutingLost" in text
    assert "Declared status: the status page is unreachable." in text, text[:3000]


def test_2021_the_status_api_and_landing_page_name_bgp_first_and_the_silent_status_page(runs):
    run = runs["2021"]
    [meta] = [i for i in run.status["incidents"] if i["provider"] == "meta"]
    assert meta["cause"] == "routing", meta
    assert meta["summary"].startswith(
        "meta: BGP, 2 prefixes holding meta's nameservers withdrawn (seen by 0 of 5 peers), "), meta
    assert meta["summary"].endswith("; status page unreachable"), meta
    assert [d["reachable"] for d in run.status["declared"] if d["provider"] == "meta"] == [False]
    summary = run.landing.split("<div id='summary'", 1)[1].split("</div>", 1)[0]
    assert "<p class='incident down'>meta: BGP, 2 prefixes holding meta&#x27;s nameservers withdrawn" in summary


def test_a_feed_outage_alone_pages_nobody(runs):
    run = runs["feed-down"]
    assert run.pages() == [], run.timeline()
    assert "bgp" not in json.dumps([n.payload for n in run.notifications]).lower()
