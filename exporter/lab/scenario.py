"""Incident scenarios: YAML files of timed phases, and a player that applies them to a lab World.

A scenario file::

    name: regional-blip
    description: One region loses one service for 90 seconds.
    duration: 5m             # story time covered, from the first phase
    default_speed: 1         # story seconds per wall second when no --speed is given
    phases:
      - at: 0s               # offset from t0 (the incident's start); may be negative ("-10m")
        name: baseline
      - at: +1m
        name: blip
        effects:
          - edge: {service: twitter, region: eu-west, mode: unavailable}
          - nameservers: {provider: meta, state: blackhole}    # or zone: / name:
          - vantage: {region: us-east, isolated: true}
          - routes: {provider: meta, state: withdrawn}        # the routing feed's peers (peers: N of them)
          - routing_feed: {state: stalled}                     # up | down | stalled | malformed | flood
          - status_page: {provider: meta, state: unreachable}  # or reachable, indicator: major

Effects are cumulative: each phase changes the world left by the previous ones. Files are validated
when loaded, with errors naming the file and the path of the bad value (``phases[1].effects[0].edge.mode``);
names that depend on the world (regions, HTTPS for certificate modes) are checked by ``Scenario.check``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from exporter.config.durations import format_duration, parse_duration
from exporter.lab import catalog
from exporter.lab.authoritative import STATES
from exporter.lab.edges import CERT_MODES, MODES, EdgeSetting, edge_setting
from exporter.lab.ris import FEED_STATES
from exporter.lab.statuspage import INDICATOR_TEXT, PAGE_STATES
from exporter.lab.world import World

log = logging.getLogger("exporter.lab.scenario")

SCENARIO_DIR = Path(__file__).with_name("scenarios")
_ZONES = tuple(z.origin for z in catalog.ZONES)
_OPERATORS = tuple(dict.fromkeys(f.operator for f in catalog.FLEETS))
_NAMESERVERS = tuple(n for f in catalog.FLEETS for n in f.names)
_SITES = tuple(s.name for s in catalog.SITES)


class ScenarioError(ValueError):
    """A scenario file or effect is invalid; the message names the file and the path of the value."""


class _Invalid(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")


# --- effects -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EdgeEffect:
    path: str
    services: tuple[str, ...]
    regions: tuple[str, ...]  # empty = every region
    setting: EdgeSetting

    def check(self, world: World) -> None:
        _check_regions(self.path, self.regions, world)
        if self.setting.mode in CERT_MODES and not world.tls:
            raise _Invalid(f"{self.path}.mode", f"mode {self.setting.mode!r} needs HTTPS edges "
                           "(the openssl command was not found, or the world runs without TLS)")

    def apply(self, world: World) -> None:
        params = self.setting.params()
        for service in self.services:
            for region in self.regions or ("all",):
                world.set_edge(service, region, self.setting.mode, **params)


@dataclass(frozen=True, slots=True)
class NameserverEffect:
    path: str
    selector: str  # "zone" | "provider" | "name"
    value: str
    state: str

    def check(self, world: World) -> None:
        """Nothing world-specific: zones, providers and names come from the catalog, checked at load."""

    def apply(self, world: World) -> None:
        key = "operator" if self.selector == "provider" else self.selector
        world.set_nameservers(self.state, **{key: self.value})


@dataclass(frozen=True, slots=True)
class VantageEffect:
    path: str
    region: str
    isolated: bool

    def check(self, world: World) -> None:
        _check_regions(self.path, (self.region,), world)

    def apply(self, world: World) -> None:
        world.isolate_region(self.region, self.isolated)


@dataclass(frozen=True, slots=True)
class ResolverEffect:
    path: str
    regions: tuple[str, ...]  # empty = every region
    serve_stale: float  # story seconds; 0 turns serve-stale off

    def check(self, world: World) -> None:
        _check_regions(self.path, self.regions, world)

    def apply(self, world: World) -> None:
        for region in self.regions or ("all",):
            world.set_serve_stale(region, self.serve_stale)


@dataclass(frozen=True, slots=True)
class RoutesEffect:
    path: str
    provider: str
    state: str  # "withdrawn" | "announced"
    peers: int | None = None  # how many of the feed's peers; None = all

    def check(self, world: World) -> None:
        """Nothing world-specific: providers come from the catalog, checked at load."""

    def apply(self, world: World) -> None:
        if _has_signals(world, self.path):
            world.set_routes(self.state, operator=self.provider, peers=self.peers)


@dataclass(frozen=True, slots=True)
class RoutingFeedEffect:
    path: str
    state: str  # one of FEED_STATES

    def check(self, world: World) -> None:
        """Nothing world-specific."""

    def apply(self, world: World) -> None:
        if _has_signals(world, self.path):
            world.ris.set_feed(self.state)


@dataclass(frozen=True, slots=True)
class StatusPageEffect:
    path: str
    provider: str
    state: str  # one of PAGE_STATES
    indicator: str | None = None

    def check(self, world: World) -> None:
        if getattr(world, "status_pages", None) is not None and self.provider not in world.status_pages.pages:
            raise _Invalid(f"{self.path}.provider", f"no status page for {self.provider!r} (known: "
                           f"{', '.join(world.status_pages.pages)})")

    def apply(self, world: World) -> None:
        if _has_signals(world, self.path):
            world.status_pages.set(self.provider, self.state, indicator=self.indicator)


def _has_signals(world: World, path: str) -> bool:
    """Whether ``world`` emulates the routing feed and status pages (the real backend does not)."""
    if getattr(world, "ris", None) is None or getattr(world, "status_pages", None) is None:
        log.debug("%s: this world has no routing feed or status pages; effect skipped", path)
        return False
    return True


Effect = (EdgeEffect | NameserverEffect | VantageEffect | ResolverEffect | RoutesEffect | RoutingFeedEffect
          | StatusPageEffect)


@dataclass(frozen=True, slots=True)
class Phase:
    at: float  # story seconds relative to t0
    name: str
    description: str = ""
    effects: tuple[Effect, ...] = ()

    @property
    def offset(self) -> str:
        return format_offset(self.at)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    duration: float  # story seconds, from the first phase
    default_speed: float
    phases: tuple[Phase, ...]
    source: str = "<string>"

    @property
    def start(self) -> float:
        return self.phases[0].at

    @property
    def end(self) -> float:
        return self.start + self.duration

    def phase_at(self, t: float) -> Phase | None:
        """The phase in effect at story time ``t`` (relative to t0); None before the first one."""
        current = None
        for phase in self.phases:
            if phase.at > t:
                break
            current = phase
        return current

    def check(self, world: World) -> None:
        """Raise ScenarioError if an effect cannot apply to ``world`` (unknown region, no HTTPS, ...)."""
        try:
            for phase in self.phases:
                for effect in phase.effects:
                    effect.check(world)
        except _Invalid as exc:
            raise ScenarioError(f"{self.source}: {exc}") from None

    def wall_seconds(self, speed: float | None = None) -> float:
        return self.duration / (speed or self.default_speed)


def _check_regions(path: str, regions: tuple[str, ...], world: World) -> None:
    for region in regions:
        if region not in world.region_names:
            raise _Invalid(f"{path}.region", f"unknown region {region!r} (the world has "
                           f"{', '.join(world.region_names)})")


# --- loading -----------------------------------------------------------------------------------------


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return load_scenario_text(text, source=str(p))


def builtin_names() -> list[str]:
    """Names of the scenarios shipped with the exporter (file stems under lab/scenarios/)."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def load_builtin(name: str) -> Scenario:
    path = SCENARIO_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ScenarioError(f"unknown scenario {name!r} (available: {', '.join(builtin_names())})")
    return load_scenario(path)


