"""Expand a Config into the unit the scheduler runs and probers receive: one Check per
(service, check, target, region[, resolver]). An authoritative check is one Check per region whose
target is the zone; its nameservers are found at probe time (exporter.discovery).

Everything a probe needs is resolved here, once per (re)load: the module, the region's resolvers, the
effective timeout and interval, and the stable identity used for labels, scheduling offsets and for
keeping counters across reloads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from exporter.config.model import (
    AuthoritativeCheck,
    CheckConfig,
    Config,
    Module,
    Region,
    Resolver,
    Service,
    TwoPath,
    VantagePolicy,
)

# Label names, in exposition order. Every scheduled series carries all of them ("" when not applicable).
IDENTITY_LABELS: tuple[str, ...] = ("service", "provider", "region", "check", "target", "resolver")


@dataclass(frozen=True, slots=True)
class Check:
    """Everything one probe run needs. Frozen: safe to share between the scheduler and a running probe."""

    service: str
    provider: str
    region: str
    check: str  # the check's name within its service
    target: str  # URL / host:port / DNS query name (for dns checks)
    resolver: str  # dns: the resolver asked (its config text); http/tcp: ""
    module: Module
    resolvers: tuple[Resolver, ...]  # resolvers used to resolve hostnames (http/tcp), in order
    dns_server: Resolver | None = None  # dns: the server to query
    query_name: str = ""  # dns: the name to ask for
    hostname: str | None = None  # Host header and TLS SNI override: /probe ?hostname=, two-path pinned probes
    interval: float = 15.0
    timeout: float = 10.0
    control: bool = False
    key: str = field(default="", compare=False)  # stable identity (see identity())
    authoritative: AuthoritativeCheck | None = None  # authoritative checks: zone and nameserver settings
    two_path: TwoPath | None = None  # http: also probe the last known address (path="pinned")
    vantage: VantagePolicy = field(default_factory=VantagePolicy)  # the region's vantage health policy

    @property
    def prober(self) -> str:
        return self.module.prober

    def labels(self) -> tuple[str, ...]:
        return (self.service, self.provider, self.region, self.check, self.target, self.resolver)


def identity(service: str, region: str, check: str, target: str, resolver: str) -> str:
    return "\x1f".join((service, region, check, target, resolver))


def offset_fraction(key: str) -> float:
    """Deterministic position in [0, 1) of a check within its interval: spreads starts, survives restarts."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def expand(config: Config, *, only_region: str | None = None) -> list[Check]:
    """All scheduled checks of a config, optionally restricted to one region (``--region``)."""
    regions = [r for r in config.regions if only_region is None or r.name == only_region]
    out: list[Check] = []
    for service in config.services:
        for cc in service.checks:
            for region in regions:
                if cc.regions and region.name not in cc.regions:
                    continue
                out.extend(_expand_one(service, cc, region))
    return out


def _expand_one(service: Service, cc: CheckConfig, region: Region) -> Iterable[Check]:
    timeout = min(cc.module.timeout or cc.timeout, cc.timeout, cc.interval)
    common = dict(
        service=service.name,
        provider=service.provider,
        region=region.name,
        check=cc.name,
        module=cc.module,
        resolvers=region.resolvers,
        interval=cc.interval,
        timeout=timeout,
        control=cc.control,
        vantage=region.vantage,
    )
    if cc.authoritative is not None:
        zone = cc.authoritative.zone
        key = identity(service.name, region.name, cc.name, zone, "")
        yield Check(target=zone, resolver="", query_name=zone, authoritative=cc.authoritative, key=key,
                    **common)
        return
    if cc.module.prober == "dns":
        qname = cc.query_name or cc.module.dns.query_name
        servers = [parse_dns_server(t) for t in cc.targets] if cc.targets else list(region.resolvers)
        for server in servers:
            key = identity(service.name, region.name, cc.name, qname, server.name)
            yield Check(target=qname, resolver=server.name, dns_server=server, query_name=qname, key=key,
                        **common)
        return
    for target in cc.targets:
        key = identity(service.name, region.name, cc.name, target, "")
        yield Check(target=target, resolver="", key=key, two_path=cc.two_path, **common)


def parse_dns_server(text: str) -> Resolver:
    """Parse a resolver / DNS server address: ``ip``, ``ip:port``, ``[v6]:port``, ``tls://ip[:port]``.

    ``system`` is expanded by the config loader (it needs /etc/resolv.conf); here it is rejected.
    Raises ValueError with a message fit for a config error.
    """
    import ipaddress

    raw = text.strip()
    tls = False
    if raw.startswith("tls://"):
        tls, raw = True, raw[len("tls://"):]
    elif "://" in raw:
        raise ValueError(f"unsupported resolver scheme in {text!r} (use ip, ip:port or tls://ip[:port])")
    default_port = 853 if tls else 53
    host, port = raw, default_port
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            raise ValueError(f"invalid resolver address {text!r}: missing ']'")
        host = raw[1:end]
        rest = raw[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"invalid resolver address {text!r}")
            port = _port(rest[1:], text)
    elif raw.count(":") == 1:
        host, p = raw.split(":")
        port = _port(p, text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"invalid resolver address {text!r}: expected an IP address, not a hostname") from None
    return Resolver(name=text.strip(), host=host, port=port, tls=tls)


def parse_dns_server_or_host(text: str) -> Resolver:
    """Like parse_dns_server, but a hostname (``ns1.example.com[:53]``) is kept for the prober to resolve."""
    try:
        return parse_dns_server(text)
    except ValueError:
        host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
        return Resolver(name=text, host=host or text, port=_port(port, text) if port else 53)


def _port(p: str, text: str) -> int:
    if not p.isdigit() or not 0 < int(p) < 65536:
        raise ValueError(f"invalid port in resolver address {text!r}")
    return int(p)
