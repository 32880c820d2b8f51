"""Fuzzing the DNS prober with hostile answers from a local UDP server.

Whatever comes back (random bytes, a valid answer with bytes flipped, cut or inserted, or a well-formed
answer with random records), the prober returns a ProbeResult by its deadline with a documented reason,
and never ``internal`` (which would mean a bug). Well-formed answers are also judged exactly: success
follows the rcode, and the counts match the records sent that answer the question (in the answer
section, the name asked and its CNAME chain).

The same bytes also go through name resolution (resolve.py, the path HTTP and TCP probes take): both
paths must reach the same verdict, usable or ``dns_malformed``, for every packet.

All examples share one event loop and one server: each example only swaps the server's answer.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator

import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.checks import Check
from exporter.config.model import DNSProbe, Module, Resolver, RRValidator
from exporter.probers import clock, udpmux
from exporter.probers import dns as dns_prober
from exporter.probers import result as r
from exporter.probers.resolve import Resolution, resolve
from exporter.probers.result import ProbeLog, ProbeResult

TIMEOUT = 0.15  # per probe: most junk is waited out to the deadline, so keep it short
GRACE = 0.25  # how far past the deadline a probe may return on a busy machine
QNAME = "fuzz.test."
Reply = Callable[[dns.message.Message, bytes], bytes | None]

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class _Server(asyncio.DatagramProtocol):
    """Answers every query with whatever the current example's ``reply`` makes of it."""

    def __init__(self) -> None:
        self.reply: Reply = lambda query, wire: None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        out = self.reply(dns.message.from_wire(data), data)
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)

    def error_received(self, exc: Exception) -> None:
        pass


class Harness:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = _Server()
        self.transport, _ = self.loop.run_until_complete(self.loop.create_datagram_endpoint(
            lambda: self.server, local_addr=("127.0.0.1", 0)))
        port = self.transport.get_extra_info("sockname")[1]
        self.resolver = Resolver(name=f"127.0.0.1:{port}", host="127.0.0.1", port=port)

    def probe(self, reply: Reply, *, validate: bool = False) -> tuple[ProbeResult, float]:
        self.server.reply = reply
        check = _check(self.resolver, validate)

        async def run() -> tuple[ProbeResult, float]:
            start = self.loop.time()
            result = await dns_prober.probe(check, deadline=start + TIMEOUT)
            return result, self.loop.time() - start

        return self.loop.run_until_complete(run())

    def both(self, reply: Reply) -> tuple[ProbeResult, Resolution]:
        """The same answer through the DNS prober and through name resolution (as HTTP/TCP probes do)."""
        self.server.reply = reply
        check = _check(self.resolver, False)

        async def run() -> tuple[ProbeResult, Resolution]:
            probed = await dns_prober.probe(check, deadline=self.loop.time() + TIMEOUT)
            resolved = await resolve(QNAME, [self.resolver], prefer="ip4", fallback=False,
                                     deadline=self.loop.time() + TIMEOUT, log=ProbeLog(clock.now()))
            return probed, resolved

        return self.loop.run_until_complete(run())

    def close(self) -> None:
        self.loop.run_until_complete(udpmux.close())
        self.transport.close()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


def _check(server: Resolver, validate: bool) -> Check:
    validator = RRValidator(fail_if_none_matches_regexp=(re.compile(r"\tA\t"),)) if validate else RRValidator()
    module = Module(name="fuzz", prober="dns", dns=DNSProbe(query_name=QNAME, query_type="A",
                                                            validate_answer_rrs=validator))
    return Check(service="fuzz", provider="fuzz", region="lab", check="dns", target=QNAME, resolver=server.name,
                 module=module, resolvers=(), dns_server=server, query_name=QNAME)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness()
    try:
        yield h
    finally:
        h.close()


def _sane(result: ProbeResult, elapsed: float) -> None:
    assert isinstance(result, ProbeResult)
    assert elapsed <= TIMEOUT + GRACE, f"took {elapsed:.3f}s: {result.log}"
    assert result.success == (result.reason is None)
    assert result.reason is None or result.reason in r.REASONS
    assert result.reason != r.INTERNAL, result.log


