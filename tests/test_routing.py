"""The routing signal (exporter/routing) and declared status (exporter/statuspage) against the lab's
RIS-Live and Statuspage emulators on loopback: decision thresholds, initial state, feed loss, stalls,
reconnects, malformed and flooding feeds, derived prefixes, config errors and the exported families."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

import aiohttp
import pytest

from exporter.config import load_config_text
from exporter.config.model import AuthoritativeCheck, RoutingConfig, RoutingPrefix, StatusPage
from exporter.exposition.routing import routing_families, statuspage_families
from exporter.lab.ris import RisEmulator
from exporter.lab.statuspage import StatusPages
from exporter.probers.result import NameserverResult, ZoneReport
from exporter.results import ResultStore
from exporter.routing import decision
from exporter.routing.decision import INCONCLUSIVE, LOST, OK, UNKNOWN, Thresholds, judge
from exporter.routing.feed import RoutingFeed, covering_prefix, nameserver_addresses
from exporter.routing.state import RoutingState
from exporter.scheduler import Scheduler
from exporter.statuspage import StatusPagePoller
from tests.helpers.factories import make_check, make_result

NS = ["127.10.0.0/24", "127.10.1.0/24"]
OTHER = "127.10.3.0/24"


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def ris():
    emulator = await RisEmulator(peers=5).start()
    emulator.announce([*NS, OTHER])
    try:
        yield emulator
    finally:
        emulator.set_feed("up")
        await emulator.stop()


def _config(ris: RisEmulator, *, initial: bool = True, **kw) -> RoutingConfig:
    prefixes = tuple(RoutingPrefix(p, "meta") for p in NS) + (RoutingPrefix(OTHER, "twitter"),)
    return RoutingConfig(enabled=True, endpoint=ris.ws_url, prefixes=prefixes,
                         initial_state=ris.looking_glass_url if initial else None, **kw)


@pytest.fixture
async def feeds():
    started: list[RoutingFeed] = []

    def start(config: RoutingConfig, store=None) -> RoutingFeed:
        feed = RoutingFeed(config, store)
        feed.start()
        started.append(feed)
        return feed

    yield start
    for feed in started:
        await feed.stop()


# --- the decision ------------------------------------------------------------------------------------


def test_lost_takes_half_of_the_peers_that_saw_it_and_the_minimum_number_of_peers():
    t = Thresholds()
    assert judge(5, 5, conclusive=True, thresholds=t) == OK
    assert judge(3, 5, conclusive=True, thresholds=t) == OK  # 2 of 5 withdrew: under half
    assert judge(2, 5, conclusive=True, thresholds=t) == LOST  # 3 of 5
    assert judge(2, 4, conclusive=True, thresholds=t) == LOST  # exactly half counts
    assert judge(0, 2, conclusive=True, thresholds=t) == UNKNOWN  # too few peers ever saw it
    assert judge(0, 5, conclusive=False, thresholds=t) == INCONCLUSIVE  # a dead feed decides nothing
    assert (t.min_peers, t.withdrawn_ratio) == (decision.MIN_PEERS, decision.WITHDRAWN_RATIO) == (3, 0.5)


def test_malformed_messages_are_counted_and_change_nothing():
    state = RoutingState()
    state.watch(NS)
    good = {"type": "ris_message", "data": {"host": "rrc00", "peer": "192.0.2.1", "type": "UPDATE",
                                             "announcements": [{"next_hop": "x", "prefixes": [NS[0]]}]}}
    state.handle_text(json.dumps(good))
    bad = ["not json", "[]", '{"type": 1}', '{"type": "ris_message"}', '{"type": "ris_message", "data": []}',
           json.dumps({**good, "data": {**good["data"], "announcements": 42}}),
           json.dumps({**good, "data": {**good["data"], "withdrawals": [NS[0]],
                                        "announcements": [{"prefixes": ["x"]}]}}),
           json.dumps({**good, "data": {**good["data"], "peer": None}}),
           "[" * 100_000]
    for text in bad:
        state.handle_text(text)
    assert state.health.malformed == len(bad)
    assert state.prefixes[NS[0]].seeing == {"rrc00|192.0.2.1"}  # the half-bad withdrawal did not apply


def test_a_peer_session_going_down_is_not_a_withdrawal():
    state = RoutingState()
    state.watch([NS[0]])
    state.load_initial(NS[0], {f"rrc00|192.0.2.{i}" for i in range(1, 6)})
    state.health.connected = state.health.synced = True
    for i in range(1, 4):
        state.handle_text(json.dumps({"type": "ris_message", "data": {
            "host": "rrc00", "peer": f"192.0.2.{i}", "type": "RIS_PEER_STATE", "state": "down"}}))
    p = state.prefixes[NS[0]]
    assert (len(p.seeing), len(p.saw)) == (2, 2)
    assert state.state_of(NS[0]) == UNKNOWN  # 2 peers left: too few to judge, and certainly not lost


def test_covering_prefixes_of_discovered_nameserver_addresses():
    assert covering_prefix("129.134.30.12", 23, 48) == "129.134.30.0/23"
    assert covering_prefix("127.10.0.1:5353", 24, 48) == "127.10.0.0/24"
    assert covering_prefix("[2a03:2880:f0fc::c]:53", 24, 48) == "2a03:2880:f0fc::/48"
    assert covering_prefix("not-an-ip", 24, 48) is None
    store = ResultStore()
    auth = make_check("authns", service="facebook", provider="meta", authoritative=AuthoritativeCheck("facebook.com"))
    control = make_check("authns", service="control-a", provider="lab", control=True,
                         authoritative=AuthoritativeCheck("c.lab"))
    store.set_checks([auth, control])
    zone = ZoneReport("facebook.com", (NameserverResult("a.ns.facebook.com", "127.10.0.1:5353", "udp", False),))
    store.record(auth, make_result(False, zone=zone))
    other = ZoneReport("c.lab", (NameserverResult("n", "127.10.5.1", "udp", True),))
    store.record(control, make_result(True, zone=other))
    assert nameserver_addresses(store) == {("127.10.0.1:5353", "meta")}


# --- the feed ----------------------------------------------------------------------------------------


async def test_initial_state_from_the_looking_glass_then_withdrawals_lose_the_prefixes(ris, feeds):
    feed = feeds(_config(ris))
    await _until(lambda: feed.state.states() == {NS[0]: OK, NS[1]: OK, OTHER: OK})
    assert feed.state.health.messages >= 1  # nothing was announced after the start: the state came from the LG
    ris.withdraw(NS, peers=2)  # 2 of 5: not yet
    await asyncio.sleep(0.3)
    assert feed.state.states()[NS[0]] == OK
    ris.withdraw(NS, peers=1)  # 3 of 5
    await _until(lambda: feed.state.states() == {NS[0]: LOST, NS[1]: LOST, OTHER: OK})
    p = feed.state.prefixes[NS[0]]
    assert (len(p.seeing), len(p.saw), p.withdrawals) == (2, 5, 3)
    ris.announce(NS)
    await _until(lambda: feed.state.states()[NS[0]] == OK)
    assert feed.state.prefixes[NS[0]].announcements == 3


async def test_without_an_initial_state_peers_are_learnt_from_announcements(ris, feeds):
    feed = feeds(_config(ris, initial=False))
    await _until(lambda: feed.state.health.synced)
    assert feed.state.states()[NS[0]] == UNKNOWN  # nobody announced anything since the start
    ris.withdraw(NS)
    await asyncio.sleep(0.3)
    assert feed.state.states()[NS[0]] == UNKNOWN  # a withdrawal by a peer never seen says nothing
    ris.announce(NS)
    await _until(lambda: feed.state.states()[NS[0]] == OK)
    ris.withdraw(NS)
    await _until(lambda: feed.state.states()[NS[0]] == LOST)


async def test_a_lost_feed_is_inconclusive_never_withdrawn_and_reconnects(ris, feeds, monkeypatch):
    monkeypatch.setattr("exporter.routing.feed.BACKOFF_MIN", 0.05)
    feed = feeds(_config(ris))
    await _until(lambda: feed.state.states()[NS[0]] == OK)
    ris.set_feed("down")
    await _until(lambda: not feed.state.health.connected)
    assert set(feed.state.states().values()) == {INCONCLUSIVE}
    ris.withdraw(NS)  # while the feed is down: learnt from the looking glass on reconnect
    ris.set_feed("up")
    await _until(lambda: feed.state.states()[NS[0]] == LOST)
    assert feed.state.health.reconnects >= 1
    assert feed.state.states()[OTHER] == OK


async def test_a_stalled_feed_turns_inconclusive_then_reconnects(ris, feeds, monkeypatch):
    monkeypatch.setattr("exporter.routing.feed.BACKOFF_MIN", 0.05)
    feed = feeds(_config(ris, stale_after=0.6))
    await _until(lambda: feed.state.states()[NS[0]] == OK)
    ris.set_feed("stalled")  # open, silent, pings unanswered
    await _until(lambda: feed.state.states()[NS[0]] == INCONCLUSIVE, timeout=3)
    ris.set_feed("up")
    await _until(lambda: feed.state.states()[NS[0]] == OK and feed.state.health.reconnects >= 1, timeout=5)


async def test_pongs_keep_a_quiet_feed_conclusive(ris, feeds):
    feed = feeds(_config(ris, stale_after=0.6))
    await _until(lambda: feed.state.states()[NS[0]] == OK)
    await asyncio.sleep(1.5)  # no update at all, only pings and pongs
    assert feed.state.states()[NS[0]] == OK
    assert feed.state.health.reconnects == 0


async def test_malformed_feed_messages_are_dropped_and_the_real_ones_still_count(ris, feeds):
    feed = feeds(_config(ris))
    await _until(lambda: feed.state.states()[NS[0]] == OK)
    ris.set_feed("malformed")
    ris.withdraw(NS)
    await _until(lambda: feed.state.states()[NS[0]] == LOST)
    assert feed.state.health.malformed >= 2 * 2 * 5
    assert feed.state.health.connected


async def test_a_flood_never_delays_probes_and_overflow_is_dropped(ris, feeds):
    """Probes run on a real scheduler while the feed floods; figures printed for docs/configuration.md."""
    store = ResultStore()

    async def prober(check, *, deadline):
        await asyncio.sleep(0.01)
        return make_result()

    checks = [make_check(f"c{i}", interval=0.2, timeout=0.1) for i in range(50)]
    scheduler = Scheduler(store, {"http": prober}, concurrency=64)
    await scheduler.start(checks)
    feed = feeds(_config(ris, queue_size=500))
    try:
        await _until(lambda: feed.state.states()[NS[0]] == OK)
        before = scheduler.stats.lag.count, scheduler.stats.lag.sum
        ris.set_feed("flood")
        await asyncio.sleep(3)
        ris.withdraw(NS)  # still seen through the flood
        await _until(lambda: feed.state.states()[NS[0]] == LOST, timeout=10)
        ris.set_feed("up")
        runs, lag = scheduler.stats.lag.count - before[0], scheduler.stats.lag.sum - before[1]
    finally:
        await scheduler.stop()
    mean = lag / runs
    print(f"\nflood: {feed.state.health.messages} messages handled, {feed.state.health.dropped} dropped; "
          f"{runs} probe runs, mean scheduling lag {mean * 1000:.1f} ms, late runs {scheduler.stats.late_total}")
    assert feed.state.health.messages > 10_000
    assert runs > 500
    assert mean < 0.05
    assert scheduler.stats.late_total == 0


async def test_a_full_queue_drops_and_counts_and_the_feed_goes_on(ris, feeds, monkeypatch):
    monkeypatch.setattr("exporter.routing.feed.BATCH", 2000)  # the reader outruns the state between yields
    feed = feeds(_config(ris, queue_size=20))
    await _until(lambda: feed.state.states()[NS[0]] == OK)
    ris.set_feed("flood")
    await _until(lambda: feed.state.health.dropped > 0)
    ris.set_feed("up")
    ris.withdraw(NS)
    await _until(lambda: feed.state.states()[NS[0]] == LOST)
    assert feed.state.health.connected


async def test_derived_prefixes_are_subscribed_while_connected(ris, feeds):
    store = ResultStore()
    auth = make_check("authns", service="facebook", provider="meta", authoritative=AuthoritativeCheck("facebook.com"))
    store.set_checks([auth])
    config = replace(_config(ris), prefixes=())
    feed = feeds(config, store)
    await _until(lambda: feed.state.health.synced)
    zone = ZoneReport("facebook.com", (NameserverResult("a.ns.facebook.com", "127.10.0.1", "udp", True),
                                       NameserverResult("b.ns.facebook.com", "127.10.0.2", "udp", True)))
    store.record(auth, make_result(zone=zone))
    await feed.add_derived(nameserver_addresses(store))
    assert list(feed.series()) == [(NS[0], "meta", "nameservers")]
    assert feed.state.states()[NS[0]] == OK  # the looking glass filled it in
    ris.withdraw([NS[0]])
    await _until(lambda: feed.state.states()[NS[0]] == LOST)


async def test_routing_families(ris, feeds):
    feed = feeds(_config(ris))
    await _until(lambda: feed.state.states()[NS[0]] == OK)
    ris.withdraw([NS[0]])
    await _until(lambda: feed.state.states()[NS[0]] == LOST)
    families = {f.name: f for f in routing_families(feed)}
    lost = {s.labels["prefix"]: s.value for s in families["outage_routing_prefix_lost"].samples}
    assert lost == {NS[0]: 1, NS[1]: 0, OTHER: 0}
    peers = {s.labels["prefix"]: s.value for s in families["outage_routing_prefix_peers"].samples}
    assert peers[NS[0]] == 0 and peers[NS[1]] == 5
    assert families["outage_routing_feed_conclusive"].samples[0].value == 1


# --- declared status ---------------------------------------------------------------------------------


async def test_status_page_declared_status_and_unreachable_page():
    pages = await StatusPages({"meta": {"Facebook": "facebook", "WhatsApp": "whatsapp"}}).start()
    try:
        page = StatusPage("meta", pages.url("meta"), (("Facebook", "facebook"), ("WhatsApp", "whatsapp")),
                          interval=1.0, timeout=1.0)
        poller = StatusPagePoller((page,))
        async with aiohttp.ClientSession() as session:
            await poller.poll(session, page)
            state = poller.states["meta"]
            assert (state.reachable, state.indicator) == (True, "none")
            pages.set("meta", "reachable", indicator="major", components={"WhatsApp": "major_outage"})
            await poller.poll(session, page)
            assert (state.indicator, state.components) == ("major", {"Facebook": "operational",
                                                                     "WhatsApp": "major_outage"})
            pages.set("meta", "unreachable")
            await poller.poll(session, page)
            assert not state.reachable and state.failures == 1
        families = {f.name: f for f in statuspage_families(poller)}
        assert [s.value for s in families["outage_statuspage_up"].samples] == [0]
        declared = {s.labels["indicator"]: s.value for s in families["outage_statuspage_indicator"].samples}
        assert declared == {"none": 0, "minor": 0, "major": 1, "critical": 0}  # the last declared, kept
    finally:
        await pages.stop()


async def test_a_page_that_is_not_a_summary_counts_as_unreachable():
    from aiohttp import web

    async def not_a_summary(_: web.Request) -> web.Response:
        return web.json_response({"status": {"indicator": "fine"}})

    app = web.Application()
    app.router.add_get("/api/v2/summary.json", not_a_summary)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        page = StatusPage("x", f"http://127.0.0.1:{port}", interval=1.0, timeout=1.0)
        poller = StatusPagePoller((page,))
        async with aiohttp.ClientSession() as session:
            await poller.poll(session, page)
        assert not poller.states["x"].reachable
    finally:
        await runner.cleanup()


# --- in the running exporter -------------------------------------------------------------------------


async def test_runtime_exports_the_signals_and_a_reload_swaps_them(ris, tmp_path):
    from exporter.runtime import Runtime

    pages = await StatusPages({"meta": {"Facebook": "facebook"}}).start()
    config = tmp_path / "config.yml"
    body = {"routing": {"enabled": True, "endpoint": ris.ws_url, "initial_state": ris.looking_glass_url,
                        "prefixes": [{"prefix": NS[0], "provider": "meta"}]},
            "status_pages": [{"provider": "meta", "url": pages.url("meta"), "interval": "1s", "timeout": "1s",
                              "components": {"Facebook": "facebook"}}]}
    config.write_text(json.dumps(body))
    runtime = Runtime(str(config))
    await runtime.start()
    try:
        text = lambda: runtime.self_metrics.render().decode()  # noqa: E731
        series = '{prefix="127.10.0.0/24",provider="meta",role="nameservers"}'
        await _until(lambda: f"outage_routing_prefix_peers{series} 5.0" in text()
                     and 'outage_statuspage_up{provider="meta"} 1.0' in text())
        ris.withdraw([NS[0]])
        await _until(lambda: f"outage_routing_prefix_lost{series} 1.0" in text())
        body["routing"]["prefixes"] = [{"prefix": NS[1], "provider": "meta"}]
        del body["status_pages"]
        config.write_text(json.dumps(body))
        assert (await runtime.reload())[0]
        await _until(lambda: 'prefix="127.10.1.0/24"' in text())
        assert 'prefix="127.10.0.0/24"' not in text() and "outage_statuspage_up" not in text()
    finally:
        await runtime.stop()
        await pages.stop()
    assert runtime.signals.routing is not None and not runtime.signals.routing.state.health.connected


# --- the lab -----------------------------------------------------------------------------------------


def test_the_2021_replay_withdraws_at_the_cut_announces_at_recovery_and_hides_the_status_page():
    from exporter.lab.scenario import RoutesEffect, StatusPageEffect, load_builtin

    fb = load_builtin("facebook-2021-10-04")
    effects = {p.name: [e for e in p.effects if isinstance(e, RoutesEffect | StatusPageEffect)] for p in fb.phases}
    assert [(e.provider, e.state) for e in effects["dns-prefixes-withdrawn"]] == [("meta", "withdrawn")]
    assert [(e.provider, e.state) for e in effects["routes-return"]] == [("meta", "announced")]
    assert [(e.provider, e.state) for e in effects["edges-lose-backends"]] == [("meta", "unreachable")]
    assert [(e.provider, e.state) for e in effects["normal"]] == [("meta", "reachable")]


@pytest.mark.parametrize(("effect", "path"), [
    ("{routes: {provider: nobody, state: withdrawn}}", "phases[0].effects[0].routes.provider"),
    ("{routes: {provider: meta, state: gone}}", "phases[0].effects[0].routes.state"),
    ("{routes: {provider: meta, state: withdrawn, peers: -1}}", "phases[0].effects[0].routes.peers"),
    ("{routing_feed: {state: sleepy}}", "phases[0].effects[0].routing_feed.state"),
    ("{status_page: {provider: meta, state: reachable, indicator: bad}}",
     "phases[0].effects[0].status_page.indicator"),
])
def test_signal_effects_are_validated_with_their_path(effect, path):
    from exporter.lab.scenario import ScenarioError, load_scenario_text

    with pytest.raises(ScenarioError) as e:
        load_scenario_text(f"name: x\nduration: 1m\nphases: [{{at: 0s, name: a, effects: [{effect}]}}]\n")
    assert f": {path}:" in str(e.value), str(e.value)


async def test_signal_effects_drive_the_world_and_the_lab_config_points_at_its_emulators():
    from exporter.lab.scenario import Player, load_scenario_text
    from exporter.lab.world import World

    scenario = load_scenario_text("""
