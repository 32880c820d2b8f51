"""Token buckets per client, with a bounded table: the /probe rate limit.

Each client (remote address) has a bucket of ``burst`` tokens refilled at ``rate`` per second; a request
takes one token or is refused with the time until the next token. A bucket left alone for ``burst / rate``
seconds is full again, which is the same as having no entry, so idle clients are dropped as they are met
at the old end of the table. When the table still holds ``max_clients`` entries, the least recently seen
client is dropped: a flood of spoofed or short-lived addresses costs memory up to that bound, never more,
and a dropped client simply starts again with a full bucket.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_CLIENTS = 10_000
_SWEEP_PER_CALL = 4  # idle entries examined (and dropped) per request: amortised O(1)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after: float = 0.0  # seconds until a token is available (when refused)
    first_refusal: bool = False  # the client was allowed last time: worth one log line, not one per request


class TokenBuckets:
    def __init__(self, rate: float, burst: int, *, max_clients: int = MAX_CLIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate < 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate must be >= 0, burst and max_clients >= 1")
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._limited: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> Decision:
        """Spend one of ``client``'s tokens, or say how long until one is available."""
        if not self.enabled:
            return Decision(True)
        now = self._clock()
        self._sweep(now)
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = _Bucket(float(self.burst), now)
            if len(self._buckets) > self.max_clients:
                stale, _ = self._buckets.popitem(last=False)
                self._limited.discard(stale)
        else:
            self._buckets.move_to_end(client)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            self._limited.discard(client)
            return Decision(True)
        first = client not in self._limited
        self._limited.add(client)
        return Decision(False, retry_after=(1.0 - bucket.tokens) / self.rate, first_refusal=first)

    def _sweep(self, now: float) -> None:
        """Drop a few clients at the least-recently-seen end whose bucket has refilled completely."""
        refill = self.burst / self.rate
        for _ in range(_SWEEP_PER_CALL):
            if not self._buckets:
                return
            client, bucket = next(iter(self._buckets.items()))
            if now - bucket.updated < refill:
                return
            del self._buckets[client]
            self._limited.discard(client)
