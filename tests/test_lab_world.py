"""The lab world: authoritative and recursive DNS behaviour, per-region views, edges, isolation, config."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import yaml

from exporter.checks import expand
from exporter.config import load_config_text
from exporter.config.model import Defaults
from exporter.lab import certs
from exporter.lab.catalog import FLEETS
from exporter.lab.edges import PROXY_STATUS, edge_setting
from exporter.lab.netlab.world import RealWorld
from exporter.lab.recursive import ISP, PUBLIC
from exporter.lab.world import World

# Short network timeouts keep the failure tests quick; behaviour is the same as the defaults.
FAST_STYLES = {"public": replace(PUBLIC, attempt_timeout=0.3), "isp": replace(ISP, attempt_timeout=0.4)}
needs_openssl = pytest.mark.skipif(not certs.available(), reason="the openssl command is not installed")


@pytest.fixture
async def world():
    w = World(speed=100, styles=FAST_STYLES, tls=False)
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


def hostport(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


async def ask(address: str, name: str, *, timeout: float = 2.0, tcp: bool = False,
              rd: bool = True) -> dns.message.Message:
    host, port = hostport(address)
    query = dns.message.make_query(name, "A")
    if not rd:
        query.flags &= ~dns.flags.RD
    send = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
    return await send(query, host, port=port, timeout=timeout)


def addresses(resp: dns.message.Message) -> list[str]:
    return [rd.address for rrset in resp.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset]


async def fetch(world: World, site: str, region: str, *, timeout: float = 2.0) -> aiohttp.ClientResponse:
    """GET a site's URL, connecting to the edge address the region sees; returns the read response."""
    edge = world.edge(site, region)
    connector = aiohttp.TCPConnector(resolver=_Pinned(edge.host), force_close=True,
                                     ssl=world.client_ssl_context() or False)
    async with (aiohttp.ClientSession(connector=connector) as session,
                session.get(world.url(site), timeout=aiohttp.ClientTimeout(total=timeout)) as resp):
        await resp.read()
        return resp


class _Pinned(aiohttp.abc.AbstractResolver):
    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict]:
        return [{"hostname": host, "host": self.address, "port": port, "family": 2, "proto": 0,
                 "flags": 0}]

    async def close(self) -> None:
        pass


# --- authoritative servers ---------------------------------------------------------------------------


async def test_authoritative_answers_have_aa_and_no_ra(world):
    ns = world.nameservers("facebook.com")
    assert [n for n, _ in ns] == [f"{c}.ns.facebook.com" for c in "abcd"]
    resp = await ask(ns[0][1], "www.facebook.com", rd=False)
    assert resp.rcode() == dns.rcode.NOERROR
    assert resp.flags & dns.flags.AA and not resp.flags & dns.flags.RA
    assert addresses(resp) == [world.edge("facebook", "eu-west").host]  # non-resolver clients: first view
    assert resp.answer[0].ttl == 300


async def test_parent_delegates_with_glue(world):
    resp = await ask(world.parent_address, "www.whatsapp.com", rd=False)
    assert resp.rcode() == dns.rcode.NOERROR and not resp.answer
    assert not resp.flags & dns.flags.AA
    (ns,) = resp.authority
    assert ns.rdtype == dns.rdatatype.NS and ns.name.to_text() == "whatsapp.com."
    assert sorted(rd.target.to_text() for rd in ns) == [f"{c}.ns.whatsapp.net." for c in "abcd"]
    glue = {r.name.to_text(omit_final_dot=True): r[0].address for r in resp.additional}
    assert glue == {name: hostport(addr)[0] for name, addr in world.nameservers("whatsapp.com")}


async def test_parent_answers_nxdomain_outside_the_lab(world):
    resp = await ask(world.parent_address, "www.example.com", rd=False)
    assert resp.rcode() == dns.rcode.NXDOMAIN and resp.flags & dns.flags.AA
    assert resp.authority[0].rdtype == dns.rdatatype.SOA


