"""One HTTP/1.1 exchange on a plain TCP socket the prober connected: a request out, one response in.

The http prober uses this for ``http://`` hops it connects itself (no proxy); TLS and proxies go through
aiohttp. Two reasons, both measured (docs/performance.md):

- Exactness. Every read is a ``recvmsg`` with the kernel's receive stamp (``SO_TIMESTAMPNS``), so the
  first byte of a response is timed when it reached the host, not when a busy event loop got to it.
  aiohttp's transports read with ``recv``, which carries no stamp.
- Cost. A probe sends one small request and reads one response on a connection it closes. aiohttp's
  client machinery (request and response objects, timers, a transport and a stream per connection) costs
  more per probe than everything else the prober does.

What is spoken: HTTP/1.0 and 1.1 responses; 1xx responses are skipped (as Go's client does, without a
count: each is bounded and the probe's deadline ends an endless series); bodies framed by chunked transfer
coding, Content-Length or the end of the connection; gzip and deflate bodies are decoded while read (so
size limits count decoded bytes, as before), other codings are counted as sent. Heads are bounded
(:data:`MAX_HEADER_LINE` per line, :data:`MAX_HEAD_BYTES` in all) and reading pauses while more than
:data:`PAUSE_ABOVE` bytes wait to be consumed, so a hostile peer costs bounded memory.

Errors: bytes that are not an HTTP/1.x response raise :class:`ProtocolError` (``http_protocol``); a peer
that closes before its response is complete raises ``ConnectionResetError`` (``conn_reset``).
"""

from __future__ import annotations

import asyncio
import errno
import re
import socket
import zlib
from collections.abc import Callable
from typing import NamedTuple

from multidict import CIMultiDict, CIMultiDictProxy

from exporter.probers import clock, readiness

MAX_HEADER_LINE = 64 * 1024  # real sites send long CSP and cookie headers
MAX_HEAD_BYTES = 1024 * 1024  # status line, headers and chunked trailers of one response
MAX_CHUNK_LINE = 4 * 1024  # a chunk-size line with its extensions
READ_SIZE = 64 * 1024
PAUSE_ABOVE = 256 * 1024  # unconsumed bytes buffered before reading pauses
DEFAULT_ACCEPT_ENCODING = "gzip, deflate"  # the codings decoded here

_STATUS_LINE = re.compile(rb"HTTP/1\.(\d) (\d{3})(?: (.*))?")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNSAFE = re.compile(r"[\r\n\0]")
_NO_BODY_STATUSES = frozenset({204, 304})
_HTTP_PREFIX = b"HTTP/"


class ProtocolError(Exception):
    """The peer's bytes are not an HTTP/1.x response."""


class Version(NamedTuple):
    major: int
    minor: int


