"""Probe durations are read at the event, and time a reply spends waiting for a busy event loop is not
counted against the target (exporter/probers/clock.py; kernel stamps for DNS over UDP and plain HTTP, the
first delivery over TLS)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import dns.message
import dns.rrset
import pytest
from aiohttp.client_proto import ResponseHandler

from exporter import eventloop
from exporter.checks import Check
from exporter.config.model import DNSProbe, Module, Resolver, TLSConfig
from exporter.probers import clock, http, udpmux
from exporter.probers import dns as dns_prober
from exporter.probers import result as r
from tests.servers.http import http_check, make_pki, start_http

BLOCK = 0.15  # seconds the test stalls the event loop after the answer has arrived


class _ThreadServer:
    """A loopback server on its own thread, so it answers however busy the test's event loop is.
    ``_serve_one`` handles one request on ``self.sock`` (which has a short timeout) and sets ``self.seen``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.seen = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                self._serve_one()
            except TimeoutError:
                continue

    def _serve_one(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


class PromptDNS(_ThreadServer):
    """A UDP DNS server that answers at once; ``seen`` is set when it answered."""

    def __init__(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        super().__init__(sock)

    def _serve_one(self) -> None:
        data, peer = self.sock.recvfrom(4096)
        query = dns.message.from_wire(data)
        answer = dns.message.make_response(query)
        answer.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", "127.0.0.1"))
        self.sock.sendto(answer.to_wire(), peer)
        self.seen.set()


@pytest.fixture
async def prompt_dns():
    server = PromptDNS()
    yield server
    server.close()
    await udpmux.close()


def dns_check(port: int) -> Check:
    server = Resolver(name=f"127.0.0.1:{port}", host="127.0.0.1", port=port)
    module = Module(name="dns_test", prober="dns", dns=DNSProbe(query_type="A"))
    return Check(service="svc", provider="svc", region="eu", check="dns", target="www.test", resolver=server.name,
                 module=module, resolvers=(), dns_server=server, query_name="www.test")


def test_realtime_stamps_convert_onto_the_probe_clock():
    before = clock.now()
    stamp = time.time_ns()
    offset = clock.RealtimeOffset()
    converted = offset.convert(stamp)
    assert before - 0.01 < converted <= clock.now()
    assert offset.convert(time.time_ns() + 60 * 10**9) <= clock.now()  # a stamp from the future: the present
    assert offset.convert(stamp - 2 * 10**9) == pytest.approx(converted - 2, abs=1e-6)


async def test_udp_answer_carries_its_kernel_arrival_time(prompt_dns):
    mux = udpmux.get(socket.AF_INET)
    if not mux.stamped:
        pytest.skip("no kernel receive timestamps on this platform")
    loop = asyncio.get_running_loop()
    wire = dns.message.make_query("www.test", "A").to_wire()
    task = asyncio.ensure_future(mux.query(wire, wire[12:], "127.0.0.1", prompt_dns.port, loop.time() + 2))
    await asyncio.sleep(0)  # the query goes out
    assert prompt_dns.seen.wait(2)
    time.sleep(BLOCK)  # the loop is busy while the answer sits in the socket buffer
    answer = await task
    assert answer.sent <= answer.received < clock.now() - BLOCK * 0.9
    assert answer.received - answer.sent < BLOCK / 2


async def test_dns_probe_leaves_out_time_the_answer_waited_for_the_loop(prompt_dns):
    if not udpmux.get(socket.AF_INET).stamped:
        pytest.skip("no kernel receive timestamps on this platform")
    loop = asyncio.get_running_loop()
    begun = clock.now()
    task = asyncio.ensure_future(dns_prober.probe(dns_check(prompt_dns.port), deadline=loop.time() + 2))
    await asyncio.sleep(0)
    assert prompt_dns.seen.wait(2)
    time.sleep(BLOCK)
    res = await task
    assert res.success, res.log
    assert clock.now() - begun > BLOCK
    assert res.duration_seconds < BLOCK / 2
    assert res.phases[r.PHASE_REQUEST] <= res.duration_seconds


def test_durations_are_not_rounded_to_the_loop_clock():
    """Under uvloop the loop clock has whole milliseconds; ours must not (three probes all on a whole
    millisecond would be a one-in-a-billion chance)."""
    pytest.importorskip("uvloop")
    server = PromptDNS()

    async def durations() -> list[float]:
        loop = asyncio.get_running_loop()
        try:
            return [(await dns_prober.probe(dns_check(server.port), deadline=loop.time() + 2)).duration_seconds
                    for _ in range(3)]
        finally:
            await udpmux.close()

    try:
        measured = eventloop.run(durations(), preference="uvloop")
    finally:
        server.close()
    assert all(0 < d < 1 for d in measured)
    assert any(abs(d * 1000 - round(d * 1000)) > 1e-6 for d in measured)


class PromptHTTP(_ThreadServer):
    """An HTTP server that answers each request ``DELAY`` after reading it; ``seen`` is set when it has
    read a request."""

    DELAY = 0.02
    RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"

    def __init__(self) -> None:
        super().__init__(socket.create_server(("127.0.0.1", 0)))

    def _serve_one(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(2)
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            self.seen.set()
            time.sleep(self.DELAY)
            conn.sendall(self.RESPONSE)
            conn.recv(1)  # until the prober closes


async def test_plain_http_reply_carries_its_kernel_arrival_time():
    """A plain http:// hop reads with the kernel's receive stamps: a response that sat in the socket buffer
    while the loop was busy is timed when it arrived, first byte, head and body alike."""
    if not clock.STAMPED:
        pytest.skip("no kernel receive timestamps on this platform")
    server = PromptHTTP()
    try:
        loop = asyncio.get_running_loop()
        begun = clock.now()
        task = asyncio.ensure_future(http.probe(http_check(f"http://127.0.0.1:{server.port}/"),
                                                deadline=loop.time() + 3))
        while not server.seen.is_set():  # the request goes out
            await asyncio.sleep(0.001)
        time.sleep(BLOCK)  # the loop is busy while the answer arrives and sits in the socket buffer
        res = await task
    finally:
        server.close()
    assert res.success, res.log
    assert clock.now() - begun > BLOCK
    assert PromptHTTP.DELAY * 0.9 < res.phases[r.PHASE_PROCESSING] < BLOCK / 2
    assert res.phases[r.PHASE_TRANSFER] < BLOCK / 2
    assert res.duration_seconds < BLOCK / 2
    assert sum(res.phases.values()) <= res.duration_seconds + 1e-6


async def test_tls_first_byte_ends_processing_and_later_waiting_is_not_counted(monkeypatch, tmp_path):
    """Over TLS aiohttp reads the response: its first delivery is the stamp, and the loop's later delay
    between that callback and the probe resuming is left out."""
    original = ResponseHandler.data_received
    stalled: list[bool] = []

    def slow_to_resume(self: ResponseHandler, data: bytes) -> None:
        if not stalled:  # the loop is busy between the first bytes being handed over and the probe resuming
            stalled.append(True)
            time.sleep(BLOCK)
        original(self, data)

    monkeypatch.setattr(ResponseHandler, "data_received", slow_to_resume)
    pki = make_pki(tmp_path)
    site = await start_http(ssl_context=pki.server_context(pki.valid))
    try:
        loop = asyncio.get_running_loop()
        begun = clock.now()
        res = await http.probe(http_check(site.url("/"), tls_config=TLSConfig(ca_file=pki.ca_file)),
                               deadline=loop.time() + 3)
        assert res.success, res.log
        assert stalled and clock.now() - begun > BLOCK
        assert res.phases[r.PHASE_PROCESSING] < BLOCK / 2
        assert res.duration_seconds < BLOCK / 2
        assert sum(res.phases.values()) <= res.duration_seconds
    finally:
        await http.close()
        await site.stop()


async def test_http_headers_trickling_in_are_timed_in_full():
    """Only the event loop's own delay is left out: a peer slow to finish its headers is still slow."""
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n")
        await writer.drain()
        await asyncio.sleep(BLOCK)
        writer.write(b"Content-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        res = await http.probe(http_check(f"http://127.0.0.1:{port}/"), deadline=loop.time() + 3)
        assert res.success, res.log
        assert res.duration_seconds >= BLOCK * 0.95
        assert res.phases[r.PHASE_PROCESSING] < BLOCK / 2  # the first byte came at once
    finally:
        await http.close()
        server.close()
        await server.wait_closed()
