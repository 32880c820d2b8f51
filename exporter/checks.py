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
from dataclasses import dataclass, field, replace

from exporter.config.addresses import parse_dns_server
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


# --- sharding: N replicas of one region split its checks -------------------------------------------------

@dataclass(frozen=True, slots=True)
class Shard:
    """This process's share of the checks: shard ``index`` of ``count``, 1-based (``--shard 2/3``)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"invalid shard {self.index}/{self.count}: the number of shards must be at least 1")
        if not 1 <= self.index <= self.count:
            raise ValueError(f"invalid shard {self.index}/{self.count}: shards are numbered from 1, "
                             f"so i must be between 1 and {self.count}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, check: Check) -> bool:
        """Whether this shard runs ``check``. Controls run on every shard: each replica judges its own
        vantage from them, and a shard without controls would take its failures at face value."""
        return check.control or shard_of(check.key, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """``"i/N"`` (1-based: ``1/3``, ``2/3``, ``3/3``) -> Shard; ValueError with a message fit for the CLI."""
    index, sep, count = text.strip().partition("/")
    if not sep or not index.isdigit() or not count.isdigit():
        raise ValueError(f"invalid shard {text!r}: expected i/N, e.g. 1/3 (shards are numbered from 1)")
    return Shard(int(index), int(count))


def shard_of(key: str, count: int, *, salt: bytes = b"shard") -> int:
    """The 1-based shard of a check identity among ``count`` shards: a jump consistent hash.

    Stable across processes and restarts (no Python ``hash()``), even in expectation, and going from N to
    N+1 shards moves only about 1/(N+1) of the checks, so a resize does not reshuffle every check's
    schedule and counters. A different ``salt`` gives an independent split (``worker_of``).
    """
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8, person=salt).digest(), "big")
    bucket, j = -1, 0
    while j < count:
        bucket = j
        h = (h * 2862933555777941757 + 1) % 2**64
        j = int((bucket + 1) * (2**31 / ((h >> 33) + 1)))
    return bucket + 1


def worker_of(key: str, count: int) -> int:
    """The 1-based worker process (``--workers``) of a check: like ``shard_of`` but independent of it, so
    the workers of one ``--shard`` replica get even shares, and every check (controls too) runs once."""
    return shard_of(key, count, salt=b"worker")


def select_shard(checks: Iterable[Check], shard: Shard | None) -> list[Check]:
    """The checks ``shard`` runs (all of them without sharding), in their original order."""
    if shard is None:
        return list(checks)
    return [c for c in checks if shard.owns(c)]


# --- region from the agent ------------------------------------------------------------------------------

def without_region_label(checks: Iterable[Check]) -> list[Check]:
    """The checks with an empty ``region`` label value, which Prometheus treats as no label at all.

    For an exporter that probes one region and lets the collector name it (an agent's external label or a
    target label): every series it exposes (probe results, vantage, nameservers) then carries no region of
    its own. The identity key keeps the real region, so counters and schedules do not move.
    """
    return [replace(c, region="") for c in checks]
