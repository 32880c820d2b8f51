"""Knot DNS as the lab's authoritative servers: one ``knotd`` per address (the parent and each nameserver).

One daemon per address lets one nameserver ``refuse`` on its own: its configuration is reloaded without
zones (``knotc reload``) and Knot answers REFUSED for names it is not authoritative for. ``blackhole`` is
not Knot's business: the router drops the traffic (world.py).
"""

from __future__ import annotations

from pathlib import Path

from exporter.lab.netlab import daemons, zonefiles
from exporter.lab.netlab.daemons import Daemon
from exporter.lab.netlab.netns import Namespaces, run
from exporter.lab.zones import Zone


def config_text(directory: Path, address: str, zone_files: dict[str, Path]) -> str:
    """knot.conf for one server on ``address``:53 publishing ``zone_files`` (origin -> file)."""
    lines = [
        "server:",
        f'    rundir: "{directory}"',
        f"    listen: {address}@53",
        "    udp-workers: 1",
        "    tcp-workers: 1",
        "    background-workers: 1",
        "log:",
        "  - target: stderr",
        "    any: warning",
        "database:",
        f'    storage: "{directory / "db"}"',
        "control:",
        f'    listen: "{directory / "knot.sock"}"',
        "template:",
        "  - id: default",
        "    zonefile-sync: -1",
        "    zonefile-load: whole",
        "    journal-content: none",
        "    semantic-checks: off",
    ]
    if zone_files:
        lines.append("zone:")
        for origin, path in zone_files.items():
            lines += [f'  - domain: "{origin}"', f'    file: "{path}"']
    return "\n".join(lines) + "\n"


class KnotServer:
    """One knotd on one address; ``state`` ``up`` publishes its zones, ``refuse`` publishes none."""

    def __init__(self, name: str, address: str, zones: list[Zone], speed: float, netns: Namespaces, ns: str,
                 directory: Path) -> None:
        self.name = name
        self.address = address
        self.directory = directory
        self.refusing = False
        directory.mkdir(parents=True, exist_ok=True)
        self.zone_files: dict[str, Path] = {}
        for zone in zones:
            path = directory / zonefiles.file_name(zone.origin)
            path.write_text(zonefiles.zone_text(zone, speed))
            self.zone_files[zone.origin.to_text()] = path
        self.config = directory / "knot.conf"
        self._write_config()
        self.daemon = Daemon(f"knotd {name}", netns, ns, [daemons.binary("knotd"), "-c", str(self.config)],
                             directory / "knotd.log")

    def _write_config(self) -> None:
        self.config.write_text(config_text(self.directory, self.address,
                                           {} if self.refusing else self.zone_files))

    def start(self) -> None:
        self.daemon.start()

    def set_refusing(self, refusing: bool) -> None:
        if refusing == self.refusing:
            return
        self.refusing = refusing
        self._write_config()
        run(daemons.binary("knotc"), "-c", str(self.config), "-s", str(self.directory / "knot.sock"), "reload")

    def stop(self) -> None:
        self.daemon.stop()
