"""``--workers N``: probing in N worker processes, one results store and one ``/metrics`` in the parent.

Unit tests pin the split of the checks and of the concurrency, the wire format and the CPU count; the
end-to-end tests run the real exporter with real worker processes against loopback DNS and HTTP peers.
"""

from __future__ import annotations

import asyncio
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter import cli
from exporter.checks import Shard, select_shard, shard_of, worker_of
from exporter.exposition import render_scheduled
from exporter.probers import result as r
from exporter.results import ResultStore
from exporter.workers import cgroup_cpu_quota, default_workers, wire
from exporter.workers.pool import WorkerPool, record_batch, share_of_concurrency, split
from tests.conftest import MODES, RECORDS
from tests.helpers.exporter_proc import BackgroundLoop, ExporterProcess
from tests.helpers.factories import make_check, make_result
from tests.helpers.processes import children
from tests.helpers.text import sample
from tests.servers.dns import start_dns
from tests.servers.http import closed_port, start_http

ROOT = Path(__file__).resolve().parents[1]
RESTART_TIMEOUT = 15.0


# --- the split --------------------------------------------------------------------------------------------

def checks(n: int, *, prefix: str = "s") -> list:
    return [make_check("web", service=f"{prefix}{i:04d}") for i in range(n)]


def test_every_check_runs_in_exactly_one_worker_controls_too() -> None:
    everything = checks(400) + [make_check("ctl", service=f"control-{i}", control=True) for i in range(6)]
    shares = split(everything, 3)
    seen = Counter(c.key for share in shares for c in share)
    assert set(seen) == {c.key for c in everything} and set(seen.values()) == {1}
    assert all(len(share) > 100 for share in shares)
    assert [c for share in shares for c in share if c.control], "controls are probed once, by one worker"


def test_a_reload_moves_no_unchanged_check_to_another_worker() -> None:
    before = checks(500)
    after = before[50:] + checks(80, prefix="new")
    where = {c.key: i for i, share in enumerate(split(before, 4)) for c in share}
    again = {c.key: i for i, share in enumerate(split(after, 4)) for c in share}
    assert all(again[key] == where[key] for key in again if key in where)


def test_workers_of_one_shard_get_even_shares() -> None:
    """The worker hash is independent of --shard's: with 2 shards and 2 workers, no worker sits idle."""
    mine = select_shard(checks(2000), Shard(1, 2))
    sizes = [len(share) for share in split(mine, 2)]
    assert min(sizes) > 0.4 * len(mine), sizes
    assert [worker_of(c.key, 2) for c in mine] != [shard_of(c.key, 2) for c in mine]


@pytest.mark.parametrize(("total", "workers", "expected"), [(256, 2, [128, 128]), (10, 3, [4, 3, 3]),
                                                            (1, 3, [1, 1, 1])])
def test_concurrency_is_split_across_workers(total: int, workers: int, expected: list[int]) -> None:
    assert [share_of_concurrency(total, workers, i) for i in range(workers)] == expected


# --- the wire and the parent's store ---------------------------------------------------------------------

def results() -> list[tuple[object, object]]:
    http = make_check("web", service="a")
    dns = make_check("dns", service="b", prober="dns")
    control = make_check("ctl", service="c", control=True)
    return [
        (control, make_result(False, reason=r.CONN_REFUSED, finished_at=1000.0)),
        (http, make_result(details={r.D_HTTP_STATUS: 200}, phases={"connect": 0.001, "processing": 0.002},
                           log=("GET http://127.0.0.1:8080/", "200 OK"), finished_at=1000.5)),
        (dns, make_result(False, reason=r.TIMEOUT, duration=0.4, details={r.D_DNS_RCODE: 2}, finished_at=1001.0)),
        (http, make_result(duration=0.0123, details={r.D_HTTP_STATUS: 204}, finished_at=1001.5)),
    ]


def decoded(message: object) -> object:
    frame = wire.encode(message)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    return pickle.loads(frame[4:])


