"""The HTTP/1.1 exchange the http prober speaks on plain hops (exporter/probers/http1.py): what it sends,
what it accepts, and how it fails on responses that are not HTTP."""

from __future__ import annotations

import asyncio
import gzip
import socket
import zlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest

from exporter.probers import http1, readiness
from exporter.probers.tcp import new_socket

HEAD = b"HTTP/1.1 200 OK\r\n"


@pytest.fixture(autouse=True, params=["shared epoll set", "loop readers"])
def readiness_source(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every exchange here runs both ways a connection learns readiness: from the loop's shared epoll set
    (Linux) and from the loop's own readers and writers (elsewhere)."""
    if request.param == "loop readers":
        monkeypatch.setattr(readiness, "for_loop", lambda loop: None)
    elif not readiness.AVAILABLE:
        pytest.skip("no epoll on this platform")
    return request.param


@asynccontextmanager
async def scripted(pieces: Sequence[bytes], *, pause: float = 0.0, hold: bool = False) -> AsyncIterator[int]:
    """A loopback server that reads one request head, then writes ``pieces`` (``pause`` seconds apart) and
    closes, or holds the connection open with ``hold``. Yields its port."""
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        if hold:
            await reader.read()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def exchange(port: int, method: str = "GET", limit: int = 1 << 20) -> tuple[http1.Response, bytes]:
    connection = http1.Connection(new_socket("127.0.0.1"), asyncio.get_running_loop())
    try:
        response = await connection.exchange(("127.0.0.1", port), http1.request(method, "/", [("Host", "t")], None),
                                             method, lambda: None)
        body = b""
        while len(body) <= limit and (chunk := await response.read(4096)):
            body += chunk
        return response, body
    finally:
        connection.close()


async def answer(*pieces: bytes, method: str = "GET", pause: float = 0.0) -> tuple[http1.Response, bytes]:
    async with scripted(pieces, pause=pause) as port:
        return await asyncio.wait_for(exchange(port, method), 5)


# --- the request ---------------------------------------------------------------------------------------------
def test_request_adds_defaults_only_where_the_caller_set_none() -> None:
    text = http1.request("POST", "/a?b=1", [("Host", "h:8080"), ("User-Agent", "x")], b"{}").decode()
    head, body = text.split("\r\n\r\n")
    lines = head.split("\r\n")
    assert lines[0] == "POST /a?b=1 HTTP/1.1" and body == "{}"
    assert {"Host: h:8080", "Accept: */*", "Accept-Encoding: gzip, deflate", "Content-Length: 2",
            "Content-Type: application/octet-stream"} <= set(lines)
    own = http1.request("GET", "/", [("Host", "h"), ("accept", "text/html"), ("Accept-Encoding", "identity")],
                        None).decode()
    assert "Accept: */*" not in own and "Accept-Encoding: gzip" not in own and "Content-Length" not in own


@pytest.mark.parametrize("field", [("X-A", "1\r\nInjected: yes"), ("X-A", "a\nb"), ("X-A", "nul\0")])
def test_request_refuses_fields_that_would_add_lines(field: tuple[str, str]) -> None:
    with pytest.raises(ValueError):
        http1.request("GET", "/", [("Host", "h"), field], None)
    with pytest.raises(ValueError):
        http1.request("GET", "/x\r\nHost: other", [("Host", "h")], None)


# --- responses it reads ----------------------------------------------------------------------------------------
async def test_content_length_body_and_head_fields() -> None:
    response, body = await answer(HEAD + b"Content-Length: 5\r\nX-Two: a\r\nx-two: b\r\n\r\nhelloEXTRA")
    assert (response.status, response.reason, tuple(response.version)) == (200, "OK", (1, 1))
    assert response.content_length == 5 and body == b"hello"  # bytes past the length are not the body
    assert response.headers.getall("X-TWO") == ["a", "b"]


async def test_head_split_into_single_bytes_and_bare_line_feeds() -> None:
    raw = b"HTTP/1.0 404 Not Found\nContent-Length: 2\nX-Folded: one\n two\n\nno"
    response, body = await answer(*(raw[i:i + 1] for i in range(len(raw))), pause=0.001)
    assert (response.status, response.reason, tuple(response.version)) == (404, "Not Found", (1, 0))
    assert response.headers["X-Folded"] == "one two" and body == b"no"


async def test_informational_responses_are_skipped() -> None:
    response, body = await answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                                  HEAD + b"Content-Length: 2\r\n\r\nok")
    assert response.status == 200 and body == b"ok" and "Link" not in response.headers


