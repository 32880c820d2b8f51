"""The clock probe durations are measured with.

Deadlines stay in event-loop time (``loop.time()``): that is the prober contract and what timers fire on.
Durations do not use it. Under uvloop ``loop.time()`` is libuv's cached clock, in whole milliseconds and
read once per loop iteration, so a phase timed with it is rounded to a millisecond and includes however
long the iteration had already run when the event was handled. :func:`now` reads the clock at the moment
it is called, to the nanosecond.

It is ``time.monotonic``: the clock the standard asyncio loop's ``loop.time()`` returns (so a log line
stamped with loop time still lines up with ours) and, on Linux, CLOCK_MONOTONIC, the clock libuv's
milliseconds come from. Kernel receive timestamps are CLOCK_REALTIME; :class:`RealtimeOffset` brings
them onto this clock.
"""

from __future__ import annotations

import platform
import socket
import struct
import sys
import time

now = time.monotonic  # seconds; only differences mean anything

ANCILLARY_SPACE = 64  # room for one SCM_TIMESTAMPNS message (struct timespec) and its header
# SO_TIMESTAMPNS (also the cmsg type) has this value on the architectures using the generic socket
# numbers; the few others (alpha, mips, parisc, sparc) go without kernel stamps.
_SO_TIMESTAMPNS = 35
STAMPED = sys.platform.startswith("linux") and platform.machine().lower() in {
    "x86_64", "amd64", "i386", "i686", "aarch64", "arm64", "armv7l", "armv6l", "riscv64", "ppc64le",
    "ppc64", "s390x", "loongarch64"}
_TIMESPEC = {16: struct.Struct("=qq"), 8: struct.Struct("=ii")}  # 64- and 32-bit time_t


class RealtimeOffset:
    """Converts CLOCK_REALTIME nanosecond stamps (``SO_TIMESTAMPNS``) to :func:`now` seconds.

    The offset between the two clocks moves only when the wall clock is adjusted, so it is read once per
    batch of stamps (:meth:`refresh`) rather than per stamp.
    """

    __slots__ = ("_offset_ns", "_now")

    def __init__(self) -> None:
        self._offset_ns = 0
        self._now = 0.0
        self.refresh()

    def refresh(self) -> float:
        """Re-read both clocks; returns :func:`now` as read."""
        wall = time.time_ns()
        mono_ns = time.monotonic_ns()
        self._offset_ns = wall - mono_ns
        self._now = mono_ns / 1e9
        return self._now

    def convert(self, realtime_ns: int) -> float:
        """``realtime_ns`` on the :func:`now` clock, never later than the present (a stamp from the future
        means the wall clock stepped back since it was taken: the present is then the best bound)."""
        converted = (realtime_ns - self._offset_ns) / 1e9
        return converted if converted <= self._now else min(converted, now())


_KEEPER: list[socket.socket] = []


def enable_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp what ``sock`` receives (read with ``recvmsg`` and :func:`arrival`).
    False where it cannot: then reads are stamped with :func:`now` when they happen.

    Linux turns receive stamping on for the whole host when the first socket asks for it and off when the
    last such socket closes, and each switch patches kernel code: measured here, it made opening and
    closing a stamped socket five times slower, which a prober opening a TCP socket per HTTP probe would
    pay on every probe. So the first call also opens one small stamped socket that stays open for the life
    of the process, and the switch stays on.
    """
    if not STAMPED:
        return False
    try:
        hold_timestamping()
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def hold_timestamping() -> None:
    """Open the process's one stamped socket that keeps the kernel's receive stamping on (see
    :func:`enable_timestamps`), if it is not open yet. Raises OSError where sockets cannot be made."""
    if STAMPED and not _KEEPER:
        keeper = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            keeper.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        except BaseException:
            keeper.close()
            raise
        _KEEPER.append(keeper)


def arrival(ancillary: list[tuple[int, int, bytes]], offset: RealtimeOffset) -> float:
    """The kernel's receive stamp in ``recvmsg``'s ancillary data on the :func:`now` clock, else the present.

    A datagram carries its own arrival; a TCP read carries the arrival of the last segment it took."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) in _TIMESPEC:
            seconds, nanoseconds = _TIMESPEC[len(data)].unpack(data)
            return offset.convert(seconds * 1_000_000_000 + nanoseconds)
    return now()