def test_results_from_a_worker_render_byte_for_byte_as_recorded_in_process() -> None:
    pairs = results()
    loaded = list({c.key: c for c, _ in pairs}.values())
    here, there = ResultStore(), ResultStore()
    here.set_checks(loaded)
    there.set_checks(loaded)
    for check, result in pairs:
        here.record(check, result)
    batch = decoded(wire.Batch(tuple((c.key, res) for c, res in pairs), wire.WorkerStats()))
    record_batch(there, batch)
    assert render_scheduled(there) == render_scheduled(here)
    received = batch.results[1][1]
    assert received == pairs[1][1] and isinstance(received.details, type(pairs[1][1].details))
    with pytest.raises(TypeError):
        received.details["x"] = 1  # still read-only


def test_a_plan_carries_the_checks_as_loaded() -> None:
    plan = wire.Plan(tuple(c for c, _ in results()), 7)
    assert decoded(plan) == plan


# --- how many workers --------------------------------------------------------------------------------------

def test_the_default_honours_cpu_affinity() -> None:
    code = "from exporter.workers import default_workers; print(default_workers())"
    done = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.strip() == "1"
    assert default_workers() == min(len(os.sched_getaffinity(0)), default_workers())


@pytest.mark.parametrize(("cpu_max", "quota"), [("150000 100000\n", 1.5), ("max 100000\n", None),
                                                ("50000 100000\n", 0.5), ("nonsense\n", None)])
