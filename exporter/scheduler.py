"""When probes run: one timer over a heap of due times, bounded concurrency, no self-overlap.

Each check runs every ``check.interval`` seconds at a fixed phase: its first run is due at
``offset_fraction(check.key) * interval`` after start, so starts are spread across the interval and the same
check keeps the same phase across restarts and reloads. One timer callback, waking on a ``TICK_SECONDS``
grid, pops due entries off a heap and launches one short-lived task per run; idle checks cost a heap
entry, not a sleeping task.

Every run goes through :func:`run_guarded`, which hands the prober an absolute deadline, cancels it
``GRACE_SECONDS`` after that deadline and turns any exception into an ``internal`` result, so a broken or
stuck prober can neither stall the schedule nor kill it.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from exporter.checks import Check, offset_fraction
from exporter.deadline import Deadline
from exporter.probers.result import INTERNAL, TIMEOUT, ProbeResult
from exporter.results import Histogram, ResultStore

log = logging.getLogger("exporter.scheduler")


class ProberFn(Protocol):
    """``async def probe(check, *, deadline) -> ProbeResult`` (see exporter.probers.result)."""

    def __call__(self, check: Check, *, deadline: float) -> Awaitable[ProbeResult]: ...


GRACE_SECONDS = 0.5  # how long past its deadline a prober may run before it is cancelled
LATE_SECONDS = 1.0  # a run starting later than this after its due time counts as late
STOP_WAIT_SECONDS = 5.0  # how long stop() waits for cancelled probes to unwind
LAG_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OVERRAN_LOG = "probe overran its deadline"
# Timer granularity: due runs start in batches at most this late. Each wake-up of the loop costs about
# the same whatever it serves, so a coarser grid is less CPU per probe at low rates (at 200 probes/s
# 25 ms measured about 5 % less than 10 ms, docs/performance.md) for a few milliseconds more start lag.
TICK_SECONDS = 0.025


def _failed(reason: str, started: float, now: float, lines: Iterable[str]) -> ProbeResult:
    return ProbeResult(
        success=False,
        reason=reason,
        duration_seconds=max(0.0, now - started),
        log=tuple(lines),
        finished_at=time.time(),
    )


async def run_guarded(prober: ProberFn, check: Check, *, timeout: float | None = None,
                      loop: asyncio.AbstractEventLoop | None = None) -> ProbeResult:
    """Run one probe with a deadline ``timeout`` (default ``check.timeout``) seconds from now.

    The prober is cancelled ``GRACE_SECONDS`` after the deadline (reason ``timeout``); an exception or a
    non-result return becomes reason ``internal`` with the traceback logged. Cancellation of the caller
    propagates. ``loop`` is the running loop, when the caller holds it.
    """
    loop = loop or asyncio.get_running_loop()
    started = loop.time()
    deadline = started + (check.timeout if timeout is None else timeout)
    guard = Deadline(loop, deadline + GRACE_SECONDS)
    try:
        async with guard:
            result = await prober(check, deadline=deadline)
    except TimeoutError:
        if guard.expired():
            return _failed(TIMEOUT, started, loop.time(), [OVERRAN_LOG])
        return _internal_error(check, started, loop.time())
    except asyncio.CancelledError:
        task = asyncio.current_task(loop)
        if task is None or task.cancelling():
            raise  # we are being cancelled (stop, client gone): not the prober's doing
        return _internal_error(check, started, loop.time())  # the prober raised CancelledError itself
    except Exception:
        return _internal_error(check, started, loop.time())
    if not isinstance(result, ProbeResult):
        log.error("prober %r returned %r instead of a ProbeResult for %s", check.prober, result, _name(check))
        return _failed(INTERNAL, started, loop.time(), [f"prober returned {type(result).__name__}"])
    return result


async def run_with(probers: Mapping[str, ProberFn], check: Check, *, timeout: float | None = None,
                   loop: asyncio.AbstractEventLoop | None = None) -> ProbeResult:
    """:func:`run_guarded` with the prober ``check`` names; an unknown prober is an ``internal`` result."""
    prober = probers.get(check.prober)
    if prober is None:
        now = (loop or asyncio.get_running_loop()).time()
        return _failed(INTERNAL, now, now, [f"no prober named {check.prober!r}"])
    return await run_guarded(prober, check, timeout=timeout, loop=loop)


def _internal_error(check: Check, started: float, now: float) -> ProbeResult:
    log.exception("prober %r raised for %s", check.prober, _name(check))
    lines = ["internal error (a bug in the exporter):"] + traceback.format_exc().rstrip().splitlines()
    return _failed(INTERNAL, started, now, lines)


def _name(check: Check) -> str:
    return f"{check.service}/{check.check} target={check.target!r} region={check.region!r}"


@dataclass(eq=False, slots=True)
class _Entry:
    """One scheduled check. ``due`` is its next due time; a heap item whose time differs is stale."""

    check: Check
    due: float
    task: asyncio.Task[None] | None = None
    removed: bool = False


@dataclass(slots=True)
class SchedulerStats:
    """Counters read by the self-metrics collector."""

    skipped_total: int = 0
    late_total: int = 0
    lag: Histogram = field(default_factory=lambda: Histogram(LAG_BUCKETS))


class Scheduler:
    """Runs every loaded check on its interval and records each result in the store."""

    workers = 1  # processes probing: this one (exporter.workers.WorkerPool runs several)
    worker_restarts = 0

    def __init__(
        self,
        store: ResultStore,
        probers: Mapping[str, ProberFn],
        *,
        concurrency: int,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._store = store
        self._probers = MappingProxyType(dict(probers))
        self._concurrency = concurrency
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None  # the running loop, from start()
        self._sem: asyncio.Semaphore | None = None
        self._plan: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = 0
        self._anchor = 0.0  # clock time the schedule started; every phase is relative to it
        self._timer: asyncio.TimerHandle | None = None
        self._running = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = SchedulerStats()
        self.in_flight = 0  # probes running now (holding a concurrency slot)

    # --- public API -------------------------------------------------------------------------------------
    @property
    def checks(self) -> int:
        return len(self._plan)

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def running(self) -> bool:
        return self._running

    def next_due(self, key: str) -> float | None:
        """Clock time of a check's next run (None if not scheduled)."""
        entry = self._plan.get(key)
        return None if entry is None else entry.due

    async def start(self, checks: Iterable[Check]) -> None:
        """Load ``checks`` into the store and start the timer loop."""
        if self.running:
            raise RuntimeError("scheduler already started")
        self._loop = asyncio.get_running_loop()
        if self._clock is None:
            self._clock = self._loop.time
        self._sem = asyncio.Semaphore(self._concurrency)
        self._anchor = self._clock()
        self._plan, self._heap = {}, []
        self._apply(list(checks), self._anchor)
        self._running = True
        self._poke()

    async def reload(self, checks: Iterable[Check]) -> None:
        """Swap the plan: unchanged keys keep phase and counters, removed ones stop, new ones get offsets."""
        if not self.running:
            raise RuntimeError("scheduler not started")
        self._apply(list(checks), self._now())
        self._poke()

    async def stop(self, *, wait: float = STOP_WAIT_SECONDS) -> None:
        """Stop scheduling and cancel in-flight probes, waiting at most ``wait`` seconds for them."""
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=wait)
            if pending:
                log.warning("%d probe(s) did not stop within %.1fs of being cancelled", len(pending), wait)

    async def run_once(self, check: Check, *, timeout: float | None = None) -> ProbeResult:
        """Run one probe now, outside the schedule and its concurrency limit, with the usual guards."""
        return await run_with(self._probers, check, timeout=timeout, loop=self._loop)

    # --- planning ---------------------------------------------------------------------------------------
    def _apply(self, checks: list[Check], now: float) -> None:
        for check in checks:
            if not check.interval > 0:
                raise ValueError(f"check {_name(check)} has interval {check.interval}; it must be positive")
        self._store.set_checks(checks)
        old, plan = self._plan, {}
        for check in checks:
            entry = old.pop(check.key, None)
            if entry is None:
                entry = _Entry(check, 0.0)
                self._schedule(entry, self._first_due(check, now))
            else:
                interval_changed = entry.check.interval != check.interval
                entry.check = check
                if interval_changed:
                    self._schedule(entry, self._first_due(check, now))
            plan[check.key] = entry
        for entry in old.values():
            entry.removed = True  # its heap item goes stale; an in-flight run's result is dropped
        self._plan = plan

    def _first_due(self, check: Check, now: float) -> float:
        """The first slot at or after ``now`` on the check's fixed phase grid."""
        interval = check.interval
        due = self._anchor + offset_fraction(check.key) * interval
        if due < now:
            due += interval * -(-(now - due) // interval)
        return due

    def _schedule(self, entry: _Entry, due: float) -> None:
        entry.due = due
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, entry))

    def _now(self) -> float:
        assert self._clock is not None
        return self._clock()

    # --- timer --------------------------------------------------------------------------------------------
    def _poke(self) -> None:
        """Re-arm the timer for the earliest due entry (after start, reload, or a timer run)."""
        if not self._running:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._heap:
            return
        # Wake on a TICK_SECONDS grid: runs falling due within one tick start together, so the loop wakes
        # once for several probes and their answers tend to arrive in the same loop iteration.
        now = self._now()
        when = -(-self._heap[0][0] // TICK_SECONDS) * TICK_SECONDS
        loop = self._loop or asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, when - now), self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._launch_due(self._now())
        self._poke()

    def _launch_due(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, _, entry = heapq.heappop(heap)
            if entry.removed or entry.due != due:
                continue
            self._schedule(entry, self._next_slot(entry, due, now))
            if entry.task is not None:
                self.stats.skipped_total += 1  # the previous run of this check is still going
                continue
            loop = self._loop or asyncio.get_running_loop()
            task = loop.create_task(self._probe(entry, due), name=f"probe {entry.check.key!r}")
            entry.task = task
            self._tasks.add(task)
            task.add_done_callback(self._task_done(entry))

    def _next_slot(self, entry: _Entry, due: float, now: float) -> float:
        """Fixed rate; slots the loop fell behind on by more than an interval are skipped, not bunched."""
        interval = entry.check.interval
        nxt = due + interval
        if nxt <= now:
            missed = int((now - nxt) // interval) + 1
            self.stats.skipped_total += missed
            nxt += missed * interval
        return nxt

    def _task_done(self, entry: _Entry) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            if entry.task is task:
                entry.task = None
            if not task.cancelled() and task.exception() is not None:
                log.error("probe task failed", exc_info=task.exception())

        return done

    async def _probe(self, entry: _Entry, due: float) -> None:
        check = entry.check
        assert self._sem is not None
        async with self._sem:
            if entry.removed:
                return  # unloaded while waiting for a slot
            lag = max(0.0, self._now() - due)
            self.stats.lag.observe(lag)
            if lag > LATE_SECONDS:
                self.stats.late_total += 1
            self.in_flight += 1
            try:
                result = await self.run_once(check)
            finally:
                self.in_flight -= 1
        if not entry.removed:
            self._store.record(check, result)
