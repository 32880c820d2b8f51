"""TCP prober: resolve, connect, optional TLS, then a blackbox-style ``query_response`` dialogue.

Also home of the connection plumbing the http prober builds on: :class:`Attempt` (phases, details and
log of one probe run, and the single place a run turns an exception into a reason) and
:func:`open_socket`. Both probers connect the same way so they report connect and TLS phases alike.

``query_response`` follows blackbox_exporter: each step may wait for a line matching ``expect`` (lines
are read until one matches; EOF first is a mismatch), then send ``send`` plus a newline, with ``$1`` /
``${name}`` references expanded from the expect match, then optionally upgrade to TLS (``starttls``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence

from exporter.checks import Check
from exporter.config.model import QueryResponse, Resolver, TCPProbe, TLSConfig
from exporter.config.probe_policy import check_connect
from exporter.deadline import Deadline
from exporter.probers import clock, tlsutil
from exporter.probers import result as r
from exporter.probers.errors import ConfigFileUnreadable, reason_for_exception
from exporter.probers.resolve import Resolution, family_of, ip_literal, resolve
from exporter.probers.result import ProbeLog, ProbeResult, finish

_LOG = logging.getLogger(__name__)
LINE_LIMIT = 64 * 1024  # longest line an expect is matched against (blackbox's bufio.Scanner limit)
SSL_SHUTDOWN_TIMEOUT = 1.0  # seconds we wait for the peer's close_notify before dropping the socket
_MAX_ERROR_TEXT = 300  # characters of an exception's text kept in the probe log
_STAGE_DIALOGUE = "query_response"  # not a reported phase: a deadline here is a plain timeout
_SOCK_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)  # Linux: a socket non-blocking from its creation


class ProbeFailure(Exception):
    """Raised inside a probe run to end it with a specific reason (already logged by the raiser)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Attempt:
    """Bookkeeping of one probe run: phase timings (summed when a phase runs more than once, e.g. across
    redirects), details, the log, and which stage is running so a deadline maps to the right reason.

    Times are ``clock.now()`` (deadlines stay loop time). ``waited`` is time a reply spent, after it
    arrived, waiting for the busy event loop; it is left out of the probe's duration."""

    __slots__ = ("loop", "started", "waited", "log", "phases", "details", "stage", "_stage_start", "_timed")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.started = clock.now()
        self.waited = 0.0
        self.log = ProbeLog(self.started)
        self.phases: dict[str, float] = {}
        self.details: dict[str, float | int | str] = {}
        self.stage: str | None = None
        self._stage_start = 0.0
        self._timed = False

    def note(self, message: str) -> None:
        self.log(clock.now(), message)

    def begin(self, stage: str, *, timed: bool = True) -> None:
        """Enter a stage; ``timed`` stages are reported as phases (added to any earlier run of it)."""
        self.end()
        self.stage, self._stage_start, self._timed = stage, clock.now(), timed

    def end(self, at: float | None = None) -> float:
        """Leave the current stage (at ``clock.now()``, or ``at`` when the event that ended it was stamped
        earlier), recording its duration if it is a phase; returns the duration."""
        if self.stage is None:
            return 0.0
        elapsed = max(0.0, (clock.now() if at is None else at) - self._stage_start)
        if self._timed:
            self.phases[self.stage] = self.phases.get(self.stage, 0.0) + elapsed
        self.stage = None
        return elapsed

    def end_at_reply(self, arrived: float | None, complete: float | None = None) -> None:
        """End the current stage when its reply began to arrive (``arrived``, stamped by the protocol
        callback that got the first bytes). ``complete`` is when the callback that delivered the last bytes
        the stage waited for ran (default ``arrived``); the time since then, spent in the event loop's
        queue, counts as ``waited``. Without a stamp, or with one from before the stage began (the peer
        spoke first), the stage ends now and nothing counts as waited."""
        now = clock.now()
        if arrived is None or self.stage is None or not self._stage_start <= arrived <= now:
            self.end()
            return
        self.end(arrived)
        self.waited += now - min(max(arrived if complete is None else complete, arrived), now)

    async def run(self, work: Callable[[], Awaitable[None]], deadline: float) -> ProbeResult:
        """Run ``work`` under the deadline and build the result; never raises except CancelledError."""
        reason: str | None = None
        try:
            async with Deadline(self.loop, deadline):
                await work()
        except ProbeFailure as exc:
            reason = exc.reason
        except Exception as exc:  # noqa: BLE001 - every failure becomes a reason
            reason = self._reason(exc)
        self.end()
        self.note("probe succeeded" if reason is None else f"probe failed: {reason}")
        return finish(success=reason is None, reason=reason, started=self.started,
                      now=clock.now() - self.waited, phases=self.phases, details=self.details, log=self.log)

    def _reason(self, exc: Exception) -> str:
        stage = self.stage or _STAGE_DIALOGUE
        reason = reason_for_exception(exc, phase=stage)
        if isinstance(exc, TimeoutError):
            self.note(f"deadline reached during {stage} -> {reason}")
        elif reason == r.INTERNAL:
            _LOG.error("internal error in probe during %s", stage, exc_info=exc)
            self.note(f"internal error during {stage}: {type(exc).__name__}: {exc}")
        else:
            text = " ".join(str(exc).split())[:_MAX_ERROR_TEXT] or type(exc).__name__  # one line, bounded:
            self.note(f"{stage} failed: {type(exc).__name__}: {text} -> {reason}")  # peers choose this text
        return reason

    async def resolve(self, host: str, resolvers: Sequence[Resolver], *, prefer: str, fallback: bool,
                      deadline: float) -> str:
        """The address to connect to (first of the resolved, preferred family first).

        The resolve phase is reported only when a lookup happened (not for IP literals / localhost).
        """
        earlier = self.phases.get(r.PHASE_RESOLVE)
        self.begin(r.PHASE_RESOLVE)  # timed, so a deadline hit during the lookup still reports it
        res: Resolution = await resolve(host, resolvers, prefer=prefer, fallback=fallback,
                                        deadline=deadline, log=self.log)
        self.end()
        if not res.looked_up:  # an IP literal: no lookup ran, nothing to report
            if earlier is None:
                del self.phases[r.PHASE_RESOLVE]
            else:
                self.phases[r.PHASE_RESOLVE] = earlier
        if res.reason is not None:
            self.note(f"could not resolve {host}: {res.reason}")
            raise ProbeFailure(res.reason)
        address = res.addresses[0]
        self.details[r.D_IP_PROTOCOL] = family_of(address)
        self.details[r.D_ADDRESS] = address
        return address

    async def connect(self, address: str, port: int, *, source: str | None = None) -> socket.socket:
        self.connecting(address, port, source=source)
        sock = await open_socket(address, port, source=source, loop=self.loop)
        self.connected(address, port)
        return sock

    def connecting(self, address: str, port: int, *, source: str | None = None) -> None:
        """The connect phase begins (for a prober that connects its socket itself)."""
        self.note(f"connecting to {_join(address, port)}" + (f" from {source}" if source else ""))
        self.begin(r.PHASE_CONNECT)

    def connected(self, address: str, port: int) -> None:
        self.end()
        self.note(f"connected to {_join(address, port)}")

    def record_tls(self, transport: asyncio.BaseTransport) -> tlsutil.TLSInfo | None:
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return None
        info = tlsutil.tls_info(ssl_object)
        self.note(info.describe())
        return info

    def set_tls_details(self, info: tlsutil.TLSInfo | None) -> None:
        self.details[r.D_TLS] = 0 if info is None else 1
        for key in (r.D_TLS_VERSION, r.D_CERT_EXPIRY):
            self.details.pop(key, None)
        if info is not None:
            self.details[r.D_TLS_VERSION] = info.version
            if info.cert_expiry is not None:
                self.details[r.D_CERT_EXPIRY] = info.cert_expiry


