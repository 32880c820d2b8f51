"""The ``probe:`` section: who may make the exporter probe what through ``/probe``.

A prober that sits inside a network and probes any URL it is handed is a server-side request forgery
(SSRF) tool: anyone who can reach ``/probe`` can make it connect to internal addresses and learn from the
result (status codes, timings, regex matches). This section narrows that down:

- ``enabled``: ``false`` turns ``/probe`` off (403); scheduled checks keep running.
- ``allow``: per module, the targets ``/probe`` accepts (see :class:`TargetPattern`); ``"*"`` applies to
  every module. Without ``allow`` any target is accepted (blackbox_exporter behaviour).
- ``allow_link_local`` / ``allow_cloud_metadata``: link-local addresses (169.254.0.0/16, fe80::/10) and
  cloud metadata endpoints are refused unless these say otherwise, whatever ``allow`` says.
- ``rate_limit``: a token bucket per client address.

Scheduled checks come from the operator's own file and are trusted: the policy applies to ``/probe`` only.
This module holds the data and the pure decisions (patterns, address classes); the web layer resolves
names and applies them. It reads its section with the shared value parsers (exporter.config.values), not
the loader, so model.py can import it.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from exporter.config.errors import ConfigError, child_path, expected_error, kind_of
from exporter.config.values import Section, as_bool, as_name, as_number, as_positive_int, as_regex, list_of

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ANY_MODULE = "*"

# Refusal reasons: the values of the ``reason`` label of outage_exporter_probe_requests_refused_total.
REFUSED_DISABLED = "disabled"
REFUSED_RATE_LIMITED = "rate_limited"
REFUSED_NOT_ALLOWED = "not_allowed"
REFUSED_BLOCKED_ADDRESS = "blocked_address"
REFUSAL_REASONS: tuple[str, ...] = (REFUSED_DISABLED, REFUSED_RATE_LIMITED, REFUSED_NOT_ALLOWED,
                                    REFUSED_BLOCKED_ADDRESS)

LINK_LOCAL_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
)
# Instance metadata services hand out credentials to whoever asks from the instance.
CLOUD_METADATA_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("169.254.169.254/32"),  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean
    ipaddress.ip_network("169.254.170.2/32"),  # AWS ECS task metadata and credentials
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS IMDS over IPv6
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known NAT64 prefix: the last 32 bits are an IPv4 address


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a /probe request would connect to, in the forms patterns are matched against."""

    host: str  # lowercased, without brackets or a final dot
    port: int
    target: str  # the target as the probe sees it (http: URL with scheme), credentials removed


PatternKind = Literal["host", "hostport", "url", "regex", "cidr"]


