"""Parsing of the top-level ``routing:`` and ``status_pages:`` sections (docs/configuration.md).

Kept out of loader.py, which calls these two functions; errors name the YAML path like every other
section, through the loader's own helpers.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from exporter.config import loader as ld
from exporter.config.durations import format_duration
from exporter.config.model import (
    PREFIX_ROLES,
    Config,
    RoutingConfig,
    RoutingDerive,
    RoutingPrefix,
    StatusPage,
)

_ROUTING_KEYS = ("enabled", "endpoint", "initial_state", "prefixes", "derive", "min_peers", "withdrawn_ratio",
                 "stale_after", "queue_size")
_PREFIX_KEYS = ("prefix", "provider", "role")
_DERIVE_KEYS = ("nameservers", "edges", "ipv4_mask", "ipv6_mask")
_STATUS_KEYS = ("provider", "url", "components", "interval", "timeout")
_DEFAULT = RoutingConfig()
_DERIVE = RoutingDerive()


def _url(schemes: tuple[str, ...]) -> ld.Parser[str]:
    def parse(v: Any, p: str) -> str:
        s = ld._nonempty(v, p)
        parts = urlsplit(s)
        if parts.scheme not in schemes or not parts.hostname:
            raise ld.ConfigError(p, f'expected a {" or ".join(schemes)} URL, got "{ld._cut(s)}"')
        return s

    return parse


def _prefix(v: Any, p: str) -> str:
    s = ld._nonempty(v, p)
    try:
        return str(ipaddress.ip_network(s.strip(), strict=False))
    except ValueError:
        raise ld.ConfigError(p, f'invalid prefix "{ld._cut(s)}" (expected e.g. "192.0.2.0/24")') from None


def _mask(limit: int) -> ld.Parser[int]:
    def parse(v: Any, p: str) -> int:
        n = ld._int(v, p)
        if not 8 <= n <= limit:
            raise ld.ConfigError(p, f"must be between 8 and {limit}, got {n}")
        return n

    return parse


def _ratio(v: Any, p: str) -> float:
    x = ld._number(v, p)
    if not 0 < x <= 1:
        raise ld.ConfigError(p, f"must be greater than 0 and at most 1, got {x}")
    return x


def _routing_prefix(raw: Any, path: str) -> RoutingPrefix:
    s = ld._Section(raw, path, _PREFIX_KEYS)
    return RoutingPrefix(prefix=s.require("prefix", _prefix), provider=s.require("provider", ld._name),
                         role=s.get("role", ld._choice(PREFIX_ROLES), "nameservers"))


def _derive(raw: Any, path: str) -> RoutingDerive:
    s = ld._Section(raw, path, _DERIVE_KEYS)
    return RoutingDerive(nameservers=s.get("nameservers", ld._bool, _DERIVE.nameservers),
                         edges=s.get("edges", ld._bool, _DERIVE.edges),
                         ipv4_mask=s.get("ipv4_mask", _mask(32), _DERIVE.ipv4_mask),
                         ipv6_mask=s.get("ipv6_mask", _mask(128), _DERIVE.ipv6_mask))


def parse_routing(raw: Any, path: str) -> RoutingConfig:
    """``routing:``; the thresholds default to exporter.routing.decision."""
    s = ld._Section(raw, path, _ROUTING_KEYS)
    prefixes = s.get("prefixes", ld._list_of(_routing_prefix), ())
    seen = ld._Names("prefix")
    for i, item in enumerate(prefixes):
        seen.add(f"{item.prefix} {item.provider} {item.role}", ld._index(s.path_of("prefixes"), i))
    return RoutingConfig(
        enabled=s.get("enabled", ld._bool, _DEFAULT.enabled),
        endpoint=s.get("endpoint", _url(("ws", "wss")), _DEFAULT.endpoint),
        initial_state=s.get("initial_state", _url(("http", "https")), None),
        prefixes=prefixes,
        derive=s.get("derive", _derive, _DERIVE),
        min_peers=s.get("min_peers", ld._positive_int, _DEFAULT.min_peers),
        withdrawn_ratio=s.get("withdrawn_ratio", _ratio, _DEFAULT.withdrawn_ratio),
        stale_after=s.get("stale_after", ld._duration, _DEFAULT.stale_after),
        queue_size=s.get("queue_size", ld._positive_int, _DEFAULT.queue_size),
    )


def _components(v: Any, p: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(v, dict):
        raise ld._expected(v, p, "a mapping of component name to service")
    return tuple((ld._name(k, p), ld._name(service, ld._child(p, str(k)))) for k, service in v.items())


def _status_page(raw: Any, path: str) -> StatusPage:
    s = ld._Section(raw, path, _STATUS_KEYS)
    interval = s.get("interval", ld._duration, 60.0)
    timeout = s.get("timeout", ld._duration, min(10.0, interval))
    if interval <= 0 or timeout <= 0:
        raise ld.ConfigError(path, "interval and timeout must be greater than 0")
    if timeout > interval:
        raise ld.ConfigError(s.path_of("timeout"), "must not be longer than the interval")
    return StatusPage(provider=s.require("provider", ld._name), url=s.require("url", _url(("http", "https"))),
                      components=s.get("components", _components, ()), interval=interval, timeout=timeout)


def parse_status_pages(raw: Any, path: str) -> tuple[StatusPage, ...]:
    """``status_pages:``: at most one page per provider."""
    pages = ld._list_of(_status_page)(raw, path)
    seen = ld._Names("status page provider")
    for i, page in enumerate(pages):
        seen.add(page.provider, ld._index(path, i))
    return pages


def signals_doc(config: Config) -> dict[str, Any]:
    """``routing`` and ``status_pages`` as YAML-ready data for dump_config; empty when both are defaults."""
    doc: dict[str, Any] = {}
    r = config.routing
    if r != _DEFAULT:
        doc["routing"] = {
            "enabled": r.enabled, "endpoint": ld._mask_url(r.endpoint),
            **({"initial_state": ld._mask_url(r.initial_state)} if r.initial_state else {}),
            "prefixes": [{"prefix": p.prefix, "provider": p.provider, "role": p.role} for p in r.prefixes],
            "derive": {"nameservers": r.derive.nameservers, "edges": r.derive.edges, "ipv4_mask": r.derive.ipv4_mask,
                       "ipv6_mask": r.derive.ipv6_mask},
            "min_peers": r.min_peers, "withdrawn_ratio": r.withdrawn_ratio,
            "stale_after": format_duration(r.stale_after), "queue_size": r.queue_size,
        }
    if config.status_pages:
        doc["status_pages"] = [{"provider": p.provider, "url": ld._mask_url(p.url), "components": dict(p.components),
                                "interval": format_duration(p.interval), "timeout": format_duration(p.timeout)}
                               for p in config.status_pages]
    return doc
