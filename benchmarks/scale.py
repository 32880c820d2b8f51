"""Scale: one exporter pinned to one CPU with 1k / 10k / 30k scheduled checks.

Half of the checks are HTTP (nginx), half DNS (the local authoritative server), all at one interval. After
one full interval of warm-up (every check has run once), a window of at least one interval is measured:

- probes/s sustained: the change in ``outage_probe_runs_total`` over the window, against the configured
  rate (checks / interval); skipped runs are counted too;
- scheduler lag and event-loop lag: p50/p99 from the change of the exporter's own histograms over the
  window (interpolated inside buckets, as PromQL's histogram_quantile does, so they are estimates);
- RSS: the highest resident size sampled each second in the window, and VmHWM;
- /metrics: client-side time of a full GET (request sent to last byte read, the body read through one
  reused buffer as a scraper reads it) for a few scrapes spread over the window, and the body size. Those
  scrapes, and the two at the window's edges that read the counters, belong to the load, as Prometheus's
  would.

Each size runs once per worker count (``--workers``): with N workers the exporter is pinned to N CPUs (the
first N usable ones; on a machine with no more than N CPUs they are shared with the targets and the load
driver, which the table says). CPU and RSS then cover the parent and every worker process.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, replace

from benchmarks import promtext
from benchmarks.context import Context, sleep_until
from benchmarks.exporters import dns_check, http_check, scheduled_file, start_ours
from benchmarks.procs import cpu_seconds, http_get, peak_rss_bytes, rss_bytes, timed_get
from tests.helpers.processes import children


@dataclass(frozen=True)
class ScaleSettings:
    sizes: tuple[int, ...] = (1_000, 10_000, 30_000)
    interval: float = 15.0
    window: float = 30.0  # at least one interval
    metrics_samples: int = 4  # timed /metrics scrapes inside the window (plus two untimed ones at its edges)
    workers: tuple[int, ...] = (1,)  # --workers of the exporter: every size runs once with each


@dataclass(frozen=True)
class ScaleRow:
    checks: int
    interval: float
    startup_seconds: float  # process start to /-/ready
    target_rate: float  # checks / interval
    probes_per_second: float
    skipped_runs: int
    failed: int
    cpu_utilisation: float  # CPU seconds per second (1.0 = the whole pinned CPU)
    rss_bytes: int
    peak_rss_bytes: int
    sched_lag_p50: float
    sched_lag_p99: float
    loop_lag_p50: float
    loop_lag_p99: float
    loop_lag_max_bound: float
    metrics_seconds_median: float
    metrics_seconds_max: float
    metrics_bytes: int
    workers: int = 1
    cpus: str = ""  # the CPUs the exporter was pinned to, "+shared" when the targets ran there too
    cpu_ms_per_probe: float = 0.0  # CPU time of the parent and its workers per probe run
    process_rss_bytes: tuple[int, ...] = ()  # the parent's highest RSS, then each worker's
    process_cpu_utilisation: tuple[float, ...] = ()  # the parent's CPU seconds per second, then each worker's
    first_scrape_seconds: float = math.nan  # the first GET /metrics, as soon as /-/ready answers


def run_scale(ctx: Context, settings: ScaleSettings, log=print) -> list[ScaleRow]:
    rows = []
    for size in settings.sizes:
        for workers in settings.workers:
            ctx.check_targets()
            row = _one_size(ctx, settings, size, workers)
            log(f"  scale {size:>6} checks, {workers} worker(s): {row.probes_per_second:7.1f}/{row.target_rate:.1f} "
                f"probes/s, lag p99 {row.sched_lag_p99 * 1000:.1f} ms, CPU/probe {row.cpu_ms_per_probe:.3f} ms, "
                f"RSS {row.rss_bytes / 2**20:.0f} MiB, /metrics {row.metrics_seconds_median * 1000:.0f} ms "
                f"({row.metrics_bytes / 2**20:.1f} MiB)")
            rows.append(row)
    return rows


def worker_cpus(ctx: Context, workers: int) -> tuple[tuple[int, ...], str]:
    """The CPUs an exporter with ``workers`` workers is pinned to, and how the table names them."""
    if not ctx.cores.pinned or workers <= len(ctx.cores.prober):
        cpus = ctx.cores.prober
    else:
        cpus = tuple(sorted(ctx.cores.prober + ctx.cores.others))[:workers]
    shared = bool(set(cpus) & set(ctx.cores.others))
    return cpus, (",".join(map(str, cpus)) or "any") + ("+shared" if shared else "")


def scale_services(size: int, http_url: str, dns_server: str) -> list[tuple[str, list[dict]]]:
    """``size`` checks: services with one HTTP and one DNS check each (one extra HTTP check if odd)."""
    services = [(f"s{i:05d}", [http_check("http", http_url), dns_check("dns", dns_server)]) for i in range(size // 2)]
    if size % 2:
        services.append((f"s{size // 2:05d}", [http_check("http", http_url)]))
    return services


def _one_size(ctx: Context, settings: ScaleSettings, size: int, workers: int) -> ScaleRow:
    workdir = ctx.subdir(f"scale/{size}-w{workers}")
    cpus, cpu_names = worker_cpus(ctx, workers)
    config = scheduled_file(workdir / "config.json", scale_services(size, ctx.targets.http_url, ctx.targets.dns_server),
                            interval=settings.interval, dns_server=ctx.targets.dns_server)
    launched = time.monotonic()
    prober = start_ours(config, workdir, cpus, name="outage-exporter-scale", args=("--workers", str(workers)))
    try:
        startup = time.monotonic() - launched
        first_scrape = timed_get(prober.url + "/metrics")[1]  # right after ready
        time.sleep(settings.interval + 1.0)
        window = max(settings.window, settings.interval)
        started = time.monotonic()
        pids = [prober.pid, *children(prober.pid)]
        cpu0 = _each(cpu_seconds, pids)
        first = http_get(prober.url + "/metrics")[0]
        timings: list[float] = []
        rss = [_rss(pids)]
        samples = settings.metrics_samples
        scrape_at = [started + window * (i + 1) / (samples + 1) for i in range(samples)]
        while time.monotonic() < started + window:
            if scrape_at and time.monotonic() >= scrape_at[0]:
                scrape_at.pop(0)
                timings.append(timed_get(prober.url + "/metrics")[1])
            rss.append(_rss(pids))
            sleep_until(min([started + window, time.monotonic() + 1.0, *scrape_at[:1]]))
        if not timings:  # a window too short for its samples (the smoke profile)
            timings.append(timed_get(prober.url + "/metrics")[1])
        cpu1 = _each(cpu_seconds, pids)
        elapsed = time.monotonic() - started
        last = http_get(prober.url + "/metrics")[0]
        peak = sum(_each(peak_rss_bytes, pids))
    finally:
        prober.stop()
    per_process = tuple(max(sample[i] for sample in rss) for i in range(len(pids)))
    cpu = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
    row = _row(size, settings.interval, startup, first, last, elapsed, sum(cpu), timings,
               [sum(sample) for sample in rss], peak)
    probes = row.probes_per_second * elapsed
    return replace(row, workers=workers, cpus=cpu_names, process_rss_bytes=per_process,
                   first_scrape_seconds=first_scrape, process_cpu_utilisation=tuple(c / elapsed for c in cpu),
                   cpu_ms_per_probe=sum(cpu) / probes * 1000 if probes else math.nan)


def _each(read, pids: list[int]) -> list:
    """``read(pid)`` for each process, 0 for one that has exited (a restarted worker shows as a drop)."""
    out = []
    for pid in pids:
        try:
            out.append(read(pid))
        except (OSError, ValueError):
            out.append(0)
    return out


def _rss(pids: list[int]) -> list[int]:
    return _each(rss_bytes, pids)


def _delta(first: bytes, last: bytes, name: str) -> float:
    return promtext.total(last, name) - promtext.total(first, name)


def _row(size: int, interval: float, startup: float, first: bytes, last: bytes, elapsed: float, cpu: float,
         timings: list[float], rss: list[int], peak: int) -> ScaleRow:
    lag = promtext.Buckets.read(last, "outage_exporter_scheduler_lag_seconds") - \
        promtext.Buckets.read(first, "outage_exporter_scheduler_lag_seconds")
    loop = promtext.Buckets.read(last, "outage_exporter_event_loop_lag_seconds") - \
        promtext.Buckets.read(first, "outage_exporter_event_loop_lag_seconds")
    return ScaleRow(
        checks=size,
        interval=interval,
        startup_seconds=startup,
        target_rate=size / interval,
        probes_per_second=_delta(first, last, "outage_probe_runs_total") / elapsed,
        skipped_runs=int(_delta(first, last, "outage_exporter_scheduler_skipped_runs_total")),
        failed=int(_delta(first, last, "outage_probe_failures_total")),
        cpu_utilisation=cpu / elapsed,
        rss_bytes=max(rss),
        peak_rss_bytes=peak,
        sched_lag_p50=lag.quantile(0.5),
        sched_lag_p99=lag.quantile(0.99),
        loop_lag_p50=loop.quantile(0.5),
        loop_lag_p99=loop.quantile(0.99),
        loop_lag_max_bound=loop.max_bound() if loop.count else math.nan,
        metrics_seconds_median=statistics.median(timings),
        metrics_seconds_max=max(timings),
        metrics_bytes=len(last),
    )


def to_json(rows: list[ScaleRow], settings: ScaleSettings) -> dict:
    return {"settings": asdict(settings), "rows": [asdict(r) for r in rows]}