def _valid_answer(query: dns.message.Message) -> bytes:
    resp = dns.message.make_response(query)
    resp.answer.append(dns.rrset.from_text(query.question[0].name, 300, "IN", "A", "127.0.0.1"))
    resp.authority.append(dns.rrset.from_text("test.", 300, "IN", "SOA",
                                              "ns1.test. admin.test. 2021100401 3600 600 86400 60"))
    return resp.to_wire()


# --- Random bytes ---------------------------------------------------------------------------------------


def _random_reply(body: bytes, keep_id: bool, force_qr: bool) -> Reply:
    """``body`` as the answer, with the query's id and the QR bit when asked: more of it gets parsed."""
    def reply(query: dns.message.Message, wire: bytes) -> bytes:
        out = bytearray(body)
        if keep_id and len(out) >= 2:
            out[0:2] = wire[0:2]
        if force_qr and len(out) >= 3:
            out[2] |= 0x80
        return bytes(out)

    return reply


@FUZZ
@given(body=st.binary(max_size=600), keep_id=st.booleans(), force_qr=st.booleans(), validate=st.booleans())
def test_random_bytes(harness: Harness, body: bytes, keep_id: bool, force_qr: bool, validate: bool) -> None:
    _sane(*harness.probe(_random_reply(body, keep_id, force_qr), validate=validate))


# --- Mutated valid answers ------------------------------------------------------------------------------

_MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 200), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 200), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 200), st.integers(0, 255)),
    st.tuples(st.just("pointer"), st.integers(12, 200), st.integers(0, 200)),
)


