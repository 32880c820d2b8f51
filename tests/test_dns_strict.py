"""One verdict per packet: every path reads a DNS answer the same way (dnsanswer.py).

The DNS prober, name resolution for HTTP/TCP (resolve.py) and the checks built on them use only records
of the question's class owned by the name asked or its CNAME chain, reject the same malformed packets as
``dns_malformed``, and ask a server that rejects EDNS again without it. Servers are local (loopback).
"""

from __future__ import annotations

import asyncio
import re
import struct

import dns.exception
import dns.message
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config.model import Resolver, RRValidator
from exporter.probers import dnsanswer, http, tcp
from exporter.probers import result as r
from exporter.probers.resolve import resolve
from exporter.probers.result import ProbeLog
from tests.servers.dns import start_dns
from tests.servers.http import http_check, tcp_check
from tests.test_dns_prober import dns_check, server_of
from tests.test_dns_prober import run as run_dns

LONG = 20  # links in a CNAME chain longer than any resolver follows
ZONE = {
    "www.test.": {"A": ["127.0.0.1"], "AAAA": ["::1"]},
    "hs.test.": {"A": ["127.0.0.1"]},
    "offname.test.": {"A": ["127.0.0.1"]},
    "alias.test.": {"CNAME": ["mid.test."]},
    "mid.test.": {"CNAME": ["www.test."]},
    "loop1.test.": {"CNAME": ["loop2.test."]},
    "loop2.test.": {"CNAME": ["loop1.test."]},
    "ptrloop.test.": {"A": ["127.0.0.1"]},
    "oldedns.test.": {"A": ["127.0.0.1"]},
    "notimp.test.": {"A": ["127.0.0.1"]},
    "badvers.test.": {"A": ["127.0.0.1"]},
    "formerr.test.": {"A": ["127.0.0.1"]},
    **{f"c{i}.test.": {"CNAME": [f"c{i + 1}.test." if i + 1 < LONG else "www.test."]} for i in range(LONG)},
}
MODES = {
    "hs.test.": "hs",
    "offname.test.": "offname",
    "ptrloop.test.": "ptrloop",
    "oldedns.test.": "noedns",
    "notimp.test.": "noedns:NOTIMP",
    "badvers.test.": "noedns:BADVERS",
    "formerr.test.": "rcode:FORMERR",
}


@pytest.fixture
async def zone():
    server = await start_dns(ZONE, MODES)
    yield server
    await server.stop()


@pytest.fixture(autouse=True)
async def _close_shared_session():
    yield
    await http.close()


async def _resolve(host: str, server: Resolver, timeout: float = 1.0):
    loop = asyncio.get_running_loop()
    log = ProbeLog(loop.time())
    res = await resolve(host, [server], prefer="ip4", fallback=False, deadline=loop.time() + timeout, log=log)
    return res, log.lines()


async def _http(target: str, server: Resolver):
    return await http.probe(http_check(target, resolvers=(server,)), deadline=asyncio.get_running_loop().time() + 1)


# --- Off-class and off-name records ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hs.test", "offname.test"])
async def test_records_that_do_not_answer_the_question_are_no_address(zone, site, name):
    """An A record of class HS (or for another name) is ignored: no address, never a bogus host."""
    server = server_of(zone)
    res, _ = await _resolve(name, server)
    assert (res.addresses, res.reason) == ((), r.DNS_NO_ANSWER)
    web = await _http(site.url("/", host=name), server)
    assert web.reason == r.DNS_NO_ANSWER, web.log
    port = await tcp.probe(tcp_check(f"{name}:{site.port}", resolvers=(server,)),
                           deadline=asyncio.get_running_loop().time() + 1)
    assert port.reason == r.DNS_NO_ANSWER, port.log


@pytest.mark.parametrize("name", ["hs.test", "offname.test"])
async def test_dns_prober_counts_only_records_that_answer(zone, name):
    result = await run_dns(dns_check(server_of(zone), name))
    assert result.success, result.log
    assert result.details[r.D_DNS_ANSWER_RRS] == 0
    assert r.D_DNS_MIN_TTL not in result.details


