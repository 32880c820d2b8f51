"""Zone files for Knot, built from the same zone data as the simulated lab (zones.py / catalog.py).

The zones are built with ``zones.build_zone`` and ``zones.add_site``; only the addresses differ (plan.py).
Real authoritative servers have no per-region views here: a site's apex and ``www`` have one address (its
anycast-style edge), and the edge tells regions apart by the client's source prefix (nginx.py). The parent
(root + TLDs) gets explicit delegations: NS at each cut, with glue for in-bailiwick nameservers.

TTLs are scaled by the world's speed (``ttl / speed``, at least 1 s), as the simulated lab scales its
caches: a 300 s TTL at speed 60 lasts 5 real seconds in Unbound too.
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from exporter.lab import catalog as c
from exporter.lab.netlab import plan
from exporter.lab.zones import Zone, add_site, build_zone

PARENT_NAME = c.PARENT_NAME


@dataclass(frozen=True, slots=True)
class LabZones:
    children: dict[str, Zone]  # zone origin -> zone published by its fleet
    zone_fleet: dict[str, str]  # zone origin -> fleet key
    parent: list[Zone]  # root and TLD zones, published by the parent server
    ns_ip: dict[str, str]  # nameserver name -> address


def build(fleets: tuple[c.NameserverFleet, ...] = c.FLEETS, zones: tuple[c.ZoneSpec, ...] = c.ZONES,
          sites: tuple[c.SiteSpec, ...] = c.SITES) -> LabZones:
    ns_ip = {name: plan.nameserver(fi, n) for fi, f in enumerate(fleets) for n, name in enumerate(f.names)}
    hosts = {**ns_ip, PARENT_NAME: plan.PARENT}
    by_key = {f.key: f for f in fleets}
    children = {z.origin: build_zone(z.origin, tuple((n, ns_ip[n]) for n in by_key[z.fleet].names), hosts)
                for z in zones}
    for si, site in enumerate(sites):
        add_site(children[site.zone], (plan.edge(si),))
    parent = _parent_zones(children, hosts)
    return LabZones(children, {z.origin: z.fleet for z in zones}, parent, ns_ip)


def _parent_zones(children: dict[str, Zone], hosts: dict[str, str]) -> list[Zone]:
    tlds = sorted({origin.rsplit(".", 1)[-1] for origin in children})
    server = ((PARENT_NAME, plan.PARENT),)
    root = build_zone(".", server, {})
    for tld in tlds:
        _delegate(root, dns.name.from_text(tld), server, hosts)
    out = [root]
    for tld in tlds:
        zone = build_zone(tld, server, {h: ip for h, ip in hosts.items() if _under(h, tld)})
        for child in children.values():
            if child.origin.parent() == zone.origin:
                _delegate(zone, child.origin, tuple((n.to_text(), ip) for n, ip in child.nameservers), hosts)
        out.append(zone)
    return out


def _under(host: str, origin: str) -> bool:
    return dns.name.from_text(host).is_subdomain(dns.name.from_text(origin))


def _delegate(zone: Zone, cut: dns.name.Name, servers: tuple[tuple[str, str], ...],
              hosts: dict[str, str]) -> None:
    """NS records at ``cut`` in ``zone``, plus glue for nameservers named under the cut."""
    ns = dns.rrset.from_text_list(cut, c.DELEGATION_TTL, "IN", "NS", [dns.name.from_text(n).to_text()
                                                                       for n, _ in servers])
    zone.records[(cut, dns.rdatatype.NS)] = ns
    for name, _ in servers:
        n = dns.name.from_text(name)
        if n.is_subdomain(cut):
            zone.records[(n, dns.rdatatype.A)] = dns.rrset.from_text(
                n, c.NS_HOST_TTL, "IN", "A", hosts[n.to_text(omit_final_dot=True)])


def scaled(ttl: int, speed: float) -> int:
    return max(1, round(ttl / speed))


def zone_text(zone: Zone, speed: float = 1.0) -> str:
    """The zone in master-file format with TTLs (and the SOA minimum) scaled by ``speed``."""
    lines = [f"$ORIGIN {zone.origin.to_text()}"]
    rrsets = list(zone.records.values())
    for name, addresses in zone.views.items():
        rrsets.append(dns.rrset.from_text_list(name, c.RECORD_TTL, "IN", "A", sorted(set(addresses))))
    rrsets.sort(key=lambda r: (r.rdtype != dns.rdatatype.SOA, r.name, r.rdtype))
    for rrset in rrsets:
        ttl = scaled(rrset.ttl, speed)
        for rd in rrset:
            text = rd.to_text()
            if rrset.rdtype == dns.rdatatype.SOA:
                text = rd.replace(minimum=scaled(rd.minimum, speed)).to_text()
            rdtype = dns.rdatatype.to_text(rrset.rdtype)
            lines.append(f"{rrset.name.to_text()} {ttl} {dns.rdataclass.to_text(rrset.rdclass)} {rdtype} {text}")
    return "\n".join(lines) + "\n"


def file_name(origin: dns.name.Name | str) -> str:
    text = origin.to_text() if isinstance(origin, dns.name.Name) else origin
    return "root.zone" if text in (".", "") else f"{text.rstrip('.')}.zone"
