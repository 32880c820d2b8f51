"""Event-loop lag monitor: how late a short sleep wakes up.

Every probe, scrape and timer shares one event loop; a blocking call anywhere delays all of them. A task that
sleeps ``interval`` seconds and measures the oversleep shows that delay directly, independent of any probe.
"""

from __future__ import annotations

import asyncio

from exporter.results import Histogram

LOOP_LAG_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)


class LoopLagMonitor:
    """Samples event-loop lag every ``interval`` seconds into a histogram."""

    def __init__(self, *, interval: float = 0.5) -> None:
        if not interval > 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.histogram = Histogram(LOOP_LAG_BUCKETS)
        self.last_lag = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="loop-lag-monitor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def observe(self, lag: float) -> None:
        self.last_lag = max(0.0, lag)
        self.histogram.observe(self.last_lag)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval)
            self.observe(loop.time() - before - self.interval)
