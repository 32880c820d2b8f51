"""Soak run: the real exporter against flapping and hostile local targets, watching its RSS and fds.

    python -m tests.soak --duration 3600 --sample 60          # the full run (one hour)
    python -m tests.soak --duration 90 --sample 10            # what tests/test_soak.py runs

Targets (all on 127.0.0.1, port 0): an HTTP server that is up for ``--flap`` seconds then refuses
connections for as long; a DNS server whose name alternately answers and is dropped (a black hole,
so probes time out); a TCP server alternating between a greeting and a reset; plus hostile peers that
never answer, drip header bytes, or stream an endless body. Each is probed by ``--copies`` checks in each
of two regions, every ``--interval``. /metrics is scraped every second throughout.

Every ``--sample`` seconds the driver records the exporter's RSS and open fds (from /proc), its probe
runs so far and the scrape failures, and prints a table row. After a warm-up (the first quarter of the
run, at least one sample) it fails when

- RSS grew by more than ``--max-rss-growth-mb`` between the end of the warm-up and the end, or
- the RSS slope after the warm-up exceeds ``--max-rss-slope-mb-per-hour`` (only judged when the
  measured span is at least 15 minutes; shorter spans are dominated by allocator noise), or
- the fd count ever exceeds the warm-up's highest count by more than ``--max-fd-growth``, or
- a scrape failed, or probe runs stopped increasing, or the exporter exited.

Exit code 0 when the run passed, 1 when it failed; the last line says which bound was crossed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.name
from prometheus_client.parser import text_string_to_metric_families

from exporter.lab.dnsserver import DNSServer
from tests.helpers.exporter_proc import BackgroundLoop, ExporterProcess
from tests.servers.dns import start_dns
from tests.servers.hostile import FlappingHTTP, FlappingTCP, HostilePeer, start_hostile

FLAP_NAME = "flap.test."
SLOPE_MIN_SPAN = 900.0  # seconds of post-warm-up samples needed before the RSS slope is judged


@dataclass(frozen=True)
class Sample:
    elapsed: float  # seconds since the exporter was ready
    rss_kb: int
    fds: int
    runs: int  # outage_probe_runs_total summed over every check
    failures: int  # outage_probe_failures_total summed
    scrapes: int
    scrape_failures: int


@dataclass
class Verdict:
    ok: bool
    problems: list[str] = field(default_factory=list)
    rss_growth_mb: float = 0.0
    rss_slope_mb_per_hour: float | None = None
    fd_baseline: int = 0
    fd_peak: int = 0


@dataclass(frozen=True)
class Bounds:
    max_rss_growth_mb: float = 15.0
    max_rss_slope_mb_per_hour: float = 5.0
    max_fd_growth: int = 30


# --- /proc ---------------------------------------------------------------------------------------------
def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def totals(metrics_text: str) -> tuple[int, int]:
    """(probe runs, probe failures) summed over every check of an exposition."""
    runs = failures = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == "outage_probe_runs_total":
                runs += s.value
            elif s.name == "outage_probe_failures_total":
                failures += s.value
    return int(runs), int(failures)


# --- Judging -------------------------------------------------------------------------------------------
def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, in value units per hour."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / var * 3600.0


def judge(samples: list[Sample], bounds: Bounds) -> Verdict:
    """Apply the bounds to the samples (see the module docstring)."""
    if len(samples) < 3:
        return Verdict(ok=False, problems=["fewer than 3 samples: run longer or sample more often"])
    warm = max(1, len(samples) // 4)
    settled = samples[warm - 1:]
    verdict = Verdict(ok=True)
    verdict.rss_growth_mb = (settled[-1].rss_kb - settled[0].rss_kb) / 1024
    verdict.fd_baseline = max(s.fds for s in samples[:warm])
    verdict.fd_peak = max(s.fds for s in samples)
    span = settled[-1].elapsed - settled[0].elapsed
    if verdict.rss_growth_mb > bounds.max_rss_growth_mb:
        verdict.problems.append(f"RSS grew {verdict.rss_growth_mb:.1f} MB after warm-up "
                                f"(bound {bounds.max_rss_growth_mb} MB)")
    if span >= SLOPE_MIN_SPAN:
        slope = slope_per_hour([(s.elapsed, s.rss_kb / 1024) for s in settled])
        verdict.rss_slope_mb_per_hour = slope
        if slope > bounds.max_rss_slope_mb_per_hour:
            verdict.problems.append(f"RSS slope {slope:.2f} MB/h (bound {bounds.max_rss_slope_mb_per_hour})")
    if verdict.fd_peak > verdict.fd_baseline + bounds.max_fd_growth:
        verdict.problems.append(f"fds reached {verdict.fd_peak}, warm-up peak {verdict.fd_baseline} "
                                f"(bound +{bounds.max_fd_growth})")
    last = samples[-1]
    if last.scrape_failures:
        verdict.problems.append(f"{last.scrape_failures} of {last.scrapes} scrapes failed")
    if any(b.runs <= a.runs for a, b in zip(samples, samples[1:], strict=False)):
        verdict.problems.append("probe runs stopped increasing between two samples")
    verdict.ok = not verdict.problems
    return verdict


def table(samples: list[Sample]) -> str:
    head = f"{'t (s)':>8} {'RSS (MB)':>9} {'fds':>5} {'runs':>9} {'failures':>9} {'scrapes':>8} {'failed':>6}"
    rows = [f"{s.elapsed:8.0f} {s.rss_kb / 1024:9.1f} {s.fds:5d} {s.runs:9d} {s.failures:9d} "
            f"{s.scrapes:8d} {s.scrape_failures:6d}" for s in samples]
    return "\n".join([head, *rows])


# --- Targets -------------------------------------------------------------------------------------------
@dataclass
class Targets:
    http: FlappingHTTP
    tcp: FlappingTCP
    dns: DNSServer
    hostile: list[HostilePeer] = field(default_factory=list)
    _flapper: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        if self._flapper is not None:
            self._flapper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flapper
        await self.http.stop()
        await self.tcp.stop()
        await self.dns.stop()
        for peer in self.hostile:
            await peer.stop()


async def start_targets(flap: float) -> Targets:
    http = await FlappingHTTP(flap).start()
    tcp = await FlappingTCP(flap).start()
    dns = await start_dns({FLAP_NAME: {"A": ["127.0.0.1"]}, "test.": {"NS": ["ns1.test."]}})
    hostile = [await start_hostile(b) for b in ("never_answer", "slowloris", "endless_body")]
    targets = Targets(http=http, tcp=tcp, dns=dns, hostile=hostile)
    targets._flapper = asyncio.create_task(_flap_dns(dns, flap))
    return targets


async def _flap_dns(server: DNSServer, period: float) -> None:
    """Alternate the name between answering and a black hole; drop the query log (a soak runs long)."""
    handler = server.handler
    name = dns.name.from_text(FLAP_NAME)
    while True:
        await asyncio.sleep(period)
        if handler.modes.get(name) == "drop":
            handler.modes.pop(name)
        else:
            handler.modes[name] = "drop"
        handler.received.clear()


def config_text(targets: Targets, *, copies: int, interval: float) -> str:
    dns_addr = f"{targets.dns.host}:{targets.dns.port}"
    timeout = min(interval * 0.8, 2.0)
    services = []
    for i in range(copies):
        services.append(textwrap.dedent(f"""\
          - name: flap{i}
            checks:
              - {{name: http, module: http_2xx, target: "{targets.http.url}?c={i}"}}
              - {{name: dns, module: dns_a, query_name: flap.test}}
              - {{name: tcp, module: tcp_banner, target: "{targets.tcp.address}"}}
          - name: hostile{i}
            checks:"""))
        for j, peer in enumerate(targets.hostile):
            services.append(f'              - {{name: h{j}, module: http_2xx, target: "{peer.url("/")}?c={i}"}}')
    return textwrap.dedent(f"""\
        defaults: {{interval: {interval}s, timeout: {timeout:.2f}s}}
        modules:
          http_2xx: {{prober: http, http: {{body_size_limit: 1MB}}}}
          dns_a: {{prober: dns, dns: {{query_type: A}}}}
          tcp_banner: {{prober: tcp, tcp: {{query_response: [{{expect: "^220"}}, {{send: QUIT}}]}}}}
        regions:
          - {{name: r1, resolvers: ["{dns_addr}"]}}
          - {{name: r2, resolvers: ["{dns_addr}"]}}
        services:
        """) + "\n".join("  " + line if line else line for line in "\n".join(services).splitlines()) + "\n"


# --- The run -------------------------------------------------------------------------------------------
class Scraper(threading.Thread):
    """Scrapes /metrics once a second and keeps the latest totals."""

    def __init__(self, exporter: ExporterProcess) -> None:
        super().__init__(name="soak-scraper", daemon=True)
        self.exporter = exporter
        self.stop_event = threading.Event()
        self.scrapes = 0
        self.failures = 0
        self.runs = 0
        self.probe_failures = 0
        self.last_error = ""

    def run(self) -> None:
        while not self.stop_event.wait(1.0):
            self.scrape()

    def scrape(self) -> None:
        self.scrapes += 1
        try:
            reply = self.exporter.get("/metrics", timeout=5.0)
            if reply.status != 200:
                raise OSError(f"status {reply.status}")
            self.runs, self.probe_failures = totals(reply.text)
        except Exception as exc:  # noqa: BLE001 - any failed scrape counts
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Options:
    duration: float = 3600.0
    sample: float = 60.0
    flap: float = 5.0
    copies: int = 3
    interval: float = 1.0
    bounds: Bounds = Bounds()


def soak(options: Options, *, out=sys.stdout) -> tuple[Verdict, list[Sample]]:
    """Run the soak and return its verdict and samples (the table is printed as it grows)."""
    with BackgroundLoop() as bg, tempfile.TemporaryDirectory(prefix="outage-soak-") as tmp:
        targets = bg.run(start_targets(options.flap))
        try:
            config = Path(tmp) / "soak.yml"
            config.write_text(config_text(targets, copies=options.copies, interval=options.interval))
            with ExporterProcess(config) as exporter:
                samples = _sample_loop(exporter, options, out)
                logs_tail = exporter.logs()[-2000:]
        finally:
            bg.run(targets.stop())
    verdict = judge(samples, options.bounds)
    if not verdict.ok and logs_tail:
        print("exporter log (tail):\n" + logs_tail, file=out)
    return verdict, samples


def _sample_loop(exporter: ExporterProcess, options: Options, out) -> list[Sample]:
    assert exporter.proc is not None
    pid = exporter.proc.pid
    scraper = Scraper(exporter)
    scraper.start()
    samples: list[Sample] = []
    t0 = time.monotonic()
    print(table([]), file=out, flush=True)
    try:
        while True:
            elapsed = time.monotonic() - t0
            if exporter.returncode is not None:
                raise RuntimeError(f"exporter exited with {exporter.returncode}\n{exporter.logs()[-2000:]}")
            scraper.scrape()
            s = Sample(elapsed=elapsed, rss_kb=rss_kb(pid), fds=fd_count(pid), runs=scraper.runs,
                       failures=scraper.probe_failures, scrapes=scraper.scrapes,
                       scrape_failures=scraper.failures)
            samples.append(s)
            print(table([s]).splitlines()[1], file=out, flush=True)
            if elapsed >= options.duration:
                return samples
            next_at = min(len(samples) * options.sample, options.duration)
            time.sleep(max(0.0, next_at - (time.monotonic() - t0)))
    finally:
        scraper.stop_event.set()
        scraper.join(5)
        if scraper.last_error:
            print(f"last scrape error: {scraper.last_error}", file=out)


def summary(verdict: Verdict, samples: list[Sample]) -> str:
    first, last = samples[0], samples[-1]
    slope = "n/a (span < 15 min)" if verdict.rss_slope_mb_per_hour is None else \
        f"{verdict.rss_slope_mb_per_hour:.2f} MB/h"
    lines = [
        f"duration {last.elapsed:.0f}s, {len(samples)} samples, {last.runs} probe runs "
        f"({last.failures} failed), {last.scrapes} scrapes ({last.scrape_failures} failed)",
        f"RSS {first.rss_kb / 1024:.1f} -> {last.rss_kb / 1024:.1f} MB, growth after warm-up "
        f"{verdict.rss_growth_mb:.1f} MB, slope {slope}",
        f"fds {first.fds} -> {last.fds}, peak {verdict.fd_peak} (warm-up peak {verdict.fd_baseline})",
        "PASS" if verdict.ok else "FAIL: " + "; ".join(verdict.problems),
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=3600.0, help="seconds to run (default 3600)")
    p.add_argument("--sample", type=float, default=60.0, help="seconds between samples (default 60)")
    p.add_argument("--flap", type=float, default=5.0, help="seconds each target stays up or down (default 5)")
    p.add_argument("--copies", type=int, default=3, help="checks per target and region (default 3)")
    p.add_argument("--interval", type=float, default=1.0, help="probe interval in seconds (default 1)")
    p.add_argument("--max-rss-growth-mb", type=float, default=Bounds.max_rss_growth_mb)
    p.add_argument("--max-rss-slope-mb-per-hour", type=float, default=Bounds.max_rss_slope_mb_per_hour)
    p.add_argument("--max-fd-growth", type=int, default=Bounds.max_fd_growth)
    a = p.parse_args(argv)
    return Options(duration=a.duration, sample=a.sample, flap=a.flap, copies=a.copies, interval=a.interval,
                   bounds=Bounds(a.max_rss_growth_mb, a.max_rss_slope_mb_per_hour, a.max_fd_growth))


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    verdict, samples = soak(options)
    print(summary(verdict, samples), flush=True)
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
