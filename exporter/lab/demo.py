"""``outage-exporter demo``: start the lab's simulated internet, probe it with the exporter, replay a scenario.

Everything runs in this process on loopback addresses. The generated exporter config is written to a
temporary directory (printed at start) so it can be read, reused or reloaded like any other config.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from exporter import logs
from exporter.lab.scenario import Player, Scenario, ScenarioError, builtin_names, load_builtin, load_scenario
from exporter.lab.world import World

log = logging.getLogger("exporter.demo")
DEFAULT_SCENARIO = "facebook-2021-10-04"
DEFAULT_LISTEN = "127.0.0.1:19115"


def build_parser() -> argparse.ArgumentParser:
    from exporter.cli import parse_listen

    p = argparse.ArgumentParser(prog="outage-exporter demo",
                                description="Replay an outage against a simulated internet on loopback.")
    p.add_argument("--scenario", default=DEFAULT_SCENARIO,
                   help=f"built-in scenario name or a scenario YAML file (default {DEFAULT_SCENARIO})")
    p.add_argument("--speed", type=_positive, default=None,
                   help="story seconds per wall second (default: the scenario's own, e.g. ~10 min for 2021)")
    p.add_argument("--web.listen-address", dest="listen", type=parse_listen, default=DEFAULT_LISTEN,
                   help=f"exporter address (default {DEFAULT_LISTEN})")
    p.add_argument("--list", action="store_true", help="list the built-in scenarios and exit")
    p.add_argument("--once", action="store_true", help="exit when the scenario ends (default: replay it again)")
    p.add_argument("--config-out", default=None, help="write the generated exporter config here")
    p.add_argument("--with-stack", action="store_true",
                   help="also start the installed prometheus and prometheus-alertmanager with the project's "
                        "rules (alerts/) and print every notification as it arrives")
    p.add_argument("--backend", choices=("sim", "real"), default="sim",
                   help="sim: the simulated internet in this process (default); real: Knot, Unbound and nginx "
                        "in network namespaces, one exporter per region inside its region (needs root)")
    p.add_argument("--log.level", dest="log_level", choices=logs.LEVELS, default="info")
    p.add_argument("--log.format", dest="log_format", choices=("logfmt", "json"), default="logfmt")
    return p


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def load(name: str) -> Scenario:
    if name in builtin_names():
        return load_builtin(name)
    if Path(name).is_file():
        return load_scenario(name)
    raise ScenarioError(f"unknown scenario {name!r} (built-in: {', '.join(builtin_names())}; or a YAML file)")


def main(argv: Sequence[str]) -> int:
    ns = build_parser().parse_args(list(argv))
    if ns.list:
        for name in builtin_names():
            s = load_builtin(name)
            about = " ".join(s.description.split())
            print(f"{name:22} {s.wall_seconds():6.0f} s at speed {s.default_speed:g}  {about}")
        return 0
    logs.setup(ns.log_level, ns.log_format)
    try:
        scenario = load(ns.scenario)
    except ScenarioError as exc:
        print(f"outage-exporter demo: {exc}")
        return 2
    if ns.backend == "real":
        return _real_main(ns, scenario)
    if ns.with_stack:
        from exporter.lab.stack import find_alerts_dir, find_binary

        if find_alerts_dir() is None:
            print("outage-exporter demo: --with-stack needs the project's alerts/ directory "
                  "(run it from a source checkout)")
            return 2
        missing = [k for k in ("prometheus", "alertmanager") if find_binary(k) is None]
        if missing:
            print(f"outage-exporter demo: --with-stack needs {' and '.join(missing)} installed "
                  "(Debian: apt-get install prometheus prometheus-alertmanager)")
            return 2
    return asyncio.run(run_demo(scenario, ns.speed or scenario.default_speed, ns.listen, once=ns.once,
                                config_out=ns.config_out, with_stack=ns.with_stack))


def _real_main(ns: argparse.Namespace, scenario: Scenario) -> int:
    from exporter.lab.netlab.demo import preflight, run_real_demo

    problem = preflight()
    if problem:
        print(f"outage-exporter demo: {problem}")
        return 2
    return asyncio.run(run_real_demo(scenario, ns.speed or scenario.default_speed, ns.listen, once=ns.once,
                                     config_out=ns.config_out))


async def run_demo(scenario: Scenario, speed: float, listen: tuple[str, int], *, once: bool = False,
                   config_out: str | None = None, stop_event: asyncio.Event | None = None,
                   with_stack: bool = False) -> int:
    from exporter.cli import serve
    from exporter.runtime import Runtime

    stop = stop_event or asyncio.Event()
    world = World(speed=speed)
    await world.start()
    workdir = tempfile.TemporaryDirectory(prefix="outage-lab-")
    try:
        path = Path(config_out) if config_out else Path(workdir.name) / "outage-lab.yml"
        path.write_text(yaml.safe_dump(world.exporter_config(), sort_keys=False))
        player = Player(scenario, world, loop=not once)
        runtime = Runtime(str(path))
        runtime.banner = lambda: _banner(scenario, player)
        host = "localhost" if listen[0] in ("0.0.0.0", "127.0.0.1", "::") else listen[0]
        print(f"outage lab: scenario {scenario.name!r} at speed {speed:g} "
              f"({scenario.wall_seconds(speed):.0f} s per replay)\n"
              f"  landing page: http://{host}:{listen[1]}/   metrics: http://{host}:{listen[1]}/metrics\n"
              f"  exporter config: {path}\n  Ctrl-C to stop.", flush=True)
        server = asyncio.ensure_future(serve(str(path), listen, runtime=runtime, stop_event=stop))
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGINT, stop.set)
            loop.add_signal_handler(signal.SIGTERM, stop.set)
        while not runtime.ready and not server.done():
            await asyncio.sleep(0.05)
        if server.done():
            return server.result()
        stack = None
        if with_stack:
            from exporter.lab.stack import Stack, find_alerts_dir

            address = f"{'127.0.0.1' if listen[0] in ('0.0.0.0', '::') else listen[0]}:{listen[1]}"
            stack = await Stack(address, find_alerts_dir(), Path(workdir.name) / "stack", echo=True).start()
            print(f"  prometheus: {stack.prometheus_url}   alertmanager: {stack.alertmanager_url}\n"
                  f"  notifications are printed below as they arrive", flush=True)
        play = player.start()
        watcher = asyncio.ensure_future(_watch(runtime, stop))
        play.add_done_callback(lambda _: stop.set())
        code = await server
        await player.stop()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        if stack is not None:
            await stack.stop()
        return code
    finally:
        await world.stop()
        workdir.cleanup()


def _banner(scenario: Scenario, player: Player) -> dict[str, str]:
    phase = player.current_phase
    t = player.story_time()
    facts = {"scenario": scenario.name, "speed": f"{player.speed:g}x"}
    if phase is not None:
        facts["phase"] = f"{phase.name} ({phase.offset})"
        if phase.description:
            facts["what is happening"] = " ".join(phase.description.split())
    if t is not None:
        facts["story time"] = _clock(t)
    return facts


def _clock(t: float) -> str:
    sign = "-" if t < 0 else "+"
    t = abs(int(t))
    return f"t0{sign}{t // 3600}h{t % 3600 // 60:02d}m{t % 60:02d}s"


async def _watch(runtime, stop: asyncio.Event, every: float = 1.0) -> None:
    """Log each change of a service's state in a region, so the terminal tells the story too."""
    from exporter.web.landing import cell_state

    previous: dict[tuple[str, str], str] = {}
    while not stop.is_set():
        await asyncio.sleep(every)
        cells: dict[tuple[str, str], list] = {}
        for check in runtime.checks:
            state = runtime.store.get(check.key)
            cells.setdefault((check.service, check.region), []).append((check, state.last if state else None))
        for key, items in sorted(cells.items()):
            cell = cell_state(items)
            if cell.state == "nodata":
                continue
            before = previous.get(key)
            if before != cell.state:
                if before is not None:
                    log.info("%s in %s: %s -> %s%s", key[0], key[1], before, cell.state,
                             f" ({cell.detail})" if cell.detail else "")
                previous[key] = cell.state
