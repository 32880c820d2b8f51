"""The benchmark harness in its tiny profile: every benchmark runs end to end and reports real figures.

The figures of a tiny run mean little; what is checked is that the harness still starts the targets and
both exporters, measures, and prints every table row with positive numbers, so it cannot rot unnoticed,
and that its CPU ratios against blackbox_exporter stay within twice the stored baseline, so a change that
doubles the cost per probe is noticed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from benchmarks import baseline, cpu, promtext, sidebyside
from benchmarks.procs import cpu_seconds
from tests.helpers.binaries import require_binary

REPO = Path(__file__).resolve().parents[1]
NUMBER = r"[0-9]+(?:\.[0-9]+)?"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    require_binary("nginx", "/usr/sbin/nginx", package="nginx")
    require_binary("knotd", "/usr/sbin/knotd", "nsd", "/usr/sbin/nsd", package="knot")
    require_binary("prometheus-blackbox-exporter", "blackbox_exporter", package="prometheus-blackbox-exporter")
    out = tmp_path_factory.mktemp("bench") / "tiny.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--tiny", "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, json.loads(out.read_text())


def row(text: str, pattern: str) -> list[float]:
    """The numbers of the one table line matching ``pattern`` (a regex anchored at the line start)."""
    lines = [line for line in text.splitlines() if re.match(pattern, line)]
    assert len(lines) == 1, f"expected one line matching {pattern!r}:\n{text}"
    return [float(n) for n in re.findall(NUMBER, lines[0])]


@pytest.mark.slow
def test_cpu_table_has_every_protocol_and_mode(tiny_run: tuple[str, dict]) -> None:
    text, _ = tiny_run
    for protocol in ("http", "dns"):
        for mode in ("ours, scheduled", "ours, /probe", "blackbox_exporter /probe"):
            numbers = row(text, rf"{protocol}\s+{re.escape(mode)}\s")
            cpu_ms, probes_per_s, probes = numbers[0], numbers[3], numbers[4]
            assert cpu_ms > 0 and probes_per_s > 0 and probes > 0, (protocol, mode, numbers)
            if mode.startswith("ours"):  # one ratio per round, each against blackbox_exporter in its window
                assert len(numbers) == 7 + 2, numbers


@pytest.mark.slow
def test_scale_and_accuracy_tables(tiny_run: tuple[str, dict]) -> None:
    text, data = tiny_run
    numbers = row(text, r"200\s+2s\s")
    assert all(n >= 0 for n in numbers) and numbers[0] == 200  # the figures: from the JSON below
    scale = data["scale"]["rows"][0]
    assert scale["probes_per_second"] > 0 and scale["rss_bytes"] > 0 and scale["metrics_bytes"] > 0
    assert scale["workers"] == 2 and len(scale["process_rss_bytes"]) == 3  # the parent and each worker
    assert scale["cpu_ms_per_probe"] > 0 and all(b > 0 for b in scale["process_rss_bytes"])
    assert scale["metrics_seconds_median"] > 0
    for protocol, delay in (("dns", 50), ("http", 100)):
        numbers = row(text, rf"{protocol}\s+{delay}\s")
        assert numbers[1] > 0  # probes matched to the delay server's records
    for acc in data["accuracy"]["rows"]:
        assert acc["samples"] > 0 and acc["unmatched"] == 0
        # the measured latency includes the delay: a prober cannot be faster than the server's hold
        assert acc["measured_p50"] >= acc["nominal"] and acc["hold_p50"] >= acc["nominal"]


@pytest.mark.slow
def test_report_names_machine_versions_and_targets(tiny_run: tuple[str, dict]) -> None:
    text, data = tiny_run
    assert re.search(r"machine:\s+\d+ CPUs", text) and "blackbox_exporter 0." in text
    packages = data["machine"]["packages"]
    assert re.search(r"packages:\s+aiohttp \d", text) and packages["aiohttp"] == metadata.version("aiohttp")
    assert {"dnspython", "prometheus-client", "pyyaml", "uvloop", "yarl", "multidict"} <= set(packages)
    assert data["machine"]["command"] == "python -m benchmarks --tiny --json " + data["machine"]["command"].split()[-1]
    statuses = {t["target"]: t["status"] for t in data["targets"]}
    assert len(statuses) == 13 and set(statuses.values()) <= {"met", "NOT met", "not measured"}
    assert "30k checks, 2 workers: >= 98% of demand" in statuses
    ratios = data["cpu"]["ratios_vs_blackbox"]
    assert set(ratios) == {"http", "dns"} and all(v > 0 for r in ratios.values() for v in r.values())


@pytest.mark.slow
def test_cpu_ratios_within_the_stored_baseline(tiny_run: tuple[str, dict]) -> None:
    """A dependency bump or a change that doubles the cost per probe shows up as a ratio past its limit."""
    text, data = tiny_run
    compared = {(c["protocol"], c["mode"]): c for c in data["baseline"]}
    assert set(compared) == {(p, m) for p in ("http", "dns") for m in ("scheduled", "probe")}
    assert "CPU ratios against the stored baseline" in text
    regressed = [c for c in compared.values() if c["regressed"]]
    assert not regressed, f"CPU per probe regressed against benchmarks/baseline.json: {regressed}"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["scheduled", "probe"])
def test_side_by_side_check_prints_alone_and_together(mode: str) -> None:
    """``benchmarks.sidebyside`` measures each prober alone and both in one window, and says so per round."""
    require_binary("nginx", "/usr/sbin/nginx", package="nginx")
    require_binary("prometheus-blackbox-exporter", "blackbox_exporter", package="prometheus-blackbox-exporter")
    done = subprocess.run([sys.executable, "-m", "benchmarks.sidebyside", "--mode", mode, "--rounds", "1",
                           "--window", "2", "--warmup", "1"], cwd=REPO, capture_output=True, text=True,
                          timeout=180, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"http ours, {mode}: CPU-ms per 1,000 probes at 200/s" in done.stdout
    ours_alone, bb_alone, ratio_alone, ours_both, bb_both, ratio_both = row(done.stdout, r"median\s")
    assert min(ours_alone, bb_alone, ours_both, bb_both) > 0
    assert ratio_alone == pytest.approx(ours_alone / bb_alone, rel=0.02, abs=0.01)
    assert ratio_both == pytest.approx(ours_both / bb_both, rel=0.02, abs=0.01)


@pytest.mark.parametrize(("args", "message"), [
    (["--rounds", "0"], "argument --rounds: must be at least 1, got 0"),
    (["--window", "0.5"], "argument --window: must be at least 1, got 0.5"),
    (["--warmup", "soon"], "argument --warmup: expected a number, got 'soon'"),
])
def test_side_by_side_check_rejects_nonsense_options(args: list[str], message: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        sidebyside.main(args)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_baseline_flags_a_doubled_cost() -> None:
    stored = {"margin": 2.0, "ratios_vs_blackbox": {"http": {"scheduled": 0.4, "probe": 0.8}}}
    within = baseline.compare({"http": {"scheduled": 0.79, "probe": 0.9}}, stored)
    assert [c.regressed for c in within] == [False, False]
    doubled = baseline.compare({"http": {"scheduled": 0.81, "probe": 0.8}}, stored)
    assert [(c.mode, c.regressed) for c in doubled] == [("scheduled", True), ("probe", False)]


def test_ratio_pairs_each_sample_with_blackbox_in_the_same_window() -> None:
    """A burst of load in one window moves that window's ratio only, not one mode's median against another's."""
    def sample(mode: str, rnd: int, window: int, cpu_s: float) -> cpu.CpuSample:
        return cpu.CpuSample("http", mode, rnd, cpu_s, 1000, 0, 20.0, window=window)

    samples = [sample("scheduled", 0, 0, 0.3), sample("blackbox", 0, 0, 0.6),
               sample("probe", 0, 1, 0.6), sample("blackbox", 0, 1, 1.0),
               sample("scheduled", 1, 2, 0.9), sample("blackbox", 1, 2, 1.8),  # a busy window: both dearer
               sample("probe", 1, 3, 0.56), sample("blackbox", 1, 3, 0.8),
               sample("scheduled", 2, 4, 0.4), sample("blackbox", 2, 4, 0.4)]
    assert cpu.per_round(samples)["http"]["scheduled"] == pytest.approx([0.5, 0.5, 1.0])
    # medians of each mode alone would give 0.4 / 0.8
    assert cpu.ratios(samples)["http"] == pytest.approx({"scheduled": 0.5, "probe": 0.65})
    assert cpu.ratios(samples, pick=min)["http"]["probe"] == pytest.approx(0.6)


