"""The ``authoritative:`` section of a check (exporter/config/authoritative.py): what it turns into, and each
error with the YAML path it names."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.config.authoritative import parse_authoritative
from exporter.config.errors import ConfigError
from exporter.config.model import AuthoritativeCheck, Resolver, StaticNameserver

PATH = "services[0].checks[0].authoritative"


def test_a_zone_alone_discovers_its_nameservers_with_the_defaults() -> None:
    assert parse_authoritative({"zone": "Facebook.COM."}, PATH) == AuthoritativeCheck(
        zone="facebook.com", nameservers=(), parents=(), transports=("udp", "tcp"), query_names=(),
        ip_protocols=("ip4", "ip6"), rediscover_interval=300.0, port=53)


def test_parents_take_the_port_unless_they_name_one() -> None:
    parsed = parse_authoritative({
        "zone": "facebook.com", "port": 5300, "parents": ["127.1.0.1", "127.1.0.2:53", "[::1]:5301", "::2"],
        "query_names": ["www.facebook.com", "facebook.com"], "transports": ["tcp"], "ip_protocols": ["ip6"],
        "rediscover_interval": "10m"}, PATH)
    assert parsed == AuthoritativeCheck(
        zone="facebook.com",
        parents=(Resolver("127.1.0.1:5300", "127.1.0.1", 5300), Resolver("127.1.0.2:53", "127.1.0.2", 53),
                 Resolver("[::1]:5301", "::1", 5301), Resolver("[::2]:5300", "::2", 5300)),
        transports=("tcp",), query_names=("www.facebook.com", "facebook.com"), ip_protocols=("ip6",),
        rediscover_interval=600.0, port=5300)


def test_static_nameservers_are_named_or_bare_addresses() -> None:
    parsed = parse_authoritative({"zone": "facebook.com", "port": 5300, "nameservers": [
        "a.ns.facebook.com=127.10.0.1", "B.NS.facebook.com. = 127.10.0.2:5353", "::1", "[::2]:54"]}, PATH)
    assert parsed.nameservers == (
        StaticNameserver("a.ns.facebook.com", "127.10.0.1", 5300),
        StaticNameserver("b.ns.facebook.com", "127.10.0.2", 5353),
        StaticNameserver("", "::1", 5300),
        StaticNameserver("", "::2", 54),
    )
    assert parsed.parents == () and parsed.rediscover_interval == 300.0


@pytest.mark.parametrize(("raw", "message"), [
    ({}, f'{PATH}: missing required key "zone"'),
    (None, f'{PATH}: missing required key "zone"'),
    (["facebook.com"], f"{PATH}: expected a mapping, got a list"),
    ({"zone": "facebook.com", "zones": 1}, f'{PATH}.zones: unknown key "zones"; did you mean "zone"? (allowed: '
                                           "ip_protocols, nameservers, parents, port, query_names, "
                                           "rediscover_interval, transports, zone)"),
    ({"zone": "."}, f"{PATH}.zone: must be a zone below the root (it is read from its parent's delegation)"),
    ({"zone": 5}, f"{PATH}.zone: expected a string, got an integer (put it in quotes)"),
    ({"zone": "bad..name"}, f'{PATH}.zone: invalid DNS name "bad..name": A DNS label is empty.'),
    ({"zone": "facebook.com", "port": 70000}, f"{PATH}.port: must be a port number (1-65535), got 70000"),
    ({"zone": "facebook.com", "port": 0}, f"{PATH}.port: must be a port number (1-65535), got 0"),
    ({"zone": "facebook.com", "port": "53"}, f"{PATH}.port: expected an integer, got a string"),
    ({"zone": "facebook.com", "nameservers": []},
     f"{PATH}.nameservers: must not be empty (leave it out to discover them)"),
    ({"zone": "facebook.com", "nameservers": ["127.0.0.9:5300", "x.facebook.com=127.0.0.9:5300"]},
     f'{PATH}.nameservers[1]: duplicate nameserver address "127.0.0.9:5300" (already used at '
     f"{PATH}.nameservers[0])"),
    ({"zone": "facebook.com", "nameservers": ["a.ns.facebook.com"]},
     f'{PATH}.nameservers[0]: invalid nameserver "a.ns.facebook.com": expected "name=ip[:port]" or "ip[:port]" '
     "(the address is not looked up)"),
    ({"zone": "facebook.com", "nameservers": ["127.0.0.1"], "parents": ["127.0.0.2"]},
     f'{PATH}.parents: only applies when nameservers are discovered (a static "nameservers" list is set)'),
    ({"zone": "facebook.com", "nameservers": ["127.0.0.1"], "rediscover_interval": "5m"},
     f'{PATH}.rediscover_interval: only applies when nameservers are discovered (a static "nameservers" list is '
     "set)"),
    ({"zone": "facebook.com", "parents": []}, f"{PATH}.parents: must not be empty (leave it out for the default)"),
    ({"zone": "facebook.com", "parents": ["127.0.0.1", "127.0.0.1:53"]},
     f'{PATH}.parents[1]: duplicate parent "127.0.0.1:53" (already used at {PATH}.parents[0])'),
    ({"zone": "facebook.com", "parents": ["udp://127.0.0.1"]},
     f'{PATH}.parents[0]: invalid nameserver address "udp://127.0.0.1": expected ip or ip:port'),
    ({"zone": "facebook.com", "transports": ["udp", "tls"]},
     f'{PATH}.transports[1]: invalid value "tls" (allowed: "udp", "tcp")'),
    ({"zone": "facebook.com", "ip_protocols": ["ip5"]},
     f'{PATH}.ip_protocols[0]: invalid value "ip5" (allowed: "ip4", "ip6")'),
    ({"zone": "facebook.com", "query_names": ["www.facebook.com", "www.fb.com"]},
     f'{PATH}.query_names[1]: "www.fb.com" is not in zone facebook.com (its nameservers only answer for the '
     "zone)"),
    ({"zone": "facebook.com", "query_names": ["WWW.facebook.com", "www.facebook.com."]},
     f'{PATH}.query_names[1]: duplicate query name "www.facebook.com." (already used at {PATH}.query_names[0])'),
    ({"zone": "facebook.com", "query_names": []},
     f"{PATH}.query_names: must not be empty (leave it out for the default)"),
    ({"zone": "facebook.com", "rediscover_interval": 300},
     f'{PATH}.rediscover_interval: durations need a unit, e.g. "15s" (got 300)'),
])
def test_errors_name_the_yaml_path(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_authoritative(raw, PATH)
    assert str(info.value) == message


def test_a_parent_named_by_host_name_is_refused_because_it_is_not_looked_up() -> None:
    with pytest.raises(ConfigError) as info:
        parse_authoritative({"zone": "facebook.com", "parents": ["ns.example"]}, PATH)
    assert info.value.path == f"{PATH}.parents[0]"
    assert "invalid nameserver address" in info.value.problem and "not a hostname" in info.value.problem
