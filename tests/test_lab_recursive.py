"""The simulated recursive resolvers remember failures the way real ones do: backoff and serve-stale."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from exporter.lab.recursive import ISP, PUBLIC, STALE_TTL
from exporter.lab.scenario import ScenarioError, load_builtin, load_scenario_text
from exporter.lab.world import World

SPEED = 100  # story seconds per wall second: a 20 s story hold-down lasts 0.2 s


def styles(**public: float) -> dict:
    return {"public": replace(PUBLIC, attempt_timeout=0.2, **public), "isp": replace(ISP, attempt_timeout=0.3)}


async def ask(address: str, name: str, timeout: float = 2.0) -> dns.message.Message:
    host, port = address.rsplit(":", 1)
    return await dns.asyncquery.udp(dns.message.make_query(name, "A"), host, port=int(port), timeout=timeout)


async def _seconds_until_it_resolves(world: World, address: str, limit: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if (await ask(address, "www.facebook.com")).rcode() == dns.rcode.NOERROR:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    return float("inf")


async def _outage(world: World, address: str, seconds: float) -> None:
    """Keep asking during an outage of meta's nameservers, as probes do."""
    world.set_nameservers("blackhole", operator="meta")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert (await ask(address, "www.facebook.com")).rcode() == dns.rcode.SERVFAIL
        await asyncio.sleep(0.05)
    world.set_nameservers("up", operator="meta")


async def test_a_long_outage_leaves_a_recovery_tail_after_the_nameservers_answer_again():
    # hold-down 20 story s (0.2 s), doubling to 320 story s (3.2 s): a 2.5 s outage backs off to 1.6 s.
    async with World(speed=SPEED, styles=styles(holddown=20.0, holddown_max=320.0), tls=False) as world:
        public = world.resolver_addresses("eu-west")[0]
        await _outage(world, public, 2.5)
        tail = await _seconds_until_it_resolves(world, public, 5.0)
    assert 0.5 < tail < 3.5, tail


async def test_without_backoff_the_resolver_recovers_within_one_hold_down():
    async with World(speed=SPEED, styles=styles(holddown=20.0, holddown_max=20.0), tls=False) as world:
        public = world.resolver_addresses("eu-west")[0]
        await _outage(world, public, 2.5)
        tail = await _seconds_until_it_resolves(world, public, 5.0)
    assert tail < 0.6, tail  # at most the 0.2 s hold-down plus the 0.3 s SERVFAIL cache


async def test_isp_resolver_keeps_no_memory_and_recovers_at_once():
    async with World(speed=SPEED, styles=styles(holddown=20.0, holddown_max=320.0), tls=False) as world:
        isp = world.resolver_addresses("eu-west")[1]
        world.set_nameservers("blackhole", operator="meta")
        with pytest.raises(dns.exception.Timeout):
            await ask(isp, "www.facebook.com", timeout=0.5)
        world.set_nameservers("up", operator="meta")
        await asyncio.sleep(1.5)  # the lookup in flight gives up; its SERVFAIL (0.3 s) expires
        assert (await ask(isp, "www.facebook.com")).rcode() == dns.rcode.NOERROR


@pytest.mark.parametrize("stale", [True, False], ids=["serve-stale", "no-serve-stale"])
async def test_serve_stale_answers_the_expired_address_instead_of_servfail(stale: bool):
    async with World(speed=300, styles=styles(), tls=False) as world:  # a 300 s TTL lasts 1 s
        if stale:
            world.set_serve_stale("eu-west", 3600.0)
        public = world.resolver_addresses("eu-west")[0]
        fresh = await ask(public, "www.facebook.com")
        assert fresh.rcode() == dns.rcode.NOERROR
        world.set_nameservers("blackhole", operator="meta")
        await asyncio.sleep(1.2)
        late = await ask(public, "www.facebook.com")
        if stale:
            assert late.rcode() == dns.rcode.NOERROR
            assert [r.to_text() for r in late.answer[0]] == [r.to_text() for r in fresh.answer[0]]
            assert late.answer[0].ttl <= STALE_TTL
        else:
            assert late.rcode() == dns.rcode.SERVFAIL
        other_region = await ask(world.resolver_addresses("us-east")[0], "www.facebook.com")
        assert other_region.rcode() == dns.rcode.SERVFAIL  # only eu-west serves stale


async def test_reset_turns_serve_stale_off_again():
    async with World(speed=300, styles=styles(), tls=False) as world:
        world.set_serve_stale("all", 3600.0)
        world.reset()
        assert all(r.style.serve_stale == 0 for r in world.resolvers.values())


def test_recovery_tail_scenario_and_resolvers_effect_load():
    scenario = load_builtin("dns-recovery-tail")
    assert [p.name for p in scenario.phases][-2:] == ["nameservers-answer-again", "resolved"]
    text = """name: stale
description: resolvers serve stale
duration: 10m
default_speed: 10
phases:
  - at: 0s
    name: stale
    effects:
      - resolvers: {region: eu-west, serve_stale: 1d}
"""
    loaded = load_scenario_text(text, source="s.yaml")
    assert loaded.phases[0].effects[0].serve_stale == 86400.0
    with pytest.raises(ScenarioError, match=r"s.yaml: phases\[0\].effects\[0\].resolvers.serve_stale: invalid"):
        load_scenario_text(text.replace("1d", "forever"), source="s.yaml")
    with pytest.raises(ScenarioError, match=r"resolvers.colour: unknown key"):
        load_scenario_text(text.replace("serve_stale: 1d", "serve_stale: 1d, colour: red"), source="s.yaml")
