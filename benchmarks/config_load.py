"""``python -m benchmarks.config_load``: how long ``outage-exporter --config.check`` takes on a large config.

Writes the scale benchmark's config (services with one HTTP and one DNS check each, JSON like
``benchmarks.scale`` writes it) for ``--checks`` scheduled checks, runs ``python -m exporter --config.check``
on it ``--rounds`` times and prints the median wall time (process start to exit: interpreter start,
imports, read, parse, validation and check expansion). ``--pure-python`` makes the loader use PyYAML's
pure-Python parser, for comparison with libyaml. See docs/performance.md ("Config load").
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.exporters import REPO, scheduled_file
from benchmarks.scale import scale_services

_FORCE_PURE = "from exporter.config import reading as R; R.YAML_LOADER = R.YAML_LOADERS['python']; "


def run_once(config: Path, *, pure: bool) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one ``--config.check``; CPU is steadier on a busy machine."""
    code = ("import sys; " + (_FORCE_PURE if pure else "") +
            "from exporter.cli import main; sys.exit(main(sys.argv[1:]))")
    cpu0 = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, "--config.check", "--config.file", str(config)],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"--config.check failed: {done.stderr.strip()}")
    return elapsed, _children_cpu() - cpu0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.config_load", description=__doc__.splitlines()[0])
    p.add_argument("--checks", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--pure-python", action="store_true", help="parse with PyYAML's pure-Python loader")
    ns = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="config-load-") as tmp:
        config = scheduled_file(Path(tmp) / "config.json",
                                scale_services(ns.checks, "http://127.0.0.1:8080/", "127.0.0.1:5353"),
                                interval=15.0, dns_server="127.0.0.1:5353")
        size = os.path.getsize(config)
        runs = [run_once(config, pure=ns.pure_python) for _ in range(ns.rounds)]
    wall, cpu = [w for w, _ in runs], [c for _, c in runs]
    parser = "pure-Python" if ns.pure_python else "libyaml"
    print(f"--config.check, {ns.checks} checks ({size / 2**20:.1f} MiB), {parser} parser, {ns.rounds} rounds: "
          f"wall median {statistics.median(wall):.2f} s (min {min(wall):.2f}, max {max(wall):.2f}), "
          f"CPU median {statistics.median(cpu):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