async def open_socket(address: str, port: int, *, source: str | None = None,
                      loop: asyncio.AbstractEventLoop | None = None) -> socket.socket:
    """A connected non-blocking TCP socket to an IP address; the caller owns (and closes) it."""
    sock = new_socket(address, source=source)
    try:
        await connect(loop or asyncio.get_running_loop(), sock, (address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def new_socket(address: str, *, source: str | None = None) -> socket.socket:
    """A non-blocking TCP socket for connecting to ``address``, which a /probe policy in force has allowed
    (exporter.config.probe_policy); not yet connected. The caller owns (and closes) it."""
    check_connect(address)
    family = socket.AF_INET6 if family_of(address) == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM | _SOCK_NONBLOCK)  # saves a system call where it can
    try:
        if not _SOCK_NONBLOCK:
            sock.setblocking(False)
        if source:
            sock.bind((source, 0))
    except BaseException:
        sock.close()
        raise
    return sock


async def connect(loop: asyncio.AbstractEventLoop, sock: socket.socket, address: tuple[str, int]) -> None:
    """``loop.sock_connect`` for an address that is already an IP: uvloop's looks every address up again
    with ``getaddrinfo`` in its thread pool (a thread round trip per probe), asyncio's parses it again.
    Errors are the same ``OSError`` subclasses (ConnectionRefusedError, ...) as sock_connect raises."""
    err = sock.connect_ex(address)
    if err in (errno.EINPROGRESS, errno.EAGAIN):
        fd = sock.fileno()
        writable = loop.create_future()
        loop.add_writer(fd, _set_done, writable)
        try:
            await writable
        finally:
            loop.remove_writer(fd)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, f"Connect call failed {address}")


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def tls_context(attempt: Attempt, cfg: TLSConfig, *, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """The cached context for ``cfg``; a config whose files cannot be loaded fails the TLS step."""
    try:
        return tlsutil.client_context(cfg, alpn=alpn)
    except (OSError, ssl.SSLError, ValueError, KeyError) as exc:
        attempt.note(f"cannot load tls_config: {type(exc).__name__}: {exc}")
        reason = reason_for_exception(exc) if isinstance(exc, ConfigFileUnreadable) else r.TLS_HANDSHAKE
        raise ProbeFailure(reason) from exc


def handshake_timeout(deadline: float, loop: asyncio.AbstractEventLoop) -> float:
    """asyncio's own handshake timeout, set just past our deadline so the deadline always fires first."""
    return max(deadline - loop.time(), 0.0) + 1.0


def split_host_port(target: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` -> (host without brackets, port). Raises ValueError."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"target {target!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"target {target!r}: IPv6 addresses need brackets, like [::1]:{port}")
    return host, int(port)


def _join(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# --- Go-style template expansion for `send` --------------------------------------------------------------
_TEMPLATE_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")


def expand(template: str, match: re.Match[bytes] | None) -> bytes:
    """Expand ``$1``, ``${1}``, ``$name``, ``${name}`` and ``$$`` like Go's ``Regexp.Expand``.

    Literal text is sent as UTF-8 and groups as the raw bytes they matched. Unknown or unmatched groups
    become empty; a ``$`` that starts no reference stays as it is.
    """
    if "$" not in template:
        return template.encode()
    out = bytearray()
    pos = 0
    for ref in _TEMPLATE_VAR.finditer(template):
        out += template[pos:ref.start()].encode()
        out += _reference(ref, match)
        pos = ref.end()
    out += template[pos:].encode()
    return bytes(out)


def _reference(ref: re.Match[str], match: re.Match[bytes] | None) -> bytes:
    if ref.group(1):
        return b"$"
    name = ref.group(2) or ref.group(3)
    if match is None:
        return b""
    try:
        value = match.group(int(name) if name.isdigit() else name)
    except IndexError:  # no such group
        return b""
    return value or b""


# --- The prober ------------------------------------------------------------------------------------------
async def probe(check: Check, *, deadline: float) -> ProbeResult:
    attempt = Attempt()
    return await attempt.run(lambda: _run(check, attempt, deadline), deadline)


async def _run(check: Check, attempt: Attempt, deadline: float) -> None:
    cfg: TCPProbe = check.module.tcp
    attempt.details[r.D_TLS] = 0
    try:
        host, port = split_host_port(check.target)
    except ValueError as exc:
        attempt.note(str(exc))
        raise ProbeFailure(r.CONN_ERROR) from None
    address = await attempt.resolve(host, check.resolvers, prefer=cfg.preferred_ip_protocol,
                                    fallback=cfg.ip_protocol_fallback, deadline=deadline)
    sock = await attempt.connect(address, port, source=cfg.source_ip_address)
    sni = tlsutil.server_name(cfg.tls_config, check.hostname, ip_literal(host) or host)
    info: tlsutil.TLSInfo | None = None
    try:
        if cfg.tls:
            ctx = tls_context(attempt, cfg.tls_config)
            attempt.begin(r.PHASE_TLS)
            reader, writer = await asyncio.open_connection(
                sock=sock, ssl=ctx, server_hostname=sni, limit=LINE_LIMIT,
                ssl_handshake_timeout=handshake_timeout(deadline, attempt.loop),
                ssl_shutdown_timeout=SSL_SHUTDOWN_TIMEOUT)
            attempt.end()
            info = attempt.record_tls(writer.transport)
        else:
            reader, writer = await asyncio.open_connection(sock=sock, limit=LINE_LIMIT)
    except BaseException:
        sock.close()
        raise
    try:
        attempt.set_tls_details(info)
        await _dialogue(cfg, attempt, reader, writer, sni, deadline)
    except BaseException:
        writer.transport.abort()  # a failed probe owes the peer no graceful TLS shutdown
        raise
    writer.close()


async def _dialogue(cfg: TCPProbe, attempt: Attempt, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, sni: str | None, deadline: float) -> None:
    expects = any(qr.expect is not None for qr in cfg.query_response)
    if expects:
        attempt.details[r.D_FAILED_DUE_TO_REGEX] = 0
    for step, qr in enumerate(cfg.query_response, 1):
        attempt.begin(_STAGE_DIALOGUE, timed=False)
        match = await _expect(attempt, reader, qr, step) if qr.expect is not None else None
        if qr.send is not None:
            line = expand(qr.send, match)
            attempt.note(f"step {step}: sending {_show(line)}")
            writer.write(line + b"\n")
            await writer.drain()
        if qr.starttls:
            await _starttls(cfg, attempt, writer, sni, deadline, step)
        attempt.end()


async def _expect(attempt: Attempt, reader: asyncio.StreamReader, qr: QueryResponse,
                  step: int) -> re.Match[bytes]:
    assert qr.expect is not None
    while True:
        try:
            raw = await reader.readline()
        except ValueError:  # the line is longer than LINE_LIMIT
            attempt.note(f"step {step}: line longer than {LINE_LIMIT} bytes while expecting "
                         f"{_show(qr.expect.pattern)}")
            _mismatch(attempt)
        if not raw:
            attempt.note(f"step {step}: connection closed before a line matched {_show(qr.expect.pattern)}")
            _mismatch(attempt)
        line = raw.rstrip(b"\n").removesuffix(b"\r")
        match = qr.expect.search(line)
        if match is not None:
            attempt.note(f"step {step}: {_show(line)} matched {_show(qr.expect.pattern)}")
            return match
        attempt.note(f"step {step}: read {_show(line)}")


def _mismatch(attempt: Attempt) -> None:
    attempt.details[r.D_FAILED_DUE_TO_REGEX] = 1
    raise ProbeFailure(r.TCP_EXPECT_MISMATCH)


async def _starttls(cfg: TCPProbe, attempt: Attempt, writer: asyncio.StreamWriter, sni: str | None,
                    deadline: float, step: int) -> None:
    ctx = tls_context(attempt, cfg.tls_config)
    attempt.note(f"step {step}: starting TLS")
    attempt.begin(r.PHASE_TLS)
    await writer.start_tls(ctx, server_hostname=sni,
                           ssl_handshake_timeout=handshake_timeout(deadline, attempt.loop))
    attempt.end()
    attempt.set_tls_details(attempt.record_tls(writer.transport))


def _show(data: bytes | str, limit: int = 120) -> str:
    text = repr(data if isinstance(data, str) else data.decode("utf-8", "replace"))
    return text if len(text) <= limit else text[:limit] + "...'"
