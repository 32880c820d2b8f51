"""Config for authoritative checks, two-path HTTP and vantage health: what valid files turn into."""

from __future__ import annotations

from pathlib import Path

from exporter import checks
from exporter.config import dump_config, load_config, load_config_text
from exporter.config.model import (
    AUTHORITATIVE_MODULE,
    AuthoritativeCheck,
    Resolver,
    StaticNameserver,
    TwoPath,
    VantagePolicy,
)

TESTDATA = Path(__file__).parent / "testdata"


def load(name: str):
    return load_config(str(TESTDATA / name), default_region="test-1")


def test_authoritative_two_path_and_vantage_settings():
    config = load("valid-dns-depth.yml")
    eu, us = config.regions
    assert (eu.vantage, us.vantage) == (VantagePolicy(0.75), VantagePolicy(0.5))
    facebook, control = config.services
    authns, static, https, single = facebook.checks
    assert authns.module is AUTHORITATIVE_MODULE and (authns.targets, authns.query_name) == ((), None)
    assert authns.authoritative == AuthoritativeCheck(
        zone="facebook.com",
        parents=(Resolver("127.1.0.1:5300", "127.1.0.1", 5300), Resolver("127.1.0.2:5300", "127.1.0.2", 5300)),
        query_names=("www.facebook.com", "facebook.com"),
        rediscover_interval=600.0,
        port=5300,
    )
    assert (authns.interval, authns.timeout) == (15.0, 4.0)
    assert static.authoritative.nameservers == (
        StaticNameserver("a.ns.facebook.com", "127.10.0.1", 53),
        StaticNameserver("b.ns.facebook.com", "127.10.0.2", 5353),
        StaticNameserver("", "::1", 53),
    )
    assert (static.authoritative.transports, static.authoritative.ip_protocols) == (("udp",), ("ip4",))
    assert https.two_path == TwoPath(enabled=True, max_age=1800.0) and authns.two_path is None
    assert single.two_path == TwoPath(enabled=False)
    assert control.checks[0].control and control.checks[0].authoritative.rediscover_interval == 300.0
    assert control.checks[0].authoritative.transports == ("udp", "tcp")


def test_authoritative_checks_expand_to_one_check_per_region_with_the_zone_as_target():
    expanded = checks.expand(load("valid-dns-depth.yml"))
    authns = [c for c in expanded if c.prober == "authoritative"]
    assert sorted((c.service, c.check, c.region, c.target, c.resolver) for c in authns) == [
        ("control", "authns", "eu-west", "control.test", ""),
        ("control", "authns", "us-east", "control.test", ""),
        ("facebook", "authns", "eu-west", "facebook.com", ""),
        ("facebook", "authns", "us-east", "facebook.com", ""),
        ("facebook", "authns-static", "us-east", "facebook.com", ""),
    ]
    eu = next(c for c in authns if c.region == "eu-west" and c.check == "authns" and c.service == "facebook")
    assert eu.resolvers == (Resolver("127.0.0.1:5353", "127.0.0.1", 5353),)
    assert eu.vantage == VantagePolicy(0.75) and eu.timeout == 4.0
    https = [c for c in expanded if c.check == "https"]
    assert {c.two_path for c in https} == {TwoPath(max_age=1800.0)}


def test_dump_round_trips_the_new_settings():
    config = load("valid-dns-depth.yml")
    again = load_config_text(dump_config(config))
    assert again.services == config.services
    assert again.regions == config.regions


def test_embedded_default_asks_every_resolver_of_the_region(tmp_path):
    """The resolver matrix: each dns check of the default config runs once per resolver (label resolver)."""
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 127.0.0.53\n")
    config = load_config(None, default_region="here", resolv_conf=str(rc))
    expanded = checks.expand(config)
    resolvers = [r.name for r in config.regions[0].resolvers]
    assert resolvers[0] == "system" and len(resolvers) > 1
    dns_checks = [c for c in expanded if c.prober == "dns"]
    by_service: dict[str, list[str]] = {}
    for c in dns_checks:
        by_service.setdefault(c.service, []).append(c.resolver)
    assert by_service and all(found == resolvers for found in by_service.values())
    assert all(c.dns_server is not None and c.dns_server.name == c.resolver for c in dns_checks)
