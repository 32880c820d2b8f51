"""deploy/local/run as a user runs it: the lab demo as the exporter, real Prometheus and Alertmanager on free
loopback ports. Prometheus must scrape the exporter and load every rule group of alerts/rules."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.helpers.exporter_proc import free_port
from tests.helpers.tools import PROMETHEUS_CONFIG, REPO, alertmanager, prometheus, rule_files

SCRIPT = REPO / "deploy" / "local" / "run"


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 (loopback only)
        return json.loads(reply.read())


def _wait_for(what, timeout: float, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"deploy/local/run exited with {proc.returncode}\n{log.read_text()}"
        try:
            last = what()
            if last:
                return last
        except OSError as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out; last answer: {last}\n{log.read_text()}")


def _closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _rule_groups() -> set[str]:
    return {g["name"] for path in rule_files() for g in yaml.safe_load(path.read_text())["groups"]}


@pytest.mark.e2e
@pytest.mark.slow
def test_local_stack_scrapes_the_demo_and_loads_the_rules(tmp_path):
    prometheus(), alertmanager()
    ports = {name: free_port() for name in ("exporter", "prometheus", "alertmanager", "sink")}
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--demo", "--workdir", str(tmp_path / "work"), "--for", "120",
             *(arg for name, port in ports.items() for arg in (f"--{name}-port", str(port)))],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    prom = f"http://127.0.0.1:{ports['prometheus']}"
    try:
        def exporter_up():
            targets = _get(prom + "/api/v1/targets")["data"]["activeTargets"]
            return [t for t in targets if t["health"] == "up"] and targets

        targets = _wait_for(exporter_up, 60, proc, log)
        assert [(t["labels"]["job"], t["labels"]["instance"]) for t in targets] == [
            ("outage-exporter", f"127.0.0.1:{ports['exporter']}")]

        groups = _get(prom + "/api/v1/rules")["data"]["groups"]
        assert {g["name"] for g in groups} == _rule_groups()
        assert all(r["health"] != "err" for g in groups for r in g["rules"])

        def lab_series():
            result = _get(prom + "/api/v1/query?query=count(outage_probe_check_info)")["data"]["result"]
            return result and float(result[0]["value"][1])

        assert _wait_for(lab_series, 30, proc, log) > 20, "the demo's checks reach Prometheus"
        alertmanagers = _get(prom + "/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
        assert [a["url"] for a in alertmanagers] == [f"http://127.0.0.1:{ports['alertmanager']}/api/v2/alerts"]

        filled = yaml.safe_load((tmp_path / "work" / "prometheus.yml").read_text())
        shipped = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
        assert filled["global"]["scrape_timeout"] == shipped["global"]["scrape_timeout"]
        assert [j["job_name"] for j in filled["scrape_configs"]] == [j["job_name"] for j in shipped["scrape_configs"]]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, log.read_text()
    assert all(_closed(port) for port in ports.values()), "everything it started has stopped"
