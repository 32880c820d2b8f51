"""Recursive resolvers that fail the way real ones did on 2021-10-04.

Each resolver iterates from the parent server, following referrals (NS + glue) to the zone's own
nameservers, and caches what it learns on story time (cache.py): answers by their TTL, NXDOMAIN and
NODATA by the SOA's negative TTL, delegations by the referral's TTL. When no nameserver of a zone
answers, the client gets SERVFAIL — never NXDOMAIN, which would claim the name does not exist.

Two styles differ only in how they chase unresponsive nameservers (``Style``):

- ``public`` (large anycast resolvers): asks all of a zone's nameservers at once with a short timeout,
  remembers silent ones for a hold-down period and then answers SERVFAIL at once, and caches the
  SERVFAIL briefly. Clients see a fast SERVFAIL.
- ``isp`` (a classic ISP resolver): asks one nameserver after another with a long timeout and keeps
  no memory of silent ones, so a client with a 4 s timeout usually gives up first and records a
  timeout; a client that arrives while a lookup is already in flight sometimes gets a slow SERVFAIL.

The hold-down backs off the way real resolvers' infrastructure caches do: every timeout of a server
still held down doubles its hold-down, up to ``holddown_max``, so a long outage leaves the resolver
skipping servers for a long time **after they answer again**: the recovery tail, where a zone keeps
getting SERVFAIL minutes after its nameservers are back. A resolver can also serve stale answers
(RFC 8767, ``serve_stale``): when a name cannot be resolved, an answer that expired less than
``serve_stale`` story seconds ago is handed out with a TTL of 30 s instead of SERVFAIL. Scenarios turn it
on per region (``resolvers: {serve_stale: ...}``).

Network timeouts are wall seconds (they race the probes' timeouts); everything cached is story time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from exporter.lab.cache import Cache, Delegation, Entry
from exporter.lab.dnsserver import Answer, reply
from exporter.lab.zones import Name

log = logging.getLogger("exporter.lab.recursive")

MAX_REFERRALS = 8
MAX_DEPTH = 3  # nested lookups for nameserver addresses missing glue


@dataclass(frozen=True, slots=True)
class Style:
    name: str
    parallel: bool  # ask every nameserver of a zone at once (True) or one after another
    attempt_timeout: float  # wall seconds to wait for one nameserver
    holddown: float  # story seconds a silent nameserver is skipped (0: never remembered)
    servfail_ttl: float  # story seconds a SERVFAIL is cached (0: not cached)
    holddown_max: float = 0.0  # story seconds the doubling hold-down may grow to (<= holddown: no backoff)
    serve_stale: float = 0.0  # story seconds an expired answer may still be served (0: never)


PUBLIC = Style("public", parallel=True, attempt_timeout=0.8, holddown=300.0, servfail_ttl=30.0,
               holddown_max=1800.0)
ISP = Style("isp", parallel=False, attempt_timeout=2.0, holddown=0.0, servfail_ttl=30.0)
STALE_TTL = 30  # the TTL of a stale answer, as RFC 8767 recommends
STYLES: dict[str, Style] = {PUBLIC.name: PUBLIC, ISP.name: ISP}

Server = tuple[Name, str]  # (nameserver name, address)


class RecursiveResolver:
    """The handler of one recursive resolver's DNSServer; see the module docstring for behaviour."""

    def __init__(self, *, host: str, style: Style, speed: float, root: tuple[Server, ...],
                 upstream_port: int = 53) -> None:
        self.host = host  # also the source address of upstream queries (authoritative views key on it)
        self.style = style
        self.root = root
        self.upstream_port = upstream_port
        self.isolated = False
        self.cache = Cache(speed, lambda: asyncio.get_running_loop().time())
        self.client_queries = 0
        self.upstream_queries = 0
        self._down_until: dict[str, float] = {}
        self._holddown: dict[str, float] = {}  # story seconds of each silent server's current hold-down
        self._inflight: dict[Hashable, asyncio.Future[Entry]] = {}
        self._turn = 0

    async def __call__(self, query: dns.message.Message, transport: str) -> Answer:
        if self.isolated:
            return Answer(message=None)
        if not query.question:
            return Answer(message=reply(query, dns.rcode.FORMERR, aa=False, ra=True))
        self.client_queries += 1
        q = query.question[0]
        entry = await self.lookup(q.name, q.rdtype)
        if self.isolated:
            return Answer(message=None)
        return Answer(message=self._response(query, entry))

    async def close(self) -> None:
        """Abandon lookups still in flight (at shutdown)."""
        pending = list(self._inflight.values())
        for future in pending:
            future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def flush(self) -> None:
        """Forget everything learnt: cached answers, delegations and silent nameservers."""
        self.cache.clear()
        self._down_until.clear()
        self._holddown.clear()

    async def lookup(self, name: Name, rdtype: int, depth: int = 0) -> Entry:
        """The cached or freshly resolved outcome; concurrent lookups of one name share one resolution."""
        key = (name, rdtype)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._resolve(name, rdtype, depth))
            self._inflight[key] = future
            future.add_done_callback(lambda _f: self._inflight.pop(key, None))
        return await asyncio.shield(future)

    def _response(self, query: dns.message.Message, entry: Entry) -> dns.message.Message:
        resp = reply(query, entry.rcode, aa=False, ra=True)
        ttl = self.cache.remaining(entry)
        resp.answer.extend(_with_ttl(r, ttl) for r in entry.answer)
        if entry.soa is not None:
            resp.authority.append(_with_ttl(entry.soa, ttl))
        return resp

    def _stale_or_servfail(self, key: Hashable) -> Entry:
        if self.style.serve_stale > 0:
            stale = self.cache.stale(key, self.style.serve_stale)
            if stale is not None:
                return self.cache.put(key, stale, STALE_TTL)
        return self._servfail(key)

    async def _resolve(self, name: Name, rdtype: int, depth: int) -> Entry:
        key = (name, rdtype)
        for _ in range(MAX_REFERRALS):
            zone, servers = await self._closest_servers(name, depth)
            resp = await self._ask(servers, name, rdtype) if servers else None
            if resp is None:
                break
            cut = _referral_cut(resp)
            if cut is None:
                return self._final(key, resp)
            if not cut.is_subdomain(zone) or cut == zone:
                log.debug("%s: lame referral to %s from %s", self.host, cut, zone)
                break
            self._learn_cut(cut, resp)
        return self._stale_or_servfail(key)

    async def _closest_servers(self, name: Name, depth: int) -> tuple[Name, list[Server]]:
        cut = self.cache.closest_cut(name)
        if cut is None:
            return dns.name.root, list(self.root)
        return cut.zone, await self._addresses(cut, depth)

    async def _addresses(self, cut: Delegation, depth: int) -> list[Server]:
        out: list[Server] = []
        for ns, address in cut.servers:
            if address is not None:
                out.append((ns, address))
            elif depth < MAX_DEPTH and not ns.is_subdomain(cut.zone):
                got = await self.lookup(ns, dns.rdatatype.A, depth + 1)
                out.extend((ns, rd.address) for rrset in got.answer for rd in rrset
                           if rrset.rdtype == dns.rdatatype.A)
        return out

    def _learn_cut(self, cut: Name, resp: dns.message.Message) -> None:
        ns = next(r for r in resp.authority if r.rdtype == dns.rdatatype.NS)
        glue = {r.name: r[0].address for r in resp.additional if r.rdtype == dns.rdatatype.A}
        servers = tuple((rd.target, glue.get(rd.target)) for rd in ns)
        self.cache.put_cut(cut, servers, ns.ttl)

    def _final(self, key: Hashable, resp: dns.message.Message) -> Entry:
        rcode = resp.rcode()
        answer = tuple(resp.answer)
        soa = next((r for r in resp.authority if r.rdtype == dns.rdatatype.SOA), None)
        if answer:
            ttl = min(r.ttl for r in answer)
        else:
            ttl = min(soa.ttl, soa[0].minimum) if soa is not None else 0
        return self.cache.put(key, Entry(rcode, answer, soa), ttl)

    def _servfail(self, key: Hashable) -> Entry:
        return self.cache.put(key, Entry(dns.rcode.SERVFAIL), self.style.servfail_ttl)

    async def _ask(self, servers: list[Server], name: Name, rdtype: int) -> dns.message.Message | None:
        if self.style.parallel:
            return await self._ask_parallel(servers, name, rdtype)
        self._turn += 1
        start = self._turn % len(servers)
        for _, address in servers[start:] + servers[:start]:
            resp = await self._query(address, name, rdtype)
            if resp is not None:
                return resp
        return None

    async def _ask_parallel(self, servers: list[Server], name: Name,
                            rdtype: int) -> dns.message.Message | None:
        now = self.cache.clock()
        live = [a for _, a in servers if self._down_until.get(a, 0.0) <= now]
        tasks = [asyncio.ensure_future(self._query(a, name, rdtype)) for a in live]
        try:
            for next_done in asyncio.as_completed(tasks):
                resp = await next_done
                if resp is not None:
                    return resp
            return None
        finally:
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _query(self, address: str, name: Name, rdtype: int) -> dns.message.Message | None:
        """One iterative query; None when the server is silent or refuses."""
        query = dns.message.make_query(name, rdtype)
        query.flags &= ~dns.flags.RD
        self.upstream_queries += 1
        kw = dict(timeout=self.style.attempt_timeout, port=self.upstream_port, source=self.host)
        try:
            try:
                resp = await dns.asyncquery.udp(query, address, ignore_unexpected=True,
                                                raise_on_truncation=True, **kw)
            except dns.message.Truncated:
                resp = await dns.asyncquery.tcp(query, address, **kw)
        except dns.exception.Timeout:
            self._hold_down(address)
            return None
        except (OSError, dns.exception.DNSException) as exc:
            log.debug("%s: query to %s failed: %s", self.host, address, exc)
            return None
        self._down_until.pop(address, None)
        self._holddown.pop(address, None)
        if resp.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return None
        return resp

    def _hold_down(self, address: str) -> None:
        """Skip a silent server for a while; each further timeout doubles the while, up to holddown_max."""
        if self.style.holddown <= 0:
            return
        previous = self._holddown.get(address)
        period = self.style.holddown if previous is None else min(previous * 2, self.style.holddown_max)
        period = max(period, self.style.holddown)
        self._holddown[address] = period
        self._down_until[address] = self.cache.clock() + self.cache.wall(period)


def _referral_cut(resp: dns.message.Message) -> Name | None:
    """The delegated zone if ``resp`` is a referral (NS in authority, no answer, AA clear)."""
    if resp.rcode() != dns.rcode.NOERROR or resp.answer or resp.flags & dns.flags.AA:
        return None
    ns = next((r for r in resp.authority if r.rdtype == dns.rdatatype.NS), None)
    return None if ns is None else ns.name


def _with_ttl(rrset: dns.rrset.RRset, ttl: int) -> dns.rrset.RRset:
    out = dns.rrset.RRset(rrset.name, rrset.rdclass, rrset.rdtype)
    out.update(rrset)
    out.ttl = ttl
    return out
