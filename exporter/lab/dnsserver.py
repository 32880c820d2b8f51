"""A programmable DNS server on asyncio (UDP and TCP, dnspython wire format).

The lab's authoritative servers and recursive resolvers, and the test suite's DNS peers, are all this
server with a different ``handler``. A handler receives the parsed query and returns an ``Answer``: a
response message, or an instruction to drop the packet (black hole), optionally after a delay.
Nothing here binds anything but the address it is given (always loopback in this project).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.rcode

log = logging.getLogger("exporter.lab.dns")


@dataclass(frozen=True, slots=True)
class Answer:
    message: dns.message.Message | None = None  # None = drop (no response at all)
    delay: float = 0.0  # seconds to wait before answering (or before dropping)
    wire: bytes | None = None  # raw bytes to send instead of ``message`` (malformed-response tests)
    truncate_udp: bool = False  # over UDP: send an empty TC=1 response instead of the message


Handler = Callable[[dns.message.Message, str], Awaitable[Answer] | Answer]
"""handler(query, transport) where transport is "udp" or "tcp"."""

client_address: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar(
    "client_address", default=None)
"""(host, port) of the client whose query the handler is answering. Handlers that answer differently
per client (views keyed by source address, like BIND's match-clients) read it; others ignore it."""


def reply(query: dns.message.Message, rcode: int = dns.rcode.NOERROR, *, aa: bool = True,
          ra: bool = False) -> dns.message.Message:
    """A response skeleton for ``query`` with the given rcode and AA/RA flags."""
    resp = dns.message.make_response(query)
    resp.set_rcode(rcode)
    if aa:
        resp.flags |= dns.flags.AA
    else:
        resp.flags &= ~dns.flags.AA
    if ra:
        resp.flags |= dns.flags.RA
    return resp


class DNSServer:
    """Serve ``handler`` on host:port over UDP and TCP. ``port=0`` picks a free port (same for both)."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self.queries = 0  # number of queries received, both transports

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> DNSServer:
        loop = asyncio.get_running_loop()
        # Bind TCP first to learn a free port, then UDP on the same number (retry a few times on clash).
        for _ in range(20):
            tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port, reuse_address=True)
            port = tcp.sockets[0].getsockname()[1]
            try:
                udp, _ = await loop.create_datagram_endpoint(
                    lambda: _UDPProtocol(self), local_addr=(self.host, port))
            except OSError:
                tcp.close()
                await tcp.wait_closed()
                if self.port:
                    raise
                continue
            self._tcp, self._udp, self.port = tcp, udp, port
            return self
        raise OSError("could not bind UDP and TCP on the same port")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 1.0)
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> DNSServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, data: bytes, transport: str) -> tuple[Answer, dns.message.Message] | None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return None
        self.queries += 1
        answer = self.handler(query, transport)
        if asyncio.iscoroutine(answer) or isinstance(answer, Awaitable):
            answer = await answer
        if answer.delay > 0:
            await asyncio.sleep(answer.delay)
        return answer, query

    async def _handle_udp(self, data: bytes, addr: tuple) -> None:
        client_address.set((addr[0], addr[1]))
        got = await self._answer(data, "udp")
        if got is None or self._udp is None or self._udp.is_closing():
            return
        answer, query = got
        if answer.wire is not None:
            self._udp.sendto(answer.wire, addr)
        elif answer.truncate_udp:
            resp = dns.message.make_response(query)
            resp.flags |= dns.flags.TC
            self._udp.sendto(resp.to_wire(), addr)
        elif answer.message is not None:
            self._udp.sendto(answer.message.to_wire(max_size=65535), addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        peer = writer.get_extra_info("peername")
        client_address.set((peer[0], peer[1]) if peer else None)
        try:
            while True:
                head = await reader.readexactly(2)
                data = await reader.readexactly(struct.unpack("!H", head)[0])
                got = await self._answer(data, "tcp")
                if got is None:
                    return
                answer, _ = got
                wire = answer.wire if answer.wire is not None else (
                    answer.message.to_wire(max_size=65535) if answer.message is not None else None)
                if wire is None:
                    continue  # black hole: keep the connection open, say nothing
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.server._spawn(self.server._handle_udp(data, addr))

    def error_received(self, exc: Exception) -> None:  # ICMP errors from earlier sends: nothing to do
        log.debug("udp error: %s", exc)
