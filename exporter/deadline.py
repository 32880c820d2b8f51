"""``asyncio.timeout_at`` for code that already holds its event loop.

Every probe runs under two deadlines (the prober's own and the scheduler's guard). ``asyncio.timeout_at``
asks asyncio for the running loop and the current task, and on Python 3.11 each such question is a
``getpid`` system call. Where system calls are slow (virtual machines; measured on the benchmark host,
docs/performance.md) those calls were several per cent of the prober's CPU. :class:`Deadline` is given
the loop instead and has the same semantics: at the deadline the task is cancelled, and the
``CancelledError`` that results leaves the block as ``TimeoutError``; a cancellation from elsewhere
passes through unchanged.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadline:
    """``async with Deadline(loop, when):`` cancels the block at loop time ``when`` (``TimeoutError``)."""

    __slots__ = ("_loop", "_when", "_task", "_handle", "_cancelling", "_expired")

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._loop = loop
        self._when = when
        self._task: asyncio.Task | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._cancelling = 0
        self._expired = False

    def expired(self) -> bool:
        """Whether the deadline cancelled the block."""
        return self._expired

    async def __aenter__(self) -> Deadline:
        task = asyncio.current_task(self._loop)
        if task is None:
            raise RuntimeError("Deadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._handle = self._loop.call_at(self._when, self._expire)
        return self

    def _expire(self) -> None:
        self._handle = None
        self._expired = True
        assert self._task is not None
        self._task.cancel()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._expired:
            assert self._task is not None
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc  # the deadline's own cancellation, and nobody else's
