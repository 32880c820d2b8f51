"""Zone data with per-region views, and the lookups authoritative servers answer from.

A view is geo-DNS as CDNs do it: the answer for a site's apex and www depends on which region's
resolver asks (identified by its source address), so region R's resolvers hand out R's edge address.
Any other client (a direct query from a prober, ``dig``) gets the first region's view.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from exporter.lab import catalog as c

Name = dns.name.Name


@dataclass(frozen=True, slots=True)
class Lookup:
    """The outcome of looking a name up in a zone."""

    rcode: str  # "NOERROR" or "NXDOMAIN"
    answer: tuple[dns.rrset.RRset, ...] = ()
    soa: dns.rrset.RRset | None = None  # for NXDOMAIN and NODATA (negative answers)


@dataclass(slots=True)
class Zone:
    origin: Name
    nameservers: tuple[tuple[Name, str], ...]  # (name, ip) of the servers publishing this zone
    records: dict[tuple[Name, int], dns.rrset.RRset] = field(default_factory=dict)
    views: dict[Name, tuple[str, ...]] = field(default_factory=dict)  # name -> A address per region

    @property
    def soa(self) -> dns.rrset.RRset:
        return self.records[(self.origin, dns.rdatatype.SOA)]

    def negative_soa(self) -> dns.rrset.RRset:
        """The SOA as sent with negative answers: TTL = min(SOA TTL, minimum) per RFC 2308."""
        soa = self.soa
        out = dns.rrset.RRset(soa.name, soa.rdclass, soa.rdtype)
        out.update(soa)
        out.ttl = min(soa.ttl, soa[0].minimum)
        return out

    def contains(self, name: Name) -> bool:
        return name.is_subdomain(self.origin)

    def lookup(self, name: Name, rdtype: int, region: int) -> Lookup:
        if rdtype == dns.rdatatype.A and name in self.views:
            addresses = self.views[name]
            address = addresses[region] if 0 <= region < len(addresses) else addresses[0]
            rrset = dns.rrset.from_text(name, c.RECORD_TTL, "IN", "A", address)
            return Lookup("NOERROR", (rrset,))
        rrset = self.records.get((name, rdtype))
        if rrset is not None:
            return Lookup("NOERROR", (rrset,))
        if self._exists(name):
            return Lookup("NOERROR", soa=self.negative_soa())  # NODATA
        return Lookup("NXDOMAIN", soa=self.negative_soa())

    def _exists(self, name: Name) -> bool:
        """True if ``name`` owns records or has descendants that do (an empty non-terminal)."""
        owners = [n for n, _ in self.records] + list(self.views)
        return any(owner.is_subdomain(name) for owner in owners)


def build_zone(origin: str, nameservers: tuple[tuple[str, str], ...],
               ns_hosts: dict[str, str]) -> Zone:
    """A zone with SOA and NS records, plus A records for the nameserver hosts that live inside it."""
    o = dns.name.from_text(origin)
    ns = tuple((dns.name.from_text(n), ip) for n, ip in nameservers)
    zone = Zone(origin=o, nameservers=ns)
    mname = ns[0][0].to_text()
    rname = dns.name.from_text("hostmaster", o).to_text()
    soa = f"{mname} {rname} {c.SOA_SERIAL} 14400 1800 604800 {c.SOA_MINIMUM}"
    _add(zone, o, c.SOA_TTL, "SOA", [soa])
    _add(zone, o, c.DELEGATION_TTL, "NS", [n.to_text() for n, _ in ns])
    for host, ip in ns_hosts.items():
        h = dns.name.from_text(host)
        if zone.contains(h):
            _add(zone, h, c.NS_HOST_TTL, "A", [ip])
    return zone


def add_site(zone: Zone, edge_addresses: tuple[str, ...]) -> None:
    """Point the zone's apex and www at a site's edges: one address per region (the view)."""
    zone.views[zone.origin] = edge_addresses
    zone.views[dns.name.from_text("www", zone.origin)] = edge_addresses


def _add(zone: Zone, name: Name, ttl: int, rdtype: str, values: list[str]) -> None:
    zone.records[(name, dns.rdatatype.from_text(rdtype))] = dns.rrset.from_text_list(
        name, ttl, dns.rdataclass.IN, rdtype, values)
