"""The parent's side of ``--workers N``: N worker processes probe, this process keeps the one results store.

Each worker is a fresh interpreter (``python -m exporter.workers.child``), never a fork of the running event
loop. It owns a stable share of the checks, chosen by a jump consistent hash of the check's identity
(``worker_of``), so a reload moves only the checks that were added or removed and the same check always
lands on the same worker. Workers stream their results back in batches; the parent records them into its
``ResultStore``, where the vantage verdict of each region is judged once from its controls, wherever they
ran. ``/metrics`` is rendered from that store alone, so a scrape never waits on a worker.

``defaults.concurrency`` is split across workers: each gets ``concurrency // N``, the first
``concurrency % N`` one more, and every worker at least one.

A worker that exits unasked is started again with its share (counted in ``worker_restarts``); its counters
so far are kept, so the exported totals never go down.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

import exporter
from exporter import logs
from exporter.checks import Check, worker_of
from exporter.probers.result import ProbeResult
from exporter.results import Histogram, ResultStore
from exporter.scheduler import STOP_WAIT_SECONDS, ProberFn, SchedulerStats, run_with
from exporter.workers import wire

log = logging.getLogger("exporter.workers")

RESTART_MIN_SECONDS = 0.1  # first restart of a worker that died
RESTART_MAX_SECONDS = 10.0  # back-off cap for a worker that keeps dying at once
STABLE_SECONDS = 30.0  # a worker that ran this long restarts without back-off
STOP_MARGIN_SECONDS = 0.5  # past stop(wait=...), a worker still running is killed


def share_of_concurrency(total: int, workers: int, index: int) -> int:
    """Worker ``index``'s (0-based) part of ``total`` concurrent probes."""
    return max(1, total // workers + (1 if index < total % workers else 0))


def split(checks: Iterable[Check], workers: int) -> list[tuple[Check, ...]]:
    """Each worker's share, in load order."""
    shares: list[list[Check]] = [[] for _ in range(workers)]
    for check in checks:
        shares[worker_of(check.key, workers) - 1].append(check)
    return [tuple(share) for share in shares]


class _Worker:
    """One worker slot: its share, and the process running it now (if any)."""

    def __init__(self, index: int, concurrency: int) -> None:
        self.index = index
        self.concurrency = concurrency
        self.plan: tuple[Check, ...] = ()
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.stats = wire.WorkerStats()
        self.task: asyncio.Task[None] | None = None

    def send(self, message: object) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(wire.encode(message))


class WorkerPool:
    """Presents the Scheduler's interface to the Runtime; the probing happens in worker processes."""

    def __init__(self, store: ResultStore, probers: Mapping[str, ProberFn], *, concurrency: int,
                 workers: int) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._store = store
        self._probers = MappingProxyType(dict(probers))
        self._concurrency = concurrency
        self._workers = [_Worker(i, share_of_concurrency(concurrency, workers, i)) for i in range(workers)]
        self._retired = SchedulerStats()  # counters of worker processes that have exited
        self._running = False
        self.worker_restarts = 0

    # --- the Scheduler's interface ----------------------------------------------------------------------
    @property
    def workers(self) -> int:
        return len(self._workers)

    @property
    def checks(self) -> int:
        return sum(len(w.plan) for w in self._workers)

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def running(self) -> bool:
        return self._running

    @property
    def in_flight(self) -> int:
        return sum(w.stats.in_flight for w in self._workers)

    @property
    def stats(self) -> SchedulerStats:
        """Every worker's counters added up, including those of processes that have exited."""
        total = SchedulerStats(self._retired.skipped_total, self._retired.late_total, _copy(self._retired.lag))
        for worker in self._workers:
            _add(total, worker.stats)
        return total

    def pids(self) -> list[int]:
        """The worker processes running now."""
        return [w.proc.pid for w in self._workers if w.proc is not None and w.proc.returncode is None]

    async def start(self, checks: Iterable[Check]) -> None:
        """Hand each worker its share and start the worker processes."""
        if self._running:
            raise RuntimeError("worker pool already started")
        self._assign(list(checks))
        self._running = True
        for worker in self._workers:
            await self._spawn(worker)
            worker.task = asyncio.create_task(self._supervise(worker), name=f"worker-{worker.index}")

    async def reload(self, checks: Iterable[Check]) -> None:
        """Send every worker its new share: unchanged checks keep their phase in the worker that has them."""
        if not self._running:
            raise RuntimeError("worker pool not started")
        self._assign(list(checks))
        for worker in self._workers:
            worker.send(wire.Plan(worker.plan, worker.concurrency))

    async def stop(self, *, wait: float = STOP_WAIT_SECONDS) -> None:
        """Tell every worker to stop (in-flight probes get ``wait`` seconds); kill any still running after."""
        self._running = False
        for worker in self._workers:
            worker.send(wire.Stop(wait))
        procs = [w.proc for w in self._workers if w.proc is not None]
        if procs:
            waits = [asyncio.ensure_future(p.wait()) for p in procs]
            _, pending = await asyncio.wait(waits, timeout=wait + STOP_MARGIN_SECONDS)
            for proc in procs:
                if proc.returncode is None:
                    log.warning("worker did not stop in time; killing it", extra={"fields": {"pid": proc.pid}})
                    proc.kill()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        tasks = [w.task for w in self._workers if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def run_once(self, check: Check, *, timeout: float | None = None) -> ProbeResult:
        """Run one probe now in this process (``/probe``), with the usual guards."""
        return await run_with(self._probers, check, timeout=timeout)

    # --- workers ----------------------------------------------------------------------------------------
    def _assign(self, checks: list[Check]) -> None:
        for check in checks:
            if not check.interval > 0:
                raise ValueError(f"check {check.key!r} has interval {check.interval}; it must be positive")
        self._store.set_checks(checks)
        for worker, share in zip(self._workers, split(checks, len(self._workers)), strict=True):
            worker.plan = share

    async def _spawn(self, worker: _Worker) -> None:
        """Start a fresh worker process and send it its share."""
        ours, theirs = socket.socketpair()
        try:
            worker.proc = await asyncio.create_subprocess_exec(
                *child_command(theirs.fileno()), pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                env=child_environment())
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        worker.reader, worker.writer = await asyncio.open_unix_connection(sock=ours)
        worker.send(wire.Plan(worker.plan, worker.concurrency))
        log.debug("worker started", extra={"fields": {"worker": worker.index, "pid": worker.proc.pid,
                                                      "checks": len(worker.plan)}})

    async def _supervise(self, worker: _Worker) -> None:
        """Record the worker's results; when it exits unasked, start it again with its share."""
        loop = asyncio.get_running_loop()
        backoff = RESTART_MIN_SECONDS
        while True:
            started = loop.time()
            await self._pump(worker)
            assert worker.proc is not None
            code = await worker.proc.wait()
            self._retire(worker)
            if not self._running:
                return
            self.worker_restarts += 1
            log.error("worker exited; starting it again", extra={"fields": {
                "worker": worker.index, "pid": worker.proc.pid, "code": code, "checks": len(worker.plan)}})
            backoff = RESTART_MIN_SECONDS if loop.time() - started > STABLE_SECONDS else backoff
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_MAX_SECONDS)
            if not self._running:
                return
            try:
                await self._spawn(worker)
            except OSError as exc:
                log.error("cannot start a worker", extra={"fields": {"worker": worker.index, "err": str(exc)}})
                worker.proc = None
                await asyncio.sleep(backoff)

    async def _pump(self, worker: _Worker) -> None:
        """Record every batch the worker sends until its end of the socket closes."""
        reader = worker.reader
        if reader is None:
            return
        while (message := await wire.read(reader)) is not None:
            if isinstance(message, wire.Batch):
                worker.stats = message.stats
                record_batch(self._store, message)

    def _retire(self, worker: _Worker) -> None:
        """Fold an exited process's counters into the pool's, so totals never go down."""
        _add(self._retired, worker.stats)
        worker.stats = wire.WorkerStats()
        if worker.writer is not None:
            worker.writer.close()
            worker.writer = None
        worker.reader = None


def record_batch(store: ResultStore, batch: wire.Batch) -> None:
    """Record a worker's results as the Scheduler records its own: by key, into the check loaded now
    (a result for a check a reload removed is dropped)."""
    for key, result in batch.results:
        state = store.get(key)
        if state is not None:
            store.record(state.check, result)


def _copy(histogram: Histogram) -> Histogram:
    out = Histogram(histogram.bounds)
    out.counts[:] = histogram.counts
    out.sum = histogram.sum
    return out


def _add(total: SchedulerStats, stats: wire.WorkerStats) -> None:
    total.skipped_total += stats.skipped_total
    total.late_total += stats.late_total
    if stats.lag_counts:
        counts = total.lag.counts
        for i, n in enumerate(stats.lag_counts):
            counts[i] += n
        total.lag.sum += stats.lag_sum


def child_command(fd: int) -> Sequence[str]:
    """The worker's command line: this interpreter, this process's log level and format."""
    root = logging.getLogger()
    level = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn"}.get(
        root.getEffectiveLevel(), "error")
    json_logs = any(isinstance(h.formatter, logs.JSONFormatter) for h in root.handlers)
    return [sys.executable, "-m", "exporter.workers.child", str(fd), "--parent", str(os.getpid()),
            "--log.level", level, "--log.format", "json" if json_logs else "logfmt"]


def child_environment() -> dict[str, str]:
    """This process's environment, with this copy of the exporter first on the import path."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(exporter.__file__)))
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}

