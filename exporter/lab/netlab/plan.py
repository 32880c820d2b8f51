"""The real backend's address plan: everything inside 198.18.0.0/15 (RFC 2544 benchmarking space).

    198.18.0.1              the central namespace (router): Prometheus listens here
    198.18.1.1              parent server (root and the com/net/org/lab TLDs)
    198.18.<10+fleet>.<n>   authoritative nameservers: one /24 per fleet (its "BGP prefix"), n = 1..
    198.18.20.<site>        the site's edge (one address per site, anycast style; site from 1)
    198.18.<30+region>.1    the region's public-style recursive resolver (Unbound)
    198.18.<30+region>.2    the region's ISP-style recursive resolver (Unbound)
    198.18.<30+region>.10   the region's probe host: the exporter of that region listens here
    198.19.<link>.0/30      the link between the router (.1) and one namespace (.2)

Service addresses sit on the loopback device of their namespace as /32s; the router carries a route for
each namespace's /24 through its link, and every other namespace has a single route for 198.18.0.0/15
through the router, never a default route. Nothing is reachable outside the lab.
"""

from __future__ import annotations

import ipaddress

LAB_NET = ipaddress.ip_network("198.18.0.0/15")
CENTRAL = "198.18.0.1"
PARENT = "198.18.1.1"
EXPORTER_HOST = 10
RESOLVER_STYLES: tuple[str, ...] = ("public", "isp")


def nameserver(fleet_index: int, n: int) -> str:
    return f"198.18.{_octet(10 + fleet_index, 'fleet', 19)}.{_octet(n + 1, 'nameserver')}"


def fleet_prefix(fleet_index: int) -> str:
    return f"198.18.{_octet(10 + fleet_index, 'fleet', 19)}.0/24"


def edge(site_index: int) -> str:
    return f"198.18.20.{_octet(site_index + 1, 'site')}"


EDGE_PREFIX = "198.18.20.0/24"
PARENT_PREFIX = "198.18.1.0/24"
CENTRAL_PREFIX = "198.18.0.0/24"


def region_prefix(region_index: int) -> str:
    return f"198.18.{_octet(30 + region_index, 'region')}.0/24"


def resolver(region_index: int, style: str) -> str:
    return f"198.18.{_octet(30 + region_index, 'region')}.{RESOLVER_STYLES.index(style) + 1}"


def exporter_host(region_index: int) -> str:
    return f"198.18.{_octet(30 + region_index, 'region')}.{EXPORTER_HOST}"


def link(index: int) -> tuple[str, str]:
    """(router end, far end) addresses of link ``index``, each as ``ip/30``."""
    base = f"198.19.{_octet(index, 'link')}"
    return f"{base}.1/30", f"{base}.2/30"


def in_lab(address: str) -> bool:
    return ipaddress.ip_address(address.split("/")[0]) in LAB_NET


def _octet(value: int, what: str, limit: int = 254) -> int:
    if not 0 <= value <= limit:
        raise ValueError(f"too many {what}s for the lab address plan (index {value})")
    return value
