"""End to end on the real backend: Knot, Unbound and nginx in network namespaces (exporter/lab/netlab), one
exporter inside each region, the central Prometheus scraping them across the lab network (so isolating a
region cuts its scrape), the shipped rules and routes in a real Alertmanager, notifications in a webhook
sink. One incident from the first page to the last resolution, plus the faults that must not page.

Needs root; skipped without it outside CI, failing in CI (CI=true). The worlds run at speed 60 so a zone's
300 s TTL drains in 5 s; the scenario texts are story time (a story minute is a real second), everything
else (probes, scrapes, rules, Alertmanager, Unbound's back-off) runs in real time. The five runs play at
once, each in its own namespaces. ``pytest -s`` prints each timeline and the measured figures
(docs/alerts.md "Measured end to end", docs/scale-out.md "Isolation drill").
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import dns.exception
import dns.message
import dns.query
import pytest

from exporter.lab.netlab import netns, plan
from exporter.lab.netlab.world import RealWorld
from exporter.lab.scenario import Phase, load_scenario_text
from exporter.lab.stack import Notification
from tests.helpers.netstack import REGIONS as REGIONS_UNDER_TEST
from tests.helpers.netstack import NetRun, agent_scrape_interval, real_stack, require_real_backend
from tests.test_alerts_e2e import Run, _unix

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SPEED = 60.0
TAIL_CAP = 300.0  # seconds of the recovery tail observed at most
POLL = 1.0

# 2021: meta's nameservers lose their routes for 160 s, long enough for Unbound to back off, then return.
CUT = """
name: real-2021-cut-and-tail
duration: 15h
phases:
  - {at: 0s, name: baseline}
  - at: +45m
    name: nameservers-unreachable
    effects: [{nameservers: {provider: meta, state: blackhole}}]
  - at: +3h25m
    name: nameservers-answer-again
    effects: [{nameservers: {provider: meta, state: up}}]
"""

BLIP = """
name: real-regional-blip
duration: 4h
phases:
  - {at: 0s, name: baseline}
  - at: +40m
    name: eu-west-unavailable
    effects: [{edge: {service: twitter, region: eu-west, mode: unavailable}}]
  - at: +2h10m
    name: recovered
    effects: [{edge: {service: twitter, region: eu-west, mode: healthy}}]
"""

ISOLATION = """
name: real-us-east-isolated
duration: 4h
phases:
  - {at: 0s, name: baseline}
  - at: +40m
    name: us-east-isolated
    effects: [{vantage: {region: us-east, isolated: true}}]
  - at: +3h10m
    name: us-east-reconnected
    effects: [{vantage: {region: us-east, isolated: false}}]
"""

# The resolver fault has no scenario effect: the run's phase hook stops eu-west's ISP-style Unbound.
RESOLVER = """
name: real-resolver-lost
duration: 4h
phases:
  - {at: 0s, name: baseline}
  - {at: +40m, name: resolver-lost}
  - {at: +2h50m, name: resolver-back}
"""

# Topology B: agents. us-east loses its internet but keeps its path to the central Prometheus, then its
# uplink goes down completely and comes back (hooks for the partial cut, a scenario effect for the rest).
AGENT_DRILL = """
name: real-agent-isolation-drill
duration: 6h
phases:
  - {at: 0s, name: baseline}
  - {at: +40m, name: internet-lost}
  - {at: +2h40m, name: internet-back}
  - at: +3h5m
    name: uplink-down
    effects: [{vantage: {region: us-east, isolated: true}}]
  - at: +4h5m
    name: uplink-up
    effects: [{vantage: {region: us-east, isolated: false}}]
"""


@dataclass
class RealRun(Run):
    marks: dict[str, float] = field(default_factory=dict)  # measured moments (unix time)
    figures: dict[str, object] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)  # region -> exporter address
    error: BaseException | None = None

    def since(self, mark: str, ref: str) -> float:
        return self.marks[mark] - self.phases.get(ref, self.marks.get(ref, 0.0))

    def first(self, predicate: Callable[[Notification], bool]) -> Notification | None:
        return next((n for n in self.notifications if predicate(n)), None)

    def first_firing(self, alertname: str) -> float | None:
        """When Prometheus was first seen with ``alertname`` firing (5 s samples of /api/v1/alerts)."""
        return next((t for t, got in self.samples if any(
            a["state"] == "firing" and a["labels"]["alertname"] == alertname for a in got)), None)


def _hooks(phase: Phase, world: RealWorld) -> None:
    """Faults the scenario language has no effect for."""
    actions = {"resolver-lost": lambda: world.set_resolver("eu-west", "isp", False),
               "resolver-back": lambda: world.set_resolver("eu-west", "isp", True),
               "internet-lost": lambda: world.cut_internet("us-east"),
               "internet-back": lambda: world.cut_internet("us-east", False)}
    if phase.name in actions:
        actions[phase.name]()


async def _until(predicate: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout: float,
                 every: float = POLL) -> float | None:
    """Unix time at which ``predicate`` first held, or None after ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = predicate()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return time.time()
        await asyncio.sleep(every)
    return None


