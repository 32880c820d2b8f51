"""exporter.deadline.Deadline: asyncio.timeout_at's semantics, for a loop the caller already holds."""

from __future__ import annotations

import asyncio

import pytest

from exporter.deadline import Deadline


async def test_the_deadline_ends_the_block_with_timeout_error() -> None:
    loop = asyncio.get_running_loop()
    guard = Deadline(loop, loop.time() + 0.05)
    with pytest.raises(TimeoutError):
        async with guard:
            await asyncio.sleep(5)
    assert guard.expired()
    assert loop.time() < guard._when + 0.5
    assert asyncio.current_task().cancelling() == 0  # its own cancellation is taken back


async def test_a_block_that_ends_in_time_is_untouched() -> None:
    loop = asyncio.get_running_loop()
    guard = Deadline(loop, loop.time() + 0.2)
    async with guard:
        await asyncio.sleep(0.01)
    assert not guard.expired()
    await asyncio.sleep(0.3)  # the timer was cancelled: nothing cancels this task later


async def test_a_deadline_already_past_fires_at_the_first_wait() -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        async with Deadline(loop, loop.time() - 1):
            await asyncio.sleep(1)


async def test_cancellation_from_outside_stays_a_cancellation() -> None:
    loop = asyncio.get_running_loop()
    entered = asyncio.Event()

    async def guarded() -> None:
        async with Deadline(loop, loop.time() + 5):
            entered.set()
            await asyncio.sleep(10)

    task = loop.create_task(guarded())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_outside_cancellation_racing_the_deadline_is_not_swallowed() -> None:
    """Both the deadline and a stop cancel the task: the stop wins, as with asyncio.timeout_at."""
    loop = asyncio.get_running_loop()

    async def guarded() -> None:
        async with Deadline(loop, loop.time()):
            asyncio.current_task().cancel()  # someone stops us in the same iteration the deadline fires
            await asyncio.sleep(1)

    with pytest.raises(asyncio.CancelledError):
        await loop.create_task(guarded())


async def test_nested_deadlines_each_answer_for_their_own() -> None:
    loop = asyncio.get_running_loop()
    outer = Deadline(loop, loop.time() + 5)
    inner = Deadline(loop, loop.time() + 0.02)
    async with outer:
        with pytest.raises(TimeoutError):
            async with inner:
                await asyncio.sleep(5)
        await asyncio.sleep(0.01)
    assert inner.expired() and not outer.expired()
