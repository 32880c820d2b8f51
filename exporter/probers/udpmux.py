"""Shared UDP sockets for DNS queries: one socket per event loop, address family and source address.

Opening, binding, registering and closing a socket for every query is most of the CPU a plain UDP DNS
probe costs. Instead every UDP query of the running loop goes out through one long-lived socket, and the
answers are told apart by what a real answer must carry:

* the **server address and port** the query went to (the datagram's source),
* the query's **transaction id** (random, and unique among the queries outstanding to that server),
* the QR flag, the opcode, and **the question** (the name compared case-insensitively, as DNS does;
  type and class exactly). An error answer with an empty question section (FORMERR, SERVFAIL, NOTIMP,
  REFUSED) is accepted, as dnspython does.

A datagram that fails any of these is never taken as an answer: the query keeps waiting, so a stray or
spoofed packet cannot cut a probe short and the real answer arriving later still counts. When the
deadline comes and the server sent a datagram with the query's id but the wrong question or flags, or
something that is not a DNS response at all, the query fails as malformed rather than timed out: the
server did answer, just not usably. A response with an unknown id only counts as nothing (it may be a
late answer to an earlier query). What is lost against one socket per query is source-port
randomness; the id, address and question checks remain (this is a prober, not a caching resolver).

On Linux the socket asks for ICMP errors (``IP_RECVERR``): a "port unreachable" carries our original
datagram and destination, so it fails exactly the query that caused it, as a connected socket would.
Elsewhere such a query simply times out.

Timing: each answer carries the time it was sent (read right after ``sendto`` returns) and the time it
arrived. On Linux the arrival time is the kernel's (``SO_TIMESTAMPNS``, read with ``recvmsg``), so an
answer that waited in the socket buffer while the event loop was busy is not counted as slower than it
was; elsewhere it is the moment the datagram was read. Both are on the probers' clock (``clock.now``).

A socket closes itself after ``IDLE_CLOSE_SECONDS`` without outstanding queries; :func:`close` closes
the running loop's sockets at shutdown.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import socket
import struct
import sys
import weakref
from dataclasses import dataclass

import dns.exception
import dns.query

from exporter.probers import clock

IDLE_CLOSE_SECONDS = 30.0
RECEIVE_BUFFER = 4 * 1024 * 1024  # asked for; the kernel caps it at net.core.rmem_max
READS_PER_WAKEUP = 64  # datagrams read per readiness callback, so a flood cannot starve the loop
MAX_DATAGRAM = 65535

_LINUX = sys.platform.startswith("linux")
_RECVERR = {socket.AF_INET: (socket.IPPROTO_IP, 11), socket.AF_INET6: (socket.IPPROTO_IPV6, 25)}
_RECVERR_CMSGS = frozenset(_RECVERR.values())  # an IPv6 socket reports errors of IPv4 peers at IP level
_EXTENDED_ERR = struct.Struct("=I")  # sock_extended_err starts with ee_errno
_QR_OPCODE_MASK = 0xF800  # QR plus the opcode bits of the flags word
_QR = 0x8000
_NO_QUESTION_OK = frozenset({1, 2, 4, 5})  # FORMERR, SERVFAIL, NOTIMP, REFUSED

Key = tuple[int, str, int]  # (transaction id, server address as the kernel writes it, port)


class UnusableAnswers(dns.query.BadResponse):
    """Only datagrams that were not a valid answer to the query arrived before the deadline."""


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer's wire form and when, on the ``clock.now`` clock, the query left and the answer came."""

    wire: bytes
    sent: float  # right after sendto returned
    received: float  # when the kernel received the datagram (or when it was read, without kernel stamps)


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Answer]
    question: bytes  # our question section (name, type, class) in wire form
    opcode: int  # the query's opcode bits, in place in the flags word
    junk_mark: int  # the server's junk count when the query was sent
    junk: bool = False  # a datagram with our id but not our question or flags arrived
    sent: float = 0.0


@functools.lru_cache(maxsize=4096)
def kernel_address(family: int, host: str) -> str:
    """``host`` written the way ``recvfrom`` reports it, so keys built from config text match."""
    address, sep, scope = host.partition("%")
    text = socket.inet_ntop(family, socket.inet_pton(family, address))
    return f"{text}{sep}{scope}"


