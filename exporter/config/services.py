"""Services and their checks: the ``services:`` list.

A check has either ``module`` (with targets or a query name) or ``authoritative`` (a zone whose
nameservers are asked directly; keys such as ``targets`` and ``two_path`` do not apply to it).
``two_path`` only applies to http checks.

``interval`` defaults to ``defaults.interval``. ``timeout`` defaults to ``defaults.timeout`` capped at the
check's interval; an explicit timeout longer than the interval is an error. A module's own ``timeout``
stays on the module; :func:`exporter.checks.expand` uses the smaller of the two. The scheduled checks a
config expands to are counted while it is read, against ``defaults.max_checks``.
"""

from __future__ import annotations

import functools
import ipaddress
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from exporter.config.addresses import is_http_url, parse_dns_server
from exporter.config.authoritative import AUTHORITATIVE_DEFAULTS, parse_authoritative
from exporter.config.durations import format_duration
from exporter.config.errors import ConfigError, child_path, expected_error, index_path, mask_url
from exporter.config.model import AUTHORITATIVE_MODULE, CheckConfig, Defaults, Module, Service, TwoPath
from exporter.config.modules import dns_name, parse_module
from exporter.config.values import (
    Names,
    Section,
    as_bool,
    as_duration,
    as_items,
    as_name,
    as_str,
    list_of,
    timeout_within,
)

_SERVICE_KEYS = ("name", "provider", "checks")
_CHECK_KEYS = ("name", "module", "authoritative", "query_name", "targets", "target", "interval", "timeout",
               "control", "regions", "two_path")


_TWO_PATH_KEYS = ("enabled", "max_age")
_NOT_FOR_AUTHORITATIVE = ("query_name", "targets", "target", "two_path")


_TARGET_HINTS = {
    "http": 'an http check needs targets (URLs such as "https://example.com/")',
    "tcp": 'a tcp check needs targets (host:port such as "example.com:443")',
}


@dataclass(frozen=True)
class Scope:
    """What checks may refer to."""

    defaults: Defaults
    modules: dict[str, Module]
    regions: tuple[str, ...]
    resolvers: dict[str, int]  # region -> how many resolvers it asks (dns checks without targets)
    planned: list[int] = field(default_factory=lambda: [0])  # scheduled checks so far (a mutable cell)

    def plan(self, cc: CheckConfig, path: str) -> CheckConfig:
        """Count the scheduled checks ``cc`` expands to, stopping at defaults.max_checks: a few aliases
        can name millions of (service, check, target, region) combinations in a small file."""
        regions = cc.regions or self.regions
        if cc.authoritative is not None:
            added = len(regions)
        elif cc.module.prober == "dns" and not cc.targets:
            added = sum(self.resolvers[r] for r in regions)
        else:
            added = len(cc.targets) * len(regions)
        self.planned[0] += added
        limit = self.defaults.max_checks
        if self.planned[0] > limit:
            raise ConfigError(path, f"the config expands to more than {limit} scheduled checks (this check "
                                    f"adds {added}); raise defaults.max_checks if that many are meant")
        return cc


def parse_services(raw: Any, path: str, scope: Scope) -> tuple[Service, ...]:
    names = Names("service name")
    return tuple(_service(item, index_path(path, i), scope, names) for i, item in enumerate(as_items(raw, path)))


def _service(raw: Any, path: str, scope: Scope, names: Names) -> Service:
    s = Section(raw, path, _SERVICE_KEYS)
    name = s.require("name", as_name)
    names.add(name, s.path_of("name"))
    provider = s.get("provider", as_name, name)
    service_checks = s.require("checks", lambda v, p: _checks(v, p, name, scope))
    return Service(name=name, provider=provider, checks=service_checks)


def _checks(raw: Any, path: str, service: str, scope: Scope) -> tuple[CheckConfig, ...]:
    items = as_items(raw, path)
    if not items:
        raise ConfigError(path, "must not be empty")
    names = Names("check name")
    return tuple(_check(item, index_path(path, i), service, scope, names) for i, item in enumerate(items))


def _check(raw: Any, path: str, service: str, scope: Scope, names: Names) -> CheckConfig:
    return scope.plan(_check_config(raw, path, service, scope, names), path)


def _check_config(raw: Any, path: str, service: str, scope: Scope, names: Names) -> CheckConfig:
    s = Section(raw, path, _CHECK_KEYS)
    name = s.require("name", as_name)
    names.add(name, s.path_of("name"))
    if s.has("authoritative"):
        return _authoritative_check(s, name, scope)
    if not s.has("module"):
        raise ConfigError(s.path, 'missing required key "module" (or "authoritative" for a nameserver check)')
    module = s.require("module", lambda v, p: _check_module(v, p, f"{service}/{name}", scope.modules))
    query_name = _check_query_name(s, module, scope.modules)
    targets = _targets(s, module.prober)
    interval = s.get("interval", as_duration, scope.defaults.interval)
    return CheckConfig(
        name=name,
        module=module,
        targets=targets,
        query_name=query_name,
        interval=interval,
        timeout=timeout_within(s, interval, scope.defaults.timeout),
        control=s.get("control", as_bool, False),
        regions=s.get("regions", lambda v, p: _region_refs(v, p, scope.regions), ()),
        two_path=_check_two_path(s, module),
    )


def _check_two_path(s: Section, module: Module) -> TwoPath | None:
    if not s.has("two_path"):
        return None
    if module.prober != "http":
        raise ConfigError(s.path_of("two_path"), f'only applies to http checks (the module\'s prober is '
                                                 f'"{module.prober}")')
    return s.get("two_path", _two_path, None)


