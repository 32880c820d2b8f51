"""exporter.state.signals: the routing feed's verdicts and the status pages' declared status, per provider."""

from __future__ import annotations

from exporter.config.model import RoutingConfig, RoutingPrefix, StatusPage
from exporter.results import ResultStore
from exporter.routing.feed import RoutingFeed
from exporter.state.signals import (
    CauseSignals,
    DeclaredStatus,
    PrefixVerdict,
    RoutingVerdict,
    declared_statuses,
    routing_verdicts,
    signal_lines,
)
from exporter.statuspage import StatusPagePoller
from tests.helpers.state import REGIONS, declared_status, record, routing_verdict, service_checks, snapshot_of


def test_the_routing_phrase_names_each_role_with_the_best_seen_lost_prefix() -> None:
    verdict = RoutingVerdict("meta", (
        PrefixVerdict("127.10.0.0/24", "nameservers", "lost", 1, 5),
        PrefixVerdict("127.10.1.0/24", "nameservers", "lost", 0, 6),
        PrefixVerdict("127.10.2.0/24", "edges", "lost", 2, 7),
        PrefixVerdict("127.10.3.0/24", "edges", "ok", 7, 7)))
    assert verdict.state == "lost"
    assert verdict.phrase() == ("BGP, 2 prefixes holding meta's nameservers withdrawn (seen by 1 of 6 peers), "
                                "1 prefix holding meta's edges withdrawn (seen by 2 of 7 peers)")


def test_routing_and_declared_status_alone_open_no_incident_but_are_listed() -> None:
    store = ResultStore()
    checks = [c for region, _ in REGIONS for c in service_checks("facebook", "meta", region)]
    store.set_checks(checks)
    for check in checks:
        record(store, check, [True] * 4)
    signals = CauseSignals(routing=(routing_verdict("meta", "lost"), routing_verdict("x", "ok")),
                              declared=(declared_status("meta", True, "critical"), declared_status("y", False)))
    snap = snapshot_of(store, signals=signals)
    assert snap.incidents == ()
    assert snap.routing == signals.routing and snap.declared == signals.declared
    assert signal_lines(snap.routing, snap.declared) == (
        "meta: BGP, 2 prefixes holding meta's nameservers withdrawn (seen by 0 of 5 peers); "
        "status page says Major System Outage",
        "x: BGP ok (2 prefixes watched)",
        "y: status page unreachable")


def test_verdicts_come_from_the_feeds_and_pages_own_state() -> None:
    """The routing feed's and the status page poller's state as they hold it, judged by them."""
    meta = tuple(RoutingPrefix(f"127.10.{i}.0/24", "meta") for i in (0, 1))
    feed = RoutingFeed(RoutingConfig(enabled=True, endpoint="ws://127.0.0.1:9/", prefixes=(
        *meta, RoutingPrefix("127.10.2.0/24", "x", "edges"))))
    peers = [f"rrc00|10.0.0.{i}" for i in range(5)]
    for prefix in feed.state.prefixes:
        feed.state.load_initial(prefix, peers)
    for p in meta:
        feed.state.prefixes[p.prefix].seeing.clear()
    feed.state.health.connected = feed.state.health.synced = True
    feed.state.heard()
    assert [(v.provider, v.state) for v in routing_verdicts(feed)] == [("meta", "lost"), ("x", "ok")]
    assert routing_verdicts(feed)[0].phrase() == (
        "BGP, 2 prefixes holding meta's nameservers withdrawn (seen by 0 of 5 peers)")
    feed.state.health.connected = False
    assert {v.state for v in routing_verdicts(feed)} == {"inconclusive"}

    pages = (StatusPage("meta", "http://127.0.0.1:9/", components=(("Facebook", "facebook"),)),
             StatusPage("x", "http://127.0.0.1:9/"), StatusPage("y", "http://127.0.0.1:9/"))
    poller = StatusPagePoller(pages)
    poller.states["meta"].polls = poller.states["meta"].failures = 1
    x = poller.states["x"]
    x.polls, x.reachable, x.indicator = 1, True, "none"
    poller.states["y"].polls = 1  # the first poll is still out
    assert declared_statuses(poller) == (DeclaredStatus("meta", False, None),
                                            DeclaredStatus("x", True, "none"),
                                            DeclaredStatus("y", None, None))
    assert declared_statuses(poller)[1].summary() == "status page says All Systems Operational"
    assert routing_verdicts(None) == () and declared_statuses(None) == ()
