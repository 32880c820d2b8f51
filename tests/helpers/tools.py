"""The real Prometheus-ecosystem programs for tests, and the shipped configs filled in for a local stack.

Finding a program: a missing binary skips the test locally and fails it in CI (``CI=true``), see
tests/helpers/binaries.py. Debian installs Alertmanager as ``prometheus-alertmanager``, upstream as
``alertmanager``; both are accepted.

Filling in configs (for end-to-end tests that run Prometheus, Alertmanager and the exporter together)::

    Path(tmp, "prometheus.yml").write_text(prometheus_config(exporter="127.0.0.1:19115",
                                                             alertmanager="127.0.0.1:9093"))
    Path(tmp, "alertmanager.yml").write_text(alertmanager_config("http://127.0.0.1:5001"))

    with LocalAlertmanager(alertmanager_config(sink_url), tmp) as am:   # a real Alertmanager
        am.post_alerts([{"labels": {...}, "annotations": {...}}])
        am.alerts()                                                     # with status.inhibitedBy
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import yaml

from exporter.lab.stack import fill_prometheus_config
from tests.helpers.binaries import require_binary
from tests.helpers.exporter_proc import free_port

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "alerts" / "rules"
RULE_TESTS_DIR = REPO / "alerts" / "tests"
ALERTMANAGER_CONFIG = REPO / "alerts" / "alertmanager.yml"
PROMETHEUS_CONFIG = REPO / "deploy" / "local" / "prometheus.yml"
DEFAULT_SINK = "http://127.0.0.1:5001"  # where alerts/alertmanager.yml sends its webhooks
EXPORTER_JOB = "outage-exporter"


def promtool() -> str:
    return require_binary("promtool", package="prometheus")


def prometheus() -> str:
    return require_binary("prometheus", package="prometheus")


def alertmanager() -> str:
    return require_binary("prometheus-alertmanager", "alertmanager", package="prometheus-alertmanager")


def amtool() -> str:
    return require_binary("amtool", package="prometheus-alertmanager")


@dataclass(frozen=True)
class ToolRun:
    """A finished run of a command-line tool: its arguments, exit code and combined output."""

    args: tuple[str, ...]
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def __str__(self) -> str:
        return f"$ {' '.join(self.args)}\n(exit {self.returncode})\n{self.output}"


def run_tool(args: Sequence[str], *, cwd: Path | None = None, timeout: float = 120.0) -> ToolRun:
    """Run a tool to completion; never raises on a non-zero exit (assert on ``.ok`` and print the run)."""
    proc = subprocess.run(list(args), cwd=cwd, capture_output=True, timeout=timeout, check=False)
    output = (proc.stdout + proc.stderr).decode(errors="replace").strip()
    return ToolRun(tuple(str(a) for a in args), proc.returncode, output)


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def rule_test_files() -> list[Path]:
    return sorted(RULE_TESTS_DIR.glob("*.yml"))


# --- amtool ---------------------------------------------------------------------------------------------

def amtool_check_config(path: Path) -> ToolRun:
    return run_tool([amtool(), "check-config", str(path)])


def amtool_route(path: Path, labels: Mapping[str, str], *, expect: str) -> ToolRun:
    """``amtool config routes test --verify.receivers=EXPECT k=v ...``: fails unless routed to ``expect``."""
    pairs = [f"{name}={value}" for name, value in labels.items()]
    return run_tool([amtool(), "config", "routes", "test", f"--config.file={path}",
                     f"--verify.receivers={expect}", *pairs])


# --- configs for a local stack --------------------------------------------------------------------------

def prometheus_config(*, exporter: str, alertmanager: str, scrape_interval: str | None = None,
                      evaluation_interval: str | None = None) -> str:
    """deploy/local/prometheus.yml with these ``host:port`` addresses and absolute ``rule_files``.

    The same filling as the lab stack and deploy/local/run (exporter.lab.stack.fill_prometheus_config).
    """
    config = fill_prometheus_config(PROMETHEUS_CONFIG, exporters=[exporter], alertmanagers=[alertmanager],
                                    scrape_interval=scrape_interval, evaluation_interval=evaluation_interval)
    return yaml.safe_dump(config, sort_keys=False)


def alertmanager_config(sink_url: str) -> str:
    """alerts/alertmanager.yml with every webhook pointed at ``sink_url`` (``http://host:port``)."""
    text = ALERTMANAGER_CONFIG.read_text()
    if DEFAULT_SINK not in text:
        raise ValueError(f"{ALERTMANAGER_CONFIG} no longer sends to {DEFAULT_SINK}; update DEFAULT_SINK")
    return text.replace(DEFAULT_SINK, sink_url.rstrip("/"))


# --- a real Alertmanager --------------------------------------------------------------------------------

READY_TIMEOUT = 15.0


class LocalAlertmanager:
    """An Alertmanager on a free 127.0.0.1 port with clustering off, its data in ``directory``."""

    def __init__(self, config_text: str, directory: Path) -> None:
        self.directory = Path(directory)
        self.config = self.directory / "alertmanager.yml"
        self.config.write_text(config_text)
        self.log = self.directory / "alertmanager.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LocalAlertmanager:
        self.port = free_port()
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [alertmanager(), f"--config.file={self.config}", f"--storage.path={self.directory / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self._wait_ready()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"alertmanager exited with {self.proc.returncode}\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1.0) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"alertmanager not ready after {READY_TIMEOUT}s\n{self.log.read_text()}")

    def _api(self, path: str, body: object | None = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + "/api/v2" + path, data=data,
                                         headers={"Content-Type": "application/json"},
                                         method="GET" if body is None else "POST")
        with urllib.request.urlopen(request, timeout=10.0) as reply:
            text = reply.read().decode()
        return json.loads(text) if text else None

    def post_alerts(self, alerts: Sequence[Mapping[str, object]]) -> None:
        """Send firing alerts as Prometheus would (``labels`` and ``annotations`` per alert)."""
        self._api("/alerts", list(alerts))

    def alerts(self) -> list[dict]:
        """Every alert Alertmanager holds, with ``status.state`` and ``status.inhibitedBy``."""
        return self._api("/alerts")  # type: ignore[return-value]

    def groups(self) -> list[dict]:
        """The aggregation groups: ``labels`` (the group_by values), ``receiver`` and ``alerts``."""
        return self._api("/alerts/groups")  # type: ignore[return-value]
