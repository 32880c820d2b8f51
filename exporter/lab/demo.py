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
import socket
import tempfile
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import yaml
from prometheus_client import CollectorRegistry, Gauge

from exporter import logs
from exporter.lab import Phase, Player, Scenario, ScenarioError, World, builtin_names, load_builtin, load_scenario

if TYPE_CHECKING:
    from exporter.state import Board, CellStatus

log = logging.getLogger("exporter.demo")
DEFAULT_SCENARIO = "facebook-2021-10-04"
DEFAULT_LISTEN = "127.0.0.1:19115"
# Wall seconds from a fault to its first page with the shipped defaults (docs/alerts.md, "Timing budget":
# 60 s for the provider page, 85 s for the nameserver cause). Alerts run on wall time, not story time.
ALERT_LEAD_SECONDS = 90.0
TIMELINE_KEEP = 60  # events kept for the terminal and the landing page


def build_parser() -> argparse.ArgumentParser:
    from exporter.server import parse_listen

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
    speed = ns.speed or scenario.default_speed
    for line in speed_warning(scenario, speed, phases=ns.speed is not None or ns.with_stack):
        print(line, flush=True)
    return asyncio.run(run_demo(scenario, speed, ns.listen, once=ns.once,
                                config_out=ns.config_out, with_stack=ns.with_stack))


def speed_warning(scenario: Scenario, speed: float, *, phases: bool = True) -> list[str]:
    """Lines warning that at ``speed`` the story moves faster than the alerts can follow, else none.

    Alerts run on wall time (check windows, ``for``, evaluation), the story on story time: at 46x a story
    minute lasts 1.3 s. The speed is not scaled behind the user's back: the warning says when no phase
    lasts long enough to page (with the fastest speed at which the longest one does) and, with
    ``phases``, names the phases too short for an alert of their own.
    """
    spans = phase_spans(scenario)
    walls = [(phase, span / speed) for phase, span in spans[1:]]  # the first phase is the baseline
    if not walls:
        return []
    longest = max(span for _, span in spans[1:])
    short = [f"{p.name} ({wall:.0f} s)" for p, wall in walls if wall < ALERT_LEAD_SECONDS]
    if not short:
        return []
    lines = [f"warning: at speed {speed:g} a story minute lasts {60 / speed:.1f} s, but an alert needs about "
             f"{ALERT_LEAD_SECONDS:.0f} s of wall time to fire (docs/alerts.md, timing budget)."]
    if longest / speed < ALERT_LEAD_SECONDS:
        lines.append(f"  No phase lasts that long: Prometheus will not page for this replay. Use --speed "
                     f"{longest / ALERT_LEAD_SECONDS:.3g} or slower to see the alerts.")
    elif phases:
        lines.append(f"  Phases too short for an alert of their own: {', '.join(short)}.")
    else:
        return []
    return lines


def phase_spans(scenario: Scenario) -> list[tuple[Phase, float]]:
    """Each phase with its length in story seconds (the last one runs to the scenario's end)."""
    ends = [p.at for p in scenario.phases[1:]] + [scenario.end]
    return [(p, end - p.at) for p, end in zip(scenario.phases, ends, strict=True)]


