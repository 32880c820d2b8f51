"""exporter.lab.zones: zone data with per-region views, answered as an authoritative server would."""

from __future__ import annotations

import dns.name
import dns.rdatatype

from exporter.lab import catalog as c
from exporter.lab.zones import add_site, build_zone

NAMESERVERS = (("ns1.shop.test", "127.10.0.1"), ("ns2.shop.test", "127.10.0.2"))


def _zone():
    zone = build_zone("shop.test", NAMESERVERS, dict(NAMESERVERS))
    add_site(zone, ("127.20.1.1", "127.20.2.1"))
    return zone


def _name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


def test_the_apex_and_www_answer_with_the_asking_regions_edge() -> None:
    zone = _zone()
    for name in ("shop.test", "www.shop.test"):
        answers = [zone.lookup(_name(name), dns.rdatatype.A, region).answer[0] for region in (0, 1, 7)]
        assert [rrset[0].address for rrset in answers] == ["127.20.1.1", "127.20.2.1", "127.20.1.1"]
        assert answers[0].ttl == c.RECORD_TTL


def test_negative_answers_carry_the_soa_with_the_negative_ttl() -> None:
    zone = _zone()
    missing = zone.lookup(_name("nope.shop.test"), dns.rdatatype.A, 0)
    assert missing.rcode == "NXDOMAIN" and missing.answer == ()
    assert missing.soa is not None and missing.soa.ttl == min(c.SOA_TTL, c.SOA_MINIMUM)
    nodata = zone.lookup(_name("www.shop.test"), dns.rdatatype.AAAA, 0)
    assert nodata.rcode == "NOERROR" and nodata.answer == () and nodata.soa is not None


def test_the_zone_publishes_its_nameservers_and_their_addresses() -> None:
    zone = _zone()
    ns = zone.lookup(_name("shop.test"), dns.rdatatype.NS, 0).answer[0]
    assert sorted(r.target.to_text() for r in ns) == ["ns1.shop.test.", "ns2.shop.test."]
    assert zone.lookup(_name("ns2.shop.test"), dns.rdatatype.A, 0).answer[0][0].address == "127.10.0.2"
    assert zone.soa[0].serial == c.SOA_SERIAL
    assert zone.contains(_name("a.b.shop.test")) and not zone.contains(_name("shop.example"))
