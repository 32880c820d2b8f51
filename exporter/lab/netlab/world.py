"""The lab's world built from real software in network namespaces: Knot, Unbound and nginx behind a router.

    with RealWorld(regions=["eu-west", "us-east"], speed=60) as world:   # needs root
        world.set_nameservers("blackhole", operator="meta")    # routes to meta's nameservers dropped
        world.set_edge("instagram", "all", "unavailable")      # nginx answers 503
        world.isolate_region("us-east")                         # the region's uplink goes down
        world.cut_internet("us-east")                           # only the central namespace stays reachable
        world.set_resolver("eu-west", "isp", False)             # one Unbound stops answering (SIGSTOP)
        world.start_exporter("eu-west", config_path)            # an exporter inside eu-west

The control API is the simulated World's (world.py), so a scenario Player drives either. Topology::

    parent ─┐   fleet-<key> (one per fleet) ─┐   edges ─┐
            └──────────── central (router, Prometheus) ──┴── region-<i> (Unbound x2, the exporter)

Every namespace but the router has one link to the router and a single route to 198.18.0.0/15 through it;
the router has one route per namespace /24 (plan.py). Withdrawing a nameserver's route is a ``blackhole``
/32 in the router (a covering prefix still attracts the packets, so clients time out, as on 2021-10-04);
a per-region edge blackhole is a routing-policy rule ``from <region> to <edge> blackhole``; isolating a
region takes its uplink down; cutting a region's internet is a rule ``from <region> blackhole`` in the
router, which still delivers what the region sends to the router's own addresses (Prometheus, remote
write), as a site that lost its transit but kept its private line to the monitoring core.
Everything is removed by :meth:`stop`, at interpreter exit as a fallback, and a later run removes what a
killed run left (netns.cleanup_stale).
"""

from __future__ import annotations

import atexit
import logging
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query

from exporter.lab import catalog as c
from exporter.lab.authoritative import STATES
from exporter.lab.edges import EdgeSetting, edge_setting
from exporter.lab.labconfig import exporter_config
from exporter.lab.netlab import netns, plan, zonefiles
from exporter.lab.netlab.daemons import Daemon, wait_for
from exporter.lab.netlab.knot import KnotServer
from exporter.lab.netlab.nginx import Edges
from exporter.lab.netlab.unbound import UnboundResolver

log = logging.getLogger("exporter.lab.netlab")

NGINX_MODES = frozenset({"healthy", "unavailable", "flapping"})
ROUTED_MODES = {"blackhole": "blackhole", "refused": "unreachable"}  # edge mode -> ip rule type
EDGE_RULE_PRIORITY = 1000
CUT_RULE_PRIORITY = 900  # before the edge rules: a region without internet reaches no edge either
EXPORTER_PORT = 19115
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
AGENT_PORT = 9095
READY_TIMEOUT = 20.0
PROJECT_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True, slots=True)
class Peer:
    """A namespace hanging off the router: its link, the /24 the router sends to it, its addresses."""

    ns: str
    link: int
    prefix: str
    addresses: tuple[str, ...]

    @property
    def router_end(self) -> str:
        return plan.link(self.link)[0].split("/")[0]

    @property
    def far_end(self) -> str:
        return plan.link(self.link)[1].split("/")[0]

    @property
    def router_dev(self) -> str:
        return f"p{self.link}"


