"""The exporter configuration that probes a lab world, as the dict its YAML file would load into.

Per site: a ``dns`` check (the site's www name asked through each of the region's resolvers), an
``http``/``https`` check of its URL, and an ``authns`` check asking the nameservers of the site's zone
directly (discovered from the lab's parent server, whose address and the shared DNS port the config
carries). The HTTP check resolves the hostname through the same resolvers, so a DNS outage also shows up
as a DNS failure of the HTTP check, and each region reaches its own edge because the lab's zones answer
per region; with ``two_path`` it also probes the edge address DNS gave last, so "DNS gone, origin alive"
can be told from "origin gone too". Control sites carry ``control: true``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exporter.lab.world import World

INTERVAL = "5s"
TIMEOUT = "4s"  # ISP-style resolvers take longer than this to give up on a silent nameserver
CONCURRENCY = 64
PINNED_MAX_AGE = "1h"  # wall time: longer than a replayed DNS outage lasts, so the pinned path stays up


def exporter_config(world: World) -> dict:
    return {
        "defaults": {"interval": INTERVAL, "timeout": TIMEOUT, "concurrency": CONCURRENCY},
        "modules": _modules(world),
        "regions": [
            {"name": r.name, "display_name": r.display_name, "latitude": r.latitude,
             "longitude": r.longitude, "resolvers": world.resolver_addresses(r.name)}
            for r in world.regions
        ],
        "services": [_service(world, site.name) for site in world.sites],
    }


def _modules(world: World) -> dict:
    http: dict = {"preferred_ip_protocol": "ip4"}
    if world.ca_file:
        http["tls_config"] = {"ca_file": world.ca_file}
    return {
        "http_2xx": {"prober": "http", "timeout": TIMEOUT, "http": http},
        "dns_a": {"prober": "dns", "timeout": TIMEOUT,
                  "dns": {"query_type": "A", "preferred_ip_protocol": "ip4"}},
    }


def _service(world: World, name: str) -> dict:
    site = world.service(name)
    return {
        "name": site.name,
        "provider": site.provider,
        "checks": [
            {"name": "dns", "module": "dns_a", "query_name": site.hostname, "control": site.control},
            {"name": world.scheme, "module": "http_2xx", "targets": [world.url(site.name)],
             "two_path": {"enabled": True, "max_age": PINNED_MAX_AGE}, "control": site.control},
            {"name": "authns", "control": site.control, "authoritative": {
                "zone": site.zone, "parents": [world.parent_address], "port": world.dns_port,
                "ip_protocols": ["ip4"], "query_names": [site.hostname]}},
        ],
    }
