"""exporter.lab.addressing: every lab server on its own loopback address, so each can fail on its own."""

from __future__ import annotations

import ipaddress

import pytest

from exporter.lab import addressing as a


def test_every_server_gets_a_distinct_loopback_address() -> None:
    addresses = [a.PARENT, *(a.nameserver(f, n) for f in range(3) for n in range(4)),
                 *(a.edge(g, s) for g in range(3) for s in range(5)),
                 *(a.resolver(g, style) for g in range(3) for style in a.RESOLVER_STYLES)]
    assert len(set(addresses)) == len(addresses)
    assert all(ipaddress.ip_address(x).is_loopback for x in addresses)
    assert a.nameserver(2, 0) == "127.10.2.1"  # one /24 per fleet: its routing prefix
    assert a.edge(0, 0) == "127.20.1.1" and a.resolver(1, "isp") == "127.30.2.2"


def test_a_resolver_address_names_its_region() -> None:
    assert [a.region_of_resolver(a.resolver(g, "public")) for g in range(3)] == [0, 1, 2]
    assert a.region_of_resolver(a.edge(1, 0)) is None
    assert a.region_of_resolver("127.30.x.1") is None and a.region_of_resolver("::1") is None


def test_a_plan_that_does_not_fit_an_octet_is_refused() -> None:
    with pytest.raises(ValueError, match="too many sites"):
        a.edge(0, 254)
    with pytest.raises(ValueError, match="too many fleets"):
        a.nameserver(255, 0)
