"""Regions and their resolvers: the ``regions:`` list, ``system`` from resolv.conf, the local region.

``system`` in a region's resolvers expands to the nameservers of resolv.conf (read once per load). Each
becomes its own Resolver: the first is named ``system``, the next ``system#2``, ``system#3`` and so on,
because resolver names are label values and must be unique within a region.

One region may omit ``name``: it takes the local region name (``default_region``, else
:func:`default_region_name`). The embedded default config relies on this, so one file serves every
probing host. Without a ``regions:`` section there is one implicit local region using ``system``; if
resolv.conf is unusable and there are no services, that region simply has no resolvers, so a plain
blackbox.yml (modules only, used through ``/probe``) loads on any host.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from typing import Any

from exporter.config.addresses import parse_dns_server
from exporter.config.errors import ConfigError, child_path, index_path
from exporter.config.model import Region, Resolver, VantagePolicy
from exporter.config.values import Names, Parser, Section, as_items, as_name, as_number, as_str, list_of

DEFAULT_RESOLV_CONF = "/etc/resolv.conf"


_REGION_KEYS = ("name", "resolvers", "display_name", "latitude", "longitude", "vantage")
_VANTAGE_KEYS = ("min_healthy_ratio",)


def default_region_name() -> str:
    """The local region name: the short host name, lowercased, other than ``[a-z0-9-]`` turned to ``-``."""
    try:
        host = socket.gethostname()
    except OSError:
        host = ""
    short = host.split(".", 1)[0].lower()
    return re.sub(r"[^a-z0-9-]", "-", short).strip("-") or "local"


def parse_resolv_conf(text: str) -> tuple[str, ...]:
    """The ``nameserver`` addresses of a resolv.conf, in order. Invalid entries are skipped, as libc does."""
    servers = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "nameserver":
            continue
        try:
            ipaddress.ip_address(words[1])
        except ValueError:
            continue
        servers.append(words[1])
    return tuple(servers)


def system_resolvers(resolv_conf: str = DEFAULT_RESOLV_CONF) -> tuple[Resolver, ...]:
    """The resolvers ``system`` stands for. Raises ValueError saying why when resolv.conf is unusable."""
    try:
        with open(resolv_conf, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"cannot read {resolv_conf}: {e.strerror or e}") from None
    servers = parse_resolv_conf(text)
    if not servers:
        raise ValueError(f"no nameserver in {resolv_conf}")
    return tuple(
        Resolver(name="system" if i == 0 else f"system#{i + 1}", host=host, port=53)
        for i, host in enumerate(servers)
    )


class SystemResolvers:
    """resolv.conf's nameservers for ``system``, read at most once per load, and only if used."""

    def __init__(self, resolv_conf: str) -> None:
        self.resolv_conf = resolv_conf

    @functools.cached_property
    def resolvers(self) -> tuple[Resolver, ...]:
        return system_resolvers(self.resolv_conf)


def parse_regions(raw: Any, path: str, local: str, system: SystemResolvers) -> tuple[Region, ...]:
    items = as_items(raw, path)
    if not items:
        raise ConfigError(path, "must not be empty (leave regions out for one local region)")
    names = Names("region name")
    unnamed: str | None = None
    regions = []
    for i, item in enumerate(items):
        p = index_path(path, i)
        region, named = _region(item, p, local, system)
        if not named:
            if unnamed is not None:
                raise ConfigError(p, f'only one region may leave out its name ({unnamed} already takes '
                                     f'the local region name "{local}")')
            unnamed = p
        names.add(region.name, child_path(p, "name") if named else p)
        regions.append(region)
    return tuple(regions)


def _region(raw: Any, path: str, local: str, system: SystemResolvers) -> tuple[Region, bool]:
    s = Section(raw, path, _REGION_KEYS)
    name = s.get("name", as_name, None)
    region = Region(
        name=name or local,
        resolvers=s.require("resolvers", lambda v, p: _resolvers(v, p, system)),
        display_name=s.get("display_name", as_str, ""),
        latitude=s.get("latitude", _coordinate(90), None),
        longitude=s.get("longitude", _coordinate(180), None),
        vantage=s.get("vantage", _vantage, VantagePolicy()),
    )
    if (region.latitude is None) != (region.longitude is None):
        raise ConfigError(path, "latitude and longitude must be set together")
    return region, name is not None


def _vantage(raw: Any, path: str) -> VantagePolicy:
    s = Section(raw, path, _VANTAGE_KEYS)
    return VantagePolicy(min_healthy_ratio=s.get("min_healthy_ratio", _ratio, VantagePolicy().min_healthy_ratio))


def _ratio(v: Any, p: str) -> float:
    x = as_number(v, p)
    if not 0 <= x <= 1:
        raise ConfigError(p, f"must be between 0 and 1, got {v}")
    return x


def _coordinate(limit: int) -> Parser[float]:
    def parse(v: Any, p: str) -> float:
        x = as_number(v, p)
        if not -limit <= x <= limit:
            raise ConfigError(p, f"must be between -{limit} and {limit}, got {v}")
        return x

    return parse


def _resolvers(raw: Any, path: str, system: SystemResolvers) -> tuple[Resolver, ...]:
    texts = list_of(as_str)(raw, path)
    if not texts:
        raise ConfigError(path, 'must not be empty (use "system" for the host\'s resolvers)')
    names = Names("resolver")
    out: list[Resolver] = []
    for i, text in enumerate(texts):
        p = index_path(path, i)
        for resolver in _resolver(text, p, system):
            names.add(resolver.name, p)
            out.append(resolver)
    return tuple(out)


def _resolver(text: str, path: str, system: SystemResolvers) -> tuple[Resolver, ...]:
    if text.strip() == "system":
        try:
            return system.resolvers
        except ValueError as e:
            raise ConfigError(path, f'cannot use "system": {e}') from None
    try:
        return (parse_dns_server(text),)
    except ValueError as e:
        raise ConfigError(path, str(e)) from None


def implicit_region(local: str, system: SystemResolvers, needed: bool) -> Region:
    """The one region of a config without ``regions:``; see the module docstring."""
    try:
        return Region(name=local, resolvers=system.resolvers)
    except ValueError as e:
        if needed:
            raise ConfigError("regions", f'not set, so checks run in the local region "{local}" with the '
                                         f'"system" resolver, which is unusable: {e}') from None
        return Region(name=local, resolvers=())


def is_system(resolver: Resolver) -> bool:
    return resolver.name == "system" or resolver.name.startswith("system#")
