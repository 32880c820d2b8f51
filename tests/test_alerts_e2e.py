"""End to end: the lab replays an incident, the exporter probes it, a real Prometheus evaluates the project's
rules and a real Alertmanager routes the result to a webhook sink. One run per scenario, all concurrently.

Printed (and asserted against docs/alerts.md's targets): seconds from each fault injection to each
notification.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import datetime

import aiohttp
import pytest

from exporter.lab.scenario import load_builtin, load_scenario_text
from exporter.lab.stack import Notification
from tests.helpers.labstack import lab_with_stack, require_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# regional-blip with a shorter quiet start: the same 90 s blip, less waiting.
BLIP = """
name: regional-blip-short
description: twitter's edge in eu-west answers 503 for 90 seconds.
duration: 2m20s
default_speed: 1
phases:
  - {at: 0s, name: baseline}
  - at: +20s
    name: eu-west-unavailable
    effects: [{edge: {service: twitter, region: eu-west, mode: unavailable}}]
  - at: +1m50s
    name: recovered
    effects: [{edge: {service: twitter, region: eu-west, mode: healthy}}]
"""


# The end of an incident as real resolvers make it, with a second failure while it is open (speed 10:
# a story minute is 6 s). Meta's nameservers go silent at 0 and answer again at +24m; the public
# resolvers back off from them (hold-downs 5, 10, 20 minutes) and keep answering SERVFAIL until about
# +40m: the tail. instagram, whose DNS works, answers 503 from +18m (after the first page) to +35m.
TAIL = """
name: recovery-tail-and-second-failure
description: nameservers cut, a second failure during the incident, nameservers back, a resolver tail.
duration: 50m
default_speed: 10
phases:
  - {at: -2m, name: baseline}
  - at: 0s
    name: nameservers-unreachable
    effects: [{nameservers: {provider: meta, state: blackhole}}]
  - at: +18m
    name: instagram-5xx
    effects: [{edge: {service: instagram, region: all, mode: unavailable}}]
  - at: +24m
    name: nameservers-answer-again
    effects: [{nameservers: {provider: meta, state: up}}]
  - at: +35m
    name: instagram-healthy
    effects: [{edge: {service: instagram, region: all, mode: healthy}}]
  - {at: +44m, name: tail-over}
"""


@dataclass
class Run:
    name: str
    phases: dict[str, float] = field(default_factory=dict)  # phase name -> wall time entered
    notifications: list[Notification] = field(default_factory=list)
    started: float = 0.0
    samples: list[tuple[float, list[dict]]] = field(default_factory=list)  # (time, firing alerts watched)

    def firing(self, receiver: str) -> list[Notification]:
        return [n for n in self.notifications if n.receiver == receiver and n.payload.get("status") == "firing"]

    def timeline(self) -> list[str]:
        lines = [f"{self.name}:"]
        for note in self.notifications:
            since = {p: note.received_at - t for p, t in self.phases.items() if t <= note.received_at}
            last = max(since, key=lambda p: self.phases[p]) if since else None
            ref = f"+{since[last]:.0f} s after phase {last!r}" if last else ""
            lines.append(f"  {note.received_at - self.started:6.1f} s  {ref:45} {note.summary()[:150]}")
        return lines


async def _firing(stack, alertname: str, **labels: str) -> list[dict]:
    """Prometheus' firing alerts of that name and labels, with their current annotations."""
    async with aiohttp.ClientSession() as http, http.get(stack.prometheus_url + "/api/v1/alerts") as resp:
        alerts = (await resp.json())["data"]["alerts"]
    return [a for a in alerts if a["state"] == "firing" and a["labels"]["alertname"] == alertname
            and all(a["labels"].get(k) == v for k, v in labels.items())]


async def _run(name: str, scenario, speed: float, seconds: float, *, watch: dict | None = None) -> Run:
    """Play ``scenario`` for ``seconds``; with ``watch`` (alertname and labels), sample that alert every 5 s."""
    run = Run(name)
    async with lab_with_stack(scenario, speed,
                              on_phase=lambda phase: run.phases.__setitem__(phase.name, time.time())) as lab:
        run.started = time.time()
        while time.time() - run.started < seconds:
            await asyncio.sleep(5)
            if watch is not None:
                run.samples.append((time.time(), await _firing(lab.stack, **watch)))
        run.notifications = list(lab.stack.sink.notifications)
    return run


@pytest.fixture(scope="module")
def runs() -> dict[str, Run]:
    require_stack()

    async def all_runs():
        fb = load_builtin("facebook-2021-10-04")
        results = await asyncio.gather(
            _run("facebook-2021-10-04", fb, fb.default_speed, 150),
            _run("vantage-isolated", load_builtin("vantage-isolated"), 2.0, 130),
            _run("regional-blip", load_scenario_text(BLIP), 1.0, 150),
            _run("recovery-tail", load_scenario_text(TAIL), 10.0, 285,
                 watch={"alertname": "OutageProviderOutage", "provider": "meta"}),
        )
        return {r.name: r for r in results}

    return asyncio.run(all_runs())


