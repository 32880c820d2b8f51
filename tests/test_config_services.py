"""Services and their checks: what a check's keys turn into (modules, targets, timeouts) and what they expand to."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter import checks
from exporter.config import load_config
from exporter.config.model import Resolver
from tests.helpers.configfiles import TESTDATA

pytestmark = pytest.mark.usefixtures("yaml_loader")


def test_valid_full(tmp_path: Path) -> None:
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 127.0.0.53\nnameserver ::1\n")
    config = load_config(str(TESTDATA / "valid-full.yml"), default_region="test-1", resolv_conf=str(rc))
    assert (config.defaults.interval, config.defaults.timeout, config.defaults.concurrency) == (20.0, 8.0, 64)

    eu, us = config.regions
    assert (eu.name, eu.display_name, eu.latitude, eu.longitude) == ("eu-west", "Europe West", 53.3, -6.3)
    assert eu.resolvers == (
        Resolver("127.0.0.1:5353", "127.0.0.1", 5353),
        Resolver("system", "127.0.0.53", 53),
        Resolver("system#2", "::1", 53),
        Resolver("tls://127.0.0.2", "127.0.0.2", 853, tls=True),
        Resolver("[::1]:5300", "::1", 5300),
    )
    assert (us.name, us.resolvers, us.latitude) == ("us-east", (Resolver("127.0.0.3", "127.0.0.3"),), None)

    facebook, health = config.services
    assert (facebook.provider, health.provider) == ("meta", "resolver-health")  # provider defaults to name
    dns_check, soa, https = facebook.checks
    assert dns_check.module is config.modules["dns_a"]
    assert (dns_check.query_name, dns_check.interval, dns_check.timeout, dns_check.targets) == (
        "facebook.com", 30.0, 8.0, ())
    assert soa.targets == ("127.0.0.9", "tls://127.0.0.10:8853")
    assert (soa.regions, soa.query_name) == (("us-east",), None)
    assert soa.module.timeout == 2.0  # the module's own timeout stays on the module
    assert (https.interval, https.timeout) == (60.0, 15.0)

    control, smtp, v6 = health.checks
    assert control.control and not smtp.control
    assert (control.module.name, control.module.dns.query_type) == ("resolver-health/control", "NS")
    assert "resolver-health/control" not in config.modules
    assert (smtp.targets, smtp.interval, smtp.timeout) == (("mail.example.org:25",), 5.0, 5.0)  # capped
    assert v6.targets == ("[::1]:443", "127.0.0.1:443")

    expanded = checks.expand(config)
    # dns: 5+1 resolvers; soa: 2 servers in us-east; https: 2 targets x 2 regions;
    # control: 6 resolvers; smtp: 1 target x 2 regions; v6: 2 targets in eu-west.
    assert len(expanded) == 6 + 2 + 4 + 6 + 2 + 2
    soa_checks = [c for c in expanded if c.check == "soa"]
    assert {(c.region, c.resolver, c.query_name, c.timeout) for c in soa_checks} == {
        ("us-east", "127.0.0.9", "example.org", 2.0),
        ("us-east", "tls://127.0.0.10:8853", "example.org", 2.0),
    }
