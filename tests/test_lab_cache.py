"""exporter.lab.cache: a resolver cache whose TTLs run on story time, with serve-stale and zone cuts."""

from __future__ import annotations

import dns.name
import dns.rcode
import dns.rrset

from exporter.lab.cache import Cache, Entry

ANSWER = dns.rrset.from_text("shop.test.", 300, "IN", "A", "127.20.1.1")
START = 1000.0  # loop seconds; each test moves its own clock by hand


def test_a_ttl_runs_on_story_time_and_counts_down_in_story_seconds() -> None:
    now = [START]
    cache = Cache(speed=30, clock=lambda: now[0])
    stored = cache.put("shop", Entry(dns.rcode.NOERROR, (ANSWER,)), ttl=300)
    assert cache.remaining(stored) == 300
    now[0] += 5  # 150 story seconds
    assert cache.get("shop") == stored and cache.remaining(stored) == 150
    now[0] += 5
    assert cache.get("shop") is None and len(cache) == 0


def test_an_expired_answer_is_served_stale_within_the_window_only() -> None:
    now = [START]
    cache = Cache(speed=10, clock=lambda: now[0])
    cache.put("shop", Entry(dns.rcode.NOERROR, (ANSWER,)), ttl=10)
    now[0] += 1.5
    assert cache.get("shop") is None
    assert cache.stale("shop", window=30) is not None  # expired 5 story seconds ago
    now[0] += 3
    assert cache.stale("shop", window=30) is None  # 35 story seconds ago
    assert cache.put("miss", Entry(dns.rcode.SERVFAIL), ttl=0).rcode == dns.rcode.SERVFAIL
    assert cache.get("miss") is None  # a zero TTL is not stored


def test_the_deepest_unexpired_zone_cut_is_followed() -> None:
    now = [START]
    cache = Cache(speed=1, clock=lambda: now[0])
    test_ns = ((dns.name.from_text("a.nic.test"), "127.1.0.1"),)
    shop_ns = ((dns.name.from_text("ns1.shop.test"), None),)
    cache.put_cut(dns.name.from_text("test"), test_ns, ttl=100)
    cache.put_cut(dns.name.from_text("shop.test"), shop_ns, ttl=10)
    www = dns.name.from_text("www.shop.test")
    assert cache.closest_cut(www).servers == shop_ns  # type: ignore[union-attr]
    now[0] += 20
    assert cache.closest_cut(www).servers == test_ns  # type: ignore[union-attr]
    assert cache.closest_cut(dns.name.from_text("example.org")) is None
    cache.clear()
    assert cache.closest_cut(www) is None
