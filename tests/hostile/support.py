"""What every hostile-peer test asserts: the probe fails on time, with the expected reason, leaking nothing.

:func:`probe_hostile` runs one prober call against a peer inside ``no_leaks()`` (fds and tasks, of the
prober and of the peer's own connection handlers, back to the baseline) and optionally ``peak_memory()``.
It checks the prober returned by itself before its deadline plus :data:`GRACE`, so the scheduler's
cancellation is never what ends a hostile probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from exporter.checks import Check
from exporter.probers.result import REASONS, ProbeResult
from tests.helpers.leaks import no_leaks, peak_memory

MAX_LOG_LINE = 1000  # characters
GRACE = 0.25  # seconds past the deadline a prober may take to return (busy 2-core machines)

Prober = Callable[..., Awaitable[ProbeResult]]


@dataclass(frozen=True)
class Outcome:
    result: ProbeResult
    elapsed: float  # seconds from the call to its return
    peak_bytes: int  # traced peak allocation during the probe (0 unless measured)

    @property
    def reason(self) -> str | None:
        return self.result.reason


async def probe_hostile(probe: Prober, check: Check, *, timeout: float, measure_memory: bool = False) -> Outcome:
    """Run ``probe(check, deadline=now + timeout)`` with the leak, deadline and reason-set checks."""
    loop = asyncio.get_running_loop()
    peak = [0]
    async with no_leaks(within=3.0):
        if measure_memory:
            with peak_memory() as peak:
                started = loop.time()
                result = await probe(check, deadline=started + timeout)
                elapsed = loop.time() - started
        else:
            started = loop.time()
            result = await probe(check, deadline=started + timeout)
            elapsed = loop.time() - started
    assert elapsed <= timeout + GRACE, f"probe took {elapsed:.3f}s with a {timeout}s deadline: {result.log}"
    assert result.success == (result.reason is None)
    assert result.reason is None or result.reason in REASONS
    for line in result.log:  # the peer chose much of this text: it must stay one bounded line
        assert "\n" not in line and len(line) < MAX_LOG_LINE, f"log line of {len(line)} characters: {line[:200]!r}"
    return Outcome(result=result, elapsed=elapsed, peak_bytes=peak[0])
