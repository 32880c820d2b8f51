"""Typed, validated configuration. The loader (loader.py) builds these from YAML; nothing else parses YAML.

Module dataclasses follow blackbox_exporter's blackbox.yml keys (snake_case, same defaults except where
noted) so an existing blackbox.yml with http/dns/tcp modules loads unchanged. Regexes are compiled and
durations converted to seconds at load time, never on the probe path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from exporter.config.probe_policy import ProbePolicy
from exporter.routing.decision import MIN_PEERS, STALE_AFTER, WITHDRAWN_RATIO

IpProtocol = Literal["ip4", "ip6"]


@dataclass(frozen=True, slots=True)
class TLSConfig:
    insecure_skip_verify: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    min_version: str | None = None  # "TLS10" | "TLS11" | "TLS12" | "TLS13"


@dataclass(frozen=True, slots=True)
class BasicAuth:
    username: str
    password: str | None = None
    password_file: str | None = None


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    header: str
    regexp: re.Pattern[str]
    allow_missing: bool = False


@dataclass(frozen=True, slots=True)
class HTTPProbe:
    valid_status_codes: tuple[int, ...] = ()  # empty = any 2xx
    valid_http_versions: tuple[str, ...] = ()  # e.g. ("HTTP/1.1", "HTTP/2.0"); empty = any
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None
    fail_if_ssl: bool = False
    fail_if_not_ssl: bool = False
    fail_if_body_matches_regexp: tuple[re.Pattern[bytes], ...] = ()
    fail_if_body_not_matches_regexp: tuple[re.Pattern[bytes], ...] = ()
    fail_if_header_matches: tuple[HeaderMatch, ...] = ()
    fail_if_header_not_matches: tuple[HeaderMatch, ...] = ()
    follow_redirects: bool = True  # at most MAX_REDIRECTS hops
    tls_config: TLSConfig = field(default_factory=TLSConfig)
    basic_auth: BasicAuth | None = None
    bearer_token: str | None = None
    bearer_token_file: str | None = None
    proxy_url: str | None = None
    body_size_limit: int = 0  # bytes; 0 = unlimited (capped by MAX_BODY_BYTES for safety)
    compression: str = ""  # "", "gzip", "br", "deflate", "identity": sent as Accept-Encoding
    preferred_ip_protocol: IpProtocol = "ip4"  # blackbox defaults to ip6; we default to ip4 (documented)
    ip_protocol_fallback: bool = True


MAX_REDIRECTS = 10
MAX_BODY_BYTES = 10 * 1024 * 1024  # hard ceiling when body_size_limit is 0


@dataclass(frozen=True, slots=True)
class RRValidator:
    fail_if_matches_regexp: tuple[re.Pattern[str], ...] = ()
    fail_if_all_match_regexp: tuple[re.Pattern[str], ...] = ()
    fail_if_not_matches_regexp: tuple[re.Pattern[str], ...] = ()
    fail_if_none_matches_regexp: tuple[re.Pattern[str], ...] = ()


@dataclass(frozen=True, slots=True)
class DNSProbe:
    query_name: str = ""  # required for /probe; a scheduled check may supply it instead
    query_type: str = "ANY"
    query_class: str = "IN"
    recursion_desired: bool = True
    valid_rcodes: tuple[str, ...] = ("NOERROR",)
    transport_protocol: Literal["udp", "tcp"] = "udp"
    preferred_ip_protocol: IpProtocol = "ip4"
    ip_protocol_fallback: bool = True
    source_ip_address: str | None = None
    dns_over_tls: bool = False
    tls_config: TLSConfig = field(default_factory=TLSConfig)
    validate_answer_rrs: RRValidator = field(default_factory=RRValidator)
    validate_authority_rrs: RRValidator = field(default_factory=RRValidator)
    validate_additional_rrs: RRValidator = field(default_factory=RRValidator)


@dataclass(frozen=True, slots=True)
class QueryResponse:
    expect: re.Pattern[bytes] | None = None
    send: str | None = None
    starttls: bool = False


@dataclass(frozen=True, slots=True)
class TCPProbe:
    tls: bool = False
    tls_config: TLSConfig = field(default_factory=TLSConfig)
    query_response: tuple[QueryResponse, ...] = ()
    preferred_ip_protocol: IpProtocol = "ip4"
    ip_protocol_fallback: bool = True
    source_ip_address: str | None = None


ProberName = Literal["http", "dns", "tcp", "authoritative"]


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    prober: ProberName
    timeout: float | None = None  # seconds; None = the check's / default timeout
    http: HTTPProbe = field(default_factory=HTTPProbe)
    dns: DNSProbe = field(default_factory=DNSProbe)
    tcp: TCPProbe = field(default_factory=TCPProbe)


AUTHORITATIVE_PROBER = "authoritative"
AUTHORITATIVE_MODULE = Module(name="", prober=AUTHORITATIVE_PROBER)
"""The module of every authoritative check: they have no blackbox module, only their own settings."""


@dataclass(frozen=True, slots=True)
class Resolver:
    """A DNS server a region asks. ``name`` is the label value and the text from the config."""

    name: str  # "1.1.1.1", "127.0.0.1:5353", "system", "tls://9.9.9.9"
    host: str  # IP literal
    port: int = 53
    tls: bool = False  # DNS-over-TLS


@dataclass(frozen=True, slots=True)
class VantagePolicy:
    """When a region's vantage counts as healthy, judged from its control checks."""

    min_healthy_ratio: float = 0.5  # healthy while at least this share of the controls succeeds


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    resolvers: tuple[Resolver, ...]
    display_name: str = ""
    latitude: float | None = None
    longitude: float | None = None
    vantage: VantagePolicy = field(default_factory=VantagePolicy)


