"""A RIS-Live-compatible route collector feed for the lab, with a RIPEstat-style looking glass.

    ris = RisEmulator(peers=5)
    await ris.start()
    ris.announce(["127.10.0.0/24"])           # every emulated peer announces it (no message before start)
    ris.withdraw(["127.10.0.0/24"])           # ... and withdraws it: one UPDATE per peer to subscribers
    ris.set_feed("stalled")                   # up | down | stalled | malformed | flood
    ris.ws_url, ris.looking_glass_url

Emulated peers are BGP sessions of two collectors (``rrc00``, ``rrc21``), addresses from the documentation
ranges. The websocket at ``/v1/ws/`` speaks the subset of RIS Live the exporter uses: ``ris_subscribe``
(``prefix``, ``moreSpecific``, ``lessSpecific``), ``ping``/``pong`` and ``ris_message`` UPDATEs. Feed
states: ``down`` closes every connection and refuses new ones (503); ``stalled`` keeps connections open but
sends nothing, pongs included; ``malformed`` sends garbage between real messages; ``flood`` sends
``flood_rate`` announcements of unwatched prefixes per second on every connection. Nothing leaves the
loopback interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

log = logging.getLogger("exporter.lab.ris")

FEED_STATES = ("up", "down", "stalled", "malformed", "flood")
COLLECTORS = ("rrc00", "rrc21")
FLOOD_RATE = 20_000  # messages per second per connection in the flood state


@dataclass(frozen=True, slots=True)
class Peer:
    host: str
    address: str
    asn: int


def make_peers(n: int) -> tuple[Peer, ...]:
    return tuple(Peer(COLLECTORS[i % len(COLLECTORS)], f"192.0.2.{i + 1}", 64496 + i) for i in range(n))


@dataclass(eq=False)  # identity: a connection is itself, whatever it subscribed to
class _Client:
    ws: web.WebSocketResponse
    filters: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, bool, bool]] = field(default_factory=list)

    def wants(self, prefix: str) -> bool:
        net = ipaddress.ip_network(prefix)
        for want, more, less in self.filters:
            if net == want or (more and net.version == want.version and net.subnet_of(want)) or (
                    less and net.version == want.version and want.subnet_of(net)):
                return True
        return False


class RisEmulator:
    def __init__(self, peers: int = 5, host: str = "127.0.0.1", port: int = 0) -> None:
        self.peers = make_peers(peers)
        self.host, self.port = host, port
        self.routes: dict[str, set[Peer]] = {}  # prefix -> peers announcing it
        self.feed = "up"
        self.sent = 0
        self._clients: set[_Client] = set()
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1/ws/?client=lab"

    @property
    def looking_glass_url(self) -> str:
        return f"http://{self.host}:{self.port}/data/looking-glass/data.json"

    async def start(self) -> RisEmulator:
        app = web.Application()
        app.router.add_get("/v1/ws/", self._ws)
        app.router.add_get("/data/looking-glass/data.json", self._looking_glass)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._close_clients()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- control -------------------------------------------------------------------------------------

    def announce(self, prefixes: Iterable[str], peers: int | None = None) -> None:
        """``peers`` (default all) of the emulated peers announce ``prefixes``."""
        for prefix in prefixes:
            key = str(ipaddress.ip_network(prefix, strict=False))
            chosen = self.peers[:peers] if peers is not None else self.peers
            for peer in chosen:
                if peer not in self.routes.setdefault(key, set()):
                    self.routes[key].add(peer)
                    self._publish(peer, key, announce=True)

    def withdraw(self, prefixes: Iterable[str], peers: int | None = None) -> None:
        """``peers`` (default all) of the peers announcing ``prefixes`` withdraw them."""
        for prefix in prefixes:
            key = str(ipaddress.ip_network(prefix, strict=False))
            current = [p for p in self.peers if p in self.routes.get(key, set())]
            for peer in current[:peers] if peers is not None else current:
                self.routes[key].discard(peer)
                self._publish(peer, key, announce=False)

    def visible(self, prefix: str) -> int:
        return len(self.routes.get(str(ipaddress.ip_network(prefix, strict=False)), ()))

    def set_feed(self, state: str) -> None:
        if state not in FEED_STATES:
            raise ValueError(f"unknown feed state {state!r} (expected one of {', '.join(FEED_STATES)})")
        if state != self.feed:
            log.info("routing feed -> %s", state)
        self.feed = state
        if state == "down":
            self._spawn(self._close_clients())
        if state == "flood":
            for client in list(self._clients):
                self._spawn(self._flood(client))

    # --- serving -------------------------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if self.feed == "down":
            return web.Response(status=503, text="feed down")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        client = _Client(ws)
        self._clients.add(client)
        if self.feed == "flood":
            self._spawn(self._flood(client))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._request(client, msg.data)
        finally:
            self._clients.discard(client)
        return ws

    async def _request(self, client: _Client, text: str) -> None:
        if self.feed in ("stalled", "down"):
            return
        try:
            msg = json.loads(text)
            kind = msg["type"]
        except (ValueError, KeyError, TypeError):
            await self._send(client, {"type": "ris_error", "data": {"message": "invalid message"}})
            return
        if kind == "ping":
            await self._send(client, {"type": "pong", "data": None})
        elif kind == "ris_subscribe":
            data = msg.get("data") or {}
            try:
                net = ipaddress.ip_network(data["prefix"], strict=False)
            except (KeyError, ValueError, TypeError):
                await self._send(client, {"type": "ris_error", "data": {"message": "invalid prefix"}})
                return
            client.filters.append((net, bool(data.get("moreSpecific", True)), bool(data.get("lessSpecific"))))
            await self._send(client, {"type": "ris_subscribe_ok", "data": {"subscription": data}})

    async def _looking_glass(self, request: web.Request) -> web.Response:
        if self.feed == "down":
            return web.Response(status=503, text="down")
        try:
            prefix = str(ipaddress.ip_network(request.query.get("resource", ""), strict=False))
        except ValueError:
            return web.json_response({"status": "error", "messages": [["error", "invalid resource"]]}, status=400)
        rrcs: dict[str, list[dict]] = {}
        for peer in self.peers:
            if peer in self.routes.get(prefix, set()):
                rrcs.setdefault(peer.host, []).append({
                    "peer": peer.address, "asn_origin": "64511", "as_path": f"{peer.asn} 64511",
                    "prefix": prefix, "origin": "IGP", "next_hop": peer.address})
        return web.json_response({"status": "ok", "data": {
            "rrcs": [{"rrc": rrc.upper(), "location": "lab", "peers": peers} for rrc, peers in rrcs.items()],
            "query_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())}})

    def _publish(self, peer: Peer, prefix: str, *, announce: bool) -> None:
        data: dict = {"timestamp": time.time(), "peer": peer.address, "peer_asn": str(peer.asn),
                      "id": f"{peer.host}-{self.sent}", "host": peer.host, "type": "UPDATE",
                      "path": [peer.asn, 64511] if announce else [], "origin": "IGP"}
        if announce:
            data["announcements"] = [{"next_hop": peer.address, "prefixes": [prefix]}]
            data["withdrawals"] = []
        else:
            data["withdrawals"] = [prefix]
        for client in list(self._clients):
            if client.wants(prefix):
                self._spawn(self._send(client, {"type": "ris_message", "data": data}))

    async def _send(self, client: _Client, msg: dict) -> None:
        if self.feed in ("stalled", "down") or client.ws.closed:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            if self.feed == "malformed":
                await client.ws.send_str('{"type": "ris_message", "data": {"announcements": 42')
                await client.ws.send_str("not json at all")
            await client.ws.send_str(json.dumps(msg))
            self.sent += 1

    async def _flood(self, client: _Client) -> None:
        """Announcements of prefixes nobody watches, as fast as FLOOD_RATE allows."""
        n = 0
        while self.feed == "flood" and not client.ws.closed:
            start = time.monotonic()
            for _ in range(FLOOD_RATE // 100):
                n += 1
                text = json.dumps({"type": "ris_message", "data": {
                    "timestamp": time.time(), "peer": "192.0.2.200", "peer_asn": "64500", "host": "rrc00",
                    "type": "UPDATE", "path": [64500], "withdrawals": [],
                    "announcements": [{"next_hop": "192.0.2.200",
                                       "prefixes": [f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.0/24"]}]}})
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await client.ws.send_str(text)
                self.sent += 1
            await asyncio.sleep(max(0.0, 0.01 - (time.monotonic() - start)))

    async def _close_clients(self) -> None:
        for client in list(self._clients):
            with contextlib.suppress(Exception):
                await client.ws.close()
        self._clients.clear()

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