class RealWorld(c.CatalogView):
    tls = False
    ca_file = None
    scheme = "http"
    dns_port = 53
    http_port = 80

    def __init__(self, regions: Sequence[c.RegionSpec | str] | None = None, speed: float = 1.0, *,
                 workdir: Path | None = None) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be greater than 0 (got {speed})")
        self.regions = c.region_specs(regions)
        self.speed = float(speed)
        self.sites = c.SITES
        self.zones = zonefiles.build()
        self.netns = netns.Namespaces()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="outage-netlab-"))
        self.peers: dict[str, Peer] = {}
        self.knots: dict[str, KnotServer] = {}  # address -> server
        self.resolvers: dict[tuple[str, str], UnboundResolver] = {}
        self.edges: Edges | None = None
        self.extra: list[Daemon] = []
        self._blackholed: set[str] = set()
        self._edge_settings: dict[tuple[str, str], EdgeSetting] = {}
        self._edge_rules: set[tuple[str, str, str]] = set()  # (region prefix, edge address, rule type)
        self._isolated: set[str] = set()
        self._cut: set[str] = set()
        self._paused: set[tuple[str, str]] = set()  # (region, style) of resolvers stopped with SIGSTOP
        self._warned: set[str] = set()
        self._started = False

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> RealWorld:
        """Build namespaces, links and routes, start every server and wait until each answers."""
        netns.cleanup_stale()
        atexit.register(self.stop)
        self._started = True
        try:
            self._build_network()
            self._start_servers()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("real lab up: %d regions, %d services, namespaces %s*, work directory %s, speed %g",
                 len(self.regions), len(self.sites), self.netns.prefix, self.workdir, self.speed)
        return self

    def stop(self) -> None:
        """Stop every process, delete every namespace of this run and the work directory (idempotent)."""
        if not self._started:
            return
        self._started = False
        for key in list(self._paused):  # a stopped process would ignore SIGTERM
            self.set_resolver(*key, True)
        daemons = [*self.extra, *self.resolvers.values(), *self.knots.values()]
        if self.edges is not None:
            daemons.append(self.edges)
        for d in daemons:
            try:
                d.stop()
            except Exception:  # keep tearing down
                log.exception("stopping %s", getattr(d, "name", d))
        self.netns.delete_all()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        atexit.unregister(self.stop)

    def __enter__(self) -> RealWorld:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> RealWorld:
        import asyncio

        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        import asyncio

        await asyncio.to_thread(self.stop)

    # --- construction --------------------------------------------------------------------------------

    @property
    def central(self) -> str:
        return self.netns.full("central")

    def region_ns(self, region: str) -> str:
        return self.peers[f"region-{self._region(region)}"].ns

    def _build_network(self) -> None:
        n = self.netns
        n.create("central")
        n.sysctl(self.central, "net.ipv4.ip_forward", "1")
        n.ip(self.central, "addr", "add", f"{plan.CENTRAL}/32", "dev", "lo")
        specs: list[tuple[str, str, tuple[str, ...]]] = [("parent", plan.PARENT_PREFIX, (plan.PARENT,))]
        for fi, fleet in enumerate(c.FLEETS):
            specs.append((f"fleet-{fleet.key}", plan.fleet_prefix(fi),
                          tuple(plan.nameserver(fi, k) for k in range(len(fleet.names)))))
        specs.append(("edges", plan.EDGE_PREFIX, tuple(plan.edge(si) for si in range(len(self.sites)))))
        for ri, region in enumerate(self.regions):
            specs.append((f"region-{region.name}", plan.region_prefix(ri),
                          (*(plan.resolver(ri, s) for s in plan.RESOLVER_STYLES), plan.exporter_host(ri))))
        for link, (short, prefix, addresses) in enumerate(specs, start=1):
            peer = Peer(n.create(short), link, prefix, addresses)
            self.peers[short] = peer
            self._link(peer)

    def _link(self, peer: Peer) -> None:
        n = self.netns
        router_end, far_end = plan.link(peer.link)
        n.veth(self.central, peer.router_dev, peer.ns, "uplink")
        n.ip(self.central, "addr", "add", router_end, "dev", peer.router_dev)
        n.ip(peer.ns, "addr", "add", far_end, "dev", "uplink")
        for address in peer.addresses:
            n.ip(peer.ns, "addr", "add", f"{address}/32", "dev", "lo")
        self._route(peer)

    def _route(self, peer: Peer) -> None:
        """(Re)install the routes between the router and ``peer`` (after a link came back up)."""
        n = self.netns
        n.ip(self.central, "route", "replace", peer.prefix, "via", peer.far_end, "dev", peer.router_dev)
        n.ip(peer.ns, "route", "replace", str(plan.LAB_NET), "via", peer.router_end, "dev", "uplink",
             "src", peer.addresses[0])

    def _start_servers(self) -> None:
        n, wd = self.netns, self.workdir
        self.knots[plan.PARENT] = KnotServer("parent", plan.PARENT, self.zones.parent, self.speed, n,
                                             self.peers["parent"].ns, wd / "parent")
        for fleet in c.FLEETS:
            zones = [z for origin, z in self.zones.children.items() if self.zones.zone_fleet[origin] == fleet.key]
            for name in fleet.names:
                ip = self.zones.ns_ip[name]
                self.knots[ip] = KnotServer(name, ip, zones, self.speed, n, self.peers[f"fleet-{fleet.key}"].ns,
                                            wd / "ns" / name)
        for ri, region in enumerate(self.regions):
            for style in plan.RESOLVER_STYLES:
                self.resolvers[(region.name, style)] = UnboundResolver(
                    f"{region.name}/{style}", plan.resolver(ri, style), n, self.region_ns(region.name),
                    wd / "unbound" / f"{region.name}-{style}")
        self.edges = Edges(self.sites, self.regions, n, self.peers["edges"].ns, wd / "nginx")
        for server in [*self.knots.values(), *self.resolvers.values(), self.edges]:
            server.start()

    def _wait_ready(self) -> None:
        daemons = [k.daemon for k in self.knots.values()] + [r.daemon for r in self.resolvers.values()]
        assert self.edges is not None
        daemons.append(self.edges.daemon)
        knots = list(self.knots)
        wait_for(lambda: netns.run_in(self.central, lambda: _all_answer(knots)), READY_TIMEOUT,
                 "knotd servers", daemons)
        for region in self.region_names:
            ns = self.region_ns(region)
            mine = [u.address for (r, _), u in self.resolvers.items() if r == region]
            wait_for(lambda ns=ns, mine=mine: netns.run_in(ns, lambda: _all_answer(mine, recursive=True)),
                     READY_TIMEOUT, f"unbound in {region}", daemons)
        self.edges.settle(READY_TIMEOUT)

    # --- extra processes (exporters, Prometheus) -----------------------------------------------------

    def spawn(self, name: str, ns: str, argv: Sequence[str]) -> Daemon:
        """Run a program inside namespace ``ns`` until the world stops; its log is in the work directory."""
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        daemon = Daemon(name, self.netns, ns, argv, self.workdir / "logs" / f"{name}.log", cwd=PROJECT_ROOT)
        self.extra.append(daemon.start())
        return daemon

    def start_exporter(self, region: str, config: Path, *, port: int = EXPORTER_PORT,
                       args: Sequence[str] = ()) -> Daemon:
        """The exporter of ``region``, inside the region's namespace, listening on its probe host."""
        ri = self.region_names.index(self._region(region))
        argv = [sys.executable, "-m", "exporter", "--config.file", str(config), "--region", region,
                "--web.listen-address", f"{plan.exporter_host(ri)}:{port}", *args]
        daemon = self.spawn(f"exporter-{region}", self.region_ns(region), argv)
        wait_for(lambda: self._answers(self.central, plan.exporter_host(ri), port, "/-/ready"), READY_TIMEOUT,
                 f"exporter in {region}", [daemon])
        return daemon

    def exporter_address(self, region: str, port: int = EXPORTER_PORT) -> str:
        return f"{plan.exporter_host(self.region_names.index(self._region(region)))}:{port}"

    def start_prometheus(self, config: Path, *, port: int = PROMETHEUS_PORT, args: Sequence[str] = ()) -> Daemon:
        """Prometheus in the central namespace (scrapes cross the lab network, so isolation cuts them)."""
        argv = [_stack_binary("prometheus"), f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'prom-data'}", f"--web.listen-address={plan.CENTRAL}:{port}",
                "--log.level=warn", *args]
        daemon = self.spawn("prometheus", self.central, argv)
        wait_for(lambda: self._answers(self.central, plan.CENTRAL, port, "/-/ready"), READY_TIMEOUT * 2,
                 "prometheus", [daemon])
        return daemon

    def start_alertmanager(self, config: Path, *, port: int = ALERTMANAGER_PORT) -> Daemon:
        """Alertmanager next to Prometheus in the central namespace (one node, no cluster)."""
        argv = [_stack_binary("alertmanager"), f"--config.file={config}",
                f"--storage.path={self.workdir / 'am-data'}", f"--web.listen-address={plan.CENTRAL}:{port}",
                "--cluster.listen-address=", "--log.level=warn"]
        daemon = self.spawn("alertmanager", self.central, argv)
        wait_for(lambda: self._answers(self.central, plan.CENTRAL, port, "/-/ready"), READY_TIMEOUT * 2,
                 "alertmanager", [daemon])
        return daemon

    def start_agent(self, region: str, config: Path, *, port: int = AGENT_PORT) -> Daemon:
        """Prometheus in agent mode inside ``region``: scrapes there, buffers in its WAL, remote-writes out."""
        ri = self.region_names.index(self._region(region))
        argv = [_stack_binary("prometheus"), "--enable-feature=agent", f"--config.file={config}",
                f"--storage.agent.path={self.workdir / f'agent-{region}'}",
                f"--web.listen-address={plan.exporter_host(ri)}:{port}", "--log.level=warn"]
        daemon = self.spawn(f"agent-{region}", self.region_ns(region), argv)
        wait_for(lambda: self._answers(self.region_ns(region), plan.exporter_host(ri), port, "/-/ready"),
                 READY_TIMEOUT * 2, f"agent in {region}", [daemon])
        return daemon

    @property
    def prometheus_address(self) -> str:
        return f"{plan.CENTRAL}:{PROMETHEUS_PORT}"

    @property
    def alertmanager_address(self) -> str:
        return f"{plan.CENTRAL}:{ALERTMANAGER_PORT}"

    def get(self, address: str, path: str = "/", *, ns: str | None = None, timeout: float = 5.0) -> tuple[int, str]:
        """HTTP GET of ``http://address/path`` from the central namespace (or ``ns``)."""
        host, port = address.rsplit(":", 1)
        return netns.http_get(ns or self.central, host, int(port), path, timeout)

    def _answers(self, ns: str, host: str, port: int, path: str) -> bool:
        try:
            return netns.http_get(ns, host, port, path, timeout=1.0)[0] == 200
        except OSError:
            return False

    # --- addresses (the simulated World's API) -------------------------------------------------------

    @property
    def parent_address(self) -> str:
        return f"{plan.PARENT}:{self.dns_port}"

    def resolver_addresses(self, region: str) -> list[str]:
        ri = self.region_names.index(self._region(region))
        return [f"{plan.resolver(ri, s)}:{self.dns_port}" for s in plan.RESOLVER_STYLES]

    def _nameserver_ips(self) -> Mapping[str, str]:
        return self.zones.ns_ip

    def _parent_ip(self) -> str:
        return plan.PARENT

    def exporter_config(self) -> dict:
        return exporter_config(self)  # type: ignore[arg-type]

    # --- control -------------------------------------------------------------------------------------

    def set_nameserver(self, address: str, state: str) -> None:
        """``up``, ``blackhole`` (a /32 blackhole route in the router) or ``refuse`` (Knot without zones)."""
        if state not in STATES:
            raise ValueError(f"unknown nameserver state {state!r} (expected one of {', '.join(STATES)})")
        ip = self.nameserver_addresses(name=address)[0] if address in self.zones.ns_ip or address == "parent" \
            else address.split(":")[0]
        if ip not in self.knots:
            raise ValueError(f"unknown nameserver {address!r}")
        if self.nameserver_state(ip) != state:
            log.info("nameserver %s -> %s", address, state)
        if state == "blackhole" and ip not in self._blackholed:
            self.netns.ip(self.central, "route", "replace", "blackhole", f"{ip}/32")
            self._blackholed.add(ip)
        elif state != "blackhole" and ip in self._blackholed:
            self.netns.ip(self.central, "route", "del", "blackhole", f"{ip}/32")
            self._blackholed.discard(ip)
        self.knots[ip].set_refusing(state == "refuse")

    def set_nameservers(self, state: str, *, zone: str | None = None, operator: str | None = None,
                        name: str | None = None) -> list[str]:
        addresses = self.nameserver_addresses(zone=zone, operator=operator, name=name)
        for ip in addresses:
            self.set_nameserver(ip, state)
        return addresses

    def nameserver_state(self, address: str) -> str:
        ip = address.split(":")[0]
        if ip in self._blackholed:
            return "blackhole"
        return "refuse" if self.knots[ip].refusing else "up"

    def set_edge(self, service: str, region: str, mode: str, **params: object) -> None:
        """healthy / unavailable / flapping by nginx; blackhole (and refused, as ICMP unreachable) by routing.

        latency and jitter are not reproduced (the answer comes at once); certificate modes need HTTPS,
        which the real backend does not serve.
        """
        setting = edge_setting(mode, **params)
        si = self.service_names.index(self.service(service).name)
        regions = self.region_names if region == "all" else (self._region(region),)
        self._warn_unreproduced(setting)
        for r in regions:
            self._edge_settings[(service, r)] = setting
            self._set_edge_rule(plan.region_prefix(self.region_names.index(r)), plan.edge(si),
                                ROUTED_MODES.get(setting.mode))
        assert self.edges is not None
        self.edges.apply({k: v for k, v in self._edge_settings.items() if v.mode in NGINX_MODES})
        log.info("edge %s/%s -> %s %s", service, region, mode, setting.params() or "")

    def _warn_unreproduced(self, setting: EdgeSetting) -> None:
        what = None
        if setting.mode in ("latency", "slow") or setting.latency_ms or setting.jitter_ms:
            what = "latency"
        elif setting.mode == "refused":
            what = "refused"
        if what and what not in self._warned:
            self._warned.add(what)
            log.warning("the real backend approximates edge %s: %s", what,
                        "answers come without delay" if what == "latency"
                        else "an ICMP unreachable rule stands for a refused connection")

    def _set_edge_rule(self, source: str, edge: str, kind: str | None) -> None:
        for rule in [r for r in self._edge_rules if r[0] == source and r[1] == edge and r[2] != kind]:
            self.netns.ip(self.central, "rule", "del", "from", rule[0], "to", f"{rule[1]}/32", rule[2],
                          "priority", str(EDGE_RULE_PRIORITY))
            self._edge_rules.discard(rule)
        if kind is not None and (source, edge, kind) not in self._edge_rules:
            self.netns.ip(self.central, "rule", "add", "from", source, "to", f"{edge}/32", kind,
                          "priority", str(EDGE_RULE_PRIORITY))
            self._edge_rules.add((source, edge, kind))

    def edge_mode(self, service: str, region: str) -> str:
        return self._edge_settings.get((service, region), EdgeSetting()).mode

    def isolate_region(self, region: str, on: bool = True) -> None:
        """Take the region's uplink down in the router (or bring it back with its routes)."""
        peer = self.peers[f"region-{self._region(region)}"]
        if on == (region in self._isolated):
            return
        self.netns.ip(self.central, "link", "set", peer.router_dev, "down" if on else "up")
        if on:
            self._isolated.add(region)
        else:
            self._isolated.discard(region)
            self._route(peer)
        log.info("region %s %s", region, "isolated" if on else "reconnected")

    def isolated_regions(self) -> list[str]:
        return [r for r in self.region_names if r in self._isolated]

    def cut_internet(self, region: str, on: bool = True) -> None:
        """Drop in the router whatever the region sends, except to the router's own addresses.

        Probes, resolver upstream queries and edge traffic time out, while the region still reaches the
        central namespace (remote write to Prometheus) and Prometheus still reaches the region.
        """
        peer = self.peers[f"region-{self._region(region)}"]
        if on == (region in self._cut):
            return
        self.netns.ip(self.central, "rule", "add" if on else "del", "from", peer.prefix, "blackhole",
                      "priority", str(CUT_RULE_PRIORITY))
        (self._cut.add if on else self._cut.discard)(region)
        log.info("region %s %s", region, "lost its internet" if on else "has its internet back")

    def internet_cut_regions(self) -> list[str]:
        return [r for r in self.region_names if r in self._cut]

    def set_resolver(self, region: str, style: str, up: bool) -> None:
        """Stop one Unbound of ``region`` from answering (SIGSTOP: queries time out) or let it go on."""
        key = (self._region(region), style)
        if key not in self.resolvers:
            raise ValueError(f"unknown resolver style {style!r} (known: {', '.join(plan.RESOLVER_STYLES)})")
        if up == (key not in self._paused):
            return
        self.resolvers[key].daemon.signal(signal.SIGCONT if up else signal.SIGSTOP)
        (self._paused.discard if up else self._paused.add)(key)
        log.info("resolver %s/%s %s", region, style, "answers again" if up else "stopped answering")

    def reset(self) -> None:
        """Every nameserver up, every edge healthy, no region isolated."""
        for ip in list(self.knots):
            if self.nameserver_state(ip) != "up":
                self.set_nameserver(ip, "up")
        for region in self.isolated_regions():
            self.isolate_region(region, False)
        for region in self.internet_cut_regions():
            self.cut_internet(region, False)
        for key in list(self._paused):
            self.set_resolver(*key, True)
        for source, edge, kind in list(self._edge_rules):
            self.netns.ip(self.central, "rule", "del", "from", source, "to", f"{edge}/32", kind,
                          "priority", str(EDGE_RULE_PRIORITY))
        self._edge_rules.clear()
        self._edge_settings.clear()
        for resolver in self.resolvers.values():
            if resolver.serve_expired:
                resolver.set_serve_expired(0.0)
        if self.edges is not None:
            self.edges.apply({})

    def set_serve_stale(self, region: str, seconds: float) -> None:
        """Unbound's ``serve-expired`` in a region (or ``"all"``): ``seconds`` of story time past the TTL."""
        regions = self.region_names if region == "all" else (self._region(region),)
        for (r, _), resolver in self.resolvers.items():
            if r in regions:
                resolver.set_serve_expired(seconds / self.speed if seconds > 0 else 0.0)
        log.info("resolvers of %s serve stale answers for %gs", region, seconds)

    def flush_caches(self) -> None:
        for resolver in self.resolvers.values():
            resolver.flush()

    async def settle(self) -> None:
        import asyncio

        if self.edges is not None:
            await asyncio.to_thread(self.edges.settle)

    def snapshot(self) -> dict[str, object]:
        return {
            "nameservers": {name: self.nameserver_state(ip) for name, ip in self.zones.ns_ip.items()},
            "parent": self.nameserver_state(plan.PARENT),
            "edges": {f"{s}/{r}": self.edge_mode(s, r) for s in self.service_names for r in self.region_names},
            "isolated": self.isolated_regions(),
            "internet_cut": self.internet_cut_regions(),
            "resolvers_down": sorted(f"{r}/{s}" for r, s in self._paused),
        }

    # --- checks --------------------------------------------------------------------------------------

    def routing_report(self) -> dict[str, dict[str, list[str]]]:
        """Per namespace: its IPv4/IPv6 routes and addresses (to verify nothing can leave the lab)."""
        out = {}
        for ns in self.netns.created:
            out[ns] = {
                "routes": self.netns.ip(ns, "-4", "route", "show", "table", "all").stdout.splitlines()
                + self.netns.ip(ns, "-6", "route", "show", "table", "all").stdout.splitlines(),
                "addresses": self.netns.ip(ns, "-o", "addr", "show").stdout.splitlines(),
            }
        return out


def _stack_binary(kind: str) -> str:
    from exporter.lab.stack import BINARIES, find_binary

    path = find_binary(kind)
    if path is None:
        raise netns.NetlabError(f"{kind} is not installed (Debian: apt-get install {BINARIES[kind][0]})")
    return path


def _all_answer(servers: list[str], *, recursive: bool = False) -> bool:
    """Whether every server answers a query for the root SOA (a quick liveness probe)."""
    for server in servers:
        query = dns.message.make_query(".", "SOA")
        if not recursive:
            query.flags &= ~dns.flags.RD
        try:
            dns.query.udp(query, server, timeout=0.5)
        except (OSError, dns.exception.DNSException):
            return False
    return True
