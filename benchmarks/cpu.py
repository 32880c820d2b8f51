"""CPU per 1,000 probes: scheduled mode and our /probe, each measured side by side with blackbox_exporter's
/probe at the same rate.

Each measurement window runs one of our modes and blackbox_exporter at once, both pinned to the same CPU,
for ``window`` seconds after ``warmup`` seconds, and reads utime+stime of each prober's pid at the same two
instants. Probes are counted, never assumed: scheduled mode by the change in the exporter's own
``outage_probe_runs_total``; /probe by the responses its load driver received (for our exporter also
cross-checked against ``outage_exporter_probe_endpoint_requests_total``).

Why side by side: on a shared virtual machine the same work does not always cost the same CPU time.
Measured one after the other, a slow moment in one prober's window and not the other's moved a round's
ratio by a quarter or more; measured in the same window, both see it and the rounds agree. What running
both at once costs each of them is measured by ``python -m benchmarks.sidebyside`` (docs/performance.md,
"Measured side by side").

Scheduled mode is scraped once per interval inside the window, as Prometheus would scrape it with
``scrape_interval`` equal to the check interval: every probe result is exported once, just as every
/probe result is. Rounds alternate the order of the two windows; the report uses the median of the rounds'
ratios.
"""

from __future__ import annotations

import statistics
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass

from benchmarks import promtext
from benchmarks.context import Context, sleep_until
from benchmarks.driver import DriverProcess
from benchmarks.exporters import (
    MODULE_FOR,
    Prober,
    probe_mode_file,
    probe_rate_services,
    scheduled_file,
    start_blackbox,
    start_ours,
)
from benchmarks.procs import cpu_seconds, http_get

MODES = ("scheduled", "probe", "blackbox")
OURS = ("scheduled", "probe")
MODE_TITLES = {"scheduled": "ours, scheduled", "probe": "ours, /probe", "blackbox": "blackbox_exporter /probe"}


@dataclass(frozen=True)
class CpuSettings:
    rate: float = 200.0  # probes per second, for every mode
    window: float = 20.0  # seconds measured
    warmup: float = 5.0  # seconds after start (or after the driver starts) before measuring
    rounds: int = 3
    interval: float = 5.0  # scheduled mode: check interval, and the scrape interval inside the window
    protocols: tuple[str, ...] = ("http", "dns")


@dataclass(frozen=True)
class CpuSample:
    protocol: str
    mode: str
    round: int
    cpu_seconds: float
    probes: int  # completed probes in the window (the count the CPU is divided by)
    failed: int  # of those, probes that did not succeed
    seconds: float
    cross_check: int | None = None  # the other count of the same probes, where there is one
    window: int = 0  # the measurement window: one of our modes and blackbox_exporter share one

    @property
    def ms_per_1k(self) -> float:
        return self.cpu_seconds * 1e6 / self.probes if self.probes else float("nan")

    @property
    def probes_per_second(self) -> float:
        return self.probes / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class CpuRow:
    """The median over rounds of one (protocol, mode)."""

    protocol: str
    mode: str
    ms_per_1k: float
    ms_min: float
    ms_max: float
    probes_per_second: float
    probes: int
    failed: int
    rounds: int


@dataclass(frozen=True)
class CpuResult:
    settings: CpuSettings
    samples: list[CpuSample]
    rows: list[CpuRow]
    ratios: dict[str, dict[str, float]]  # protocol -> {"scheduled": x, "probe": y} = ours / blackbox

    def to_json(self) -> dict:
        return {"settings": asdict(self.settings), "rows": [asdict(r) for r in self.rows],
                "ratios_vs_blackbox": self.ratios, "ratios_per_round": per_round(self.samples),
                "samples": [{**asdict(s), "ms_per_1k": s.ms_per_1k} for s in self.samples]}