async def test_chunked_body_with_extensions_and_trailers() -> None:
    response, body = await answer(HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n",
                                  b"5;name=value\r\nhello\r\n", b"1\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: t\r\n\r\n")
    assert body == b"hello world!" and response.content_length is None


async def test_body_until_the_connection_closes() -> None:
    response, body = await answer(HEAD + b"Connection: close\r\n\r\n", b"part one, ", b"part two")
    assert body == b"part one, part two" and response.content_length is None


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304)])
async def test_responses_without_a_body(method: str, status: int) -> None:
    async with scripted([b"HTTP/1.1 %d X\r\nContent-Length: 100\r\n\r\n" % status], hold=True) as port:
        response, body = await asyncio.wait_for(exchange(port, method), 5)  # no wait for 100 bytes
    assert response.status == status and body == b""


PAYLOAD = b"status: all systems operational\n" * 200


@pytest.mark.parametrize(("coding", "encoded"), [
    ("gzip", gzip.compress(PAYLOAD)),
    ("deflate", zlib.compress(PAYLOAD)),  # zlib-wrapped, as the standard says
    ("deflate", zlib.compress(PAYLOAD, wbits=-15)),  # raw deflate, as some servers send
    ("br", b"not decoded"),  # a coding it does not decode is read as sent
])
async def test_body_is_decoded_while_read(coding: str, encoded: bytes) -> None:
    response, body = await answer(HEAD + b"Content-Encoding: %s\r\nContent-Length: %d\r\n\r\n"
                                  % (coding.encode(), len(encoded)) + encoded)
    assert body == (encoded if coding == "br" else PAYLOAD)
    assert response.content_length == len(encoded)


async def test_decoded_reads_are_bounded_by_the_size_asked() -> None:
    bomb = gzip.compress(bytes(8 << 20))
    async with scripted([HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb) + bomb]) as port:
        connection = http1.Connection(new_socket("127.0.0.1"), asyncio.get_running_loop())
        try:
            response = await connection.exchange(("127.0.0.1", port), http1.request("GET", "/", [("Host", "t")], None),
                                                 "GET", lambda: None)
            sizes = [len(await response.read(1000)) for _ in range(50)]
        finally:
            connection.close()
    assert max(sizes) <= 1000 and sum(sizes) == 50_000


async def test_a_large_body_read_slowly_pauses_reading_and_loses_nothing() -> None:
    """Megabytes sent at once while the reader takes small pieces: reading pauses above the buffer bound and
    resumes without waiting for bytes that already arrived (no new readiness is reported for them)."""
    body = bytes(range(256)) * 12_288  # 3 MiB, several times the pause bound
    async with scripted([HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body], hold=True) as port:
        connection = http1.Connection(new_socket("127.0.0.1"), asyncio.get_running_loop())
        try:
            response = await asyncio.wait_for(connection.exchange(
                ("127.0.0.1", port), http1.request("GET", "/", [("Host", "t")], None), "GET", lambda: None), 5)
            await asyncio.sleep(0.2)  # the peer has written everything it can; the buffer is at its bound
            assert len(connection._buffer) <= http1.PAUSE_ABOVE + http1.READ_SIZE
            got = bytearray()
            while chunk := await asyncio.wait_for(response.read(50_000), 5):
                got += chunk
        finally:
            connection.close()
    assert got == body


async def test_a_response_and_the_close_in_one_arrival() -> None:
    """The last bytes and the peer's close often arrive together: the bytes are read, then the end."""
    async with scripted([HEAD + b"Connection: close\r\n\r\nuntil the end"]) as port:
        response, body = await asyncio.wait_for(exchange(port), 5)
    assert response.status == 200 and body == b"until the end"


