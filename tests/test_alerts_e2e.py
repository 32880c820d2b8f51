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

import pytest

from exporter.lab.scenario import load_builtin, load_scenario_text
from exporter.lab.stack import Notification, find_alerts_dir
from tests.helpers.binaries import require_binary
from tests.helpers.labstack import lab_with_stack

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


@dataclass
class Run:
    name: str
    phases: dict[str, float] = field(default_factory=dict)  # phase name -> wall time entered
    notifications: list[Notification] = field(default_factory=list)
    started: float = 0.0

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


async def _run(name: str, scenario, speed: float, seconds: float) -> Run:
    run = Run(name)
    async with lab_with_stack(scenario, speed,
                              on_phase=lambda phase: run.phases.__setitem__(phase.name, time.time())) as lab:
        run.started = time.time()
        await asyncio.sleep(seconds)
        run.notifications = list(lab.stack.sink.notifications)
    return run


@pytest.fixture(scope="module")
def runs() -> dict[str, Run]:
    require_binary("prometheus", package="prometheus")
    require_binary("prometheus-alertmanager", package="prometheus-alertmanager")
    assert find_alerts_dir() is not None

    async def all_runs():
        fb = load_builtin("facebook-2021-10-04")
        results = await asyncio.gather(
            _run("facebook-2021-10-04", fb, fb.default_speed, 150),
            _run("vantage-isolated", load_builtin("vantage-isolated"), 2.0, 130),
            _run("regional-blip", load_scenario_text(BLIP), 1.0, 150),
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
