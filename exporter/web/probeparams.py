"""Validation of /probe's query parameters, before anything is looked up or probed.

Every value a client sends is checked here, so a prober never sees text it was not built for: control
characters (header injection through ``hostname``, forged lines in logs), names DNS or TLS cannot encode
(an empty or 64-character label), ports out of range, repeated or over-long parameters. A problem is a
400 with one line naming the parameter; ``internal`` stays what it means, a bug in the exporter.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Mapping

import dns.exception
import dns.name
from multidict import MultiMapping

from exporter.checks import Check
from exporter.web.probeguard import endpoint_of

# The parameters /probe reads, with the longest value each accepts (characters). Others are ignored.
LIMITS: Mapping[str, int] = {"target": 4096, "module": 128, "region": 128, "hostname": 261, "debug": 5}
DEBUG_VALUES = ("", "true", "false")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?", re.IGNORECASE)
_MAX_NAME = 253
_REJECTED_CATEGORIES = ("Cc", "Cs", "Zl", "Zp")  # control, lone surrogate, line and paragraph separators


def query_problem(query: MultiMapping[str]) -> str | None:
    """What is wrong with the request's parameters (one line naming the parameter), or None."""
    for name, limit in LIMITS.items():
        values = query.getall(name, [])
        if len(values) > 1:
            return f'parameter "{name}" is given {len(values)} times; give it once'
        if not values:
            continue
        problem = _value_problem(values[0], limit)
        if problem is None and name == "debug" and values[0].lower() not in DEBUG_VALUES:
            problem = "must be true or false"
        if problem is None and name == "hostname" and values[0]:
            problem = hostname_problem(values[0])
        if problem is not None:
            return f'parameter "{name}" {problem}'
    return None


def _value_problem(value: str, limit: int) -> str | None:
    if len(value) > limit:
        return f"is {len(value)} characters long; at most {limit} are accepted"
    for char in value:
        if unicodedata.category(char) in _REJECTED_CATEGORIES:
            return f"contains the control character U+{ord(char):04X}"
    return None


def hostname_problem(text: str) -> str | None:
    """``hostname`` is a Host header and TLS server name: a host name or address, with an optional port."""
    host, port = text, None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else (None if not rest else "")
        if not _is_ipv6(host):
            return f"is not a host name or address: {text!r}"
    elif text.count(":") == 1:
        host, port = text.split(":")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        return f"has an invalid port: {text!r}"
    why = host_problem(host)
    return None if why is None else f"is not a host name or address ({why}): {text!r}"


def host_problem(host: str) -> str | None:
    """Why ``host`` (no brackets, no port) is neither an IP address nor a name DNS and TLS can carry."""
    if _is_ip(host):
        return None
    name = host if host.isascii() else _idn_ascii(host)
    if name is None:
        return "not encodable as an internationalized name"
    name = name[:-1] if name.endswith(".") else name
    if not name:
        return "empty name"
    if len(name) > _MAX_NAME:
        return f"name longer than {_MAX_NAME} characters"
    for label in name.split("."):
        if not _LABEL.fullmatch(label):
            return "empty label" if not label else f"invalid label {label[:70]!r}"
    return None


def target_problem(check: Check) -> str | None:
    """Why the ad-hoc check's target (URL, host:port or DNS server) cannot be probed, or None."""
    if check.dns_server is not None:  # its port was checked when it was parsed; a name keeps its brackets
        why = host_problem(check.dns_server.host)
        return None if why is None else f"invalid DNS server: {why}"
    endpoint = endpoint_of(check)
    if endpoint is None:
        return f"not {'an http(s) URL with a host' if check.prober == 'http' else 'host:port'} and a valid port"
    if not 0 < endpoint.port < 65536:
        return f"port {endpoint.port} is out of range"
    why = host_problem(endpoint.host)
    return None if why is None else f"invalid host: {why}"


def _idn_ascii(host: str) -> str | None:
    """The ASCII form of an internationalized name, if both encoders a probe meets agree it has one: DNS
    (IDNA 2008, for the lookup) and the TLS stack (IDNA 2003, for the server name)."""
    try:
        host.encode("idna")
        return dns.name.from_text(host).to_text(omit_final_dot=True)
    except (UnicodeError, dns.exception.DNSException):
        return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_ipv6(host: str) -> bool:
    return ":" in host and _is_ip(host)