def test_stored_baseline_covers_every_protocol_and_mode() -> None:
    stored = baseline.load()
    assert stored["margin"] >= 1.5
    for protocol in ("http", "dns"):
        assert set(stored["ratios_vs_blackbox"][protocol]) == {"scheduled", "probe"}
    assert stored["measured"]["packages"]["aiohttp"] and stored["measured"]["event_loop"]


def exposition(counts: tuple[int, ...]) -> str:
    bounds = ("0.01", "0.1", "1.0", "+Inf")
    return "\n".join(f'lag_bucket{{le="{le}"}} {n}' for le, n in zip(bounds, counts, strict=True))


def test_histogram_quantile_matches_promql() -> None:
    buckets = promtext.Buckets.read(exposition((50, 90, 100, 100)), "lag")
    assert buckets.count == 100
    assert buckets.quantile(0.5) == pytest.approx(0.01)
    assert buckets.quantile(0.7) == pytest.approx(0.01 + 0.09 * 20 / 40)
    assert buckets.quantile(0.99) == pytest.approx(0.1 + 0.9 * 9 / 10)
    assert buckets.max_bound() == 1.0
    earlier = promtext.Buckets.read(exposition((10, 10, 10, 10)), "lag")
    assert (buckets - earlier).cumulative == (40, 80, 90, 90)
    assert (buckets - earlier).quantile(0.5) == pytest.approx(0.01 + 0.09 * 5 / 40)


def test_cpu_seconds_counts_this_process() -> None:
    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))
    assert cpu_seconds(os.getpid()) > before


async def test_probe_cost_measures_successful_probes_only(site) -> None:
    """``python -m benchmarks.probecost`` reports user and system CPU per probe, and refuses to report
    figures for probes that failed (they would flatter the prober)."""
    from benchmarks import probecost

    figures = await probecost.measure(site.url("/"), probes=20, rounds=2, concurrency=4, warmup=5)
    assert len(figures) == 2 and all(user > 0 and system >= 0 for user, system in figures)
    with pytest.raises(RuntimeError, match="failed"):
        await probecost.measure("http://127.0.0.1:1/", probes=5, rounds=1, concurrency=2, warmup=0)
