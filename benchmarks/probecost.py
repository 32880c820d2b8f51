"""``python -m benchmarks.probecost``: the CPU of the HTTP prober alone, per probe.

The exporter's scheduled-mode figure (``python -m benchmarks --only cpu``) includes everything a running
exporter does per probe: scheduling, the results store, ``/metrics``, the status board. This one measures
only ``exporter.probers.http.probe`` against the harness's nginx, in this process on its first CPU (nginx
on the others), ``--concurrency`` probes in flight, after ``--warmup`` probes: process CPU time (user and
system) per probe, one figure per round. ``--target URL`` probes another local URL instead of nginx, e.g.
``https://`` to see the TLS path. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks.procs import Cores
from benchmarks.targets import start_targets
from exporter import eventloop
from exporter.probers import http
from tests.servers.http import http_check


async def measure(url: str, *, probes: int, rounds: int, concurrency: int, warmup: int) -> list[tuple[float, float]]:
    """(user, system) CPU microseconds per probe, one pair per round."""
    loop = asyncio.get_running_loop()
    check = http_check(url)
    slots = asyncio.Semaphore(concurrency)
    failed: list[str] = []

    async def one() -> None:
        async with slots:
            res = await http.probe(check, deadline=loop.time() + 2)
            if not res.success:
                failed.append(res.reason or "")

    try:
        await asyncio.gather(*(one() for _ in range(warmup)))
        figures = []
        for _ in range(rounds):
            before = resource.getrusage(resource.RUSAGE_SELF)
            await asyncio.gather(*(one() for _ in range(probes)))
            after = resource.getrusage(resource.RUSAGE_SELF)
            figures.append(((after.ru_utime - before.ru_utime) / probes * 1e6,
                            (after.ru_stime - before.ru_stime) / probes * 1e6))
    finally:
        await http.close()
    if failed:
        raise RuntimeError(f"{len(failed)} probes failed ({sorted(set(failed))}): the figures would not "
                           "measure successful probes")
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probecost", description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=2000, help="probes per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--target", help="a local URL to probe instead of the harness's nginx")
    parser.add_argument("--event-loop", choices=("auto", "uvloop", "asyncio"), default=None)
    args = parser.parse_args(argv)
    cores = Cores.plan()
    if cores.pinned:
        os.sched_setaffinity(0, cores.prober)
    with tempfile.TemporaryDirectory(prefix="probecost-") as tmp:
        targets = None if args.target else start_targets(Path(tmp), cores.others)
        try:
            url = args.target or targets.http_url  # type: ignore[union-attr]
            loop_name, _ = eventloop.choose(args.event_loop)
            figures = eventloop.run(measure(url, probes=args.probes, rounds=args.rounds,
                                            concurrency=args.concurrency, warmup=args.warmup),
                                    preference=args.event_loop)
        finally:
            if targets is not None:
                targets.stop()
    totals = [user + system for user, system in figures]
    print(f"HTTP prober alone: {url}, {args.probes} probes x {args.rounds} rounds, {args.concurrency} in flight, "
          f"loop {loop_name}, {cores.describe()}")
    print("round  user us  system us  total us per probe")
    for i, (user, system) in enumerate(figures, 1):
        print(f"{i:5}  {user:7.0f}  {system:9.0f}  {user + system:18.0f}")
    print(f"median {statistics.median(totals):.0f} us, lowest {min(totals):.0f} us of CPU per probe")
    return 0


if __name__ == "__main__":
    sys.exit(main())
