"""exporter.state: the one definition of check, cell, service, provider and incident states.

Results are recorded into a real ResultStore at chosen times; the snapshot is judged at a chosen ``now``.
"""

from __future__ import annotations

from exporter import state as st
from exporter.config.model import AuthoritativeCheck, RoutingConfig, RoutingPrefix, StatusPage
from exporter.probers import result as r
from exporter.probers.result import NameserverResult, ZoneReport
from exporter.results import ResultStore
from exporter.routing.feed import RoutingFeed
from exporter.statuspage import StatusPagePoller
from tests.helpers.factories import make_check, make_result

NOW = 1_700_000_000.0
REGIONS = [("eu-west", "Europe West"), ("us-east", "US East")]


def _source(store: ResultStore, regions=REGIONS, signals: st.CauseSignals | None = None) -> st.Source:
    def source():
        inputs = [st.Input(check, check.region, tuple(state.window or ())) for check, state in store.items()]
        return inputs, list(regions), {}, signals or st.CauseSignals()
    return source


def _snapshot(store: ResultStore, now: float = NOW, regions=REGIONS,
              signals: st.CauseSignals | None = None) -> st.Snapshot:
    inputs, regions_, verdicts, beside = _source(store, regions, signals)()
    return st.evaluate(inputs, regions_, now, verdicts=verdicts, beside=beside)


def _record(store: ResultStore, check, outcomes, *, end: float = NOW, every: float = 10.0, **kw) -> None:
    """Record ``outcomes`` (True / False / a result) ending at ``end``, one every ``every`` seconds."""
    for i, outcome in enumerate(outcomes):
        t = end - (len(outcomes) - 1 - i) * every
        if isinstance(outcome, bool):
            result = make_result(outcome, finished_at=t, **({} if outcome else kw))
        else:
            result = make_result(outcome.success, reason=outcome.reason, details=dict(outcome.details),
                                 zone=outcome.zone, finished_at=t)
        store.record(check, result)


def _zone(answering: int, total: int = 2) -> ZoneReport:
    return ZoneReport(zone="example.test", nameservers=tuple(
        NameserverResult(f"ns{i}.example.test", f"127.0.0.{i + 1}", "udp", up=i < answering,
                         reason=None if i < answering else r.DNS_TIMEOUT) for i in range(total)))


def _service(name: str, provider: str, region: str, *, authoritative: bool = False):
    checks = [make_check("dns", service=name, provider=provider, region=region, prober="dns",
                         resolver="127.0.0.1:5301"),
              make_check("dns", service=name, provider=provider, region=region, prober="dns",
                         resolver="127.0.0.1:5302"),
              make_check("https", service=name, provider=provider, region=region)]
    if authoritative:
        checks.append(make_check("authns", service=name, provider=provider, region=region,
                                 authoritative=AuthoritativeCheck(zone=f"{name}.test")))
    return checks


HTTP_503 = make_result(False, reason=r.HTTP_STATUS, details={r.D_HTTP_STATUS: 503})
HTTP_200 = make_result(True, details={r.D_HTTP_STATUS: 200})


def test_a_service_answering_503_everywhere_is_down_not_degraded() -> None:
    """instagram in the 2021 replay: DNS fine, every HTTP probe 503 from both regions. The rules page
    (signal any and http_5xx, quorum of regions); the page must say down too, with the status code."""
    store = ResultStore()
    checks = [c for region, _ in REGIONS for c in _service("instagram", "meta", region, authoritative=True)]
    store.set_checks(checks)
    for check in checks:
        if check.check == "https":
            _record(store, check, [HTTP_503] * 4)
        elif check.authoritative is not None:
            _record(store, check, [make_result(True, zone=_zone(2))] * 4)
        else:
            _record(store, check, [True] * 4)
    snap = _snapshot(store)
    for region, _ in REGIONS:
        cell = snap.cell("instagram", region)
        assert cell is not None and cell.state == st.DOWN
        assert set(cell.signals) == {"any", "http_5xx"}
        assert cell.reasons == ("HTTP 503",)
        assert cell.causes == ("http",)
    service = snap.service("instagram")
    assert service is not None and service.state == st.DOWN and set(service.signals) == {"any", "http_5xx"}
    [incident] = snap.incidents
    assert incident.provider == "meta" and incident.cause == "http"
    assert incident.summary(NOW + 180).startswith("meta: HTTP 503, 1 service, 2 regions, since ")
    assert incident.summary(NOW + 180).endswith("(3 min)")