@dataclass(frozen=True, slots=True)
class TargetPattern:
    """One ``allow`` entry.

    - ``10.0.0.0/8``, ``192.0.2.7``: an address or network; matches an IP target inside it, or a host name
      all of whose resolved addresses are inside it.
    - ``*.example.com``: a glob on the host name (``*`` and ``?``, case-insensitive; ``*`` also matches dots).
    - ``*.example.com:443``, ``[2001:db8::1]:53``: a glob on ``host:port`` (the port is the default one of
      the scheme or prober when the target has none).
    - ``https://status.example.com/*``: a glob on the whole target URL (http modules).
    - ``{regex: "..."}``: a regular expression matching the whole target as the probe sees it.
    """

    text: str
    kind: PatternKind
    regex: re.Pattern[str] | None = None
    network: IPNetwork | None = None

    def matches(self, endpoint: Endpoint, addresses: Iterable[IPAddress] = ()) -> bool:
        if self.kind == "cidr":
            assert self.network is not None
            literal = parse_ip(endpoint.host)
            if literal is not None:
                return _contains(self.network, literal)
            found = list(addresses)
            return bool(found) and all(_contains(self.network, a) for a in found)
        assert self.regex is not None
        if self.kind == "host":
            return self.regex.fullmatch(endpoint.host) is not None
        if self.kind == "hostport":
            return self.regex.fullmatch(join_host_port(endpoint.host, endpoint.port)) is not None
        return self.regex.fullmatch(endpoint.target) is not None

    @property
    def needs_addresses(self) -> bool:
        return self.kind == "cidr"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Token bucket per client address: ``rate`` requests per second on average, bursts of ``burst``."""

    rate: float = 50.0  # 0 disables the limit
    burst: int = 100


@dataclass(frozen=True, slots=True)
class ProbePolicy:
    enabled: bool = True
    allow: Mapping[str, tuple[TargetPattern, ...]] | None = None  # None: any target
    allow_link_local: bool = False
    allow_cloud_metadata: bool = False
    rate_limit: RateLimit = field(default_factory=RateLimit)

    def patterns_for(self, module: str) -> tuple[TargetPattern, ...] | None:
        """The patterns a target of ``module`` must match; None when every target is allowed."""
        if self.allow is None:
            return None
        return self.allow.get(module, ()) + self.allow.get(ANY_MODULE, ())

    def blocked(self, address: IPAddress) -> str | None:
        """Why ``address`` may not be probed through /probe ("cloud metadata address", ...), or None."""
        return _blocked(address, self.allow_link_local, self.allow_cloud_metadata)

    @property
    def checks_addresses(self) -> bool:
        """Whether some address class is refused (so /probe has to know the target's addresses)."""
        return not (self.allow_link_local and self.allow_cloud_metadata)


@functools.lru_cache(maxsize=4096)  # judged on every /probe connect, mostly for the same few addresses
def _blocked(address: IPAddress, allow_link_local: bool, allow_cloud_metadata: bool) -> str | None:
    for candidate in _embedded(address):
        if any(_contains(n, candidate) for n in CLOUD_METADATA_NETWORKS):
            if not allow_cloud_metadata:
                return "cloud metadata address"
            continue
        if not allow_link_local and any(_contains(n, candidate) for n in LINK_LOCAL_NETWORKS):
            return "link-local address"
    return None


@functools.lru_cache(maxsize=4096)
def parse_ip(text: str) -> IPAddress | None:
    host = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # a zone index (fe80::1%eth0) does not matter here
    except ValueError:
        return None


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _contains(network: IPNetwork, address: IPAddress) -> bool:
    return address.version == network.version and address in network


def _embedded(address: IPAddress) -> tuple[IPAddress, ...]:
    """The address and any IPv4 address it carries (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::``),
    which reach the same destination."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address, address.ipv4_mapped
        if address in _NAT64:
            return address, ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return (address,)


# --- parsing (called by the config loader) -------------------------------------------------------------

_KEYS = ("enabled", "allow", "allow_link_local", "allow_cloud_metadata", "rate_limit")
_RATE_KEYS = ("rate", "burst")
_HOSTPORT_GLOB = re.compile(r"(\[[^\]]*\]|[^:\[\]/]*):([0-9*?]+)")


def parse_probe_policy(raw: Any, path: str, modules: Iterable[str]) -> ProbePolicy:
    """Read the ``probe:`` mapping; raises ConfigError naming the YAML path of the problem."""
    s = Section(raw, path, _KEYS)
    allow = s.get("allow", lambda v, p: _parse_allow(v, p, set(modules)), None)
    return ProbePolicy(
        enabled=s.get("enabled", as_bool, True),
        allow=allow,
        allow_link_local=s.get("allow_link_local", as_bool, False),
        allow_cloud_metadata=s.get("allow_cloud_metadata", as_bool, False),
        rate_limit=s.get("rate_limit", _parse_rate_limit, RateLimit()),
    )


def _parse_allow(raw: Any, path: str, modules: set[str]) -> dict[str, tuple[TargetPattern, ...]]:
    if not isinstance(raw, dict):
        raise expected_error(raw, path, "a mapping of module name to a list of target patterns")
    out: dict[str, tuple[TargetPattern, ...]] = {}
    for name, value in raw.items():
        item_path = child_path(path, str(name))
        if not isinstance(name, str):
            raise ConfigError(path, f"keys must be module names, got {kind_of(name)} ({name!r})")
        if name != ANY_MODULE and name not in modules:
            known = ", ".join(sorted(modules)) or "none"
            raise ConfigError(item_path, f'unknown module "{name}" (known: {known}; "*" means every module)')
        out[name] = list_of(parse_pattern)(value if value is not None else [], item_path)
    return out


def parse_pattern(raw: Any, path: str) -> TargetPattern:
    """One ``allow`` entry: a string (address, network or glob) or ``{regex: ...}``."""
    if isinstance(raw, dict):
        s = Section(raw, path, ("regex",))
        regex = s.require("regex", as_regex)
        return TargetPattern(text=regex.pattern, kind="regex", regex=regex)
    text = as_name(raw, path)
    try:
        network = ipaddress.ip_network(text.strip("[]"), strict=False)
    except ValueError:
        network = None
    if network is not None:
        return TargetPattern(text=text, kind="cidr", network=network)
    if "://" in text:
        kind: PatternKind = "url"
    elif _HOSTPORT_GLOB.fullmatch(text):
        kind = "hostport"
    elif ":" in text or "/" in text:
        raise ConfigError(path, f'"{text}" is neither a host, host:port, URL nor address pattern '
                                '(IPv6 addresses with a port need brackets: [2001:db8::1]:53)')
    else:
        kind = "host"
    subject = text if kind == "url" else text.rstrip(".")
    return TargetPattern(text=text, kind=kind, regex=glob_regex(subject))


def glob_regex(glob: str) -> re.Pattern[str]:
    """``*`` (any run of characters) and ``?`` (one character); everything else literal, case-insensitive.
    Brackets are literal too, so ``[2001:db8::1]:53`` means what it says."""
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob]
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _parse_rate_limit(raw: Any, path: str) -> RateLimit:
    s = Section(raw, path, _RATE_KEYS)
    default = RateLimit()
    rate = s.get("rate", as_number, default.rate)
    if rate < 0:
        raise ConfigError(s.path_of("rate"), f"must not be negative, got {rate:g} (0 turns the limit off)")
    return RateLimit(rate=rate, burst=s.get("burst", as_positive_int, default.burst))


# --- the connect-time guard --------------------------------------------------------------------------------


class ConnectRefused(PermissionError):
    """A /probe probe was about to connect to an address its policy refuses."""


NOT_ADMITTED: Literal[False] = False


def admit(patterns: tuple[TargetPattern, ...] | None,
          endpoint: Endpoint) -> tuple[TargetPattern, ...] | None | Literal[False]:
    """Judge one endpoint (the target, or a redirect's) against the allow list, without any lookup.

    None: allowed outright. A tuple of network patterns: allowed if every address it connects to is inside
    one of them (judged at connect time). NOT_ADMITTED: refused before any lookup or connection."""
    if patterns is None or any(p.matches(endpoint) for p in patterns if not p.needs_addresses):
        return None
    networks = tuple(p for p in patterns if p.needs_addresses)
    if networks and (parse_ip(endpoint.host) is None or any(p.matches(endpoint) for p in networks)):
        return networks
    return NOT_ADMITTED


@dataclass(slots=True)
class ConnectGuard:
    """Set (through CONNECT_GUARD) around one /probe probe; probers call :func:`check_connect` right before
    they connect, so every address is judged, including those reached through redirects or a DNS answer
    that changed since anyone last looked. Probers that follow redirects call :func:`check_hop` on each
    new hop, so the allow list holds on every hop and not only on the target given."""

    policy: ProbePolicy
    networks: tuple[TargetPattern, ...] | None = None  # the address must match one of these (allow by network)
    port: int = 0
    refused: str | None = None  # why the probe was stopped, for the response and the log
    refused_reason: str | None = None  # REFUSED_BLOCKED_ADDRESS or REFUSED_NOT_ALLOWED
    patterns: tuple[TargetPattern, ...] | None = None  # the module's allow list; None: any target
    redirected: bool = False  # a redirect hop is being probed: a refusal ends the probe as a failure

    def enter_hop(self, endpoint: Endpoint) -> None:
        """A redirect leads to ``endpoint``: admit it under the allow list or raise ConnectRefused."""
        self.redirected = True
        admitted = admit(self.patterns, endpoint)
        if admitted is NOT_ADMITTED:
            self._refuse(REFUSED_NOT_ALLOWED, f'redirect target "{endpoint.target}" is not in the allow list of '
                                              "this module (probe.allow)")
        self.networks = None if admitted is None else admitted
        self.port = endpoint.port

    def check(self, address: str) -> None:
        ip = parse_ip(address)
        if ip is None:
            return
        why = self.policy.blocked(ip)
        if why is not None:
            switch = "allow_cloud_metadata" if "metadata" in why else "allow_link_local"
            self._refuse(REFUSED_BLOCKED_ADDRESS, f"{ip} is a {why} (probe.{switch} is false)")
        if self.networks is not None:
            endpoint = Endpoint(str(ip), self.port, str(ip))
            if not any(p.matches(endpoint) for p in self.networks):
                self._refuse(REFUSED_NOT_ALLOWED, f"{ip} is outside the networks allowed for this module "
                                                  "(probe.allow)")

    def _refuse(self, reason: str, why: str) -> None:
        self.refused, self.refused_reason = why, reason
        raise ConnectRefused(f"connection refused by the /probe policy: {why}")


CONNECT_GUARD: ContextVar[ConnectGuard | None] = ContextVar("outage_exporter_connect_guard", default=None)


def check_hop(endpoint: Endpoint) -> None:
    """Raise ConnectRefused if a /probe policy is in force and its allow list refuses this redirect hop.

    Call it before the hop's name is looked up; scheduled probes run without a guard."""
    guard = CONNECT_GUARD.get()
    if guard is not None:
        guard.enter_hop(endpoint)


def check_connect(address: str) -> None:
    """Raise ConnectRefused if a /probe policy is in force in this context and refuses ``address``.

    Scheduled probes run without a guard: this is then one context-variable lookup.
    """
    guard = CONNECT_GUARD.get()
    if guard is not None:
        guard.check(address)
