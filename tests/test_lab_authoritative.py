"""exporter.lab.authoritative: the parent's referrals, zone servers answering with views, and the
reachability states an outage scenario sets (blackhole: timeouts; refuse: REFUSED)."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import pytest

from exporter.lab.authoritative import ParentServer, ZoneServer
from exporter.lab.dnsserver import client_address
from exporter.lab.zones import add_site, build_zone

NAMESERVERS = (("ns1.shop.test", "127.10.0.1"),)


def _zone_server() -> ZoneServer:
    zone = build_zone("shop.test", NAMESERVERS, dict(NAMESERVERS))
    add_site(zone, ("127.20.1.1", "127.20.2.1"))
    return ZoneServer("ns1", [zone], lambda address: 1 if address == "127.30.2.1" else None)


def _ask(server, name: str, rdtype: str = "A") -> dns.message.Message | None:
    return server(dns.message.make_query(name, rdtype), "udp").message


def test_a_zone_server_answers_authoritatively_with_the_resolvers_view() -> None:
    server = _zone_server()
    token = client_address.set(("127.30.2.1", 40000))
    try:
        answer = _ask(server, "www.shop.test")
    finally:
        client_address.reset(token)
    assert answer is not None and answer.flags & dns.flags.AA and not answer.flags & dns.flags.RA
    assert answer.answer[0][0].address == "127.20.2.1"
    assert _ask(server, "www.shop.test").answer[0][0].address == "127.20.1.1"  # type: ignore[union-attr]
    other = _ask(server, "example.org")
    assert other is not None and other.rcode() == dns.rcode.REFUSED  # not its zone


def test_states_drop_or_refuse_every_query() -> None:
    server = _zone_server()
    server.state = "blackhole"
    assert _ask(server, "shop.test") is None
    server.state = "refuse"
    refused = _ask(server, "shop.test")
    assert refused is not None and refused.rcode() == dns.rcode.REFUSED and not refused.flags & dns.flags.AA
    server.state = "up"
    assert _ask(server, "shop.test", "SOA").rcode() == dns.rcode.NOERROR  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="unknown nameserver state"):
        server.state = "down"


def test_the_parent_refers_to_the_child_with_glue() -> None:
    root = build_zone(".", (("a.root.test", "127.1.0.1"),), {})
    cut = dns.name.from_text("shop.test")
    parent = ParentServer([root], {cut: tuple((dns.name.from_text(n), ip) for n, ip in NAMESERVERS)})
    referral = _ask(parent, "www.shop.test")
    assert referral is not None and not referral.flags & dns.flags.AA and referral.answer == []
    assert referral.authority[0].name == cut and referral.authority[0][0].target.to_text() == "ns1.shop.test."
    assert referral.additional[0][0].address == "127.10.0.1"
    missing = _ask(parent, "nope.example")
    assert missing is not None and missing.rcode() == dns.rcode.NXDOMAIN and missing.flags & dns.flags.AA