def load_scenario_text(text: str, source: str = "<string>") -> Scenario:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{source}: invalid YAML: {exc}") from None
    try:
        return _scenario(raw, source)
    except _Invalid as exc:
        raise ScenarioError(f"{source}: {exc}") from None


def _scenario(raw: object, source: str) -> Scenario:
    doc = _mapping(raw, "scenario", required={"name", "duration", "phases"},
                   optional={"description", "default_speed"})
    phases_raw = doc["phases"]
    if not isinstance(phases_raw, list) or not phases_raw:
        raise _Invalid("phases", "expected a non-empty list of phases")
    phases = tuple(_phase(p, f"phases[{i}]") for i, p in enumerate(phases_raw))
    for i in range(1, len(phases)):
        if phases[i].at <= phases[i - 1].at:
            raise _Invalid(f"phases[{i}].at", f"{phases[i].offset} is not after the previous phase "
                           f"({phases[i - 1].offset}): phases must be in time order")
    duration = _duration(doc["duration"], "duration")
    last = phases[-1].at - phases[0].at
    if last >= duration:
        raise _Invalid("duration", f"{format_duration(duration)} ends before the last phase starts "
                       f"({format_duration(last) if last else '0s'} after the first)")
    return Scenario(name=_string(doc["name"], "name"), description=_string(doc.get("description", ""),
                    "description", empty=True), duration=duration,
                    default_speed=_positive(doc.get("default_speed", 1), "default_speed"),
                    phases=phases, source=source)


