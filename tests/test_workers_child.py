"""The worker process (exporter/workers/child.py): it probes the share it is sent and streams the results back.

The worker runs in this process over a socket pair wherever it can (in a thread with its own event loop, so
a worker that never ends fails the test instead of blocking it); a real process is started only for what
belongs to a process: the signals it ignores, and exiting when its parent's end of the socket closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from exporter.checks import Check, offset_fraction
from exporter.probers import result as r
from exporter.workers import child, wire
from exporter.workers.pool import child_command, child_environment
from tests.helpers.factories import make_check, make_result
from tests.servers.http import RawServer, start_raw

WAIT = 5.0  # seconds any single step may take before the test fails


@dataclass
class Parent:
    """The parent's end of the socket: sends plans and stops, reads batches."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def send(self, message: object) -> None:
        self.writer.write(wire.encode(message))

    async def next(self, timeout: float = WAIT) -> object | None:
        return await asyncio.wait_for(wire.read(self.reader), timeout)

    async def batch(self) -> wire.Batch:
        message = await self.next()
        assert isinstance(message, wire.Batch), message
        return message

    async def until(self, done: Callable[[list[wire.Batch]], bool]) -> list[wire.Batch]:
        """Batches read until ``done`` holds for them all (within WAIT seconds)."""
        batches: list[wire.Batch] = []

        async def read() -> None:
            while not done(batches):
                batches.append(await self.batch())

        try:
            await asyncio.wait_for(read(), WAIT)
        except TimeoutError:
            raise AssertionError(f"not within {WAIT}s; last batches: {batches[-2:]}") from None
        return batches


@contextlib.asynccontextmanager
async def worker_in_process() -> AsyncIterator[tuple[Parent, threading.Thread]]:
    """``child.serve`` on one end of a socket pair, the parent on the other."""
    ours, theirs = socket.socketpair()
    worker = threading.Thread(target=asyncio.run, args=(child.serve(theirs.detach()),), name="worker", daemon=True)
    worker.start()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    try:
        yield Parent(reader, writer), worker
    finally:
        writer.close()
        await ended(worker)


async def ended(worker: threading.Thread) -> None:
    await asyncio.to_thread(worker.join, WAIT)
    assert not worker.is_alive(), f"the worker did not end within {WAIT}s"


@pytest.fixture
async def peer() -> AsyncIterator[RawServer]:
    """A loopback TCP peer that accepts and never answers: TCP probes of it succeed, HTTP probes hang."""
    server = await start_raw("silent")
    try:
        yield server
    finally:
        await server.stop()


def tcp_checks(peer: RawServer, *names: str) -> tuple[Check, ...]:
    return tuple(make_check(name, prober="tcp", target=peer.address, interval=0.2, timeout=0.15) for name in names)


def keys(batches: list[wire.Batch]) -> list[str]:
    return [key for batch in batches for key, _ in batch.results]


def has_results_of(*checks: Check) -> Callable[[list[wire.Batch]], bool]:
    return lambda batches: {c.key for c in checks} <= set(keys(batches))


# --- plans -------------------------------------------------------------------------------------------------

async def test_a_plan_is_acknowledged_at_once_then_probed_and_its_results_sent_back(peer: RawServer) -> None:
    plan = tcp_checks(peer, "a", "b", "c")
    async with worker_in_process() as (parent, _):
        parent.send(wire.Plan(plan, 2))
        ack = await parent.batch()
        assert (ack.results, ack.stats.checks, ack.stats.in_flight) == ((), 3, 0)
        batches = await parent.until(has_results_of(*plan))
        results = [result for batch in batches for _, result in batch.results]
        assert all(result.success for result in results), results
        assert sum(batches[-1].stats.lag_counts) >= 3, "the counters of the runs come along"


async def test_a_new_plan_replaces_the_share_and_keeps_the_checks_it_still_has(peer: RawServer) -> None:
    a, b, c, d = tcp_checks(peer, "a", "b", "c", "d")
    async with worker_in_process() as (parent, _):
        parent.send(wire.Plan((a, b), 2))
        await parent.until(has_results_of(a, b))
        parent.send(wire.Plan((b, c, d), 2))
        await parent.until(lambda batches: bool(batches) and batches[-1].stats.checks == 3)
        after = await parent.until(lambda batches: keys(batches).count(b.key) >= 2 and has_results_of(c, d)(batches))
        assert a.key not in keys(after), "a check the new plan dropped is no longer probed"


# --- stopping ----------------------------------------------------------------------------------------------

