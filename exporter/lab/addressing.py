"""The lab's address plan: every server gets its own loopback address, so it can fail on its own.

Linux routes all of 127.0.0.0/8 to the loopback interface, so any 127.x.y.z can be bound without root.

    127.1.0.1            parent server (root and the com/net/org/lab TLDs)
    127.10.<fleet>.<n>   authoritative nameservers: one /24 per fleet (its "BGP prefix"), n = 1..
    127.20.<region>.<site>  HTTP(S) edge of a site as seen from a region (region and site from 1)
    127.30.<region>.1    the region's public-style recursive resolver
    127.30.<region>.2    the region's ISP-style recursive resolver

All lab DNS servers share one port and all edges share another (ports are picked at start unless fixed),
because glue records and URLs carry no per-address port: a resolver following a delegation only learns
an address, and a check's URL must be the same in every region.
"""

from __future__ import annotations

PARENT = "127.1.0.1"
RESOLVER_STYLES: tuple[str, ...] = ("public", "isp")  # order = the order regions list their resolvers


def nameserver(fleet_index: int, n: int) -> str:
    return f"127.10.{_octet(fleet_index, 'fleet')}.{_octet(n + 1, 'nameserver')}"


def edge(region_index: int, site_index: int) -> str:
    return f"127.20.{_octet(region_index + 1, 'region')}.{_octet(site_index + 1, 'site')}"


def resolver(region_index: int, style: str) -> str:
    return f"127.30.{_octet(region_index + 1, 'region')}.{RESOLVER_STYLES.index(style) + 1}"


def region_of_resolver(address: str) -> int | None:
    """Index of the region whose resolver owns ``address`` (for per-region views), else None."""
    parts = address.split(".")
    if len(parts) == 4 and parts[:2] == ["127", "30"] and parts[2].isdigit():
        return int(parts[2]) - 1
    return None


def _octet(value: int, what: str) -> int:
    if not 0 <= value <= 254:
        raise ValueError(f"too many {what}s for the lab address plan (index {value})")
    return value
