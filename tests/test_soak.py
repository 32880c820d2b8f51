"""The soak driver (tests/soak.py): its verdict logic, and a shortened run against the real exporter."""

from __future__ import annotations

import io

import pytest

from tests import soak
from tests.soak import Bounds, Options, Sample, judge

MB = 1024  # kB


def samples(rss_mb: list[float], *, fds: list[int] | None = None, every: float = 60.0,
            scrape_failures: int = 0) -> list[Sample]:
    fds = fds or [20] * len(rss_mb)
    return [Sample(elapsed=i * every, rss_kb=int(mb * MB), fds=fd, runs=100 * (i + 1), failures=10 * i,
                   scrapes=60 * (i + 1), scrape_failures=scrape_failures)
            for i, (mb, fd) in enumerate(zip(rss_mb, fds, strict=True))]


def test_flat_run_passes() -> None:
    verdict = judge(samples([40, 45] + [46.2, 46.1, 46.3, 46.2] * 6), Bounds())
    assert verdict.ok, verdict.problems
    assert verdict.rss_slope_mb_per_hour is not None and abs(verdict.rss_slope_mb_per_hour) < 1


def test_steady_growth_fails_on_slope_even_when_small() -> None:
    rss = [46 + 0.2 * i for i in range(61)]  # 12 MB/h: under the growth bound, over the slope bound
    verdict = judge(samples(rss), Bounds(max_rss_growth_mb=50))
    assert not verdict.ok and "RSS slope" in verdict.problems[0]


def test_slope_is_not_judged_on_short_runs() -> None:
    rss = [46 + 0.05 * i for i in range(10)]
    verdict = judge(samples(rss, every=10.0), Bounds())
    assert verdict.ok and verdict.rss_slope_mb_per_hour is None


def test_growth_fd_leak_and_failed_scrapes_fail() -> None:
    assert "RSS grew" in judge(samples([40, 40, 41, 70]), Bounds()).problems[0]
    leak = judge(samples([40] * 8, fds=[20, 21, 20, 30, 40, 50, 60, 70]), Bounds())
    assert not leak.ok and "fds reached 70" in leak.problems[0]
    failed = judge(samples([40] * 4, scrape_failures=2), Bounds())
    assert not failed.ok and "scrapes failed" in failed.problems[0]


def test_stalled_probing_fails() -> None:
    stalled = samples([40] * 4)
    stalled[3] = Sample(**{**stalled[3].__dict__, "runs": stalled[2].runs})
    assert "stopped increasing" in judge(stalled, Bounds()).problems[0]


def test_config_covers_every_flapping_target() -> None:
    class Peer:
        def url(self, path: str) -> str:
            return "http://127.0.0.1:9/" + path.lstrip("/")

    targets = soak.Targets(http=type("H", (), {"url": "http://127.0.0.1:7/"})(),  # type: ignore[arg-type]
                           tcp=type("T", (), {"address": "127.0.0.1:8"})(),  # type: ignore[arg-type]
                           dns=type("D", (), {"host": "127.0.0.1", "port": 5353})(), hostile=[Peer()])
    from exporter.config.loader import load_config_text

    config = load_config_text(soak.config_text(targets, copies=2, interval=1.0), resolv_conf="/nonexistent")
    assert len(config.services) == 4 and {r.name for r in config.regions} == {"r1", "r2"}
    assert config.defaults.timeout < config.defaults.interval


@pytest.mark.slow
def test_shortened_soak_run() -> None:
    out = io.StringIO()
    verdict, taken = soak.soak(Options(duration=90, sample=10, flap=3, copies=2), out=out)
    report = soak.summary(verdict, taken)
    assert verdict.ok, out.getvalue() + report
    assert len(taken) >= 9 and taken[-1].elapsed >= 90
    assert taken[-1].failures > 0 and taken[-1].runs > taken[-1].failures  # flapping: some fail, some pass
    assert "RSS (MB)" in out.getvalue() and report.endswith("PASS")
