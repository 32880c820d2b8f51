"""Plain-text tables of the results, and the verdicts against the project's performance targets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.accuracy import AccuracyRow
from benchmarks.baseline import Comparison
from benchmarks.cpu import MODE_TITLES, CpuResult, per_round
from benchmarks.machine import Machine
from benchmarks.scale import ScaleRow

MB = 1e6


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> str:
    """The first ``left`` columns left-aligned (text), the others right-aligned (numbers), two spaces apart."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def ms(seconds: float, digits: int = 1) -> str:
    return "n/a" if seconds is None or math.isnan(seconds) else f"{seconds * 1000:.{digits}f}"


def machine_text(m: Machine) -> str:
    return "\n".join([
        f"date:      {m.date}",
        f"command:   {m.command}",
        f"machine:   {m.nproc} CPUs, {m.cpu_model}, Linux {m.kernel}, load average at start {m.load_average}",
        f"pinning:   {m.pinning}",
        f"versions:  python {m.python}, outage-exporter {m.exporter} on {m.event_loop}, "
        f"blackbox_exporter {m.blackbox}, "
        f"nginx {m.nginx}, {m.dns_server}",
        "packages:  " + ", ".join(f"{name} {version}" for name, version in m.packages.items()),
    ])


def cpu_text(result: CpuResult) -> str:
    s = result.settings
    rounds = per_round(result.samples)
    rows = []
    for r in result.rows:
        ratio = result.ratios.get(r.protocol, {}).get(r.mode)
        each = rounds.get(r.protocol, {}).get(r.mode, [])
        rows.append([r.protocol, MODE_TITLES[r.mode], f"{r.ms_per_1k:.1f}", f"{r.ms_min:.1f}-{r.ms_max:.1f}",
                     f"{r.probes_per_second:.1f}", str(r.probes), str(r.failed),
                     "1.00x" if r.mode == "blackbox" else (f"{ratio:.2f}x" if ratio is not None else "n/a"),
                     " / ".join(f"{x:.2f}" for x in each) if each else "-"])
    title = (f"CPU per 1,000 probes (prober process only; median of {s.rounds} round(s) of {s.window:g} s at "
             f"{s.rate:g} probes/s, each of our modes side by side with blackbox_exporter in the same window; "
             f"scheduled mode scraped every {s.interval:g} s)")
    headers = ["protocol", "mode", "CPU-ms/1k", "range", "probes/s", "probes", "failed", "vs blackbox",
               "ratio per round"]
    text = title + "\n" + table(headers, rows, left=2)
    for r in result.rows:
        if r.failed > 0.01 * r.probes:
            text += (f"\nwarning: {r.failed} of {r.probes} probes of {r.protocol} {MODE_TITLES[r.mode]} failed "
                     "(refused, timed out or probe_success 0): that row does not measure successful probes")
    return text


def scale_text(rows: list[ScaleRow]) -> str:
    body = [[str(r.checks), f"{r.interval:g}s", str(r.workers), r.cpus, f"{r.target_rate:.0f}",
             f"{r.probes_per_second:.0f}", f"{r.probes_per_second / r.target_rate * 100:.1f}%",
             str(r.skipped_runs), f"{r.cpu_utilisation * 100:.0f}%",
             "/".join(f"{c * 100:.0f}" for c in r.process_cpu_utilisation), f"{r.cpu_ms_per_probe:.3f}",
             f"{r.rss_bytes / MB:.0f}", "/".join(f"{b / MB:.0f}" for b in r.process_rss_bytes),
             f"{r.peak_rss_bytes / MB:.0f}", ms(r.sched_lag_p50), ms(r.sched_lag_p99), ms(r.loop_lag_p50),
             ms(r.loop_lag_p99), f"{ms(r.metrics_seconds_median, 0)}/{ms(r.metrics_seconds_max, 0)}",
             f"{r.metrics_bytes / MB:.1f}", f"{r.startup_seconds:.1f}"] for r in rows]
    headers = ["checks", "interval", "workers", "CPUs", "target/s", "probes/s", "of demand", "skipped", "CPU",
               "CPU % parent/workers", "CPU ms/probe", "RSS MB", "RSS MB parent/workers", "peak MB", "lag p50 ms",
               "lag p99 ms", "loop p50 ms", "loop p99 ms", "/metrics ms med/max", "/metrics MB", "startup s"]
    return ("Scale (exporter pinned to one CPU per worker; half HTTP, half DNS checks; lag from the exporter's "
            "histograms; CPU and RSS of the parent and its workers)\n" + table(headers, body))


def accuracy_text(rows: list[AccuracyRow]) -> str:
    body = [[r.protocol, f"{r.nominal * 1000:.0f}", str(r.samples), f"{ms(r.hold_p50, 2)}/{ms(r.hold_p99, 2)}",
             f"{ms(r.measured_p50, 2)}/{ms(r.measured_p99, 2)}", f"{ms(r.error_p50, 2)}/{ms(r.error_p99, 2)}",
             ms(r.abs_error_p99, 2), ms(r.error_p99_outside_scrapes, 2), ms(r.loop_lag_p99),
             f"{r.probes_per_second:.0f}", str(r.failed + r.unmatched)] for r in rows]
    headers = ["protocol", "delay ms", "probes", "server hold p50/p99", "measured p50/p99", "error p50/p99",
               "|error| p99", "p99 outside scrapes", "loop lag p99", "all probes/s", "failed"]
    return ("Latency accuracy (error = measured duration - the delay server's own record of that request; ms)\n"
            + table(headers, body))


