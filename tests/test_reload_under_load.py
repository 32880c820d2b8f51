"""Reloading a busy exporter: 1,000 checks, 50 reloads alternating good and bad files, scraped throughout.

A real exporter process probes 1,000 local HTTP targets. While a thread scrapes /metrics without pause,
the config file is rewritten 50 times, alternately with a good file (the same 1,000 checks plus an
extra service that comes and goes) and a bad one, and reloaded through POST /-/reload or SIGHUP.
Asserted: no scrape fails, no run counter of the 1,000 unchanged checks ever goes backwards and each
keeps increasing, a bad file leaves the last good config in place and says so in the reload metrics,
the API answer and the log.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter.runtime import Runtime
from tests.helpers.exporter_proc import BackgroundLoop, ExporterProcess
from tests.servers.http import start_raw

SERVICES, TARGETS = 20, 50  # 20 services x 50 targets = 1,000 checks
CHECKS = SERVICES * TARGETS
RELOADS = 50
INTERVAL = 4.0
PAUSE = 0.1  # seconds between scrapes: continuous, but leaving the exporter time to probe
RELOADS_TOTAL = "outage_exporter_config_reloads_total"
RELOAD_OK = "outage_exporter_config_last_reload_successful"
SCHEDULED = "outage_exporter_scheduled_checks"
SELF_METRICS = (RELOADS_TOTAL, RELOAD_OK, SCHEDULED)
RUNS = re.compile(r'^outage_probe_runs_total\{([^}]*)\} ([0-9.e+]+)$', re.MULTILINE)
GAUGE = r"^{name} ([0-9.e+]+)$"

BAD_FILES = [
    ("services: [unclosed\n", "invalid YAML"),
    ("defaults: {interval: fast}\n", "defaults.interval"),
    ("services:\n  - name: x\n    checks: [{name: c, module: nope, target: 'http://127.0.0.1/'}]\n",
     "services[0].checks[0].module"),
    ("modules:\n  m0: &m0 {k0: 1}\n" + "".join(f"  m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}]}}\n"
                                              for i in range(1, 30)), "merge keys"),
]


def good_config(target_base: str, *, extra: bool) -> str:
    lines = [f"defaults: {{interval: {INTERVAL:g}s, timeout: 2s}}",
             "modules:",
             "  http_2xx: {prober: http}",
             "regions:",
             "  - {name: local, resolvers: ['127.0.0.1:1']}",
             "services:"]
    for s in range(SERVICES):
        targets = ", ".join(f'"{target_base}/s{s}/t{t}"' for t in range(TARGETS))
        lines.append(f"  - {{name: svc{s}, checks: [{{name: web, module: http_2xx, targets: [{targets}]}}]}}")
    if extra:
        lines.append(f'  - {{name: extra, checks: [{{name: web, module: http_2xx, target: "{target_base}/x"}}]}}')
    return "\n".join(lines) + "\n"


def gauge(text: str, name: str) -> float:
    m = re.search(GAUGE.format(name=re.escape(name)), text, re.MULTILINE)
    assert m, f"{name} missing"
    return float(m.group(1))


class Scraper(threading.Thread):
    """Scrapes /metrics over and over; records failures, any run counter that went backwards, and the
    reload gauges of the latest scrape (so the reload loop needs no scrapes of its own)."""

    def __init__(self, exporter: ExporterProcess) -> None:
        super().__init__(name="reload-scraper", daemon=True)
        self.exporter = exporter
        self.stop = threading.Event()
        self.scrapes = 0
        self.failures: list[str] = []
        self.backwards: list[str] = []
        self.latest: dict[str, float] = {}  # core check series -> runs
        self.gauges: dict[str, float] = {}  # SELF_METRICS of the latest scrape

    def run(self) -> None:
        while not self.stop.wait(PAUSE):
            self.scrape()

    def scrape(self) -> None:
        try:
            reply = self.exporter.get("/metrics", timeout=10.0)
        except OSError as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")
            return
        if reply.status != 200:
            self.failures.append(f"status {reply.status}")
            return
        for labels, value in RUNS.findall(reply.text):
            if 'service="extra"' in labels:
                continue
            runs = float(value)
            if runs < self.latest.get(labels, 0.0):
                self.backwards.append(f"{labels}: {self.latest[labels]} -> {runs}")
            self.latest[labels] = runs
        self.gauges = {name: gauge(reply.text, name) for name in SELF_METRICS}
        self.scrapes += 1


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_reload_under_load(tmp_path: Path) -> None:
    path = tmp_path / "outage.yml"
    with BackgroundLoop() as bg:
        peer = bg.run(start_raw("http10"))
        base = f"http://{peer.address}"
        path.write_text(good_config(base, extra=False))
        try:
            with ExporterProcess(path) as exporter:
                _exercise(exporter, path, base)
        finally:
            bg.run(peer.stop())


def _exercise(exporter: ExporterProcess, path: Path, base: str) -> None:
    exporter.wait_all_ran(timeout=INTERVAL * 6)
    scraper = Scraper(exporter)
    scraper.start()
    try:
        wait_until(lambda: len(scraper.latest) == CHECKS and scraper.gauges, 10, "every check in a scrape")
        before = dict(scraper.latest)
        for i in range(RELOADS):
            _reload_once(scraper, path, base, i)
        after_reloads = dict(scraper.latest)
        # every unchanged check keeps running after the storm: two more runs each
        wait_until(lambda: all(scraper.latest[k] >= after_reloads[k] + 2 for k in after_reloads),
                   INTERVAL * 6, "two more runs of every check after the reloads")
    finally:
        scraper.stop.set()
        scraper.join(15)
    assert not scraper.failures, scraper.failures[:5]
    assert not scraper.backwards, scraper.backwards[:5]
    assert scraper.scrapes > 20
    assert set(scraper.latest) == set(before)
    assert all(scraper.latest[k] > before[k] for k in before)
    logs = exporter.logs()
    assert logs.count("config reload failed; keeping the last good config") == RELOADS // 2
    assert "Traceback" not in logs


def _reload_once(scraper: Scraper, path: Path, base: str, i: int) -> None:
    exporter, good = scraper.exporter, i % 2 == 0
    expected_checks = CHECKS + (1 if (i // 2) % 2 == 0 else 0)
    if good:
        path.write_text(good_config(base, extra=expected_checks == CHECKS + 1))
    else:
        text, problem = BAD_FILES[(i // 2) % len(BAD_FILES)]
        path.write_text(text)
    reloads, checks_before = scraper.gauges[RELOADS_TOTAL], scraper.gauges[SCHEDULED]
    if i % 4 < 2:
        reply = exporter.post("/-/reload", timeout=30)
        assert reply.status == (200 if good else 500), reply.text
        if not good:
            assert problem in reply.text and "\n" not in reply.text.strip()
    else:
        exporter.signal(signal.SIGHUP)
    wait_until(lambda: scraper.gauges[RELOADS_TOTAL] > reloads, 30, f"reload {i} in a scrape")
    gauges = scraper.gauges
    assert gauges[RELOADS_TOTAL] == reloads + 1
    assert gauges[RELOAD_OK] == (1 if good else 0)
    assert gauges[SCHEDULED] == (expected_checks if good else checks_before)  # bad: the last good config


async def test_a_loader_bug_keeps_the_last_good_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not only ConfigError: any exception while loading leaves the running config alone."""
    path = tmp_path / "outage.yml"
    path.write_text("defaults: {interval: 1s, timeout: 200ms}\nmodules: {tcp: {prober: tcp}}\n"
                    "regions: [{name: local, resolvers: ['127.0.0.1:1']}]\n"
                    "services: [{name: s, checks: [{name: c, module: tcp, target: '127.0.0.1:1'}]}]\n")
    rt = Runtime(str(path), resolv_conf=str(tmp_path / "none"))
    await rt.start()
    try:
        good = rt.config

        def broken() -> None:
            raise RecursionError("maximum recursion depth exceeded")

        monkeypatch.setattr(rt, "load", broken)
        ok, message = await rt.reload()
        assert not ok and message.startswith("internal error while loading the config: RecursionError")
        assert rt.config is good and rt.scheduler is not None and rt.scheduler.running
        assert rt.self_metrics.last_reload_error == message
    finally:
        await rt.stop()
