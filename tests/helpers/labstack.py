"""The outage lab replaying a scenario, probed by the real exporter, scraped by a real Prometheus with the
project's rules and routed by a real Alertmanager: the fixture of the end-to-end alert and dashboard tests."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from exporter.lab.scenario import Player, Scenario
from exporter.lab.stack import Stack, find_alerts_dir, free_port
from exporter.lab.world import World
from tests.helpers.tools import alertmanager, prometheus


@dataclass
class LabRun:
    world: World
    stack: Stack
    player: Player
    exporter_url: str = ""  # the lab's exporter, e.g. http://127.0.0.1:PORT


def require_stack() -> None:
    """Skip (fail in CI) without Prometheus or Alertmanager; the project's alerts/ directory must be there."""
    prometheus()
    alertmanager()
    assert find_alerts_dir() is not None, "alerts/ (rules and alertmanager.yml) not found"


@asynccontextmanager
async def lab_with_stack(scenario: Scenario, speed: float, *, on_phase=None) -> AsyncIterator[LabRun]:
    """Start world, exporter and stack, then play ``scenario``; everything is stopped on exit."""
    from exporter.runtime import Runtime
    from exporter.server import serve

    workdir = Path(tempfile.mkdtemp(prefix=f"lab-{scenario.name}-"))
    world = World(speed=speed)
    await world.start()
    stop, stack, server, player = asyncio.Event(), None, None, None
    try:
        config = workdir / "lab.yml"
        config.write_text(yaml.safe_dump(world.exporter_config(), sort_keys=False))
        port = free_port()
        runtime = Runtime(str(config))
        server = asyncio.ensure_future(serve(str(config), ("127.0.0.1", port), runtime=runtime, stop_event=stop))
        while not runtime.ready:
            assert not server.done(), "exporter failed to start"
            await asyncio.sleep(0.05)
        stack = await Stack(f"127.0.0.1:{port}", find_alerts_dir(), workdir / "stack").start()
        player = Player(scenario, world)
        if on_phase is not None:
            player.add_listener(on_phase)
        player.start()
        yield LabRun(world, stack, player, f"http://127.0.0.1:{port}")
    finally:
        if player is not None:
            await player.stop()
        if stack is not None:
            await stack.stop()
        stop.set()
        if server is not None:
            await asyncio.gather(server, return_exceptions=True)
        await world.stop()