async def test_validators_see_only_records_that_answer(zone):
    rule = RRValidator(fail_if_none_matches_regexp=(re.compile(r"127\.0\.0\.1"),))
    result = await run_dns(dns_check(server_of(zone), "offname.test", validate_answer_rrs=rule))
    assert result.reason == r.DNS_ANSWER_MISMATCH, result.log


# --- CNAME chains ---------------------------------------------------------------------------------------


async def test_cname_chain_is_followed(zone, site):
    server = server_of(zone)
    res, _ = await _resolve("alias.test", server)
    assert res.addresses == ("127.0.0.1",)
    web = await _http(site.url("/", host="alias.test"), server)
    assert web.success, web.log
    result = await run_dns(dns_check(server, "alias.test"))
    assert result.success and result.details[r.D_DNS_ANSWER_RRS] == 3  # two CNAMEs and the A record


@pytest.mark.parametrize("name", ["loop1.test", "c0.test"])
async def test_cname_loop_or_endless_chain_is_no_address(zone, name):
    res, log = await _resolve(name, server_of(zone))
    assert (res.addresses, res.reason) == ((), r.DNS_NO_ANSWER)
    assert any("CNAME chain loops or is longer than" in line for line in log)


async def test_dns_prober_survives_a_cname_loop(zone):
    result = await run_dns(dns_check(server_of(zone), "loop1.test"))
    assert result.success and result.details[r.D_DNS_ANSWER_RRS] == 2


# --- Malformed packets ----------------------------------------------------------------------------------


async def test_looping_compression_pointer_is_malformed_on_every_path(zone, site):
    server = server_of(zone)
    res, _ = await _resolve("ptrloop.test", server)
    assert res.reason == r.DNS_MALFORMED
    web = await _http(site.url("/", host="ptrloop.test"), server)
    assert web.reason == r.DNS_MALFORMED
    plain = await run_dns(dns_check(server, "ptrloop.test"))
    validated = await run_dns(dns_check(server, "ptrloop.test", validate_answer_rrs=RRValidator(
        fail_if_matches_regexp=(re.compile("x"),))))
    assert (plain.reason, validated.reason) == (r.DNS_MALFORMED, r.DNS_MALFORMED), plain.log


_QUERY = dns.message.make_query("www.test.", "A", use_edns=False)
_QUESTION = b"\x03www\x04test\x00" + struct.pack("!HH", 1, 1)
_HEAD = struct.pack("!HHHHHH", _QUERY.id, 0x8180, 1, 1, 0, 0) + _QUESTION
_A = bytes.fromhex("0001000100000e1000047f000001")  # type A, class IN, TTL 3600, 127.0.0.1
BAD_PACKETS = {
    "pointer to itself": _HEAD + struct.pack("!H", 0xC000 | len(_HEAD)) + _A,
    "pointer forwards": _HEAD + struct.pack("!H", 0xC000 | (len(_HEAD) + 2)) + b"\x00" + _A,
    "two pointers in a loop": _HEAD + struct.pack("!HH", 0xC000 | (len(_HEAD) + 2), 0xC000 | len(_HEAD)) + _A,
    "label type 0x40": _HEAD + b"\x41x\x00" + _A,
    "name over 255 bytes": _HEAD + b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63
    + b"\x3f" + b"a" * 63 + b"\x00" + _A,
    "record cut short": _HEAD + b"\xc0\x0c" + _A[:-2],
    "A rdata of 5 bytes": _HEAD + b"\xc0\x0c" + _A[:8] + b"\x00\x05\x7f\x00\x00\x01\x01",
    "CNAME rdata with bytes after the name": _HEAD + b"\xc0\x0c" + bytes.fromhex("000500010000003c0004")
    + b"\x00\x00\x00\x00",
    "trailing junk": _HEAD + b"\xc0\x0c" + _A + b"\x00",
    "OPT in the answer section": _HEAD + b"\x00" + bytes.fromhex("002904d0000000000000"),
}


@pytest.mark.parametrize("wire", BAD_PACKETS.values(), ids=list(BAD_PACKETS))
def test_malformed_packets_are_rejected_by_both_readers(wire):
    assert dnsanswer.facts_from_wire(wire, _QUESTION) is None
    with pytest.raises(dns.exception.DNSException):
        dnsanswer.parse(wire, _QUERY)


