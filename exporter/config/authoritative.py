"""The ``authoritative:`` settings of a check: a zone whose nameservers are asked directly.

The nameservers are discovered from the parent's delegation unless a static ``nameservers`` list is set;
``parents`` then names the servers asked for the delegation.
"""

from __future__ import annotations

from typing import Any

import dns.name

from exporter.config.addresses import join_host_port, parse_dns_server
from exporter.config.errors import ConfigError
from exporter.config.model import AuthoritativeCheck, Resolver, StaticNameserver
from exporter.config.modules import dns_name
from exporter.config.values import Parser, Section, as_duration, as_int, as_str, choices, nonempty_unique, unique

_AUTHORITATIVE_KEYS = ("zone", "port", "nameservers", "parents", "transports", "query_names", "ip_protocols",
                       "rediscover_interval")


AUTHORITATIVE_DEFAULTS = AuthoritativeCheck(zone="")


def parse_authoritative(raw: Any, path: str) -> AuthoritativeCheck:
    s = Section(raw, path, _AUTHORITATIVE_KEYS)
    zone = s.require("zone", _zone)
    port = s.get("port", _port_number, AUTHORITATIVE_DEFAULTS.port)
    nameservers = s.get("nameservers", lambda v, p: unique(v, p, _static_nameserver(port), "nameserver address",
                                                             _static_key), ())
    if s.has("nameservers") and not nameservers:
        raise ConfigError(s.path_of("nameservers"), "must not be empty (leave it out to discover them)")
    if nameservers:
        for key in ("parents", "rediscover_interval"):
            if s.has(key):
                raise ConfigError(s.path_of(key), "only applies when nameservers are discovered (a static "
                                                  '"nameservers" list is set)')
    return AuthoritativeCheck(
        zone=zone,
        nameservers=nameservers,
        parents=s.get("parents", lambda v, p: nonempty_unique(v, p, _server_address(port), "parent",
                                                                _resolver_name), ()),
        transports=s.get("transports", choices(("udp", "tcp"), "transport"), AUTHORITATIVE_DEFAULTS.transports),
        query_names=s.get("query_names", lambda v, p: nonempty_unique(v, p, _name_in(zone), "query name",
                                                                        _name_key), ()),
        ip_protocols=s.get("ip_protocols", choices(("ip4", "ip6"), "IP protocol"), AUTHORITATIVE_DEFAULTS.ip_protocols),
        rediscover_interval=s.get("rediscover_interval", as_duration, AUTHORITATIVE_DEFAULTS.rediscover_interval),
        port=port,
    )


def _zone(v: Any, p: str) -> str:
    text = dns_name(v, p)
    name = dns.name.from_text(text)
    if name == dns.name.root:
        raise ConfigError(p, "must be a zone below the root (it is read from its parent's delegation)")
    return name.to_text(omit_final_dot=True).lower()


def _name_in(zone: str) -> Parser[str]:
    origin = dns.name.from_text(zone)

    def parse(v: Any, p: str) -> str:
        text = dns_name(v, p)
        if not dns.name.from_text(text).is_subdomain(origin):
            raise ConfigError(p, f'"{text}" is not in zone {zone} (its nameservers only answer for the zone)')
        return text

    return parse


def _port_number(v: Any, p: str) -> int:
    n = as_int(v, p)
    if not 0 < n < 65536:
        raise ConfigError(p, f"must be a port number (1-65535), got {n}")
    return n


def _server_address(default_port: int) -> Parser[Resolver]:
    """``ip`` or ``ip:port`` (``[v6]:port``) of a DNS server asked directly; no port = ``default_port``."""

    def parse(v: Any, p: str) -> Resolver:
        text = as_str(v, p).strip()
        if "://" in text:
            raise ConfigError(p, f'invalid nameserver address "{text}": expected ip or ip:port')
        try:
            server = parse_dns_server(text)
        except ValueError as e:
            raise ConfigError(p, str(e).replace("resolver address", "nameserver address")) from None
        explicit = text.count(":") == 1 or (text.startswith("[") and "]:" in text)
        port = server.port if explicit else default_port
        return Resolver(name=join_host_port(server.host, port), host=server.host, port=port)

    return parse


def _static_nameserver(default_port: int) -> Parser[StaticNameserver]:
    address = _server_address(default_port)

    def parse(v: Any, p: str) -> StaticNameserver:
        text = as_str(v, p)
        name, sep, rest = text.partition("=")
        if sep:
            name = dns.name.from_text(dns_name(name.strip(), p)).to_text(omit_final_dot=True).lower()
        try:
            server = address(rest.strip() if sep else text, p)
        except ConfigError:
            raise ConfigError(p, f'invalid nameserver "{text}": expected "name=ip[:port]" or "ip[:port]" '
                                 "(the address is not looked up)") from None
        return StaticNameserver(name=name if sep else "", address=server.host, port=server.port)

    return parse


def _static_key(ns: StaticNameserver) -> str:
    return join_host_port(ns.address, ns.port)


def _resolver_name(server: Resolver) -> str:
    return server.name


def _name_key(name: str) -> str:
    return dns.name.from_text(name).to_text().lower()