def _phase(raw: object, path: str) -> Phase:
    doc = _mapping(raw, path, required={"at", "name"}, optional={"description", "effects"})
    effects_raw = doc.get("effects") or []
    if not isinstance(effects_raw, list):
        raise _Invalid(f"{path}.effects", "expected a list of effects")
    return Phase(at=_offset(doc["at"], f"{path}.at"), name=_string(doc["name"], f"{path}.name"),
                 description=_string(doc.get("description", ""), f"{path}.description", empty=True),
                 effects=tuple(_effect(e, f"{path}.effects[{i}]") for i, e in enumerate(effects_raw)))


_EFFECT_KINDS = ("edge", "nameservers", "vantage", "resolvers", "routes", "routing_feed", "status_page")


def _effect(raw: object, path: str) -> Effect:
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in _EFFECT_KINDS:
        raise _Invalid(path, f"expected a mapping with exactly one of {', '.join(_EFFECT_KINDS)}")
    kind, body = next(iter(raw.items()))
    path = f"{path}.{kind}"
    if kind == "edge":
        return _edge_effect(body, path)
    if kind == "nameservers":
        return _nameserver_effect(body, path)
    if kind == "resolvers":
        return _resolver_effect(body, path)
    if kind in ("routes", "routing_feed", "status_page"):
        return _signal_effect(kind, body, path)
    doc = _mapping(body, path, required={"region", "isolated"}, optional=set())
    if not isinstance(doc["isolated"], bool):
        raise _Invalid(f"{path}.isolated", f"expected true or false, got {doc['isolated']!r}")
    return VantageEffect(path, _string(doc["region"], f"{path}.region"), doc["isolated"])


def _edge_effect(body: object, path: str) -> EdgeEffect:
    params = set().union(*MODES.values())
    doc = _mapping(body, path, required={"service", "mode"}, optional={"region"} | params)
    services = _names(doc["service"], f"{path}.service", _SITES)
    region = doc.get("region", "all")
    regions = () if region == "all" else _names(region, f"{path}.region", None)
    mode = doc["mode"]
    if mode not in MODES:
        raise _Invalid(f"{path}.mode", f"unknown mode {mode!r} (expected one of {', '.join(MODES)})")
    given = {k: v for k, v in doc.items() if k in params}
    try:
        setting = edge_setting(mode, **given)
    except ValueError as exc:
        m = re.match(r"(\w+): (.*)", str(exc))
        if m and m.group(1) in given:
            raise _Invalid(f"{path}.{m.group(1)}", m.group(2)) from None
        raise _Invalid(path, str(exc)) from None
    return EdgeEffect(path, services, regions, setting)


def _resolver_effect(body: object, path: str) -> ResolverEffect:
    doc = _mapping(body, path, required={"serve_stale"}, optional={"region"})
    region = doc.get("region", "all")
    regions = () if region == "all" else _names(region, f"{path}.region", None)
    raw = doc["serve_stale"]
    seconds = 0.0 if raw is False or raw in (0, "0", "0s") else _duration(raw, f"{path}.serve_stale")
    return ResolverEffect(path, regions, seconds)


