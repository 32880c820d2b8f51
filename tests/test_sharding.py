"""Sharding within a region (``--shard i/N``) and the region-from-agent switch (``--region.omit-label``).

Unit tests pin the partition (disjoint, complete, stable, balanced, little movement on a resize); the slow
test runs three real exporter processes over one 3,000-check config and reads their /metrics.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.checks import (
    Shard,
    expand,
    identity,
    parse_shard,
    select_shard,
    shard_of,
    without_region_label,
)
from exporter.config import ConfigError, load_config
from exporter.runtime import Runtime
from tests.helpers.exporter_proc import BackgroundLoop, ExporterProcess
from tests.helpers.factories import make_check

ROOT = Path(__file__).resolve().parents[1]
KEYS = [identity(f"svc{i % 97}", "eu-west", f"check{i}", f"127.0.0.1:{1000 + i % 50}", "") for i in range(30_000)]


# --- parsing --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "shard"), [("1/1", Shard(1, 1)), ("2/3", Shard(2, 3)), (" 3/3 ", Shard(3, 3))])
def test_parse_shard(text, shard):
    assert parse_shard(text) == shard
    assert str(shard) == text.strip()


@pytest.mark.parametrize(("text", "message"), [
    ("0/3", "invalid shard 0/3: shards are numbered from 1, so i must be between 1 and 3"),
    ("4/3", "invalid shard 4/3: shards are numbered from 1, so i must be between 1 and 3"),
    ("1/0", "invalid shard 1/0: the number of shards must be at least 1"),
    ("3", "invalid shard '3': expected i/N, e.g. 1/3 (shards are numbered from 1)"),
    ("a/b", "invalid shard 'a/b': expected i/N, e.g. 1/3 (shards are numbered from 1)"),
    ("-1/3", "invalid shard '-1/3': expected i/N, e.g. 1/3 (shards are numbered from 1)"),
])
def test_parse_shard_rejects_with_a_clear_message(text, message):
    with pytest.raises(ValueError) as err:
        parse_shard(text)
    assert str(err.value) == message


def test_cli_rejects_a_bad_shard_before_starting():
    proc = subprocess.run([sys.executable, "-m", "exporter", "--config.file", "x.yml", "--shard", "0/3"],
                          capture_output=True, text=True, cwd=ROOT, timeout=30, check=False)
    assert proc.returncode == 2
    assert "argument --shard: invalid shard 0/3: shards are numbered from 1" in proc.stderr


# --- the partition --------------------------------------------------------------------------------------

@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
def test_partition_is_disjoint_and_complete(count):
    owners = {key: [i for i in range(1, count + 1) if shard_of(key, count) == i] for key in KEYS[:5000]}
    assert all(len(found) == 1 for found in owners.values())


def test_partition_is_stable_across_processes_and_hash_seeds():
    """No Python hash(): the same shards in a fresh interpreter with another hash seed, and pinned values."""
    here = [shard_of(k, 7) for k in KEYS[:200]]
    code = ("from tests.test_sharding import KEYS; from exporter.checks import shard_of;"
            "print(','.join(str(shard_of(k, 7)) for k in KEYS[:200]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={"PYTHONHASHSEED": "12345", "PATH": ""}, check=True)
    assert proc.stdout.strip() == ",".join(map(str, here))
    assert [shard_of(identity("facebook", "eu-west", "https", "https://facebook.com/", ""), n)
            for n in (1, 2, 3, 10)] == [1, 2, 2, 5]


@pytest.mark.parametrize("count", [2, 3, 5, 10])
def test_partition_is_balanced(count):
    sizes = Counter(shard_of(k, count) for k in KEYS)
    mean = len(KEYS) / count
    assert set(sizes) == set(range(1, count + 1))
    assert max(abs(n - mean) / mean for n in sizes.values()) < 0.05, sizes


@pytest.mark.parametrize("count", [2, 3, 6])
def test_adding_a_shard_moves_only_its_share_and_only_to_it(count):
    moved = [(shard_of(k, count), shard_of(k, count + 1)) for k in KEYS]
    changed = [(a, b) for a, b in moved if a != b]
    assert all(b == count + 1 for _, b in changed), "a resize only moves checks onto the new shard"
    assert abs(len(changed) / len(KEYS) - 1 / (count + 1)) < 0.02


def test_controls_run_on_every_shard_and_the_rest_once():
    checks = [make_check(f"c{i}", service=f"s{i % 7}") for i in range(300)]
    controls = [make_check("ctl", service=f"control-{i}", control=True) for i in range(3)]
    everything = checks + controls
    shards = [select_shard(everything, Shard(i, 3)) for i in (1, 2, 3)]
    for picked in shards:
        assert [c for c in picked if c.control] == controls
    others = Counter(c.key for picked in shards for c in picked if not c.control)
    assert set(others) == {c.key for c in checks} and set(others.values()) == {1}
    assert select_shard(everything, None) == everything


# --- the region label -----------------------------------------------------------------------------------

TWO_REGIONS = """
modules: {tcp: {prober: tcp}}
regions:
  - {name: eu-west, resolvers: ["127.0.0.1:1"]}
  - {name: us-east, resolvers: ["127.0.0.1:1"]}
