"""``outage-exporter demo --backend real``: replay a scenario on the real backend (needs root).

One exporter per region runs inside that region's namespace; Prometheus (when installed) runs in the
central namespace and scrapes them across the lab network with the project's rules. Host ports forward
into the lab: the listen port + i reaches region i's exporter, the next one Prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import yaml

from exporter.lab.netlab import netns
from exporter.lab.netlab.forward import Forwarder
from exporter.lab.netlab.world import EXPORTER_PORT, PROMETHEUS_PORT, RealWorld
from exporter.lab.scenario import Player, Scenario

log = logging.getLogger("exporter.demo")


def preflight() -> str | None:
    """Why the real backend cannot run here, or None."""
    import os

    from exporter.lab.netlab.daemons import missing_programs

    if os.geteuid() != 0:
        return "--backend real needs root (it creates network namespaces)"
    missing = missing_programs()
    if missing:
        return f"--backend real needs {', '.join(missing)} (Debian: knot, unbound, nginx-light, iproute2)"
    return None


async def run_real_demo(scenario: Scenario, speed: float, listen: tuple[str, int], *, once: bool = False,
                        config_out: str | None = None, stop_event: asyncio.Event | None = None) -> int:
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    world = RealWorld(speed=speed)
    await asyncio.to_thread(world.start)
    forwarders: list[Forwarder] = []
    try:
        path = Path(config_out) if config_out else world.workdir / "outage-lab.yml"
        path.write_text(yaml.safe_dump(world.exporter_config(), sort_keys=False))
        for region in world.region_names:
            await asyncio.to_thread(world.start_exporter, region, path)
        prometheus = await asyncio.to_thread(_start_prometheus, world)
        host = listen[0]
        targets = [(f"exporter {r}", world.exporter_address(r)) for r in world.region_names]
        if prometheus:
            targets.append(("prometheus", prometheus))
        lines = []
        for i, (what, address) in enumerate(targets):
            ip, port = address.rsplit(":", 1)
            fw = await Forwarder((host, listen[1] + i), world.central, (ip, int(port))).start()
            forwarders.append(fw)
            lines.append(f"  {what}: http://{host}:{listen[1] + i}/  (in the lab: {address})")
        print(f"outage lab (real backend): scenario {scenario.name!r} at speed {speed:g} "
              f"({scenario.wall_seconds(speed):.0f} s per replay)\n" + "\n".join(lines) +
              f"\n  namespaces: {world.netns.prefix}*  (ip netns exec {world.central} ...)"
              f"\n  exporter config: {path}\n  logs and server configs: {world.workdir}\n  Ctrl-C to stop.",
              flush=True)
        player = Player(scenario, world, loop=not once)  # type: ignore[arg-type]
        play = player.start()
        play.add_done_callback(lambda _: stop.set())
        await stop.wait()
        await player.stop()
        return 0
    finally:
        for fw in forwarders:
            await fw.stop()
        await asyncio.to_thread(world.stop)


def _start_prometheus(world: RealWorld) -> str | None:
    """Prometheus in the central namespace with the project's rules, if installed; its lab address."""
    from exporter.lab.netlab import plan
    from exporter.lab.stack import fill_prometheus_config, find_binary, find_prometheus_template

    template = find_prometheus_template()
    if find_binary("prometheus") is None or template is None:
        log.info("prometheus or deploy/local/prometheus.yml not found: running without Prometheus")
        return None
    config = fill_prometheus_config(template, exporters=[world.exporter_address(r) for r in world.region_names],
                                    alertmanagers=[])
    path = world.workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        world.start_prometheus(path)
    except netns.NetlabError as exc:
        log.warning("prometheus did not start: %s", exc)
        return None
    return f"{plan.CENTRAL}:{PROMETHEUS_PORT}"


__all__ = ["EXPORTER_PORT", "preflight", "run_real_demo"]