async def test_blackholed_nameserver_times_out_instead_of_refusing(world):
    address = world.nameservers("facebook.com")[0][1]
    world.set_nameserver(address, "blackhole")
    for tcp in (False, True):
        with pytest.raises(dns.exception.Timeout):
            await ask(address, "www.facebook.com", timeout=0.3, tcp=tcp)
    world.set_nameserver("a.ns.facebook.com", "refuse")
    assert (await ask(address, "www.facebook.com")).rcode() == dns.rcode.REFUSED
    world.set_nameserver(address, "up")
    assert (await ask(address, "www.facebook.com")).rcode() == dns.rcode.NOERROR


# --- recursive resolvers -----------------------------------------------------------------------------


async def test_each_region_resolves_to_its_own_edges(world):
    for region in world.region_names:
        for resolver in world.resolver_addresses(region):
            resp = await ask(resolver, "www.facebook.com")
            assert resp.flags & dns.flags.RA and not resp.flags & dns.flags.AA
            assert addresses(resp) == [world.edge("facebook", region).host]
    assert world.edge("facebook", "eu-west").host != world.edge("facebook", "us-east").host


async def test_positive_answers_are_cached_for_the_scaled_ttl():
    async with World(speed=1000, styles=FAST_STYLES, tls=False) as world:  # TTL 300 s = 0.3 wall s
        resolver = world.resolver("eu-west", "public")
        address = world.resolver_addresses("eu-west")[0]
        first = await ask(address, "www.twitter.com")
        sent = resolver.upstream_queries
        await asyncio.sleep(0.1)  # 100 story seconds
        second = await ask(address, "www.twitter.com")
        assert resolver.upstream_queries == sent  # served from cache
        assert first.answer[0].ttl == 300
        assert 150 <= second.answer[0].ttl <= 200  # the TTL counts down in story seconds
        world.set_nameservers("blackhole", zone="twitter.com")
        assert addresses(await ask(address, "www.twitter.com"))  # the cache hides the outage ...
        await asyncio.sleep(0.25)  # ... until the 300 s TTL runs out
        assert (await ask(address, "www.twitter.com")).rcode() == dns.rcode.SERVFAIL


async def test_nxdomain_is_cached_for_the_soa_minimum():
    async with World(speed=1000, styles=FAST_STYLES, tls=False) as world:  # SOA minimum 300 s = 0.3 s
        resolver = world.resolver("us-east", "isp")
        address = world.resolver_addresses("us-east")[1]
        resp = await ask(address, "nope.telegram.org")
        assert resp.rcode() == dns.rcode.NXDOMAIN
        soa = resp.authority[0]
        assert soa.rdtype == dns.rdatatype.SOA and soa[0].minimum == 300 and 250 <= soa.ttl <= 300
        sent = resolver.upstream_queries
        assert (await ask(address, "nope.telegram.org")).rcode() == dns.rcode.NXDOMAIN
        assert resolver.upstream_queries == sent
        await asyncio.sleep(0.35)
        assert (await ask(address, "nope.telegram.org")).rcode() == dns.rcode.NXDOMAIN
        assert resolver.upstream_queries > sent


async def test_public_resolver_servfails_fast_when_every_nameserver_is_blackholed(world):
    world.set_nameservers("blackhole", operator="meta")
    address = world.resolver_addresses("eu-west")[0]
    started = time.monotonic()
    resp = await ask(address, "www.facebook.com", timeout=2.0)
    first = time.monotonic() - started
    assert resp.rcode() == dns.rcode.SERVFAIL
    assert first < 0.3 + 0.25  # one parallel round of 0.3 s attempts
    started = time.monotonic()
    for name in ("www.messenger.com", "facebook.com"):  # same nameservers, now known to be silent
        assert (await ask(address, name)).rcode() == dns.rcode.SERVFAIL
    assert time.monotonic() - started < 0.2


async def test_isp_resolver_makes_clients_time_out_or_servfails_slowly(world):
    world.set_nameservers("blackhole", zone="whatsapp.com")
    address = world.resolver_addresses("us-east")[1]  # isp: 4 nameservers x 0.4 s, one after another
    first = asyncio.ensure_future(ask(address, "www.whatsapp.com", timeout=1.0))
    await asyncio.sleep(0.6)
    started = time.monotonic()
    late = await ask(address, "www.whatsapp.com", timeout=2.0)  # joins the lookup in flight
    waited = time.monotonic() - started
    with pytest.raises(dns.exception.Timeout):
        await first
    assert late.rcode() == dns.rcode.SERVFAIL
    assert 0.7 < waited < 1.4  # answered when the 1.6 s lookup gave up: a slow SERVFAIL


