import asyncio

import pytest

from exporter.config.model import Resolver
from exporter.probers import result as r
from exporter.probers.resolve import resolve
from exporter.probers.result import ProbeLog


async def _resolve(host, resolvers, timeout=1.0, **kw):
    loop = asyncio.get_running_loop()
    log = ProbeLog(loop.time())
    res = await resolve(host, resolvers, deadline=loop.time() + timeout, log=log, **kw)
    return res, log.lines()


async def test_literal_needs_no_lookup():
    res, _ = await _resolve("127.0.0.1", [])
    assert res.addresses == ("127.0.0.1",) and not res.looked_up


async def test_a_record(resolver):
    res, log = await _resolve("www.test", [resolver])
    assert res.addresses == ("127.0.0.1",) and res.reason is None and res.looked_up
    assert any("resolved www.test" in line for line in log)


async def test_prefer_ip6_and_fallback(resolver):
    res, _ = await _resolve("www.test", [resolver], prefer="ip6")
    assert res.addresses == ("::1",)
    res, _ = await _resolve("v6only.test", [resolver], prefer="ip4", fallback=True)
    assert res.addresses == ("::1",)
    res, _ = await _resolve("v6only.test", [resolver], prefer="ip4", fallback=False)
    assert res.reason == r.DNS_NO_ANSWER


@pytest.mark.parametrize(("host", "reason"), [
    ("nx.test", r.DNS_NXDOMAIN),
    ("servfail.test", r.DNS_SERVFAIL),
    ("refused.test", r.DNS_REFUSED),
    ("drop.test", r.DNS_TIMEOUT),
    ("nodata.test", r.DNS_NO_ANSWER),
    ("garbage.test", r.DNS_MALFORMED),
])
async def test_failure_reasons(resolver, host, reason):
    res, _ = await _resolve(host, [resolver], timeout=0.5)
    assert res.addresses == () and res.reason == reason


async def test_next_resolver_after_servfail(dns_server, resolver):
    from tests.servers.dns import start_dns
    broken = await start_dns({}, host="127.0.0.2")
    broken.handler.default_mode = "servfail"
    try:
        bad = Resolver(name=broken.address, host=broken.host, port=broken.port)
        res, _ = await _resolve("www.test", [bad, resolver])
        assert res.addresses == ("127.0.0.1",) and res.resolver == resolver.name
    finally:
        await broken.stop()


async def test_timeout_shares_deadline_between_resolvers(resolver):
    dead = Resolver(name="127.0.0.3:9", host="127.0.0.3", port=9)  # nothing listens: refused or silence
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    res, _ = await _resolve("www.test", [dead, resolver], timeout=1.0)
    assert res.addresses == ("127.0.0.1",)
    assert loop.time() - t0 < 1.0


async def test_primary_servfail_wins_over_secondary_timeout(resolver):
    """A fast SERVFAIL from the first resolver is the verdict even when the next one times out."""
    from tests.servers.dns import start_dns
    silent = await start_dns({}, host="127.0.0.4")
    silent.handler.default_mode = "drop"
    try:
        quiet = Resolver(name=silent.address, host=silent.host, port=silent.port)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 0.6
        res, log = await _resolve("servfail.test", [resolver, quiet], timeout=0.6)
        assert res.reason == r.DNS_SERVFAIL and res.resolver == resolver.name
        assert loop.time() < deadline  # returned its own verdict before the caller's deadline
    finally:
        await silent.stop()


async def test_resolver_with_nothing_listening_is_dns_unreachable():
    """A dead resolver port must not read as the target refusing the connection."""
    dead = Resolver(name="127.0.0.1:9", host="127.0.0.1", port=9)
    res, log = await _resolve("www.test", [dead], timeout=0.5)
    assert res.reason == r.DNS_UNREACHABLE