def run_cpu(ctx: Context, settings: CpuSettings, log=print) -> CpuResult:
    workdir = ctx.subdir("cpu")
    samples: list[CpuSample] = []
    ours_probe = start_ours(probe_mode_file(workdir / "ours-probe.json"), workdir, ctx.cores.prober,
                            name="outage-exporter-probe")
    blackbox = None
    window = 0
    try:
        blackbox = start_blackbox(ctx.modules, workdir, ctx.cores.prober)
        for rnd in range(settings.rounds):
            for p_index, protocol in enumerate(settings.protocols):
                modes = OURS if (rnd + p_index) % 2 == 0 else OURS[::-1]
                for mode in modes:
                    ctx.check_targets()
                    if mode == "scheduled":
                        pair = scheduled_window(ctx, settings, protocol, rnd, window, blackbox)
                    else:
                        pair = probe_window(ctx, settings, protocol, rnd, window,
                                            {"probe": ours_probe, "blackbox": blackbox})
                    for sample in pair.values():
                        log(f"  cpu round {rnd + 1}/{settings.rounds} {protocol:4} {MODE_TITLES[sample.mode]:26} "
                            f"{sample.ms_per_1k:8.1f} CPU-ms/1k probes  ({sample.probes} probes, "
                            f"{sample.probes_per_second:.0f}/s, {sample.failed} failed)")
                    ratio = pair[mode].ms_per_1k / pair["blackbox"].ms_per_1k
                    log(f"  {'':13} {protocol:4} {'ratio':26} {ratio:8.2f}x")
                    samples += pair.values()
                    window += 1
    finally:
        ours_probe.stop()
        if blackbox is not None:
            blackbox.stop()
    rows = summarise(samples)
    return CpuResult(settings, samples, rows, ratios(samples))


def scheduled_window(ctx: Context, settings: CpuSettings, protocol: str, rnd: int, window: int,
                     blackbox: Prober | None) -> dict[str, CpuSample]:
    """Our scheduled mode, and blackbox_exporter's /probe at the same rate in the same window (unless
    ``blackbox`` is None: then ours alone); the samples by mode."""
    checks = max(1, round(settings.rate * settings.interval))
    workdir = ctx.subdir(f"cpu/scheduled-{protocol}-{rnd}-{window}")
    services = probe_rate_services(protocol, checks, http_url=ctx.targets.http_url,
                                   dns_server=ctx.targets.dns_server)
    config = scheduled_file(workdir / "config.json", services, interval=settings.interval,
                            dns_server=ctx.targets.dns_server)
    prober = start_ours(config, workdir, ctx.cores.prober, name="outage-exporter-scheduled")
    try:
        with ExitStack() as stack:
            theirs = None if blackbox is None else stack.enter_context(
                _driver(ctx, probe_url(ctx, blackbox, protocol), settings.rate,
                        f"driver-blackbox-{protocol}-{rnd}-{window}"))
            time.sleep(settings.warmup)
            scrapes = max(1, round(settings.window / settings.interval))
            first = http_get(prober.url + "/metrics")[0]
            started, snap0 = time.monotonic(), theirs.snap() if theirs else None
            cpu0, bb0 = cpu_seconds(prober.pid), cpu_seconds(blackbox.pid) if blackbox else 0.0
            for i in range(1, scrapes):
                sleep_until(started + i * settings.interval)
                http_get(prober.url + "/metrics")
            sleep_until(started + scrapes * settings.interval)
            cpu1, bb1 = cpu_seconds(prober.pid), cpu_seconds(blackbox.pid) if blackbox else 0.0
            elapsed, snap1 = time.monotonic() - started, theirs.snap() if theirs else None
            last = http_get(prober.url + "/metrics")[0]
    finally:
        prober.stop()
    runs = promtext.total(last, "outage_probe_runs_total") - promtext.total(first, "outage_probe_runs_total")
    failures = (promtext.total(last, "outage_probe_failures_total")
                - promtext.total(first, "outage_probe_failures_total"))
    out = {"scheduled": CpuSample(protocol, "scheduled", rnd, cpu1 - cpu0, int(runs), int(failures), elapsed,
                                  window=window)}
    if snap0 is not None and snap1 is not None:
        out["blackbox"] = _driven_sample(protocol, "blackbox", rnd, window, bb1 - bb0, snap0, snap1, elapsed)
    return out


