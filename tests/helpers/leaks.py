"""Leak checks for tests that point a prober at broken or hostile peers.

A prober that survives a hostile peer but leaves a socket, a file descriptor or a task behind will still
take the exporter down after enough runs. These helpers take a snapshot of the process's open file
descriptors and the event loop's tasks, run the code under test, and wait (briefly) for both counts to
come back to where they were: transports close on the next loop iterations, so an immediate comparison
would flap.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from exporter.probers import clock, readiness


@dataclass(frozen=True)
class Snapshot:
    fds: int
    tasks: int

    def __str__(self) -> str:
        return f"{self.fds} fds, {self.tasks} tasks"


def open_fds() -> list[str]:
    """What each open descriptor of this process points at (sockets show as ``socket:[inode]``)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
    return out


def snapshot() -> Snapshot:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    return Snapshot(fds=len(open_fds()), tasks=len(tasks))


async def settled(before: Snapshot, *, within: float = 2.0) -> Snapshot:
    """Wait up to ``within`` seconds for fd and task counts to drop back to ``before``; return the last."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while True:
        gc.collect()
        now = snapshot()
        if (now.fds <= before.fds and now.tasks <= before.tasks) or loop.time() >= end:
            return now
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def no_leaks(*, within: float = 2.0) -> AsyncIterator[Snapshot]:
    """``async with no_leaks():`` fails the test if the block leaves fds or tasks behind.

    The socket that keeps the kernel's receive stamping on for the life of the process (opened by the
    first probe that reads with stamps, exporter/probers/clock.py) and the loop's shared epoll set (made
    by the first plain HTTP connection, exporter/probers/readiness.py) are opened first, so they are not
    counted as the block's leaks."""
    clock.hold_timestamping()
    readiness.for_loop(asyncio.get_running_loop())
    before = snapshot()
    yield before
    after = await settled(before, within=within)
    assert after.fds <= before.fds, f"file descriptors leaked: before {before}, after {after}: {open_fds()}"
    assert after.tasks <= before.tasks, (
        f"tasks leaked: before {before}, after {after}: {[t.get_coro() for t in asyncio.all_tasks()]}"
    )


@contextlib.contextmanager
def peak_memory() -> Iterator[list[int]]:
    """Yields a one-element list that holds the traced peak allocation in bytes when the block ends."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    box = [0]
    try:
        yield box
    finally:
        box[0] = tracemalloc.get_traced_memory()[1]
        if not was_tracing:
            tracemalloc.stop()
