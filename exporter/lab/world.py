"""The lab's simulated internet: parent, authoritative nameservers, per-region resolvers and edges.

    world = World(regions=["eu-west", "us-east"], speed=30)
    await world.start()
    world.set_nameservers("blackhole", operator="meta")   # Meta's DNS prefixes withdrawn
    world.set_edge("instagram", "all", "unavailable")     # edges lost their backends
    config = world.exporter_config()                      # probe it with the exporter
    await world.stop()

Every server has its own loopback address (addressing.py) so each can fail alone. Resolvers of region R
query the authoritative servers from R's resolver address, and the zones answer each region with its
own edge address (zones.py), so black-holing a region's addresses isolates that vantage completely.
``speed`` compresses story time: TTLs and resolver memories last ``1/speed`` as long; network timeouts
stay in wall seconds because they race the probes' own timeouts.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import dns.name

from exporter.lab import addressing as a
from exporter.lab import catalog as c
from exporter.lab import certs as certs_mod
from exporter.lab.authoritative import STATES, ParentServer, ZoneServer
from exporter.lab.dnsserver import DNSServer
from exporter.lab.edges import Edge, edge_setting
from exporter.lab.labconfig import exporter_config
from exporter.lab.recursive import STYLES, RecursiveResolver, Style
from exporter.lab.ris import RisEmulator
from exporter.lab.statuspage import StatusPages
from exporter.lab.zones import Zone, add_site, build_zone

log = logging.getLogger("exporter.lab.world")

PARENT_NAME = c.PARENT_NAME
_BIND_ATTEMPTS = 10


class World(c.CatalogView):
    def __init__(self, regions: Sequence[c.RegionSpec | str] | None = None, speed: float = 1.0, *,
                 tls: bool | None = None, seed: int = 0, dns_port: int = 0, http_port: int = 0,
                 styles: Mapping[str, Style] | None = None) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be greater than 0 (got {speed})")
        self.regions = c.region_specs(regions)
        self.speed = float(speed)
        self.sites = c.SITES
        self.tls = certs_mod.available() if tls is None else tls
        if self.tls and not certs_mod.available():
            raise RuntimeError("HTTPS edges need the openssl command on PATH")
        self.seed = seed
        self.dns_port = dns_port
        self.http_port = http_port
        self._styles = {**STYLES, **(styles or {})}
        self._ca: certs_mod.LabCA | None = None
        self._leaves: dict[tuple[str, str, float], tuple[Path, Path]] = {}
        self._dns: list[DNSServer] = []
        self._build()

    # --- construction --------------------------------------------------------------------------------

    def _build(self) -> None:
        self._ns_ip: dict[str, str] = {}  # nameserver name -> address
        self._fleet_of: dict[str, c.NameserverFleet] = {}  # address -> fleet
        for fi, fleet in enumerate(c.FLEETS):
            for n, name in enumerate(fleet.names):
                ip = a.nameserver(fi, n)
                self._ns_ip[name] = ip
                self._fleet_of[ip] = fleet
        hosts = {**self._ns_ip, PARENT_NAME: a.PARENT}
        fleets = {f.key: f for f in c.FLEETS}
        self.zones: dict[str, Zone] = {}
        self._zone_fleet: dict[str, str] = {}
        for spec in c.ZONES:
            servers = tuple((n, self._ns_ip[n]) for n in fleets[spec.fleet].names)
            self.zones[spec.origin] = build_zone(spec.origin, servers, hosts)
            self._zone_fleet[spec.origin] = spec.fleet
        for si, site in enumerate(self.sites):
            add_site(self.zones[site.zone], tuple(a.edge(ri, si) for ri in range(len(self.regions))))
        self.parent = ParentServer(self._tld_zones(hosts), {
            z.origin: z.nameservers for z in self.zones.values()})
        self.zone_servers = {ip: ZoneServer(name, self._zones_of(ip), a.region_of_resolver)
                             for name, ip in self._ns_ip.items()}
        root = ((dns.name.from_text(PARENT_NAME), a.PARENT),)
        self.resolvers: dict[tuple[str, str], RecursiveResolver] = {
            (r.name, style): RecursiveResolver(host=a.resolver(ri, style), style=self._styles[style],
                                               speed=self.speed, root=root)
            for ri, r in enumerate(self.regions) for style in a.RESOLVER_STYLES}
        self.edges: dict[tuple[str, str], Edge] = {}
        self.ris = RisEmulator()  # the routing feed: every fleet's /24 announced by every emulated peer
        self.status_pages = StatusPages({op: {s.name.title(): s.name for s in self.sites if s.provider == op}
                                         for op in dict.fromkeys(s.provider for s in self.sites if not s.control)})

    def _tld_zones(self, hosts: dict[str, str]) -> list[Zone]:
        tlds = {"."} | {origin.rsplit(".", 1)[-1] for origin in self.zones}
        return [build_zone(t, ((PARENT_NAME, a.PARENT),), hosts) for t in sorted(tlds)]

    def _zones_of(self, ip: str) -> list[Zone]:
        fleet = self._fleet_of[ip].key
        return [z for origin, z in self.zones.items() if self._zone_fleet[origin] == fleet]

    # --- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> World:
        """Bind and start every server. Edge and nameserver controls apply to a started world."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        log.info("lab world up: %d regions, %d services, DNS on port %d, %s edges on port %d, speed %g",
                 len(self.regions), len(self.sites), self.dns_port, self.scheme, self.http_port, self.speed)
        return self

    async def _start(self) -> None:
        handlers = [(a.PARENT, self.parent), *self.zone_servers.items()]
        handlers += [(r.host, r) for r in self.resolvers.values()]
        await self._start_dns(handlers)
        for r in self.resolvers.values():
            r.upstream_port = self.dns_port
        if self.tls:
            self._ca = certs_mod.LabCA()
        for si, site in enumerate(self.sites):
            for ri, region in enumerate(self.regions):
                self.edges[(site.name, region.name)] = Edge(
                    site, region.name, a.edge(ri, si), certs=self._cert if self.tls else None,
                    seed=self.seed)
        self._bind_edges()
        for edge in self.edges.values():
            await edge.start()
        await self.ris.start()
        await self.status_pages.start()
        self.ris.announce(self.route_prefixes())

    async def stop(self) -> None:
        await self.ris.stop()
        await self.status_pages.stop()
        for resolver in self.resolvers.values():
            await resolver.close()
        for edge in self.edges.values():
            await edge.stop()
        for server in self._dns:
            await server.stop()
        self._dns.clear()
        if self._ca is not None:
            self._ca.cleanup()
            self._ca = None

    async def __aenter__(self) -> World:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _start_dns(self, handlers: list[tuple[str, object]]) -> None:
        """Start every DNS server on one shared port (see addressing.py), retrying on a clash."""
        for _ in range(_BIND_ATTEMPTS):
            port, started = self.dns_port, []
            try:
                for host, handler in handlers:
                    server = await DNSServer(handler, host=host, port=port).start()  # type: ignore[arg-type]
                    started.append(server)
                    port = server.port
            except OSError:
                for server in started:
                    await server.stop()
                if self.dns_port:
                    raise
                continue
            self._dns, self.dns_port = started, port
            return
        raise OSError("could not find a port free on every lab DNS address")

    def _bind_edges(self) -> None:
        for _ in range(_BIND_ATTEMPTS):
            port, bound = self.http_port, []
            try:
                for edge in self.edges.values():
                    edge.bind(port)
                    bound.append(edge)
                    port = edge.port
            except OSError:
                for edge in bound:
                    edge.unbind()
                if self.http_port:
                    raise
                continue
            self.http_port = port
            return
        raise OSError("could not find a port free on every lab edge address")

    def _cert(self, site: c.SiteSpec, kind: str, days: float) -> tuple[Path, Path]:
        key = (site.name, kind, days)
        if key not in self._leaves:
            assert self._ca is not None
            self._leaves[key] = self._ca.leaf(
                (site.hostname, site.zone), days_left=days if kind == "expiring" else None,
                expired=kind == "expired")
        return self._leaves[key]

    # --- addresses -----------------------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def parent_address(self) -> str:
        return f"{a.PARENT}:{self.dns_port}"

    @property
    def ca_file(self) -> str | None:
        return str(self._ca.ca_file) if self._ca is not None else None

    def client_ssl_context(self) -> ssl.SSLContext | None:
        """A client context trusting the lab CA (None without TLS)."""
        return self._ca.client_context() if self._ca is not None else None

    def nameservers(self, zone: str) -> list[tuple[str, str]]:
        """(name, "ip:port") of the nameservers publishing ``zone``: targets for authoritative checks."""
        z = self._zone(zone)
        return [(n.to_text(omit_final_dot=True), f"{ip}:{self.dns_port}") for n, ip in z.nameservers]

    def resolver_addresses(self, region: str) -> list[str]:
        """The region's resolvers as "ip:port", public first."""
        self._region(region)
        return [f"{self.resolvers[(region, s)].host}:{self.dns_port}" for s in a.RESOLVER_STYLES]

    def resolver(self, region: str, style: str) -> RecursiveResolver:
        return self.resolvers[(self._region(region), style)]

    def edge(self, service: str, region: str) -> Edge:
        return self.edges[(self.service(service).name, self._region(region))]

    def _nameserver_ips(self) -> Mapping[str, str]:
        return self._ns_ip

    def _parent_ip(self) -> str:
        return a.PARENT

    # --- control -------------------------------------------------------------------------------------

    def set_nameserver(self, address: str, state: str) -> None:
        """Set one nameserver's reachability: ``up``, ``blackhole`` or ``refuse``.

        ``address`` is "ip", "ip:port", a nameserver name or "parent".
        """
        server = self._dns_server(address)
        if server.state != state:
            log.info("nameserver %s -> %s", address, state)
        server.state = state

    def set_nameservers(self, state: str, *, zone: str | None = None, operator: str | None = None,
                        name: str | None = None) -> list[str]:
        if state not in STATES:
            raise ValueError(f"unknown nameserver state {state!r} (expected one of {', '.join(STATES)})")
        addresses = self.nameserver_addresses(zone=zone, operator=operator, name=name)
        for ip in addresses:
            self.set_nameserver(ip, state)
        return addresses

    def nameserver_state(self, address: str) -> str:
        return self._dns_server(address).state

    def set_edge(self, service: str, region: str, mode: str, **params: object) -> None:
        """Set the mode of a service's edge in one region or ``"all"``; see edges.py for modes/params."""
        setting = edge_setting(mode, **params)
        self.service(service)
        regions = self.region_names if region == "all" else (self._region(region),)
        for r in regions:
            self.edges[(service, r)].apply(setting)
        log.info("edge %s/%s -> %s %s", service, region, mode, setting.params() or "")

    def isolate_region(self, region: str, on: bool = True) -> None:
        """Cut a vantage off: its resolvers and every edge it uses stop answering (time out)."""
        self._region(region)
        for (r, _), resolver in self.resolvers.items():
            if r == region:
                resolver.isolated = on
        for (_, r), edge in self.edges.items():
            if r == region:
                edge.set_isolated(on)
        log.info("region %s %s", region, "isolated" if on else "reconnected")

    def set_serve_stale(self, region: str, seconds: float) -> None:
        """Let a region's resolvers (or ``"all"``) serve answers up to ``seconds`` story seconds stale."""
        regions = self.region_names if region == "all" else (self._region(region),)
        for (r, _), resolver in self.resolvers.items():
            if r in regions:
                resolver.style = replace(resolver.style, serve_stale=seconds)
        log.info("resolvers of %s serve stale answers for %gs", region, seconds)

    def route_prefixes(self, operator: str | None = None) -> list[str]:
        """The BGP prefixes (one /24 per fleet, see addressing.py) of ``operator``'s nameservers, or all."""
        return [f"{a.nameserver(fi, 0).rsplit('.', 1)[0]}.0/24" for fi, f in enumerate(c.FLEETS)
                if operator is None or f.operator == operator]

    def set_routes(self, state: str, *, operator: str, peers: int | None = None) -> list[str]:
        """``withdrawn`` or ``announced``: what the routing feed's peers (``peers`` of them) say about the
        prefixes of ``operator``'s nameservers. Reachability is set apart (``set_nameservers``)."""
        if operator not in self.operators:
            raise ValueError(f"unknown operator {operator!r} (known: {', '.join(self.operators)})")
        prefixes = self.route_prefixes(operator)
        if state == "withdrawn":
            self.ris.withdraw(prefixes, peers)
        elif state == "announced":
            self.ris.announce(prefixes, peers)
        else:
            raise ValueError(f"unknown route state {state!r} (expected withdrawn or announced)")
        log.info("routes of %s -> %s%s", operator, state, f" by {peers} peers" if peers is not None else "")
        return prefixes

    def isolated_regions(self) -> list[str]:
        return [r for r in self.region_names if self.resolvers[(r, "public")].isolated]

    def reset(self) -> None:
        """Back to a healthy internet: every nameserver up, every edge healthy, no isolation."""
        self.parent.state = "up"
        for server in self.zone_servers.values():
            server.state = "up"
        for region in self.region_names:
            if region in self.isolated_regions():
                self.isolate_region(region, False)
        healthy = edge_setting("healthy")
        for edge in self.edges.values():
            if edge.setting != healthy:
                edge.apply(healthy)
        for resolver in self.resolvers.values():
            resolver.style = self._styles[resolver.style.name]
        self.ris.set_feed("up")
        self.ris.announce(self.route_prefixes())
        self.status_pages.reset()

    def flush_caches(self) -> None:
        for resolver in self.resolvers.values():
            resolver.flush()

    async def settle(self) -> None:
        """Wait until every edge listens the way its latest mode says."""
        for edge in self.edges.values():
            await edge.settle()

    def snapshot(self) -> dict[str, object]:
        """Plain-data view of the controllable state (for logs, tests and the demo)."""
        return {
            "nameservers": {name: self.zone_servers[ip].state for name, ip in self._ns_ip.items()},
            "parent": self.parent.state,
            "edges": {f"{s}/{r}": e.setting.mode for (s, r), e in self.edges.items()},
            "isolated": self.isolated_regions(),
        }

    def exporter_config(self) -> dict:
        """The exporter configuration (as loaded from YAML) that probes this world."""
        return exporter_config(self)

    # --- helpers -------------------------------------------------------------------------------------

    def _zone(self, zone: str) -> Zone:
        z = self.zones.get(zone.rstrip("."))
        if z is None:
            raise ValueError(f"unknown zone {zone!r} (known: {', '.join(self.zones)})")
        return z

    def _dns_server(self, address: str) -> ParentServer | ZoneServer:
        if address in ("parent", PARENT_NAME):
            return self.parent
        ip = self._ns_ip.get(address.rstrip("."), address.split(":")[0])
        if ip == a.PARENT:
            return self.parent
        if ip not in self.zone_servers:
            raise ValueError(f"unknown nameserver {address!r}")
        return self.zone_servers[ip]
