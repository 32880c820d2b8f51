"""A resolver cache whose TTLs run on story time: a 300 s TTL at speed 30 lasts 10 wall seconds.

Answers handed to clients carry the remaining TTL in story seconds, so a prober sees the same TTL
countdown (300 -> 0) it would see on the real Internet, only faster.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import dns.rrset

from exporter.lab.zones import Name


@dataclass(frozen=True, slots=True)
class Entry:
    """A resolution outcome: positive (answer), negative (NXDOMAIN / NODATA with SOA) or SERVFAIL."""

    rcode: int
    answer: tuple[dns.rrset.RRset, ...] = ()
    soa: dns.rrset.RRset | None = None
    expires: float = 0.0  # wall-clock (loop) time


@dataclass(frozen=True, slots=True)
class Delegation:
    """A zone cut learnt from a referral: the child's nameservers, with glue addresses when given."""

    zone: Name
    servers: tuple[tuple[Name, str | None], ...]
    expires: float


class Cache:
    def __init__(self, speed: float, clock: Callable[[], float]) -> None:
        self.speed = speed
        self.clock = clock
        self._entries: dict[Hashable, Entry] = {}
        self._expired: dict[Hashable, Entry] = {}  # the latest expired answer per key, for serve-stale
        self._cuts: dict[Name, Delegation] = {}

    def wall(self, story_seconds: float) -> float:
        """Wall seconds a story duration lasts."""
        return story_seconds / self.speed

    def get(self, key: Hashable) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires <= self.clock():
            del self._entries[key]
            if entry.answer:
                self._expired[key] = entry  # kept for serve-stale (RFC 8767)
            return None
        return entry

    def stale(self, key: Hashable, window: float) -> Entry | None:
        """The last answer for ``key`` if it expired less than ``window`` story seconds ago."""
        entry = self._expired.get(key)
        if entry is None or entry.expires + self.wall(window) <= self.clock():
            return None
        return entry

    def put(self, key: Hashable, entry: Entry, ttl: float) -> Entry:
        """Store ``entry`` for ``ttl`` story seconds (not at all when ttl <= 0); return it with its expiry."""
        stored = Entry(entry.rcode, entry.answer, entry.soa, self.clock() + self.wall(max(ttl, 0.0)))
        if ttl > 0:
            self._entries[key] = stored
        if stored.answer:
            self._expired.pop(key, None)
        return stored

    def remaining(self, entry: Entry) -> int:
        """Story seconds left before ``entry`` expires: the TTL to hand out."""
        return max(0, math.ceil((entry.expires - self.clock()) * self.speed))

    def put_cut(self, zone: Name, servers: tuple[tuple[Name, str | None], ...], ttl: float) -> None:
        self._cuts[zone] = Delegation(zone, servers, self.clock() + self.wall(ttl))

    def closest_cut(self, name: Name) -> Delegation | None:
        """The deepest unexpired delegation at or above ``name``."""
        now = self.clock()
        candidate: Name | None = name
        while candidate is not None:
            cut = self._cuts.get(candidate)
            if cut is not None and cut.expires > now:
                return cut
            candidate = candidate.parent() if len(candidate) > 1 else None
        return None

    def clear(self) -> None:
        self._entries.clear()
        self._expired.clear()
        self._cuts.clear()

    def __len__(self) -> int:
        return len(self._entries)
