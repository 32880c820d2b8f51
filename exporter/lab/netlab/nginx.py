"""nginx as the lab's HTTP edges: one server block per site on the site's edge address, port 80.

The answer depends on the client's region, told apart by its source prefix (``geo``): each (site, region)
has a status, 200 or 503 with ``proxy-status: no_server_available``, or, when ``flapping``, 503 for a
``fail_ratio`` share of requests (``split_clients`` on the request id). A mode change rewrites the
configuration and reloads nginx (SIGHUP); :meth:`Edges.settle` waits until the new workers answer, read
from a generation counter on the edge namespace's loopback. Edge modes the router implements
(``blackhole``) are not nginx's business (world.py).
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from pathlib import Path

from exporter.lab import catalog as c
from exporter.lab.edges import PROXY_STATUS, EdgeSetting
from exporter.lab.netlab import daemons, plan
from exporter.lab.netlab.daemons import Daemon, wait_for
from exporter.lab.netlab.netns import Namespaces, http_get

STATUS_PORT = 8081


def _var(*parts: str) -> str:
    return "_".join(p.replace("-", "_") for p in parts)


def config_text(directory: Path, sites: Sequence[c.SiteSpec], regions: Sequence[c.RegionSpec],
                settings: dict[tuple[str, str], EdgeSetting], generation: int) -> str:
    tmp = directory / "tmp"
    out = [
        "worker_processes 1;", "daemon off;", "user root;", f"pid {directory / 'nginx.pid'};",
        f"error_log {directory / 'error.log'} warn;", "events { worker_connections 1024; }", "http {",
        "  access_log off;", "  default_type text/plain;", "  keepalive_timeout 5s;",
        *(f"  {kind}_temp_path {tmp / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        "  geo $lab_region {", "    default none;",
        *(f"    {plan.region_prefix(ri)} {r.name};" for ri, r in enumerate(regions)), "  }",
    ]
    for si, site in enumerate(sites):
        out += _site(si, site, regions, settings)
    out += [f"  server {{ listen 127.0.0.1:{STATUS_PORT}; location = /generation {{ return 200 '{generation}'; }} }}",
            "}"]
    return "\n".join(out) + "\n"


def _site(si: int, site: c.SiteSpec, regions: Sequence[c.RegionSpec],
          settings: dict[tuple[str, str], EdgeSetting]) -> list[str]:
    var = _var("status", site.name)
    out: list[str] = []
    statuses: list[str] = []
    for region in regions:
        setting = settings.get((site.name, region.name), EdgeSetting())
        if setting.mode == "unavailable":
            statuses.append(f"    {region.name} 503;")
        elif setting.mode == "flapping":
            flap = _var("flap", site.name, region.name)
            pct = round(setting.fail_ratio * 100, 1)
            out += [f'  split_clients "${{request_id}}" ${flap} {{ {pct}% 503; * 200; }}'] if pct > 0 else []
            statuses.append(f"    {region.name} {'$' + flap if pct > 0 else '200'};")
    out += [f"  map $lab_region ${var} {{", "    default 200;", *statuses, "  }"]
    out += [
        "  server {",
        f"    listen {plan.edge(si)}:80;",
        "    server_name _;",
        "    location / {",
        f'      if (${var} = 503) {{ add_header proxy-status {PROXY_STATUS} always; '
        f'return 503 "{site.name}: no server available\\n"; }}',
        f'      return 200 "{site.name} ok ($lab_region)\\n";',
        "    }",
        "  }",
    ]
    return out


class Edges:
    """The edges of every site, served by one nginx in the edge namespace."""

    def __init__(self, sites: Sequence[c.SiteSpec], regions: Sequence[c.RegionSpec], netns: Namespaces,
                 ns: str, directory: Path) -> None:
        self.sites = sites
        self.regions = regions
        self.ns = ns
        self.directory = directory
        self.settings: dict[tuple[str, str], EdgeSetting] = {}
        self.generation = 0
        (directory / "tmp").mkdir(parents=True, exist_ok=True)
        self.config = directory / "nginx.conf"
        self._write()
        self.daemon = Daemon("nginx", netns, ns, [daemons.binary("nginx"), "-c", str(self.config),
                                                  "-e", str(directory / "error.log")], directory / "nginx.log")

    def _write(self) -> None:
        self.config.write_text(config_text(self.directory, self.sites, self.regions, self.settings,
                                           self.generation))

    def start(self) -> None:
        self.daemon.start()

    def apply(self, settings: dict[tuple[str, str], EdgeSetting]) -> None:
        """Serve ``settings`` (modes other than unavailable/flapping answer 200); reloads when changed."""
        if settings == self.settings:
            return
        self.settings = dict(settings)
        self.generation += 1
        self._write()
        self.daemon.signal(signal.SIGHUP)

    def served_generation(self) -> int | None:
        try:
            status, body = http_get(self.ns, "127.0.0.1", STATUS_PORT, "/generation", timeout=1.0)
            return int(body) if status == 200 else None
        except (OSError, ValueError):
            return None

    def workers(self) -> int:
        """Worker processes of the master, old ones finishing their requests included."""
        proc = self.daemon.proc
        if proc is None:
            return 0
        try:
            return len(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split())
        except OSError:
            return 0

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until the latest configuration is served and the workers of older ones are gone."""
        wait_for(lambda: self.served_generation() == self.generation and self.workers() == 1, timeout,
                 f"nginx configuration {self.generation}", [self.daemon])

    def stop(self) -> None:
        self.daemon.stop()
