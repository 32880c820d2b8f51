"""Authoritative checks against a real local delegation: discovery, per-nameserver verdicts, NS set changes."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import textwrap
import time

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter import discovery
from exporter.checks import Check, expand
from exporter.config import load_config_text
from exporter.config.model import AuthoritativeCheck, Resolver, StaticNameserver
from exporter.exposition import render_scheduled
from exporter.probers import authoritative
from exporter.probers import result as r
from exporter.results import ResultStore
from exporter.scheduler import Scheduler
from tests.helpers.factories import make_check
from tests.servers.delegation import SERIAL, start_delegation

ZONE = "example.test"
TIMEOUT = 0.6


@pytest.fixture
async def delegation():
    d = await start_delegation(ZONE, ["ns1", "ns2", "ns3", "ns4"], records={"www.example.test.": "127.0.0.80"})
    try:
        yield d
    finally:
        await d.stop()


def zone_check(d, *, key: str = "authns", resolvers: tuple[Resolver, ...] | None = None, **settings) -> Check:
    settings.setdefault("parents", (Resolver(d.parent_address, "127.77.0.1", d.port),))
    settings.setdefault("ip_protocols", ("ip4",))
    auth = AuthoritativeCheck(zone=ZONE, port=d.port, **settings)
    check = make_check(key, service="example", region="eu", authoritative=auth, timeout=TIMEOUT)
    return check if resolvers is None else dataclasses.replace(check, resolvers=resolvers)


async def run(check: Check, timeout: float = TIMEOUT) -> r.ProbeResult:
    loop = asyncio.get_running_loop()
    return await authoritative.probe(check, deadline=loop.time() + timeout)


def by_name(result: r.ProbeResult) -> dict[tuple[str, str], r.NameserverResult]:
    assert result.zone is not None
    return {(n.nameserver.split(".")[0], n.transport): n for n in result.zone.nameservers}


# --- one probe, every kind of nameserver trouble ---------------------------------------------------------


async def test_each_nameserver_address_and_transport_is_judged_on_its_own(delegation):
    d = delegation
    d.nameserver("ns1").mode = "blackhole"
    d.nameserver("ns2").mode = "refuse"
    d.nameserver("ns3").serial = SERIAL + 1
    d.nameserver("ns4").mode = "noaa"
    res = await run(zone_check(d, resolvers=(d.resolver,)))

    ns = by_name(res)
    assert set(ns) == {(f"ns{i}", t) for i in range(1, 5) for t in ("udp", "tcp")}
    for transport in ("udp", "tcp"):
        silent = ns[("ns1", transport)]
        assert (silent.up, silent.reason, silent.rcode, silent.aa, silent.serial) == (
            False, r.DNS_TIMEOUT, None, None, None)
        assert silent.duration_seconds >= TIMEOUT * 0.8  # waited for it until the deadline
        refused = ns[("ns2", transport)]
        assert (refused.up, refused.reason, refused.rcode, refused.aa) == (False, r.DNS_REFUSED, 5, False)
        lagging = ns[("ns3", transport)]
        assert (lagging.up, lagging.reason, lagging.serial, lagging.aa) == (True, None, SERIAL + 1, True)
        lame = ns[("ns4", transport)]
        assert (lame.up, lame.reason, lame.rcode, lame.aa, lame.serial) == (
            False, r.DNS_NOT_AUTHORITATIVE, 0, False, SERIAL)
    zone = res.zone
    assert (zone.addresses, zone.answering, zone.serials_agree) == (4, 1, True)  # only ns3 answers
    assert not res.success and res.reason in (r.DNS_TIMEOUT, r.DNS_REFUSED, r.DNS_NOT_AUTHORITATIVE)
    assert {n.address for n in zone.nameservers} == {f"127.77.1.{i}:{d.port}" for i in range(1, 5)}


async def test_serials_that_differ_among_answering_nameservers(delegation):
    d = delegation
    d.nameserver("ns3").serial = SERIAL + 1
    res = await run(zone_check(d))
    assert res.success and res.zone.answering == 4 and res.zone.serials_agree is False
    assert {n.serial for n in res.zone.nameservers} == {SERIAL, SERIAL + 1}
    assert any("serials differ" in line for line in res.log)


async def test_majority_decides_and_the_commonest_reason_is_reported(delegation):
    d = delegation
    d.nameserver("ns1").mode = "refuse"
    assert (await run(zone_check(d, key="a"))).success  # 3 of 4
    d.nameserver("ns2").mode = "refuse"
    res = await run(zone_check(d, key="b"))
    assert (res.success, res.reason, res.zone.answering) == (False, r.DNS_REFUSED, 2)  # 2 of 4 is no majority


async def test_query_names_are_asked_on_every_nameserver(delegation):
    d = delegation
    ok = await run(zone_check(d, key="a", query_names=("www.example.test",)))
    assert ok.success and all(n.up for n in ok.zone.nameservers)
    res = await run(zone_check(d, key="b", query_names=("www.example.test", "gone.example.test")))
    assert {n.reason for n in res.zone.nameservers} == {r.DNS_NXDOMAIN}
    assert all(n.serial == SERIAL and n.rcode == 0 for n in res.zone.nameservers)  # the SOA itself was fine
    assert res.reason == r.DNS_NXDOMAIN


async def test_one_transport_is_enough_for_an_address_to_answer(delegation):
    d = delegation
    res = await run(zone_check(d, transports=("tcp",)))
    assert res.success and {n.transport for n in res.zone.nameservers} == {"tcp"}


# --- discovery -------------------------------------------------------------------------------------------


async def test_discovery_merges_the_resolvers_answer_and_the_parents_delegation_with_glue(delegation):
    d = delegation
    check = zone_check(d, resolvers=(d.resolver,))
    res = await run(check)
    assert res.success and res.zone.discovery_success is True and res.zone.set_changes == 0
    assert res.zone.last_discovery == pytest.approx(time.time(), abs=5)
    plan = discovery.plans().plan(check, asyncio.get_running_loop().time())
    assert set(plan.found.answers) == {discovery.SOURCE_RESOLVERS, discovery.SOURCE_PARENT}
    assert plan.found.addresses == {f"ns{i}.example.test": (f"127.77.1.{i}",) for i in range(1, 5)}
    assert any(f"delegation of {ZONE} from parent {d.parent_address}" in line for line in res.log)


async def test_parent_servers_are_found_through_the_resolvers_when_not_configured(delegation):
    d = delegation
    res = await run(zone_check(d, parents=(), resolvers=(d.resolver,)))
    assert res.success and res.zone.addresses == 4
    assert any(f"parent zone test: 127.77.0.1:{d.port}" in line for line in res.log)


async def test_nameservers_without_glue_are_looked_up_through_the_resolvers(delegation):
    d = delegation
    check = zone_check(d, rediscover_interval=0.05, resolvers=(d.resolver,))
    assert (await run(check)).success  # the resolver learns the zone cut
    d.parent.state = "refuse"  # no delegation, hence no glue, this time: only the resolvers' answer
    before = d.resolver_handler.client_queries
    await asyncio.sleep(0.06)
    res = await run(check)
    plan = discovery.plans().plan(check, asyncio.get_running_loop().time())
    assert res.success and res.zone.discovery_success is True and res.zone.set_changes == 0
    assert plan.found.addresses == {f"ns{i}.example.test": (f"127.77.1.{i}",) for i in range(1, 5)}
    assert d.resolver_handler.client_queries - before == 1 + 4  # NS, then A of each name
    assert any("delegation of example.test from the parent failed: dns_refused" in line for line in res.log)
    assert not any("no address" in line for line in res.log)


async def test_a_zone_the_parent_does_not_delegate(delegation):
    d = delegation
    auth = AuthoritativeCheck(zone="absent.test", parents=(Resolver(d.parent_address, "127.77.0.1", d.port),),
                              port=d.port, ip_protocols=("ip4",))
    check = make_check("gone", authoritative=auth, timeout=TIMEOUT)
    res = await run(dataclasses.replace(check, resolvers=(d.resolver,)))
    assert (res.success, res.reason, res.zone.addresses, res.zone.discovery_success) == (
        False, r.DNS_NXDOMAIN, 0, False)


async def test_static_nameservers_skip_discovery(delegation):
    d = delegation
    static = (StaticNameserver("ns1.example.test", "127.77.1.1", d.port), StaticNameserver("", "127.77.1.2", d.port))
    res = await run(zone_check(d, parents=(), nameservers=static))
    assert res.success and d.parent.state == "up"
    assert {(n.nameserver, n.address) for n in res.zone.nameservers} == {
        ("ns1.example.test", f"127.77.1.1:{d.port}"), (f"127.77.1.2:{d.port}", f"127.77.1.2:{d.port}")}
    assert (res.zone.discovery_success, res.zone.last_discovery, res.zone.set_changes) == (None, 0.0, 0)
    assert d.resolver_handler.client_queries == 0


async def test_discovery_is_repeated_only_every_rediscover_interval(delegation):
    d = delegation
    check = zone_check(d, rediscover_interval=3600.0)
    queries = d.nameserver("ns1").queries
    for _ in range(4):
        assert (await run(check)).success
    assert d.nameserver("ns1").queries - queries == 4 * 2  # SOA over udp and tcp per probe, nothing more
    plan = discovery.plans().plan(check, asyncio.get_running_loop().time())
    first = plan.discovered_at
    await run(check)
    assert plan.discovered_at == first
    assert not plan.due(asyncio.get_running_loop().time())


async def test_a_failed_rediscovery_keeps_the_set_and_says_so(delegation):
    d = delegation
    check = zone_check(d, rediscover_interval=0.05, resolvers=(d.resolver,))
    assert (await run(check)).zone.discovery_success is True
    d.parent.state = "blackhole"
    d.nameserver("ns1").mode = "blackhole"  # the resolver's NS answer would come from ns1..ns4: all silent
    for short in ("ns2", "ns3", "ns4"):
        d.nameserver(short).mode = "blackhole"
    d.resolver_handler.flush()
    await asyncio.sleep(0.06)
    res = await run(check)
    assert res.zone.discovery_success is False and res.zone.addresses == 4  # still asking the known four
    assert res.reason == r.DNS_TIMEOUT and res.zone.set_changes == 0


async def test_a_changed_nameserver_set_is_counted_logged_and_probed_from_the_next_probe(delegation, caplog):
    d = delegation
    check = zone_check(d, rediscover_interval=0.05, resolvers=(d.resolver,))
    first = await run(check)
    assert first.zone.addresses == 4 and first.zone.set_changes == 0

    d.set_nameservers(["ns1", "ns2", "ns3"])  # ns4 leaves the delegation
    await asyncio.sleep(0.06)
    with caplog.at_level(logging.INFO, logger="exporter.discovery"):
        rediscovered = await run(check)  # discovers alongside this probe's queries...
    assert rediscovered.zone.addresses == 4 and rediscovered.zone.set_changes == 1
    after = await run(check)  # ...and the next probe asks the new set
    assert after.zone.addresses == 3 and after.zone.set_changes == 1
    assert {n.nameserver for n in after.zone.nameservers} == {"ns1.example.test", "ns2.example.test",
                                                             "ns3.example.test"}
    changed = [rec for rec in caplog.records if rec.getMessage() == "nameserver set changed"]
    assert len(changed) == 1
    assert changed[0].fields["removed"] == f"ns4.example.test/127.77.1.4:{d.port}"
    assert changed[0].fields["added"] == "" and changed[0].fields["zone"] == ZONE
    assert any("nameserver set changed: added none; removed ns4.example.test" in line for line in rediscovered.log)

    await asyncio.sleep(0.06)
    assert (await run(check)).zone.set_changes == 1  # the same set again is no change


# --- through the scheduler, into /metrics -----------------------------------------------------------------


def _samples(text: str, name: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def _by(samples: dict[tuple, float], *keys: str) -> dict[tuple, float]:
    return {tuple(dict(labels)[k] for k in keys): v for labels, v in samples.items()}


async def test_one_blackholed_nameserver_in_metrics(delegation):
    d = delegation
    d.nameserver("ns2").mode = "blackhole"
    config = load_config_text(textwrap.dedent(f"""
        defaults: {{interval: 1s, timeout: 500ms}}
        regions: [{{name: eu, resolvers: ["{d.resolver.name}"]}}]
        services:
          - name: example
            provider: acme
            checks:
              - name: authns
                authoritative: {{zone: {ZONE}, parents: ["{d.parent_address}"], port: {d.port},
                                 ip_protocols: [ip4], rediscover_interval: 1m}}
    """))
    checks = expand(config)
    assert [(c.target, c.resolver, c.prober) for c in checks] == [(ZONE, "", "authoritative")]
    store = ResultStore()
    scheduler = Scheduler(store, {"authoritative": authoritative.probe}, concurrency=4)
    await scheduler.start(checks)
    try:
        deadline = time.monotonic() + 5
        while store.get(checks[0].key).runs < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        await scheduler.stop()
    text = render_scheduled(store)

    up = _by(_samples(text, "outage_dns_authoritative_up"), "nameserver", "transport")
    assert up == {(f"ns{i}.example.test", t): (0.0 if i == 2 else 1.0) for i in range(1, 5) for t in ("udp", "tcp")}
    reasons = _by(_samples(text, "outage_dns_authoritative_failure_info"), "nameserver", "transport", "reason")
    assert reasons == {("ns2.example.test", t, "dns_timeout"): 1.0 for t in ("udp", "tcp")}
    serials = _by(_samples(text, "outage_dns_authoritative_soa_serial"), "nameserver")
    assert {name for (name,) in serials} == {"ns1.example.test", "ns3.example.test", "ns4.example.test"}
    assert set(serials.values()) == {float(SERIAL)}
    zone = {name: list(_samples(text, name).values()) for name in (
        "outage_dns_zone_nameservers", "outage_dns_zone_nameservers_answering", "outage_dns_zone_serials_agree",
        "outage_dns_zone_discovery_success", "outage_dns_zone_nameserver_set_changes_total")}
    assert zone == {"outage_dns_zone_nameservers": [4.0], "outage_dns_zone_nameservers_answering": [3.0],
                    "outage_dns_zone_serials_agree": [1.0], "outage_dns_zone_discovery_success": [1.0],
                    "outage_dns_zone_nameserver_set_changes_total": [0.0]}
    labels = dict(next(iter(_samples(text, "outage_dns_zone_nameservers"))))
    assert labels == {"service": "example", "provider": "acme", "region": "eu", "check": "authns", "zone": ZONE}
    success = _by(_samples(text, "probe_success"), "target", "resolver")
    assert success == {(ZONE, ""): 1.0}  # 3 of 4 answer: the check is green, the nameserver metrics show ns2


def test_lab_config_has_an_authoritative_check_per_site_zone():
    from exporter.lab import catalog
    from exporter.lab.labconfig import exporter_config

    class FakeWorld:
        regions = catalog.DEFAULT_REGIONS
        sites = catalog.SITES
        scheme = "http"
        ca_file = None
        dns_port = 5300
        parent_address = "127.1.0.1:5300"

        def service(self, name):
            return next(s for s in self.sites if s.name == name)

        def url(self, name):
            return f"http://{self.service(name).hostname}:8080/"

        def resolver_addresses(self, region):
            return ["127.30.1.1:5300", "127.30.1.2:5300"]

    config = load_config_text(yaml.safe_dump(exporter_config(FakeWorld())), source="lab")
    authns = {s.name: next(c for c in s.checks if c.name == "authns") for s in config.services}
    assert {name: cc.authoritative.zone for name, cc in authns.items()} == {s.name: s.zone for s in catalog.SITES}
    for cc in authns.values():
        assert cc.authoritative.parents == (Resolver("127.1.0.1:5300", "127.1.0.1", 5300),)
        assert cc.authoritative.port == 5300
    assert authns["control-a"].control and not authns["facebook"].control


# --- plans and targets -----------------------------------------------------------------------------------


def test_target_labels_carry_the_port_only_when_it_is_not_53():
    assert discovery.Target("ns1", "192.0.2.1").label == "192.0.2.1"
    assert discovery.Target("ns1", "192.0.2.1", 5300).label == "192.0.2.1:5300"
    assert discovery.Target("ns1", "2001:db8::1", 5300).label == "[2001:db8::1]:5300"
    static = AuthoritativeCheck(zone=ZONE, nameservers=(StaticNameserver("", "2001:db8::1"),
                                                        StaticNameserver("ns1.example.test", "192.0.2.1", 5300)))
    assert discovery.static_targets(static) == (discovery.Target("2001:db8::1", "2001:db8::1", 53),
                                               discovery.Target("ns1.example.test", "192.0.2.1", 5300))


def test_a_plan_restarts_when_its_settings_change_and_keeps_the_change_count():
    plans = discovery.Plans()
    first = make_check("authns", authoritative=AuthoritativeCheck(zone=ZONE))
    plan = plans.plan(first, now=0.0)
    plan.changes, plan.targets = 3, (discovery.Target("ns1", "192.0.2.1"),)
    assert plans.plan(first, now=1.0) is plan and plan.due(now=1.0)
    changed = make_check("authns", authoritative=AuthoritativeCheck(zone=ZONE, transports=("udp",)))
    fresh = plans.plan(changed, now=2.0)
    assert fresh is not plan and (fresh.changes, fresh.targets) == (3, ())
    other = make_check("other", authoritative=AuthoritativeCheck(zone=ZONE))
    plans.plan(other, now=discovery.IDLE_SECONDS + 3.0)  # a new plan forgets ones unused for that long
    assert len(plans) == 1


def test_a_static_plan_is_never_due():
    static = AuthoritativeCheck(zone=ZONE, nameservers=(StaticNameserver("", "192.0.2.1"),))
    plan = discovery.Plans().plan(make_check("authns", authoritative=static), now=0.0)
    assert plan.static and not plan.due(now=1e9) and plan.success is None
    assert plan.targets == (discovery.Target("192.0.2.1", "192.0.2.1"),)


async def test_discovery_is_retried_at_every_probe_until_a_nameserver_is_known(delegation):
    d = delegation
    d.parent.state = "blackhole"
    check = zone_check(d, rediscover_interval=3600.0)
    res = await run(check)
    assert (res.success, res.reason, res.zone.addresses, res.zone.discovery_success) == (
        False, r.DNS_TIMEOUT, 0, False)
    d.parent.state = "up"
    res = await run(check)  # not an hour later: there was nothing to ask
    assert res.success and res.zone.addresses == 4 and res.zone.discovery_success is True


@pytest.mark.parametrize(("mode", "slow"), [("servfail", False), ("drop", True)])
async def test_a_failing_resolver_hands_over_to_the_next_fast_or_after_its_share(delegation, mode, slow):
    from exporter.probers.result import ProbeLog
    from tests.servers.dns import start_dns

    d = delegation
    broken = await start_dns({}, host="127.0.0.1")
    broken.handler.default_mode = mode
    try:
        loop = asyncio.get_running_loop()
        settings = AuthoritativeCheck(zone=ZONE, parents=(Resolver(d.parent_address, "127.77.0.1", d.port),),
                                      port=d.port, ip_protocols=("ip4",))
        resolvers = (Resolver(broken.address, broken.host, broken.port), d.resolver)
        started = loop.time()
        log = ProbeLog(started)
        found = await discovery.discover(settings, resolvers, deadline=started + 0.6, log=log)
        elapsed = loop.time() - started
    finally:
        await broken.stop()
    assert found.success and set(found.answers) == {discovery.SOURCE_RESOLVERS, discovery.SOURCE_PARENT}
    assert len(found.targets) == 4
    if slow:  # a silent resolver keeps its half of the time before the next one is asked
        assert 0.25 < elapsed < 0.55
        assert any("over udp failed" in line and "dns_timeout" in line for line in log.lines())
    else:  # SERVFAIL moves on at once
        assert elapsed < 0.2
        assert any(f"{ZONE} NS via {broken.address}: SERVFAIL" in line for line in log.lines())
