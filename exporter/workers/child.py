"""A probing worker process: ``python -m exporter.workers.child FD``, started by the parent's WorkerPool.

It runs an ordinary Scheduler over the share of the checks the parent sends and streams the results back
in batches; it keeps no results of its own. It exits when told to, and when the parent goes away: the
socket reaches end of file, and on Linux the kernel also kills it when the parent dies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence

from exporter import eventloop, heap, logs
from exporter.checks import Check
from exporter.probers.result import ProbeResult
from exporter.scheduler import Scheduler
from exporter.workers import wire

BATCH_SECONDS = 0.015  # results wait at most this long before they are sent to the parent
HEARTBEAT_SECONDS = 1.0  # counters are sent at least this often, results or not
PR_SET_PDEATHSIG = 1
log = logging.getLogger("exporter.workers")


class Outbox:
    """What the worker's Scheduler records into: the results since the last batch, sent every few ms."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._pending: list[tuple[str, ProbeResult]] = []
        self._timer: asyncio.TimerHandle | None = None
        self.scheduler: Scheduler | None = None

    def set_checks(self, checks: Sequence[Check]) -> None:
        """The parent's store holds the checks; nothing to keep here."""

    def record(self, check: Check, result: ProbeResult) -> None:
        self._pending.append((check.key, result))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(BATCH_SECONDS, self.flush)

    def flush(self) -> None:
        """Send the pending results with the current counters (also when there are no results)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        results, self._pending = tuple(self._pending), []
        if not self._writer.is_closing():
            self._writer.write(wire.encode(wire.Batch(results, self.stats())))

    def stats(self) -> wire.WorkerStats:
        scheduler = self.scheduler
        if scheduler is None:
            return wire.WorkerStats()
        stats = scheduler.stats
        return wire.WorkerStats(scheduler.checks, scheduler.in_flight, tuple(stats.lag.counts), stats.lag.sum,
                                stats.skipped_total, stats.late_total)

    async def heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            self.flush()
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()


async def serve(fd: int) -> None:
    """Follow the parent's plans until it says stop or goes away."""
    from exporter.probers import PROBERS, shared

    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))
    outbox = Outbox(writer)
    heartbeat = asyncio.create_task(outbox.heartbeat(), name="worker-heartbeat")
    shared.acquire()
    try:
        while True:
            message = await wire.read(reader)
            if message is None or isinstance(message, wire.Stop):
                if outbox.scheduler is not None:
                    await outbox.scheduler.stop(wait=message.wait if message is not None else 0.5)
                break
            if isinstance(message, wire.Plan):
                if outbox.scheduler is None:
                    outbox.scheduler = Scheduler(outbox, PROBERS, concurrency=message.concurrency)  # type: ignore[arg-type]
                    await outbox.scheduler.start(message.checks)
                else:
                    await outbox.scheduler.reload(message.checks)
                heap.settle()
                outbox.flush()
    finally:
        heartbeat.cancel()
        await shared.release()
        writer.close()


def die_with_parent(parent: int) -> None:
    """Ask the kernel to kill this process when the parent dies (Linux); exit now if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        sys.exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m exporter.workers.child")
    p.add_argument("fd", type=int)
    p.add_argument("--parent", type=int, required=True)
    p.add_argument("--log.level", dest="log_level", choices=logs.LEVELS, default="info")
    p.add_argument("--log.format", dest="log_format", choices=("logfmt", "json"), default="logfmt")
    ns = p.parse_args(argv)
    logs.setup(ns.log_level, ns.log_format)
    die_with_parent(ns.parent)
    for signum in (signal.SIGINT, signal.SIGHUP):  # a terminal's ^C or hangup: the parent decides
        signal.signal(signum, signal.SIG_IGN)
    eventloop.run(serve(ns.fd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