# --- responses it refuses ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("pieces", "error"), [
    ([b"SSH-2.0-OpenSSH\r\n"], http1.ProtocolError),  # not HTTP at all
    ([b"HTTP/2 200\r\n\r\n"], http1.ProtocolError),  # not HTTP/1.x
    ([b"HTTP/1.1 2000 OK\r\n\r\n"], http1.ProtocolError),
    ([HEAD + b"no colon here\r\n\r\n"], http1.ProtocolError),
    ([HEAD + b"Bad Name: x\r\n\r\n"], http1.ProtocolError),
    ([HEAD + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"], http1.ProtocolError),
    ([HEAD + b"Content-Length: -1\r\n\r\n"], http1.ProtocolError),
    ([HEAD + b"Transfer-Encoding: chunked\r\n\r\nZZ\r\nnot a chunk\r\n0\r\n\r\n"], http1.ProtocolError),
    ([HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\nlonger than two\r\n0\r\n\r\n"], http1.ProtocolError),
    ([HEAD + b"Content-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!"], http1.ProtocolError),
    ([HEAD + b"Content-Length: 100\r\n\r\nshort"], ConnectionResetError),  # closed mid-body
    ([HEAD + b"Transfer-Encoding: chunked\r\n\r\n10\r\nshort"], ConnectionResetError),
    ([HEAD + b"Content-Length: 2\r\n"], ConnectionResetError),  # closed mid-head
    ([], ConnectionResetError),  # closed without a word
])
async def test_bad_responses(pieces: list[bytes], error: type[Exception]) -> None:
    with pytest.raises(error):
        await answer(*pieces)


async def test_garbage_fails_without_waiting_for_a_line_end() -> None:
    async with scripted([b"\x16\x03\x01"], hold=True) as port:  # a TLS record header, then silence
        with pytest.raises(http1.ProtocolError):
            await asyncio.wait_for(exchange(port), 5)


@pytest.mark.parametrize(("piece", "what"), [
    (HEAD + b"X-Long: " + b"a" * (http1.MAX_HEADER_LINE + 10), "header line"),
    (HEAD + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(12_000)), "response head"),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * (http1.MAX_CHUNK_LINE + 10), "chunk size line"),
])
async def test_heads_and_lines_are_bounded_while_the_peer_keeps_sending(piece: bytes, what: str) -> None:
    async with scripted([piece], hold=True) as port:
        with pytest.raises(http1.ProtocolError, match=what):
            await asyncio.wait_for(exchange(port), 5)


# --- connecting and sending -------------------------------------------------------------------------------------
async def test_a_large_request_is_sent_in_full_before_the_response_is_read() -> None:
    """A body far larger than the socket buffer goes out over many writable wake-ups."""
    body = bytes(range(256)) * 16_384  # 4 MiB
    received: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        received.append(len(await reader.readexactly(length)))
        writer.write(HEAD + b"Content-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connected: list[bool] = []
    connection = http1.Connection(new_socket("127.0.0.1"), asyncio.get_running_loop())
    try:
        response = await asyncio.wait_for(connection.exchange(
            ("127.0.0.1", port), http1.request("POST", "/", [("Host", "t")], body), "POST",
            lambda: connected.append(True)), 10)
        assert await response.read(10) == b"ok"
    finally:
        connection.close()
        server.close()
    assert received == [len(body)] and connected == [True]


async def test_a_refused_connect_is_the_socket_error_and_never_connected() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))  # bound, not listening: connects are refused
    port = listener.getsockname()[1]
    connected: list[bool] = []
    connection = http1.Connection(new_socket("127.0.0.1"), asyncio.get_running_loop())
    try:
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(connection.exchange(("127.0.0.1", port), b"GET / HTTP/1.1\r\n\r\n", "GET",
                                                       lambda: connected.append(True)), 5)
    finally:
        connection.close()
        listener.close()
    assert connected == []