def probe_window(ctx: Context, settings: CpuSettings, protocol: str, rnd: int, window: int,
                 probers: dict[str, Prober]) -> dict[str, CpuSample]:
    """The /probe of each of ``probers`` (mode -> prober: "probe" is ours, "blackbox" theirs), each with its
    own load driver, all in the same window; the samples by mode."""
    with ExitStack() as stack:
        drivers = {mode: stack.enter_context(_driver(ctx, probe_url(ctx, prober, protocol), settings.rate,
                                                     f"driver-{mode}-{protocol}-{rnd}-{window}"))
                   for mode, prober in probers.items()}
        time.sleep(settings.warmup)
        ours = probers.get("probe")
        before = _endpoint_requests(ours) if ours is not None else None
        snap0 = {mode: d.snap() for mode, d in drivers.items()}
        cpu0 = {mode: cpu_seconds(p.pid) for mode, p in probers.items()}
        started = time.monotonic()
        time.sleep(settings.window)
        cpu1 = {mode: cpu_seconds(p.pid) for mode, p in probers.items()}
        elapsed = time.monotonic() - started
        snap1 = {mode: d.snap() for mode, d in drivers.items()}
        after = _endpoint_requests(ours) if ours is not None else None
    cross = int(after - before) if before is not None and after is not None else None
    return {mode: _driven_sample(protocol, mode, rnd, window, cpu1[mode] - cpu0[mode], snap0[mode], snap1[mode],
                                 elapsed, cross=cross if mode == "probe" else None) for mode in probers}


def _driven_sample(protocol: str, mode: str, rnd: int, window: int, cpu_s: float, snap0: dict, snap1: dict,
                   elapsed: float, cross: int | None = None) -> CpuSample:
    done = snap1["done"] - snap0["done"]
    failed = done - (snap1["ok"] - snap0["ok"])
    return CpuSample(protocol, mode, rnd, cpu_s, done, failed, elapsed, cross, window)


def probe_url(ctx: Context, prober: Prober, protocol: str) -> str:
    target = ctx.targets.http_url if protocol == "http" else ctx.targets.dns_server
    return f"{prober.url}/probe?" + urllib.parse.urlencode({"module": MODULE_FOR[protocol], "target": target})


@contextmanager
def _driver(ctx: Context, url: str, rate: float, name: str) -> Iterator[DriverProcess]:
    driver = DriverProcess(url, rate, cpus=ctx.cores.others, log=ctx.subdir("cpu") / f"{name}.log")
    try:
        yield driver
    finally:
        driver.stop()


def _endpoint_requests(prober: Prober) -> float:
    return promtext.total(http_get(prober.url + "/metrics")[0], "outage_exporter_probe_endpoint_requests_total")


def summarise(samples: list[CpuSample]) -> list[CpuRow]:
    rows = []
    keys = dict.fromkeys((s.protocol, s.mode) for s in samples)
    for protocol, mode in sorted(keys, key=lambda k: (k[0] != "http", MODES.index(k[1]))):
        group = [s for s in samples if (s.protocol, s.mode) == (protocol, mode) and s.probes > 0]
        if not group:
            continue
        values = [s.ms_per_1k for s in group]
        rows.append(CpuRow(protocol, mode, statistics.median(values), min(values), max(values),
                           statistics.median(s.probes_per_second for s in group), sum(s.probes for s in group),
                           sum(s.failed for s in group), len(group)))
    return rows


def per_round(samples: list[CpuSample]) -> dict[str, dict[str, list[float]]]:
    """Per protocol and mode, each round's CPU per probe over blackbox_exporter's in the same window."""
    theirs = {(s.protocol, s.window): s for s in samples if s.mode == "blackbox" and s.probes > 0}
    out: dict[str, dict[str, list[float]]] = {}
    for sample in sorted(samples, key=lambda s: (s.protocol != "http", s.mode, s.round)):
        bb = theirs.get((sample.protocol, sample.window))
        if sample.mode != "blackbox" and sample.probes > 0 and bb is not None and bb.ms_per_1k > 0:
            out.setdefault(sample.protocol, {}).setdefault(sample.mode, []).append(sample.ms_per_1k / bb.ms_per_1k)
    return out


def ratios(samples: list[CpuSample], pick: Callable[[list[float]], float] = statistics.median,
           ) -> dict[str, dict[str, float]]:
    """Per protocol and mode, ``pick`` (the median) of the rounds' ratios (:func:`per_round`): a burst of load
    moves a window's two figures together, not one mode's against another's."""
    return {protocol: {mode: pick(values) for mode, values in modes.items()}
            for protocol, modes in per_round(samples).items()}