async def test_unreachable_zones_never_give_nxdomain(world):
    world.set_nameservers("blackhole", operator="meta")
    results = await asyncio.gather(*(
        ask(addr, name, timeout=2.0)
        for region in world.region_names for addr in world.resolver_addresses(region)
        for name in ("www.facebook.com", "whatsapp.com", "nope.messenger.com")), return_exceptions=True)
    rcodes = {r.rcode() if isinstance(r, dns.message.Message) else type(r).__name__ for r in results}
    assert rcodes <= {dns.rcode.SERVFAIL, "Timeout"}
    assert dns.rcode.SERVFAIL in rcodes


async def test_instagram_keeps_resolving_while_meta_nameservers_are_down(world):
    world.set_nameservers("blackhole", operator="meta")
    for region in world.region_names:
        resp = await ask(world.resolver_addresses(region)[0], "www.instagram.com")
        assert addresses(resp) == [world.edge("instagram", region).host]


# --- edges -------------------------------------------------------------------------------------------


async def test_unavailable_edge_answers_503_with_proxy_status(world):
    world.set_edge("instagram", "eu-west", "unavailable")
    await world.settle()
    resp = await fetch(world, "instagram", "eu-west")
    assert resp.status == 503 and resp.headers["proxy-status"] == PROXY_STATUS
    assert (await fetch(world, "instagram", "us-east")).status == 200


async def test_blackholed_edge_times_out_and_refused_edge_refuses(world):
    edge = world.edge("twitter", "us-east")
    world.set_edge("twitter", "us-east", "blackhole")
    await world.settle()
    for _ in range(3):  # every new connection hangs; none is refused
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.open_connection(edge.host, edge.port), 0.3)
    world.set_edge("twitter", "us-east", "refused")
    await world.settle()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(edge.host, edge.port)
    world.set_edge("twitter", "us-east", "healthy")
    await world.settle()
    assert (await fetch(world, "twitter", "us-east")).status == 200


async def test_slow_and_latency_modes_delay_the_answer(world):
    world.set_edge("telegram", "eu-west", "slow", first_byte_ms=300)
    world.set_edge("telegram", "us-east", "latency", latency_ms=150)
    await world.settle()
    for region, at_least in (("eu-west", 0.3), ("us-east", 0.15)):
        started = time.monotonic()
        assert (await fetch(world, "telegram", region)).status == 200
        assert time.monotonic() - started >= at_least


async def test_flapping_is_reproducible_with_the_same_seed():
    async def statuses(seed: int) -> list[int]:
        async with World(speed=100, tls=False, seed=seed) as w:
            w.set_edge("whatsapp", "eu-west", "flapping", fail_ratio=0.5)
            await w.settle()
            return [(await fetch(w, "whatsapp", "eu-west")).status for _ in range(20)]

    first, again, other = await statuses(1), await statuses(1), await statuses(2)
    assert first == again
    assert first != other
    assert set(first) == {200, 503}


def test_edge_settings_are_validated():
    with pytest.raises(ValueError, match="unknown edge mode 'down'"):
        edge_setting("down")
    with pytest.raises(ValueError, match="^fail_ratio: must be between 0 and 1"):
        edge_setting("flapping", fail_ratio=1.5)
    with pytest.raises(ValueError, match="^days: not a parameter of mode 'unavailable'"):
        edge_setting("unavailable", days=3)
    assert edge_setting("slow").first_byte_ms == 2000
    assert edge_setting("flapping", fail_ratio=0.2, latency_ms=10).params() == {
        "fail_ratio": 0.2, "latency_ms": 10.0, "jitter_ms": 0.0}


