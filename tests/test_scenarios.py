"""Scenario files, their validation, phase lookup, and playing them against a lab world."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
import yaml

from exporter.checks import expand
from exporter.config import load_config_text
from exporter.lab import certs
from exporter.lab.recursive import ISP, PUBLIC
from exporter.lab.scenario import (
    Player,
    ScenarioError,
    builtin_names,
    load_builtin,
    load_scenario,
    load_scenario_text,
    parse_offset,
)
from exporter.lab.world import World
from exporter.probers import dns as dns_prober
from exporter.probers import http as http_prober
from exporter.probers import result as r

META_SITES = ("facebook", "messenger", "whatsapp", "instagram")
EXPECTED_SCENARIOS = {"facebook-2021-10-04", "regional-blip", "vantage-isolated", "slow-migration",
                      "cert-expiry", "healthy"}

MINIMAL = """
name: t
duration: 5m
phases:
  - at: 0s
    name: start
  - at: +1m
    name: blip
    effects:
      - edge: {service: twitter, region: eu-west, mode: unavailable}
"""


def test_every_builtin_scenario_loads():
    assert set(builtin_names()) >= EXPECTED_SCENARIOS
    for name in builtin_names():
        scenario = load_builtin(name)
        assert scenario.name == name
        assert scenario.description.strip()
        assert scenario.phases[-1].at < scenario.end


def test_facebook_scenario_is_watchable_in_about_ten_minutes():
    s = load_builtin("facebook-2021-10-04")
    assert s.start == -600 and 45 <= s.default_speed <= 50
    assert 540 <= s.wall_seconds() <= 660
    names = [p.name for p in s.phases]
    assert names[:4] == ["baseline", "edges-lose-backends", "dns-prefixes-withdrawn", "caches-drain"]
    assert names[-1] == "normal"
    assert s.phase_at(parse_offset("+5h21m")).name == "routes-return"


def test_phase_at():
    s = load_builtin("facebook-2021-10-04")
    assert s.phase_at(-601) is None
    assert s.phase_at(-600).name == "baseline"
    assert s.phase_at(-1).name == "baseline"
    assert s.phase_at(0).name == "edges-lose-backends"
    assert s.phase_at(59.9).name == "edges-lose-backends"
    assert s.phase_at(60).name == "dns-prefixes-withdrawn"
    assert s.phase_at(10 * 3600).name == "normal"


@pytest.mark.parametrize(("text", "seconds"), [
    ("0s", 0), ("0", 0), ("+1m", 60), ("-10m", -600), ("5h21m", 19260), ("+2m30s", 150), ("90s", 90)])
def test_parse_offset(text, seconds):
    assert parse_offset(text) == seconds


def _mutate(path: str, value: object) -> str:
    doc = yaml.safe_load(MINIMAL)
    target = doc
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    last = keys[-1]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return yaml.safe_dump(doc)


@pytest.mark.parametrize(("path", "value", "error"), [
    ("phases.1.effects.0.edge.mode", "down", "phases[1].effects[0].edge.mode: unknown mode 'down'"),
    ("phases.1.effects.0.edge.service", "myspace", "phases[1].effects[0].edge.service: unknown name"),
    ("phases.1.effects.0.edge.fail_ratio", 0.5, "phases[1].effects[0].edge.fail_ratio: not a parameter"),
    ("phases.1.effects.0.edge.colour", "red", "phases[1].effects[0].edge.colour: unknown key"),
    ("phases.1.effects.0", {"nameservers": {"zone": "example.com", "state": "blackhole"}},
     "phases[1].effects[0].nameservers.zone: unknown zone 'example.com'"),
    ("phases.1.effects.0", {"nameservers": {"provider": "meta", "state": "down"}},
     "phases[1].effects[0].nameservers.state: unknown state 'down'"),
    ("phases.1.effects.0", {"nameservers": {"provider": "meta", "zone": "facebook.com", "state": "up"}},
     "phases[1].effects[0].nameservers: select nameservers with exactly one of"),
    ("phases.1.effects.0", {"vantage": {"region": "us-east", "isolated": "yes"}},
     "phases[1].effects[0].vantage.isolated: expected true or false"),
    ("phases.1.effects.0", {"explode": {}}, "phases[1].effects[0]: expected a mapping with exactly one of"),
    ("phases.1.at", "1 minute", 'phases[1].at: invalid duration "1 minute"'),
    ("phases.1.at", "-1m", "phases[1].at: -1m is not after the previous phase (0s)"),
    ("phases.1.name", "", "phases[1].name: expected a non-empty string"),
    ("duration", "30s", "duration: 30s ends before the last phase starts (1m after the first)"),
    ("duration", 300, 'duration: expected a duration such as "10m"'),
    ("default_speed", 0, "default_speed: expected a number greater than 0"),
    ("phases", [], "phases: expected a non-empty list of phases"),
    ("speed", 3, "speed: unknown key"),
])
def test_invalid_scenarios_name_the_path(path, value, error):
    with pytest.raises(ScenarioError) as err:
        load_scenario_text(_mutate(path, value), source="bad.yaml")
    assert str(err.value).startswith(f"bad.yaml: {error}")


def test_invalid_edge_parameter_value_names_the_parameter():
    text = MINIMAL.replace("mode: unavailable", "mode: flapping, fail_ratio: 2")
    with pytest.raises(ScenarioError, match=r"edge\.fail_ratio: must be between 0 and 1"):
        load_scenario_text(text)


def test_missing_key_and_file_errors_name_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nphases: [{at: 0s, name: a}]\n")
    with pytest.raises(ScenarioError, match=r"broken\.yaml: scenario: missing required key 'duration'"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "absent.yaml")
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'"):
        load_builtin("nope")


async def test_check_against_the_world_names_the_path():
    async with World(regions=["eu-west"], speed=100, tls=False) as world:
        with pytest.raises(ScenarioError, match=r"phases\[1\]\.effects\[0\]\.vantage\.region: unknown region"):
            Player(load_builtin("vantage-isolated"), world)
        with pytest.raises(ScenarioError, match=r"edge\.mode: mode 'expiring' needs HTTPS"):
            Player(load_builtin("cert-expiry"), world)
        Player(load_builtin("regional-blip"), world)  # eu-west only: fine


def _meta_edges(snapshot: dict) -> set[str]:
    return {mode for key, mode in snapshot["edges"].items() if key.split("/")[0] in META_SITES}


async def test_playing_facebook_applies_each_phase_in_order():
    scenario = load_builtin("facebook-2021-10-04")
    async with World(speed=20000, tls=False) as world:  # 7h40m of story in about 1.4 s
        player = Player(scenario, world)
        seen: list[tuple[str, dict, float]] = []
        loop = asyncio.get_running_loop()
        player.add_listener(lambda p: seen.append((p.name, world.snapshot(), loop.time())))
        started = loop.time()
        await asyncio.wait_for(player.run(), 10)
        elapsed = loop.time() - started

    assert [name for name, _, _ in seen] == [p.name for p in scenario.phases]
    assert player.current_phase is not None and player.current_phase.name == "normal"
    assert elapsed >= scenario.duration / 20000
    for (_, _, t), phase in zip(seen, scenario.phases, strict=True):  # on time, never early
        assert t - started >= (phase.at - scenario.start) / 20000 - 0.01
    state = {name: snap for name, snap, _ in seen}
    meta_ns = {n: s for n, s in state["baseline"]["nameservers"].items() if "facebook" in n or "whatsapp" in n}
    assert set(meta_ns.values()) == {"up"}

    assert _meta_edges(state["baseline"]) == {"healthy"}
    assert _meta_edges(state["edges-lose-backends"]) == {"unavailable"}
    assert set(state["edges-lose-backends"]["nameservers"].values()) == {"up"}
    withdrawn = state["dns-prefixes-withdrawn"]["nameservers"]
    assert {withdrawn[n] for n in meta_ns} == {"blackhole"}
    assert {s for n, s in withdrawn.items() if n not in meta_ns} == {"up"}  # instagram's DNS host and others
    assert state["caches-drain"] == {**state["dns-prefixes-withdrawn"], "edges": state["caches-drain"]["edges"]}
    assert set(state["routes-return"]["nameservers"].values()) == {"up"}
    assert _meta_edges(state["routes-return"]) == {"unavailable"}
    assert _meta_edges(state["staged-recovery-1"]) == {"flapping"}
    assert state["staged-recovery-3"]["edges"]["instagram/eu-west"] == "healthy"
    assert state["staged-recovery-3"]["edges"]["whatsapp/us-east"] == "flapping"
    assert set(state["normal"]["edges"].values()) == {"healthy"}
    for _, snap, _ in seen:
        assert {m for k, m in snap["edges"].items() if k.startswith("control-")} == {"healthy"}
        assert snap["isolated"] == [] and snap["parent"] == "up"


async def test_player_story_time_and_stop():
    async with World(speed=100, tls=False) as world:
        player = Player(load_builtin("regional-blip"), world)  # 5 min of story = 3 s here
        phases: list[str] = []
        player.add_listener(lambda p: phases.append(p.name))
        player.add_listener(lambda p: 1 / 0)  # a broken listener does not stop the story
        player.start()
        await asyncio.sleep(0.9)  # story +90 s: inside the blip
        assert 80 <= player.story_time() <= 110
        assert phases == ["baseline", "eu-west-unavailable"]
        assert world.edge("twitter", "eu-west").setting.mode == "unavailable"
        assert world.edge("twitter", "us-east").setting.mode == "healthy"
        await player.stop()
    assert player.current_phase.name == "eu-west-unavailable"


async def test_vantage_scenario_isolates_and_reconnects():
    async with World(speed=100, tls=False) as world:
        player = Player(load_builtin("vantage-isolated"), world)
        assert (await player.seek(parse_offset("+2m"))).name == "us-east-isolated"
        assert world.isolated_regions() == ["us-east"]
        assert (await player.seek(parse_offset("+5m"))).name == "us-east-reconnected"
        assert world.isolated_regions() == []


# --- probing the replay with the exporter's own probers --------------------------------------------------

FAST_STYLES = {"public": replace(PUBLIC, attempt_timeout=0.3), "isp": replace(ISP, attempt_timeout=0.5)}
PROBE_TIMEOUT = 1.5  # below the ISP resolver's 4 x 0.5 s, as the 4 s default is below its 4 x 2 s


async def _probe_all(world: World, services: tuple[str, ...]) -> dict[tuple[str, str, str, str], r.ProbeResult]:
    config = load_config_text(yaml.safe_dump(world.exporter_config()), source="lab")
    checks = [c for c in expand(config) if c.service in services and c.prober in ("dns", "http")]
    loop = asyncio.get_running_loop()

    async def run(check):
        prober = dns_prober if check.prober == "dns" else http_prober
        check = replace(check, timeout=PROBE_TIMEOUT)
        return await prober.probe(check, deadline=loop.time() + PROBE_TIMEOUT)

    try:
        results = await asyncio.gather(*(run(c) for c in checks))
    finally:
        await http_prober.close()
    style = {addr: s for reg in world.region_names
             for addr, s in zip(world.resolver_addresses(reg), ("public", "isp"), strict=True)}
    return {(c.service, c.region, c.check, style.get(c.resolver, "")): res
            for c, res in zip(checks, results, strict=True)}


async def test_probers_see_the_dns_phase_as_in_2021():
    scenario = load_builtin("facebook-2021-10-04")
    async with World(speed=100, styles=FAST_STYLES) as world:
        player = Player(scenario, world)
        assert (await player.seek(parse_offset("+6m"))).name == "caches-drain"
        results = await _probe_all(world, ("facebook", "instagram", "control-a", "control-b"))

    http = world.scheme
    for region in world.region_names:
        assert results[("facebook", region, "dns", "public")].reason == r.DNS_SERVFAIL
        assert results[("facebook", region, "dns", "isp")].reason == r.DNS_TIMEOUT
        assert results[("facebook", region, http, "")].reason in (r.DNS_SERVFAIL, r.DNS_TIMEOUT)
        assert results[("instagram", region, "dns", "public")].success
        assert results[("instagram", region, "dns", "isp")].success
        insta = results[("instagram", region, http, "")]
        assert insta.reason == r.HTTP_STATUS and insta.details[r.D_HTTP_STATUS] == 503
    controls = {k: v for k, v in results.items() if k[0].startswith("control-")}
    assert controls and all(v.success for v in controls.values())
    assert all(v.reason != r.DNS_NXDOMAIN for v in results.values())


async def test_probers_see_cached_dns_and_503_when_the_edges_fail_first():
    scenario = load_builtin("facebook-2021-10-04")
    async with World(speed=100, styles=FAST_STYLES, tls=False) as world:
        player = Player(scenario, world)
        await player.seek(parse_offset("-10m"))
        assert all(v.success for v in (await _probe_all(world, META_SITES)).values())  # caches warm
        await player.seek(parse_offset("+1m"))  # nameservers just withdrawn; answers still cached
        results = await _probe_all(world, META_SITES)
    for (service, _, check, _), res in results.items():
        if check == "dns":
            assert res.success, (service, res.reason)
        else:
            assert res.reason == r.HTTP_STATUS and res.details[r.D_HTTP_STATUS] == 503


@pytest.mark.skipif(not certs.available(), reason="the openssl command is not installed")
async def test_probers_see_certificate_expiry():
    async with World(speed=100) as world:
        player = Player(load_builtin("cert-expiry"), world)
        await player.seek(parse_offset("+3m"))
        results = await _probe_all(world, ("twitter",))
        expiry = results[("twitter", "eu-west", "https", "")].details[r.D_CERT_EXPIRY]
        await player.seek(parse_offset("+5m"))
        expired = await _probe_all(world, ("twitter",))
    assert 1.9 < (expiry - time.time()) / 86400 <= 2.0
    assert expired[("twitter", "us-east", "https", "")].reason == r.TLS_CERT_EXPIRED


# --- every scenario, phase by phase: what each service x region must look like ----------------------------

ALL = ("facebook", "messenger", "whatsapp", "instagram", "twitter", "telegram", "control-a", "control-b")
TIMEOUTS = {r.DNS_TIMEOUT, r.CONN_TIMEOUT, r.TIMEOUT}

# scenario -> [(offset, {(service, region|"*"): expectation})]; an expectation is "ok", "fail" (any reason),
# or a set of allowed reasons; (service, region) pairs not listed must be "ok" unless the phase is marked
# partial (flapping phases, where only the listed pairs are asserted).
PHASE_EXPECTATIONS = {
    "healthy": [("0s", {})],
    "regional-blip": [
        ("0s", {}),
        ("+1m", {("twitter", "eu-west"): {r.HTTP_STATUS}}),
        ("+2m30s", {}),
    ],
    "vantage-isolated": [
        ("0s", {}),
        ("+1m", {(s, "us-east"): "fail" for s in ALL}),  # controls too: the vantage itself is cut off
        ("+4m", {}),
    ],
    "slow-migration": [
        ("+2m", {}),  # latency only: still succeeds within the timeout
        ("+15m", {}),
    ],
    "facebook-2021-10-04": [
        ("-10m", {}),
        ("+7h20m", {}),
    ],
}


def _verdict(results, service, region):
    return [res for (s, reg, check, _), res in results.items()
            if s == service and reg == region and check in ("dns", "http", "https")]


@pytest.mark.parametrize(("scenario", "offset", "expect"), [
    (name, offset, expect) for name, phases in PHASE_EXPECTATIONS.items() for offset, expect in phases
], ids=lambda v: v if isinstance(v, str) else "")
async def test_each_phase_looks_as_it_promises(scenario, offset, expect):
    async with World(speed=100, styles=FAST_STYLES) as world:
        await Player(load_builtin(scenario), world).seek(parse_offset(offset))
        world.flush_caches()
        results = await _probe_all(world, ALL)
    assert all(v.reason != r.DNS_NXDOMAIN for v in results.values()), "nothing in the lab is NXDOMAIN"
    for service in ALL:
        for region in world.region_names:
            want = expect.get((service, region), expect.get((service, "*"), "ok"))
            got = _verdict(results, service, region)
            assert got, (service, region)
            if want == "ok":
                assert all(v.success for v in got), (service, region, [v.reason for v in got])
            elif want == "fail":
                assert all(not v.success for v in got), (service, region)
                assert all(v.reason in TIMEOUTS | {r.CONN_REFUSED, r.CONN_RESET} for v in got), \
                    [v.reason for v in got]
            else:
                assert any(not v.success for v in got), (service, region)
                assert {v.reason for v in got if not v.success} <= want, (service, region)


async def test_slow_migration_peak_is_slow_and_partly_failing():
    async with World(speed=100, tls=False) as world:
        await Player(load_builtin("slow-migration"), world).seek(parse_offset("+5m"))
        results = await _probe_all(world, ("telegram", "twitter"))
    tg = [v for (s, _, c, _), v in results.items() if s == "telegram" and c == "http"]
    tw = [v for (s, _, c, _), v in results.items() if s == "twitter" and c == "http"]
    assert min(v.duration_seconds for v in tg) > max(v.duration_seconds for v in tw) + 0.3