def test_the_default_honours_the_cgroup_quota(tmp_path: Path, cpu_max: str, quota: float | None) -> None:
    (tmp_path / "cpu.max").write_text(cpu_max)
    assert cgroup_cpu_quota(tmp_path) == quota
    cpus = len(os.sched_getaffinity(0))
    assert default_workers(tmp_path) == (cpus if quota is None else max(1, min(cpus, -(-quota // 1))))


def _cgroup(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A fake /sys/fs/cgroup with ``files`` and a /proc/self/cgroup saying ``membership``."""
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    root.mkdir(exist_ok=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(membership)
    return root, proc


@pytest.mark.parametrize(("membership", "files", "quota"), [
    # cgroup v2: the tightest limit from the process's cgroup up to the root
    ("0::/kubepods/pod1\n", {"kubepods/cpu.max": "100000 100000\n", "kubepods/pod1/cpu.max": "max 100000\n"}, 1.0),
    ("0::/kubepods/pod1\n", {"kubepods/pod1/cpu.max": "250000 100000\n"}, 2.5),
    # cgroup v1: a container's CPU limit on an older host, at its cgroup or at the mount's root
    ("12:cpu,cpuacct:/kubepods/pod1\n", {"cpu,cpuacct/kubepods/pod1/cpu.cfs_quota_us": "200000\n",
                                          "cpu,cpuacct/kubepods/pod1/cpu.cfs_period_us": "100000\n"}, 2.0),
    ("4:cpu,cpuacct:/docker/abc\n", {"cpu,cpuacct/cpu.cfs_quota_us": "150000\n",
                                      "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 1.5),
    ("4:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ("4:memory:/x\n", {"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
])
def test_the_default_follows_the_containers_cpu_limit(tmp_path: Path, membership: str, files: dict[str, str],
                                                       quota: float | None) -> None:
    root, proc = _cgroup(tmp_path, membership, files)
    assert cgroup_cpu_quota(root, proc) == quota
    cpus = len(os.sched_getaffinity(0))
    assert default_workers(root, proc) == (cpus if quota is None else max(1, min(cpus, math.ceil(quota))))


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", ""])
def test_a_bad_worker_count_is_a_usage_error(value: str) -> None:
    done = subprocess.run([sys.executable, "-m", "exporter", "--config.file", "x.yml", "--workers", value],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"argument --workers: invalid worker count {value!r}: expected a whole number of at least 1" in done.stderr


def test_config_check_starts_no_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    async def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a worker was started")

    monkeypatch.setattr(WorkerPool, "start", refuse)
    config = tmp_path / "c.yml"
    config.write_text(config_text("http://127.0.0.1:1/", "127.0.0.1:1", ["a", "b"]))
    assert cli.main(["--config.check", "--config.file", str(config), "--workers", "4"]) == 0
    assert "4 scheduled checks" in capsys.readouterr().out


# --- end to end --------------------------------------------------------------------------------------------

def config_text(url: str, dns: str, names: Iterable[str], *, controls: Iterable[tuple[str, str]] = ()) -> str:
    """Services ``names`` with an HTTP and a DNS check each, probed every 0.5 s; ``controls`` are
    (service, tcp target) control checks."""
    lines = ["modules:",
             "  http_2xx: {prober: http, timeout: 1s}",
             "  dns_a: {prober: dns, dns: {query_name: www.test., query_type: A}}",
             "  tcp: {prober: tcp}",
             "defaults: {interval: 0.5s, timeout: 0.4s}",
             f"regions: [{{name: lab, resolvers: ['{dns}']}}]",
             "services:"]
    for name in names:
        lines += [f"  - name: {name}", "    checks:",
                  f"      - {{name: web, module: http_2xx, target: '{url}'}}",
                  f"      - {{name: dns, module: dns_a, targets: ['{dns}']}}"]
    for name, target in controls:
        lines += [f"  - name: {name}", "    checks:",
                  f"      - {{name: ctl, module: tcp, target: '{target}', control: true}}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def peers() -> Iterator[tuple[str, str]]:
    """(HTTP URL, DNS server) on loopback, for the whole module."""
    with BackgroundLoop() as bg:
        site = bg.run(start_http())
        dns = bg.run(start_dns(RECORDS, MODES))
        try:
            yield site.url("/"), dns.address
        finally:
            bg.run(site.stop())
            bg.run(dns.stop())


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(predicate, what: str, exporter: ExporterProcess, timeout: float = RESTART_TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout}s\n{exporter.logs()}")
        time.sleep(0.1)


def runs(text: str) -> dict[tuple[str, str], float]:
    """outage_probe_runs_total by (service, check)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "outage_probe_runs_total":
                out[s.labels["service"], s.labels["check"]] = s.value
    return out


def workers_started(exporter: ExporterProcess, count: int) -> list[int]:
    assert exporter.proc is not None
    return wait_for(lambda: len(pids := children(exporter.proc.pid)) == count and pids, f"{count} workers", exporter)


@pytest.mark.slow
def test_results_from_every_worker_reach_metrics(tmp_path: Path, peers: tuple[str, str]) -> None:
    names = [f"svc{i:02d}" for i in range(12)]
    config = tmp_path / "c.yml"
    config.write_text(config_text(*peers, names))
    with ExporterProcess(config, args=("--workers", "2")) as exporter:
        pids = workers_started(exporter, 2)
        text = exporter.wait_all_ran(runs=2, timeout=20)
        assert sample(text, "outage_exporter_workers") == 2
        assert sample(text, "outage_exporter_worker_restarts_total") == 0
        assert sample(text, "outage_exporter_scheduled_checks") == 24
        assert len(runs(text)) == 24
        assert all(sample(text, "probe_success", service=n, check=c) == 1 for n in names for c in ("web", "dns"))
        assert sample(text, "outage_exporter_scheduler_lag_seconds_count") >= 48
        assert all("exporter.workers.child" in Path(f"/proc/{p}/cmdline").read_text() for p in pids)
        assert "msg=started config=" in exporter.logs() and " workers=2" in exporter.logs()


def families(text: str) -> dict[str, tuple[str, str]]:
    return {f.name: (f.type, f.documentation) for f in text_string_to_metric_families(text)}


TIMING = ("seconds", "_total", "_bucket", "_count", "_sum", "timestamp", "process_", "python_gc")


def stable_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float | None]:
    """Every sample by name and labels; values kept only where they do not depend on timing."""
    return {(s.name, tuple(sorted(s.labels.items()))): None if any(t in s.name for t in TIMING) else s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


@pytest.mark.slow
def test_metrics_of_two_workers_match_one_process(tmp_path: Path, peers: tuple[str, str]) -> None:
    config = tmp_path / "c.yml"
    config.write_text(config_text(*peers, [f"svc{i:02d}" for i in range(8)]))
    texts = {}
    for workers in ("1", "2"):
        with ExporterProcess(config, args=("--workers", workers)) as exporter:
            texts[workers] = exporter.wait_all_ran(runs=2, timeout=20)
    one, two = texts["1"], texts["2"]
    assert families(one) == families(two)
    for text in (one, two):  # one document: every family's HELP and TYPE exactly once
        assert all(n == 1 for n in Counter(ln for ln in text.splitlines() if ln.startswith("# TYPE")).values())
    a, b = stable_samples(one), stable_samples(two)
    assert a.keys() == b.keys()
    differ = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert differ == {("outage_exporter_workers", ()): (1.0, 2.0)}


@pytest.mark.slow
def test_a_killed_worker_is_restarted_counted_and_logged(tmp_path: Path, peers: tuple[str, str]) -> None:
    config = tmp_path / "c.yml"
    config.write_text(config_text(*peers, [f"svc{i:02d}" for i in range(10)]))
    with ExporterProcess(config, args=("--workers", "2")) as exporter:
        victim, survivor = workers_started(exporter, 2)
        before = runs(exporter.wait_all_ran(runs=1, timeout=20))
        os.kill(victim, signal.SIGKILL)
        assert exporter.proc is not None
        pids = wait_for(lambda: victim not in (p := children(exporter.proc.pid)) and len(p) == 2 and p,
                        "a new worker", exporter)
        assert survivor in pids
        wait_for(lambda: sample(exporter.metrics(), "outage_exporter_worker_restarts_total") == 1,
                 "the restart counted", exporter)

        def all_ran_again() -> bool:
            now = runs(exporter.metrics())
            return now.keys() == before.keys() and all(now[k] >= before[k] + 2 for k in before)

        wait_for(all_ran_again, "every check (the dead worker's too) running again", exporter)
        assert "worker exited; starting it again" in exporter.logs()
        text = exporter.metrics()
        assert sample(text, "outage_exporter_workers") == 2
        assert sample(text, "outage_exporter_scheduled_checks") == 20


@pytest.mark.slow
def test_sighup_and_post_reload_reach_every_worker(tmp_path: Path, peers: tuple[str, str]) -> None:
    config = tmp_path / "c.yml"
    old = [f"svc{i:02d}" for i in range(10)]
    config.write_text(config_text(*peers, old))
    with ExporterProcess(config, args=("--workers", "2")) as exporter:
        workers_started(exporter, 2)
        before = runs(exporter.wait_all_ran(runs=2, timeout=20))
        kept, added = old[4:], [f"new{i:02d}" for i in range(8)]
        assert {worker_of(f"{n}\x1flab\x1fweb\x1f{peers[0]}\x1f", 2) for n in added} == {1, 2}
        config.write_text(config_text(*peers, kept + added))
        exporter.signal(signal.SIGHUP)

        def reloaded() -> dict | None:
            now = runs(exporter.metrics())
            want = {(n, c) for n in kept + added for c in ("web", "dns")}
            return now if now.keys() == want and all(now[k] >= 1 for k in want) else None

        now = wait_for(reloaded, "the new checks running, the removed ones gone", exporter)
        assert all(now[n, c] >= before[n, c] for n in kept for c in ("web", "dns")), "kept checks kept counting"
        config.write_text(config_text(*peers, kept))
        assert exporter.post("/-/reload").status == 200
        wait_for(lambda: {s for s, _ in runs(exporter.metrics())} == set(kept), "POST reload applied", exporter)
        assert sample(exporter.metrics(), "outage_exporter_scheduled_checks") == 2 * len(kept)


@pytest.mark.slow
def test_sigterm_stops_parent_and_workers_within_five_seconds(tmp_path: Path, peers: tuple[str, str]) -> None:
    """Even with probes in flight against a peer that never answers."""
    async def never_answer() -> tuple[asyncio.base_events.Server, int]:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never answers
        return server, server.sockets[0].getsockname()[1]

    with BackgroundLoop() as bg:
        server, port = bg.run(never_answer())
        config = tmp_path / "c.yml"
        text = config_text(f"http://127.0.0.1:{port}/", peers[1], [f"svc{i:02d}" for i in range(20)])
        config.write_text(text.replace("timeout: 0.4s", "timeout: 0.5s"))
        exporter = ExporterProcess(config, args=("--workers", "2"))
        with exporter:
            pids = workers_started(exporter, 2)
            wait_for(lambda: sample(exporter.metrics(), "outage_exporter_probes_in_flight"), "probes in flight",
                     exporter)
            started = time.monotonic()
            assert exporter.stop(timeout=5.0) == 0
            took = time.monotonic() - started
            assert took < 5.0
            assert not [p for p in pids if alive(p)], "a worker outlived the exporter"
        bg.run(_close(server))


async def _close(server: asyncio.base_events.Server) -> None:
    server.close()
    await server.wait_closed()


@pytest.mark.slow
def test_workers_exit_when_the_parent_is_killed(tmp_path: Path, peers: tuple[str, str]) -> None:
    config = tmp_path / "c.yml"
    config.write_text(config_text(*peers, ["a", "b", "c"]))
    with ExporterProcess(config, args=("--workers", "2")) as exporter:
        pids = workers_started(exporter, 2)
        exporter.signal(signal.SIGKILL)
        wait_for(lambda: not [p for p in pids if alive(p)], "workers gone", exporter, timeout=5.0)


def _names_on_both_workers(target: str, *, at_least: int) -> list[str]:
    """At least ``at_least`` service names whose ``web`` check on ``target`` falls on each of two workers."""
    names: list[str] = []
    on: set[int] = set()
    for i in range(1000):
        names.append(f"svc{i:02d}")
        on.add(worker_of(f"{names[-1]}\x1flab\x1fweb\x1f{target}\x1f", 2))
        if len(names) >= at_least and on == {1, 2}:
            return names
    raise AssertionError("no names spread over both workers")


@pytest.mark.slow
def test_the_vantage_verdict_is_judged_once_from_controls_in_any_worker(tmp_path: Path,
                                                                        peers: tuple[str, str]) -> None:
    """Failed controls on one worker make the other worker's failures inconclusive, once per region."""
    closed = closed_port()
    try:
        dead = f"127.0.0.1:{closed.getsockname()[1]}"
        # the port is random, and with it the workers the checks fall on: take names until both have some
        names = _names_on_both_workers(f"http://{dead}/", at_least=6)
        controls = [(f"control-{i}", dead) for i in range(2)]
        config = tmp_path / "c.yml"
        config.write_text(config_text(f"http://{dead}/", peers[1], names, controls=controls))
        with ExporterProcess(config, args=("--workers", "2")) as exporter:
            before = exporter.wait_all_ran(runs=2, timeout=20)  # first runs may beat the controls' verdict
            assert [ln for ln in before.splitlines() if ln.startswith("outage_vantage_healthy")] == \
                ['outage_vantage_healthy{region="lab"} 0']
            after = exporter.wait_all_ran(runs=5, timeout=20)
            for name in names:
                labels = {"service": name, "check": "web"}
                assert sample(after, "outage_probe_inconclusive", **labels) == 1
                assert sample(after, "outage_probe_inconclusive_total", **labels) > \
                    sample(before, "outage_probe_inconclusive_total", **labels)
                failed = [sample(t, "outage_probe_failures_total", **labels, reason=r.CONN_REFUSED) or 0
                          for t in (before, after)]
                assert failed[0] == failed[1], "failures taken while the vantage is down are not counted"
    finally:
        closed.close()