@needs_openssl
async def test_certificate_modes_expiring_and_expired():
    async with World(speed=100, tls=True) as w:
        w.set_edge("twitter", "eu-west", "expiring", days=10)
        w.set_edge("twitter", "us-east", "expired")
        await w.settle()
        days_left = (await _peer_not_after(w, "twitter", "eu-west") - time.time()) / 86400
        assert 9.9 < days_left <= 10.0
        with pytest.raises(aiohttp.ClientConnectorCertificateError, match="expired"):
            await fetch(w, "twitter", "us-east")
        assert (await fetch(w, "twitter", "eu-west")).status == 200
        w.set_edge("twitter", "all", "healthy")
        assert (await _peer_not_after(w, "twitter", "us-east") - time.time()) / 86400 > 80


async def _peer_not_after(world: World, site: str, region: str) -> float:
    edge = world.edge(site, region)
    ctx = world.client_ssl_context()
    assert isinstance(ctx, ssl.SSLContext)
    _, writer = await asyncio.open_connection(edge.host, edge.port, ssl=ctx,
                                              server_hostname=world.service(site).hostname)
    cert = writer.get_extra_info("peercert")
    writer.close()
    return ssl.cert_time_to_seconds(cert["notAfter"])


# --- vantage isolation, reset and the generated config -------------------------------------------------


async def test_isolated_region_loses_resolvers_and_edges_including_controls(world):
    world.isolate_region("us-east")
    await world.settle()
    for resolver in world.resolver_addresses("us-east"):
        with pytest.raises(dns.exception.Timeout):
            await ask(resolver, "www.control-a.lab", timeout=0.3)
    for site in ("control-a", "facebook"):
        edge = world.edge(site, "us-east")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.open_connection(edge.host, edge.port), 0.3)
    assert addresses(await ask(world.resolver_addresses("eu-west")[0], "www.control-a.lab"))
    assert (await fetch(world, "control-a", "eu-west")).status == 200
    assert world.isolated_regions() == ["us-east"]
    world.isolate_region("us-east", False)
    await world.settle()
    assert (await fetch(world, "control-a", "us-east")).status == 200
    assert addresses(await ask(world.resolver_addresses("us-east")[1], "www.control-a.lab"))


async def test_isolation_keeps_the_edge_mode_for_later(world):
    world.set_edge("facebook", "us-east", "unavailable")
    world.isolate_region("us-east")
    world.isolate_region("us-east", False)
    await world.settle()
    assert (await fetch(world, "facebook", "us-east")).status == 503


async def test_reset_restores_a_healthy_world(world):
    world.set_nameservers("blackhole", operator="meta")
    world.set_edge("facebook", "all", "blackhole")
    world.isolate_region("eu-west")
    world.reset()
    await world.settle()
    snap = world.snapshot()
    assert set(snap["nameservers"].values()) == {"up"}
    assert set(snap["edges"].values()) == {"healthy"}
    assert snap["isolated"] == []
    assert (await fetch(world, "facebook", "eu-west")).status == 200


async def test_unknown_names_are_rejected(world):
    with pytest.raises(ValueError, match="unknown region 'mars'"):
        world.set_edge("facebook", "mars", "healthy")
    with pytest.raises(ValueError, match="unknown service 'myspace'"):
        world.set_edge("myspace", "all", "healthy")
    with pytest.raises(ValueError, match="unknown operator"):
        world.set_nameservers("blackhole", operator="nobody")
    with pytest.raises(ValueError, match="unknown nameserver state"):
        world.set_nameservers("down", zone="facebook.com")
    with pytest.raises(ValueError, match="needs HTTPS"):
        world.set_edge("twitter", "eu-west", "expired")


async def test_generated_config_passes_the_strict_loader(world):
    raw = world.exporter_config()
    config = load_config_text(yaml.safe_dump(raw, sort_keys=False), source="lab")
    assert [r.name for r in config.regions] == ["eu-west", "us-east"]
    assert [r.name for r in config.regions[0].resolvers] == world.resolver_addresses("eu-west")
    assert (config.defaults.interval, config.defaults.timeout) == (Defaults().interval, Defaults().timeout)
    services = {s.name: s for s in config.services}
    assert services["whatsapp"].provider == "meta" and services["telegram"].provider == "telegram"
    assert all(c.control for c in services["control-b"].checks)
    assert not any(c.control for c in services["facebook"].checks)
    checks = expand(config)
    # dns via each resolver + one http and one authoritative check per region
    per_site = len(world.regions) * 2 + len(world.regions) * 2
    assert len(checks) == len(world.sites) * per_site
    authns = [c for c in checks if c.service == "facebook" and c.check == "authns"]
    assert {c.target for c in authns} == {"facebook.com"}
    assert {c.authoritative.parents[0].name for c in authns} == {world.parent_address}
    assert {c.authoritative.port for c in authns} == {world.dns_port}
    assert all(c.two_path is not None and c.two_path.enabled for c in checks if c.prober == "http")
    http = [c for c in checks if c.service == "instagram" and c.prober == "http"]
    assert {c.target for c in http} == {world.url("instagram")}
    assert {c.resolvers[0].name for c in http} == {world.resolver_addresses(r)[0] for r in world.region_names}


