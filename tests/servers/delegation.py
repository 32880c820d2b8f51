"""A real DNS delegation on loopback, for authoritative-check tests.

    d = await start_delegation("example.test", ["ns1", "ns2", "ns3"])
    d.nameserver("ns2").mode = "blackhole"       # or "refuse", "noaa"; .serial = 2 for a lagging copy
    d.set_nameservers(["ns1", "ns4"])            # a new NS set, at the parent (glue) and in the zone
    ...
    await d.stop()

The parent server (root and the ``test`` TLD, from exporter.lab.authoritative) hands out referrals with
glue for the zone; each child nameserver runs on its own 127.77.1.N address; all share one port, because
glue carries no port. A recursive resolver (exporter.lab.recursive, public style with a short timeout)
iterates from the parent, so discovery through resolvers works as it does on the Internet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from exporter.config.model import Resolver
from exporter.lab.authoritative import ParentServer
from exporter.lab.dnsserver import Answer, DNSServer, reply
from exporter.lab.recursive import PUBLIC, RecursiveResolver
from exporter.lab.zones import Zone, build_zone

PARENT_NAME = "parent.test"
PARENT_IP = "127.77.0.1"
RESOLVER_IP = "127.77.2.1"
SERIAL = 2021100401
MODES = ("up", "blackhole", "refuse", "noaa")


def child_ip(n: int) -> str:
    return f"127.77.1.{n}"


class ChildServer:
    """One nameserver of the zone, with its own copy of the zone data and a misbehaviour switch."""

    def __init__(self, name: str, zone: Zone) -> None:
        self.name = name
        self.zone = zone
        self.mode = "up"
        self.queries = 0

    @property
    def serial(self) -> int:
        return self.zone.soa[0].serial

    @serial.setter
    def serial(self, value: int) -> None:
        soa = self.zone.soa
        self.zone.records[(soa.name, dns.rdatatype.SOA)] = dns.rrset.from_rdata(soa.name, soa.ttl,
                                                                                soa[0].replace(serial=value))

    def __call__(self, query: dns.message.Message, transport: str) -> Answer:
        self.queries += 1
        if self.mode == "blackhole":
            return Answer(message=None)
        q = query.question[0]
        if self.mode == "refuse" or not self.zone.contains(q.name):
            return Answer(message=reply(query, dns.rcode.REFUSED, aa=False))
        lookup = self.zone.lookup(q.name, q.rdtype, 0)
        resp = reply(query, dns.rcode.from_text(lookup.rcode), aa=self.mode != "noaa")
        resp.answer.extend(lookup.answer)
        if lookup.soa is not None:
            resp.authority.append(lookup.soa)
        return Answer(message=resp)


@dataclass
class Delegation:
    zone: str
    port: int
    parent: ParentServer
    children: dict[str, ChildServer]  # by short name ("ns1")
    servers: list[DNSServer] = field(default_factory=list)
    resolver_handler: RecursiveResolver | None = None

    @property
    def parent_address(self) -> str:
        return f"{PARENT_IP}:{self.port}"

    @property
    def resolver(self) -> Resolver:
        return Resolver(name=f"{RESOLVER_IP}:{self.port}", host=RESOLVER_IP, port=self.port)

    def nameserver(self, short: str) -> ChildServer:
        return self.children[short]

    def fqdn(self, short: str) -> str:
        return f"{short}.{self.zone}"

    def address(self, short: str) -> str:
        return child_ip(sorted(self.children).index(short) + 1)

    def set_nameservers(self, shorts: Sequence[str]) -> None:
        """Delegate the zone to these nameservers (which must exist) at the parent and in the zone itself."""
        origin = dns.name.from_text(self.zone)
        servers = tuple((dns.name.from_text(self.fqdn(s)), self.address(s)) for s in shorts)
        self.parent.delegations[origin] = servers
        ns = dns.rrset.from_text_list(origin, 3600, "IN", "NS", [n.to_text() for n, _ in servers])
        for child in self.children.values():
            child.zone.records[(origin, dns.rdatatype.NS)] = ns
            child.zone.nameservers = servers
        if self.resolver_handler is not None:
            self.resolver_handler.flush()

    async def stop(self) -> None:
        if self.resolver_handler is not None:
            await self.resolver_handler.close()
        for server in self.servers:
            await server.stop()


async def start_delegation(zone: str, shorts: Sequence[str], *, delegated: Sequence[str] | None = None,
                           records: dict[str, str] | None = None) -> Delegation:
    """Start a parent, one server per name in ``shorts`` (``delegated`` of them in the NS set, default
    all) and a resolver. ``records`` adds A records (name -> address) to the zone."""
    hosts = {PARENT_NAME: PARENT_IP} | {f"{s}.{zone}": child_ip(i + 1) for i, s in enumerate(sorted(shorts))}
    in_set = tuple((f"{s}.{zone}", hosts[f"{s}.{zone}"]) for s in (delegated or shorts))
    children = {}
    for short in shorts:
        data = build_zone(zone, in_set, hosts)
        for name, address in (records or {}).items():
            owner = dns.name.from_text(name)
            data.records[(owner, dns.rdatatype.A)] = dns.rrset.from_text(owner, 300, "IN", "A", address)
        children[short] = ChildServer(short, data)
    tlds = [build_zone(t, ((PARENT_NAME, PARENT_IP),), hosts) for t in (".", "test")]
    parent = ParentServer(tlds, {dns.name.from_text(zone): tuple((dns.name.from_text(n), a) for n, a in in_set)})
    resolver = RecursiveResolver(host=RESOLVER_IP, style=replace(PUBLIC, attempt_timeout=0.3, holddown=0),
                                 speed=1.0, root=((dns.name.from_text(PARENT_NAME), PARENT_IP),))
    handlers = [(PARENT_IP, parent), (RESOLVER_IP, resolver)]
    handlers += [(hosts[f"{s}.{zone}"], children[s]) for s in shorts]
    for _ in range(10):
        port, started = 0, []
        try:
            for host, handler in handlers:
                server = await DNSServer(handler, host=host, port=port).start()
                started.append(server)
                port = server.port
        except OSError:
            for server in started:
                await server.stop()
            continue
        resolver.upstream_port = port
        return Delegation(zone, port, parent, children, started, resolver)
    raise OSError("no port free on every delegation address")
