"""The clock probe durations are measured with.

Deadlines stay in event-loop time (``loop.time()``): that is the prober contract and what timers fire on.
Durations do not use it. Under uvloop ``loop.time()`` is libuv's cached clock, in whole milliseconds and
read once per loop iteration, so a phase timed with it is rounded to a millisecond and includes however
long the iteration had already run when the event was handled. :func:`now` reads the clock at the moment
it is called, to the nanosecond.

It is ``time.monotonic``: the clock the standard asyncio loop's ``loop.time()`` returns (so a log line
stamped with loop time still lines up with ours) and, on Linux, CLOCK_MONOTONIC, the clock libuv's
milliseconds come from. Kernel receive timestamps are CLOCK_REALTIME; :class:`RealtimeOffset` brings
them onto this clock.
"""

from __future__ import annotations

import time

now = time.monotonic  # seconds; only differences mean anything


class RealtimeOffset:
    """Converts CLOCK_REALTIME nanosecond stamps (``SO_TIMESTAMPNS``) to :func:`now` seconds.

    The offset between the two clocks moves only when the wall clock is adjusted, so it is read once per
    batch of stamps (:meth:`refresh`) rather than per stamp.
    """

    __slots__ = ("_offset_ns", "_now")

    def __init__(self) -> None:
        self._offset_ns = 0
        self._now = 0.0
        self.refresh()

    def refresh(self) -> float:
        """Re-read both clocks; returns :func:`now` as read."""
        wall = time.time_ns()
        mono_ns = time.monotonic_ns()
        self._offset_ns = wall - mono_ns
        self._now = mono_ns / 1e9
        return self._now

    def convert(self, realtime_ns: int) -> float:
        """``realtime_ns`` on the :func:`now` clock, never later than the present (a stamp from the future
        means the wall clock stepped back since it was taken: the present is then the best bound)."""
        converted = (realtime_ns - self._offset_ns) / 1e9
        return converted if converted <= self._now else min(converted, now())