services:
  - name: svc
    checks: [{name: port, module: tcp, target: "127.0.0.1:1"}]
"""


def test_without_region_label_empties_the_label_and_keeps_the_identity(tmp_path):
    path = tmp_path / "two.yml"
    path.write_text(TWO_REGIONS)
    checks = expand(load_config(str(path)), only_region="us-east")
    stripped = without_region_label(checks)
    assert [c.labels()[2] for c in stripped] == [""]
    assert [c.key for c in stripped] == [c.key for c in checks]
    assert stripped[0].resolvers == checks[0].resolvers


def test_omit_region_label_needs_one_region(tmp_path):
    path = tmp_path / "two.yml"
    path.write_text(TWO_REGIONS)
    with pytest.raises(ConfigError) as err:
        Runtime(str(path), omit_region_label=True).load()
    assert "--region.omit-label needs one region per exporter: pass --region or use a one-region config " \
           "(configured: eu-west, us-east)" in str(err.value)
    rt = Runtime(str(path), region="us-east", omit_region_label=True)
    assert [c.region for c in rt.expand_checks(rt.load())] == [""]


# --- three real replicas --------------------------------------------------------------------------------

INTERVAL = 4.0
SERVICES, CHECKS_PER_SERVICE = 300, 10  # 3,000 checks


def _config(path: Path, port: int) -> Path:
    lines = [f"defaults: {{interval: {INTERVAL:g}s, timeout: 2s, concurrency: 512}}",
             "modules: {tcp: {prober: tcp, timeout: 2s}}",
             "regions: [{name: lab, resolvers: ['127.0.0.1:1']}]",
             "services:"]
    for s in range(SERVICES):
        checks = ", ".join(f"{{name: c{c}, module: tcp, target: '127.0.0.1:{port}'}}"
                           for c in range(CHECKS_PER_SERVICE))
        lines.append(f"  - {{name: svc{s:03d}, provider: p{s % 10}, checks: [{checks}]}}")
    lines.append(f"  - {{name: control-a, checks: [{{name: port, module: tcp, target: '127.0.0.1:{port}', "
                 "control: true}]}")
    path.write_text("\n".join(lines) + "\n")
    return path


async def _accept_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


@pytest.fixture(scope="module")
def listener() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts and closes every connection (a cheap healthy target)."""
    with BackgroundLoop() as bg:
        server = bg.run(asyncio.start_server(_accept_and_close, "127.0.0.1", 0, backlog=4096))
        yield server.sockets[0].getsockname()[1]
        server.close()
        bg.run(server.wait_closed())


def _timed_metrics(replica: ExporterProcess) -> tuple[float, str]:
    """(monotonic time in the middle of the request, /metrics text)."""
    before = time.monotonic()
    text = replica.metrics()
    return (before + time.monotonic()) / 2, text


