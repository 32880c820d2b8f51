"""Authoritative servers: the parent (root and TLDs, handing out referrals with glue) and zone servers.

Each server is a handler for one DNSServer on its own address, with a reachability state:

- ``up``: answers (AA set, RA clear, as authoritative servers do);
- ``blackhole``: drops every packet, so clients time out — what a withdrawn route looks like when a
  covering prefix still attracts the traffic (2021-10-04: timeouts, not refusals);
- ``refuse``: answers REFUSED.
"""

from __future__ import annotations

from collections.abc import Callable

import dns.message
import dns.rcode
import dns.rrset

from exporter.lab import catalog as c
from exporter.lab.dnsserver import Answer, client_address, reply
from exporter.lab.zones import Lookup, Name, Zone

STATES: tuple[str, ...] = ("up", "blackhole", "refuse")

RegionOf = Callable[[str], int | None]


class _Stateful:
    """Reachability shared by every lab DNS server that can be made to fail."""

    def __init__(self) -> None:
        self._state = "up"

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        if value not in STATES:
            raise ValueError(f"unknown nameserver state {value!r} (expected one of {', '.join(STATES)})")
        self._state = value

    def _gate(self, query: dns.message.Message) -> Answer | None:
        """The answer imposed by the state, or None when the server is up."""
        if self._state == "blackhole":
            return Answer(message=None)
        if self._state == "refuse" or not query.question:
            rcode = dns.rcode.REFUSED if query.question else dns.rcode.FORMERR
            return Answer(message=reply(query, rcode, aa=False))
        return None


class ZoneServer(_Stateful):
    """A nameserver publishing a set of zones, answering with the view of the asking resolver's region."""

    def __init__(self, name: str, zones: list[Zone], region_of: RegionOf) -> None:
        super().__init__()
        self.name = name
        self.zones = zones
        self._region_of = region_of

    def __call__(self, query: dns.message.Message, transport: str) -> Answer:
        gated = self._gate(query)
        if gated is not None:
            return gated
        q = query.question[0]
        zone = _deepest(self.zones, q.name)
        if zone is None:
            return Answer(message=reply(query, dns.rcode.REFUSED, aa=False))
        peer = client_address.get()
        region = self._region_of(peer[0]) if peer else None
        return Answer(message=_respond(query, zone.lookup(q.name, q.rdtype, region or 0)))


class ParentServer(_Stateful):
    """The root and the TLDs in one server: referrals (NS + glue) for child zones, NXDOMAIN elsewhere."""

    def __init__(self, tlds: list[Zone], delegations: dict[Name, tuple[tuple[Name, str], ...]]) -> None:
        super().__init__()
        self.tlds = tlds
        self.delegations = delegations

    def __call__(self, query: dns.message.Message, transport: str) -> Answer:
        gated = self._gate(query)
        if gated is not None:
            return gated
        q = query.question[0]
        cut = max((d for d in self.delegations if q.name.is_subdomain(d)), key=len, default=None)
        if cut is not None:
            return Answer(message=self._referral(query, cut))
        zone = _deepest(self.tlds, q.name)
        assert zone is not None, "the root zone contains every name"
        return Answer(message=_respond(query, zone.lookup(q.name, q.rdtype, 0)))

    def _referral(self, query: dns.message.Message, cut: Name) -> dns.message.Message:
        resp = reply(query, aa=False)
        servers = self.delegations[cut]
        ns = dns.rrset.from_text_list(cut, c.DELEGATION_TTL, "IN", "NS", [n.to_text() for n, _ in servers])
        resp.authority.append(ns)
        for name, address in servers:
            resp.additional.append(dns.rrset.from_text(name, c.DELEGATION_TTL, "IN", "A", address))
        return resp


def _deepest(zones: list[Zone], name: Name) -> Zone | None:
    return max((z for z in zones if z.contains(name)), key=lambda z: len(z.origin), default=None)


def _respond(query: dns.message.Message, lookup: Lookup) -> dns.message.Message:
    resp = reply(query, dns.rcode.from_text(lookup.rcode), aa=True)
    resp.answer.extend(lookup.answer)
    if lookup.soa is not None:
        resp.authority.append(lookup.soa)
    return resp