class UDPMux:
    """One non-blocking UDP socket and the queries outstanding on it."""

    def __init__(self, family: int, source: str | None) -> None:
        self.family = family
        self.source = source
        self.sock = sock = socket.socket(family, socket.SOCK_DGRAM)
        self.stamped = False  # the kernel stamps each datagram's arrival (SO_TIMESTAMPNS)
        self._offset = clock.RealtimeOffset()
        try:
            sock.setblocking(False)
            if _LINUX:
                sock.setsockopt(*_RECVERR[family], 1)
            self.stamped = clock.enable_timestamps(sock)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            except OSError:
                pass
            sock.bind((source or ("::" if family == socket.AF_INET6 else "0.0.0.0"), 0))
        except BaseException:
            sock.close()
            raise
        self.pending: dict[Key, _Pending] = {}
        self.junk: dict[tuple[str, int], int] = {}  # (address, port) -> non-DNS datagrams received
        self.unmatched = 0  # datagrams that matched no outstanding query (ids, strays, floods)
        self.closed = False
        self._idle_since = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._finalizer = weakref.finalize(self, sock.close)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    # --- queries ----------------------------------------------------------------------------------------
    async def query(self, wire: bytes, question: bytes, host: str, port: int, deadline: float) -> Answer:
        """Send ``wire`` (a query whose question section is ``question``) and return the answer.

        The transaction id in ``wire`` is replaced when another query to the same server already uses
        it. Raises ``dns.exception.Timeout`` at ``deadline``, :class:`UnusableAnswers` when only
        non-answers came, or the OSError an ICMP error or the send reported.
        """
        loop = asyncio.get_running_loop()
        address = kernel_address(self.family, host)
        qid = int.from_bytes(wire[:2], "big")
        while (qid, address, port) in self.pending:
            qid = secrets.randbits(16)
        wire = qid.to_bytes(2, "big") + wire[2:]
        key = (qid, address, port)
        pending = _Pending(loop.create_future(), question, int.from_bytes(wire[2:4], "big") & 0x7800,
                           self.junk.get((address, port), 0))
        self.pending[key] = pending
        timer = loop.call_at(deadline, self._expire, key)
        try:
            self._send(wire, (host, port))
            pending.sent = clock.now()
            return await pending.future
        finally:
            timer.cancel()
            if self.pending.get(key) is pending:
                del self.pending[key]
            if not self.pending:
                self._arm_idle(loop)

    def _send(self, wire: bytes, address: tuple[str, int]) -> None:
        """sendto; an error left over from an earlier query's ICMP is routed to it and the send retried."""
        try:
            self.sock.sendto(wire, address)
        except OSError:
            if not self._drain_errors():
                raise
            self.sock.sendto(wire, address)

    def _expire(self, key: Key) -> None:
        pending = self.pending.get(key)
        if pending is None or pending.future.done():
            return
        if pending.junk or self.junk.get(key[1:], 0) != pending.junk_mark:
            pending.future.set_exception(UnusableAnswers(
                "only datagrams that were not an answer to the query arrived (wrong id, question or flags, "
                "or not DNS at all)"))
        else:
            pending.future.set_exception(dns.exception.Timeout())

    # --- answers ----------------------------------------------------------------------------------------
    def _readable(self) -> None:
        if self.stamped:
            self._offset.refresh()
        read = self._read_stamped if self.stamped else self._read
        for _ in range(READS_PER_WAKEUP):
            try:
                data, peer, received = read()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                if not self._drain_errors():
                    return
                continue
            self._deliver(data, peer[0], peer[1], received)

    def _read_stamped(self) -> tuple[bytes, tuple, float]:
        data, ancillary, _, peer = self.sock.recvmsg(MAX_DATAGRAM, clock.ANCILLARY_SPACE)
        return data, peer, clock.arrival(ancillary, self._offset)

    def _read(self) -> tuple[bytes, tuple, float]:
        data, peer = self.sock.recvfrom(MAX_DATAGRAM)
        return data, peer, clock.now()

    def _deliver(self, data: bytes, address: str, port: int, received: float) -> None:
        if len(data) < 12:
            self.unmatched += 1
            self._junk(address, port)
            return
        pending = self.pending.get((int.from_bytes(data[:2], "big"), address, port))
        if pending is None or pending.future.done():
            self.unmatched += 1
            if not data[2] & 0x80:  # not even a DNS response; a late or stray response is just dropped
                self._junk(address, port)
        elif _answers(data, pending):
            pending.future.set_result(Answer(data, pending.sent, max(received, pending.sent)))
        else:
            pending.junk = True

    def _junk(self, address: str, port: int) -> None:
        """Remember that ``address`` sent something that is not DNS: its waiting queries end malformed."""
        if self.pending:
            self.junk[(address, port)] = self.junk.get((address, port), 0) + 1

    def _drain_errors(self) -> bool:
        """Read queued ICMP errors; each fails the query whose datagram it quotes. False when none."""
        if not _LINUX:
            return False
        found = False
        while True:
            try:
                data, ancillary, _, destination = self.sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return found
            except OSError:
                return found
            found = True
            error = next((d for level, kind, d in ancillary if (level, kind) in _RECVERR_CMSGS), b"")
            if len(data) < 2 or len(error) < _EXTENDED_ERR.size:
                continue
            errno = _EXTENDED_ERR.unpack_from(error)[0]
            pending = self.pending.get((int.from_bytes(data[:2], "big"), destination[0], destination[1]))
            if pending is not None and not pending.future.done():
                pending.future.set_exception(OSError(errno, f"ICMP error from {destination[0]}"))

    # --- lifetime ---------------------------------------------------------------------------------------
    def _arm_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        self._idle_since = loop.time()
        self.junk.clear()
        if self._idle_timer is None:
            self._idle_timer = loop.call_later(IDLE_CLOSE_SECONDS, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self.closed or self.pending:
            return
        loop = asyncio.get_running_loop()
        idle_for = loop.time() - self._idle_since
        if idle_for >= IDLE_CLOSE_SECONDS:
            self.close()
        else:
            self._idle_timer = loop.call_later(IDLE_CLOSE_SECONDS - idle_for, self._idle_check)

    def close(self) -> None:
        """Stop reading and close the socket; outstanding queries fail as if their server hung up."""
        if self.closed:
            return
        self.closed = True
        _forget(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        for pending in self.pending.values():
            if not pending.future.done():
                pending.future.set_exception(ConnectionAbortedError("the shared DNS socket was closed"))
        self.pending.clear()
        try:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        except RuntimeError:
            pass  # closing from outside the loop (interpreter exit): nothing is registered any more
        self._finalizer()


def _answers(data: bytes, pending: _Pending) -> bool:
    """Whether ``data`` (with our id, from our server) is an answer to the pending query."""
    flags = int.from_bytes(data[2:4], "big")
    if flags & _QR_OPCODE_MASK != _QR | pending.opcode:
        return False
    qdcount = data[4:6]
    if qdcount == b"\x00\x00":
        return flags & 0xF in _NO_QUESTION_OK
    if qdcount != b"\x00\x01":
        return False
    question = pending.question
    end = 12 + len(question)
    got = data[12:end]
    if got == question:
        return True
    name_end = len(question) - 4  # the name, then type and class; label lengths are below b"A"
    return got[:name_end].lower() == question[:name_end].lower() and got[name_end:] == question[name_end:]


# --- One set of sockets per event loop ----------------------------------------------------------------

_MUXES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[int, str | None], UDPMux]] = (
    weakref.WeakKeyDictionary())


def get(family: int, source: str | None = None) -> UDPMux:
    """The running loop's shared socket for ``family`` (and ``source`` address, when one is bound)."""
    loop = asyncio.get_running_loop()
    muxes = _MUXES.get(loop)
    if muxes is None:
        muxes = _MUXES[loop] = {}
    mux = muxes.get((family, source))
    if mux is None:
        mux = muxes[(family, source)] = UDPMux(family, source)
    return mux


def active() -> list[UDPMux]:
    """The running loop's open shared sockets (for health checks and tests)."""
    return list(_MUXES.get(asyncio.get_running_loop(), {}).values())


def _forget(mux: UDPMux) -> None:
    for muxes in _MUXES.values():
        if muxes.get((mux.family, mux.source)) is mux:
            del muxes[(mux.family, mux.source)]
            return


async def close() -> None:
    """Close the running loop's shared sockets (shutdown; the next query opens a new one)."""
    for mux in active():
        mux.close()