@needs_openssl
async def test_generated_config_trusts_the_lab_ca():
    async with World(speed=100, tls=True) as w:
        config = load_config_text(yaml.safe_dump(w.exporter_config()), source="lab")
        assert config.modules["http_2xx"].http.tls_config.ca_file == w.ca_file
        assert w.url("facebook").startswith("https://www.facebook.com:")


async def test_fixed_ports_are_used_on_every_address():
    async with World(tls=False) as probe:  # learn two ports that were just free on every lab address
        dns_port, http_port = probe.dns_port, probe.http_port
    async with World(tls=False, dns_port=dns_port, http_port=http_port) as world:
        assert world.parent_address == f"127.1.0.1:{dns_port}"
        assert {hostport(a)[1] for _, a in world.nameservers("instagram.com")} == {dns_port}
        assert world.url("control-b") == f"http://www.control-b.lab:{http_port}/"
        assert {e.port for e in world.edges.values()} == {http_port}
        assert addresses(await ask(world.resolver_addresses("us-east")[0], "www.control-b.lab")) == [
            world.edge("control-b", "us-east").host]


@pytest.mark.skipif(shutil.which("ip") is None, reason="the real world needs the ip command (iproute2)")
def test_both_worlds_select_nameservers_and_name_sites_alike(tmp_path: Path) -> None:
    """Scenarios run on either world: only the addresses differ, never the selection, its order or the errors."""
    sim, real = World(tls=False, http_port=8080), RealWorld(workdir=tmp_path)  # neither started

    def names(world: World | RealWorld, **select: str) -> list[str]:
        by_ip = {world.nameserver_addresses(name=n)[0]: n for f in FLEETS for n in f.names}
        return [by_ip.get(ip, "parent") for ip in world.nameserver_addresses(**select)]

    def problem(world: World | RealWorld, **select: str) -> str:
        with pytest.raises(ValueError) as info:
            world.nameserver_addresses(**select)
        return str(info.value)

    assert names(sim, zone="facebook.com.") == ["a.ns.facebook.com", "b.ns.facebook.com", "c.ns.facebook.com",
                                                "d.ns.facebook.com"]
    assert names(sim, operator="meta")[4:] == ["a.ns.whatsapp.net", "b.ns.whatsapp.net", "c.ns.whatsapp.net",
                                               "d.ns.whatsapp.net"]
    selections = [{"zone": "instagram.com"}, {"operator": "meta"}, {"name": "ns2.labdns.lab"}, {"name": "parent"},
                  {"name": "parent.lab"}]
    for select in selections:
        assert names(sim, **select) == names(real, **select), select
    assert sim.nameserver_addresses(name="parent") == [sim.parent_address.rsplit(":", 1)[0]]
    assert real.nameserver_addresses(name="parent") == [real.parent_address.rsplit(":", 1)[0]]
    for bad in ({"zone": "myspace.com"}, {"operator": "nobody"}, {"name": "ns9.nowhere"}, {},
                {"zone": "facebook.com", "name": "parent"}):
        assert problem(sim, **bad) == problem(real, **bad), bad
    assert problem(real, zone="myspace.com").startswith("unknown zone 'myspace.com' (known: facebook.com, ")
    assert problem(real, name="ns9.nowhere").startswith("unknown nameserver 'ns9.nowhere' (known: a.ns.facebook")
    assert (sim.url("twitter"), real.url("twitter")) == ("http://www.twitter.com:8080/", "http://www.twitter.com:80/")
