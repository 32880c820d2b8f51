"""DNS prober: ask one server one question and judge the answer the way blackbox_exporter does.

The target of a dns check is the server to ask (``check.dns_server``); the question is
``check.query_name`` (or the module's ``query_name``) with the module's type, class and RD flag, sent
without EDNS, as blackbox_exporter asks: a server that does not speak EDNS is judged like any other, and an
answer too large for 512 bytes comes truncated and is asked again over TCP. (Resolution for HTTP/TCP,
authoritative checks and discovery send EDNS0 and ask again without it on FORMERR, NOTIMP or BADVERS:
dnsclient.exchange.) A probe fails when no
answer arrives (dns_timeout, dns_malformed, conn_refused, tls_*), when the rcode is not in
``valid_rcodes`` (dns_nxdomain, dns_servfail, dns_refused, dns_rcode), or when a ``validate_*_rrs`` rule
rejects a section (dns_answer_mismatch; rules in dnsanswer.py). NOERROR with an empty answer succeeds,
as in blackbox, and reports ``dns_answer_rrs`` 0 so an alert can still tell NODATA apart. Only records
that answer the question count (its class; in the answer section, the name asked or its CNAME chain:
see dnsanswer.py).

Per-probe work is kept small because probes run by the thousand: the query is rendered to wire once per
(name, type, class, RD) and each probe only draws a fresh id; UDP queries share one socket per event
loop (udpmux) instead of opening one each; a plain UDP answer is read without a full parse unless
validators need the records' text (by the parser's own rules: one verdict per packet); TLS contexts
are built once per ``tls_config`` (tlsutil).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import secrets
import ssl

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from exporter.checks import Check
from exporter.config.model import DNSProbe, Resolver
from exporter.probers import clock, dnsanswer, tlsutil
from exporter.probers import result as r
from exporter.probers.dnsclient import DOT_ALPN, Exchange, exchange, rcode_reason
from exporter.probers.resolve import family_of, ip_literal, resolve
from exporter.probers.result import ProbeLog, ProbeResult, finish

logger = logging.getLogger("exporter.probers.dns")

DOT_PORT = 853


async def probe(check: Check, *, deadline: float) -> ProbeResult:
    """Run one DNS probe for ``check``; returns by ``deadline`` and never raises (except cancellation)."""
    run = _Run(check)
    try:
        return await run.go(deadline)
    except Exception as exc:  # noqa: BLE001 - a bug must not kill the scheduler; report it instead
        logger.exception("dns probe of %s via %s crashed", check.query_name, check.resolver)
        run.say(f"internal error: {type(exc).__name__}: {exc}")
        return run.done(r.INTERNAL)


class _Run:
    """State of one probe: the phases, details and log lines that end up in the ProbeResult."""

    __slots__ = ("check", "settings", "started", "waited", "log", "phases", "details")

    def __init__(self, check: Check) -> None:
        self.check = check
        self.settings: DNSProbe = check.module.dns
        self.started = clock.now()
        self.waited = 0.0  # time the answer waited for the busy event loop: not the server's doing
        self.log = ProbeLog(self.started)
        self.phases: dict[str, float] = {}
        self.details: dict[str, float | int | str] = {}

    def say(self, message: str) -> None:
        self.log(clock.now(), message)

    def done(self, reason: str | None) -> ProbeResult:
        return finish(success=reason is None, reason=reason, started=self.started,
                      now=clock.now() - self.waited, phases=self.phases, details=self.details, log=self.log)

    async def go(self, deadline: float) -> ProbeResult:
        settings = self.settings
        qname = self.check.query_name or settings.query_name
        server = self.check.dns_server
        if not qname or server is None:
            self.say("no query name or no server to ask: the check is incomplete")
            return self.done(r.INTERNAL)
        try:
            template = _template(qname, settings.query_type, settings.query_class,
                                 settings.recursion_desired)
            valid = _valid_rcodes(settings.valid_rcodes)
        except (dns.exception.DNSException, ValueError) as exc:
            self.say(f"invalid query settings: {type(exc).__name__}: {exc}")
            return self.done(r.INTERNAL)

        given_as = server.host  # the name the server was given by: what its TLS certificate must match
        server = _with_tls_setting(server, self.settings)
        if not _is_ip(server.host):
            address, reason = await self._resolve(server.host, deadline)
            if address is None:
                return self.done(reason)
            server = dataclasses.replace(server, host=address)
        query = template.fresh()
        ex = await self._ask(query, server, given_as, deadline)
        return self.done(self._judge(ex, query, valid))

    async def _resolve(self, host: str, deadline: float) -> tuple[str | None, str]:
        """Address of a server given by name (rare: /probe with a hostname target), or the reason."""
        t0 = clock.now()
        res = await resolve(host, self.check.resolvers, prefer=self.settings.preferred_ip_protocol,
                            fallback=self.settings.ip_protocol_fallback, deadline=deadline, log=self.log)
        if res.looked_up:
            self.phases[r.PHASE_RESOLVE] = clock.now() - t0
        reason = res.reason or r.DNS_TIMEOUT
        if not res.addresses:
            self.say(f"could not resolve DNS server {host}: {reason}")
            return None, reason
        return res.addresses[0], reason

    async def _ask(self, query: _Query, server: Resolver, given_as: str, deadline: float) -> Exchange:
        settings = self.settings
        self.details[r.D_IP_PROTOCOL] = family_of(server.host)
        self.details[r.D_ADDRESS] = server.host
        self.say(f"querying {_hostport(server)} over {'tls' if server.tls else settings.transport_protocol} "
                 f"for {query.describe} (rd={int(settings.recursion_desired)})")
        tls_ctx = self._tls_context() if server.tls else None
        if server.tls and tls_ctx is None:
            ex = Exchange(transport="tls", reason=r.TLS_HANDSHAKE)
        else:
            hostname = tlsutil.server_name(settings.tls_config, self.check.hostname, given_as)
            ex = await exchange(query, server, transport=settings.transport_protocol, deadline=deadline,
                                log=self.log, tls_context=tls_ctx, server_hostname=hostname,
                                source=settings.source_ip_address, parse=_validating(settings))
        self.phases.update(ex.phases)
        self.waited += ex.waited
        self.details[r.D_DNS_TRANSPORT] = ex.transport
        self.details[r.D_DNS_TRUNCATED] = int(ex.truncated)
        if server.tls:
            self._note_tls(ex.tls)
        return ex

    def _tls_context(self) -> ssl.SSLContext | None:
        """The cached context for the module's tls_config; None (logged) when its files cannot be loaded."""
        try:
            return tlsutil.client_context(self.settings.tls_config, alpn=DOT_ALPN)
        except (OSError, ssl.SSLError, ValueError, KeyError) as exc:
            self.say(f"cannot load tls_config: {type(exc).__name__}: {exc}")
            return None

    def _note_tls(self, info: tlsutil.TLSInfo | None) -> None:
        self.details[r.D_TLS] = 1
        if info is not None:
            self.say(info.describe())
            self.details[r.D_TLS_VERSION] = info.version
            if info.cert_expiry is not None:
                self.details[r.D_CERT_EXPIRY] = info.cert_expiry

    def _judge(self, ex: Exchange, query: _Query, valid: frozenset[int]) -> str | None:
        """Record what the answer says, then the failure reason blackbox's rules give (None = success)."""
        found = self._read(ex, query) if ex.reason is None else None
        if found is None:
            return ex.reason or r.DNS_MALFORMED
        self.details.update(found)
        rcode = int(found[r.D_DNS_RCODE])
        self.say(f"answer: {_rcode_text(rcode)}, {found[r.D_DNS_ANSWER_RRS]} answer/"
                 f"{found[r.D_DNS_AUTHORITY_RRS]} authority/{found[r.D_DNS_ADDITIONAL_RRS]} additional RRs"
                 f"{', authoritative' if found[r.D_DNS_AA] else ''}")
        if rcode not in valid:
            self.say(f"rcode {_rcode_text(rcode)} not in valid_rcodes "
                     f"{' '.join(self.settings.valid_rcodes) or 'NOERROR'}")
            return rcode_reason(rcode) or r.DNS_RCODE
        if rcode == dns.rcode.NOERROR and not found[r.D_DNS_ANSWER_RRS] and not query.is_any:
            self.say(f"no {query.rdtype_text} records (NODATA): a success, as in blackbox_exporter")
        return self._validate(ex.response, query) if ex.response is not None else None

    @staticmethod
    def _read(ex: Exchange, query: _Query) -> dnsanswer.Facts | None:
        """Facts of the answer: read from the raw wire when it was plain, else from the parsed answer."""
        if ex.facts is not None:
            return ex.facts
        return dnsanswer.facts_from_message(ex.response, query.question_key) if ex.response is not None else None

    def _validate(self, resp: dns.message.Message, query: _Query) -> str | None:
        s = self.settings
        found = dnsanswer.relevant(resp, query.question_key)
        for name, section, validator in (("answer", found.answer, s.validate_answer_rrs),
                                         ("authority", found.authority, s.validate_authority_rrs),
                                         ("additional", found.additional, s.validate_additional_rrs)):
            if dnsanswer.active(validator):
                problem = dnsanswer.check_rrs(dnsanswer.rr_texts(section), validator)
                if problem is not None:
                    self.say(f"{name} section rejected: {problem}")
                    return r.DNS_ANSWER_MISMATCH
        return None


