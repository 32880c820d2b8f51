"""``python -m benchmarks``: start the targets, run the selected benchmarks, print tables (and JSON)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from benchmarks import accuracy, baseline, cpu, report, scale
from benchmarks.context import Context
from benchmarks.exporters import modules_file
from benchmarks.machine import EVENT_LOOP_ENV, describe
from benchmarks.procs import Cores
from benchmarks.targets import start_targets

BENCHMARKS = ("cpu", "scale", "accuracy")


@dataclass(frozen=True)
class Profile:
    cpu: cpu.CpuSettings
    scale: scale.ScaleSettings
    accuracy: accuracy.AccuracySettings


PROFILES = {
    "full": Profile(cpu.CpuSettings(), scale.ScaleSettings(workers=(1, 2)), accuracy.AccuracySettings()),
    "quick": Profile(cpu.CpuSettings(window=10.0, warmup=3.0, rounds=2),
                     scale.ScaleSettings(sizes=(1_000, 10_000), window=15.0, metrics_samples=3, workers=(1, 2)),
                     accuracy.AccuracySettings(duration=15.0)),
    # For the smoke test: every code path, tiny loads, well under a minute.
    # CPU: two rounds of 4 s (400 probes each, tens of 10 ms clock ticks per mode), so that the baseline check
    # (on the cheapest round's ratio) holds on a loaded machine.
    "tiny": Profile(cpu.CpuSettings(rate=100.0, window=4.0, warmup=1.0, rounds=2, interval=1.0),
                    scale.ScaleSettings(sizes=(200,), interval=2.0, window=2.0, metrics_samples=1, workers=(2,)),
                    accuracy.AccuracySettings(background_rate=50.0, background_interval=1.0, delayed_checks=10,
                                              delayed_interval=1.0, duration=3.0, warmup=1.0)),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description="Compare outage-exporter (this checkout) "
                                "with blackbox_exporter on loopback targets; see docs/performance.md.")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", const="quick", dest="profile",
                      help="fewer rounds, shorter windows, no 30k scale case (about 4 minutes)")
    size.add_argument("--tiny", action="store_const", const="tiny", dest="profile",
                      help="smoke-test sizes: exercises everything in under a minute; figures are meaningless")
    p.set_defaults(profile="full")
    p.add_argument("--only", type=_only, default=BENCHMARKS, help="comma-separated subset of cpu,scale,accuracy")
    p.add_argument("--json", type=Path, default=None, help="also write every figure (and raw rounds) here")
    p.add_argument("--rounds", type=int, default=None, help="CPU rounds (default: 3, --quick 2)")
    p.add_argument("--rate", type=float, default=None, help="CPU benchmark probe rate per second (default 200)")
    p.add_argument("--sizes", type=_sizes, default=None, help="scale: comma-separated check counts")
    p.add_argument("--workers", type=_sizes, default=None,
                   help="scale: comma-separated --workers counts, each size runs with each (default: 1,2)")
    p.add_argument("--dns-server", choices=("auto", "knot", "nsd"), default="auto",
                   help="authoritative DNS target (auto: knot if installed, else nsd)")
    p.add_argument("--event-loop", choices=("auto", "uvloop", "asyncio"), default=None,
                   help="event loop of outage-exporter (sets OUTAGE_EXPORTER_EVENT_LOOP; default: as the environment "
                        "says, else the exporter's own choice)")
    p.add_argument("--keep-workdir", action="store_true", help="keep configs and logs of every process")
    return p


def _only(value: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected a subset of {','.join(BENCHMARKS)}, got {value!r}")
    return names


def _sizes(value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("check counts must be positive")
    return sizes


def profile_for(ns: argparse.Namespace) -> Profile:
    prof = PROFILES[ns.profile]
    cpu_settings = prof.cpu
    if ns.rounds is not None:
        cpu_settings = replace(cpu_settings, rounds=max(1, ns.rounds))
    if ns.rate is not None:
        cpu_settings = replace(cpu_settings, rate=ns.rate)
    scale_settings = prof.scale if ns.sizes is None else replace(prof.scale, sizes=ns.sizes)
    if ns.workers is not None:
        scale_settings = replace(scale_settings, workers=ns.workers)
    return Profile(cpu_settings, scale_settings, prof.accuracy)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    ns = build_parser().parse_args(args)
    try:
        return run(ns, args)
    except RuntimeError as exc:  # a process did not start or a target died: the message carries its log
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 1


def run(ns: argparse.Namespace, args: list[str]) -> int:
    if ns.event_loop is not None:
        os.environ[EVENT_LOOP_ENV] = ns.event_loop  # inherited by every exporter process started below
    prof = profile_for(ns)
    command = shlex.join(["python", "-m", "benchmarks", *args])
    workdir = Path(tempfile.mkdtemp(prefix="outage-bench-"))
    cores = Cores.plan()
    cores.pin_harness()
    started = time.monotonic()
    try:
        targets = start_targets(workdir / "targets", cores.others, dns_software=ns.dns_server)
        try:
            ctx = Context(workdir, cores, targets, modules_file(workdir / "blackbox.yml"))
            machine = describe(command, cores.describe(), targets.dns_software)
            print(report.machine_text(machine), flush=True)
            results = _run(ctx, prof, ns.only)
        finally:
            targets.stop()
    finally:
        if ns.keep_workdir:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    _print(results)
    if ns.json is not None:
        ns.json.write_text(json.dumps({"machine": machine.to_json(), "profile": ns.profile,
                                       "seconds": round(time.monotonic() - started, 1), **_json(results, prof)},
                                      indent=2, default=str))
    return 0


def _run(ctx: Context, prof: Profile, only: tuple[str, ...]) -> dict:
    def log(line: str) -> None:
        print(line, flush=True)

    results: dict = {"cpu": None, "scale": None, "accuracy": None, "baseline": None}
    if "cpu" in only:
        log("\nrunning: CPU per 1,000 probes")
        results["cpu"] = cpu.run_cpu(ctx, prof.cpu, log)
        if baseline.PATH.exists():
            results["baseline"] = baseline.compare(cpu.ratios(results["cpu"].samples, pick=min), baseline.load())
    if "scale" in only:
        log("\nrunning: scale")
        results["scale"] = scale.run_scale(ctx, prof.scale, log)
    if "accuracy" in only:
        log("\nrunning: latency accuracy")
        results["accuracy"] = accuracy.run_accuracy(ctx, prof.accuracy, log)
    return results


def _print(results: dict) -> None:
    sections = []
    if results["cpu"] is not None:
        sections.append(report.cpu_text(results["cpu"]))
    if results["baseline"] is not None:
        sections.append(report.baseline_text(results["baseline"]))
    if results["scale"] is not None:
        sections.append(report.scale_text(results["scale"]))
    if results["accuracy"] is not None:
        sections.append(report.accuracy_text(results["accuracy"]))
    sections.append(report.verdicts_text(report.verdicts(results["cpu"], results["scale"], results["accuracy"])))
    print("\n" + "\n\n".join(sections))


def _json(results: dict, prof: Profile) -> dict:
    out: dict = {}
    if results["cpu"] is not None:
        out["cpu"] = results["cpu"].to_json()
    if results["baseline"] is not None:
        out["baseline"] = [{**asdict(c), "regressed": c.regressed} for c in results["baseline"]]
    if results["scale"] is not None:
        out["scale"] = scale.to_json(results["scale"], prof.scale)
    if results["accuracy"] is not None:
        out["accuracy"] = accuracy.to_json(results["accuracy"], prof.accuracy)
    out["targets"] = [{"target": v.target, "value": v.value, "status": v.status}
                      for v in report.verdicts(results["cpu"], results["scale"], results["accuracy"])]
    return out


if __name__ == "__main__":
    sys.exit(main())
