"""``python -m benchmarks.board``: what one regular evaluation of the status board costs.

Builds a running exporter's state in memory (no probes, no network): services x regions x checks (two DNS
checks through two resolvers, an HTTPS check, a zone check on every fourth service), DNS and HTTP controls
per region, every check's window full of runs, a few services failing. Then times what the web
application does every EVALUATE_EVERY seconds: ``runtime_source()`` (on the loop), ``evaluate`` (in a
thread, still holding the GIL) and ``Board._adopt`` (since and history), median of ``--rounds``, after
the runs due since the previous evaluation were recorded (``--interval``: how often each check runs). The
last column is the mean time the garbage collector ran during an evaluation (included in the others).
``--profile`` prints the top functions of one evaluation. See docs/performance.md ("Status board").
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import math
import pstats
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from types import SimpleNamespace

from exporter import state as st
from exporter.checks import Check
from exporter.config.model import AuthoritativeCheck, Module, Region
from exporter.probers import result as r
from exporter.probers.result import NameserverResult, ZoneReport
from exporter.results import ResultStore
from tests.helpers.factories import LOOPBACK_RESOLVER, make_check, make_result

REGIONS = ("eu-west", "us-east", "ap-south")
RESOLVERS = ("127.0.0.1:5301", "127.0.0.1:5302")
NOW = 1_700_000_000.0
EVERY = 5.0  # exporter.web.status_api.EVALUATE_EVERY


def _checks(service: str, region: str, zone: bool, interval: float):
    provider = f"p{int(service[1:]) // 8:04d}"
    out = [make_check("dns", service=service, provider=provider, region=region, prober="dns", resolver=res,
                      interval=interval) for res in RESOLVERS]
    out.append(make_check("https", service=service, provider=provider, region=region, interval=interval))
    if zone:
        out.append(make_check("authns", service=service, provider=provider, region=region, interval=interval,
                              authoritative=AuthoritativeCheck(zone=f"{service}.test")))
    return out


def _controls(region: str, interval: float):
    return [make_check(f"ctl-{prober}-{i}", service="controls", provider="", region=region, prober=prober,
                       control=True, interval=interval, resolver=RESOLVERS[i % 2] if prober == "dns" else None)
            for prober in ("dns", "http") for i in range(2)]


def _shared(checks: list[Check]) -> list[Check]:
    """The checks with one Module object per module name, as the config's expansion shares them."""
    modules: dict[str, Module] = {}
    return [replace(c, module=modules.setdefault(c.module.name, c.module)) for c in checks]


def _zone(answering: int) -> ZoneReport:
    return ZoneReport(zone="z.test", nameservers=tuple(
        NameserverResult(f"ns{i}.z.test", f"127.0.0.{i + 1}", "udp", up=i < answering,
                         reason=None if i < answering else r.DNS_TIMEOUT) for i in range(2)))


def build(size: int, *, interval: float = 5.0, failing_every: int = 97, single: bool = False) -> SimpleNamespace:
    """A Runtime-like object with about ``size`` checks run every ``interval`` seconds (their starts spread
    over it), every window full of runs up to NOW; every ``failing_every``-th service fails everywhere.
    ``single``: ``size`` services of one HTTPS check each in one region, no controls (the CPU benchmark's
    scheduled-mode config: one cell per check)."""
    regions = REGIONS[:1] if single else REGIONS
    if single:
        checks = [make_check("https", service=f"s{i:05d}", provider=f"p{i // 8:04d}", region=regions[0],
                             interval=interval) for i in range(size)]
    else:
        per_service = len(REGIONS) * 3.25
        services = [f"s{i:05d}" for i in range(max(1, round(size / per_service)))]
        checks = [c for region in REGIONS for c in _controls(region, interval)]
        checks += [c for n, s in enumerate(services) for region in REGIONS
                   for c in _checks(s, region, n % 4 == 0, interval)]
    checks = _shared(checks)
    store = ResultStore()
    store.set_checks(checks)
    region_rows = [Region(name=g, resolvers=(LOOPBACK_RESOLVER,), display_name=g.upper()) for g in regions]
    runtime = SimpleNamespace(config=SimpleNamespace(regions=region_rows), checks=checks, store=store,
                              omit_region_label=False, region_named=lambda _: region_rows[0],
                              signals=SimpleNamespace(routing=None, statuspages=None), ready=True,
                              interval=interval, failing_every=failing_every)
    probe_until(runtime, NOW - 60, NOW)
    return runtime


def probe_until(runtime: SimpleNamespace, after: float, until: float) -> None:
    """Record the runs that finished in (after, until], as the scheduler would have."""
    interval = runtime.interval
    for n, check in enumerate(runtime.checks):
        failing = check.service != "controls" and int(check.service[1:]) % runtime.failing_every == 0
        phase = (n * 0.618) % interval
        k = math.floor((after - phase) / interval) + 1
        while (t := phase + k * interval) <= until:
            runtime.store.record(check, _result(check, failing, t))
            k += 1