def bind_problem(listen: tuple[str, int]) -> str | None:
    """Why the exporter could not listen on ``listen`` (a busy port, an address not on this host), else None."""
    host, port = listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is fine
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


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
    from exporter.runtime import Runtime
    from exporter.server import format_listen, serve

    problem = bind_problem(listen)
    if problem is not None:  # before anything is printed: no URL that leads to someone else's server
        print(f"outage-exporter demo: cannot listen on {format_listen(listen)}: {problem} "
              "(choose another with --web.listen-address)", flush=True)
        return 1
    stop = stop_event or asyncio.Event()
    world = World(speed=speed)
    await world.start()
    workdir = tempfile.TemporaryDirectory(prefix="outage-lab-")
    try:
        path = Path(config_out) if config_out else Path(workdir.name) / "outage-lab.yml"
        path.write_text(yaml.safe_dump(world.exporter_config(), sort_keys=False))
        player = Player(scenario, world, loop=not once)
        runtime = Runtime(str(path))
        story = Story(scenario, player, registry=runtime.self_metrics.registry)
        player.add_listener(story.on_phase)
        runtime.banner = story.banner
        host = "localhost" if listen[0] in ("0.0.0.0", "127.0.0.1", "::") else listen[0]
        print(f"outage lab: scenario {scenario.name!r} at speed {speed:g} "
              f"({scenario.wall_seconds(speed):.0f} s per replay, {len(scenario.phases)} phases)\n"
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
        watcher = asyncio.ensure_future(_watch(runtime, stop, story))
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


class Story:
    """What the replay has told so far: phase N of M, story and wall time, the next phase and a timeline.

    The terminal gets it at every phase, the landing page as its banner and ``/metrics`` as
    ``outage_lab_scenario_info`` (so dashboards can annotate the phases). The timeline keeps the phases and
    every change of a service's state in a region, so minutes later a reader still sees why a cell is red.
    """

    def __init__(self, scenario: Scenario, player: Player, *, registry: CollectorRegistry | None = None,
                 out: TextIO | None = None) -> None:
        self.scenario = scenario
        self.player = player
        self.out = out
        self.events: deque[tuple[float, str]] = deque(maxlen=TIMELINE_KEEP)
        self.metric = scenario_metric(registry) if registry is not None else None

    def index(self, phase: Phase) -> int:
        return self.scenario.phases.index(phase) + 1

    def now(self) -> float:
        t = self.player.story_time()
        return self.scenario.start if t is None else t

    def on_phase(self, phase: Phase) -> None:
        """Player listener: record the phase, export it and print where the story stands."""
        n = self.index(phase)
        if n == 1:
            self.events.clear()  # a new replay starts a new story
        self.events.append((phase.at, f"phase {n}/{len(self.scenario.phases)} {phase.name}"))
        if self.metric is not None:
            self.metric.clear()
            self.metric.labels(self.scenario.name, phase.name, str(n)).set(1)
        print("\n".join(self.report(phase)), file=self.out, flush=True)

    def note(self, text: str) -> str:
        """Add an event at the current story time; returns it with its clock, as the timeline shows it."""
        t = self.now()
        self.events.append((t, text))
        return f"{clock(t)}  {text}"

    def next_phase(self, phase: Phase | None) -> Phase | None:
        phases = self.scenario.phases
        n = 0 if phase is None else self.index(phase)
        return phases[n] if n < len(phases) else None

    def progress(self, phase: Phase | None) -> str:
        t = self.now()
        elapsed, total = t - self.scenario.start, self.scenario.duration
        speed = self.player.speed
        where = (f"phase {self.index(phase)} of {len(self.scenario.phases)}: {phase.name} ({phase.offset})"
                 if phase is not None else "before the first phase")
        upcoming = self.next_phase(phase)
        after = (f"next: {upcoming.name} at {upcoming.offset} (in {max(upcoming.at - t, 0) / speed:.0f} s)"
                 if upcoming is not None else "next: the end")
        return (f"{where} · story {clock(t)}, {span(elapsed)} of {span(total)} "
                f"(wall {elapsed / speed:.0f} of {total / speed:.0f} s) · {after}")

    def report(self, phase: Phase) -> list[str]:
        lines = [f"== {self.scenario.name}: {self.progress(phase)}"]
        if phase.description:
            lines.append(f"   {' '.join(phase.description.split())}")
        lines.append("   so far:")
        lines.extend(f"     {clock(t)}  {text}" for t, text in self.events)
        return lines

    def banner(self) -> dict[str, str]:
        """The landing page's banner: the same facts as the terminal."""
        phase = self.player.current_phase
        facts = {"scenario": self.scenario.name, "speed": f"{self.player.speed:g}x",
                 "progress": self.progress(phase)}
        if phase is not None and phase.description:
            facts["what is happening"] = " ".join(phase.description.split())
        if self.events:
            facts["timeline"] = " · ".join(f"{clock(t)} {text}" for t, text in list(self.events)[-12:])
        return facts


def scenario_metric(registry: CollectorRegistry) -> Gauge:
    """``outage_lab_scenario_info{scenario,phase,phase_index}`` on ``registry`` (docs/metrics.md)."""
    return Gauge("outage_lab_scenario_info", "The lab scenario being replayed and its current phase (value 1; "
                 "outage-exporter demo only).", ["scenario", "phase", "phase_index"], registry=registry)


def clock(t: float) -> str:
    """Story time relative to t0: ``t0+1h05m00s``."""
    sign = "-" if t < 0 else "+"
    return f"t0{sign}{span(abs(t))}"


def span(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"


async def _watch(runtime, stop: asyncio.Event, story: Story | None = None, every: float = 1.0) -> None:
    """Log each change of a service's state in a region, so the terminal tells the story too.

    The states are the landing page's and the status API's (exporter.state): a region whose vantage is
    unhealthy shows inconclusive here as it does there.
    """
    from exporter import state as st

    board = st.Board(st.runtime_source(runtime))
    previous: dict[tuple[str, str], str] = {}
    while not stop.is_set():
        await asyncio.sleep(every)
        for key, cell in sorted(cell_states(board).items()):
            if cell.state == st.NODATA:
                continue
            before = previous.get(key)
            if before != cell.state:
                if before is not None:
                    text = f"{key[0]} in {key[1]}: {before} -> {cell.state}" + (
                        f" ({'; '.join(cell.reasons)})" if cell.reasons else "")
                    log.info(story.note(text) if story is not None else text)
                previous[key] = cell.state


def cell_states(board: Board) -> dict[tuple[str, str], CellStatus]:
    """(service, region) -> the cell as the landing page shows it now."""
    return {(cell.service, cell.region): cell for cell in board.snapshot().cells}