def test_a_check_fails_when_more_than_half_of_the_window_failed() -> None:
    store = ResultStore()
    one, two = make_check("a", service="one", region="eu-west"), make_check("a", service="two", region="eu-west")
    store.set_checks([one, two])
    _record(store, one, [True, False, True, True])  # 10 of 30 s failing: a blip
    _record(store, two, [True, False, False, True])  # 20 of 30 s failing
    snap = _snapshot(store, NOW + 0.5, regions=REGIONS[:1])
    assert snap.cell("one", "eu-west").state == st.DEGRADED  # type: ignore[union-attr]
    assert snap.cell("two", "eu-west").state == st.DOWN  # type: ignore[union-attr]
    assert snap.cell("two", "eu-west").checks[0].failing  # type: ignore[union-attr]
    assert snap.service("two").state == st.DOWN  # one region reports, and it fails  # type: ignore[union-attr]


def test_a_failure_before_the_window_counts_while_it_is_in_effect() -> None:
    store = ResultStore()
    check = make_check("a", service="slow", region="eu-west", interval=60)
    store.set_checks([check])
    _record(store, check, [False], end=NOW - 45)  # the latest run, 45 s ago, failed: still failing now
    assert _snapshot(store, regions=REGIONS[:1]).cell("slow", "eu-west").state == st.DOWN  # type: ignore[union-attr]


def test_an_unhealthy_vantage_makes_failures_inconclusive_and_uncounted() -> None:
    store = ResultStore()
    control = make_check("home", service="ctl", region="eu-west", control=True, target="http://127.0.0.2/")
    checks = [control, make_check("a", service="shop", region="eu-west"),
              make_check("a", service="shop", region="us-east")]
    store.set_checks(checks)
    _record(store, control, [False] * 4)
    _record(store, checks[1], [False] * 4)
    _record(store, checks[2], [True] * 4)
    snap = _snapshot(store)
    eu = snap.cell("shop", "eu-west")
    assert eu is not None and eu.state == st.INCONCLUSIVE and not eu.signals and eu.counted == ()
    assert eu.checks[0].why_inconclusive == "vantage unhealthy"
    assert snap.cell("ctl", "eu-west").state == st.DOWN  # type: ignore[union-attr]
    assert snap.service("shop").state == st.INCONCLUSIVE and not snap.incidents  # type: ignore[union-attr]
    assert not snap.regions[0].healthy_in_window and snap.regions[1].healthy_in_window


def test_a_resolver_failing_its_controls_is_named_and_its_queries_are_inconclusive() -> None:
    store = ResultStore()
    bad = "127.0.0.1:5301"
    control = make_check("dns", service="ctl", region="eu-west", prober="dns", resolver=bad, control=True,
                         target="control.test.")
    other_control = make_check("dns", service="ctl", region="eu-west", prober="dns", resolver="127.0.0.1:5302",
                               control=True, target="control.test.")
    checks = [control, other_control, *_service("shop", "acme", "eu-west")]
    store.set_checks(checks)
    _record(store, control, [False] * 4, reason=r.DNS_SERVFAIL)
    _record(store, other_control, [True] * 4)
    for check in checks[2:]:
        _record(store, check, [False] * 4 if check.resolver == bad else [True] * 4, reason=r.DNS_SERVFAIL)
    cell = _snapshot(store, regions=REGIONS[:1]).cell("shop", "eu-west")
    assert cell is not None and cell.state == st.INCONCLUSIVE and not cell.signals
    assert f"resolver {bad} failing its controls" in cell.reasons
    assert f"dns_servfail via {bad}" in cell.reasons


