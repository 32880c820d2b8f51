"""The lab world at high speed, probed on schedule: authoritative checks see a DNS black hole at once, while
recursive checks through caching resolvers stay green until the TTL runs out; two-path HTTP then tells
"DNS gone, origin alive"; an isolated vantage makes its service results inconclusive instead of failed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.checks import Check, expand
from exporter.config import load_config_text
from exporter.exposition import render_scheduled
from exporter.lab.recursive import ISP, PUBLIC
from exporter.lab.world import World
from exporter.probers import PROBERS, http
from exporter.probers import result as r
from exporter.results import ResultStore
from exporter.scheduler import Scheduler

SPEED = 100  # the 300 s record TTL lasts 3 wall seconds
FAST_STYLES = {"public": replace(PUBLIC, attempt_timeout=0.25), "isp": replace(ISP, attempt_timeout=0.5)}


def lab_checks(world: World, services: tuple[str, ...], *, interval: str, timeout: str) -> list[Check]:
    raw = world.exporter_config()
    raw["defaults"].update(interval=interval, timeout=timeout)
    for module in raw["modules"].values():
        module["timeout"] = timeout
    config = load_config_text(yaml.safe_dump(raw), source="lab")
    return [c for c in expand(config) if c.service in services]


class Watch:
    """Every result the store records, kept with its check (polling the store's latest results)."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store
        self.seen: list[tuple[Check, r.ProbeResult]] = []
        self._last: dict[str, r.ProbeResult] = {}

    def poll(self) -> None:
        for check, state in self.store.items():
            if state.last is not None and self._last.get(check.key) is not state.last:
                self._last[check.key] = state.last
                self.seen.append((check, state.last))

    def after(self, t: float, keep: Callable[[Check], bool]) -> list[tuple[Check, r.ProbeResult]]:
        return [(c, res) for c, res in self.seen if res.finished_at > t and keep(c)]

    async def until(self, condition: Callable[[], bool], timeout: float = 8.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if condition():
                return
            assert time.monotonic() < deadline, "condition not reached in time"
            await asyncio.sleep(0.02)


def is_dns(style: str, world: World) -> Callable[[Check], bool]:
    index = ("public", "isp").index(style)
    addresses = {world.resolver_addresses(region)[index] for region in world.region_names}
    return lambda c: c.check == "dns" and c.resolver in addresses


def is_check(name: str) -> Callable[[Check], bool]:
    return lambda c: c.check == name


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == name]


@pytest.fixture
async def running():
    started: list[Scheduler] = []

    async def start(checks: list[Check]) -> tuple[ResultStore, Watch]:
        store = ResultStore()
        scheduler = Scheduler(store, PROBERS, concurrency=64)
        await scheduler.start(checks)
        started.append(scheduler)
        return store, Watch(store)

    yield start
    for scheduler in started:
        await scheduler.stop()
    await http.close()


async def test_blackholed_nameservers_turn_authoritative_checks_red_before_cached_dns(running):
    async with World(speed=SPEED, styles=FAST_STYLES, tls=False) as world:
        checks = lab_checks(world, ("facebook",), interval="500ms", timeout="400ms")
        store, watch = await running(checks)
        public, isp = is_dns("public", world), is_dns("isp", world)
        await watch.until(lambda: all(s.last is not None and s.last.success for _, s in store.items()))

        world.flush_caches()  # start from freshly filled caches, so their expiry is known
        flushed = time.time()
        fresh = lambda: {c.key for c, res in watch.after(flushed, public) if res.success}  # noqa: E731
        await watch.until(lambda: len(fresh()) == len(world.region_names))
        world.set_nameservers("blackhole", zone="facebook.com")
        blackholed = time.time()
        cache_expires = flushed + 300 / SPEED  # no cache entry is older than the flush

        # at the next probe the authoritative checks are red, every nameserver timing out...
        regions = set(world.region_names)  # every region's latest result must be one of those checked
        await watch.until(lambda: {c.region for c, _ in watch.after(blackholed + 0.05, is_check("authns"))} == regions)
        for check, res in watch.after(blackholed + 0.05, is_check("authns")):
            assert (res.success, res.reason) == (False, r.DNS_TIMEOUT), check.region
            assert {(n.up, n.reason) for n in res.zone.nameservers} == {(False, r.DNS_TIMEOUT)}
            assert res.zone.addresses == 4 and res.zone.answering == 0
        # ...while the recursive checks still answer from the resolvers' caches
        still_cached = [(c, res) for c, res in watch.after(blackholed, public) if res.finished_at < cache_expires]
        assert still_cached and all(res.success for _, res in still_cached)
        assert all(0 < res.details[r.D_DNS_MIN_TTL] < 300 for _, res in still_cached)
        text = render_scheduled(store)

        # once the TTL has run out they fail too: a fast SERVFAIL from the public resolvers
        await watch.until(lambda: len({c.key for c, _ in watch.after(cache_expires + 0.5, public)}) == 2)
        await watch.until(lambda: len({c.key for c, _ in watch.after(cache_expires + 0.5, isp)}) == 2)
        assert {res.reason for _, res in watch.after(cache_expires + 0.5, public)} == {r.DNS_SERVFAIL}
        # the ISP-style resolvers chase the silent nameservers one by one: the probes time out first
        isp_reasons = [res.reason for _, res in watch.after(cache_expires + 0.5, isp)]
        assert r.DNS_TIMEOUT in isp_reasons and set(isp_reasons) <= {r.DNS_TIMEOUT, r.DNS_SERVFAIL}
        # and two-path HTTP shows the edges still serve at the address DNS gave before
        await watch.until(lambda: {c.region for c, _ in watch.after(cache_expires + 0.5, is_check("http"))} == regions)
        for _, res in watch.after(cache_expires + 0.5, is_check("http")):
            assert not res.success and res.reason in (r.DNS_SERVFAIL, r.DNS_TIMEOUT)
            assert (res.details[r.D_PINNED_SUCCESS], res.details[r.D_PINNED_STATUS]) == (1, 200)
            assert any("DNS gone, origin alive" in line for line in res.log)
        later = render_scheduled(store)

    up = {(labels["region"], labels["nameserver"], labels["transport"]): value
          for labels, value in samples(text, "outage_dns_authoritative_up")}
    assert len(up) == 2 * 4 * 2 and set(up.values()) == {0.0}
    reasons = {labels["reason"] for labels, _ in samples(text, "outage_dns_authoritative_failure_info")}
    assert reasons == {"dns_timeout"}
    assert {v for _, v in samples(text, "outage_dns_zone_nameservers_answering")} == {0.0}
    paths = {(labels["region"], labels["path"]): v for labels, v in samples(later, "outage_http_path_success")}
    assert paths == {(region, path): (1.0 if path == "pinned" else 0.0)
                     for region in world.region_names for path in ("resolved", "pinned")}


async def test_an_isolated_vantage_makes_its_service_results_inconclusive(running):
    async with World(speed=SPEED, styles=FAST_STYLES, tls=False) as world:
        checks = lab_checks(world, ("twitter", "control-a", "control-b"), interval="500ms", timeout="400ms")
        store, watch = await running(checks)
        await watch.until(lambda: all(s.last is not None and s.last.success for _, s in store.items()))
        assert all(v.healthy for v in store.vantages())

        world.isolate_region("us-east")
        await watch.until(lambda: not store.vantage("us-east").healthy)
        judged = time.time()
        service = lambda c: c.service == "twitter" and c.region == "us-east" and c.check != "authns"  # noqa: E731
        await watch.until(lambda: len({c.key for c, _ in watch.after(judged, service)}) == 3)
        failures_then = {c.key: dict(s.failures or {}) for c, s in store.items()}
        await watch.until(lambda: all(len([1 for c, _ in watch.after(judged, service) if c.key == k]) >= 2
                                      for k in {c.key for c in checks if service(c)}))
        verdict = store.vantage("us-east")
        assert store.vantage("eu-west").healthy
        text = render_scheduled(store)

    for _, res in watch.after(judged, service):
        assert not res.success  # the raw result stays a failure (probe_success 0)
    for check, state in store.items():
        if service(check):
            assert state.inconclusive and state.inconclusive_total >= 1
            assert dict(state.failures or {}) == failures_then[check.key]  # no new service failures counted
    assert verdict.controls == 8 and len(verdict.failing) == 6  # dns x2 and http of both controls; not authns
    inconclusive = {(labels["region"], labels["check"], labels["resolver"]): v
                    for labels, v in samples(text, "outage_probe_inconclusive") if labels["service"] == "twitter"}
    assert {k: v for k, v in inconclusive.items() if k[0] == "us-east" and k[1] != "authns"} == {
        ("us-east", "dns", world.resolver_addresses("us-east")[0]): 1.0,
        ("us-east", "dns", world.resolver_addresses("us-east")[1]): 1.0,
        ("us-east", "http", ""): 1.0,
    }
    assert all(v == 0.0 for k, v in inconclusive.items() if k[0] == "eu-west")
    healthy = {labels["region"]: v for labels, v in samples(text, "outage_vantage_healthy")}
    assert healthy == {"eu-west": 1.0, "us-east": 0.0}
    failing = {(labels["service"], labels["check"]) for labels, _ in
               samples(text, "outage_vantage_failing_control_info") if labels["region"] == "us-east"}
    assert failing == {("control-a", "dns"), ("control-a", "http"), ("control-b", "dns"), ("control-b", "http")}
