"""exporter.probers.dnsclient: one exchange with one server within a deadline, the same for every caller:
UDP with a TCP retry on truncation, one retry without EDNS for a server that rejects it, and network
trouble returned as a reason, never raised."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import dns.message
import dns.rcode
import pytest

from exporter.config.model import Resolver
from exporter.lab.dnsserver import DNSServer
from exporter.probers import clock
from exporter.probers import result as r
from exporter.probers.dnsclient import exchange, rcode_reason
from exporter.probers.result import ProbeLog
from tests.servers.dns import start_dns

RECORDS = {name: {"A": ["127.0.0.7"]} for name in ("www.test.", "big.test.", "old.test.", "gone.test.")}


@pytest.fixture
async def server() -> AsyncIterator[DNSServer]:
    peer = await start_dns(RECORDS, modes={"big.test.": "truncate", "old.test.": "noedns", "gone.test.": "drop"})
    yield peer
    await peer.stop()


async def _ask(peer: DNSServer, name: str, *, within: float = 2.0, transport: str = "udp"):
    log = ProbeLog(clock.now())
    resolver = Resolver(name=peer.address, host=peer.host, port=peer.port)
    ex = await exchange(dns.message.make_query(name, "A", use_edns=0), resolver, transport=transport,
                        deadline=asyncio.get_running_loop().time() + within, log=log)
    return ex, log.lines()


async def test_an_answer_arrives_over_the_transport_asked(server: DNSServer) -> None:
    for transport in ("udp", "tcp"):
        ex, _ = await _ask(server, "www.test.", transport=transport)
        assert ex.reason is None and ex.transport == transport and not ex.truncated
        assert ex.response is not None and ex.response.answer[0][0].address == "127.0.0.7"
        assert ex.phases[r.PHASE_REQUEST] >= 0


async def test_a_truncated_udp_answer_is_asked_again_over_tcp(server: DNSServer) -> None:
    ex, lines = await _ask(server, "big.test.")
    assert ex.truncated and ex.transport == "tcp" and ex.reason is None
    assert ex.response is not None and ex.response.answer[0][0].address == "127.0.0.7"
    assert any("retrying over TCP" in line for line in lines)


async def test_a_server_rejecting_edns_is_asked_once_more_without_it(server: DNSServer) -> None:
    ex, lines = await _ask(server, "old.test.")
    assert ex.response is not None and ex.response.rcode() == dns.rcode.NOERROR
    assert ex.query is not None and ex.query.edns < 0
    assert [q.edns >= 0 for q, _ in server.handler.received] == [True, False]  # type: ignore[attr-defined]
    assert any("asking again without it" in line for line in lines)


async def test_silence_is_a_timeout_reason_within_the_deadline(server: DNSServer) -> None:
    started = clock.now()
    ex, lines = await _ask(server, "gone.test.", within=0.3)
    assert ex.reason == r.DNS_TIMEOUT and ex.response is None
    assert clock.now() - started < 1.5
    assert any("failed" in line and r.DNS_TIMEOUT in line for line in lines)


def test_rcodes_map_to_reasons() -> None:
    assert rcode_reason(dns.rcode.NOERROR) is None
    assert [rcode_reason(x) for x in (dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL, dns.rcode.REFUSED, dns.rcode.NOTIMP)] == [
        r.DNS_NXDOMAIN, r.DNS_SERVFAIL, r.DNS_REFUSED, r.DNS_RCODE]
