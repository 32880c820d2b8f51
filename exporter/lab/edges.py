"""HTTP(S) edges: one small web server per (site, region), whose behaviour a scenario can change.

Modes (``edge_setting`` validates them and their parameters):

- ``healthy``: 200 (optional ``latency_ms``/``jitter_ms``);
- ``unavailable``: 503 with ``proxy-status: no_server_available`` — an edge that lost its backends;
- ``blackhole``: connections time out (see ``BlackHole``) — routes gone, packets dropped;
- ``refused``: nothing listens, connections are refused;
- ``slow``: the first byte comes after ``first_byte_ms``;
- ``latency``: every answer is delayed by ``latency_ms`` plus up to ``jitter_ms``;
- ``flapping``: each request fails with 503 with probability ``fail_ratio`` (seeded RNG, so a run is
  reproducible), answers delayed by ``latency_ms``/``jitter_ms``;
- ``expiring``: 200 over a certificate that expires in ``days``; ``expired``: the certificate expired.

Mode changes take effect asynchronously (a listener may have to be closed and re-bound);
``Edge.settle()`` waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from aiohttp import web

from exporter.lab.catalog import SiteSpec

log = logging.getLogger("exporter.lab.edges")

MODES: dict[str, frozenset[str]] = {
    "healthy": frozenset({"latency_ms", "jitter_ms"}),
    "unavailable": frozenset({"latency_ms", "jitter_ms"}),
    "blackhole": frozenset(),
    "refused": frozenset(),
    "slow": frozenset({"first_byte_ms"}),
    "latency": frozenset({"latency_ms", "jitter_ms"}),
    "flapping": frozenset({"fail_ratio", "latency_ms", "jitter_ms"}),
    "expiring": frozenset({"days"}),
    "expired": frozenset(),
}
CERT_MODES = frozenset({"expiring", "expired"})
_DEFAULTS: dict[str, dict[str, float]] = {
    "slow": {"first_byte_ms": 2000.0},
    "latency": {"latency_ms": 500.0},
    "flapping": {"fail_ratio": 0.5},
    "expiring": {"days": 10.0},
}
PROXY_STATUS = "no_server_available"


@dataclass(frozen=True, slots=True)
class EdgeSetting:
    mode: str = "healthy"
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    first_byte_ms: float = 0.0
    fail_ratio: float = 0.0
    days: float = 0.0

    def params(self) -> dict[str, float]:
        """The parameters that mean something for this mode (for logs and state dumps)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in MODES[self.mode]}


def edge_setting(mode: str, **params: object) -> EdgeSetting:
    """Validate a mode and its parameters; ValueError names the offending one."""
    if mode not in MODES:
        raise ValueError(f"unknown edge mode {mode!r} (expected one of {', '.join(MODES)})")
    unknown = sorted(set(params) - MODES[mode])
    if unknown:
        allowed = ", ".join(sorted(MODES[mode])) or "none"
        raise ValueError(f"{unknown[0]}: not a parameter of mode {mode!r} (allowed: {allowed})")
    values = dict(_DEFAULTS.get(mode, {}))
    for key, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        values[key] = float(value)
    for key, value in values.items():
        if value < 0:
            raise ValueError(f"{key}: must not be negative (got {value:g})")
    if values.get("fail_ratio", 0.0) > 1:
        raise ValueError(f"fail_ratio: must be between 0 and 1 (got {values['fail_ratio']:g})")
    if mode == "expiring" and values["days"] <= 0:
        raise ValueError("days: must be greater than 0 (use mode 'expired' for an expired certificate)")
    return EdgeSetting(mode=mode, **values)