def _validating(s: DNSProbe) -> bool:
    """Whether validators need the records' text, hence a full parse of the answer."""
    return (dnsanswer.active(s.validate_answer_rrs) or dnsanswer.active(s.validate_authority_rrs)
            or dnsanswer.active(s.validate_additional_rrs))


@functools.lru_cache(maxsize=64)
def _rcode_text(rcode: int) -> str:
    return dns.rcode.to_text(rcode)


@functools.lru_cache(maxsize=4096)
def _is_ip(host: str) -> bool:
    return ip_literal(host) is not None


def _hostport(server: Resolver) -> str:
    return f"[{server.host}]:{server.port}" if ":" in server.host else f"{server.host}:{server.port}"


# --- The query template ---------------------------------------------------------------------------------


class _Query(dns.message.QueryMessage):
    """A query rendered to wire once. Copies share everything but the 16-bit id, so a probe pays only for
    a shallow copy and a random id, and concurrent probes never share an id."""

    tail: bytes = b""  # the wire form after the id
    question_wire: bytes = b""  # the question section as sent, to recognise the answer's
    question_key: dnsanswer.Question = (b"", 0, 0)  # which records answer it (dnsanswer.relevant)
    describe: str = ""  # "example.com A" for log lines
    rdtype_text: str = ""
    is_any: bool = False

    def to_wire(self, *args: object, **kwargs: object) -> bytes:
        if args or kwargs:
            return super().to_wire(*args, **kwargs)  # type: ignore[arg-type]
        return self.id.to_bytes(2, "big") + self.tail

    def fresh(self) -> _Query:
        query = _Query.__new__(_Query)
        query.__dict__.update(self.__dict__)  # a shallow copy: the sections are never modified
        query.id = secrets.randbits(16)
        return query