name: signals
duration: 10s
phases:
  - {at: 0s, name: a, effects: [{routes: {provider: meta, state: withdrawn, peers: 3}},
                                {status_page: {provider: meta, state: unreachable}},
                                {routing_feed: {state: stalled}}]}
""")
    async with World() as world:
        config = load_config_text(json.dumps(world.exporter_config()))
        assert config.routing.enabled and config.routing.endpoint == world.ris.ws_url
        assert config.routing.initial_state == world.ris.looking_glass_url
        assert {p.provider for p in config.status_pages} == {"meta", "twitter", "telegram"}
        meta = world.route_prefixes("meta")
        assert meta == NS
        assert [world.ris.visible(p) for p in meta] == [5, 5]
        player = Player(scenario, world)
        await player.seek(0)
        assert [world.ris.visible(p) for p in meta] == [2, 2]
        assert world.ris.visible(world.route_prefixes("twitter")[0]) == 5
        assert (world.status_pages.pages["meta"].state, world.ris.feed) == ("unreachable", "stalled")
        world.reset()
        assert [world.ris.visible(p) for p in meta] == [5, 5]
        assert (world.status_pages.pages["meta"].state, world.ris.feed) == ("reachable", "up")


def test_a_world_without_emulators_gets_no_signals_and_skips_their_effects():
    """The real backend (exporter/lab/netlab) replays the same scenarios without a feed or status pages."""
    from types import SimpleNamespace

    from exporter.lab.labconfig import _signals
    from exporter.lab.scenario import RoutesEffect, RoutingFeedEffect, StatusPageEffect

    bare = SimpleNamespace()
    assert _signals(bare) == {}
    for effect in (RoutesEffect("p", "meta", "withdrawn"), RoutingFeedEffect("p", "down"),
                   StatusPageEffect("p", "meta", "unreachable")):
        effect.check(bare)  # type: ignore[arg-type]
        effect.apply(bare)  # type: ignore[arg-type]


def test_edge_addresses_are_derived_only_when_asked():
    from exporter.probers import result as r
    from exporter.routing.feed import edge_addresses

    store = ResultStore()
    web = make_check("https", service="facebook", provider="meta", prober="http")
    control = make_check("https", service="control-a", provider="lab", prober="http", control=True)
    store.set_checks([web, control])
    store.record(web, make_result(details={r.D_ADDRESS: "157.240.1.35"}))
    store.record(control, make_result(details={r.D_ADDRESS: "127.0.0.9"}))
    assert edge_addresses(store) == {("157.240.1.35", "meta")}
    assert not load_config_text("").routing.derive.edges
    assert load_config_text("routing: {derive: {edges: true}}").routing.derive.edges


async def test_derived_edges_are_owned_with_the_edges_role(ris, feeds):
    feed = feeds(replace(_config(ris), prefixes=()))
    await _until(lambda: feed.state.health.synced)
    await feed.add_derived({("127.10.3.7", "twitter")}, "edges")
    assert list(feed.series()) == [(OTHER, "twitter", "edges")]
    assert feed.state.states()[OTHER] == OK
