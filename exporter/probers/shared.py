"""The per-event-loop resources the probers share: the HTTP session and the UDP sockets for DNS.

They belong to the loop, not to one runtime, so they are closed when the last runtime probing on that loop
stops. The lab and the tests run several runtimes in one process; one of them stopping must not close the
session under the others (their probes in flight would end as ``internal``).
"""

from __future__ import annotations

import asyncio
import weakref

from exporter.probers import httpsession, udpmux

_USERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()


def acquire() -> None:
    """A runtime on the running loop starts probing."""
    loop = asyncio.get_running_loop()
    _USERS[loop] = _USERS.get(loop, 0) + 1


async def release() -> None:
    """A runtime stops probing; the last one on the loop closes what they shared."""
    loop = asyncio.get_running_loop()
    left = _USERS.get(loop, 1) - 1
    if left > 0:
        _USERS[loop] = left
        return
    _USERS.pop(loop, None)
    await httpsession.close()
    await udpmux.close()