async def test_stop_cancels_the_probes_in_flight_and_ends_the_worker(peer: RawServer,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(child, "HEARTBEAT_SECONDS", 0.02)
    hanging = next(c for c in (make_check(f"h{i}", prober="http", target=f"http://{peer.address}/", interval=4.0,
                                          timeout=4.0) for i in range(1000)) if offset_fraction(c.key) < 0.01)
    async with worker_in_process() as (parent, worker):
        parent.send(wire.Plan((hanging,), 1))
        await parent.until(lambda batches: bool(batches) and batches[-1].stats.in_flight == 1)
        started = time.monotonic()
        parent.send(wire.Stop(WAIT))
        await ended(worker)
        assert time.monotonic() - started < 1.0, "an answer 4 s away was waited for"
        while (message := await parent.next()) is not None:
            assert isinstance(message, wire.Batch) and not message.results


async def test_the_end_of_the_socket_ends_the_worker_and_its_probing(peer: RawServer) -> None:
    plan = tcp_checks(peer, "a", "b")
    async with worker_in_process() as (parent, worker):
        parent.send(wire.Plan(plan, 2))
        await parent.until(has_results_of(*plan))
        parent.writer.close()
        await ended(worker)
        probed = len(peer.peers)
        await asyncio.sleep(0.5)  # over two intervals of the checks
        assert len(peer.peers) == probed, "checks still probed after the worker ended"


# --- the outbox --------------------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def outbox() -> AsyncIterator[tuple[child.Outbox, Parent]]:
    """An Outbox writing to one end of a socket pair, the parent on the other."""
    ours, theirs = socket.socketpair()
    _, writer = await asyncio.open_unix_connection(sock=theirs)
    reader, parent_writer = await asyncio.open_unix_connection(sock=ours)
    try:
        yield child.Outbox(writer), Parent(reader, parent_writer)
    finally:
        writer.close()
        parent_writer.close()


async def test_results_recorded_close_together_go_out_in_one_batch_in_order() -> None:
    checks = [make_check(name) for name in ("a", "b", "c")]
    results = [make_result(), make_result(False, reason=r.TIMEOUT), make_result(details={r.D_HTTP_STATUS: 204})]
    async with outbox() as (box, parent):
        started = time.monotonic()
        for check, result in zip(checks, results, strict=True):
            box.record(check, result)
        batch = await parent.batch()
        assert time.monotonic() - started >= child.BATCH_SECONDS * 0.9, "results wait for the batch to fill"
        assert batch == wire.Batch(tuple((c.key, res) for c, res in zip(checks, results, strict=True)),
                                   wire.WorkerStats())
        with pytest.raises(TimeoutError):
            await parent.next(timeout=child.BATCH_SECONDS * 4)


async def test_a_flush_sends_the_counters_even_without_results() -> None:
    async with outbox() as (box, parent):
        box.flush()
        assert await parent.batch() == wire.Batch((), wire.WorkerStats())


async def test_the_heartbeat_sends_the_counters_while_no_result_arrives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(child, "HEARTBEAT_SECONDS", 0.02)
    async with outbox() as (box, parent):
        heartbeat = asyncio.create_task(box.heartbeat())
        try:
            assert [await parent.batch() for _ in range(3)] == [wire.Batch((), wire.WorkerStats())] * 3
        finally:
            heartbeat.cancel()


# --- the process -------------------------------------------------------------------------------------------

async def test_a_worker_process_ignores_hangup_and_interrupt_and_exits_when_its_socket_closes(
        peer: RawServer) -> None:
    ours, theirs = socket.socketpair()
    try:
        proc = await asyncio.create_subprocess_exec(*child_command(theirs.fileno()), pass_fds=(theirs.fileno(),),
                                                    stdin=subprocess.DEVNULL, env=child_environment())
    finally:
        theirs.close()
    try:
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        parent = Parent(reader, writer)
        parent.send(wire.Plan((), 1))
        assert (await parent.batch()).stats.checks == 0  # running, its signal handling set up
        for signum in (signal.SIGHUP, signal.SIGINT):
            proc.send_signal(signum)
        await asyncio.sleep(0.2)
        parent.send(wire.Plan(tcp_checks(peer, "a"), 1))
        assert (await parent.batch()).stats.checks == 1 and proc.returncode is None
        writer.close()
        assert await asyncio.wait_for(proc.wait(), WAIT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_a_worker_whose_parent_is_already_gone_exits_at_once() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        command = [sys.executable, "-m", "exporter.workers.child", str(theirs.fileno()), "--parent",
                   str(0x7FFFFFFF)]
        done = subprocess.run(command, pass_fds=(theirs.fileno(),), env=child_environment(), capture_output=True,
                              timeout=WAIT * 2, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        theirs.close()
        ours.settimeout(WAIT)
        assert ours.recv(1) == b"", "it never answered a plan"
