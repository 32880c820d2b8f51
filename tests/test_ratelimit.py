"""The /probe rate limit: token buckets per client, a bounded client table, 429 with Retry-After."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from exporter.runtime import Runtime
from exporter.web.app import make_app
from exporter.web.ratelimit import TokenBuckets
from tests.servers.http import Site


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill_at_the_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("a").allowed for _ in range(4)] == [True, True, True, False]
    refused = buckets.take("a")
    assert not refused.allowed and refused.retry_after == pytest.approx(0.5)
    assert buckets.take("b").allowed  # another client has its own bucket
    clock.now += 0.5
    assert buckets.take("a").allowed
    assert not buckets.take("a").allowed
    clock.now += 100  # refills up to the burst, not beyond
    assert [buckets.take("a").allowed for _ in range(4)] == [True, True, True, False]


def test_first_refusal_is_flagged_once_per_episode() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1.0, burst=1, clock=clock)
    assert buckets.take("a").allowed
    assert [buckets.take("a").first_refusal for _ in range(3)] == [True, False, False]
    clock.now += 1
    assert buckets.take("a").allowed
    assert buckets.take("a").first_refusal


def test_zero_rate_disables_the_limit() -> None:
    buckets = TokenBuckets(rate=0, burst=1)
    assert not buckets.enabled
    assert all(buckets.take("a").allowed for _ in range(1000))
    assert len(buckets) == 0


def test_client_table_is_bounded_and_idle_clients_are_dropped() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1.0, burst=10, max_clients=100, clock=clock)
    for i in range(10_000):
        buckets.take(f"10.0.{i // 256}.{i % 256}")
    assert len(buckets) == 100  # least recently seen evicted
    busy = "192.0.2.1"
    for _ in range(10):
        buckets.take(busy)
    assert not buckets.take(busy).allowed
    clock.now += 5  # half a refill: nobody idle long enough yet
    buckets.take("198.51.100.1")
    assert len(buckets) == 100
    clock.now += 5  # now every bucket seen before is full again: idle entries go as requests arrive
    for i in range(40):
        buckets.take(f"203.0.113.{i}")
    assert len(buckets) < 100
    assert buckets.take(busy).allowed  # an evicted client starts again with a full bucket


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "c.yml"
    path.write_text('modules: {http_2xx: {prober: http, timeout: 2s}}\n'
                    'regions: [{name: lab, resolvers: ["127.0.0.1:1"]}]\n'
                    'probe: {rate_limit: {rate: 0.5, burst: 3}}\n')
    return path


async def test_probe_answers_429_with_retry_after_and_counts_it(config: Path, site: Site,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    runtime = Runtime(str(config))
    await runtime.start()
    client = TestClient(TestServer(make_app(runtime)))
    await client.start_server()
    try:
        statuses, retry = [], []
        for _ in range(6):
            resp = await client.get("/probe", params={"target": site.url("/")})
            statuses.append(resp.status)
            retry.append(resp.headers.get("Retry-After"))
            if resp.status == 429:
                assert (await resp.text()).startswith("Probe refused: too many requests from 127.0.0.1")
        metrics = await (await client.get("/metrics")).text()  # /metrics is not limited
        assert (await client.get("/-/healthy")).status == 200
    finally:
        await client.close()
        await runtime.stop()
    assert statuses == [200, 200, 200, 429, 429, 429]
    assert retry[3:] == ["2", "2", "2"]  # one token every 2 s, rounded up to whole seconds
    assert len(site.seen) == 3
    values = {s.labels["reason"]: s.value for f in text_string_to_metric_families(metrics) for s in f.samples
              if s.name == "outage_exporter_probe_requests_refused_total"}
    assert values == {"disabled": 0, "rate_limited": 3, "not_allowed": 0, "blocked_address": 0}
    warnings = [r for r in caplog.records if r.getMessage() == "probe request refused" and r.levelname == "WARNING"]
    assert len(warnings) == 1  # one line per episode, the rest at debug level
