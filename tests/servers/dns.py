"""A scriptable local DNS peer for tests: static records plus per-name misbehaviour.

    server = await start_dns({"www.test.": {"A": ["127.0.0.1"]}}, modes={"bad.test.": "servfail"})
    ...
    await server.stop()

Modes: nxdomain, servfail, refused, rcode:<NAME> (any rcode, e.g. rcode:NOTIMP), drop (black hole: no
answer), delay:<seconds>, truncate (TC=1 over UDP, full answer over TCP), noaa (answer without the AA
flag), malformed (garbage bytes), mismatch (an answer to a different question), upcase (the question
echoed in upper case, as a server doing 0x20 case games might).

Like a real authoritative server it answers ANY with every RRset of the name and adds glue addresses
to the additional section of NS answers. ``ttls`` overrides the TTL per name and type. Every query is
recorded in ``handler.received`` as ``(message, transport)``, so tests can check what was sent.
``start_dot`` serves the same handler over DNS-over-TLS.
"""

from __future__ import annotations

import asyncio
import ssl

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from exporter.lab.dnsserver import Answer, DNSServer, reply

Records = dict[str, dict[str, list[str]]]
TTLs = dict[str, dict[str, int]]

_RCODE_MODES = {"nxdomain": dns.rcode.NXDOMAIN, "servfail": dns.rcode.SERVFAIL, "refused": dns.rcode.REFUSED}


class ZoneHandler:
    def __init__(self, records: Records, modes: dict[str, str] | None = None, ttl: int = 300,
                 soa: str = "ns1.test. admin.test. 2021100401 3600 600 86400 60",
                 ttls: TTLs | None = None) -> None:
        self.records = {dns.name.from_text(k): v for k, v in records.items()}
        self.modes = {dns.name.from_text(k): v for k, v in (modes or {}).items()}
        self.ttl = ttl
        self.soa = soa
        self.ttls = {dns.name.from_text(k): v for k, v in (ttls or {}).items()}
        self.default_mode: str | None = None  # applies to every name when set
        self.received: list[tuple[dns.message.Message, str]] = []

    def __call__(self, query: dns.message.Message, transport: str) -> Answer:
        self.received.append((query, transport))
        q = query.question[0]
        mode = self.modes.get(q.name, self.default_mode)
        delay = 0.0
        if mode and mode.startswith("delay:"):
            delay, mode = float(mode.split(":", 1)[1]), None
        if mode == "drop":
            return Answer(message=None)
        if mode == "malformed":
            return Answer(wire=b"\x00\x01garbage")
        if mode in _RCODE_MODES or (mode or "").startswith("rcode:"):
            return Answer(message=self._error(query, mode or ""), delay=delay)
        resp = self._answer(query, aa=mode != "noaa")
        if mode == "mismatch":
            resp.question = [dns.rrset.RRset(dns.name.from_text("other.test."), q.rdclass, q.rdtype)]
        if mode == "upcase":
            upper = dns.name.from_text(q.name.to_text().upper())
            resp.question = [dns.rrset.RRset(upper, q.rdclass, q.rdtype)]
        return Answer(message=resp, delay=delay, truncate_udp=(mode == "truncate" and transport == "udp"))

    def _error(self, query: dns.message.Message, mode: str) -> dns.message.Message:
        rcode = _RCODE_MODES.get(mode) or dns.rcode.from_text(mode.split(":", 1)[1])
        resp = reply(query, rcode, aa=rcode == dns.rcode.NXDOMAIN)
        if rcode == dns.rcode.NXDOMAIN:
            resp.authority.append(self._soa_rrset())
        return resp

    def _answer(self, query: dns.message.Message, *, aa: bool) -> dns.message.Message:
        q = query.question[0]
        resp = reply(query, aa=aa, ra=True)
        if q.name not in self.records:
            resp.set_rcode(dns.rcode.NXDOMAIN)
            resp.authority.append(self._soa_rrset())
            return resp
        types = self.records[q.name]
        wanted = list(types) if q.rdtype == dns.rdatatype.ANY else [dns.rdatatype.to_text(q.rdtype)]
        for rtype in wanted:
            if types.get(rtype):
                resp.answer.append(self._rrset(q.name, rtype, types[rtype]))
        if not resp.answer:
            resp.authority.append(self._soa_rrset())  # NODATA
        elif "NS" in wanted and types.get("NS"):
            self._add_glue(resp, types["NS"])
        return resp

    def _rrset(self, name: dns.name.Name, rtype: str, values: list[str]) -> dns.rrset.RRset:
        ttl = self.ttls.get(name, {}).get(rtype, self.ttl)
        return dns.rrset.from_text_list(name, ttl, "IN", rtype, values)

    def _add_glue(self, resp: dns.message.Message, nameservers: list[str]) -> None:
        for ns in nameservers:
            host = dns.name.from_text(ns)
            for rtype in ("A", "AAAA"):
                values = self.records.get(host, {}).get(rtype)
                if values:
                    resp.additional.append(self._rrset(host, rtype, values))

    def _soa_rrset(self) -> dns.rrset.RRset:
        return dns.rrset.from_text("test.", self.ttl, "IN", "SOA", self.soa)


async def start_dns(records: Records, modes: dict[str, str] | None = None, host: str = "127.0.0.1",
                    **kw) -> DNSServer:
    server = DNSServer(ZoneHandler(records, modes, **kw), host=host)
    return await server.start()


class DoTServer(DNSServer):
    """The same server over DNS-over-TLS (TCP framing inside TLS) only; no UDP."""

    def __init__(self, handler: ZoneHandler, ssl_context: ssl.SSLContext, host: str = "127.0.0.1") -> None:
        super().__init__(handler, host=host)
        self.ssl_context = ssl_context

    async def start(self) -> DoTServer:
        self._tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port, ssl=self.ssl_context)
        self.port = self._tcp.sockets[0].getsockname()[1]
        return self


async def start_dot(records: Records, ssl_context: ssl.SSLContext, modes: dict[str, str] | None = None,
                    host: str = "127.0.0.1", **kw) -> DoTServer:
    server = DoTServer(ZoneHandler(records, modes, **kw), ssl_context, host=host)
    return await server.start()
