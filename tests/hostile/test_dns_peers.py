"""The DNS prober against hostile DNS peers: every case ends on time, with a bounded reason, leaking nothing.

UDP queries share one socket per event loop (exporter/probers/udpmux.py), so these cases also prove that a
datagram with the wrong id or the wrong question is never taken as the answer, and that the real answer
arriving after it still is. The outcomes asserted here are the ones documented in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from exporter.checks import Check
from exporter.config.model import DNSProbe, Module, Resolver
from exporter.probers import clock, udpmux
from exporter.probers import dns as dns_prober
from exporter.probers import result as r
from exporter.probers.resolve import resolve
from exporter.probers.result import ProbeLog
from tests.hostile.support import FAST, QUICK, assert_outcome, deadline, probe_hostile
from tests.servers.dns import pointer_loop

LATE = 0.15  # how long after the junk a "junk, then the answer" peer sends the real answer
FLOOD_DATAGRAMS = 300
FLOOD_SIZE = 60_000
SMALL_PEAK = 4 * 1024 * 1024  # traced peak allowed while a flood is read and dropped

Send = Callable[[bytes], None]
Behaviour = Callable[[dns.message.Message, bytes, Send], Awaitable[None]]


# --- Peers ----------------------------------------------------------------------------------------------


def answer(query: dns.message.Message, *, records: int = 1) -> dns.message.Message:
    resp = dns.message.make_response(query)
    resp.flags |= dns.flags.AA
    q = query.question[0]
    if records:
        resp.answer.append(dns.rrset.from_text_list(q.name, 300, "IN", "A",
                                                    [f"127.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
                                                     for i in range(1, records + 1)]))
    return resp


def other_id(wire: bytes) -> bytes:
    qid = (int.from_bytes(wire[:2], "big") + 1 + secrets.randbelow(0xFFFE)) & 0xFFFF
    return qid.to_bytes(2, "big") + wire[2:]


def other_question(query: dns.message.Message) -> bytes:
    resp = answer(query)
    resp.question = [dns.rrset.RRset(dns.name.from_text("other.test."), 1, 1)]
    resp.answer = [dns.rrset.from_text("other.test.", 300, "IN", "A", "127.0.0.66")]
    return resp.to_wire()


async def never(query, wire, send) -> None:
    return None


async def wrong_id(query, wire, send) -> None:
    send(other_id(answer(query).to_wire()))


async def wrong_id_then_answer(query, wire, send) -> None:
    send(other_id(answer(query).to_wire()))
    await asyncio.sleep(LATE)
    send(answer(query).to_wire())


async def wrong_question(query, wire, send) -> None:
    send(other_question(query))


async def wrong_question_then_answer(query, wire, send) -> None:
    send(other_question(query))
    await asyncio.sleep(LATE)
    send(answer(query).to_wire())


async def query_echoed(query, wire, send) -> None:
    send(wire)  # our own query back: right id and question, but QR clear


async def truncated(query, wire, send) -> None:
    resp = answer(query, records=0)
    resp.flags |= dns.flags.TC
    send(resp.to_wire())


async def not_dns(query, wire, send) -> None:
    send(b"\x00\x01garbage")


async def corrupt_body(query, wire, send) -> None:
    good = answer(query).to_wire()
    send(good[:12] + good[12:-3])  # right header and question, the answer record cut short


async def class_hs(query, wire, send) -> None:
    resp = answer(query, records=0)
    resp.answer.append(dns.rrset.from_text(query.question[0].name, 300, "HS", "A", r"\# 4 7f000001"))
    send(resp.to_wire())


async def other_owner(query, wire, send) -> None:
    resp = answer(query, records=0)
    resp.answer.append(dns.rrset.from_text("elsewhere.test.", 300, "IN", "A", "127.0.0.1"))
    send(resp.to_wire())


async def cname_loop(query, wire, send) -> None:
    resp = answer(query, records=0)
    name = query.question[0].name
    resp.answer.append(dns.rrset.from_text(name, 300, "IN", "CNAME", "loop.test."))
    resp.answer.append(dns.rrset.from_text("loop.test.", 300, "IN", "CNAME", name.to_text()))
    send(resp.to_wire())


async def compression_loop(query, wire, send) -> None:
    send(pointer_loop(query))


async def edns_formerr(query, wire, send) -> None:
    if query.edns < 0:
        send(answer(query).to_wire())
        return
    resp = dns.message.make_response(query)
    resp.use_edns(False)
    resp.set_rcode(dns.rcode.FORMERR)
    send(resp.to_wire())


async def flood(query, wire, send) -> None:
    """Big datagrams that look like DNS responses to other queries, in bursts, and no answer."""
    junk = bytearray(secrets.token_bytes(FLOOD_SIZE))
    junk[2] |= 0x80  # QR set: a response, to some query we never asked
    for i in range(FLOOD_DATAGRAMS):
        junk[0:2] = other_id(wire)[:2]
        send(bytes(junk))
        if i % 32 == 31:
            await asyncio.sleep(0)


async def flood_then_answer(query, wire, send) -> None:
    await flood(query, wire, send)
    await asyncio.sleep(LATE)
    send(answer(query).to_wire())


class _UDPPeer(asyncio.DatagramProtocol):
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.queries = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.queries += 1
        query = dns.message.from_wire(data)

        def send(wire: bytes) -> None:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.sendto(wire, addr)

        task = asyncio.ensure_future(self.behaviour(query, data, send))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def error_received(self, exc: Exception) -> None:
        pass  # the prober gave up and an ICMP error came back: irrelevant here


TCPHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def tcp_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # accept, read, never answer; ends when the client hangs up


async def tcp_drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    length = struct.unpack("!H", await reader.readexactly(2))[0]
    query = dns.message.from_wire(await reader.readexactly(length))
    wire = answer(query).to_wire()
    for byte in struct.pack("!H", len(wire)) + wire:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.1)


async def tcp_huge_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Close to the largest answer TCP framing allows (~64 KiB): a few hundred long TXT records."""
    length = struct.unpack("!H", await reader.readexactly(2))[0]
    query = dns.message.from_wire(await reader.readexactly(length))
    resp = answer(query, records=0)
    resp.answer.append(dns.rrset.from_text_list(query.question[0].name, 300, "IN", "TXT",
                                                [f'"{i:03d}{"x" * 240}"' for i in range(HUGE_RECORDS)]))
    wire = resp.to_wire(max_size=0xFFFF)
    writer.write(struct.pack("!H", len(wire)) + wire)
    await writer.drain()
    await reader.read()


