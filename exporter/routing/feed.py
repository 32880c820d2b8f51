"""The RIS-Live-compatible websocket client: subscribe, learn the initial state, read, reconnect.

The stream carries changes only. With ``routing.initial_state`` (a RIPEstat-style looking glass,
``GET <url>?resource=<prefix>`` answering ``data.rrcs[].peers[].peer``) the peers seeing each prefix are
loaded after every (re)connect, and the signal stays inconclusive until they are; without it, peers are
learnt from the announcements seen, so a prefix withdrawn before enough peers announced it stays
``unknown``. Raw messages go through a bounded queue between the socket and the state: when it is full
they are dropped and counted, and both sides yield to the event loop every few hundred messages, so a
flood never delays probes. Disconnects and stalls (nothing heard, pongs included, for ``stale_after``)
reconnect with exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import random
from collections.abc import Iterable, Iterator
from typing import Any

import aiohttp

from exporter.config.model import RoutingConfig
from exporter.probers.result import D_ADDRESS
from exporter.routing.decision import PING_INTERVAL, Thresholds
from exporter.routing.state import Malformed, RoutingState, normalise, peer_id

log = logging.getLogger("exporter.routing")

BACKOFF_MIN = 1.0  # seconds before the first reconnect; doubles per failure
BACKOFF_MAX = 60.0
MAX_MESSAGE_BYTES = 1 << 20  # a larger websocket message closes the connection (counted as malformed)
BATCH = 256  # messages handled between two yields to the event loop
DERIVE_INTERVAL = 5.0  # seconds between two looks at the nameserver addresses the checks discovered
HTTP_TIMEOUT = 10.0  # seconds for one looking-glass request
Owner = tuple[str, str]  # (provider, role)


class RoutingFeed:
    """One feed connection and the state it maintains; ``owners`` says whose prefixes they are."""

    def __init__(self, config: RoutingConfig, checks_source: Any = None) -> None:
        self.config = config
        self.state = RoutingState(Thresholds(config.min_peers, config.withdrawn_ratio, config.stale_after))
        self.owners: dict[str, set[Owner]] = {}
        self._source = checks_source  # a ResultStore: derived prefixes come from its authoritative results
        self._queue: asyncio.Queue[str | bytes] = asyncio.Queue(maxsize=config.queue_size)
        self._tasks: list[asyncio.Task[None]] = []
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._was_up = False
        for p in config.prefixes:
            self._own(p.prefix, (p.provider, p.role))
        self.state.watch(self.owners)

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._connect_loop(), name="routing-feed"),
                       asyncio.create_task(self._process_loop(), name="routing-state")]
        if self._source is not None and (self.config.derive.nameservers or self.config.derive.edges):
            self._tasks.append(asyncio.create_task(self._derive_loop(), name="routing-derive"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.state.health.connected = False

    # --- prefixes ------------------------------------------------------------------------------------

    def _own(self, prefix: str, owner: Owner) -> None:
        self.owners.setdefault(normalise(prefix), set()).add(owner)

    def series(self) -> Iterator[tuple[str, str, str]]:
        """(prefix, provider, role) of every watched prefix, sorted."""
        for prefix in sorted(self.owners):
            for provider, role in sorted(self.owners[prefix]):
                yield prefix, provider, role

    async def add_derived(self, pairs: Iterable[tuple[str, str]], role: str = "nameservers") -> list[str]:
        """Watch the covering prefixes of these (address, provider) pairs; returns the new prefixes."""
        for address, provider in pairs:
            prefix = covering_prefix(address, self.config.derive.ipv4_mask, self.config.derive.ipv6_mask)
            if prefix is not None:
                self._own(prefix, (provider, role))
        new = self.state.watch(self.owners)
        if new:
            log.info("routing: watching derived prefixes", extra={"fields": {"prefixes": ",".join(new)}})
            ws = self._ws
            if ws is not None and not ws.closed:
                await self._subscribe(ws, new)
                if self.config.initial_state and self._session is not None:
                    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, Malformed):
                        await self._sync(self._session, new)
        return new

    async def _derive_loop(self) -> None:
        while True:
            if self.config.derive.nameservers:
                await self.add_derived(nameserver_addresses(self._source))
            if self.config.derive.edges:
                await self.add_derived(edge_addresses(self._source), "edges")
            await asyncio.sleep(DERIVE_INTERVAL)

    # --- connection ----------------------------------------------------------------------------------

    async def _connect_loop(self) -> None:
        backoff, first = BACKOFF_MIN, True
        while True:
            if not first:
                self.state.health.reconnects += 1
            first = False
            self._was_up = False
            try:
                await self._session_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure means: wait, then reconnect
                log.warning("routing feed connection failed", extra={"fields": {"err": f"{type(exc).__name__}: {exc}"}})
            finally:
                self.state.health.connected = self.state.health.synced = False
                self._ws = self._session = None
            if self._was_up:
                backoff = BACKOFF_MIN  # it was up and synced: start the backoff over
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _session_once(self) -> None:
        """One connection, until it closes or stalls (raises then)."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=HTTP_TIMEOUT, sock_read=HTTP_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.ws_connect(
                self.config.endpoint, max_msg_size=MAX_MESSAGE_BYTES, autoping=True) as ws:
            self._ws, self._session = ws, session
            health = self.state.health
            health.connected = True
            log.info("routing feed connected", extra={"fields": {"endpoint": self.config.endpoint}})
            await self._subscribe(ws, list(self.state.prefixes))
            if self.config.initial_state:
                await self._sync(session, list(self.state.prefixes))
            health.synced = self._was_up = True
            self.state.heard()  # a fresh connection counts as heard from
            pinger = asyncio.create_task(self._ping(ws))
            try:
                await self._read(ws)
            finally:
                pinger.cancel()

    async def _subscribe(self, ws: aiohttp.ClientWebSocketResponse, prefixes: list[str]) -> None:
        for prefix in prefixes:
            await ws.send_str(json.dumps({"type": "ris_subscribe", "data": {
                "prefix": prefix, "moreSpecific": False, "lessSpecific": False,
                "socketOptions": {"acknowledge": True}}}))

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        interval = min(PING_INTERVAL, self.config.stale_after / 3)
        while not ws.closed:
            await asyncio.sleep(interval)
            await ws.send_str('{"type": "ping"}')

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Queue raw messages until the socket closes or stays silent for ``stale_after``."""
        n = 0
        while True:
            msg = await ws.receive(timeout=self.config.stale_after)
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                try:
                    self._queue.put_nowait(msg.data)
                except asyncio.QueueFull:
                    self.state.health.dropped += 1
            elif msg.type == aiohttp.WSMsgType.ERROR:
                self.state.health.malformed += 1  # e.g. a message over MAX_MESSAGE_BYTES
                raise ConnectionError(f"websocket error: {ws.exception()}")
            else:  # CLOSE, CLOSING, CLOSED
                raise ConnectionError("the feed closed the connection")
            n += 1
            if n % BATCH == 0:
                await asyncio.sleep(0)

    async def _process_loop(self) -> None:
        while True:
            text = await self._queue.get()
            self._handle(text)
            for _ in range(BATCH - 1):
                try:
                    self._handle(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            await asyncio.sleep(0)

    def _handle(self, text: str | bytes) -> None:
        self.state.handle_text(text)
        if isinstance(text, str) and text.startswith('{"type": "ris_error"'):
            log.warning("routing feed error message", extra={"fields": {"msg": text[:200]}})

    async def _sync(self, session: aiohttp.ClientSession, prefixes: list[str]) -> None:
        """Load the peers seeing each prefix from the looking glass."""
        assert self.config.initial_state
        for prefix in prefixes:
            sep = "&" if "?" in self.config.initial_state else "?"
            url = f"{self.config.initial_state}{sep}resource={prefix}"
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT)) as resp:
                resp.raise_for_status()
                body = await resp.json(content_type=None)
            self.state.load_initial(prefix, looking_glass_peers(body, prefix))


def looking_glass_peers(body: object, prefix: str) -> set[str]:
    """Peers (collector|peer) that a RIPEstat-style looking-glass answer lists for ``prefix``."""
    try:
        rrcs = body["data"]["rrcs"]  # type: ignore[index]
        out = set()
        for rrc in rrcs:
            for peer in rrc["peers"]:
                if normalise(peer.get("prefix", prefix)) == prefix:
                    out.add(peer_id(rrc["rrc"], peer["peer"]))
        return out
    except (KeyError, TypeError, ValueError, AttributeError):
        raise Malformed("not a looking-glass answer") from None


def covering_prefix(address: str, v4_mask: int, v6_mask: int) -> str | None:
    """``address`` (label form: "ip", "ip:port" or "[ip]:port") widened to the configured mask."""
    host = address
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    mask = v4_mask if ip.version == 4 else v6_mask
    return str(ipaddress.ip_network(f"{ip}/{mask}", strict=False))


def edge_addresses(store: Any) -> set[tuple[str, str]]:
    """(address, provider) of every address the non-control HTTP and TCP checks connected to last."""
    out = set()
    for check, state in store.items():
        if check.prober not in ("http", "tcp") or check.control or state.last is None:
            continue
        address = state.last.details.get(D_ADDRESS)
        if isinstance(address, str) and address:
            out.add((address, check.provider))
    return out


def nameserver_addresses(store: Any) -> set[tuple[str, str]]:
    """(address, provider) of every nameserver the non-control authoritative checks asked last."""
    out = set()
    for check, state in store.items():
        if check.prober != "authoritative" or check.control or state.last is None or state.last.zone is None:
            continue
        for ns in state.last.zone.nameservers:
            out.add((ns.address, check.provider))
    return out