def _text(notes: list[Notification]) -> str:
    return json.dumps([n.payload for n in notes]).lower()


def test_print_timeline(runs, capsys):
    with capsys.disabled():
        print()
        for run in runs.values():
            print("\n".join(run.timeline()))


def test_2021_is_one_provider_page_naming_meta_regions_and_dns_cause(runs):
    run = runs["facebook-2021-10-04"]
    pages = run.firing("pager")
    assert pages, run.timeline()
    assert {n.payload["commonLabels"].get("provider") for n in pages} == {"meta"}, run.timeline()
    assert len({n.payload["groupKey"] for n in pages}) == 1, "the provider incident is one notification group"
    text = _text(pages)
    assert "eu-west" in text and "us-east" in text
    assert "outageprovideroutage" in text
    assert any(k in text for k in ("dns_servfail", "dns_timeout", "outagednsnameserversunreachable")), text[:2000]


def test_2021_first_page_within_90_seconds_of_the_nameserver_cut(runs):
    run = runs["facebook-2021-10-04"]
    cut = run.phases["dns-prefixes-withdrawn"]
    first = min(n.received_at for n in run.firing("pager"))
    assert first - cut <= 90, run.timeline()


def test_2021_never_pages_for_controls_and_never_says_nxdomain(runs):
    run = runs["facebook-2021-10-04"]
    assert "nxdomain" not in _text(run.notifications)
    for note in run.notifications:
        for alert in note.alerts:
            assert not alert["labels"].get("service", "").startswith("control-"), note.summary()


def test_isolated_vantage_sends_only_the_vantage_warning(runs):
    run = runs["vantage-isolated"]
    assert not run.firing("pager"), run.timeline()
    tickets = run.firing("ticket")
    names = {a["labels"]["alertname"] for n in tickets for a in n.alerts}
    assert names == {"OutageVantageUnhealthy"}, run.timeline()
    assert {a["labels"]["region"] for n in tickets for a in n.alerts} == {"us-east"}


def test_regional_blip_does_not_page(runs):
    run = runs["regional-blip"]
    assert not run.firing("pager"), run.timeline()
    names = {a["labels"]["alertname"] for n in run.notifications for a in n.alerts}
    assert names <= {"OutageServiceDownInRegion"}, names  # at most a regional ticket


def _between(run: Run, start: str, end: str) -> list[tuple[float, list[dict]]]:
    return [(t, got) for t, got in run.samples if run.phases[start] <= t < run.phases[end]]


def test_incident_stays_one_page_through_the_resolver_tail(runs):
    run = runs["recovery-tail"]
    pages = run.firing("pager")
    assert pages, run.timeline()
    assert len({n.payload["groupKey"] for n in pages}) == 1, run.timeline()
    back = run.phases["nameservers-answer-again"]
    tail = _between(run, "nameservers-answer-again", "tail-over")
    assert tail and all(got for _, got in tail), "the provider incident closed during the tail"
    # nothing about the DNS incident starts firing anew once the nameservers answer again (instagram's 503s
    # are the second failure: news, tested below)
    late = [(a["labels"]["alertname"], a["labels"].get("service"), a["startsAt"])
            for n in pages for a in n.alerts
            if a["status"] == "firing" and _unix(a["startsAt"]) > back + 5
            and a["labels"].get("service") != "instagram"]
    assert not late, (late, run.timeline())


def test_the_open_incident_names_its_stage_during_the_tail(runs):
    run = runs["recovery-tail"]
    texts = [a["annotations"]["description"] for _, got in _between(run, "nameservers-answer-again", "tail-over")
             for a in got]
    staged = [t for t in texts if "the nameservers answer again since" in t]
    assert staged, texts[-1:]
    assert any("resolvers still return cached failures for" in t for t in staged), staged[-1]


def test_a_second_failure_during_the_incident_reaches_the_page(runs):
    run = runs["recovery-tail"]
    first = min(n.received_at for n in run.firing("pager"))
    assert first < run.phases["instagram-5xx"], "the incident must be open before instagram breaks"
    updates = [n for n in run.firing("pager") if n.received_at > run.phases["instagram-5xx"]]
    named = {a["labels"].get("service") for n in updates for a in n.alerts
             if a["status"] == "firing" and a["labels"]["alertname"] in
             ("OutageHTTPServerErrors", "OutageServiceDownMultiRegion")}
    assert "instagram" in named, run.timeline()


def _unix(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()

