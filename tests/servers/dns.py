"""A scriptable local DNS peer for tests: static records plus per-name misbehaviour.

    server = await start_dns({"www.test.": {"A": ["127.0.0.1"]}}, modes={"bad.test.": "servfail"})
    ...
    await server.stop()

Modes: nxdomain, servfail, refused, rcode:<NAME> (any rcode, e.g. rcode:NOTIMP), drop (black hole: no
answer), delay:<seconds>, truncate (TC=1 over UDP, full answer over TCP), noaa (answer without the AA
flag), malformed (garbage bytes), mismatch (an answer to a different question), upcase (the question
echoed in upper case, as a server doing 0x20 case games might), noedns or noedns:<RCODE> (FORMERR, or
the rcode given, to any query carrying EDNS; a normal answer without it, like a server with a broken EDNS
implementation), hs (the records in class HS instead of IN), offname (the records owned by another name),
ptrloop (one answer record whose owner name is a compression pointer to itself).

A name with a CNAME record answers other types with the CNAME chain (in-zone, loops included once) and
the records of the type asked at its end, as an authoritative server does.

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
import dns.rdata
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
        if mode and mode.startswith("noedns"):
            if query.edns >= 0:
                return Answer(message=_edns_refusal(query, mode), delay=delay)
            mode = None
        if mode == "ptrloop":
            return Answer(wire=pointer_loop(query))
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
        if mode in ("hs", "offname"):
            resp.answer = [_moved(rrset, mode) for rrset in resp.answer]
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
        name = self._chase(resp, q.name, q.rdtype)
        types = self.records.get(name, {})
        wanted = list(types) if q.rdtype == dns.rdatatype.ANY else [dns.rdatatype.to_text(q.rdtype)]
        for rtype in wanted:
            if types.get(rtype):
                resp.answer.append(self._rrset(name, rtype, types[rtype]))
        if not resp.answer:
            resp.authority.append(self._soa_rrset())  # NODATA
        elif "NS" in wanted and types.get("NS"):
            self._add_glue(resp, types["NS"])
        return resp

    def _chase(self, resp: dns.message.Message, name: dns.name.Name, rdtype: int) -> dns.name.Name:
        """Add the CNAME chain from ``name`` (each link once) to the answer; returns the name it ends at."""
        if rdtype in (dns.rdatatype.CNAME, dns.rdatatype.ANY):
            return name
        seen = set()
        while name not in seen and self.records.get(name, {}).get("CNAME"):
            seen.add(name)
            resp.answer.append(self._rrset(name, "CNAME", self.records[name]["CNAME"][:1]))
            name = dns.name.from_text(self.records[name]["CNAME"][0])
        return name

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


def _edns_refusal(query: dns.message.Message, mode: str) -> dns.message.Message:
    """What a server with broken EDNS says to a query with OPT: FORMERR without OPT, or the rcode asked."""
    rcode = dns.rcode.from_text(mode.split(":", 1)[1]) if ":" in mode else dns.rcode.FORMERR
    resp = reply(query, aa=False)
    if rcode < 16:
        resp.use_edns(False)
    resp.set_rcode(rcode)
    return resp


def _moved(rrset: dns.rrset.RRset, mode: str) -> dns.rrset.RRset:
    """``rrset`` in class HS (rdata kept as generic bytes), or owned by another name."""
    if mode == "offname":
        return dns.rrset.from_rdata_list(dns.name.from_text("elsewhere.test."), rrset.ttl, list(rrset))
    moved = dns.rrset.RRset(rrset.name, dns.rdataclass.HS, rrset.rdtype)
    for rdata in rrset:
        wire = rdata.to_wire()
        moved.add(dns.rdata.from_text(dns.rdataclass.HS, rrset.rdtype, f"\\# {len(wire)} {wire.hex()}"), rrset.ttl)
    return moved


def pointer_loop(query: dns.message.Message) -> bytes:
    """An answer with one A record whose owner name is a compression pointer to itself."""
    resp = reply(query)
    resp.use_edns(False)
    wire = bytearray(resp.to_wire())
    wire[6:8] = b"\x00\x01"
    here = len(wire)
    wire += bytes([0xC0 | here >> 8, here & 0xFF]) + bytes.fromhex("0001000100000e1000047f000001")
    return bytes(wire)


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
