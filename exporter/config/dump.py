"""The effective config as YAML (``/config``, debug output), secrets masked."""

from __future__ import annotations

import re
from dataclasses import fields, is_dataclass
from typing import Any

import yaml

from exporter.config.addresses import join_host_port
from exporter.config.durations import format_duration
from exporter.config.errors import SECRET, mask_url
from exporter.config.model import (
    AuthoritativeCheck,
    CheckConfig,
    Config,
    Defaults,
    Module,
    Region,
    Resolver,
    RRValidator,
    Service,
    TLSConfig,
    VantagePolicy,
)
from exporter.config.regions import is_system
from exporter.config.routing import signals_doc

_DEFAULTS = Defaults()


_SECRET_FIELDS = frozenset({"password", "bearer_token"})
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_SECRET_HEADER_WORDS = ("token", "secret", "password", "apikey", "api-key")
_OMITTED_WHEN_DEFAULT = {TLSConfig: TLSConfig(), RRValidator: RRValidator()}


def dump_config(config: Config) -> str:
    """The effective config as YAML, secrets shown as ``<secret>``: for ``/config`` and debug output.

    It loads back to the same config (secrets aside); ``system`` resolvers are folded back into one
    ``system`` entry, and the addresses they stand for are listed in a comment. Empty sections are left
    out, so ``dump_config(Config(modules={name: module}))`` shows just that module.
    """
    doc: dict[str, Any] = {
        "defaults": {
            "interval": format_duration(config.defaults.interval),
            "timeout": format_duration(config.defaults.timeout),
            "concurrency": config.defaults.concurrency,
        },
    }
    if config.defaults.max_checks != _DEFAULTS.max_checks:
        doc["defaults"]["max_checks"] = config.defaults.max_checks
    if config.modules:
        doc["modules"] = {name: _module_doc(module) for name, module in config.modules.items()}
    if config.regions:
        doc["regions"] = [_region_doc(region) for region in config.regions]
    if config.services:
        doc["services"] = [_service_doc(service, config.modules) for service in config.services]
    doc.update(signals_doc(config))
    header = [f"# Secrets are shown as {SECRET}."]
    if config.checksum:  # loaded from a file or string, not assembled in code
        header.insert(0, f"# Effective configuration from {config.source} (sha256 {config.checksum})")
    for region in config.regions:
        system = [r for r in region.resolvers if is_system(r)]
        if system:
            listed = ", ".join(f"{r.name} = {_address(r)}" for r in system)
            header.append(f"# Region {region.name}: {listed}")
    body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)
    return "\n".join(header) + "\n" + body


def _address(resolver: Resolver) -> str:
    host = f"[{resolver.host}]" if ":" in resolver.host else resolver.host
    return f"{'tls://' if resolver.tls else ''}{host}:{resolver.port}"


def _module_doc(module: Module) -> dict[str, Any]:
    doc: dict[str, Any] = {"prober": module.prober}
    if module.timeout is not None:
        doc["timeout"] = format_duration(module.timeout)
    doc[module.prober] = _plain(getattr(module, module.prober))
    return doc


def _plain(value: Any) -> Any:
    """Dataclasses, tuples and patterns as YAML-ready data; unset and default-valued parts left out."""
    if isinstance(value, re.Pattern):
        pattern = value.pattern
        return pattern.decode("utf-8", "backslashreplace") if isinstance(pattern, bytes) else pattern
    if is_dataclass(value):
        out = {}
        for f in fields(value):
            v = getattr(value, f.name)
            if v is None or v == () or v == "" or _OMITTED_WHEN_DEFAULT.get(type(v), ...) == v:
                continue
            out[f.name] = _field_doc(f.name, v)
        return out
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _field_doc(name: str, value: Any) -> Any:
    if name in _SECRET_FIELDS:
        return SECRET
    if name == "headers":
        return {k: SECRET if _is_secret_header(k) else v for k, v in value}
    if name == "proxy_url":
        return mask_url(value)
    return _plain(value)


def _is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SECRET_HEADERS or any(word in lowered for word in _SECRET_HEADER_WORDS)


def _authoritative_doc(a: AuthoritativeCheck) -> dict[str, Any]:
    doc: dict[str, Any] = {"zone": a.zone, "port": a.port}
    if a.nameservers:
        doc["nameservers"] = [(f"{ns.name}=" if ns.name else "") + join_host_port(ns.address, ns.port)
                              for ns in a.nameservers]
    else:
        if a.parents:
            doc["parents"] = [p.name for p in a.parents]
        doc["rediscover_interval"] = format_duration(a.rediscover_interval)
    doc["transports"] = list(a.transports)
    if a.query_names:
        doc["query_names"] = list(a.query_names)
    doc["ip_protocols"] = list(a.ip_protocols)
    return doc


def _region_doc(region: Region) -> dict[str, Any]:
    resolvers: list[str] = []
    for r in region.resolvers:
        text = "system" if is_system(r) else r.name
        if text not in resolvers:
            resolvers.append(text)
    doc: dict[str, Any] = {"name": region.name, "resolvers": resolvers}
    if region.display_name:
        doc["display_name"] = region.display_name
    if region.latitude is not None:
        doc["latitude"] = region.latitude
        doc["longitude"] = region.longitude
    if region.vantage != VantagePolicy():
        doc["vantage"] = {"min_healthy_ratio": region.vantage.min_healthy_ratio}
    return doc


def _service_doc(service: Service, modules: dict[str, Module]) -> dict[str, Any]:
    return {
        "name": service.name,
        "provider": service.provider,
        "checks": [_check_doc(cc, modules) for cc in service.checks],
    }


def _check_doc(cc: CheckConfig, modules: dict[str, Module]) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": cc.name}
    if cc.authoritative is not None:
        doc["authoritative"] = _authoritative_doc(cc.authoritative)
    else:
        named = modules.get(cc.module.name) == cc.module
        doc["module"] = cc.module.name if named else _module_doc(cc.module)
    if cc.two_path is not None:
        doc["two_path"] = {"enabled": cc.two_path.enabled, "max_age": format_duration(cc.two_path.max_age)}
    if cc.query_name:
        doc["query_name"] = cc.query_name
    if cc.targets:
        doc["targets"] = [mask_url(t) for t in cc.targets]
    doc["interval"] = format_duration(cc.interval)
    doc["timeout"] = format_duration(cc.timeout)
    doc["control"] = cc.control
    if cc.regions:
        doc["regions"] = list(cc.regions)
    return doc