def _signal_effect(kind: str, body: object, path: str) -> RoutesEffect | RoutingFeedEffect | StatusPageEffect:
    if kind == "routing_feed":
        doc = _mapping(body, path, required={"state"}, optional=set())
        return RoutingFeedEffect(path, _one_of(doc["state"], f"{path}.state", FEED_STATES))
    if kind == "status_page":
        doc = _mapping(body, path, required={"provider", "state"}, optional={"indicator"})
        indicator = doc.get("indicator")
        return StatusPageEffect(path, _string(doc["provider"], f"{path}.provider"),
                                _one_of(doc["state"], f"{path}.state", PAGE_STATES),
                                None if indicator is None else _one_of(indicator, f"{path}.indicator",
                                                                       tuple(INDICATOR_TEXT)))
    doc = _mapping(body, path, required={"provider", "state"}, optional={"peers"})
    provider = _string(doc["provider"], f"{path}.provider")
    if provider not in _OPERATORS:
        raise _Invalid(f"{path}.provider", f"unknown provider {provider!r} (known: {', '.join(_OPERATORS)})")
    peers = doc.get("peers")
    if peers is not None and (isinstance(peers, bool) or not isinstance(peers, int) or peers < 0):
        raise _Invalid(f"{path}.peers", f"expected a number of peers (0 or more), got {peers!r}")
    return RoutesEffect(path, provider, _one_of(doc["state"], f"{path}.state", ("withdrawn", "announced")), peers)


def _one_of(raw: object, path: str, options: tuple[str, ...]) -> str:
    if raw not in options:
        raise _Invalid(path, f"unknown state {raw!r} (expected one of {', '.join(options)})")
    return str(raw)


def _nameserver_effect(body: object, path: str) -> NameserverEffect:
    doc = _mapping(body, path, required={"state"}, optional={"zone", "provider", "name"})
    chosen = [k for k in ("zone", "provider", "name") if k in doc]
    if len(chosen) != 1:
        raise _Invalid(path, "select nameservers with exactly one of zone, provider or name")
    key = chosen[0]
    known = {"zone": _ZONES, "provider": _OPERATORS, "name": (*_NAMESERVERS, "parent")}[key]
    value = _string(doc[key], f"{path}.{key}")
    if value not in known:
        raise _Invalid(f"{path}.{key}", f"unknown {key} {value!r} (known: {', '.join(known)})")
    state = doc["state"]
    if state not in STATES:
        raise _Invalid(f"{path}.state", f"unknown state {state!r} (expected one of {', '.join(STATES)})")
    return NameserverEffect(path, key, value, state)


# --- value helpers -----------------------------------------------------------------------------------


def _mapping(raw: object, path: str, *, required: set[str], optional: set[str]) -> dict:
    if not isinstance(raw, dict):
        raise _Invalid(path, f"expected a mapping, got {type(raw).__name__}")
    for key in raw:
        if key not in required | optional:
            raise _Invalid(f"{path}.{key}" if path != "scenario" else str(key),
                           f"unknown key (expected one of {', '.join(sorted(required | optional))})")
    for key in sorted(required):
        if key not in raw:
            raise _Invalid(path, f"missing required key {key!r}")
    return raw


def _string(raw: object, path: str, *, empty: bool = False) -> str:
    if not isinstance(raw, str) or (not empty and not raw.strip()):
        raise _Invalid(path, f"expected a {'' if empty else 'non-empty '}string, got {raw!r}")
    return raw


def _names(raw: object, path: str, known: tuple[str, ...] | None) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else [raw]
    out = tuple(_string(item, path) for item in items)
    if not out:
        raise _Invalid(path, "expected a name or a non-empty list of names")
    for name in out:
        if known is not None and name not in known:
            raise _Invalid(path, f"unknown name {name!r} (known: {', '.join(known)})")
    return out


