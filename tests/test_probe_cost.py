"""Per-probe work that scheduled probing repeats thousands of times a second stays out of the hot path."""

from __future__ import annotations

import asyncio
import socket

import pytest

from exporter.probers import http
from exporter.probers.tcp import open_socket


async def _listener() -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _connect_twice() -> tuple[tuple[str, int], type[BaseException] | None]:
    server, port = await _listener()
    try:
        sock = await open_socket("127.0.0.1", port)
        peer = sock.getpeername()
        sock.close()
    finally:
        server.close()
        await server.wait_closed()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()
    try:
        (await open_socket("127.0.0.1", refused_port)).close()
    except OSError as exc:
        return peer, type(exc)
    return peer, None


def test_connect_to_an_address_does_no_name_lookup_under_uvloop() -> None:
    """uvloop's sock_connect passes every address through getaddrinfo in its thread pool, once per probe."""
    uvloop = pytest.importorskip("uvloop")

    class CountingLoop(uvloop.Loop):  # type: ignore[misc, name-defined]
        lookups = 0

        async def getaddrinfo(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            CountingLoop.lookups += 1
            return await super().getaddrinfo(*args, **kwargs)

    with asyncio.Runner(loop_factory=CountingLoop) as runner:
        peer, refused = runner.run(_connect_twice())
    assert peer[0] == "127.0.0.1"
    assert refused is ConnectionRefusedError
    assert CountingLoop.lookups == 0


async def test_connect_errors_are_the_socket_errors() -> None:
    peer, refused = await _connect_twice()
    assert peer[0] == "127.0.0.1" and refused is ConnectionRefusedError


def test_request_url_and_log_text_are_built_once_per_url_and_address() -> None:
    url = http.parse_target("http://user:pw@example.test:8080/path?q=1")
    first = http._request_url(url, "127.0.0.1")
    assert str(first) == "http://127.0.0.1:8080/path?q=1"
    assert http._request_url(url, "127.0.0.1") is first
    shown = http._shown_url(url)
    assert shown == "http://user:%3Csecret%3E@example.test:8080/path?q=1" and http._shown_url(url) is shown
