"""The exporter configuration that probes a lab world, as the dict its YAML file would load into.

Per site: a ``dns`` check (the site's www name asked through each of the region's resolvers) and an
``http``/``https`` check of its URL. The HTTP check resolves the hostname through the same resolvers,
so a DNS outage also shows up as a DNS failure of the HTTP check, and each region reaches its own edge
because the lab's zones answer per region. Control sites carry ``control: true``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exporter.lab.world import World

INTERVAL = "5s"
TIMEOUT = "4s"  # ISP-style resolvers take longer than this to give up on a silent nameserver
CONCURRENCY = 64


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
             "control": site.control},
        ],
    }
