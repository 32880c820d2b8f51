"""The aiohttp side of the http prober: one shared session per event loop, and the hand-off of a connection
the prober opened itself (TLS hops) to that session.

The session never reuses a connection (a probe must see a fresh connect) and keeps no cookies. Its
connector returns the connection the probe opened (found in a context variable of the probe's task); only
through a ``proxy_url`` does aiohttp connect itself.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from contextvars import ContextVar

import aiohttp
from aiohttp.client_proto import ResponseHandler
from yarl import URL

from exporter.probers import clock

MAX_HEADER_LINE = 64 * 1024  # aiohttp's 8 KiB default rejects real sites with long CSP / cookie headers


class HopConnection:
    """What the connector should use for the request being sent in the current task."""

    __slots__ = ("protocol", "on_connected")

    def __init__(self, protocol: ResponseHandler | None,
                 on_connected: Callable[[ResponseHandler], None] | None = None) -> None:
        self.protocol = protocol  # a connection the probe opened, or None to let aiohttp connect (proxy)
        self.on_connected = on_connected


HOP: ContextVar[HopConnection | None] = ContextVar("outage_exporter_http_hop", default=None)


class TimedHandler(ResponseHandler):
    """aiohttp's protocol, noting when response bytes were handed to it: the earliest moment the exporter
    sees them, before aiohttp parses them and before the probe's task resumes."""

    first_byte: float | None = None
    latest_bytes: float | None = None

    def data_received(self, data: bytes) -> None:
        if data:
            self.latest_bytes = now = clock.now()
            if self.first_byte is None:
                self.first_byte = now
        super().data_received(data)


class _ProbeConnector(aiohttp.TCPConnector):
    """Returns the connection the probe opened (found in a context variable of the probe's task)."""

    async def _create_connection(self, req, traces, timeout):  # type: ignore[no-untyped-def]
        hop = HOP.get()
        if hop is not None and hop.protocol is not None:
            return hop.protocol
        protocol = await super()._create_connection(req, traces, timeout)
        if hop is not None and hop.on_connected is not None:
            hop.on_connected(protocol)
        return protocol


_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
    weakref.WeakKeyDictionary())


def session() -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    current = _SESSIONS.get(loop)
    if current is None or current.closed:
        connector = _ProbeConnector(force_close=True, limit=0, use_dns_cache=False)
        current = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                        timeout=aiohttp.ClientTimeout(total=None), trust_env=False,
                                        max_line_size=MAX_HEADER_LINE, max_field_size=MAX_HEADER_LINE)
        _SESSIONS[loop] = current
    return current


async def close() -> None:
    """Close the running loop's shared session (call at shutdown; the next probe opens a new one)."""
    current = _SESSIONS.pop(asyncio.get_running_loop(), None)
    if current is not None:
        await current.close()


async def request(connection: HopConnection, method: str, target: URL, headers: list[tuple[str, str]],
                  body: bytes | None, extra: dict | None) -> aiohttp.ClientResponse:
    """Send one request on ``connection`` (or through the proxy named in ``extra``), never redirecting."""
    token = HOP.set(connection)
    try:
        return await session().request(method, target, headers=headers, data=body, allow_redirects=False,
                                       **(extra or {}))
    finally:
        HOP.reset(token)