async def _meta_dns(lab: NetRun) -> list[float]:
    """probe_success of every meta DNS check through every resolver of both regions."""
    values: list[float] = []
    for region in lab.world.region_names:
        values += [v for labels, v in await lab.samples(region, "probe_success")
                   if labels.get("provider") == "meta" and labels.get("check") == "dns"]
    return values


async def _sampled(lab: NetRun, run: RealRun, body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` while sampling Prometheus' active alerts every 5 s into ``run.samples``."""
    async def sample() -> None:
        while True:
            run.samples.append((time.time(), await lab.alerts()))
            await asyncio.sleep(5)
    sampler = asyncio.ensure_future(sample())
    try:
        await body()
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        run.notifications = lab.notifications


async def _play(run: RealRun, scenario: str, body: Callable[[RealRun, NetRun], Awaitable[None]], *,
                agents: bool = False) -> RealRun:
    try:
        async with real_stack(load_scenario_text(scenario), SPEED, agents=agents, on_phase=_hooks) as lab:
            run.started = time.time()
            run.phases = lab.phases
            run.addresses = {r: lab.world.exporter_address(r) for r in lab.world.region_names}
            await _sampled(lab, run, lambda: body(run, lab))
    except BaseException as exc:  # each test reports its own run's failure
        run.error = exc
    return run


async def _phase(lab: NetRun, name: str) -> float:
    await _until(lambda: name in lab.phases, 900, 0.2)
    return lab.phases[name]


async def _cut_and_tail(run: RealRun, lab: NetRun) -> None:
    """The 2021 cut, then the restore: when the resolvers fail, and how long they keep failing after."""
    cut = await _phase(lab, "nameservers-unreachable")
    failed = await _until(lambda: _any_failing(lab), 90)
    if failed is not None:
        run.marks["resolvers_fail"] = failed
    restored = await _phase(lab, "nameservers-answer-again")
    run.figures["outage_seconds"] = restored - cut
    back = await _until(lambda: _all_answering(lab), TAIL_CAP, 2.0)
    if back is not None:
        run.marks["tail_over"] = back
        await asyncio.sleep(20)  # long enough for anything new to start pending
    run.marks["observed_until"] = time.time()
    window = max(1, round(time.time() - restored))
    run.figures["for_state_after_restore"] = await lab.query(
        f'max_over_time(ALERTS_FOR_STATE{{provider="meta"}}[{window}s]) > {restored + 5:.0f}')


async def _any_failing(lab: NetRun) -> bool:
    return 0.0 in await _meta_dns(lab)


async def _all_answering(lab: NetRun) -> bool:
    values = await _meta_dns(lab)
    return bool(values) and set(values) == {1.0}


async def _watch(lab: NetRun, last_phase: str, after: float) -> None:
    await _phase(lab, last_phase)
    await asyncio.sleep(after)


async def _agent_drill(run: RealRun, lab: NetRun) -> None:
    """Samples scraped by the cut-off agent are absent during the cut and in the central TSDB after it."""
    await _phase(lab, "uplink-down")
    await asyncio.sleep(40)
    us = f'instance="{lab.world.exporter_address("us-east")}"'
    run.figures["live_during_cut"] = await lab.query(f"count_over_time(up{{{us}}}[30s])")
    down, up = lab.phases["uplink-down"], await _phase(lab, "uplink-up")
    start, end = down + 5, up - 2
    expr = f"count_over_time(up{{{us}}}[{end - start:.0f}s])"
    run.figures["expected_samples"] = round((end - start) / agent_scrape_interval(), 1)

    async def arrived() -> bool:
        got = await lab.query(expr, at=end)
        run.figures["buffered_samples"] = float(got[0]["value"][1]) if got else 0.0
        return run.figures["buffered_samples"] >= 0.8 * run.figures["expected_samples"]
    done = await _until(arrived, 90, 2.0)
    if done is not None:
        run.marks["backlog_arrived"] = done


@pytest.fixture(scope="module")
def runs() -> dict[str, RealRun]:
    require_real_backend()

    async def all_runs() -> list[RealRun]:
        return await asyncio.gather(
            _play(RealRun("2021-cut-and-tail"), CUT, _cut_and_tail),
            _play(RealRun("regional-blip"), BLIP, lambda run, lab: _watch(lab, "recovered", 70)),
            _play(RealRun("us-east-isolated"), ISOLATION, lambda run, lab: _watch(lab, "us-east-reconnected", 10)),
            _play(RealRun("resolver-lost"), RESOLVER, lambda run, lab: _watch(lab, "resolver-back", 10)),
            _play(RealRun("agent-isolation-drill"), AGENT_DRILL, _agent_drill, agents=True),
        )

    return {r.name: r for r in asyncio.run(all_runs())}


def _get(runs: dict[str, RealRun], name: str) -> RealRun:
    run = runs[name]
    if run.error is not None:
        raise AssertionError(f"run {name} failed: {run.error!r}") from run.error
    return run


def _text(notes: list[Notification]) -> str:
    return json.dumps([n.payload for n in notes]).lower()


def _names(notes: list[Notification]) -> set[str]:
    return {a["labels"]["alertname"] for n in notes for a in n.alerts if a["status"] == "firing"}


def _figures(runs: dict[str, RealRun]) -> list[str]:
    lines = ["figures:"]
    cut = runs["2021-cut-and-tail"]
    if cut.error is None:
        t_cut, t_fail = cut.phases["nameservers-unreachable"], cut.marks.get("resolvers_fail")
        page = cut.first(lambda n: n.receiver == "pager" and n.payload["status"] == "firing")
        ns = cut.first(lambda n: "OutageDNSNameserversUnreachable" in _names([n]))
        restored = cut.phases["nameservers-answer-again"]
        lines += [
            f"  2021 cut: resolvers fail {t_fail - t_cut:.0f} s after the cut" if t_fail else "  no resolver failed",
            f"  2021 cut: first page {page.received_at - t_cut:.0f} s after the cut, "
            f"{page.received_at - t_fail:.0f} s after the resolvers fail" if page and t_fail else "  no page",
            f"  2021 cut: OutageDNSNameserversUnreachable in a notification {ns.received_at - t_cut:.0f} s "
            "after the cut" if ns else "  no nameserver alert",
            f"  2021 cut: OutageDNSNameserversUnreachable firing in Prometheus by "
            f"{(cut.first_firing('OutageDNSNameserversUnreachable') or t_cut) - t_cut:.0f} s after the cut",
            f"  recovery tail after a {cut.figures['outage_seconds']:.0f} s outage: "
            + (f"{cut.marks['tail_over'] - restored:.0f} s" if "tail_over" in cut.marks
               else f"longer than {TAIL_CAP:.0f} s (observation capped)")]
    iso = runs["us-east-isolated"]
    if iso.error is None:
        ticket = iso.first(lambda n: n.receiver == "ticket" and n.payload["status"] == "firing")
        lines.append(f"  isolation: first ticket {ticket.received_at - iso.phases['us-east-isolated']:.0f} s after "
                     f"the uplink went down: {_names([ticket])}" if ticket else "  isolation: no ticket")
    res = runs["resolver-lost"]
    if res.error is None:
        ticket = res.first(lambda n: "OutageResolverFailing" in _names([n]))
        lines.append(f"  resolver lost: OutageResolverFailing {ticket.received_at - res.phases['resolver-lost']:.0f} s"
                     " after the resolver stopped" if ticket else "  resolver lost: no OutageResolverFailing")
    drill = runs["agent-isolation-drill"]
    if drill.error is None:
        verdict = drill.first(lambda n: "OutageVantageUnhealthy" in _names([n]))
        lost = drill.phases["internet-lost"]
        lines.append(f"  agents, internet lost: OutageVantageUnhealthy {verdict.received_at - lost:.0f} s after "
                     "the cut" if verdict else "  agents: no OutageVantageUnhealthy")
        f = drill.figures
        lines.append(f"  agents, uplink down 60 s: {f.get('buffered_samples')} of {f.get('expected_samples')} "
                     f"expected samples of us-east in the TSDB after reconnection"
                     + (f", {drill.marks['backlog_arrived'] - drill.phases['uplink-up']:.0f} s after it"
                        if "backlog_arrived" in drill.marks else ""))
    return lines


def test_print_timeline(runs: dict[str, RealRun], capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print()
        for run in runs.values():
            print("\n".join(run.timeline()) if run.error is None else f"{run.name}: FAILED {run.error!r}")
        print("\n".join(_figures(runs)))


# --- 1. the 2021 cut -----------------------------------------------------------------------------------


def test_2021_cut_is_one_meta_page_naming_both_regions(runs: dict[str, RealRun]) -> None:
    run = _get(runs, "2021-cut-and-tail")
    pages = run.firing("pager")
    assert pages, run.timeline()
    assert {n.payload["commonLabels"].get("provider") for n in pages} == {"meta"}, run.timeline()
    assert len({n.payload["groupKey"] for n in pages}) == 1, run.timeline()
    text = _text(pages)
    assert "eu-west" in text and "us-east" in text
    assert "outageprovideroutage" in text


def test_2021_first_page_within_a_minute_of_the_resolvers_failing(runs: dict[str, RealRun]) -> None:
    run = _get(runs, "2021-cut-and-tail")
    assert "resolvers_fail" in run.marks, "no meta DNS check failed through the regions' resolvers"
    assert run.marks["resolvers_fail"] >= run.phases["nameservers-unreachable"]
    first = min(n.received_at for n in run.firing("pager"))
    assert first - run.marks["resolvers_fail"] <= 60, run.timeline()


def test_2021_nameserver_alert_notified_within_90_seconds_of_the_cut(runs: dict[str, RealRun]) -> None:
    run = _get(runs, "2021-cut-and-tail")
    note = run.first(lambda n: "OutageDNSNameserversUnreachable" in _names([n]))
    assert note is not None, run.timeline()
    assert note.received_at - run.phases["nameservers-unreachable"] <= 90, run.timeline()


def test_2021_never_names_controls_nor_nxdomain(runs: dict[str, RealRun]) -> None:
    run = _get(runs, "2021-cut-and-tail")
    assert "nxdomain" not in _text(run.notifications)
    for note in run.notifications:
        for alert in note.alerts:
            assert not alert["labels"].get("service", "").startswith("control-"), note.summary()


# --- 5. the recovery tail (same run) -------------------------------------------------------------------


def _after_restore(run: RealRun) -> list[tuple[float, list[dict]]]:
    restored = run.phases["nameservers-answer-again"]
    return [(t, got) for t, got in run.samples if restored + 5 <= t <= run.marks["observed_until"]]


def _provider_firing(alerts: list[dict]) -> list[dict]:
    return [a for a in alerts if a["state"] == "firing" and a["labels"]["alertname"] == "OutageProviderOutage"
            and a["labels"].get("provider") == "meta"]


def test_incident_stays_open_through_the_resolver_tail(runs: dict[str, RealRun]) -> None:
    run = _get(runs, "2021-cut-and-tail")
    tail = _after_restore(run)
    assert tail, "nothing observed after the restore"
    open_ = [bool(_provider_firing(got)) for _, got in tail]
    assert all(open_), f"the meta incident closed during the tail: {open_}"


def test_nothing_of_meta_starts_after_the_restore(runs: dict[str, RealRun]) -> None:
    run = _get(runs, "2021-cut-and-tail")
    restored = run.phases["nameservers-answer-again"]
    late = [(a["labels"]["alertname"], a["labels"].get("service"), a["startsAt"])
            for n in run.notifications for a in n.alerts
            if a["status"] == "firing" and a["labels"].get("provider") == "meta"
            and _unix(a["startsAt"]) > restored + 5]
    assert not late, (late, run.timeline())
    assert not run.figures["for_state_after_restore"], run.figures["for_state_after_restore"]
    pages = run.firing("pager")
    assert len({n.payload["groupKey"] for n in pages}) == 1, run.timeline()


def test_open_incident_says_the_nameservers_answer_again(runs: dict[str, RealRun]) -> None:
    run = _get(runs, "2021-cut-and-tail")
    texts = [a["annotations"]["description"] for _, got in _after_restore(run) for a in _provider_firing(got)]
    assert any("the nameservers answer again since" in t for t in texts), texts[-1:]


# --- 2-4. faults that must not page --------------------------------------------------------------------


def test_one_region_blip_does_not_page(runs: dict[str, RealRun]) -> None:
    run = _get(runs, "regional-blip")
    assert not run.firing("pager"), run.timeline()
    assert _names(run.notifications) <= {"OutageServiceDownInRegion"}, run.timeline()


def test_isolated_region_is_a_ticket_naming_its_exporter(runs: dict[str, RealRun]) -> None:
    run = _get(runs, "us-east-isolated")
    assert not run.firing("pager"), run.timeline()
    tickets = run.firing("ticket")
    assert tickets, run.timeline()
    named = {(a["labels"]["alertname"], a["labels"].get("instance")) for n in tickets for a in n.alerts}
    assert ("OutageExporterDown", run.addresses["us-east"]) in named, named
    assert not [x for x in named if x[1] == run.addresses["eu-west"]], named
    regions = {a["labels"]["region"] for n in tickets for a in n.alerts if "region" in a["labels"]}
    assert regions <= {"us-east"}, regions


def test_lost_resolver_is_a_ticket_naming_region_and_resolver(runs: dict[str, RealRun]) -> None:
    run = _get(runs, "resolver-lost")
    assert not run.firing("pager"), run.timeline()
    failing = {(a["labels"].get("region"), a["labels"].get("resolver")) for n in run.firing("ticket")
               for a in n.alerts if a["labels"]["alertname"] == "OutageResolverFailing"}
    assert failing == {("eu-west", "198.18.30.2:53")}, run.timeline()


# --- topology B: agents --------------------------------------------------------------------------------


def test_agents_deliver_the_vantage_verdict_during_the_isolation(runs: dict[str, RealRun]) -> None:
    run = _get(runs, "agent-isolation-drill")
    assert not run.firing("pager"), run.timeline()
    verdicts = [n for n in run.firing("ticket") for a in n.alerts
                if a["labels"]["alertname"] == "OutageVantageUnhealthy" and a["labels"].get("region") == "us-east"]
    assert verdicts, run.timeline()
    assert run.phases["internet-lost"] < verdicts[0].received_at < run.phases["internet-back"], run.timeline()


def test_agent_buffers_through_a_full_uplink_cut(runs: dict[str, RealRun]) -> None:
    run = _get(runs, "agent-isolation-drill")
    assert not run.figures["live_during_cut"], "samples of the cut-off region arrived during the cut"
    assert "backlog_arrived" in run.marks, run.figures


# --- the lab controls the drills rely on ---------------------------------------------------------------


def test_cut_internet_keeps_only_the_path_to_the_router_and_a_paused_resolver_is_silent() -> None:
    require_real_backend()
    with RealWorld(regions=REGIONS_UNDER_TEST, speed=SPEED) as world:
        ns, edge = world.region_ns("us-east"), f"{plan.edge(0)}:80"
        sink = netns.run_in(world.central, lambda: socket.create_server((plan.CENTRAL, 0)))
        router = f"{plan.CENTRAL}:{sink.getsockname()[1]}"
        try:
            assert world.get(edge, ns=ns)[0] == 200
            world.cut_internet("us-east")
            with pytest.raises(OSError):  # dropped in the router: the connection times out
                world.get(edge, ns=ns, timeout=1.5)
            assert _connects(ns, router), "the region must still reach the router's own addresses"
            assert world.get(edge, ns=world.region_ns("eu-west"))[0] == 200, "other regions keep their internet"
            assert world.snapshot()["internet_cut"] == ["us-east"]
            world.reset()
            assert world.get(edge, ns=ns)[0] == 200

            public, isp = (a.split(":")[0] for a in world.resolver_addresses("eu-west"))
            world.set_resolver("eu-west", "isp", False)
            assert not _answers(world.region_ns("eu-west"), isp)
            assert _answers(world.region_ns("eu-west"), public)
        finally:
            sink.close()
    assert not [n for n in netns.list_namespaces() if n.startswith(world.netns.prefix)]


def _connects(ns: str, address: str) -> bool:
    host, port = address.rsplit(":", 1)

    def connect() -> bool:
        with socket.create_connection((host, int(port)), timeout=2.0):
            return True
    return netns.run_in(ns, connect)


def _answers(ns: str, server: str) -> bool:
    def ask() -> bool:
        try:
            dns.query.udp(dns.message.make_query("www.twitter.com", "A"), server, timeout=1.5)
        except dns.exception.Timeout:
            return False
        return True
    return netns.run_in(ns, ask)
