"""Which event loop runs the exporter: uvloop when it is installed (a default dependency wherever it builds).

Every probe, timer and scrape shares one loop, so the loop's own overhead is paid thousands of times a
second; uvloop cuts it (docs/performance.md). Where uvloop does not install (Windows, PyPy) the exporter
runs, and behaves the same, on the standard loop.
``OUTAGE_EXPORTER_EVENT_LOOP=asyncio`` forces the standard loop (to compare, or to rule uvloop out when
debugging); ``uvloop`` makes a missing uvloop an error instead of a silent fallback.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

ENV = "OUTAGE_EXPORTER_EVENT_LOOP"
T = TypeVar("T")


def choose(preference: str | None = None) -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """(name, loop factory) for ``preference`` ("auto", "uvloop" or "asyncio"; default: the environment)."""
    wanted = (preference or os.environ.get(ENV) or "auto").strip().lower()
    if wanted not in ("auto", "uvloop", "asyncio"):
        raise ValueError(f"{ENV} must be auto, uvloop or asyncio, not {wanted!r}")
    if wanted != "asyncio":
        try:
            import uvloop
        except ImportError:
            if wanted == "uvloop":
                raise
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", None


def run(main: Coroutine[Any, Any, T], *, preference: str | None = None) -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    try:
        _, factory = choose(preference)
    except BaseException:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running_name() -> str:
    """"uvloop" or "asyncio": what runs the current loop (the exporter logs it at startup)."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
