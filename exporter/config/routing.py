"""Parsing of the top-level ``routing:`` and ``status_pages:`` sections (docs/configuration.md).

loader.py calls these two functions; errors name the YAML path like every other section, through the
shared value parsers (exporter.config.values).
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from exporter.config.durations import format_duration
from exporter.config.errors import ConfigError, child_path, cut, expected_error, index_path, mask_url
from exporter.config.model import (
    PREFIX_ROLES,
    Config,
    RoutingConfig,
    RoutingDerive,
    RoutingPrefix,
    StatusPage,
)
from exporter.config.values import (
    Names,
    Parser,
    Section,
    as_bool,
    as_duration,
    as_int,
    as_name,
    as_nonempty,
    as_number,
    as_positive_int,
    choice,
    list_of,
)

_ROUTING_KEYS = ("enabled", "endpoint", "initial_state", "prefixes", "derive", "min_peers", "withdrawn_ratio",
                 "stale_after", "queue_size")
_PREFIX_KEYS = ("prefix", "provider", "role")
_DERIVE_KEYS = ("nameservers", "edges", "ipv4_mask", "ipv6_mask")
_STATUS_KEYS = ("provider", "url", "components", "interval", "timeout")
_DEFAULT = RoutingConfig()
_DERIVE = RoutingDerive()


def _url(schemes: tuple[str, ...]) -> Parser[str]:
    def parse(v: Any, p: str) -> str:
        s = as_nonempty(v, p)
        parts = urlsplit(s)
        if parts.scheme not in schemes or not parts.hostname:
            raise ConfigError(p, f'expected a {" or ".join(schemes)} URL, got "{cut(s)}"')
        return s

    return parse


def _prefix(v: Any, p: str) -> str:
    s = as_nonempty(v, p)
    try:
        return str(ipaddress.ip_network(s.strip(), strict=False))
    except ValueError:
        raise ConfigError(p, f'invalid prefix "{cut(s)}" (expected e.g. "192.0.2.0/24")') from None


def _mask(limit: int) -> Parser[int]:
    def parse(v: Any, p: str) -> int:
        n = as_int(v, p)
        if not 8 <= n <= limit:
            raise ConfigError(p, f"must be between 8 and {limit}, got {n}")
        return n

    return parse


def _ratio(v: Any, p: str) -> float:
    x = as_number(v, p)
    if not 0 < x <= 1:
        raise ConfigError(p, f"must be greater than 0 and at most 1, got {x}")
    return x


def _routing_prefix(raw: Any, path: str) -> RoutingPrefix:
    s = Section(raw, path, _PREFIX_KEYS)
    return RoutingPrefix(prefix=s.require("prefix", _prefix), provider=s.require("provider", as_name),
                         role=s.get("role", choice(PREFIX_ROLES), "nameservers"))


def _derive(raw: Any, path: str) -> RoutingDerive:
    s = Section(raw, path, _DERIVE_KEYS)
    return RoutingDerive(nameservers=s.get("nameservers", as_bool, _DERIVE.nameservers),
                         edges=s.get("edges", as_bool, _DERIVE.edges),
                         ipv4_mask=s.get("ipv4_mask", _mask(32), _DERIVE.ipv4_mask),
                         ipv6_mask=s.get("ipv6_mask", _mask(128), _DERIVE.ipv6_mask))


def parse_routing(raw: Any, path: str) -> RoutingConfig:
    """``routing:``; the thresholds default to exporter.routing.decision."""
    s = Section(raw, path, _ROUTING_KEYS)
    prefixes = s.get("prefixes", list_of(_routing_prefix), ())
    seen = Names("prefix")
    for i, item in enumerate(prefixes):
        seen.add(f"{item.prefix} {item.provider} {item.role}", index_path(s.path_of("prefixes"), i))
    return RoutingConfig(
        enabled=s.get("enabled", as_bool, _DEFAULT.enabled),
        endpoint=s.get("endpoint", _url(("ws", "wss")), _DEFAULT.endpoint),
        initial_state=s.get("initial_state", _url(("http", "https")), None),
        prefixes=prefixes,
        derive=s.get("derive", _derive, _DERIVE),
        min_peers=s.get("min_peers", as_positive_int, _DEFAULT.min_peers),
        withdrawn_ratio=s.get("withdrawn_ratio", _ratio, _DEFAULT.withdrawn_ratio),
        stale_after=s.get("stale_after", as_duration, _DEFAULT.stale_after),
        queue_size=s.get("queue_size", as_positive_int, _DEFAULT.queue_size),
    )


def _components(v: Any, p: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(v, dict):
        raise expected_error(v, p, "a mapping of component name to service")
    return tuple((as_name(k, p), as_name(service, child_path(p, str(k)))) for k, service in v.items())


def _status_page(raw: Any, path: str) -> StatusPage:
    s = Section(raw, path, _STATUS_KEYS)
    interval = s.get("interval", as_duration, 60.0)
    timeout = s.get("timeout", as_duration, min(10.0, interval))
    if timeout > interval:
        raise ConfigError(s.path_of("timeout"), "must not be longer than the interval")
    return StatusPage(provider=s.require("provider", as_name), url=s.require("url", _url(("http", "https"))),
                      components=s.get("components", _components, ()), interval=interval, timeout=timeout)


def parse_status_pages(raw: Any, path: str) -> tuple[StatusPage, ...]:
    """``status_pages:``: at most one page per provider."""
    pages = list_of(_status_page)(raw, path)
    seen = Names("status page provider")
    for i, page in enumerate(pages):
        seen.add(page.provider, index_path(path, i))
    return pages


def signals_doc(config: Config) -> dict[str, Any]:
    """``routing`` and ``status_pages`` as YAML-ready data for dump_config; empty when both are defaults."""
    doc: dict[str, Any] = {}
    r = config.routing
    if r != _DEFAULT:
        doc["routing"] = {
            "enabled": r.enabled, "endpoint": mask_url(r.endpoint),
            **({"initial_state": mask_url(r.initial_state)} if r.initial_state else {}),
            "prefixes": [{"prefix": p.prefix, "provider": p.provider, "role": p.role} for p in r.prefixes],
            "derive": {"nameservers": r.derive.nameservers, "edges": r.derive.edges, "ipv4_mask": r.derive.ipv4_mask,
                       "ipv6_mask": r.derive.ipv6_mask},
            "min_peers": r.min_peers, "withdrawn_ratio": r.withdrawn_ratio,
            "stale_after": format_duration(r.stale_after), "queue_size": r.queue_size,
        }
    if config.status_pages:
        doc["status_pages"] = [{"provider": p.provider, "url": mask_url(p.url), "components": dict(p.components),
                                "interval": format_duration(p.interval), "timeout": format_duration(p.timeout)}
                               for p in config.status_pages]
    return doc
