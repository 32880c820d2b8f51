"""CPU per 1,000 probes: scheduled mode, our /probe and blackbox_exporter's /probe, at the same rate.

Each measurement is one window of ``window`` seconds after ``warmup`` seconds, reading utime+stime of the
prober's pid only. Probes are counted, never assumed: scheduled mode by the change in the exporter's own
``outage_probe_runs_total``; /probe by the responses the load driver received (for our exporter also
cross-checked against ``outage_exporter_probe_endpoint_requests_total``).

Scheduled mode is scraped once per interval inside the window, as Prometheus would scrape it with
``scrape_interval`` equal to the check interval: every probe result is exported once, just as every
/probe result is. Rounds interleave the three modes (rotating their order) so slow drifts of a shared
machine spread over all of them; the report uses the median of the rounds.
"""

from __future__ import annotations

import statistics
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
                "ratios_vs_blackbox": self.ratios,
                "samples": [{**asdict(s), "ms_per_1k": s.ms_per_1k} for s in self.samples]}


def run_cpu(ctx: Context, settings: CpuSettings, log=print) -> CpuResult:
    workdir = ctx.subdir("cpu")
    samples: list[CpuSample] = []
    ours_probe = start_ours(probe_mode_file(workdir / "ours-probe.json"), workdir, ctx.cores.prober,
                            name="outage-exporter-probe")
    blackbox = None
    try:
        blackbox = start_blackbox(ctx.modules, workdir, ctx.cores.prober)
        for rnd in range(settings.rounds):
            for p_index, protocol in enumerate(settings.protocols):
                shift = (rnd + p_index) % len(MODES)
                for mode in MODES[shift:] + MODES[:shift]:
                    ctx.check_targets()
                    if mode == "scheduled":
                        sample = _scheduled(ctx, settings, protocol, rnd)
                    else:
                        sample = _driven(ctx, settings, protocol, rnd, ours_probe if mode == "probe" else blackbox,
                                         mode)
                    log(f"  cpu round {rnd + 1}/{settings.rounds} {protocol:4} {MODE_TITLES[mode]:26} "
                        f"{sample.ms_per_1k:8.1f} CPU-ms/1k probes  ({sample.probes} probes, "
                        f"{sample.probes_per_second:.0f}/s, {sample.failed} failed)")
                    samples.append(sample)
    finally:
        ours_probe.stop()
        if blackbox is not None:
            blackbox.stop()
    rows = summarise(samples)
    return CpuResult(settings, samples, rows, ratios(samples))


def _scheduled(ctx: Context, settings: CpuSettings, protocol: str, rnd: int) -> CpuSample:
    checks = max(1, round(settings.rate * settings.interval))
    workdir = ctx.subdir(f"cpu/scheduled-{protocol}-{rnd}")
    services = probe_rate_services(protocol, checks, http_url=ctx.targets.http_url,
                                   dns_server=ctx.targets.dns_server)
    config = scheduled_file(workdir / "config.json", services, interval=settings.interval,
                            dns_server=ctx.targets.dns_server)
    prober = start_ours(config, workdir, ctx.cores.prober, name="outage-exporter-scheduled")
    try:
        time.sleep(settings.warmup)
        scrapes = max(1, round(settings.window / settings.interval))
        started = time.monotonic()
        cpu0 = cpu_seconds(prober.pid)
        first = http_get(prober.url + "/metrics")[0]
        for i in range(1, scrapes):
            sleep_until(started + i * settings.interval)
            http_get(prober.url + "/metrics")
        sleep_until(started + scrapes * settings.interval)
        cpu1 = cpu_seconds(prober.pid)
        elapsed = time.monotonic() - started
        last = http_get(prober.url + "/metrics")[0]
    finally:
        prober.stop()
    runs = promtext.total(last, "outage_probe_runs_total") - promtext.total(first, "outage_probe_runs_total")
    failures = (promtext.total(last, "outage_probe_failures_total")
                - promtext.total(first, "outage_probe_failures_total"))
    return CpuSample(protocol, "scheduled", rnd, cpu1 - cpu0, int(runs), int(failures), elapsed)


def _driven(ctx: Context, settings: CpuSettings, protocol: str, rnd: int, prober: Prober, mode: str) -> CpuSample:
    target = ctx.targets.http_url if protocol == "http" else ctx.targets.dns_server
    query = urllib.parse.urlencode({"module": MODULE_FOR[protocol], "target": target})
    with _driver(ctx, f"{prober.url}/probe?{query}", settings.rate, f"driver-{mode}-{protocol}-{rnd}") as driver:
        time.sleep(settings.warmup)
        before = _endpoint_requests(prober) if mode == "probe" else None
        snap0 = driver.snap()
        cpu0 = cpu_seconds(prober.pid)
        started = time.monotonic()
        time.sleep(settings.window)
        cpu1 = cpu_seconds(prober.pid)
        elapsed = time.monotonic() - started
        snap1 = driver.snap()
        after = _endpoint_requests(prober) if mode == "probe" else None
    done = snap1["done"] - snap0["done"]
    failed = done - (snap1["ok"] - snap0["ok"])
    cross = int(after - before) if before is not None and after is not None else None
    return CpuSample(protocol, mode, rnd, cpu1 - cpu0, done, failed, elapsed, cross)


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


def ratios(samples: list[CpuSample], pick: Callable[[list[float]], float] = statistics.median,
           ) -> dict[str, dict[str, float]]:
    """Per protocol, the median over rounds of each of our modes' CPU per probe divided by blackbox_exporter's
    in the same round. A round's modes run minutes apart at most, so they share the load of a busy machine;
    a burst of load in one round then moves that round's ratio, not the medians of one mode only."""
    per_round: dict[tuple[str, str], list[float]] = {}
    by_key = {(s.protocol, s.mode, s.round): s for s in samples if s.probes > 0}
    for (protocol, mode, rnd), sample in by_key.items():
        theirs = by_key.get((protocol, "blackbox", rnd))
        if mode != "blackbox" and theirs is not None and theirs.ms_per_1k > 0:
            per_round.setdefault((protocol, mode), []).append(sample.ms_per_1k / theirs.ms_per_1k)
    out: dict[str, dict[str, float]] = {}
    for (protocol, mode), values in sorted(per_round.items(), key=lambda kv: (kv[0][0] != "http", kv[0][1])):
        out.setdefault(protocol, {})[mode] = pick(values)
    return out