def _result(check, failed: bool, t: float):
    if check.authoritative is not None:
        return make_result(not failed, reason=r.DNS_TIMEOUT if failed else None, zone=_zone(0 if failed else 2),
                           finished_at=t)
    if check.prober == "dns":
        return make_result(not failed, reason=r.DNS_SERVFAIL if failed else None, finished_at=t,
                           details={r.D_DNS_RCODE: 2 if failed else 0})
    return make_result(not failed, reason=r.HTTP_STATUS if failed else None, finished_at=t,
                       details={r.D_HTTP_STATUS: 503 if failed else 200})


class GcClock:
    """Seconds the garbage collector ran (it runs inside whatever allocates; at tens of thousands of checks
    its full collections are a large part of an evaluation)."""

    def __init__(self) -> None:
        self.seconds, self._started = 0.0, 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


def one_evaluation(board: st.Board, source: st.Source, now: float) -> tuple[float, float, float]:
    """Seconds spent in the source, evaluate and _adopt for one regular evaluation at ``now``."""
    t0 = time.perf_counter()
    inputs, regions, verdicts, beside = source()
    t1 = time.perf_counter()
    raw = st.evaluate(inputs, regions, now, verdicts=verdicts, beside=beside, memo=board._memo)  # noqa: SLF001
    t2 = time.perf_counter()
    board._adopt(raw)  # noqa: SLF001 - the part of snapshot_async that runs back on the loop
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def warmed(size: int, interval: float, single: bool = False) -> tuple[SimpleNamespace, st.Board, st.Source]:
    """A runtime and a board whose cells already have a full 30-minute history strip."""
    runtime = build(size, interval=interval, single=single)
    source = st.runtime_source(runtime)  # type: ignore[arg-type]
    board = st.Board(source)
    inputs, regions, verdicts, beside = source()
    raw = st.evaluate(inputs, regions, NOW, verdicts=verdicts, beside=beside)
    for k in range(st.HISTORY_SLOTS, 0, -1):
        board._adopt(replace(raw, generated_at=NOW - k * st.HISTORY_STEP))  # noqa: SLF001
    one_evaluation(board, source, NOW)
    return runtime, board, source


def measure(size: int, rounds: int, interval: float, single: bool = False
            ) -> tuple[int, list[tuple[float, float, float, float]]]:
    """(checks, per-round source, evaluate, adopt and GC seconds) of ``rounds`` evaluations EVALUATE_EVERY
    apart, the runs due in between recorded before each (outside the timing)."""
    runtime, board, source = warmed(size, interval, single)
    rows = []
    clock = GcClock()
    gc.callbacks.append(clock)
    try:
        for i in range(rounds):
            now = NOW + EVERY * (i + 1)
            probe_until(runtime, now - EVERY, now)
            clock.seconds = 0.0
            rows.append((*one_evaluation(board, source, now), clock.seconds))
    finally:
        gc.callbacks.remove(clock)
    return len(runtime.checks), rows


def profile(size: int, interval: float, top: int, single: bool = False) -> None:
    runtime, board, source = warmed(size, interval, single)
    probe_until(runtime, NOW, NOW + EVERY)
    prof = cProfile.Profile()
    prof.enable()
    one_evaluation(board, source, NOW + EVERY)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.board", description=__doc__.splitlines()[0])
    p.add_argument("--checks", type=int, nargs="+", default=[1_000, 10_000, 30_000])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--interval", type=float, default=5.0, help="seconds between a check's runs")
    p.add_argument("--profile", action="store_true", help="profile one evaluation of the first size")
    p.add_argument("--single", action="store_true",
                   help="one HTTPS check per service, one region (the CPU benchmark's scheduled config)")
    ns = p.parse_args(argv)
    if ns.profile:
        profile(ns.checks[0], ns.interval, 25, ns.single)
        return 0
    print(f"checks run every {ns.interval:g} s, evaluated every {EVERY:g} s, median of {ns.rounds}")
    print(f"{'checks':>7} {'source ms':>10} {'evaluate ms':>12} {'adopt ms':>9} {'total ms':>9} {'us/check':>9} "
          f"{'GC ms (mean)':>13}")
    for size in ns.checks:
        count, rows = measure(size, ns.rounds, ns.interval, ns.single)
        med = [statistics.median(col) * 1e3 for col in zip(*rows, strict=True)]
        total = statistics.median(sum(row[:3]) for row in rows) * 1e3
        print(f"{count:>7} {med[0]:>10.1f} {med[1]:>12.1f} {med[2]:>9.1f} {total:>9.1f} {total * 1e3 / count:>9.1f} "
              f"{statistics.mean(row[3] for row in rows) * 1e3:>13.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