async def tcp_huge_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A 64 KiB frame of garbage, then more garbage for as long as the client reads."""
    await reader.readexactly(struct.unpack("!H", await reader.readexactly(2))[0])
    writer.write(b"\xff\xff" + secrets.token_bytes(0xFFFF))
    with contextlib.suppress(ConnectionError):
        for _ in range(64):
            writer.write(secrets.token_bytes(0xFFFF))
            await writer.drain()


HUGE_RECORDS = 250  # TXT records of 244 bytes: just under 64 KiB in all


@dataclass
class Peer:
    """A DNS peer on one loopback port: a UDP behaviour, and optionally a TCP one on the same port."""

    port: int
    udp: _UDPPeer
    transport: asyncio.DatagramTransport
    tcp: asyncio.Server | None = None
    tcp_tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def server(self) -> Resolver:
        return Resolver(name=f"127.0.0.1:{self.port}", host="127.0.0.1", port=self.port)

    async def stop(self) -> None:
        self.transport.close()
        if self.tcp is not None:
            self.tcp.close()
        for task in [*self.udp.tasks, *self.tcp_tasks]:
            task.cancel()
        await asyncio.gather(*self.udp.tasks, *self.tcp_tasks, return_exceptions=True)
        if self.tcp is not None:
            await self.tcp.wait_closed()


async def start_peer(behaviour: Behaviour, tcp: TCPHandler | None = None) -> Peer:
    loop = asyncio.get_running_loop()
    for _ in range(20):  # the UDP and TCP ports must match: retry if the TCP port's UDP twin is taken
        server = None
        tasks: set[asyncio.Task[None]] = set()
        if tcp is not None:
            async def handle(reader, writer, handler=tcp, tasks=tasks) -> None:
                tasks.add(asyncio.current_task())
                try:
                    await handler(reader, writer)
                except (ConnectionError, asyncio.IncompleteReadError):
                    pass
                finally:
                    tasks.discard(asyncio.current_task())
                    writer.close()

            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
        else:
            port = 0
        protocol = _UDPPeer(behaviour)
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda p=protocol: p, local_addr=("127.0.0.1", port))
        except OSError:
            if server is not None:
                server.close()
                await server.wait_closed()
            continue
        return Peer(transport.get_extra_info("sockname")[1], protocol, transport, server, tasks)
    raise RuntimeError("no free UDP+TCP port pair")


def dns_check(server: Resolver, *, transport: str = "udp") -> Check:
    module = Module(name="dns_a", prober="dns", dns=DNSProbe(query_name="www.test", query_type="A",
                                                             transport_protocol=transport))
    return Check(service="svc", provider="svc", region="eu", check="dns", target="www.test", resolver=server.name,
                 module=module, resolvers=(), dns_server=server, query_name="www.test")


@pytest.fixture(autouse=True)
async def shared_socket():
    """Open the loop's shared UDP socket before the leak baseline: it outlives probes by design."""
    mux = udpmux.get(socket.AF_INET)
    yield mux
    assert not mux.pending, "a query was left outstanding on the shared socket"
    await udpmux.close()


