"""Addresses written in a config: DNS servers (``ip``, ``ip:port``, ``[v6]:port``, ``tls://ip[:port]``)
and http(s) URLs. Parsed once by the loader; :func:`exporter.checks.expand` uses the same parser.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

from exporter.config.model import Resolver


def parse_dns_server(text: str) -> Resolver:
    """Parse a resolver / DNS server address: ``ip``, ``ip:port``, ``[v6]:port``, ``tls://ip[:port]``.

    ``system`` is expanded by the config loader (it needs /etc/resolv.conf); here it is rejected.
    Raises ValueError with a message fit for a config error.
    """
    raw = text.strip()
    tls = False
    if raw.startswith("tls://"):
        tls, raw = True, raw[len("tls://"):]
    elif "://" in raw:
        raise ValueError(f"unsupported resolver scheme in {text!r} (use ip, ip:port or tls://ip[:port])")
    default_port = 853 if tls else 53
    host, port = raw, default_port
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            raise ValueError(f"invalid resolver address {text!r}: missing ']'")
        host = raw[1:end]
        rest = raw[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"invalid resolver address {text!r}")
            port = _port(rest[1:], text)
    elif raw.count(":") == 1:
        host, p = raw.split(":")
        port = _port(p, text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"invalid resolver address {text!r}: expected an IP address, not a hostname") from None
    return Resolver(name=text.strip(), host=host, port=port, tls=tls)


def parse_dns_server_or_host(text: str) -> Resolver:
    """Like parse_dns_server, but a hostname (``ns1.example.com[:53]``) is kept for the prober to resolve."""
    try:
        return parse_dns_server(text)
    except ValueError:
        host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
        return Resolver(name=text, host=host or text, port=_port(port, text) if port else 53)


def _port(p: str, text: str) -> int:
    if not p.isdigit() or not 0 < int(p) < 65536:
        raise ValueError(f"invalid port in resolver address {text!r}")
    return int(p)


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_WHITESPACE = re.compile(r"\s")


def is_http_url(text: str) -> bool:
    if _WHITESPACE.search(text):
        return False
    try:
        parts = urllib.parse.urlsplit(text)
        _ = parts.port  # raises ValueError for a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
