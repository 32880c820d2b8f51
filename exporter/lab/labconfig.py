"""The exporter configuration that probes a lab world, as the dict its YAML file would load into.

Per site: a ``dns`` check (the site's www name asked through each of the region's resolvers), an
``http``/``https`` check of its URL, and an ``authns`` check asking the nameservers of the site's zone
directly (discovered from the lab's parent server, whose address and the shared DNS port the config
carries). The HTTP check resolves the hostname through the same resolvers, so a DNS outage also shows up
as a DNS failure of the HTTP check, and each region reaches its own edge because the lab's zones answer
per region; with ``two_path`` it also probes the edge address DNS gave last, so "DNS gone, origin alive"
can be told from "origin gone too". Control sites carry ``control: true``.

``routing`` reads the world's RIS-Live emulator (initial state from its looking glass) and watches the
prefixes of the nameservers the authoritative checks discover, one /24 per fleet as the lab's address plan
announces them; ``status_pages`` polls the world's Statuspage-style page of each provider.
"""

from __future__ import annotations

from typing import Protocol

from exporter.config.durations import format_duration
from exporter.config.model import Defaults
from exporter.lab.catalog import RegionSpec, SiteSpec

# The product's defaults, written out: the lab probes as a default install does, so what pages in the lab
# (and when) is what pages in production. ISP-style resolvers take longer than TIMEOUT to give up on a
# silent nameserver, so clients see timeouts there.
INTERVAL = format_duration(Defaults().interval)
TIMEOUT = format_duration(Defaults().timeout)
CONCURRENCY = 64
STATUS_PAGE_INTERVAL = "5s"  # shorter than the shipped 60s: a replayed story is minutes long
PINNED_MAX_AGE = "1h"  # wall time: longer than a replayed DNS outage lasts, so the pinned path stays up


class World(Protocol):
    """What the config reads of a lab world: the simulated one (world.py) and the real one (netlab) both fit."""

    regions: tuple[RegionSpec, ...]
    sites: tuple[SiteSpec, ...]

    @property
    def scheme(self) -> str: ...

    @property
    def ca_file(self) -> str | None: ...

    @property
    def dns_port(self) -> int: ...

    @property
    def parent_address(self) -> str: ...

    def service(self, name: str) -> SiteSpec: ...

    def resolver_addresses(self, region: str) -> list[str]: ...

    def url(self, service: str) -> str: ...


def exporter_config(world: World) -> dict:
    return {**_probes(world), **_signals(world)}


def _probes(world: World) -> dict:
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


def _signals(world: World) -> dict:
    """``routing`` and ``status_pages`` reading the world's emulators; none for a world without them."""
    ris, pages = getattr(world, "ris", None), getattr(world, "status_pages", None)
    if ris is None or pages is None:
        return {}
    return {
        "routing": {"enabled": True, "endpoint": ris.ws_url, "initial_state": ris.looking_glass_url,
                    "derive": {"nameservers": True, "ipv4_mask": 24}},
        "status_pages": [
            {"provider": provider, "url": pages.url(provider), "interval": STATUS_PAGE_INTERVAL,
             "timeout": TIMEOUT, "components": page.components}
            for provider, page in pages.pages.items()
        ],
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