# --- Cases ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    behaviour: Behaviour
    reason: str | None  # None: the probe succeeds
    stalls: bool  # True: ends at the deadline; False: must end quickly
    tcp: TCPHandler | None = None
    transport: str = "udp"
    memory: bool = False
    answers: int = 1  # dns_answer_rrs on success


CASES = {
    "never answers": Case(never, r.DNS_TIMEOUT, stalls=True),
    "wrong transaction id": Case(wrong_id, r.DNS_TIMEOUT, stalls=True),
    "wrong id, then the answer": Case(wrong_id_then_answer, None, stalls=False),
    "answers another question": Case(wrong_question, r.DNS_MALFORMED, stalls=True),
    "another question, then the answer": Case(wrong_question_then_answer, None, stalls=False),
    "echoes the query (QR clear)": Case(query_echoed, r.DNS_MALFORMED, stalls=True),
    "not DNS at all": Case(not_dns, r.DNS_MALFORMED, stalls=True),
    "answer cut short": Case(corrupt_body, r.DNS_MALFORMED, stalls=False),
    "TC set, no TCP service": Case(truncated, r.DNS_UNREACHABLE, stalls=False),
    "flood of big datagrams": Case(flood, r.DNS_TIMEOUT, stalls=True, memory=True),
    "flood, then the answer": Case(flood_then_answer, None, stalls=False, memory=True),
    "TC, then a 64 KiB TCP answer": Case(truncated, None, stalls=False, tcp=tcp_huge_answer, memory=True),
    "TC, then a 64 KiB garbage TCP frame": Case(truncated, r.DNS_MALFORMED, stalls=False, tcp=tcp_huge_garbage,
                                                memory=True),
    "TCP accepts, never answers": Case(never, r.DNS_TIMEOUT, stalls=True, tcp=tcp_silent, transport="tcp"),
    "TCP drips bytes": Case(never, r.DNS_TIMEOUT, stalls=True, tcp=tcp_drip, transport="tcp"),
    "A record of class HS": Case(class_hs, None, stalls=False, answers=0),
    "A record for another name": Case(other_owner, None, stalls=False, answers=0),
    "CNAME loop": Case(cname_loop, None, stalls=False, answers=2),
    "compression pointer loop": Case(compression_loop, r.DNS_MALFORMED, stalls=False),
    "FORMERR to EDNS": Case(edns_formerr, None, stalls=False),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
async def test_hostile_dns_peer(case: Case) -> None:
    peer = await start_peer(case.behaviour, case.tcp)
    try:
        check = dns_check(peer.server, transport=case.transport)
        out = await probe_hostile(dns_prober.probe, check, timeout=deadline(case.stalls), measure_memory=case.memory)
    finally:
        await peer.stop()
    assert_outcome(out, case.reason, stalls=case.stalls, peak_limit=SMALL_PEAK if case.memory else None)
    if case.reason is None:
        assert out.result.details[r.D_DNS_ANSWER_RRS] == (HUGE_RECORDS if case.tcp is tcp_huge_answer else case.answers)
    print(f"| {case.behaviour.__name__} | {out.reason or 'success'} | {out.elapsed:.3f} s |")


RESOLVED = {  # the same peers as the HTTP/TCP probers' resolver: (reason, addresses)
    "A record of class HS": (class_hs, r.DNS_NO_ANSWER, ()),
    "A record for another name": (other_owner, r.DNS_NO_ANSWER, ()),
    "CNAME loop": (cname_loop, r.DNS_NO_ANSWER, ()),
    "compression pointer loop": (compression_loop, r.DNS_MALFORMED, ()),
    "FORMERR to EDNS": (edns_formerr, None, ("127.0.0.1",)),
}


@pytest.mark.parametrize(("behaviour", "reason", "addresses"), RESOLVED.values(), ids=list(RESOLVED))
async def test_hostile_peer_as_a_resolver(behaviour: Behaviour, reason: str | None, addresses: tuple[str, ...]) -> None:
    """Name resolution reads these answers as the DNS prober does, and ends quickly with a bounded reason."""
    peer = await start_peer(behaviour)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        res = await resolve("www.test", [peer.server], fallback=False, deadline=started + FAST,
                            log=ProbeLog(clock.now()))
    finally:
        await peer.stop()
    elapsed = loop.time() - started
    assert (res.reason, res.addresses) == (reason, addresses)
    assert elapsed < QUICK, f"took {elapsed:.2f}s"
    print(f"| resolve {behaviour.__name__} | {res.reason or 'success'} | {elapsed:.3f} s |")


async def test_icmp_port_unreachable_fails_only_its_own_query() -> None:
    """Nothing listens: the ICMP error fails that query at once; a concurrent query elsewhere still succeeds."""
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    good = await start_peer(wrong_id_then_answer)
    try:
        dead = Resolver(name=f"127.0.0.1:{port}", host="127.0.0.1", port=port)
        refused, answered = await asyncio.gather(
            probe_hostile(dns_prober.probe, dns_check(dead), timeout=FAST),
            probe_hostile(dns_prober.probe, dns_check(good.server), timeout=FAST))
    finally:
        await good.stop()
    assert refused.reason == r.DNS_UNREACHABLE and refused.elapsed < QUICK
    assert answered.result.success


async def test_concurrent_queries_to_one_server_each_get_their_own_answer() -> None:
    """Answers arriving in reverse order, each after a wrong-question decoy, still reach the right probe."""
    order: list[int] = []

    async def reverse(query, wire, send) -> None:
        qid = query.id
        order.append(qid)
        await asyncio.sleep(0.3 - 0.03 * len(order))
        send(other_question(query))
        resp = answer(query)
        resp.answer = [dns.rrset.from_text(query.question[0].name, 300, "IN", "A",
                                           f"127.0.{qid >> 8}.{qid & 255}")]
        send(resp.to_wire())

    peer = await start_peer(reverse)
    try:
        results = await asyncio.gather(*(dns_prober.probe(dns_check(peer.server),
                                                          deadline=asyncio.get_running_loop().time() + FAST)
                                          for _ in range(8)))
    finally:
        await peer.stop()
    assert all(res.success for res in results), [res.log for res in results if not res.success]
    assert peer.udp.queries == 8 and len(set(order)) == 8