def _two_path(raw: Any, path: str) -> TwoPath:
    s = Section(raw, path, _TWO_PATH_KEYS)
    return TwoPath(enabled=s.get("enabled", as_bool, True), max_age=s.get("max_age", as_duration, TwoPath().max_age))


# --- Authoritative nameserver checks ---------------------------------------------------------------------


def _authoritative_check(s: Section, name: str, scope: Scope) -> CheckConfig:
    """A check with ``authoritative:`` instead of a module: its nameservers are its targets."""
    if s.has("module"):
        raise ConfigError(s.path_of("authoritative"), 'set "module" or "authoritative", not both')
    for key in _NOT_FOR_AUTHORITATIVE:
        if s.has(key):
            raise ConfigError(s.path_of(key), "does not apply to authoritative checks (they ask the zone's "
                                              "nameservers, set under authoritative)")
    interval = s.get("interval", as_duration, scope.defaults.interval)
    settings = s.get("authoritative", parse_authoritative, AUTHORITATIVE_DEFAULTS)
    if not settings.nameservers and settings.rediscover_interval < interval:
        raise ConfigError(child_path(s.path_of("authoritative"), "rediscover_interval"),
                          f"must not be shorter than the check's interval ({format_duration(interval)}), "
                          f"got {format_duration(settings.rediscover_interval)}")
    return CheckConfig(
        name=name,
        module=AUTHORITATIVE_MODULE,
        interval=interval,
        timeout=timeout_within(s, interval, scope.defaults.timeout),
        control=s.get("control", as_bool, False),
        regions=s.get("regions", lambda v, p: _region_refs(v, p, scope.regions), ()),
        authoritative=settings,
    )


def _check_module(v: Any, p: str, inline_name: str, modules: dict[str, Module]) -> Module:
    if isinstance(v, str):
        if v not in modules:
            raise ConfigError(p, f'unknown module "{v}" (known: {", ".join(sorted(modules)) or "none"})')
        return modules[v]
    if isinstance(v, dict):
        return parse_module(v, p, inline_name)
    raise expected_error(v, p, "a module name or a module mapping")


def _check_query_name(s: Section, module: Module, modules: dict[str, Module]) -> str | None:
    query_name = s.get("query_name", dns_name, None)
    if module.prober != "dns":
        if query_name is not None:
            raise ConfigError(s.path_of("query_name"), f'only applies to dns checks (the module\'s prober '
                                                       f'is "{module.prober}")')
        return None
    if query_name is None and not module.dns.query_name:
        where = f'module "{module.name}"' if modules.get(module.name) == module else "the inline module"
        raise ConfigError(s.path, f"a dns check needs a query_name: set one on the check or in {where}")
    return query_name


def _targets(s: Section, prober: str) -> tuple[str, ...]:
    if s.has("target"):
        if s.has("targets"):
            raise ConfigError(s.path_of("target"), 'set "target" or "targets", not both')
        pairs = [(s.get("target", as_str, ""), s.path_of("target"))]
    else:
        texts = s.get("targets", list_of(as_str), ())
        pairs = [(t, index_path(s.path_of("targets"), i)) for i, t in enumerate(texts)]
        if s.has("targets") and not texts:
            hint = " (leave it out to ask the region's resolvers)" if prober == "dns" else ""
            raise ConfigError(s.path_of("targets"), f"must not be empty{hint}")
    if not pairs and prober != "dns":
        raise ConfigError(s.path, _TARGET_HINTS[prober])
    seen = Names("target")
    for text, p in pairs:
        _TARGET_CHECKS[prober](text, p)
        seen.add(text, p)
    return tuple(text for text, _ in pairs)


def _http_target(text: str, p: str) -> None:
    if not is_http_url(text):
        raise ConfigError(p, f'invalid http target "{mask_url(text)}": expected an http:// or https:// URL')
    if urllib.parse.urlsplit(text).password is not None:
        raise ConfigError(p, f'http target "{mask_url(text)}" carries a password, which would be exported in '
                             "the target label; use the module's http.basic_auth instead")


def _tcp_target(text: str, p: str) -> None:
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        try:
            host_ok = ipaddress.ip_address(host[1:-1]).version == 6
        except ValueError:
            host_ok = False
    else:
        host_ok = bool(host) and not any(c.isspace() or c in ":/[]@" for c in host)
    if not (sep and host_ok and port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(p, f'invalid tcp target "{text}": expected host:port, e.g. "example.com:443" '
                             'or "[2001:db8::1]:443"')


def _dns_target(text: str, p: str) -> None:
    if text.strip() == "system":
        raise ConfigError(p, "\"system\" cannot be a dns target (leave targets out to ask the region's "
                             "resolvers, system included)")
    problem = _dns_server_problem(text)
    if problem:
        raise ConfigError(p, problem)


@functools.lru_cache(maxsize=1024)
def _dns_server_problem(text: str) -> str:
    """Why ``text`` is not a DNS server address ("" if it is); most configs repeat a few servers."""
    try:
        parse_dns_server(text)
    except ValueError as e:
        return str(e)
    return ""


_TARGET_CHECKS: dict[str, Callable[[str, str], None]] = {
    "http": _http_target, "tcp": _tcp_target, "dns": _dns_target,
}


def _region_refs(v: Any, p: str, known: tuple[str, ...]) -> tuple[str, ...]:
    names = list_of(as_str)(v, p)
    if not names:
        raise ConfigError(p, "must not be empty (leave it out to run in every region)")
    seen = Names("region")
    for i, name in enumerate(names):
        ip = index_path(p, i)
        if name not in known:
            raise ConfigError(ip, f'unknown region "{name}" (known: {", ".join(sorted(known))})')
        seen.add(name, ip)
    return names
