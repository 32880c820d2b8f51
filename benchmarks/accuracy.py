"""Latency accuracy: probes of targets with a known delay, while background checks keep the exporter busy.

The exporter (pinned like everywhere else) runs background checks against nginx and the DNS server at
``background_rate`` probes/s, plus *delayed* checks against the delay server (:mod:`benchmarks.delayserver`:
DNS answering after 50 ms, HTTP first byte after 100 ms). The harness scrapes ``/metrics`` once per
delayed-check interval, as Prometheus would with that scrape interval, and keeps, per delayed check, each
new (``probe_duration_seconds``, ``outage_probe_last_run_timestamp_seconds``) pair. With the scrape
interval equal to the check interval nearly every run is seen once, without scraping more often than a
real server would (a scrape briefly competes with probes for the event loop, so scraping much more often
than Prometheus does would overstate the tail). Each pair is matched to the delay server's record of
the same query name or path sent just before that finish time. The error of one probe is the measured
duration minus the server-side truth of that very request, so the delay server's own jitter is not
counted as the prober's error (it is reported separately as "server hold").
"""

from __future__ import annotations

import bisect
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import promtext
from benchmarks.context import Context, sleep_until
from benchmarks.exporters import dns_check, http_check, scheduled_file, start_ours
from benchmarks.procs import Managed, cpu_seconds, http_get, pinned

DELAYED = "delayed"  # service name of the delayed checks
MATCH_WINDOW = 0.5  # a probe finishes at most this long after the server sent its answer


@dataclass(frozen=True)
class AccuracySettings:
    background_rate: float = 500.0  # probes/s of background checks
    background_interval: float = 2.0
    delayed_checks: int = 200  # per protocol
    delayed_interval: float = 5.0  # their interval, and the scrape interval
    duration: float = 30.0  # seconds of sampling after warm-up (rounded up to whole scrape intervals)
    warmup: float = 5.0
    dns_delay: float = 0.05
    http_delay: float = 0.1


@dataclass(frozen=True)
class AccuracyRow:
    protocol: str
    nominal: float  # the configured delay
    samples: int
    probes_per_second: float  # all checks, background and delayed, completed during the sampling
    unmatched: int  # scraped results without a server record (should be 0)
    failed: int  # delayed probes that did not succeed
    hold_p50: float  # the delay the server actually applied
    hold_p99: float
    measured_p50: float
    measured_p99: float
    error_p50: float  # measured - truth, per probe
    error_p99: float
    abs_error_p99: float
    during_scrape: int  # samples whose probe overlapped a /metrics scrape
    error_p99_outside_scrapes: float  # error p99 of the other samples: what the scrapes cost the tail
    loop_lag_p99: float  # the exporter's event-loop lag over the sampling (its own histogram)
    cpu_utilisation: float


def run_accuracy(ctx: Context, settings: AccuracySettings, log=print) -> list[AccuracyRow]:
    workdir = ctx.subdir("accuracy")
    server, ports = _start_delay_server(ctx, settings, workdir)
    try:
        config = scheduled_file(workdir / "config.json", _services(ctx, settings, ports),
                                interval=settings.background_interval, dns_server=ctx.targets.dns_server)
        prober = start_ours(config, workdir, ctx.cores.prober, name="outage-exporter-accuracy")
        try:
            time.sleep(max(settings.warmup, settings.delayed_interval + 1.0))  # every check has run once
            ctx.check_targets()
            seen, scrapes, first, last, cpu, elapsed = _sample(prober, settings.duration, settings.delayed_interval)
        finally:
            prober.stop()
        records = _dump(server)
    finally:
        _stop_delay_server(server)
    runs = promtext.total(last, "outage_probe_runs_total") - promtext.total(first, "outage_probe_runs_total")
    rate = runs / elapsed
    loop = (promtext.Buckets.read(last, "outage_exporter_event_loop_lag_seconds")
            - promtext.Buckets.read(first, "outage_exporter_event_loop_lag_seconds")).quantile(0.99)
    rows = [_row(protocol, nominal, seen, records, scrapes, rate, loop, cpu / elapsed)
            for protocol, nominal in (("dns", settings.dns_delay), ("http", settings.http_delay))]
    for row in rows:
        log(f"  accuracy {row.protocol:4} {row.nominal * 1000:.0f} ms: measured p50 {row.measured_p50 * 1000:.2f} "
            f"p99 {row.measured_p99 * 1000:.2f} ms, error p50 {row.error_p50 * 1000:+.2f} p99 "
            f"{row.error_p99 * 1000:+.2f} ms ({row.samples} probes, all checks {row.probes_per_second:.0f}/s)")
    return rows


def _services(ctx: Context, settings: AccuracySettings, ports: dict) -> list[tuple[str, list[dict]]]:
    background = max(2, round(settings.background_rate * settings.background_interval))
    services = [(f"bg{i:05d}", [http_check("http", ctx.targets.http_url) if i % 2 else
                                dns_check("dns", ctx.targets.dns_server)]) for i in range(background)]
    delayed = []
    for i in range(settings.delayed_checks):
        dns = dns_check(f"dns{i:03d}", f"127.0.0.1:{ports['dns']}", query_name=f"d{i:03d}.delay.test")
        http = http_check(f"http{i:03d}", f"http://127.0.0.1:{ports['http']}/d/{i:03d}")
        every = f"{settings.delayed_interval:g}s"
        delayed += [{**dns, "interval": every}, {**http, "interval": every}]
    return [*services, (DELAYED, delayed)]


