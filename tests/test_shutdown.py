"""Graceful shutdown of the real exporter process while probes hang on a black hole.

A local "black hole" accepts TCP connections and never answers, so the scheduled HTTP and TCP probes and a
/probe request all sit waiting on it with 25 s timeouts. SIGTERM (or SIGINT) must still end the process
with exit code 0 within the 5 s bound, with every socket closed: the black hole sees each connection end,
the listen port is free again, and no child process is left behind.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from exporter.checks import identity, offset_fraction
from tests.helpers.exporter_proc import ExporterProcess

SHUTDOWN_BOUND = 5.0
INTERVAL = 30.0


class BlackHole:
    """Accepts connections and reads nothing; ``closed`` counts connections the peer has ended."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.conns.append(conn)

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.conns) < count:
            assert time.monotonic() < deadline, f"only {len(self.conns)} of {count} connections arrived"
            time.sleep(0.02)

    def all_closed_by_peer(self, timeout: float = 2.0) -> bool:
        """Whether every accepted connection reads EOF (or a reset): the exporter closed its end."""
        deadline = time.monotonic() + timeout
        for conn in self.conns:
            conn.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                while conn.recv(65536):  # drain the request the probe sent, then expect EOF
                    pass
            except ConnectionResetError:
                pass
            except TimeoutError:
                return False
        return True

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.listener.close()
        for conn in self.conns:
            conn.close()


def early_check_name(prefix: str, target: str) -> str:
    """A check name whose fixed phase puts its first run within the first second of a 30 s interval."""
    for i in range(10_000):
        name = f"{prefix}-{i}"
        if offset_fraction(identity("blackhole", "lab", name, target, "")) < 0.03:
            return name
    raise AssertionError("no early phase found")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def hole() -> BlackHole:
    h = BlackHole()
    yield h
    h.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_hung_probes_and_exits_0_within_bound(tmp_path: Path, hole: BlackHole, signum: int) -> None:
    http_target = f"http://127.0.0.1:{hole.port}/"
    tcp_target = f"127.0.0.1:{hole.port}"
    config = tmp_path / "c.yml"
    config.write_text(f"""
modules:
  http_slow: {{prober: http, timeout: 25s}}
  tcp_expect: {{prober: tcp, timeout: 25s, tcp: {{query_response: [{{expect: "^never"}}]}}}}
regions: [{{name: lab, resolvers: ["127.0.0.1:1"]}}]
services:
  - name: blackhole
    checks:
      - {{name: {early_check_name('http', http_target)}, module: http_slow, target: "{http_target}",
          interval: {INTERVAL:.0f}s, timeout: 25s}}
      - {{name: {early_check_name('tcp', tcp_target)}, module: tcp_expect, target: "{tcp_target}",
          interval: {INTERVAL:.0f}s, timeout: 25s}}
""")
    with ExporterProcess(config) as exporter:
        outcome: list[object] = []

        def adhoc_probe() -> None:
            url = f"{exporter.url}/probe?module=http_slow&target={http_target}"
            req = urllib.request.Request(url, headers={"X-Prometheus-Scrape-Timeout-Seconds": "30"})
            started = time.monotonic()
            try:
                with urllib.request.urlopen(req, timeout=20) as resp:  # noqa: S310 (loopback)
                    outcome.append(resp.status)
            except (urllib.error.URLError, OSError, ConnectionError) as exc:
                outcome.append(type(exc).__name__)
            outcome.append(time.monotonic() - started)

        client = threading.Thread(target=adhoc_probe, daemon=True)
        client.start()
        hole.wait_for(3)  # two scheduled probes and the /probe request are all hung on the black hole
        assert exporter.proc is not None
        pid = exporter.proc.pid
        children = children_of(pid)
        started = time.monotonic()
        exporter.signal(signum)
        code = exporter.proc.wait(SHUTDOWN_BOUND + 5)
        elapsed = time.monotonic() - started
        logs = exporter.logs()
        assert code == 0, logs
        assert elapsed < SHUTDOWN_BOUND, (elapsed, logs)
        assert "shutting down" in logs
        assert "Traceback" not in logs
        client.join(5)
        assert not client.is_alive()
        assert outcome and outcome[-1] < SHUTDOWN_BOUND + 1  # type: ignore[operator]
        assert hole.all_closed_by_peer()
        assert not [c for c in children if alive(c)]
        with socket.create_server(("127.0.0.1", exporter.port)):  # the listen port is free again
            pass