def test_a_well_formed_packet_is_read_alike():
    wire = _HEAD + b"\xc0\x0c" + _A
    assert dnsanswer.facts_from_wire(wire, _QUESTION) == dnsanswer.facts_from_message(
        dnsanswer.parse(wire, _QUERY), dnsanswer.question_of(_QUERY))


def _answer_wire(rrs: list[tuple[str, str, str, str]]) -> bytes:
    resp = dns.message.make_response(_QUERY)
    for name, rdclass, rdtype, text in rrs:
        rrset = dns.rrset.from_text(name, 60, rdclass, rdtype, text)
        section = next((s for s in resp.answer if s.match(rrset.name, rrset.rdclass, rrset.rdtype, rrset.covers)),
                       None)
        if section is None:
            resp.answer.append(rrset)
        else:
            section.union_update(rrset)
    return resp.to_wire()


_OWNERS = st.sampled_from(["www.test.", "WWW.test.", "a.test.", "b.test.", "other.test."])
_RR = st.one_of(
    st.tuples(_OWNERS, st.just("IN"), st.just("A"), st.sampled_from(["127.0.0.1", "127.0.0.2"])),
    st.tuples(_OWNERS, st.just("IN"), st.just("CNAME"), _OWNERS),
    st.tuples(_OWNERS, st.just("HS"), st.just("A"), st.just(r"\# 4 7f000003")),
    st.tuples(_OWNERS, st.just("IN"), st.just("SOA"), st.just("ns.test. admin.test. 7 1 1 1 60")),
)


@settings(max_examples=200, deadline=None)
@given(rrs=st.lists(_RR, max_size=8), flips=st.lists(st.tuples(st.integers(12, 400), st.integers(1, 255)),
                                                    max_size=2))
def test_wire_reader_never_accepts_what_the_parser_rejects(rrs, flips):
    """The fast reader agrees with the parser: same facts when it reads a packet, None when it is garbage."""
    wire = bytearray(_answer_wire(rrs))
    for where, value in flips:
        if where < len(wire):
            wire[where] ^= value
    fast = dnsanswer.facts_from_wire(bytes(wire), _QUESTION)
    try:
        parsed = dnsanswer.parse(bytes(wire), _QUERY)
    except dns.exception.DNSException:
        assert fast is None
        return
    if fast is not None and not flips:
        assert fast == dnsanswer.facts_from_message(parsed, dnsanswer.question_of(_QUERY))


# --- EDNS -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["oldedns.test", "notimp.test", "badvers.test"])
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_dns_probe_asks_without_edns_so_a_server_rejecting_it_is_not_down(zone, name, transport):
    result = await run_dns(dns_check(server_of(zone), name, transport_protocol=transport))
    assert result.success, result.log
    assert result.details[r.D_DNS_ANSWER_RRS] == 1
    sent = [query.edns for query, _ in zone.handler.received]
    assert sent == [-1], "the DNS probe sends no OPT record, as blackbox_exporter"


async def test_resolution_through_a_server_rejecting_edns(zone, site):
    server = server_of(zone)
    res, _ = await _resolve("oldedns.test", server)
    assert res.addresses == ("127.0.0.1",)
    web = await _http(site.url("/", host="oldedns.test"), server)
    assert web.success, web.log


async def test_formerr_to_everything_is_one_query_for_the_probe(zone):
    result = await run_dns(dns_check(server_of(zone), "formerr.test"), timeout=1.0)
    assert result.reason == r.DNS_RCODE and result.details[r.D_DNS_RCODE] == 1
    assert [query.edns for query, _ in zone.handler.received] == [-1]


async def test_formerr_without_edns_too_is_asked_once_more_only_when_resolving(zone):
    loop = asyncio.get_running_loop()
    started = loop.time()
    res, _ = await _resolve("formerr.test", server_of(zone))
    assert not res.addresses
    received = [(query.question[0].rdtype, query.edns) for query, _ in zone.handler.received]
    first_type = received[0][0]
    assert [edns for rdtype, edns in received if rdtype == first_type] == [0, -1]
    assert loop.time() - started < 1.5