def test_dns_signal_needs_most_resolvers_and_names_them() -> None:
    store = ResultStore()
    checks = _service("shop", "acme", "eu-west")
    store.set_checks(checks)
    for check in checks:
        _record(store, check, [False] * 4 if check.prober == "dns" else [True] * 4, reason=r.DNS_SERVFAIL)
    cell = _snapshot(store, regions=REGIONS[:1]).cell("shop", "eu-west")
    assert cell is not None and set(cell.signals) == {"any", "dns"}
    assert cell.reasons == ("dns_servfail via 127.0.0.1:5301, 127.0.0.1:5302",)
    assert cell.causes == ("resolution",)


def _the_2021_shape() -> ResultStore:
    """facebook and whatsapp of meta from both regions: nameservers silent, resolvers SERVFAIL/timeout,
    edges 503."""
    store = ResultStore()
    checks = [c for name in ("facebook", "whatsapp") for region, _ in REGIONS
              for c in _service(name, "meta", region, authoritative=True)]
    store.set_checks(checks)
    for check in checks:
        if check.authoritative is not None:
            _record(store, check, [make_result(False, reason=r.DNS_TIMEOUT, zone=_zone(0))] * 4)
        elif check.prober == "dns":
            reason = r.DNS_SERVFAIL if check.resolver.endswith("01") else r.DNS_TIMEOUT
            _record(store, check, [False] * 4, reason=reason)
        else:
            _record(store, check, [HTTP_503] * 4)
    return store


def test_incident_ranks_authoritative_dns_before_resolution_and_http() -> None:
    """The 2021 shape: nameservers silent, resolvers SERVFAIL/timeout, edges 503."""
    snap = _snapshot(_the_2021_shape())
    assert {p.provider: (p.state, p.outage) for p in snap.providers} == {"meta": (st.DOWN, True)}
    [incident] = snap.incidents
    assert incident.causes == ("authoritative", "resolution", "http")
    assert incident.summary(NOW + 60).startswith(
        "meta: DNS, authoritative nameservers unreachable (0 of 2 answering), resolvers SERVFAIL/timeout, "
        "HTTP 503, 2 services, 2 regions, since ")
    assert set(snap.cell("facebook", "eu-west").signals) == {"any", "dns", "http_5xx", "nameservers"}  # type: ignore[union-attr]


def test_quorum_needs_two_regions_and_half_of_them() -> None:
    regions = [("a", "a"), ("b", "b"), ("c", "c")]
    store = ResultStore()
    checks = [make_check("x", service=f"s{n}", region=region) for n in (1, 2) for region, _ in regions]
    store.set_checks(checks)
    for check in checks:
        failing = check.region == "a" or (check.service == "s2" and check.region == "b")
        _record(store, check, [not failing] * 4)
    snap = _snapshot(store, regions=regions)
    assert snap.service("s1").state == st.DEGRADED  # 1 of 3 regions  # type: ignore[union-attr]
    assert snap.service("s2").state == st.DOWN  # 2 of 3  # type: ignore[union-attr]
    assert [(p.services_down, p.outage) for p in snap.providers] == [(0, False), (1, False)]


def test_board_keeps_since_and_a_bounded_history() -> None:
    store = ResultStore()
    check = make_check("a", service="shop", region="eu-west")
    store.set_checks([check])
    board = st.Board(_source(store, REGIONS[:1]), max_age=0)
    _record(store, check, [True] * 4)
    first = board.snapshot(NOW)
    assert first.cell("shop", "eu-west").state == st.UP  # type: ignore[union-attr]
    _record(store, check, [False] * 4, end=NOW + 40)
    down = board.snapshot(NOW + 40).cell("shop", "eu-west")
    assert down is not None and down.state == st.DOWN and down.since == NOW + 40
    assert board.snapshot(NOW + 50).cell("shop", "eu-west").since == NOW + 40  # type: ignore[union-attr]
    assert board.snapshot(NOW + 50).incidents[0].since == NOW + 40
    for minute in range(1, 61):
        later = board.snapshot(NOW + 50 + minute * 60)
    history = later.cell("shop", "eu-west").history  # type: ignore[union-attr]
    assert len(history) == st.HISTORY_SLOTS
    assert all(b[0] - a[0] >= st.HISTORY_STEP for a, b in zip(history, history[1:], strict=False))