def request(method: str, target: str, headers: list[tuple[str, str]], body: bytes | None) -> bytes:
    """The request head (and body). ``headers`` must include Host; Accept, Accept-Encoding and the body's
    Content-Length / Content-Type are added when absent. Raises ValueError for a line break or NUL in any
    field: nothing the config, a URL or a redirect holds may add header lines."""
    names = {name.lower() for name, _ in headers}
    lines = [f"{method} {target} HTTP/1.1"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    if "accept" not in names:
        lines.append("Accept: */*")
    if "accept-encoding" not in names:
        lines.append(f"Accept-Encoding: {DEFAULT_ACCEPT_ENCODING}")
    if body is not None:
        if "content-length" not in names:
            lines.append(f"Content-Length: {len(body)}")
        if "content-type" not in names:
            lines.append("Content-Type: application/octet-stream")
    if _UNSAFE.search("".join(lines)):  # before the lines are joined with line breaks of their own
        raise ValueError("a request line or header holds a line break or NUL")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
    return data + body if body else data


class Connection:
    """The socket of one exchange, read with kernel receive stamps. It owns the socket: :meth:`close` it.

    Readiness callbacks connect, send the request and read into a buffer; the probe's task is woken only
    when response bytes (or a failure) arrived, and parses them. A probe's task is resumed through several
    coroutines, so each wake-up saved (connect, send) is work saved on every probe.

    Readiness comes from the loop's shared epoll set (:mod:`readiness`) where there is one: the socket is
    registered once for both directions, and ``_reading`` / ``_writing`` only say what an event is used for.
    Elsewhere the loop's own readers and writers are added and removed.
    """

    __slots__ = ("_sock", "_loop", "_fd", "_buffer", "_eof", "_error", "_waiter", "_reading", "_writing",
                 "_out", "_on_connected", "_stamped", "_offset", "_poller", "_readable", "first_arrival",
                 "last_arrival")

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self._sock = sock
        self._loop = loop
        self._fd = sock.fileno()
        self._buffer = bytearray()
        self._eof = False
        self._error: OSError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._reading = False
        self._writing = False
        self._out: memoryview | None = None  # request bytes not yet sent
        self._on_connected: Callable[[], None] | None = None
        self._stamped = clock.enable_timestamps(sock)
        self._offset = clock.RealtimeOffset()
        self._readable = False  # (shared epoll set) readiness to read was reported while not reading
        self._poller = readiness.for_loop(loop)
        if self._poller is not None:
            try:
                self._poller.watch(self._fd, self._on_event)
            except OSError:  # a descriptor epoll does not take: the loop's readers and writers still work
                self._poller = None
        self.first_arrival: float | None = None  # when the first response byte reached the host
        self.last_arrival: float | None = None  # ... and the latest

    async def exchange(self, address: tuple[str, int], request: bytes, method: str,
                       on_connected: Callable[[], None]) -> Response:
        """Connect to ``address``, send ``request`` and return the final response's head (1xx responses
        skipped); its body is read with ``Response.read``. ``on_connected`` runs when the connection is up.
        Connect errors are the ``OSError`` subclasses ``connect`` raises (ConnectionRefusedError, ...)."""
        err = self._sock.connect_ex(address)
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
            raise OSError(err, f"Connect call failed {address}")
        self._out = memoryview(request)
        self._on_connected = on_connected
        self._writing = True
        if self._poller is None:
            self._loop.add_writer(self._fd, self._on_writable)
        return await self.response(method)

    async def response(self, method: str) -> Response:
        """The final response's head (1xx responses skipped); its body is read with ``Response.read``."""
        while True:
            status_line, lines, arrived = await self._head()
            match = _STATUS_LINE.fullmatch(status_line)
            if match is None:
                raise ProtocolError(f"not an HTTP/1.x status line: {_show(status_line)}")
            status = int(match[2])
            if 100 <= status < 200 and status != 101:
                continue
            fields = _fields(lines)
            reason = (match[3] or b"").decode("utf-8", "surrogateescape").strip()
            return Response(self, status, reason, Version(1, int(match[1])), fields, method, arrived)

    def close(self) -> None:
        """Stop reading and close the socket (no graceful shutdown is owed on a plain connection)."""
        self._stop_writing()
        self._stop_reading()
        self._eof = True
        if self._poller is not None:
            self._poller.forget(self._fd)
        self._sock.close()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.cancel()

    # --- connecting and sending ---------------------------------------------------------------------------
    def _on_event(self, events: int) -> None:
        """Readiness from the shared epoll set (edge-triggered: each change is reported once)."""
        if events & readiness.WRITABLE and self._writing:
            self._on_writable()
        if events & readiness.READABLE:
            # Not reading yet, or a hang-up (the end or an error, read when the task asks for more): no new
            # edge comes for what waits, so remember it.
            if events & readiness.HANGUP or not self._reading:
                self._readable = True
            if self._reading:
                self._on_readable()

    def _on_writable(self) -> None:
        """The socket is writable: the first time, the connect ended. A failed connect is reported by the
        first ``send`` (the pending socket error, as ``getsockopt(SO_ERROR)`` would read it), so success
        costs no extra system call."""
        out = self._out
        if out is None:
            self._stop_writing()
            return
        try:
            sent = self._sock.send(out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(exc)  # before on_connected: a connect error stays in the connect phase
            return
        if self._on_connected is not None:
            connected, self._on_connected = self._on_connected, None
            connected()
        if sent < len(out):
            self._out = out[sent:]
            return
        self._out = None
        self._start_reading()  # before the writer goes: the loop keeps one registration for the socket
        self._stop_writing()

    def _stop_writing(self) -> None:
        if self._writing:
            self._writing = False
            if self._poller is None:
                _unregister(self._loop.remove_writer, self._fd)

    def _fail(self, exc: OSError) -> None:
        self._error = exc
        self._stop_writing()
        self._stop_reading()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- reading -----------------------------------------------------------------------------------------
    def _start_reading(self) -> None:
        if not self._reading and not self._eof and self._error is None and self._out is None:
            self._reading = True
            if self._poller is None:
                self._loop.add_reader(self._fd, self._on_readable)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            if self._poller is None:
                _unregister(self._loop.remove_reader, self._fd)

    def _on_readable(self, drain: bool = False) -> None:
        """Read what arrived. With the shared epoll set, reads go on until one comes back short: the bytes
        left after a full read would not be reported again. ``drain`` reads on until nothing is left (or
        the end): :meth:`_more` asks for that when readiness was reported and not acted on."""
        sock, got = self._sock, False
        while True:
            try:
                if self._stamped:
                    data, ancillary, _, _ = sock.recvmsg(READ_SIZE, clock.ANCILLARY_SPACE)
                    self._offset.refresh()
                    at = clock.arrival(ancillary, self._offset)
                else:
                    data = sock.recv(READ_SIZE)
                    at = clock.now()
            except (BlockingIOError, InterruptedError):
                self._readable = False
                if not got:  # a spurious report: nothing to wake the task for
                    return
                break
            except OSError as exc:
                self._error = exc
                self._stop_reading()
                break
            if not data:
                self._eof = True
                self._stop_reading()
                break
            got = True
            if self.first_arrival is None:
                self.first_arrival = at
            self.last_arrival = at
            self._buffer += data
            if len(self._buffer) > PAUSE_ABOVE:
                self._stop_reading()
                if len(data) == READ_SIZE:  # more may be waiting, unreported
                    self._readable = True
                break
            if self._poller is None or len(data) < READ_SIZE and not drain:
                break
        self._wake()

    async def _more(self) -> bool:
        """Wait until more bytes are buffered; False at the end of the connection. Bytes that came with the
        end (or an error) in one wake-up are handed over first: the end is reported by the next call."""
        if self._error is not None:
            raise self._error
        if self._eof:
            return False
        before = len(self._buffer)
        self._start_reading()
        if self._readable and self._reading:  # reported earlier, or left behind by a pause or a hang-up:
            self._readable = False  # no new edge comes for it, so read it now
            self._on_readable(drain=True)
        if len(self._buffer) == before and not self._eof and self._error is None:
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        if len(self._buffer) > before:
            return True
        if self._error is not None:
            raise self._error
        return not self._eof

    def _take(self, n: int) -> bytes:
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        if not self._reading and len(self._buffer) <= PAUSE_ABOVE // 2:
            self._start_reading()
        return data

    async def _line(self, limit: int, what: str) -> bytes:
        """One line (without its CRLF or LF), of at most ``limit`` bytes."""
        while True:
            end = self._buffer.find(b"\n", 0, limit + 2)
            if end >= 0:
                line = self._take(end + 1)[:-1]
                return line[:-1] if line.endswith(b"\r") else line
            if len(self._buffer) > limit + 1:
                raise ProtocolError(f"{what} longer than {limit} bytes")
            if not await self._more():
                raise ConnectionResetError(f"connection closed in the middle of the {what}")

    async def _head(self) -> tuple[bytes, list[bytes], float | None]:
        """The status line and header lines of the next response, and when the last of them arrived."""
        buffer = self._buffer
        while True:
            if not _HTTP_PREFIX.startswith(bytes(buffer[:5])):
                raise ProtocolError(f"not an HTTP/1.x response: {_show(bytes(buffer[:40]))}")
            end = _head_end(buffer)
            if end >= 0:
                lines = self._take(end).split(b"\n")
                break
            if len(buffer) > MAX_HEAD_BYTES:
                raise ProtocolError(f"response head longer than {MAX_HEAD_BYTES} bytes")
            if len(buffer) - buffer.rfind(b"\n") - 1 > MAX_HEADER_LINE:
                raise ProtocolError(f"header line longer than {MAX_HEADER_LINE} bytes")
            if not await self._more():
                what = "response head" if buffer or self.first_arrival else "response"
                raise ConnectionResetError(f"connection closed before the end of the {what}")
        lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        while lines and not lines[-1]:
            lines.pop()
        if any(len(line) > MAX_HEADER_LINE for line in lines):
            raise ProtocolError(f"header line longer than {MAX_HEADER_LINE} bytes")
        return lines[0], lines[1:], self.last_arrival


def _unregister(remove: Callable[[int], object], fd: int) -> None:
    try:
        remove(fd)
    except (ValueError, OSError, RuntimeError):  # the socket or the loop is already closed
        pass


def _head_end(buffer: bytearray) -> int:
    """The length of a complete head at the start of ``buffer`` (up to its blank line), or -1. Lines may end
    in CRLF or a bare LF."""
    crlf = buffer.find(b"\n\r\n")
    lf = buffer.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf + 3
    return lf + 2 if lf >= 0 else -1


Fields = list[list[bytes]]  # [name, value] pairs as received


def _fields(lines: list[bytes]) -> Fields:
    fields: Fields = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):  # obsolete line folding continues the previous field
            if not fields:
                raise ProtocolError("a header continuation line before any header")
            fields[-1][1] += b" " + line.strip(b" \t")
            continue
        name, sep, value = line.partition(b":")
        if not sep or _TOKEN.fullmatch(name) is None:
            raise ProtocolError(f"malformed header line: {_show(line)}")
        fields.append([name, value.strip(b" \t")])
    return fields


def _values(fields: Fields, name: bytes) -> list[bytes]:
    """The values of the field ``name`` (lower case), in order."""
    return [value for field, value in fields if len(field) == len(name) and field.lower() == name]


class Response:
    """A response head and its body, read (and decoded) on demand. The shape the http prober reads from an
    aiohttp response: ``status``, ``reason``, ``version``, ``headers``, ``content_length`` and
    ``content.read``."""

    __slots__ = ("_conn", "status", "reason", "version", "_fields", "_headers", "content_length", "arrived",
                 "_framing", "_left", "_done", "_decoder")

    def __init__(self, conn: Connection, status: int, reason: str, version: Version, fields: Fields,
                 method: str, arrived: float | None) -> None:
        self._conn = conn
        self.status, self.reason, self.version = status, reason, version
        self._fields = fields
        self._headers: CIMultiDictProxy[str] | None = None  # built when first asked for
        self.arrived = arrived  # when the last byte of the head reached the host
        self.content_length = _content_length(_values(fields, b"content-length"))
        codings = _values(fields, b"content-encoding")
        self._decoder = _decoder(codings[-1].decode("latin-1") if codings else "")
        self._done = False
        self._left = 0  # bytes left in the current chunk, or of the Content-Length
        transfer = _values(fields, b"transfer-encoding")
        if method == "HEAD" or status in _NO_BODY_STATUSES or status < 200:
            self._framing, self._done = "none", True
        elif transfer:
            codings = b",".join(transfer).lower().split(b",")
            self._framing = "chunked" if codings[-1].strip() == b"chunked" else "close"
        elif self.content_length is not None:
            self._framing, self._left = "length", self.content_length
            self._done = self._left == 0
        else:
            self._framing = "close"

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """The header fields (case-insensitive, every value kept). Built on first use: most probes only
        need the status and the body."""
        if self._headers is None:
            self._headers = CIMultiDictProxy(CIMultiDict(
                (name.decode("ascii"), value.decode("utf-8", "surrogateescape")) for name, value in self._fields))
        return self._headers

    @property
    def content(self) -> Response:
        return self

    @property
    def last_arrival(self) -> float | None:
        """When the latest bytes read for this response reached the host."""
        return self._conn.last_arrival

    def close(self) -> None:
        self._conn.close()

    async def read(self, n: int) -> bytes:
        """Up to ``n`` body bytes, decoded; ``b""`` at the end of the body."""
        decoder = self._decoder
        if decoder is None:
            return await self._raw(n)
        try:
            while True:
                if decoder.unconsumed_tail:
                    out = decoder.decompress(decoder.unconsumed_tail, n)
                elif raw := await self._raw(READ_SIZE):
                    out = decoder.decompress(raw, n)
                else:
                    return decoder.flush()
                if out:
                    return out
        except zlib.error as exc:
            raise ProtocolError(f"cannot decode the body: {exc}") from None

    async def _raw(self, n: int) -> bytes:
        """Up to ``n`` body bytes as framed on the wire (chunks joined), ``b""`` at the end."""
        conn = self._conn
        while not self._done:
            if self._framing == "chunked" and self._left == 0:
                await self._next_chunk()
                continue
            if conn._buffer:
                if self._framing == "close":
                    return conn._take(n)
                data = conn._take(min(n, self._left))
                self._left -= len(data)
                if self._left == 0 and self._framing == "length":
                    self._done = True
                elif self._left == 0:
                    await self._chunk_end()
                return data
            if not await conn._more():
                if self._framing == "close":
                    self._done = True
                    break
                raise ConnectionResetError("connection closed in the middle of the body")
        return b""

    async def _next_chunk(self) -> None:
        line = await self._conn._line(MAX_CHUNK_LINE, "chunk size line")
        size = line.split(b";", 1)[0].strip(b" \t")
        if _HEX.fullmatch(size) is None:
            raise ProtocolError(f"bad chunk size: {_show(size)}")
        self._left = int(size, 16)
        if self._left == 0:  # the last chunk: trailer fields until a blank line
            total = 0
            while line := await self._conn._line(MAX_HEADER_LINE, "trailer line"):
                total += len(line)
                if total > MAX_HEAD_BYTES:
                    raise ProtocolError(f"trailers longer than {MAX_HEAD_BYTES} bytes")
            self._done = True

    async def _chunk_end(self) -> None:
        if await self._conn._line(0, "chunk end"):
            raise ProtocolError("chunk data longer than its size")


def _content_length(values: list[bytes]) -> int | None:
    if not values:
        return None
    lengths = {value.strip() for value in b",".join(values).split(b",")}
    if len(lengths) != 1 or not (length := lengths.pop()).isdigit():
        raise ProtocolError(f"bad Content-Length: {_show(b','.join(values))}")
    return int(length)


def _decoder(coding: str) -> zlib._Decompress | None:  # type: ignore[name-defined]
    coding = coding.strip().lower()
    if coding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if coding == "deflate":
        return _Deflate()  # type: ignore[return-value]
    return None


class _Deflate:
    """``Content-Encoding: deflate`` is zlib-wrapped by the standard and raw deflate from some servers: the
    first bytes decide."""

    __slots__ = ("_inner",)

    def __init__(self) -> None:
        self._inner: zlib._Decompress | None = None  # type: ignore[name-defined]

    @property
    def unconsumed_tail(self) -> bytes:
        return self._inner.unconsumed_tail if self._inner is not None else b""

    @property
    def eof(self) -> bool:
        return self._inner is not None and self._inner.eof

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._inner is None:
            zlib_wrapped = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._inner = zlib.decompressobj(zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS)
        return self._inner.decompress(data, max_length)

    def flush(self) -> bytes:
        return self._inner.flush() if self._inner is not None else b""


def _show(data: bytes, limit: int = 60) -> str:
    """Peer bytes for a log line: bounded and printable."""
    return repr(data[:limit])[2:-1] + ("..." if len(data) > limit else "")