@dataclass(frozen=True, slots=True)
class StaticNameserver:
    """A nameserver given in the config rather than discovered: ``name=ip[:port]`` or ``ip[:port]``."""

    name: str  # the NS name ("" when only an address was given)
    address: str  # IP literal
    port: int = 53


@dataclass(frozen=True, slots=True)
class AuthoritativeCheck:
    """Settings of an authoritative nameserver check (``authoritative:`` on a check, instead of a module).

    The zone's nameservers are discovered through the region's resolvers and from the parent zone's
    delegation (or taken from ``nameservers``), and each address is asked directly, recursion off.
    """

    zone: str  # without the final dot
    nameservers: tuple[StaticNameserver, ...] = ()  # a static list: no discovery
    parents: tuple[Resolver, ...] = ()  # parent-zone servers to read the delegation from; () = find them
    transports: tuple[str, ...] = ("udp", "tcp")
    query_names: tuple[str, ...] = ()  # extra names asked (type A) on every nameserver
    ip_protocols: tuple[str, ...] = ("ip4", "ip6")  # address families of the nameservers to probe
    rediscover_interval: float = 300.0  # seconds between two discoveries of the nameserver set
    port: int = 53  # port of the addresses learnt from NS records and glue


@dataclass(frozen=True, slots=True)
class TwoPath:
    """HTTP ``two_path``: also probe the target's last known address, labelled path="pinned"."""

    enabled: bool = True
    max_age: float = 3600.0  # seconds a pinned address is used after DNS last returned it


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """One entry under ``services[].checks``: a module applied to one or more targets in some regions."""

    name: str
    module: Module
    targets: tuple[str, ...] = ()  # for dns with no targets: the region's resolvers are asked
    query_name: str | None = None  # dns: overrides module.dns.query_name
    interval: float = 10.0
    timeout: float = 5.0
    control: bool = False
    regions: tuple[str, ...] = ()  # empty = every region
    authoritative: AuthoritativeCheck | None = None  # authoritative checks (with AUTHORITATIVE_MODULE)
    two_path: TwoPath | None = None  # http checks only


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    provider: str  # defaults to the service name
    checks: tuple[CheckConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class Defaults:
    # The timing budget of docs/alerts.md: probes every 10 s with a 5 s timeout, scraped every 10 s and
    # evaluated every 5 s, page within a minute of a failure. Every shipped Prometheus config uses the same.
    interval: float = 10.0
    timeout: float = 5.0
    concurrency: int = 256  # probes in flight at once, across all checks
    max_checks: int = 100_000  # scheduled checks a config may expand to (aliases make small files huge)


RIS_LIVE_ENDPOINT = "wss://ris-live.ripe.net/v1/ws/?client=outage-exporter"  # RIPE's public RIS Live stream
PREFIX_ROLES = ("nameservers", "edges")


@dataclass(frozen=True, slots=True)
class RoutingPrefix:
    """A prefix watched on the routing feed, and what it holds for whom."""

    prefix: str  # normalised network text, e.g. "129.134.30.0/23"
    provider: str
    role: str = "nameservers"  # one of PREFIX_ROLES


@dataclass(frozen=True, slots=True)
class RoutingDerive:
    """Prefixes derived from addresses the checks use: address/mask."""

    nameservers: bool = True  # the nameserver addresses authoritative checks discover
    edges: bool = False  # the addresses HTTP and TCP checks connected to (CDN prefixes are often shorter)
    ipv4_mask: int = 24
    ipv6_mask: int = 48


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """``routing:``: BGP visibility of the providers' prefixes from a RIS-Live-compatible websocket feed.

    Thresholds default to exporter.routing.decision (the one place they are defined)."""

    enabled: bool = False
    endpoint: str = RIS_LIVE_ENDPOINT
    initial_state: str | None = None  # RIPEstat-style looking-glass URL; None = learn from announcements
    prefixes: tuple[RoutingPrefix, ...] = ()
    derive: RoutingDerive = field(default_factory=RoutingDerive)
    min_peers: int = MIN_PEERS
    withdrawn_ratio: float = WITHDRAWN_RATIO
    stale_after: float = STALE_AFTER  # seconds without a message (pongs included): the feed is stalled
    queue_size: int = 10_000  # messages buffered between the socket and the state; more are dropped


@dataclass(frozen=True, slots=True)
class StatusPage:
    """``status_pages[]``: a provider's Statuspage v2 page, polled for its declared status."""

    provider: str
    url: str  # the page's base URL; /api/v2/summary.json is appended unless the URL ends in .json
    components: tuple[tuple[str, str], ...] = ()  # (component name on the page, service it describes)
    interval: float = 60.0
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class Config:
    defaults: Defaults = field(default_factory=Defaults)
    modules: dict[str, Module] = field(default_factory=dict)
    regions: tuple[Region, ...] = ()
    services: tuple[Service, ...] = ()
    probe: ProbePolicy = field(default_factory=ProbePolicy)  # the /probe endpoint's policy (probe_policy.py)
    routing: RoutingConfig = field(default_factory=RoutingConfig)  # routing: (config/routing.py)
    status_pages: tuple[StatusPage, ...] = ()  # status_pages: (config/routing.py)
    source: str = "<embedded>"  # file path the config came from, for messages
    checksum: str = ""  # sha256 of the raw bytes: a reload with the same checksum is a no-op
