"""What the lab's internet contains: regions, nameserver fleets, zones and web sites.

Plain data, kept apart from the servers that bring it to life (world.py), so the cast of the scenarios
can be read at a glance. Names mirror the real services of the 2021-10-04 incident; every address they
resolve to in the lab is a loopback address (see addressing.py), so nothing ever leaves the machine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

RECORD_TTL = 300  # apex/www A records, like facebook.com in 2021: caches drain within 5 minutes
DELEGATION_TTL = 172800  # NS and glue at the parent, as in .com (2 days)
NS_HOST_TTL = 172800  # A records of the nameservers themselves
SOA_TTL = 3600
SOA_MINIMUM = 300  # negative-caching TTL (RFC 2308: min(SOA TTL, SOA minimum))
SOA_SERIAL = 2021100401
PARENT_NAME = "parent.lab"  # the server publishing the root and the TLDs


@dataclass(frozen=True, slots=True)
class RegionSpec:
    """A vantage point: its probes use their own resolvers and see their own edge addresses."""

    name: str
    display_name: str
    latitude: float
    longitude: float


@dataclass(frozen=True, slots=True)
class NameserverFleet:
    """Nameservers run by one operator, in one address block (a BGP prefix in the real world)."""

    key: str
    operator: str  # who runs them: withdrawing this operator's routes silences the whole fleet
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    origin: str  # without the trailing dot, e.g. "facebook.com"
    fleet: str  # NameserverFleet.key serving the zone


@dataclass(frozen=True, slots=True)
class SiteSpec:
    """A web site with an edge in every region: a monitored service, or a control that stays healthy."""

    name: str
    provider: str
    zone: str  # the zone holding the site's apex and www records
    control: bool = False

    @property
    def hostname(self) -> str:
        return f"www.{self.zone}"


KNOWN_REGIONS: dict[str, RegionSpec] = {
    r.name: r
    for r in (
        RegionSpec("eu-west", "Europe West (Dublin)", 53.35, -6.26),
        RegionSpec("us-east", "US East (Virginia)", 38.95, -77.45),
        RegionSpec("ap-southeast", "Asia Pacific (Singapore)", 1.35, 103.82),
        RegionSpec("sa-east", "South America (Sao Paulo)", -23.55, -46.63),
    )
}
DEFAULT_REGIONS: tuple[RegionSpec, ...] = (KNOWN_REGIONS["eu-west"], KNOWN_REGIONS["us-east"])

FLEETS: tuple[NameserverFleet, ...] = (
    NameserverFleet("facebook", "meta", tuple(f"{c}.ns.facebook.com" for c in "abcd")),
    NameserverFleet("whatsapp", "meta", tuple(f"{c}.ns.whatsapp.net" for c in "abcd")),
    NameserverFleet("dnshost", "dnshost", ("ns1.dnshost.lab", "ns2.dnshost.lab")),
    NameserverFleet("twitter", "twitter", ("a.ns.twitter.com", "b.ns.twitter.com")),
    NameserverFleet("telegram", "telegram", ("ns1.telegram.org", "ns2.telegram.org")),
    NameserverFleet("labdns", "lab", ("ns1.labdns.lab", "ns2.labdns.lab")),
)

ZONES: tuple[ZoneSpec, ...] = (
    ZoneSpec("facebook.com", "facebook"),
    ZoneSpec("messenger.com", "facebook"),
    ZoneSpec("whatsapp.com", "whatsapp"),
    ZoneSpec("whatsapp.net", "whatsapp"),
    ZoneSpec("instagram.com", "dnshost"),  # DNS hosted elsewhere: kept resolving in 2021
    ZoneSpec("dnshost.lab", "dnshost"),
    ZoneSpec("twitter.com", "twitter"),
    ZoneSpec("telegram.org", "telegram"),
    ZoneSpec("control-a.lab", "labdns"),
    ZoneSpec("control-b.lab", "labdns"),
    ZoneSpec("labdns.lab", "labdns"),
)

SITES: tuple[SiteSpec, ...] = (
    SiteSpec("facebook", "meta", "facebook.com"),
    SiteSpec("messenger", "meta", "messenger.com"),
    SiteSpec("whatsapp", "meta", "whatsapp.com"),
    SiteSpec("instagram", "meta", "instagram.com"),
    SiteSpec("twitter", "twitter", "twitter.com"),
    SiteSpec("telegram", "telegram", "telegram.org"),
    SiteSpec("control-a", "lab", "control-a.lab", control=True),
    SiteSpec("control-b", "lab", "control-b.lab", control=True),
)


def region_specs(regions: Sequence[RegionSpec | str] | None) -> tuple[RegionSpec, ...]:
    """Regions given as specs or known names; the default pair when None."""
    if regions is None:
        return DEFAULT_REGIONS
    out: list[RegionSpec] = []
    for r in regions:
        if isinstance(r, RegionSpec):
            out.append(r)
        elif r in KNOWN_REGIONS:
            out.append(KNOWN_REGIONS[r])
        else:
            raise ValueError(f"unknown region {r!r}: pass a RegionSpec or one of {', '.join(KNOWN_REGIONS)}")
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate region names in {names}")
    if not out:
        raise ValueError("the lab needs at least one region")
    return tuple(out)


class CatalogView:
    """What a lab world (simulated or real) says of its catalog: its regions, sites, operators and addresses.

    Both worlds set ``regions``, ``sites``, ``scheme`` and ``http_port`` and give their nameserver and parent
    addresses (``_nameserver_ips``, ``_parent_ip``); the scenario player and the exporter config read the
    rest from here, so both worlds select nameservers and name their sites the same way.
    """

    regions: tuple[RegionSpec, ...]
    sites: tuple[SiteSpec, ...]
    scheme: str
    http_port: int

    def _nameserver_ips(self) -> Mapping[str, str]:
        """Nameserver name -> address, for every fleet of FLEETS."""
        raise NotImplementedError

    def _parent_ip(self) -> str:
        raise NotImplementedError

    @property
    def region_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.regions)

    @property
    def service_names(self) -> tuple[str, ...]:
        """Every site with edges, controls included (each is a service in the exporter config)."""
        return tuple(s.name for s in self.sites)

    @property
    def operators(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.operator for f in FLEETS))

    def service(self, name: str) -> SiteSpec:
        for s in self.sites:
            if s.name == name:
                return s
        raise ValueError(f"unknown service {name!r} (known: {', '.join(self.service_names)})")

    def _region(self, region: str) -> str:
        if region not in self.region_names:
            raise ValueError(f"unknown region {region!r} (known: {', '.join(self.region_names)})")
        return region

    def url(self, service: str) -> str:
        return f"{self.scheme}://{self.service(service).hostname}:{self.http_port}/"

    def nameserver_addresses(self, *, zone: str | None = None, operator: str | None = None,
                             name: str | None = None) -> list[str]:
        """Addresses (ip) of nameservers selected by zone, operator or name; the parent is "parent"."""
        if sum(x is not None for x in (zone, operator, name)) != 1:
            raise ValueError("select nameservers by exactly one of zone, operator or name")
        ips = self._nameserver_ips()
        if zone is not None:
            return [ips[n] for n in _fleet_serving(zone).names]
        if operator is not None:
            if operator not in self.operators:
                raise ValueError(f"unknown operator {operator!r} (known: {', '.join(self.operators)})")
            return [ips[n] for f in FLEETS if f.operator == operator for n in f.names]
        assert name is not None
        if name in ("parent", PARENT_NAME):
            return [self._parent_ip()]
        if name not in ips:
            raise ValueError(f"unknown nameserver {name!r} (known: {', '.join(ips)})")
        return [ips[name]]


def _fleet_serving(zone: str) -> NameserverFleet:
    """The fleet publishing ``zone`` (a trailing dot is allowed)."""
    origin = zone.rstrip(".")
    for spec in ZONES:
        if spec.origin == origin:
            return next(f for f in FLEETS if f.key == spec.fleet)
    raise ValueError(f"unknown zone {zone!r} (known: {', '.join(z.origin for z in ZONES)})")
