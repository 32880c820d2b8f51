"""The probers under test: outage-exporter from this checkout, and blackbox_exporter.

Both load the same blackbox.yml-style modules, so /probe requests are identical for the two. Scheduled-mode
configs add a region (whose resolver is the local DNS target, so nothing ever leaves loopback) and one
service per check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.procs import Managed, free_port, http_ok, pinned
from benchmarks.targets import QUERY_NAME, find

REPO = Path(__file__).resolve().parents[1]
PROBE_TIMEOUT = "2s"
MODULES = {
    "http_2xx": {"prober": "http", "timeout": PROBE_TIMEOUT, "http": {"preferred_ip_protocol": "ip4"}},
    "dns_a": {"prober": "dns", "timeout": PROBE_TIMEOUT,
              "dns": {"query_name": QUERY_NAME, "query_type": "A", "preferred_ip_protocol": "ip4"}},
}
MODULE_FOR = {"http": "http_2xx", "dns": "dns_a"}
START_TIMEOUT = 180.0  # 30,000 checks take a while to load


def modules_file(path: Path) -> Path:
    """A blackbox.yml with the benchmark modules (JSON is YAML, and much faster to write)."""
    path.write_text(json.dumps({"modules": MODULES}, indent=1))
    return path


def probe_mode_file(path: Path) -> Path:
    """The modules for our /probe, with the /probe rate limit off when this version has one.

    A per-client rate limit protects a real deployment; the load driver is one client sending hundreds of
    requests a second, so it would measure the limiter's refusals instead of probes. A version without the
    ``probe:`` section gets the plain modules file (the same one blackbox_exporter loads).
    """
    path.write_text(json.dumps({"modules": MODULES, "probe": {"rate_limit": {"rate": 0}}}, indent=1))
    if not config_valid(path):
        modules_file(path)
    return path


def config_valid(path: Path) -> bool:
    done = subprocess.run([sys.executable, "-m", "exporter", "--config.check", "--config.file", str(path)],
                          cwd=REPO, capture_output=True, timeout=60)
    return done.returncode == 0


def http_check(name: str, url: str) -> dict:
    return {"name": name, "module": MODULE_FOR["http"], "target": url}


def dns_check(name: str, server: str, query_name: str = QUERY_NAME) -> dict:
    return {"name": name, "module": MODULE_FOR["dns"], "targets": [server], "query_name": query_name}


def scheduled_file(path: Path, services: Sequence[tuple[str, Sequence[dict]]], *, interval: float,
                   dns_server: str, concurrency: int = 256) -> Path:
    """An outage-exporter config scheduling ``services`` (name, checks) every ``interval`` seconds.

    The probe timeout is the modules' (2 s), or the interval if shorter (a timeout may not exceed it).
    """
    timeout = min(float(PROBE_TIMEOUT.rstrip("s")), interval)
    config = {
        "defaults": {"interval": f"{interval:g}s", "timeout": f"{timeout:g}s", "concurrency": concurrency},
        "modules": MODULES,
        "regions": [{"name": "bench", "resolvers": [dns_server]}],
        "services": [{"name": name, "checks": list(checks)} for name, checks in services],
    }
    path.write_text(json.dumps(config))
    return path


def probe_rate_services(protocol: str, count: int, *, http_url: str, dns_server: str) -> list[tuple[str, list[dict]]]:
    """``count`` single-check services of one protocol, all probing the same fast target."""
    make = (lambda: http_check("http", http_url)) if protocol == "http" else (lambda: dns_check("dns", dns_server))
    return [(f"s{i:05d}", [make()]) for i in range(count)]


class Prober:
    """A running prober with its base URL and pid (the pid whose CPU is measured)."""

    def __init__(self, name: str, proc: Managed, url: str) -> None:
        self.name = name
        self.proc = proc
        self.url = url

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.stop()


def start_ours(config: Path, workdir: Path, cpus: Sequence[int], *, name: str = "outage-exporter",
               args: Sequence[str] = ()) -> Prober:
    """``python -m exporter`` from this checkout (with ``args``), ready when /-/ready answers 200."""
    port = free_port()
    cmd = [sys.executable, "-m", "exporter", "--config.file", str(config),
           "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "warn", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = Managed(name, pinned(cmd, cpus), log=workdir / f"{name}.log", cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_until(lambda: http_ok(url + "/-/ready"), timeout=START_TIMEOUT, what="ready")
    except BaseException:
        proc.stop()
        raise
    return Prober(name, proc, url)


def blackbox_binary() -> str | None:
    return find("prometheus-blackbox-exporter", "blackbox_exporter")


def start_blackbox(config: Path, workdir: Path, cpus: Sequence[int]) -> Prober:
    binary = blackbox_binary()
    if binary is None:
        raise RuntimeError("blackbox_exporter not found (Debian: apt-get install prometheus-blackbox-exporter)")
    port = free_port()
    cmd = [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    proc = Managed("blackbox_exporter", pinned(cmd, cpus), log=workdir / "blackbox.log")
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_until(lambda: http_ok(url + "/-/healthy"), timeout=30, what="healthy")
    except BaseException:
        proc.stop()
        raise
    return Prober("blackbox_exporter", proc, url)
