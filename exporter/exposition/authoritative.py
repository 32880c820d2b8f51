"""Authoritative checks in ``/metrics``: one series set per nameserver address and transport, one per zone.

These families carry their own labels instead of the six identity labels: a zone check has many
nameservers, so the per-nameserver series are labelled ``service, provider, region, check, zone,
nameserver, address, transport`` and the per-zone ones ``service, provider, region, check, zone``. The
check itself also appears in the common families (``probe_success`` ...) with ``target`` = the zone.
"""

from __future__ import annotations

from exporter.checks import Check
from exporter.exposition.probe import Family, Pieces, format_value, label_pair
from exporter.probers import result as r
from exporter.probers.result import ZoneReport


def _g(name: str, help: str) -> Family:
    return Family(name, "gauge", help)


NS_UP = _g("outage_dns_authoritative_up",
           "Whether the nameserver address answered the zone's SOA with NOERROR and the AA flag (1) or not (0).")
NS_DURATION = _g("outage_dns_authoritative_duration_seconds",
                 "How long the nameserver took to answer the SOA query (or to fail), in seconds.")
NS_RCODE = _g("outage_dns_authoritative_rcode", "Response code of the nameserver's SOA answer.")
NS_AA = _g("outage_dns_authoritative_aa", "Whether the nameserver's SOA answer had the AA flag set (1) or not (0).")
NS_SERIAL = _g("outage_dns_authoritative_soa_serial", "SOA serial the nameserver answered with.")
NS_FAILURE = _g("outage_dns_authoritative_failure_info",
                "Why the nameserver address is not up (value 1); absent while it is up.")
ZONE_NAMESERVERS = _g("outage_dns_zone_nameservers", "Nameserver addresses of the zone being probed.")
ZONE_ANSWERING = _g("outage_dns_zone_nameservers_answering",
                    "Nameserver addresses of the zone up over at least one transport.")
ZONE_SERIALS_AGREE = _g("outage_dns_zone_serials_agree",
                        "Whether every answering nameserver address reports the same SOA serial (1) or not (0).")
ZONE_CHANGES = Family("outage_dns_zone_nameserver_set_changes_total", "counter",
                      "Times discovery found a different nameserver set for the zone.")
ZONE_DISCOVERY = _g("outage_dns_zone_discovery_success",
                    "Whether the latest discovery of the zone's nameservers succeeded (1) or not (0).")
ZONE_LAST_DISCOVERY = _g("outage_dns_zone_last_discovery_timestamp_seconds",
                         "Unix time at which the latest discovery of the zone's nameservers finished.")

AUTHORITATIVE_FAMILIES: tuple[Family, ...] = (
    NS_UP, NS_DURATION, NS_RCODE, NS_AA, NS_SERIAL, NS_FAILURE,
    ZONE_NAMESERVERS, ZONE_ANSWERING, ZONE_SERIALS_AGREE, ZONE_CHANGES, ZONE_DISCOVERY, ZONE_LAST_DISCOVERY,
)


def zone_labels(check: Check) -> str:
    """``service="..",provider="..",region="..",check="..",zone=".."`` for a zone check."""
    pairs = (("service", check.service), ("provider", check.provider), ("region", check.region),
             ("check", check.check), ("zone", check.target))
    return ",".join(label_pair(name, value) for name, value in pairs)


def write_zone(labels: str, report: ZoneReport, out: Pieces) -> None:
    """Append the series of one zone report; ``labels`` comes from :func:`zone_labels`."""
    for ns in report.nameservers:
        own = (f"{{{labels},{label_pair('nameserver', ns.nameserver)},{label_pair('address', ns.address)},"
               f"{label_pair('transport', ns.transport)}")
        plain = own + "} "
        out[NS_UP.name] += (NS_UP.name, plain, "1\n" if ns.up else "0\n")
        out[NS_DURATION.name] += (NS_DURATION.name, plain, format_value(ns.duration_seconds) or "0", "\n")
        if ns.rcode is not None:
            out[NS_RCODE.name] += (NS_RCODE.name, plain, str(ns.rcode), "\n")
        if ns.aa is not None:
            out[NS_AA.name] += (NS_AA.name, plain, "1\n" if ns.aa else "0\n")
        if ns.serial is not None:
            out[NS_SERIAL.name] += (NS_SERIAL.name, plain, str(ns.serial), "\n")
        if not ns.up:
            reason = ns.reason or r.INTERNAL
            out[NS_FAILURE.name] += (NS_FAILURE.name, own, ",", label_pair("reason", reason), "} 1\n")
    plain = f"{{{labels}}} "
    out[ZONE_NAMESERVERS.name] += (ZONE_NAMESERVERS.name, plain, str(report.addresses), "\n")
    out[ZONE_ANSWERING.name] += (ZONE_ANSWERING.name, plain, str(report.answering), "\n")
    agree = report.serials_agree
    if agree is not None:
        out[ZONE_SERIALS_AGREE.name] += (ZONE_SERIALS_AGREE.name, plain, "1\n" if agree else "0\n")
    out[ZONE_CHANGES.name] += (ZONE_CHANGES.name, plain, str(report.set_changes), "\n")
    if report.discovery_success is not None:
        out[ZONE_DISCOVERY.name] += (ZONE_DISCOVERY.name, plain, "1\n" if report.discovery_success else "0\n")
    if report.last_discovery > 0:
        value = format_value(report.last_discovery) or "0"
        out[ZONE_LAST_DISCOVERY.name] += (ZONE_LAST_DISCOVERY.name, plain, value, "\n")