# One entry per distinct question among the loaded checks: the cache must hold them all, or probes cycling
# through more names than it holds miss every time (about 1.5 KiB per entry).
@functools.lru_cache(maxsize=65536)
def _template(qname: str, qtype: str, qclass: str, rd: bool) -> _Query:
    made = dns.message.make_query(qname, qtype or "ANY", qclass or "IN", use_edns=False,
                                  flags=dns.flags.RD if rd else 0, id=0)
    template = _Query(id=0)
    template.__dict__.update(made.__dict__)
    template.tail = made.to_wire()[2:]
    q = made.question[0]
    template.question_wire = template.tail[10:10 + len(q.name.to_wire()) + 4]
    template.question_key = dnsanswer.question_of(made)
    template.rdtype_text = dns.rdatatype.to_text(q.rdtype)
    template.is_any = q.rdtype == dns.rdatatype.ANY
    name = q.name.to_text(omit_final_dot=True) or "."
    template.describe = f"{name} {template.rdtype_text}" + (
        "" if q.rdclass == dns.rdataclass.IN else f" {dns.rdataclass.to_text(q.rdclass)}")
    return template


@functools.lru_cache(maxsize=256)
def _valid_rcodes(names: tuple[str, ...]) -> frozenset[int]:
    if not names:
        return frozenset({dns.rcode.NOERROR})
    return frozenset(dns.rcode.from_text(name) for name in names)


# --- DNS-over-TLS ---------------------------------------------------------------------------------------


def _with_tls_setting(server: Resolver, settings: DNSProbe) -> Resolver:
    """Honour blackbox's ``dns_over_tls: true`` for a plain ``ip[:port]`` target (853 when no port)."""
    if server.tls or not settings.dns_over_tls:
        return server
    explicit_port = server.name.rstrip().endswith(f":{server.port}")
    return dataclasses.replace(server, tls=True, port=server.port if explicit_port else DOT_PORT)