def _sample(prober, duration: float, every: float) -> tuple[dict, list, bytes, bytes, float, float]:
    """Scrape every ``every`` s for ``duration`` s: {(protocol, key, finished): (measured, success)}, the
    scrapes' wall-clock (start, end), the first and last expositions, CPU seconds and elapsed seconds."""
    seen: dict[tuple[str, str, float], tuple[float, bool]] = {}
    scrapes: list[tuple[float, float]] = []

    def scrape() -> bytes:
        begun = time.time()
        body = http_get(prober.url + "/metrics")[0]
        scrapes.append((begun, time.time()))
        _collect(body, seen)
        return body

    started = time.monotonic()
    cpu0 = cpu_seconds(prober.pid)
    first = last = scrape()
    for n in range(1, max(1, round(duration / every)) + 1):
        sleep_until(started + n * every)
        last = scrape()
    cpu1 = cpu_seconds(prober.pid)
    return seen, scrapes, first, last, cpu1 - cpu0, time.monotonic() - started


def _collect(text: bytes, seen: dict) -> None:
    names = ("probe_duration_seconds", "outage_probe_last_run_timestamp_seconds", "probe_success")
    rows = promtext.samples(text, names)
    mark = f'service="{DELAYED}"'
    per_check: dict[str, dict[str, float]] = {}
    for name in names:
        for raw, value in rows[name]:
            if mark in raw:
                per_check.setdefault(raw, {})[name] = value
    for raw, values in per_check.items():
        if len(values) < len(names):
            continue
        label = promtext.labels(raw)
        protocol = "dns" if label["check"].startswith("dns") else "http"
        key = label["target"] if protocol == "dns" else "/" + label["target"].split("/", 3)[3]
        finished = values["outage_probe_last_run_timestamp_seconds"]
        seen[(protocol, key, finished)] = (values["probe_duration_seconds"], values["probe_success"] == 1)


def _row(protocol: str, nominal: float, seen: dict, records: list[dict], scrapes: list[tuple[float, float]],
         rate: float, loop_lag: float, cpu: float) -> AccuracyRow:
    by_key: dict[str, list[dict]] = {}
    for record in records:
        by_key.setdefault(record["key"], []).append(record)
    for group in by_key.values():
        group.sort(key=lambda r: r["sent_wall"])
    measured, errors, holds, outside, unmatched, failed = [], [], [], [], 0, 0
    for (proto, key, finished), (duration, success) in seen.items():
        if proto != protocol:
            continue
        if not success:
            failed += 1
            continue
        record = _match(by_key.get(key, []), finished)
        if record is None:
            unmatched += 1
            continue
        measured.append(duration)
        errors.append(duration - record["truth"])
        holds.append(record["hold"])
        if not any(begun < finished and finished - duration < end for begun, end in scrapes):
            outside.append(duration - record["truth"])
    pct = promtext.percentile
    return AccuracyRow(protocol, nominal, len(measured), rate, unmatched, failed, pct(holds, 0.5), pct(holds, 0.99),
                       pct(measured, 0.5), pct(measured, 0.99), pct(errors, 0.5), pct(errors, 0.99),
                       pct([abs(e) for e in errors], 0.99), len(measured) - len(outside), pct(outside, 0.99),
                       loop_lag, cpu)


def _match(records: list[dict], finished: float) -> dict | None:
    """The server's last answer sent before ``finished``, if recent enough to be this probe's."""
    index = bisect.bisect_right([r["sent_wall"] for r in records], finished) - 1
    if index < 0 or finished - records[index]["sent_wall"] > MATCH_WINDOW:
        return None
    return records[index]


# --- the delay server process ---------------------------------------------------------------------------------
def _start_delay_server(ctx: Context, settings: AccuracySettings, workdir: Path) -> tuple[Managed, dict]:
    cmd = pinned([sys.executable, "-m", "benchmarks.delayserver", "--dns-delay", f"{settings.dns_delay:g}",
                  "--http-delay", f"{settings.http_delay:g}"], ctx.cores.others)
    server = Managed("delay server", cmd, log=workdir / "delayserver.log", cwd=Path(__file__).resolve().parents[1],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert server.proc.stdout is not None
    line = server.proc.stdout.readline()
    if not line:
        server.stop()
        raise RuntimeError(f"delay server did not start\n{server.tail()}")
    return server, json.loads(line)


def _dump(server: Managed) -> list[dict]:
    proc = server.proc
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"dump\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def _stop_delay_server(server: Managed) -> None:
    proc = server.proc
    try:
        if proc.stdin is not None:
            proc.stdin.write(b"quit\n")
            proc.stdin.close()
        proc.wait(5)
    except (BrokenPipeError, subprocess.TimeoutExpired):
        pass
    server.stop()
    if proc.stdout is not None:
        proc.stdout.close()


def to_json(rows: list[AccuracyRow], settings: AccuracySettings) -> dict:
    return {"settings": asdict(settings), "rows": [asdict(r) for r in rows]}
