"""The demo tells a story: phase N of M, story and wall time, the next phase and a timeline in the terminal and
on the landing page, inconclusive cells logged as such, outage_lab_scenario_info on /metrics, a warning when
--speed outruns the alerts; and the sink and the demo print notifications as rendered text."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter import state as st
from exporter.lab.demo import (
    ALERT_LEAD_SECONDS,
    Story,
    _watch,
    cell_states,
    load,
    phase_spans,
    run_demo,
    speed_warning,
)
from exporter.lab.scenario import load_scenario_text
from exporter.lab.sink import LoggingSink
from exporter.lab.stack import Notification, WebhookSink, free_port
from exporter.results import ResultStore
from exporter.routing.signals import Signals
from tests.helpers.factories import make_check, make_result

PAYLOADS = Path(__file__).parent / "testdata" / "notifications"
STORY = """
name: three-acts
description: a short story
duration: 10m
default_speed: 1
phases:
  - {at: -1m, name: calm}
  - {at: 0s, name: storm, description: "the nameservers go silent"}
  - {at: +5m, name: after}
"""


class FakePlayer:
    """What Story reads from a Player: its speed, where the story is, and the phase in effect."""

    def __init__(self, speed: float = 10.0) -> None:
        self.speed = speed
        self.t: float | None = None
        self.current_phase = None

    def story_time(self) -> float | None:
        return self.t


def enter(story: Story, player: FakePlayer, index: int, t: float) -> None:
    phase = story.scenario.phases[index]
    player.t, player.current_phase = t, phase
    story.on_phase(phase)


# --- the story --------------------------------------------------------------------------------------------
def test_each_phase_prints_where_the_story_stands_and_what_happened_so_far():
    scenario, player, out = load_scenario_text(STORY), FakePlayer(10.0), io.StringIO()
    story = Story(scenario, player, out=out)
    enter(story, player, 0, -60)
    enter(story, player, 1, 0)
    player.t = 30
    story.note("facebook in eu-west: up -> down (dns_servfail)")
    enter(story, player, 2, 300)
    last = out.getvalue().split("== ")[-1].splitlines()
    assert last[0] == ("three-acts: phase 3 of 3: after (+5m) · story t0+0h05m00s, 0h06m00s of 0h10m00s "
                       "(wall 36 of 60 s) · next: the end")
    assert last[1:] == ["   so far:", "     t0-0h01m00s  phase 1/3 calm", "     t0+0h00m00s  phase 2/3 storm",
                        "     t0+0h00m30s  facebook in eu-west: up -> down (dns_servfail)",
                        "     t0+0h05m00s  phase 3/3 after"]
    second = out.getvalue().split("== ")[2].splitlines()
    assert second[0].endswith("· next: after at +5m (in 30 s)")
    assert second[1] == "   the nameservers go silent"


def test_the_landing_page_banner_tells_the_same_story():
    scenario, player = load_scenario_text(STORY), FakePlayer(10.0)
    story = Story(scenario, player, out=io.StringIO())
    enter(story, player, 1, 0)
    player.t = 30
    story.note("facebook in eu-west: up -> down (dns_servfail)")
    banner = story.banner()
    assert banner["progress"].startswith("phase 2 of 3: storm (0s) · story t0+0h00m30s")
    assert banner["what is happening"] == "the nameservers go silent"
    assert banner["timeline"] == "t0+0h00m00s phase 2/3 storm · t0+0h00m30s facebook in eu-west: up -> down " \
                                 "(dns_servfail)"


def test_a_new_replay_starts_a_new_timeline():
    scenario, player = load_scenario_text(STORY), FakePlayer()
    story = Story(scenario, player, out=io.StringIO())
    for index, t in ((0, -60), (1, 0), (2, 300), (0, -60)):
        enter(story, player, index, t)
    assert [text for _, text in story.events] == ["phase 1/3 calm"]


def test_the_phase_is_exported_as_outage_lab_scenario_info():
    scenario, player, registry = load_scenario_text(STORY), FakePlayer(), CollectorRegistry()
    story = Story(scenario, player, registry=registry, out=io.StringIO())
    assert b"outage_lab_scenario_info{" not in generate_latest(registry)
    enter(story, player, 0, -60)
    enter(story, player, 1, 0)
    text = generate_latest(registry).decode()
    assert re.findall(r"^outage_lab_scenario_info\{.*$", text, re.M) == [
        'outage_lab_scenario_info{phase="storm",phase_index="2",scenario="three-acts"} 1.0']


# --- --speed and the alerts -------------------------------------------------------------------------------
def test_the_default_speed_of_the_2021_replay_keeps_its_alerts():
    scenario = load("facebook-2021-10-04")
    assert speed_warning(scenario, scenario.default_speed, phases=False) == []
    lines = speed_warning(scenario, scenario.default_speed)  # asked for: the phases too short to page alone
    assert not any("will not page" in line for line in lines)
    assert lines[1].startswith("  Phases too short for an alert of their own: edges-lose-backends (1 s), ")
    assert "users-move" not in lines[1]  # 4 hours of story: 340 s, it pages


def test_a_speed_that_outruns_every_alert_is_warned_about_with_a_speed_that_works():
    scenario = load("facebook-2021-10-04")
    lines = speed_warning(scenario, 600, phases=False)
    assert lines[0].startswith("warning: at speed 600 a story minute lasts 0.1 s")
    assert "Prometheus will not page for this replay" in lines[1]
    slowest = float(re.search(r"--speed (\S+) or slower", lines[1]).group(1))
    longest = max(span for _, span in phase_spans(scenario)[1:])
    assert longest / slowest == pytest.approx(ALERT_LEAD_SECONDS, rel=0.01)
    assert "will not page" not in " ".join(speed_warning(scenario, slowest * 0.99))


def test_a_story_slow_enough_for_every_phase_is_not_warned_about():
    assert speed_warning(load_scenario_text(STORY), 1) == []


# --- the terminal logs inconclusive like the page ------------------------------------------------------------
def test_a_region_with_failing_controls_is_inconclusive_in_the_terminal(caplog: pytest.LogCaptureFixture):
    control = make_check("control", region="ap", service="ctl", control=True)
    home = make_check("home", region="ap", service="shop")
    store = ResultStore()
    store.set_checks([control, home])
    runtime = SimpleNamespace(checks=[control, home], store=store, config=None, omit_region_label=False,
                              signals=Signals())

    def runs(ok: bool, *ages: float) -> None:
        for age in ages:
            for check in (control, home):
                store.record(check, make_result(ok, finished_at=time.time() - age))

    runs(True, 25)

    async def watch() -> None:
        stop = asyncio.Event()
        task = asyncio.ensure_future(_watch(runtime, stop, every=0.05))
        await asyncio.sleep(0.4)
        runs(False, 10, 5, 0)  # the controls fail too: the vantage, not the shop, is in doubt
        await asyncio.sleep(0.4)
        stop.set()
        await task

    with caplog.at_level(logging.INFO, logger="exporter.demo"):
        asyncio.run(watch())
    assert cell_states(st.Board(st.runtime_source(runtime)))[("shop", "ap")].state == st.INCONCLUSIVE
    assert "shop in ap: up -> inconclusive (vantage unhealthy" in caplog.text
    assert "ctl in ap: up -> " in caplog.text  # the controls are judged as they are
    assert "shop in ap: up -> down" not in caplog.text


# --- the demo, end to end ------------------------------------------------------------------------------------
async def test_demo_prints_the_story_and_exports_the_phase(capsys: pytest.CaptureFixture[str]):
    port, stop = free_port(), asyncio.Event()
    task = asyncio.ensure_future(run_demo(load("facebook-2021-10-04"), 600.0, ("127.0.0.1", port), stop_event=stop))
    metrics = ""
    async with aiohttp.ClientSession() as http:
        for _ in range(150):
            await asyncio.sleep(0.2)
            try:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    metrics = await resp.text()
            except aiohttp.ClientConnectionError:
                continue
            if 'phase_index="3"' in metrics:
                break
    stop.set()
    assert await asyncio.wait_for(task, 15) == 0
    out = capsys.readouterr().out
    assert re.search(r'^outage_lab_scenario_info\{phase="[^"]+",phase_index="3",scenario="facebook-2021-10-04"\} 1',
                     metrics, re.M), metrics
    assert "phases)" in out.splitlines()[0]
    assert re.search(r"^== facebook-2021-10-04: phase 3 of \d+: .* · next: ", out, re.M), out
    assert "   so far:" in out


# --- notifications as text ---------------------------------------------------------------------------------
def _page() -> dict:
    return json.loads((PAYLOADS / "facebook-2021-page-update.json").read_text())


def test_a_notification_prints_its_time_title_and_body():
    note = Notification("pager", 1_633_362_012.0, _page())
    lines = note.printed().splitlines()
    assert lines[0] == ("[2021-10-04 15:40:12 UTC] pager: meta DOWN: DNS, authoritative nameservers unreachable; "
                        "DNS, resolution failing; HTTP 5xx, eu-west + us-east")
    assert lines[1] == "    Services: facebook, messenger, whatsapp, instagram"
    assert "{'" not in note.printed() and "{'" not in note.summary()  # no Python dicts


def test_a_payload_that_is_not_alertmanagers_still_prints():
    note = Notification("pager", 0.0, {"status": "firing", "alerts": [{"labels": {}}]})
    assert note.printed().startswith("[1970-01-01 00:00:00 UTC] pager: ")


async def test_webhook_sink_echo_prints_the_rendered_notification(capsys: pytest.CaptureFixture[str]):
    sink = await WebhookSink(echo=True).start()
    try:
        async with aiohttp.ClientSession() as http, http.post(f"{sink.base_url}/pager", json=_page()) as resp:
            assert resp.status == 200
    finally:
        await sink.stop()
    out = capsys.readouterr().out
    assert re.match(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\] pager: meta DOWN: DNS, authoritative", out)
    assert "    Dashboard: http://localhost:3000/d/outage-overview/" in out


async def test_sink_prints_text_and_lists_what_it_received_as_html_text_or_json():
    out = io.StringIO()
    sink = await LoggingSink("127.0.0.1", 0, out=out, fmt="text").start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{sink.base_url}/", headers={"Accept": "text/html"}) as resp:
                empty = await resp.text()
            for receiver in ("ticket", "pager"):
                async with http.post(f"{sink.base_url}/{receiver}", json=_page()) as resp:
                    assert resp.status == 200
            async with http.get(f"{sink.base_url}/", headers={"Accept": "text/html,*/*"}) as resp:
                assert resp.content_type == "text/html"
                page = await resp.text()
            async with http.get(f"{sink.base_url}/?format=text") as resp:
                text = await resp.text()
            async with http.get(f"{sink.base_url}/") as resp:
                records = await resp.json()
    finally:
        await sink.stop()
    assert "no notifications received yet" in empty
    printed = out.getvalue()
    assert printed.count(": meta DOWN: DNS, authoritative nameservers unreachable;") == 2
    assert re.match(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\] ticket: meta DOWN", printed)
    assert page.index("pager: <b>meta DOWN") < page.index("ticket: <b>meta DOWN")  # newest first
    assert "Notifications received, newest first (2)" in page
    assert text.startswith("[") and "] pager: meta DOWN" in text.splitlines()[0]
    assert [r["receiver"] for r in records] == ["pager", "ticket"]
    assert records[0]["title"].startswith("meta DOWN: DNS, authoritative")
    assert records[0]["text"].startswith("Services: facebook")