def _mutate(wire: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(wire)
    for kind, where, value in mutations:
        where = where % (len(out) + 1)
        if kind == "flip" and where < len(out):
            out[where] ^= value
        elif kind == "cut":
            del out[where:]
        elif kind == "insert":
            out[where:where] = bytes([value])
        elif kind == "pointer":  # a compression pointer to ``value``: backwards, forwards or to itself
            out[where:where + 2] = bytes([0xC0 | value >> 8, value & 0xFF])
    return bytes(out)


@FUZZ
@given(mutations=st.lists(_MUTATION, min_size=1, max_size=4), validate=st.booleans())
def test_mutated_answers(harness: Harness, mutations: list[tuple[str, int, int]], validate: bool) -> None:
    _sane(*harness.probe(lambda query, wire: _mutate(_valid_answer(query), mutations), validate=validate))


# --- The same bytes through both paths ------------------------------------------------------------------


def _same_verdict(probed: ProbeResult, resolved: Resolution) -> None:
    """Usable or malformed is decided once per packet: the DNS prober and resolution agree on it."""
    assert probed.reason != r.INTERNAL, probed.log
    assert resolved.reason is None or resolved.reason in r.REASONS
    assert resolved.reason != r.INTERNAL
    assert all(_is_address(a) for a in resolved.addresses), resolved.addresses
    assert (probed.reason == r.DNS_MALFORMED) == (resolved.reason == r.DNS_MALFORMED), (probed.log, resolved)


def _is_address(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9.]+|[0-9a-f:.]+", text))


@FUZZ
@given(body=st.binary(max_size=300), keep_id=st.booleans(), force_qr=st.booleans())
def test_both_paths_agree_on_random_bytes(harness: Harness, body: bytes, keep_id: bool, force_qr: bool) -> None:
    _same_verdict(*harness.both(_random_reply(body, keep_id, force_qr)))


@FUZZ
@given(mutations=st.lists(_MUTATION, min_size=1, max_size=4))
def test_both_paths_agree_on_mutated_answers(harness: Harness, mutations: list[tuple[str, int, int]]) -> None:
    def reply(query: dns.message.Message, wire: bytes) -> bytes:
        """The mutated answer carries the query's id in its first two bytes, and is otherwise the same bytes
        whichever path asked (the rest is built as if the id were 0, and without OPT: the paths differ in
        whether they send EDNS, and a server that ignores it answers both alike)."""
        query.id = 0
        query.use_edns(False)
        return wire[:2] + _mutate(_valid_answer(query), mutations)[2:]

    _same_verdict(*harness.both(reply))


# --- Well-formed answers with random records ------------------------------------------------------------

_NAMES = st.sampled_from(["fuzz.test.", "FUZZ.test.", "other.test.", "a.b.fuzz.test.", "test.", "."])
_RDATA = st.one_of(
    st.tuples(st.just("A"), st.ip_addresses(v=4).map(str)),
    st.tuples(st.just("AAAA"), st.ip_addresses(v=6).map(str)),
    st.tuples(st.just("TXT"), st.text("abcxyz 0123", max_size=300).map(
        lambda t: " ".join(f'"{t[i:i + 200]}"' for i in range(0, len(t), 200)) or '""')),
    st.tuples(st.just("CNAME"), _NAMES),
    st.tuples(st.just("NS"), _NAMES),
    st.tuples(st.just("MX"), _NAMES.map(lambda n: f"10 {n}")),
    st.tuples(st.just("SOA"), st.integers(0, 2**32 - 1).map(lambda s: f"ns1.test. admin.test. {s} 3600 600 86400 60")),
)
_RR = st.tuples(_NAMES, st.integers(0, 2**32 - 1), _RDATA)
_SECTION = st.lists(_RR, max_size=6)
_RCODE_REASONS = {2: r.DNS_SERVFAIL, 3: r.DNS_NXDOMAIN, 5: r.DNS_REFUSED}


def _rrsets(rrs: list[tuple[str, int, tuple[str, str]]]) -> list[dns.rrset.RRset]:
    out: list[dns.rrset.RRset] = []
    for name, ttl, (rtype, text) in rrs:
        rrset = dns.rrset.from_text(name, ttl, "IN", rtype, text)
        for existing in out:
            if existing.match(rrset.name, rrset.rdclass, rrset.rdtype, rrset.covers):
                existing.union_update(rrset)
                break
        else:
            out.append(rrset)
    return out


@FUZZ
@given(rcode=st.sampled_from([0, 0, 0, 1, 2, 3, 4, 5, 9]), aa=st.booleans(), answer=_SECTION, authority=_SECTION,
       additional=_SECTION, edns=st.booleans(), validate=st.booleans())
def test_random_record_sets(harness: Harness, rcode: int, aa: bool, answer, authority, additional, edns: bool,
                            validate: bool) -> None:
    sections = (_rrsets(answer), _rrsets(authority), _rrsets(additional))

    def reply(query: dns.message.Message, wire: bytes) -> bytes:
        resp = dns.message.make_response(query)
        if not edns:
            resp.use_edns(False)
        resp.set_rcode(rcode)
        if aa:
            resp.flags |= dns.flags.AA
        resp.answer, resp.authority, resp.additional = (list(s) for s in sections)
        return resp.to_wire(max_size=0xFFFF)

    result, elapsed = harness.probe(reply, validate=validate)
    _sane(result, elapsed)
    assert elapsed < TIMEOUT, f"a well-formed answer was waited out: {result.log}"
    answering = _answering(sections[0])
    counts = [sum(len(rrset) for rrset in section) for section in (answering, *sections[1:])]
    details = result.details
    assert (details[r.D_DNS_RCODE], details[r.D_DNS_AA]) == (rcode, int(aa))
    assert [details[r.D_DNS_ANSWER_RRS], details[r.D_DNS_AUTHORITY_RRS], details[r.D_DNS_ADDITIONAL_RRS]] == counts
    has_a = any(rrset.rdtype == dns.rdatatype.A for rrset in answering)
    if rcode != 0:
        assert result.reason == _RCODE_REASONS.get(rcode, r.DNS_RCODE)
    elif validate and not has_a:
        assert result.reason == r.DNS_ANSWER_MISMATCH
    else:
        assert result.success, result.log


def _answering(answer: list[dns.rrset.RRset]) -> list[dns.rrset.RRset]:
    """The RRsets owned by QNAME or a name its CNAME chain reaches (first CNAME of each owner, no loops)."""
    names = [dns.name.from_text(QNAME)]
    while len(names) <= 16:
        cname = next((s for s in answer if s.rdtype == dns.rdatatype.CNAME and s.name == names[-1]), None)
        if cname is None or cname[0].target in names:
            break
        names.append(cname[0].target)
    return [rrset for rrset in answer if rrset.name in names]


def test_fuzz_server_is_ours() -> None:
    """The harness really answers over UDP on loopback (guards against a silently idle fuzzer)."""
    h = Harness()
    try:
        result, _ = h.probe(lambda query, wire: _valid_answer(query))
    finally:
        h.close()
    assert result.success and result.details[r.D_DNS_ANSWER_RRS] == 1
    assert result.details[r.D_ADDRESS] == "127.0.0.1"