def test_a_slot_of_the_history_keeps_its_worst_state() -> None:
    check = make_check("a", service="shop", region="eu-west")
    runs: list = []
    board = st.Board(lambda: ([st.Input(check, "eu-west", tuple(runs))], REGIONS[:1], {}, st.CauseSignals()),
                     max_age=0)
    start = (NOW // st.HISTORY_STEP) * st.HISTORY_STEP
    failed, passed = (ResultStore(), ResultStore())
    for store, ok in ((failed, False), (passed, True)):
        store.set_checks([check])
        _record(store, check, [ok] * 4, end=start + 1)
    runs[:] = failed.get(check.key).window  # type: ignore[union-attr]
    board.snapshot(start + 1)
    runs[:] = passed.get(check.key).window  # type: ignore[union-attr]
    snap = board.snapshot(start + 2)
    assert snap.cell("shop", "eu-west").state == st.UP  # type: ignore[union-attr]
    assert snap.cell("shop", "eu-west").history == ((start, st.DOWN),)  # type: ignore[union-attr]


def test_a_cell_names_the_status_code_of_an_earlier_failure_in_the_window() -> None:
    store = ResultStore()
    check = make_check("https", service="shop", region="eu-west")
    store.set_checks([check])
    _record(store, check, [HTTP_200, HTTP_503, make_result(False, reason=r.DNS_SERVFAIL)])
    cell = _snapshot(store, regions=REGIONS[:1]).cell("shop", "eu-west")
    assert cell is not None and cell.state == st.DOWN
    assert cell.reasons == ("dns_servfail", "HTTP 503")


# --- routing (BGP) and declared status ---------------------------------------------------------------------
def _routing(provider: str, state: str, *, peers: int = 0, seen: int = 5,
             roles: tuple[str, ...] = ("nameservers", "nameservers")) -> st.RoutingVerdict:
    prefixes = tuple(st.PrefixVerdict(f"127.10.{i}.0/24", role, state, peers if state == "lost" else seen, seen)
                     for i, role in enumerate(roles))
    return st.RoutingVerdict(provider, prefixes)


def _declared(provider: str, reachable: bool | None, indicator: str | None = None) -> st.DeclaredStatus:
    return st.DeclaredStatus(provider, reachable, indicator)


def test_a_routing_loss_is_the_incidents_first_cause() -> None:
    signals = st.CauseSignals(routing=(_routing("meta", "lost"),))
    [incident] = _snapshot(_the_2021_shape(), signals=signals).incidents
    assert incident.cause == "routing"
    assert incident.causes == ("routing", "authoritative", "resolution", "http")
    assert incident.summary(NOW + 60).startswith(
        "meta: BGP, 2 prefixes holding meta's nameservers withdrawn (seen by 0 of 5 peers), "
        "DNS, authoritative nameservers unreachable (0 of 2 answering), resolvers SERVFAIL/timeout, HTTP 503, "
        "2 services, 2 regions, since ")


def test_the_routing_phrase_names_each_role_with_the_best_seen_lost_prefix() -> None:
    verdict = st.RoutingVerdict("meta", (
        st.PrefixVerdict("127.10.0.0/24", "nameservers", "lost", 1, 5),
        st.PrefixVerdict("127.10.1.0/24", "nameservers", "lost", 0, 6),
        st.PrefixVerdict("127.10.2.0/24", "edges", "lost", 2, 7),
        st.PrefixVerdict("127.10.3.0/24", "edges", "ok", 7, 7)))
    assert verdict.state == "lost"
    assert verdict.phrase() == ("BGP, 2 prefixes holding meta's nameservers withdrawn (seen by 1 of 6 peers), "
                                "1 prefix holding meta's edges withdrawn (seen by 2 of 7 peers)")


def test_declared_status_is_appended_against_what_is_measured() -> None:
    store = _the_2021_shape()

    def summary(declared: st.DeclaredStatus) -> str:
        [incident] = _snapshot(store, signals=st.CauseSignals(declared=(declared,))).incidents
        assert incident.cause == "authoritative"  # declared status changes no cause
        return incident.summary(NOW + 60)

    assert summary(_declared("meta", False)).endswith("(1 min); status page unreachable")
    assert summary(_declared("meta", True, "none")).endswith(
        "(1 min); status page says All Systems Operational while 2 services are down")
    assert summary(_declared("meta", True, "major")).endswith("(1 min); status page: Partial System Outage")
    assert summary(_declared("meta", None)).endswith("(1 min)")  # not polled yet: nothing to say
    assert summary(_declared("other", False)).endswith("(1 min)")  # another provider's page


def test_routing_and_declared_status_alone_open_no_incident_but_are_listed() -> None:
    store = ResultStore()
    checks = [c for region, _ in REGIONS for c in _service("facebook", "meta", region)]
    store.set_checks(checks)
    for check in checks:
        _record(store, check, [True] * 4)
    signals = st.CauseSignals(routing=(_routing("meta", "lost"), _routing("x", "ok")),
                              declared=(_declared("meta", True, "critical"), _declared("y", False)))
    snap = _snapshot(store, signals=signals)
    assert snap.incidents == ()
    assert snap.routing == signals.routing and snap.declared == signals.declared
    assert st.signal_lines(snap.routing, snap.declared) == (
        "meta: BGP, 2 prefixes holding meta's nameservers withdrawn (seen by 0 of 5 peers); "
        "status page says Major System Outage",
        "x: BGP ok (2 prefixes watched)",
        "y: status page unreachable")


def test_an_inconclusive_feed_names_no_bgp_cause() -> None:
    verdict = st.RoutingVerdict("meta", (st.PrefixVerdict("127.10.0.0/24", "nameservers", "inconclusive", 0, 5),
                                         st.PrefixVerdict("127.10.1.0/24", "nameservers", "lost", 0, 5)))
    assert verdict.state == "inconclusive"  # the feed cannot be trusted: not even a lost prefix counts
    snap = _snapshot(_the_2021_shape(), signals=st.CauseSignals(routing=(verdict,)))
    [incident] = snap.incidents
    assert incident.cause == "authoritative" and "BGP" not in incident.summary(NOW)
    assert st.signal_lines(snap.routing, ()) == (
        "meta: BGP inconclusive: the routing feed is down or stalled (2 prefixes watched)",)


def test_the_board_keeps_the_routing_cause_and_declared_status() -> None:
    signals = st.CauseSignals(routing=(_routing("meta", "lost"),), declared=(_declared("meta", False),))
    board = st.Board(_source(_the_2021_shape(), signals=signals), max_age=0)
    board.snapshot(NOW)
    [incident] = board.snapshot(NOW + 120).incidents
    assert incident.since == NOW and incident.cause == "routing"
    assert incident.summary(NOW + 120).endswith("(2 min); status page unreachable")


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
    assert [(v.provider, v.state) for v in st.routing_verdicts(feed)] == [("meta", "lost"), ("x", "ok")]
    assert st.routing_verdicts(feed)[0].phrase() == (
        "BGP, 2 prefixes holding meta's nameservers withdrawn (seen by 0 of 5 peers)")
    feed.state.health.connected = False
    assert {v.state for v in st.routing_verdicts(feed)} == {"inconclusive"}

    pages = (StatusPage("meta", "http://127.0.0.1:9/", components=(("Facebook", "facebook"),)),
             StatusPage("x", "http://127.0.0.1:9/"), StatusPage("y", "http://127.0.0.1:9/"))
    poller = StatusPagePoller(pages)
    poller.states["meta"].polls = poller.states["meta"].failures = 1
    x = poller.states["x"]
    x.polls, x.reachable, x.indicator = 1, True, "none"
    poller.states["y"].polls = 1  # the first poll is still out
    assert st.declared_statuses(poller) == (st.DeclaredStatus("meta", False, None),
                                            st.DeclaredStatus("x", True, "none"),
                                            st.DeclaredStatus("y", None, None))
    assert st.declared_statuses(poller)[1].summary() == "status page says All Systems Operational"
    assert st.routing_verdicts(None) == () and st.declared_statuses(None) == ()