def baseline_text(items: list[Comparison]) -> str:
    rows = [["REGRESSED" if c.regressed else "ok", c.protocol, MODE_TITLES[c.mode], f"{c.ratio:.2f}x",
             f"{c.baseline:.2f}x", f"{c.limit:.2f}x"] for c in items]
    return ("CPU ratios against the stored baseline (benchmarks/baseline.json; the cheapest round of this run)\n"
            + table(["status", "protocol", "mode", "this run", "baseline", "limit"], rows, left=3))


# Our CPU per probe over blackbox_exporter's, per protocol and mode: the project's targets.
CPU_LIMITS = {"http": {"scheduled": 0.45, "probe": 0.8}, "dns": {"scheduled": 0.5, "probe": 1.0}}


@dataclass(frozen=True)
class Verdict:
    target: str
    value: str
    met: bool | None  # None: not measured in this run

    @property
    def status(self) -> str:
        return "not measured" if self.met is None else ("met" if self.met else "NOT met")


def verdicts(cpu: CpuResult | None, scale: list[ScaleRow] | None,
             accuracy: list[AccuracyRow] | None) -> list[Verdict]:
    out = []
    rounds = per_round(cpu.samples) if cpu else {}
    for protocol, limits in CPU_LIMITS.items():
        for mode, limit in limits.items():
            ratio = cpu.ratios.get(protocol, {}).get(mode) if cpu else None
            each = rounds.get(protocol, {}).get(mode, [])
            label = f"{protocol.upper()} {MODE_TITLES[mode]} CPU <= {limit:g}x blackbox in every round"
            value = "n/a" if ratio is None else f"{ratio:.2f}x, worst round {max(each):.2f}x"
            out.append(Verdict(label, value, None if ratio is None else max(each) <= limit))
    row = next((r for r in scale or [] if r.checks == 10_000 and r.workers == 1), None)
    for label, value, ok in (
        ("10k checks, one CPU: scheduler lag p99 < 100 ms", lambda r: f"{ms(r.sched_lag_p99)} ms",
         lambda r: r.sched_lag_p99 < 0.1),
        ("10k checks, one CPU: RSS < 300 MB", lambda r: f"{r.rss_bytes / MB:.0f} MB", lambda r: r.rss_bytes < 300 * MB),
        ("10k checks, one CPU: /metrics render < 250 ms (median)", lambda r: f"{ms(r.metrics_seconds_median, 0)} ms",
         lambda r: r.metrics_seconds_median < 0.25),
        ("10k checks, one CPU: first /metrics after start < 250 ms", lambda r: f"{ms(r.first_scrape_seconds, 0)} ms",
         lambda r: r.first_scrape_seconds < 0.25),
    ):
        out.append(Verdict(label, value(row) if row else "n/a", ok(row) if row else None))
    out += workers_verdicts(scale or [])
    for r in accuracy or []:
        busy = r.probes_per_second >= 450
        out.append(Verdict(f"{r.protocol.upper()} latency |error| p99 < 2 ms at 500 probes/s",
                           f"{ms(r.abs_error_p99, 2)} ms at {r.probes_per_second:.0f}/s",
                           (r.abs_error_p99 < 0.002) if busy else None))
    return out


def workers_verdicts(scale: list[ScaleRow]) -> list[Verdict]:
    """30,000 checks at 15 s (2,000 probes/s) with 2 workers: keeps up, on time, and no dearer per probe.

    CPU per probe is compared with one worker's at the largest size one worker keeps up with (>= 98 % of
    demand): a saturated process skips runs and renders /metrics late, which makes its cost per probe
    meaningless as a reference.
    """
    two = next((r for r in scale if r.checks == 30_000 and r.workers == 2), None)
    keeping_up = [r for r in scale if r.workers == 1 and r.probes_per_second >= 0.98 * r.target_rate]
    one = max(keeping_up, key=lambda r: r.checks, default=None)
    ratio = two.cpu_ms_per_probe / one.cpu_ms_per_probe if two and one and one.cpu_ms_per_probe else None
    return [
        Verdict("30k checks, 2 workers: >= 98% of demand",
                f"{two.probes_per_second / two.target_rate * 100:.1f}%" if two else "n/a",
                two.probes_per_second >= 0.98 * two.target_rate if two else None),
        Verdict("30k checks, 2 workers: scheduler lag p99 < 100 ms", f"{ms(two.sched_lag_p99)} ms" if two else "n/a",
                two.sched_lag_p99 < 0.1 if two else None),
        Verdict("30k checks, 2 workers: CPU per probe within 10% of 1 worker's",
                f"{ratio:.2f}x ({two.cpu_ms_per_probe:.3f} vs {one.cpu_ms_per_probe:.3f} ms at {one.checks // 1000}k)"
                if ratio and one else "n/a",
                ratio <= 1.10 if ratio else None),
    ]


def verdicts_text(items: list[Verdict]) -> str:
    return "Project targets\n" + table(["target", "this run", "status"], [[v.target, v.value, v.status] for v in items])
