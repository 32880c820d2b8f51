"""The shared epoll set plain HTTP connections learn readiness from (exporter/probers/readiness.py)."""

from __future__ import annotations

import asyncio
import select
import socket

import pytest

from exporter.probers import readiness

pytestmark = pytest.mark.skipif(not readiness.AVAILABLE, reason="no epoll on this platform")


async def _until(condition, within: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not condition():
        assert loop.time() < end, "no readiness was reported"
        await asyncio.sleep(0.005)


async def test_each_change_of_readiness_is_reported_once_to_the_sockets_owner() -> None:
    poller = readiness.for_loop(asyncio.get_running_loop())
    assert poller is not None
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    seen: list[int] = []
    poller.watch(ours.fileno(), seen.append)
    try:
        await _until(lambda: seen)  # a new socket is writable: reported when it joins the set
        assert seen[0] & readiness.WRITABLE and not seen[0] & select.EPOLLIN
        peer.send(b"x")
        await _until(lambda: len(seen) == 2)
        assert seen[1] & readiness.READABLE
        await asyncio.sleep(0.05)
        assert len(seen) == 2  # edge-triggered: unread bytes are not reported again
        peer.close()
        await _until(lambda: len(seen) == 3)
        assert seen[2] & readiness.HANGUP
    finally:
        poller.forget(ours.fileno())
        ours.close()


async def test_a_forgotten_socket_is_no_longer_reported_and_its_number_can_be_reused() -> None:
    poller = readiness.for_loop(asyncio.get_running_loop())
    first, peer = socket.socketpair()
    fd = first.fileno()
    old: list[int] = []
    poller.watch(fd, old.append)
    await _until(lambda: old)
    watching = poller.watching
    poller.forget(fd)
    poller.forget(fd)  # twice is harmless
    first.close()
    assert poller.watching == watching - 1
    second, peer2 = socket.socketpair()  # the lowest free number: usually the one just closed
    new: list[int] = []
    try:
        poller.watch(second.fileno(), new.append)
        peer2.send(b"y")
        await _until(lambda: any(e & readiness.READABLE for e in new))
        assert len(old) == 1
    finally:
        poller.forget(second.fileno())
        for s in (second, peer, peer2):
            s.close()


def test_one_poller_per_loop_and_a_closed_loops_poller_is_closed_with_it() -> None:
    async def poller_of_running_loop() -> readiness.Poller | None:
        loop = asyncio.get_running_loop()
        assert readiness.for_loop(loop) is readiness.for_loop(loop)
        return readiness.for_loop(loop)

    first = asyncio.run(poller_of_running_loop())
    second = asyncio.run(poller_of_running_loop())
    assert first is not None and second is not None and first is not second
    assert first._epoll.closed and not second._epoll.closed  # the first loop closed before the second asked

