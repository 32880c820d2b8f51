"""Hostile peers: servers that misbehave on purpose, to prove the probers end on time and leak nothing.

    peer = await start_hostile("slowloris")
    check = http_check(peer.url("/"))
    ...
    await peer.stop()

Every peer listens on loopback with port 0 and runs one behaviour (see :data:`BEHAVIOURS`) for every
connection. Behaviours never stop on their own when the point is to outlast the client (an endless
body, a drip of header bytes): they end when the client hangs up, or when :meth:`HostilePeer.stop`
aborts every open connection.

HTTP behaviours
    ``never_answer`` (read the request, send nothing), ``slowloris`` (a status line, then one header
    byte every ``drip`` seconds), ``endless_body`` (a 200 without length, then bytes forever;
    ``chunked=True`` sends them as chunks), ``giant_header`` (one header line that never ends),
    ``many_headers`` (short header lines forever), ``redirect_loop`` (every path redirects to the
    next one), ``redirect`` (one redirect to ``location``), ``bad_chunk_size`` (a chunk size that
    overflows any integer), ``tls_then_mute`` (complete the handshake with ``tls_context``, then
    stop reading for ``mute_for`` seconds, so not even a close_notify is answered), ``gzip_bomb`` (a
    small gzip body that inflates to ``inflated_mb`` MiB of zeros), ``continue_forever`` (``100
    Continue`` interim responses, forever), ``tls_stall`` (read the ClientHello, then send half a TLS
    record and stall).

TCP behaviours
    ``reset`` (RST right after accept: SO_LINGER 0), ``half_open`` (accept, shut the write side at once,
    keep reading), ``mute`` (accept, read everything, never write), ``endless_line`` (bytes without a
    newline, forever).

:class:`FlappingHTTP` and :class:`FlappingTCP` serve the soak run: a target that alternates between
healthy and broken on a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

_FILL = b"x" * 65536


@dataclass
class HostilePeer:
    server: asyncio.Server
    host: str
    port: int
    options: dict[str, object]
    connections: int = 0  # accepted so far
    bytes_sent: int = 0  # by every connection together
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, path: str = "/", *, scheme: str = "http") -> str:
        return f"{scheme}://{self.address}{path}"

    async def stop(self) -> None:
        """Stop listening and abort every open connection (so no behaviour outlives the test)."""
        self.server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = [t for t in self._tasks if not t.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=0.2)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.server.wait_closed(), 2.0)


@dataclass
class Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    peer: HostilePeer

    @property
    def options(self) -> dict[str, object]:
        return self.peer.options

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        self.peer.bytes_sent += len(data)
        await self.writer.drain()

    async def read_head(self) -> bytes:
        return await self.reader.readuntil(b"\r\n\r\n")

    async def drain_input(self) -> None:
        """Read (and drop) whatever the client sends until it hangs up."""
        while await self.reader.read(65536):
            pass


async def start_hostile(behaviour: str, *, host: str = "127.0.0.1", **options: object) -> HostilePeer:
    """A loopback server running ``behaviour`` (a key of BEHAVIOURS) on every connection."""
    run = BEHAVIOURS[behaviour]
    if behaviour == "gzip_bomb":
        gzip_bomb(int(options.get("inflated_mb", 64)))  # type: ignore[arg-type]  # built before, not during, a probe
    holder: list[HostilePeer] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = holder[0]
        peer.connections += 1
        peer._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        peer._tasks.add(task)
        try:
            await run(Conn(reader, writer, peer))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError):
            pass  # the client gave up: exactly what a hostile peer hopes for
        except asyncio.CancelledError:
            pass  # stop() cancelled a behaviour that outlived its connection; the task just ends
        finally:
            peer._writers.discard(writer)
            peer._tasks.discard(task)
            writer.transport.abort()

    server = await asyncio.start_server(handle, host, 0)
    peer = HostilePeer(server=server, host=host, port=server.sockets[0].getsockname()[1], options=options)
    holder.append(peer)
    return peer


# --- HTTP ------------------------------------------------------------------------------------------------
async def _never_answer(c: Conn) -> None:
    await c.drain_input()


async def _slowloris(c: Conn) -> None:
    drip = float(c.options.get("drip", 0.05))  # type: ignore[arg-type]
    await c.read_head()
    await c.send(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while True:
        await asyncio.sleep(drip)
        await c.send(b"a")


async def _endless_body(c: Conn) -> None:
    await c.read_head()
    if c.options.get("chunked"):
        await c.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (len(_FILL), _FILL)
        while True:
            await c.send(chunk)
    await c.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
    while True:
        await c.send(_FILL)


async def _giant_header(c: Conn) -> None:
    await c.read_head()
    await c.send(b"HTTP/1.1 200 OK\r\nX-Giant: ")
    while True:
        await c.send(_FILL)


async def _many_headers(c: Conn) -> None:
    await c.read_head()
    await c.send(b"HTTP/1.1 200 OK\r\n")
    lines = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 40) for i in range(1000))
    while True:
        await c.send(lines)


async def _redirect_loop(c: Conn) -> None:
    head = await c.read_head()
    last = head.split(b" ", 2)[1].rsplit(b"/", 1)[-1]  # "/loop/3" -> b"3"; "/" -> b""
    step = int(last) if last.isdigit() else 0
    await _send_redirect(c, b"/loop/%d" % (step + 1))


async def _redirect(c: Conn) -> None:
    await c.read_head()
    await _send_redirect(c, str(c.options["location"]).encode())


async def _send_redirect(c: Conn, location: bytes) -> None:
    await c.send(b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n"
                 b"Connection: close\r\n\r\n")


async def _bad_chunk_size(c: Conn) -> None:
    await c.read_head()
    await c.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 40 + b"\r\nabc\r\n")
    await c.drain_input()


@functools.lru_cache(maxsize=4)
def gzip_bomb(inflated_mb: int) -> bytes:
    """gzip of ``inflated_mb`` MiB of zeros (about 1 KiB of output per MiB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    return b"".join(packer.compress(zeros) for _ in range(inflated_mb)) + packer.flush()


async def _gzip_bomb(c: Conn) -> None:
    body = gzip_bomb(int(c.options.get("inflated_mb", 64)))  # type: ignore[arg-type]
    await c.read_head()
    await c.send(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    await c.drain_input()


async def _continue_forever(c: Conn) -> None:
    await c.read_head()
    while True:
        await c.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        await asyncio.sleep(0.01)


async def _tls_then_mute(c: Conn) -> None:
    ctx = c.options["tls_context"]
    assert isinstance(ctx, ssl.SSLContext)
    await c.writer.start_tls(ctx)
    c.writer.transport.pause_reading()  # and never read again: a StreamReader read would resume it
    await asyncio.sleep(float(c.options.get("mute_for", 5.0)))  # type: ignore[arg-type]


async def _tls_stall(c: Conn) -> None:
    """Reads the ClientHello, answers with the first 5 bytes of a 16 KiB handshake record, then stalls."""
    await c.reader.read(1)
    await c.send(b"\x16\x03\x03\x40\x00\x02")
    await c.drain_input()


# --- TCP -------------------------------------------------------------------------------------------------
async def _reset(c: Conn) -> None:
    sock = c.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _half_open(c: Conn) -> None:
    sock = c.writer.get_extra_info("socket")
    sock.shutdown(socket.SHUT_WR)
    await c.drain_input()


async def _mute(c: Conn) -> None:
    await c.drain_input()


async def _endless_line(c: Conn) -> None:
    while True:
        await c.send(_FILL)


BEHAVIOURS: dict[str, Callable[[Conn], Awaitable[None]]] = {
    "never_answer": _never_answer,
    "slowloris": _slowloris,
    "endless_body": _endless_body,
    "giant_header": _giant_header,
    "many_headers": _many_headers,
    "redirect_loop": _redirect_loop,
    "redirect": _redirect,
    "bad_chunk_size": _bad_chunk_size,
    "gzip_bomb": _gzip_bomb,
    "continue_forever": _continue_forever,
    "tls_stall": _tls_stall,
    "tls_then_mute": _tls_then_mute,
    "reset": _reset,
    "half_open": _half_open,
    "mute": _mute,
    "endless_line": _endless_line,
}


# --- Flapping targets (soak) -------------------------------------------------------------------------------
class FlappingHTTP:
    """An HTTP target that answers 200 for ``period`` seconds, then refuses connections for as long."""

    def __init__(self, period: float, *, host: str = "127.0.0.1") -> None:
        self.period = period
        self.host = host
        self.port = 0
        self.up = False
        self.served = 0
        self._server: asyncio.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def start(self) -> FlappingHTTP:
        await self._open()
        self._task = asyncio.create_task(self._flap())
        return self

    async def _open(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        self.up = True

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.up = False

    async def _flap(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            if self.up:
                await self._close()
            else:
                with contextlib.suppress(OSError):  # the port was taken meanwhile: stay down this round
                    await self._open()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
            self.served += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()


class FlappingTCP:
    """A TCP target that alternates every ``period`` seconds between a greeting and a reset (RST)."""

    def __init__(self, period: float, *, host: str = "127.0.0.1") -> None:
        self.period = period
        self.host = host
        self.port = 0
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def resetting(self) -> bool:
        assert self._loop is not None
        return int((self._loop.time() - self._t0) / self.period) % 2 == 1

    async def start(self) -> FlappingTCP:
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.resetting:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            writer.write(b"220 ready\r\n")
            await writer.drain()
            await reader.read(1024)
        except OSError:
            pass
        finally:
            writer.transport.abort()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
