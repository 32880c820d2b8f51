"""The real lab backend with the real alerting path: one exporter inside each region's namespace, Prometheus
and Alertmanager in the central namespace (the router), a webhook sink listening there too, the shipped
rules, routes and Prometheus configuration. Isolating a region cuts its scrape, as in production.

Topology A (``agents=False``): the central Prometheus scrapes every exporter across the lab network.
Topology B (``agents=True``): a Prometheus in agent mode inside each region scrapes its exporter and
remote-writes to the central Prometheus, which only evaluates the rules.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.config.durations import parse_duration
from exporter.lab.netlab import netns, plan
from exporter.lab.netlab.world import RealWorld
from exporter.lab.scenario import Phase, Player, Scenario
from exporter.lab.stack import (
    EXPORTER_JOB,
    Notification,
    WebhookSink,
    alertmanager_config_text,
    fill_prometheus_config,
    find_alerts_dir,
    find_prometheus_template,
)
from tests.helpers.binaries import require_binary

REGIONS = ("eu-west", "us-east")
AGENT_TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "multi-region" / "prometheus-agent.yml"


def require_real_backend() -> None:
    """Skip without root outside CI; in CI (CI=true) a missing privilege or program fails."""
    if os.geteuid() != 0:
        message = "the real lab backend needs root (network namespaces)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    for name, package in (("ip", "iproute2"), ("knotd", "knot"), ("knotc", "knot"), ("unbound", "unbound"),
                          ("unbound-control", "unbound"), ("nginx", "nginx-light")):
        require_binary(name, f"/usr/sbin/{name}", package=package)
    require_binary("prometheus", package="prometheus")
    require_binary("prometheus-alertmanager", "alertmanager", package="prometheus-alertmanager")


def agent_scrape_interval() -> float:
    """Seconds between the shipped agent's scrapes (deploy/multi-region/prometheus-agent.yml)."""
    return parse_duration(str(yaml.safe_load(AGENT_TEMPLATE.read_text())["global"]["scrape_interval"]))


def agent_config(region: str, exporter: str, remote_write: str) -> dict:
    """deploy/multi-region/prometheus-agent.yml for one region: its exporter, the central write URL."""
    config = yaml.safe_load(AGENT_TEMPLATE.read_text())
    config["global"]["external_labels"]["region"] = region
    job = next(j for j in config["scrape_configs"] if j["job_name"] == EXPORTER_JOB)
    job["static_configs"] = [{"targets": [exporter]}]
    config["remote_write"][0]["url"] = remote_write
    return config


@dataclass
class NetRun:
    world: RealWorld
    sink: WebhookSink
    player: Player
    phases: dict[str, float] = field(default_factory=dict)  # phase name -> wall time entered

    @property
    def notifications(self) -> list[Notification]:
        return list(self.sink.notifications)

    async def _get_json(self, path: str, **params: str) -> dict:
        url = f"{path}?{urllib.parse.urlencode(params)}" if params else path
        status, body = await asyncio.to_thread(self.world.get, self.world.prometheus_address, url)
        doc = json.loads(body)
        if status != 200 or doc.get("status") != "success":
            raise RuntimeError(f"{url}: {status} {body[:300]}")
        return doc["data"]

    async def query(self, promql: str, at: float | None = None) -> list[dict]:
        """Instant query of the central Prometheus (at unix time ``at``, or now)."""
        params = {"query": promql} | ({"time": f"{at:.3f}"} if at is not None else {})
        return (await self._get_json("/api/v1/query", **params))["result"]

    async def alerts(self) -> list[dict]:
        """Prometheus' active alerts (pending and firing) with their current annotations."""
        return (await self._get_json("/api/v1/alerts"))["alerts"]

    async def samples(self, region: str, name: str) -> list[tuple[dict[str, str], float]]:
        """(labels, value) of every ``name`` sample on the region's exporter /metrics, read from the router."""
        _, text = await asyncio.to_thread(self.world.get, self.world.exporter_address(region), "/metrics")
        lines = "\n".join(line for line in text.splitlines() if line.startswith(name + "{"))
        return [(s.labels, s.value) for f in text_string_to_metric_families(lines) for s in f.samples
                if s.name == name]


def _listening_socket(world: RealWorld) -> socket.socket:
    """A TCP socket listening on the router's address, created inside the central namespace."""
    return netns.run_in(world.central, lambda: socket.create_server((plan.CENTRAL, 0)))


async def _start_alerting(world: RealWorld, agents: bool) -> WebhookSink:
    alerts_dir = find_alerts_dir()
    template = find_prometheus_template()
    assert alerts_dir is not None and template is not None, "run from a source checkout"
    sink = await WebhookSink(sock=_listening_socket(world)).start()
    am = world.workdir / "alertmanager.yml"
    am.write_text(alertmanager_config_text(alerts_dir, sink.base_url))
    await asyncio.to_thread(world.start_alertmanager, am)
    exporters = [] if agents else [world.exporter_address(r) for r in world.region_names]
    prom = world.workdir / "prometheus.yml"
    prom.write_text(yaml.safe_dump(fill_prometheus_config(template, exporters=exporters,
                                                          alertmanagers=[world.alertmanager_address]),
                                   sort_keys=False))
    args = ["--web.enable-remote-write-receiver"] if agents else []
    await asyncio.to_thread(world.start_prometheus, prom, args=args)
    return sink


async def _start_agents(world: RealWorld) -> None:
    url = f"http://{world.prometheus_address}/api/v1/write"
    for region in world.region_names:
        path = world.workdir / f"agent-{region}.yml"
        path.write_text(yaml.safe_dump(agent_config(region, world.exporter_address(region), url), sort_keys=False))
        await asyncio.to_thread(world.start_agent, region, path)


@asynccontextmanager
async def real_stack(scenario: Scenario, speed: float, *, agents: bool = False,
                     on_phase: Callable[[Phase, RealWorld], object] | None = None) -> AsyncIterator[NetRun]:
    """Start the real world, its exporters and the alerting path, then play ``scenario``.

    ``on_phase(phase, world)`` runs after each phase's own effects (for faults scenarios cannot express).
    Everything (processes, namespaces, the sink, the work directory) is gone on exit, also on failure.
    """
    world = RealWorld(regions=REGIONS, speed=speed)
    sink: WebhookSink | None = None
    player: Player | None = None
    await asyncio.to_thread(world.start)
    try:
        config = world.workdir / "outage-lab.yml"
        config.write_text(yaml.safe_dump(world.exporter_config(), sort_keys=False))
        for region in world.region_names:
            await asyncio.to_thread(world.start_exporter, region, config)
        sink = await _start_alerting(world, agents)
        if agents:
            await _start_agents(world)
        player = Player(scenario, world)  # type: ignore[arg-type]
        run = NetRun(world, sink, player)

        def entered(phase: Phase) -> None:
            if on_phase is not None:
                on_phase(phase, world)
            run.phases[phase.name] = time.time()

        player.add_listener(entered)
        player.start()
        yield run
    finally:
        if player is not None:
            await player.stop()
        if sink is not None:
            await sink.stop()
        await asyncio.to_thread(world.stop)
