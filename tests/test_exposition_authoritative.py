"""exporter.exposition.authoritative: a zone check's per-nameserver and per-zone series in /metrics."""

from __future__ import annotations

from exporter.config.model import AuthoritativeCheck
from exporter.exposition.authoritative import AUTHORITATIVE_FAMILIES, write_zone, zone_labels
from exporter.probers import result as r
from exporter.probers.result import NameserverResult, ZoneReport
from tests.helpers.factories import make_check
from tests.helpers.text import families_text, sample

ZONE = AuthoritativeCheck(zone="example.test")


def _text(report: ZoneReport) -> str:
    labels = zone_labels(make_check("authns", service="shop", provider="acme", region="eu-west", authoritative=ZONE))
    return families_text(AUTHORITATIVE_FAMILIES, lambda out: write_zone(labels, report, out))


def test_each_nameserver_address_and_transport_has_its_own_series() -> None:
    report = ZoneReport(zone="example.test", nameservers=(
        NameserverResult("ns1.example.test", "127.0.0.1", "udp", up=True, duration_seconds=0.01, rcode=0, aa=True,
                         serial=7),
        NameserverResult("ns1.example.test", "127.0.0.1", "tcp", up=True, rcode=0, aa=True, serial=7),
        NameserverResult("ns2.example.test", "127.0.0.2", "udp", up=False, reason=r.DNS_TIMEOUT)))
    text = _text(report)
    zone = {"service": "shop", "provider": "acme", "region": "eu-west", "check": "authns", "zone": "example.test"}
    ns1 = {**zone, "nameserver": "ns1.example.test", "address": "127.0.0.1", "transport": "udp"}
    ns2 = {**zone, "nameserver": "ns2.example.test", "address": "127.0.0.2", "transport": "udp"}
    assert sample(text, "outage_dns_authoritative_up", **ns1) == 1
    assert sample(text, "outage_dns_authoritative_soa_serial", **ns1) == 7
    assert sample(text, "outage_dns_authoritative_up", **ns2) == 0
    assert sample(text, "outage_dns_authoritative_failure_info", **ns2, reason=r.DNS_TIMEOUT) == 1
    assert sample(text, "outage_dns_authoritative_failure_info", **ns1) is None  # up: no failure series
    assert sample(text, "outage_dns_authoritative_rcode", **ns2) is None  # no answer: no rcode
    assert sample(text, "outage_dns_zone_nameservers", **zone) == 2  # addresses, not address x transport
    assert sample(text, "outage_dns_zone_nameservers_answering", **zone) == 1
    assert sample(text, "outage_dns_zone_serials_agree", **zone) == 1
    assert sample(text, "outage_dns_zone_discovery_success", **zone) is None  # a static list is not discovered


def test_serials_disagreeing_and_discovery_are_reported_per_zone() -> None:
    report = ZoneReport(zone="example.test", discovery_success=False, last_discovery=1_700_000_000.0, set_changes=3,
                        nameservers=tuple(NameserverResult(f"ns{i}.example.test", f"127.0.0.{i}", "udp", up=True,
                                                           serial=i) for i in (1, 2)))
    text = _text(report)
    assert sample(text, "outage_dns_zone_serials_agree") == 0
    assert sample(text, "outage_dns_zone_discovery_success") == 0
    assert sample(text, "outage_dns_zone_last_discovery_timestamp_seconds") == 1_700_000_000.0
    assert sample(text, "outage_dns_zone_nameserver_set_changes_total") == 3