def _positive(raw: object, path: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw <= 0:
        raise _Invalid(path, f"expected a number greater than 0, got {raw!r}")
    return float(raw)


def _duration(raw: object, path: str) -> float:
    if not isinstance(raw, str):
        raise _Invalid(path, f'expected a duration such as "10m", got {raw!r}')
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise _Invalid(path, str(exc)) from None


def parse_offset(text: str) -> float:
    """Story seconds in an offset from t0: ``"0s"``, ``"+1m"``, ``"-10m"``, ``"5h21m"``."""
    s = text.strip()
    sign = -1.0 if s.startswith("-") else 1.0
    body = s[1:] if s[:1] in "+-" and s else s
    if re.fullmatch(r"0+(\.0*)?(ms|[ywdhms])?", body):
        return 0.0
    return sign * parse_duration(body)


def format_offset(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    return ("-" if seconds < 0 else "+") + format_duration(abs(seconds))


def _offset(raw: object, path: str) -> float:
    if raw == 0 and not isinstance(raw, bool):
        return 0.0
    if not isinstance(raw, str):
        raise _Invalid(path, f'expected an offset such as "0s", "+1m" or "-10m", got {raw!r}')
    try:
        return parse_offset(raw)
    except ValueError as exc:
        raise _Invalid(path, str(exc)) from None


# --- playing -----------------------------------------------------------------------------------------

Listener = Callable[[Phase], object]


class Player:
    """Play a scenario against a world at the world's speed: phase ``p`` applies at ``(p.at - start) / speed``
    wall seconds after ``run()`` begins. The world is reset to healthy first."""

    def __init__(self, scenario: Scenario, world: World, *, loop: bool = False) -> None:
        scenario.check(world)
        self.scenario = scenario
        self.world = world
        self.loop = loop
        self.current_phase: Phase | None = None
        self._listeners: list[Listener] = []
        self._t0: float | None = None  # loop time at which the story's first phase began
        self._task: asyncio.Task[None] | None = None

    @property
    def speed(self) -> float:
        return self.world.speed

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(phase)`` after each phase's effects have been applied."""
        self._listeners.append(listener)

    def story_time(self) -> float | None:
        """Current story time (seconds relative to t0), or None when not playing."""
        if self._t0 is None:
            return None
        elapsed = asyncio.get_running_loop().time() - self._t0
        return self.scenario.start + min(elapsed * self.speed, self.scenario.duration)

    async def run(self) -> None:
        """Play the scenario (repeatedly when ``loop``), returning when it ends."""
        while True:
            await self._play_once()
            if not self.loop:
                return
            log.info("scenario %s: starting over", self.scenario.name)

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.ensure_future(self.run())
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def seek(self, t: float) -> Phase | None:
        """Jump to story time ``t``: reset the world, then apply every phase due by ``t`` at once."""
        self.world.reset()
        phase = None
        for phase_ in self.scenario.phases:
            if phase_.at > t:
                break
            phase = phase_
            await self._enter(phase_)
        return phase

    async def _play_once(self) -> None:
        loop = asyncio.get_running_loop()
        self.world.reset()
        self.world.flush_caches()  # each run starts from cold resolvers, as the story's baseline does
        self._t0 = loop.time()
        for phase in self.scenario.phases:
            due = self._t0 + (phase.at - self.scenario.start) / self.speed
            await asyncio.sleep(max(0.0, due - loop.time()))
            await self._enter(phase)
        end = self._t0 + self.scenario.duration / self.speed
        await asyncio.sleep(max(0.0, end - loop.time()))
        log.info("scenario %s: finished", self.scenario.name)

    async def _enter(self, phase: Phase) -> None:
        for effect in phase.effects:
            effect.apply(self.world)
        await self.world.settle()
        self.current_phase = phase
        log.info("scenario %s: phase %r at %s%s", self.scenario.name, phase.name, phase.offset,
                 f": {phase.description.strip()}" if phase.description else "")
        for listener in self._listeners:
            try:
                listener(phase)
            except Exception:  # a broken listener must not stop the story
                log.exception("scenario listener failed on phase %r", phase.name)