class BlackHole:
    """A listening socket whose accept queue is kept full, so the kernel drops new SYNs silently.

    On loopback a closed port answers with a reset (connection refused) at once; a real black hole
    gives no answer at all. A listener with backlog 0 whose single queue slot is taken by a connection
    nobody accepts reproduces that: clients retransmit their SYN until their own timeout fires.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fillers: list[socket.socket] = []

    @classmethod
    async def open(cls, host: str, port: int) -> BlackHole:
        hole = cls(listen_socket(host, port, backlog=0))
        for _ in range(4):  # the queue holds backlog + 1 on Linux; stop at the first that cannot get in
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex((host, port))
            await asyncio.sleep(0.02)
            try:
                filler.getpeername()
            except OSError:
                filler.close()
                break
            hole.fillers.append(filler)
        return hole

    def close(self) -> None:
        for s in (*self.fillers, self.sock):
            s.close()
        self.fillers.clear()


def listen_socket(host: str, port: int, *, backlog: int = 128) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


CertFactory = Callable[[SiteSpec, str, float], tuple[Path, Path]]
"""certs(site, kind, days) -> (certificate, key) files; kind is "healthy", "expiring" or "expired"."""


class Edge:
    """The edge of one site in one region, on its own address."""

    def __init__(self, site: SiteSpec, region: str, host: str, *, certs: CertFactory | None,
                 seed: int) -> None:
        self.site = site
        self.region = region
        self.host = host
        self.port = 0
        self.setting = EdgeSetting()
        self.isolated = False
        self.requests = 0
        self._certs = certs
        self._rng = random.Random(f"{seed}/{site.name}/{region}")
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[None]] = set()
        self._listening = "closed"  # "serve" | "blackhole" | "closed"
        self._sock: socket.socket | None = None
        self._server: asyncio.base_events.Server | None = None
        self._web: web.Server | None = None
        self._hole: BlackHole | None = None
        self._tls: ssl.SSLContext | None = None  # base context; its SNI callback picks the current cert
        self._cert: ssl.SSLContext | None = None
        self._contexts: dict[tuple[str, float], ssl.SSLContext] = {}
        if certs is not None:
            self._tls = self._context("healthy", 0.0)
            self._tls.sni_callback = self._pick_cert
            self._cert = self._tls

    @property
    def tls(self) -> bool:
        return self._tls is not None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def bind(self, port: int) -> None:
        """Bind the listening socket now (raises OSError if taken); ``start`` begins serving on it."""
        self._sock = listen_socket(self.host, port)
        self.port = self._sock.getsockname()[1]

    def unbind(self) -> None:
        """Release a socket bound by ``bind`` that was never started."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def start(self) -> None:
        assert self._sock is not None, "bind() first"
        async with self._lock:
            await self._serve(self._sock)
            self._sock = None
        await self._reconcile()  # a mode set before start (blackhole, refused) applies now

    def apply(self, setting: EdgeSetting) -> None:
        if setting.mode in CERT_MODES and self._certs is None:
            raise ValueError(f"edge mode {setting.mode!r} needs HTTPS edges (the lab runs without TLS)")
        self.setting = setting
        if self._certs is not None:
            kind = setting.mode if setting.mode in CERT_MODES else "healthy"
            self._cert = self._tls if kind == "healthy" else self._context(kind, setting.days)
        self._reconcile_soon()

    def set_isolated(self, on: bool) -> None:
        self.isolated = on
        self._reconcile_soon()

    async def settle(self) -> None:
        """Wait until the listener matches the latest mode."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def stop(self) -> None:
        await self.settle()
        async with self._lock:
            await self._teardown()
        self.unbind()

    def _wanted(self) -> str:
        if self.isolated or self.setting.mode == "blackhole":
            return "blackhole"
        return "closed" if self.setting.mode == "refused" else "serve"

    def _reconcile_soon(self) -> None:
        task = asyncio.ensure_future(self._reconcile())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _reconcile(self) -> None:
        async with self._lock:
            want = self._wanted()
            if want == self._listening or not self.port:
                return
            await self._teardown()
            try:
                if want == "serve":
                    await self._serve(listen_socket(self.host, self.port))
                elif want == "blackhole":
                    self._hole = await BlackHole.open(self.host, self.port)
                    self._listening = "blackhole"
            except OSError as exc:
                log.error("edge %s/%s: cannot bind %s: %s", self.site.name, self.region, self.address, exc)

    async def _serve(self, sock: socket.socket) -> None:
        self._web = web.Server(self._handle, access_log=None)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._web, sock=sock, ssl=self._tls)
        self._listening = "serve"

    async def _teardown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._web is not None:
            with contextlib.suppress(Exception):
                await self._web.shutdown(0.1)
            self._web = None
        if self._hole is not None:
            self._hole.close()
            self._hole = None
        self._listening = "closed"

    def _context(self, kind: str, days: float) -> ssl.SSLContext:
        key = (kind, days)
        if key not in self._contexts:
            assert self._certs is not None
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self._certs(self.site, kind, days))
            self._contexts[key] = ctx
        return self._contexts[key]

    def _pick_cert(self, conn: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        if self._cert is not None and self._cert is not self._tls:
            conn.context = self._cert

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.requests += 1
        s = self.setting
        delay_ms = s.latency_ms + s.first_byte_ms
        if s.jitter_ms:
            delay_ms += self._rng.uniform(0.0, s.jitter_ms)
        failing = s.mode == "unavailable" or (s.mode == "flapping" and self._rng.random() < s.fail_ratio)
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        headers = {"server": "outage-lab-edge", "x-lab-region": self.region}
        if failing:
            headers["proxy-status"] = PROXY_STATUS
            return web.Response(status=503, text="no server available\n", headers=headers)
        return web.Response(text=f"{self.site.name} ok from {self.region}\n", headers=headers)
