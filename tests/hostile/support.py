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
STALL = 0.6  # deadline for peers that never give a usable answer: the probe must end right then
FAST = 3.0  # deadline for peers the prober should see through quickly (it must end well before)
QUICK = 1.0  # "well before": a fast case taking longer than this waited instead of failing

Prober = Callable[..., Awaitable[ProbeResult]]


@dataclass(frozen=True)
class Outcome:
    result: ProbeResult
    elapsed: float  # seconds from the call to its return
    peak_bytes: int  # traced peak allocation during the probe (0 unless measured)
    timeout: float = 0.0  # the deadline the probe was given, in seconds from the call

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
    return Outcome(result=result, elapsed=elapsed, peak_bytes=peak[0], timeout=timeout)


def deadline(stalls: bool) -> float:
    """The timeout a case runs with: STALL when the peer never gives a usable answer, else FAST."""
    return STALL if stalls else FAST


def assert_outcome(out: Outcome, reason: str | None, *, stalls: bool, peak_limit: int | None = None) -> None:
    """The expected reason, on time: a stalling peer ends the probe at its deadline and never before, any other
    ends it well before (QUICK); with ``peak_limit``, the traced peak stays below it."""
    assert out.reason == reason, out.result.log
    if stalls:
        assert out.elapsed >= out.timeout - 0.05, (
            f"ended after {out.elapsed:.2f}s: a peer without a usable answer cannot fail before the deadline")
    else:
        assert out.elapsed < QUICK, f"took {out.elapsed:.2f}s: the prober waited instead of failing"
    if peak_limit is not None:
        assert out.peak_bytes < peak_limit, f"peak {out.peak_bytes} bytes"
