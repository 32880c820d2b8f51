"""Load and validate the configuration file (a superset of blackbox.yml) into the dataclasses of model.py.

Validation approach
    The file is read with :func:`exporter.config.reading.read_bounded` and parsed into plain data by
    :func:`exporter.config.reading.parse_yaml` (duplicate keys refused, aliases bounded). That data is
    then read top-down by small functions, one per schema mapping, each going through
    :class:`exporter.config.values.Section`: a section knows its allowed keys, so an unknown key fails at
    once with the allowed list and the closest match, and every value is converted by a parser that
    receives the value and its YAML path (``services[2].checks[0].module``) and raises :class:`ConfigError`
    naming that path. Loading stops at the first error. The order is fixed: unknown top-level keys, then
    ``defaults``, ``modules``, ``regions``, ``services``; lists in file order and the keys of each mapping in
    schema order, so a given file always reports the same error.

    The sections live in their own modules, following the file's shape: ``modules`` (blackbox.yml
    syntax), ``regions`` (and resolvers), ``services`` (and checks; ``authoritative`` for nameserver
    checks), ``probe_policy``, ``routing`` (``routing`` and ``status_pages``); ``dump`` writes a config
    back out and ``references`` checks the files modules name. Everything a probe needs is converted
    there, once, never on the probe path.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
from dataclasses import replace
from typing import Any

from exporter.config.errors import ConfigError, kind_of
from exporter.config.model import Config, Defaults, RoutingConfig
from exporter.config.modules import parse_modules
from exporter.config.probe_policy import ProbePolicy, parse_probe_policy
from exporter.config.reading import GC_PAUSE, MAX_CONFIG_BYTES, parse_yaml, read_bounded
from exporter.config.references import check_referenced_files
from exporter.config.regions import (
    DEFAULT_RESOLV_CONF,
    SystemResolvers,
    default_region_name,
    implicit_region,
    parse_regions,
)
from exporter.config.routing import parse_routing, parse_status_pages
from exporter.config.services import Scope, parse_services
from exporter.config.values import Section, as_duration, as_positive_int, timeout_within

EMBEDDED_SOURCE = "<embedded>"


_TOP_KEYS = ("defaults", "modules", "regions", "services", "probe", "routing", "status_pages")
_DEFAULTS_KEYS = ("interval", "timeout", "concurrency", "max_checks")


_DEFAULTS = Defaults()


# --- Public entry points ---------------------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str] | None,
    *,
    default_region: str | None = None,
    resolv_conf: str = DEFAULT_RESOLV_CONF,
    max_bytes: int = MAX_CONFIG_BYTES,
) -> Config:
    """Load a config file; ``None`` loads the embedded default config (package data ``default.yaml``).

    The file is read with :func:`read_bounded`: only a regular file of at most ``max_bytes``.
    """
    if path is None:
        data = importlib.resources.files("exporter.config").joinpath("default.yaml").read_bytes()
        source = EMBEDDED_SOURCE
    else:
        source = os.fspath(path)
        try:
            data = read_bounded(source, max_bytes)
        except OSError as e:
            raise ConfigError("", f"cannot read config file {source}: {e.strerror or e}") from None
    return _load_bytes(data, source, default_region, resolv_conf)


def load_config_text(
    text: str,
    *,
    source: str = "<string>",
    default_region: str | None = None,
    resolv_conf: str = DEFAULT_RESOLV_CONF,
) -> Config:
    """Load a config from a string (``source`` names it in messages and in ``Config.source``)."""
    # surrogatepass: a lone surrogate (never valid UTF-8) then fails decoding with a ConfigError
    return _load_bytes(text.encode("utf-8", "surrogatepass"), source, default_region, resolv_conf)


def _load_bytes(data: bytes, source: str, default_region: str | None, resolv_conf: str) -> Config:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError("", f"{source}: not valid UTF-8 (at byte {e.start})") from None
    with GC_PAUSE:
        doc = parse_yaml(text, source)
        config = _build(doc, default_region or default_region_name(), SystemResolvers(resolv_conf))
    check_referenced_files(config)
    return replace(config, source=source, checksum=hashlib.sha256(data).hexdigest())


def _defaults(raw: Any, path: str) -> Defaults:
    s = Section(raw, path, _DEFAULTS_KEYS)
    interval = s.get("interval", as_duration, _DEFAULTS.interval)
    return Defaults(
        interval=interval,
        timeout=timeout_within(s, interval, _DEFAULTS.timeout),
        concurrency=s.get("concurrency", as_positive_int, _DEFAULTS.concurrency),
        max_checks=s.get("max_checks", as_positive_int, _DEFAULTS.max_checks),
    )


# --- The whole document ----------------------------------------------------------------------------------


def _build(doc: Any, local: str, system: SystemResolvers) -> Config:
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError("", f"the configuration must be a mapping (keys: {', '.join(_TOP_KEYS)}), "
                              f"got {kind_of(doc)}")
    top = Section(doc, "", _TOP_KEYS)
    defaults = top.get("defaults", _defaults, _DEFAULTS)
    modules = top.get("modules", parse_modules, {})
    if top.has("regions"):
        regions = parse_regions(doc["regions"], "regions", local, system)
    else:
        regions = (implicit_region(local, system, needed=bool(doc.get("services"))),)
    resolvers = {r.name: len(r.resolvers) for r in regions}
    scope = Scope(defaults, modules, tuple(r.name for r in regions), resolvers)
    services = top.get("services", lambda v, p: parse_services(v, p, scope), ())
    probe = top.get("probe", lambda v, p: parse_probe_policy(v, p, modules), ProbePolicy())
    return Config(defaults=defaults, modules=modules, regions=regions, services=services, probe=probe,
                  routing=top.get("routing", parse_routing, RoutingConfig()),
                  status_pages=top.get("status_pages", parse_status_pages, ()))
