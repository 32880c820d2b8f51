"""One DNS exchange with one server, bounded by a deadline: UDP with TCP retry on truncation, TCP, or TLS.

Shared by the DNS prober and the name-resolution helper so both classify failures the same way. The
translation from dnspython / socket exceptions to failure reasons happens here and only here.

UDP queries go out through the event loop's shared socket (udpmux), which matches answers to queries
by server address, id and question. For TCP and TLS the connection is opened here rather than inside
dnspython, so the time to connect (and,
for TLS, to finish the handshake) is reported as its own ``connect`` phase, as blackbox_exporter does;
``request`` is the rest of the exchange.

Answers are read by :func:`dnsanswer.parse` on every transport and for every caller, so a packet is
usable or ``dns_malformed`` the same way whoever asked. A server that answers FORMERR, NOTIMP or BADVERS
to a query carrying EDNS (OPT) is asked once more without it, within the same deadline, as resolvers do:
an old or broken EDNS implementation is not an outage.

Times are read from ``clock.now`` at the event, never from the loop's cached clock. A UDP answer carries
the kernel's receive time (udpmux); the time it then waited for the busy event loop is reported as
``Exchange.waited`` and left out of ``request``, so a loaded exporter does not report the server as slow.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass, field

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.flags
import dns.inet
import dns.message
import dns.query
import dns.rcode

from exporter.config.model import Resolver, TLSConfig
from exporter.probers import clock, dnsanswer, tlsutil, udpmux
from exporter.probers import result as r
from exporter.probers.errors import reason_for_exception
from exporter.probers.result import ProbeLog
from exporter.probers.tlsutil import TLSInfo

DOT_ALPN = ("dot",)  # RFC 7858 ALPN id for DNS-over-TLS
_TC = int(dns.flags.TC)  # a plain int: flag enums are slow on the hot path
_EDNS_REFUSED = frozenset({dns.rcode.FORMERR, dns.rcode.NOTIMP, dns.rcode.BADVERS})


@dataclass(slots=True)
class Exchange:
    response: dns.message.Message | None = None
    reason: str | None = None  # set when no usable response arrived
    error: str = ""  # human detail for logs
    transport: str = "udp"  # transport that produced the final answer (or failed last)
    truncated: bool = False
    phases: dict[str, float] = field(default_factory=dict)  # connect (tcp/tls), request
    wire: bytes = b""  # the raw UDP answer
    facts: dnsanswer.Facts | None = None  # read straight from ``wire`` (exchange(parse=False)), no response
    query: dns.message.Message | None = None  # the query answered: the one given, or it without EDNS
    tls: TLSInfo | None = None  # DNS-over-TLS: what the handshake told us
    waited: float = 0.0  # seconds a UDP answer waited, after it arrived, for the event loop to handle it


def rcode_reason(rcode: int) -> str | None:
    """Failure reason for a response rcode, or None for NOERROR."""
    if rcode == dns.rcode.NOERROR:
        return None
    return {
        dns.rcode.NXDOMAIN: r.DNS_NXDOMAIN,
        dns.rcode.SERVFAIL: r.DNS_SERVFAIL,
        dns.rcode.REFUSED: r.DNS_REFUSED,
    }.get(rcode, r.DNS_RCODE)


async def exchange(
    query: dns.message.Message,
    server: Resolver,
    *,
    transport: str,
    deadline: float,
    log: ProbeLog,
    tls_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    source: str | None = None,
    parse: bool = True,
) -> Exchange:
    """Send ``query`` to ``server`` and return what came back. Never raises for network trouble.

    ``source`` binds the local address (blackbox's ``source_ip_address``). With ``parse=False`` a plain
    UDP answer is read by :func:`dnsanswer.facts_from_wire` into ``facts`` and not parsed into a
    ``response``; anything that reader leaves is parsed as usual.
    """
    args = (server, transport, deadline, log, tls_context, server_hostname, source, parse)
    ex = await _exchange(query, *args)
    rcode = _rcode(ex)
    if rcode in _EDNS_REFUSED and query.edns >= 0:
        log(clock.now(), f"{server.name} answered {dns.rcode.to_text(rcode)} to a query with EDNS: "
                         "asking again without it")
        retry = await _exchange(without_edns(query), *args)
        if retry.reason != r.DNS_TIMEOUT:  # no answer in the time left: the first answer stands
            for phase, seconds in ex.phases.items():
                retry.phases[phase] = retry.phases.get(phase, 0.0) + seconds
            retry.waited += ex.waited
            retry.truncated = retry.truncated or ex.truncated
            ex = retry
    return ex


def without_edns(query: dns.message.Message) -> dns.message.Message:
    """``query`` without the OPT record, for a server that rejects EDNS."""
    q = query.question[0]
    out = dns.message.make_query(q.name, q.rdtype, q.rdclass, use_edns=False)
    out.flags = query.flags
    return out


def _rcode(ex: Exchange) -> int | None:
    if ex.facts is not None:
        return int(ex.facts[r.D_DNS_RCODE])
    return ex.response.rcode() if ex.response is not None else None


async def _exchange(query: dns.message.Message, server: Resolver, transport: str, deadline: float,
                    log: ProbeLog, tls_context: ssl.SSLContext | None, server_hostname: str | None,
                    source: str | None, parse: bool) -> Exchange:
    ex = Exchange(transport="tls" if server.tls else transport, query=query)
    start = clock.now()
    try:
        if server.tls or transport == "tcp":
            ex.response = await _stream(ex, query, server, deadline, tls_context, server_hostname, source)
        else:
            answer = await _udp(query, server, deadline, source)
            ex.wire, ex.waited = answer.wire, max(0.0, clock.now() - answer.received)
            if _flags(ex.wire) & _TC:
                ex.wire, ex.truncated, ex.transport = b"", True, "tcp"
                log(clock.now(), f"truncated UDP answer from {server.name}, retrying over TCP")
                ex.response = await _stream(ex, query, server, deadline, None, None, source)
            else:
                ex.facts = None if parse else dnsanswer.facts_from_wire(ex.wire, _question_wire(query))
                if ex.facts is None:
                    ex.response = dnsanswer.parse(ex.wire, query)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a reason
        _failed(ex, exc, server, log)
    ex.phases[r.PHASE_REQUEST] = max(0.0, clock.now() - start - ex.waited - ex.phases.get(r.PHASE_CONNECT, 0.0))
    return ex


def _failed(ex: Exchange, exc: Exception, server: Resolver, log: ProbeLog) -> None:
    ex.reason = reason_for_exception(exc, dns_context=True)
    ex.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    log(clock.now(), f"query to {server.name} over {ex.transport} failed: {ex.error} -> {ex.reason}")


def _flags(wire: bytes) -> int:
    return int.from_bytes(wire[2:4], "big")


async def _udp(query: dns.message.Message, server: Resolver, deadline: float,
               source: str | None) -> udpmux.Answer:
    """One datagram out through the loop's shared socket, and the answer to it back (see udpmux).

    Answers are matched on the server's address, the transaction id and the question; anything else
    the server sends is not taken as the answer. An ICMP port-unreachable fails the query with
    ``ConnectionRefusedError``, as on a connected socket.
    """
    _left(deadline, asyncio.get_running_loop())
    wire = query.to_wire()
    family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
    mux = udpmux.get(family, source or None)
    answer = await mux.query(wire, _question_wire(query, wire), server.host, server.port, deadline)
    query.id = int.from_bytes(answer.wire[:2], "big")  # the mux re-draws an id another query to it holds
    return answer


def _question_wire(query: dns.message.Message, wire: bytes | None = None) -> bytes:
    """The question section as sent: cached on our query templates, else read back from ``wire``."""
    cached = getattr(query, "question_wire", None)
    if cached:
        return cached
    if wire is None:
        wire = query.to_wire()
    end = 12
    while wire[end]:
        end += wire[end] + 1
    return wire[12:end + 5]


async def _stream(
    ex: Exchange,
    query: dns.message.Message,
    server: Resolver,
    deadline: float,
    tls_context: ssl.SSLContext | None,
    server_hostname: str | None,
    source: str | None,
) -> dns.message.Message:
    """Connect (TCP, or TLS when the server asks for it), time that as ``connect``, then exchange."""
    loop = asyncio.get_running_loop()
    use_tls = server.tls
    if use_tls and tls_context is None:
        tls_context = tlsutil.client_context(TLSConfig(), alpn=DOT_ALPN)
    af = dns.inet.af_for_address(server.host)
    local = (source, 0) if source else None
    t0 = clock.now()
    sock = await dns.asyncbackend.get_default_backend().make_socket(
        af, socket.SOCK_STREAM, 0, local, (server.host, server.port), _left(deadline, loop),
        tls_context if use_tls else None, (server_hostname or server.host) if use_tls else None)
    ex.phases[r.PHASE_CONNECT] = ex.phases.get(r.PHASE_CONNECT, 0.0) + clock.now() - t0
    try:
        if use_tls:
            ex.tls = _tls_info(sock)
            return await dns.asyncquery.tls(query, server.host, timeout=_left(deadline, loop),
                                            port=server.port, sock=sock)
        return await dns.asyncquery.tcp(query, server.host, timeout=_left(deadline, loop),
                                        port=server.port, sock=sock)
    finally:
        await sock.close()


def _tls_info(sock: object) -> TLSInfo | None:
    """Version and certificate expiry of a dnspython asyncio TLS stream (None on other backends)."""
    writer = getattr(sock, "writer", None)
    ssl_object = writer.get_extra_info("ssl_object") if writer is not None else None
    return tlsutil.tls_info(ssl_object) if ssl_object is not None else None


def _left(deadline: float, loop: asyncio.AbstractEventLoop) -> float:
    left = deadline - loop.time()
    if left <= 0:
        raise dns.exception.Timeout()
    return left
