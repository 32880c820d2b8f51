"""Per-prefix BGP visibility from RIS-Live-style messages, and the feed's health counters.

A peer is one BGP session of one route collector (``host`` + ``peer``). ``seeing`` holds the peers whose
latest message announced the prefix, ``saw`` every peer that announced it since it was first watched (the
denominator of the decision). A peer whose session goes down (``RIS_PEER_STATE`` down) leaves both sets: a
collector losing its peers is not the prefix being withdrawn.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from exporter.routing.decision import INCONCLUSIVE, Thresholds, judge


class Malformed(ValueError):
    """A message that does not follow the RIS Live format: counted and dropped."""


@dataclass
class PrefixState:
    prefix: str
    seeing: set[str] = field(default_factory=set)
    saw: set[str] = field(default_factory=set)
    withdrawals: int = 0
    announcements: int = 0
    last_change: float = 0.0  # unix time of the latest change of ``seeing``; 0 = none yet

    def announce(self, peer: str, now: float) -> None:
        self.announcements += 1
        self.saw.add(peer)
        if peer not in self.seeing:
            self.seeing.add(peer)
            self.last_change = now

    def withdraw(self, peer: str, now: float) -> None:
        self.withdrawals += 1
        if peer in self.seeing:
            self.seeing.discard(peer)
            self.last_change = now

    def peer_down(self, peer: str, now: float) -> None:
        if peer in self.seeing:
            self.last_change = now
        self.seeing.discard(peer)
        self.saw.discard(peer)


@dataclass
class FeedHealth:
    connected: bool = False
    synced: bool = False  # the initial state (when configured) was loaded on the current connection
    last_message: float = 0.0  # monotonic time of the latest message, pongs included; 0 = none yet
    last_message_unix: float = 0.0
    messages: int = 0
    reconnects: int = 0
    dropped: int = 0
    malformed: int = 0

    def conclusive(self, stale_after: float, now: float | None = None) -> bool:
        """Connected, synced and heard from within ``stale_after`` seconds."""
        now = time.monotonic() if now is None else now
        return self.connected and self.synced and self.last_message > 0 and now - self.last_message <= stale_after


def normalise(prefix: str) -> str:
    return str(ipaddress.ip_network(prefix, strict=False))


def peer_id(host: object, peer: object) -> str:
    if not isinstance(host, str) or not isinstance(peer, str) or not host or not peer:
        raise Malformed("host and peer must be non-empty strings")
    return f"{host.lower().removesuffix('.ripe.net')}|{peer}"


class RoutingState:
    """The watched prefixes and what the feed said about them."""

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.thresholds = thresholds or Thresholds()
        self.prefixes: dict[str, PrefixState] = {}
        self.health = FeedHealth()

    def watch(self, prefixes: Iterable[str]) -> list[str]:
        """Track these prefixes (normalised); returns the ones that are new."""
        new = []
        for p in prefixes:
            key = normalise(p)
            if key not in self.prefixes:
                self.prefixes[key] = PrefixState(key)
                new.append(key)
        return new

    def forget(self, keep: Iterable[str]) -> None:
        wanted = {normalise(p) for p in keep}
        for key in [k for k in self.prefixes if k not in wanted]:
            del self.prefixes[key]

    def state_of(self, prefix: str, now: float | None = None) -> str:
        p = self.prefixes[prefix]
        conclusive = self.health.conclusive(self.thresholds.stale_after, now)
        return judge(len(p.seeing), len(p.saw), conclusive=conclusive, thresholds=self.thresholds)

    def states(self, now: float | None = None) -> dict[str, str]:
        return {k: self.state_of(k, now) for k in self.prefixes}

    def inconclusive(self, now: float | None = None) -> bool:
        return not self.health.conclusive(self.thresholds.stale_after, now)

    # --- messages ------------------------------------------------------------------------------------

    def heard(self) -> None:
        self.health.messages += 1
        self.health.last_message = time.monotonic()
        self.health.last_message_unix = time.time()

    def handle_text(self, text: str | bytes) -> None:
        """Apply one raw message; a malformed one is counted and dropped (never raises)."""
        try:
            self.apply(parse(text))
        except Malformed:
            self.health.malformed += 1
            return
        self.heard()

    def apply(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind != "ris_message":
            return  # pong, ris_subscribe_ok, ris_error...: liveness only (ris_error is logged by the feed)
        data = msg["data"]
        now = time.time()
        peer = peer_id(data.get("host"), data.get("peer"))
        if data.get("type") == "RIS_PEER_STATE":
            if data.get("state") in ("down", "idle", "connect", "active"):
                for p in self.prefixes.values():
                    p.peer_down(peer, now)
            return
        if data.get("type") != "UPDATE":
            return
        withdrawn, announced = _withdrawn(data), _announced(data)  # both checked before either applies
        for prefix in withdrawn:
            state = self.prefixes.get(prefix)
            if state is not None:
                state.withdraw(peer, now)
        for prefix in announced:
            state = self.prefixes.get(prefix)
            if state is not None:
                state.announce(peer, now)

    def load_initial(self, prefix: str, peers: Iterable[str]) -> None:
        """The peers a looking glass says see ``prefix`` now: they replace the current view."""
        state = self.prefixes.get(prefix)
        if state is None:
            return
        peers = set(peers)
        if peers != state.seeing:
            state.last_change = time.time()
        state.seeing = peers
        state.saw |= peers


def parse(text: str | bytes) -> dict[str, Any]:
    """A RIS Live message as a checked mapping; raises Malformed."""
    try:
        msg = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Malformed("not JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise Malformed("expected an object with a type")
    if msg["type"] == "ris_message" and not isinstance(msg.get("data"), dict):
        raise Malformed("ris_message without data")
    return msg


def _prefixes(value: object) -> list[str]:
    if not isinstance(value, list):
        raise Malformed("expected a list of prefixes")
    try:
        return [normalise(p) for p in value if _is_str(p)]
    except ValueError:
        raise Malformed("invalid prefix") from None


def _is_str(value: object) -> bool:
    if not isinstance(value, str):
        raise Malformed("prefix is not a string")
    return True


def _withdrawn(data: dict[str, Any]) -> list[str]:
    return _prefixes(data.get("withdrawals", []))


def _announced(data: dict[str, Any]) -> list[str]:
    announcements = data.get("announcements", [])
    if not isinstance(announcements, list):
        raise Malformed("announcements must be a list")
    out: list[str] = []
    for a in announcements:
        if not isinstance(a, dict):
            raise Malformed("an announcement must be an object")
        out += _prefixes(a.get("prefixes", []))
    return out


__all__ = ["INCONCLUSIVE", "FeedHealth", "Malformed", "PrefixState", "RoutingState", "parse"]
