"""exporter.probers.shared: the loop's HTTP session and DNS sockets stay open until the last runtime
probing on that loop stops, so one runtime stopping does not end the others' probes as ``internal``."""

from __future__ import annotations

import socket

from exporter.probers import httpsession, shared, udpmux


async def test_the_last_runtime_to_stop_closes_what_the_loop_shares() -> None:
    shared.acquire()
    shared.acquire()
    session = httpsession.session()
    mux = udpmux.get(socket.AF_INET)
    await shared.release()
    assert not session.closed and udpmux.active() == [mux]  # the other runtime still probes
    assert httpsession.session() is session
    await shared.release()
    assert session.closed and udpmux.active() == []
    fresh = httpsession.session()  # a runtime started later opens its own
    assert fresh is not session and not fresh.closed
    shared.acquire()
    await shared.release()
    assert fresh.closed