def _runs(text: str) -> tuple[dict[tuple[str, ...], float], dict[str, float]]:
    """(runs per check identity, self metrics by name) from one exposition."""
    runs: dict[tuple[str, ...], float] = {}
    own: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "outage_probe_runs_total":
                labels = sample.labels
                runs[(labels["service"], labels["region"], labels["check"], labels["target"],
                      labels["resolver"])] = sample.value
            elif sample.name == "outage_exporter_shard_info":
                own["shard"] = float(sample.labels["shard"])
                own["shards"] = float(sample.labels["shards"])
            elif sample.name in ("outage_exporter_scheduled_checks", "outage_exporter_scheduler_skipped_runs_total"):
                own[sample.name] = sample.value
    return runs, own


@pytest.mark.slow
def test_three_replicas_probe_every_check_exactly_once_per_interval(tmp_path, listener):
    config = _config(tmp_path / "3000.yml", listener)
    replicas = [ExporterProcess(config, args=("--shard", f"{i}/3"), ready_timeout=30) for i in (1, 2, 3)]
    try:
        for replica in replicas:
            replica.launch()
        for replica in replicas:
            replica.wait_ready(30)
        for replica in replicas:
            replica.wait_all_ran(runs=1, timeout=3 * INTERVAL)
        first_reads = [_timed_metrics(r) for r in replicas]
        time.sleep(3 * INTERVAL)
        second_reads = [_timed_metrics(r) for r in replicas]
    finally:
        for replica in replicas:
            replica.close()

    first = [_runs(text) for _, text in first_reads]
    second = [_runs(text) for _, text in second_reads]
    control = ("control-a", "lab", "port", f"127.0.0.1:{listener}", "")
    owners: dict[tuple[str, ...], list[int]] = {}
    for i, (runs, own) in enumerate(second, start=1):
        assert own["shard"] == i and own["shards"] == 3
        assert own["outage_exporter_scheduler_skipped_runs_total"] == 0
        assert control in runs, f"shard {i} runs the control check too"
        for key in runs:
            if key != control:
                owners.setdefault(key, []).append(i)
    assert len(owners) == SERVICES * CHECKS_PER_SERVICE, "every check is run by some replica"
    assert all(len(found) == 1 for found in owners.values()), "no check is run by two replicas"
    for key, (shard,) in owners.items():
        assert shard_of(identity(*key), 3) == shard
    sizes = Counter(shard for (shard,) in owners.values())
    assert min(sizes.values()) > 0.9 * len(owners) / 3, sizes

    for shard in (1, 2, 3):  # one run per interval: the runs between two reads match the time between them
        expected = (second_reads[shard - 1][0] - first_reads[shard - 1][0]) / INTERVAL
        deltas = [second[shard - 1][0][key] - first[shard - 1][0].get(key, 0)
                  for key, (s,) in owners.items() if s == shard]
        assert int(expected) - 1 <= min(deltas) and max(deltas) <= int(expected) + 2, (min(deltas), max(deltas))
        assert abs(sum(deltas) / len(deltas) - expected) < 0.3, (sum(deltas) / len(deltas), expected)


def test_shard_info_and_config_check_report_the_share(tmp_path):
    config = tmp_path / "cfg.yml"
    config.write_text(textwrap.dedent("""
        modules: {tcp: {prober: tcp}}
        regions: [{name: lab, resolvers: ['127.0.0.1:1']}]
        services:
          - name: svc
            checks: [{name: port, module: tcp, targets: [%s]}]
    """) % ", ".join(f"'127.0.0.1:{p}'" for p in range(1, 101)))
    counts = []
    for i in (1, 2):
        proc = subprocess.run([sys.executable, "-m", "exporter", "--config.file", str(config), "--shard", f"{i}/2",
                               "--config.check"], capture_output=True, text=True, cwd=ROOT, timeout=30, check=True)
        counts.append(int(proc.stdout.split("service, ")[1].split(" scheduled")[0]))
    assert sum(counts) == 100 and min(counts) > 30
