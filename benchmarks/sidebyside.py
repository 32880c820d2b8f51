"""``python -m benchmarks.sidebyside``: does measuring side by side move the CPU figures?

The CPU benchmark measures each of our modes in the same window as blackbox_exporter, both pinned to one
CPU. This checks what that costs each of them: every round measures blackbox_exporter alone, our mode
alone, then both together (as the CPU benchmark does), each window ``--window`` seconds, and prints the
CPU per 1,000 probes and the ratio of each. A figure that moves between "alone" and "together" by more
than the rounds' spread is what side-by-side measuring does to it. See docs/performance.md ("Measured
side by side").
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from benchmarks.context import Context
from benchmarks.cpu import CpuSample, CpuSettings, probe_window, scheduled_window
from benchmarks.exporters import modules_file, probe_mode_file, start_blackbox, start_ours
from benchmarks.procs import Cores
from benchmarks.report import table
from benchmarks.targets import start_targets


def _round(ctx: Context, settings: CpuSettings, protocol: str, mode: str, rnd: int, probers: dict
           ) -> tuple[float, float, float, float]:
    """(blackbox alone, ours alone, blackbox together, ours together) in CPU-ms per 1,000 probes."""
    window = 3 * rnd
    bb_alone = probe_window(ctx, settings, protocol, rnd, window, {"blackbox": probers["blackbox"]})["blackbox"]
    if mode == "scheduled":
        ours_alone = scheduled_window(ctx, settings, protocol, rnd, window + 1, None)[mode]
        both = scheduled_window(ctx, settings, protocol, rnd, window + 2, probers["blackbox"])
    else:
        ours_alone = probe_window(ctx, settings, protocol, rnd, window + 1, {"probe": probers["probe"]})[mode]
        both = probe_window(ctx, settings, protocol, rnd, window + 2, probers)
    ours_both, bb_both = both[mode], both["blackbox"]
    _check(bb_alone, ours_alone, ours_both, bb_both)
    return bb_alone.ms_per_1k, ours_alone.ms_per_1k, bb_both.ms_per_1k, ours_both.ms_per_1k


def _check(*samples: CpuSample) -> None:
    for s in samples:
        if s.probes == 0 or s.failed > 0.01 * s.probes:
            raise RuntimeError(f"{s.mode} {s.protocol}: {s.failed} of {s.probes} probes failed")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sidebyside", description=__doc__.splitlines()[0])
    p.add_argument("--protocol", choices=("http", "dns"), default="http")
    p.add_argument("--mode", choices=("scheduled", "probe"), default="scheduled")
    p.add_argument("--rounds", type=_at_least(1, int), default=4)
    p.add_argument("--window", type=_at_least(1, float), default=20.0, help="seconds measured per window (>= 1)")
    p.add_argument("--warmup", type=_at_least(0, float), default=5.0, help="seconds from start to the window")
    ns = p.parse_args(argv)
    try:
        return _run(ns)
    except RuntimeError as exc:  # a process did not start, a target died or probes failed
        print(f"\nside-by-side check failed: {exc}", file=sys.stderr)
        return 1


def _at_least(low: float, kind: type) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:g}, got {text}")
        return value

    return parse


def _run(ns: argparse.Namespace) -> int:
    settings = replace(CpuSettings(), window=ns.window, warmup=ns.warmup, protocols=(ns.protocol,))
    workdir = Path(tempfile.mkdtemp(prefix="outage-sidebyside-"))
    cores = Cores.plan()
    cores.pin_harness()
    rows = []
    try:
        targets = start_targets(workdir / "targets", cores.others)
        try:
            ctx = Context(workdir, cores, targets, modules_file(workdir / "blackbox.yml"))
            probers = {"blackbox": start_blackbox(ctx.modules, workdir, cores.prober)}
            try:
                if ns.mode == "probe":
                    probers["probe"] = start_ours(probe_mode_file(workdir / "ours-probe.json"), workdir,
                                                  cores.prober, name="outage-exporter-probe")
                for rnd in range(ns.rounds):
                    ctx.check_targets()
                    rows.append(_round(ctx, settings, ns.protocol, ns.mode, rnd, probers))
                    bb_a, ours_a, bb_b, ours_b = rows[-1]
                    print(f"round {rnd + 1}: alone {ours_a:.0f} / {bb_a:.0f} = {ours_a / bb_a:.2f}x   "
                          f"together {ours_b:.0f} / {bb_b:.0f} = {ours_b / bb_b:.2f}x", flush=True)
            finally:
                for prober in probers.values():
                    prober.stop()
        finally:
            targets.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    body = [[str(i + 1), f"{oa:.0f}", f"{ba:.0f}", f"{oa / ba:.2f}x", f"{ob:.0f}", f"{bb:.0f}", f"{ob / bb:.2f}x"]
            for i, (ba, oa, bb, ob) in enumerate(rows)]
    med = [statistics.median(col) for col in zip(*rows, strict=True)]
    body.append(["median", f"{med[1]:.0f}", f"{med[0]:.0f}", f"{statistics.median(r[1] / r[0] for r in rows):.2f}x",
                 f"{med[3]:.0f}", f"{med[2]:.0f}", f"{statistics.median(r[3] / r[2] for r in rows):.2f}x"])
    print(f"\n{ns.protocol} ours, {ns.mode}: CPU-ms per 1,000 probes at {settings.rate:g}/s, windows of "
          f"{settings.window:g} s, blackbox_exporter /probe at the same rate")
    print(table(["round", "ours alone", "blackbox alone", "ratio", "ours together", "blackbox together",
                 "ratio"], body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
