from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter, defaultdict

import pytest

from exporter.checks import Check, offset_fraction
from exporter.looplag import LoopLagMonitor
from exporter.probers import result as r
from exporter.probers.result import ProbeResult
from exporter.results import ResultStore
from exporter.scheduler import GRACE_SECONDS, OVERRAN_LOG, Scheduler, run_guarded
from tests.helpers.factories import make_check, make_result


class FakeProber:
    """Records every call; each run sleeps ``delay`` seconds, then returns success."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.starts: dict[str, list[float]] = defaultdict(list)
        self.deadlines: list[float] = []
        self.running: Counter[str] = Counter()
        self.max_running = 0
        self.max_running_per_check: Counter[str] = Counter()
        self.cancelled = 0

    async def __call__(self, check: Check, *, deadline: float) -> ProbeResult:
        loop = asyncio.get_running_loop()
        self.starts[check.key].append(loop.time())
        self.deadlines.append(deadline)
        self.running[check.key] += 1
        self.max_running = max(self.max_running, sum(self.running.values()))
        self.max_running_per_check[check.key] = max(self.max_running_per_check[check.key], self.running[check.key])
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running[check.key] -= 1
        return make_result(duration=self.delay)


def _checks(n: int, *, interval: float, timeout: float | None = None, prefix: str = "c") -> list[Check]:
    return [
        make_check(f"{prefix}{i}", interval=interval, timeout=interval / 2 if timeout is None else timeout)
        for i in range(n)
    ]


async def _until(condition, *, timeout: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


@pytest.fixture
async def running():
    """Start schedulers with ``await running(...)``; all are stopped at teardown."""
    started: list[Scheduler] = []

    async def start(checks, probers, *, concurrency=16, store=None):
        scheduler = Scheduler(ResultStore() if store is None else store, probers, concurrency=concurrency)
        await scheduler.start(checks)
        started.append(scheduler)
        return scheduler

    yield start
    for scheduler in started:
        await scheduler.stop()


async def test_first_runs_follow_the_deterministic_offsets_and_spread_over_the_interval(running):
    checks = _checks(100, interval=1.0, timeout=0.5)
    fake = FakeProber()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    scheduler = await running(checks, {"http": fake}, concurrency=200)
    for check in checks:
        assert scheduler.next_due(check.key) - t0 == pytest.approx(offset_fraction(check.key), abs=0.01)
    await asyncio.sleep(1.05)
    first = {c.key: fake.starts[c.key][0] - t0 for c in checks}
    assert len(first) == 100
    for check in checks:
        assert first[check.key] == pytest.approx(offset_fraction(check.key), abs=0.05)
    per_100ms = Counter(min(int(t * 10), 9) for t in first.values())
    assert len(per_100ms) == 10  # every tenth of the second has starts
    assert max(per_100ms.values()) <= 25  # and none has a herd


async def test_offsets_are_the_same_for_a_second_scheduler(running):
    checks = _checks(5, interval=10.0)
    loop = asyncio.get_running_loop()
    t1 = loop.time()
    a = await running(checks, {"http": FakeProber()})
    t2 = loop.time()
    b = await running(checks, {"http": FakeProber()})
    for check in checks:
        assert a.next_due(check.key) - t1 == pytest.approx(b.next_due(check.key) - t2, abs=0.01)


async def test_checks_run_every_interval(running):
    check = make_check(interval=0.1, timeout=0.05)
    fake = FakeProber()
    store = ResultStore()
    await running([check], {"http": fake}, store=store)
    await asyncio.sleep(0.55)
    starts = fake.starts[check.key]
    assert 4 <= len(starts) <= 6
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert all(gap == pytest.approx(0.1, abs=0.04) for gap in gaps)
    assert store.get(check.key).runs == len(starts)


async def test_a_check_never_overlaps_itself_and_skips_are_counted(running):
    check = make_check(interval=0.1, timeout=0.4)
    fake = FakeProber(delay=0.25)
    scheduler = await running([check], {"http": fake})
    await asyncio.sleep(0.75)
    assert fake.max_running_per_check[check.key] == 1
    assert len(fake.starts[check.key]) >= 2
    assert scheduler.stats.skipped_total >= 3


async def test_global_concurrency_is_bounded(running):
    checks = _checks(12, interval=0.2)
    fake = FakeProber(delay=0.1)
    scheduler = await running(checks, {"http": fake}, concurrency=3)
    await asyncio.sleep(0.6)
    assert fake.max_running == 3
    assert scheduler.in_flight <= 3
    assert scheduler.stats.lag.count > 0


async def test_in_flight_counts_running_probes(running):
    checks = _checks(4, interval=0.05, timeout=0.02)
    fake = FakeProber(delay=10)  # never finishes during the test; cancelled by stop
    scheduler = await running(checks, {"http": fake}, concurrency=16)
    await _until(lambda: sum(fake.running.values()) == 4)
    assert scheduler.in_flight == 4


async def test_runs_waiting_over_a_second_for_a_slot_are_late(running):
    slow = make_check("slow", interval=0.3, timeout=2.0)
    fast = make_check("fast", interval=0.02, timeout=0.01)
    fake = FakeProber(delay=1.2)
    scheduler = await running([slow], {"http": fake}, concurrency=1)
    await _until(lambda: fake.running[slow.key] == 1)  # slow now holds the only slot
    await scheduler.reload([slow, fast])  # fast is due within 20 ms and must wait for the slot
    await _until(lambda: len(fake.starts[fast.key]) == 1, timeout=2.0)
    assert scheduler.stats.late_total == 1
    assert scheduler.stats.lag.sum >= 1.0


async def test_prober_gets_an_absolute_deadline_of_now_plus_timeout():
    fake = FakeProber()
    check = make_check(timeout=0.3)
    before = asyncio.get_running_loop().time()
    result = await run_guarded(fake, check)
    after = asyncio.get_running_loop().time()
    assert result.success
    assert before + 0.3 <= fake.deadlines[0] <= after + 0.3


async def test_overrunning_prober_is_cancelled_after_the_grace_period():
    fake = FakeProber(delay=30)
    check = make_check(timeout=0.1)
    started = time.monotonic()
    result = await run_guarded(fake, check)
    elapsed = time.monotonic() - started
    assert not result.success
    assert result.reason == r.TIMEOUT
    assert result.log == (OVERRAN_LOG,)
    assert fake.cancelled == 1
    assert 0.1 + GRACE_SECONDS - 0.05 <= elapsed < 0.1 + GRACE_SECONDS + 0.5
    assert result.duration_seconds == pytest.approx(elapsed, abs=0.1)
    assert result.finished_at > 0


async def test_scheduled_overrun_is_recorded_as_timeout(running):
    check = make_check(interval=5.0, timeout=0.05)
    store = ResultStore()
    await running([dataclasses.replace(check, interval=0.8)], {"http": FakeProber(delay=30)}, store=store)
    await asyncio.sleep(offset_fraction(check.key) * 0.8 + 0.05 + GRACE_SECONDS + 0.15)
    state = store.get(check.key)
    assert state.runs == 1
    assert state.last.reason == r.TIMEOUT
    assert state.failures == {r.TIMEOUT: 1}


async def test_raising_prober_is_internal_and_logged_and_the_schedule_goes_on(running, caplog):
    calls = 0

    async def broken(check: Check, *, deadline: float) -> ProbeResult:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    check = make_check(interval=0.05, timeout=0.02)
    store = ResultStore()
    with caplog.at_level(logging.ERROR, logger="exporter.scheduler"):
        await running([check], {"http": broken}, store=store)
        await asyncio.sleep(0.3)
    state = store.get(check.key)
    assert state.runs >= 3
    assert state.failures == {r.INTERNAL: state.runs}
    assert state.last.reason == r.INTERNAL
    assert any("RuntimeError: boom" in line for line in state.last.log)
    records = [rec for rec in caplog.records if rec.name == "exporter.scheduler"]
    assert records and records[0].exc_info is not None
    assert "boom" in str(records[0].exc_info[1])


async def test_prober_returning_garbage_is_internal():
    async def wrong(check: Check, *, deadline: float):
        return {"success": True}

    result = await run_guarded(wrong, make_check())
    assert result.reason == r.INTERNAL


async def test_prober_raising_cancelled_by_itself_is_internal():
    async def confused(check: Check, *, deadline: float) -> ProbeResult:
        raise asyncio.CancelledError()

    result = await run_guarded(confused, make_check())
    assert result.reason == r.INTERNAL


async def test_run_once_uses_the_prober_of_the_check_and_the_timeout_override():
    fake = FakeProber()
    scheduler = Scheduler(ResultStore(), {"http": fake}, concurrency=1)
    check = make_check(timeout=5.0)
    loop = asyncio.get_running_loop()
    result = await scheduler.run_once(check, timeout=0.2)
    assert result.success
    assert fake.deadlines[0] == pytest.approx(loop.time() + 0.2, abs=0.05)
    missing = await scheduler.run_once(make_check(prober="dns"))
    assert missing.reason == r.INTERNAL
    assert missing.log == ("no prober named 'dns'",)


async def test_reload_keeps_phase_and_counters_drops_removed_and_adds_new(running):
    kept, removed = make_check("kept", interval=0.1, timeout=0.05), make_check("removed", interval=0.1, timeout=0.05)
    fake = FakeProber()
    store = ResultStore()
    scheduler = await running([kept, removed], {"http": fake}, store=store)
    await asyncio.sleep(0.25)
    runs_before = store.get(kept.key).runs
    assert runs_before >= 2
    due_before = scheduler.next_due(kept.key)
    added = make_check("added", interval=0.1, timeout=0.05)
    await scheduler.reload([kept, added])
    assert scheduler.next_due(kept.key) == due_before
    assert scheduler.next_due(removed.key) is None
    assert scheduler.checks == 2
    removed_runs = len(fake.starts[removed.key])
    await asyncio.sleep(0.25)
    assert len(fake.starts[removed.key]) == removed_runs
    assert removed.key not in store
    assert store.get(kept.key).runs >= runs_before + 2
    assert store.get(added.key).runs >= 2


async def test_reload_with_a_new_interval_moves_to_the_new_grid(running):
    check = make_check(interval=10.0, timeout=1.0)
    scheduler = await running([check], {"http": FakeProber()})
    await scheduler.reload([dataclasses.replace(check, interval=0.1, timeout=0.05)])
    due = scheduler.next_due(check.key)
    assert due - asyncio.get_running_loop().time() <= 0.1


async def test_result_of_a_run_in_flight_across_removal_is_discarded(running):
    check = make_check(interval=5.0, timeout=2.0)
    fake = FakeProber(delay=0.3)
    store = ResultStore()
    scheduler = await running([dataclasses.replace(check, interval=0.5)], {"http": fake}, store=store)
    await asyncio.sleep(offset_fraction(check.key) * 0.5 + 0.05)
    assert fake.running[check.key] == 1
    await scheduler.reload([])
    await scheduler.reload([check])  # same key back, while the old run is still going
    await asyncio.sleep(0.35)
    assert store.get(check.key).runs == 0


async def test_stop_cancels_in_flight_probes(running):
    checks = _checks(3, interval=0.05, timeout=0.04)
    fake = FakeProber(delay=30)
    store = ResultStore()
    scheduler = await running(checks, {"http": fake}, store=store)
    await asyncio.sleep(0.1)
    assert sum(fake.running.values()) == 3
    started = time.monotonic()
    await scheduler.stop()
    assert time.monotonic() - started < 0.5
    assert fake.cancelled == 3
    assert scheduler.in_flight == 0
    assert not scheduler.running
    assert all(store.get(c.key).runs == 0 for c in checks)


async def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="concurrency"):
        Scheduler(ResultStore(), {}, concurrency=0)
    scheduler = Scheduler(ResultStore(), {}, concurrency=1)
    with pytest.raises(ValueError, match="interval"):
        await scheduler.start([make_check(interval=0)])


async def test_scale_many_idle_checks_cost_no_tasks(running):
    checks = _checks(5000, interval=600.0, timeout=10.0)
    before = len(asyncio.all_tasks())
    scheduler = await running(checks, {"http": FakeProber()})
    await asyncio.sleep(0)
    assert scheduler.checks == 5000
    assert len(asyncio.all_tasks()) - before <= 5  # the timer, plus whatever few checks are due right now


async def test_loop_lag_monitor_sees_a_blocked_loop():
    monitor = LoopLagMonitor(interval=0.05)
    monitor.start()
    await asyncio.sleep(0.12)
    time.sleep(0.3)  # block the loop on purpose
    await asyncio.sleep(0.1)
    await monitor.stop()
    histogram = monitor.histogram
    assert histogram.count >= 3
    assert histogram.sum >= 0.2
    assert histogram.cumulative()[histogram.bounds.index(0.1)] < histogram.count  # one sample above 100 ms
