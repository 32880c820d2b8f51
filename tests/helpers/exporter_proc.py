"""Run the real exporter as a subprocess on a free loopback port, for end-to-end tests.

    with ExporterProcess(config_path) as exporter:          # blocking start: waits for /-/ready
        text = exporter.get("/metrics").text

    async with ExporterProcess(config_path) as exporter:    # same, without blocking the event loop
        text = (await exporter.aget("/metrics")).text

The async form matters when the test serves the exporter's probe targets (local DNS and HTTP peers) on its
own event loop: a blocking wait there would stall the very peers the exporter is probing.

Sync tests whose peers are asyncio servers run them on a :class:`BackgroundLoop` (an event loop in a
thread), so module-scoped peers can serve many parametrized tests.

The process always gets ``--config.file`` (the embedded default config probes the internet). Its stderr
goes to a file, readable with :meth:`ExporterProcess.logs`, and is included in every failure message.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.processes import terminate

T = TypeVar("T")

READY_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
_POLL = 0.05
_BIND_ATTEMPTS = 3


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host`` (bound with port 0, then released)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def all_checks_ran(metrics_text: str, runs: int = 1) -> bool:
    """Whether an exposition shows checks scheduled and each with at least ``runs`` finished runs."""
    scheduled, counts = 0.0, []
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "outage_exporter_scheduled_checks":
                scheduled = sample.value
            elif sample.name == "outage_probe_runs_total":
                counts.append(sample.value)
    return scheduled > 0 and len(counts) == scheduled and min(counts) >= runs


@dataclass(frozen=True)
class Reply:
    status: int
    text: str
    headers: dict[str, str]


class ExporterError(AssertionError):
    """The exporter process did not start, answer or stop as expected (the message carries its log)."""


class ExporterProcess:
    """``python -m exporter --config.file CONFIG --web.listen-address HOST:PORT [extra args]``."""

    def __init__(self, config: str | os.PathLike[str], *, host: str = "127.0.0.1", args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, ready_timeout: float = READY_TIMEOUT) -> None:
        self.config = Path(config).resolve()
        self.host = host
        self.port = 0
        self.args = args
        self.env = env
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="outage-exporter-", suffix=".log", delete=False)  # noqa: SIM115

    # --- addresses --------------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    # --- lifecycle --------------------------------------------------------------------------------------
    def launch(self) -> None:
        """Start the process without waiting for it to be ready."""
        if self.proc is not None:
            raise RuntimeError("exporter already started")
        self.port = free_port(self.host)
        cmd = [sys.executable, "-m", "exporter", "--config.file", str(self.config),
               "--web.listen-address", self.address, *self.args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, env=env,
                                     cwd=Path(__file__).resolve().parents[2])

    def start(self) -> ExporterProcess:
        """Start the process and block until ``/-/ready`` answers 200."""
        for attempt in range(_BIND_ATTEMPTS):
            self.launch()
            try:
                self.wait_ready()
                return self
            except ExporterError:
                self.stop()
                if not self._lost_port_race() or attempt == _BIND_ATTEMPTS - 1:
                    raise
                self.proc = None
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    async def astart(self) -> ExporterProcess:
        """:meth:`start` without blocking the event loop."""
        return await asyncio.to_thread(self.start)

    def _lost_port_race(self) -> bool:
        """The free port was taken between :func:`free_port` and the exporter binding it."""
        return self.returncode == 1 and "address already in use" in self.logs()

    def wait_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        while True:
            if self.returncode is not None:
                raise ExporterError(f"exporter exited with {self.returncode} before it was ready\n{self.logs()}")
            try:
                if self.get("/-/ready", timeout=1.0).status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ExporterError(f"exporter not ready after {self.ready_timeout}s\n{self.logs()}")
            time.sleep(_POLL)

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def signal(self, signum: int) -> None:
        assert self.proc is not None, "exporter not started"
        self.proc.send_signal(signum)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait up to ``timeout`` seconds (then SIGKILL); returns the exit code."""
        if self.proc is None:
            return 0
        if not terminate(self.proc, timeout):
            raise ExporterError(f"exporter did not stop within {timeout}s of SIGTERM\n{self.logs()}")
        return self.proc.returncode

    async def astop(self, timeout: float = STOP_TIMEOUT) -> int:
        return await asyncio.to_thread(self.stop, timeout)

    def close(self) -> None:
        """Stop the process (if running) and delete its log file."""
        try:
            self.stop()
        finally:
            self._log.close()
            Path(self._log.name).unlink(missing_ok=True)

    def logs(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    # --- HTTP -------------------------------------------------------------------------------------------
    def get(self, path: str, *, headers: dict[str, str] | None = None, timeout: float = 10.0) -> Reply:
        return self.request("GET", path, headers=headers, timeout=timeout)

    def post(self, path: str, *, timeout: float = 10.0) -> Reply:
        return self.request("POST", path, timeout=timeout)

    def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                timeout: float = 10.0) -> Reply:
        """One request; HTTP error statuses are returned, not raised."""
        req = urllib.request.Request(self.url + path, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (loopback only)
                return Reply(resp.status, resp.read().decode(), dict(resp.headers))
        except urllib.error.HTTPError as err:
            return Reply(err.code, err.read().decode(errors="replace"), dict(err.headers))

    async def aget(self, path: str, *, headers: dict[str, str] | None = None, timeout: float = 10.0) -> Reply:
        return await asyncio.to_thread(self.get, path, headers=headers, timeout=timeout)

    async def apost(self, path: str, *, timeout: float = 10.0) -> Reply:
        return await asyncio.to_thread(self.post, path, timeout=timeout)

    def metrics(self) -> str:
        reply = self.get("/metrics")
        if reply.status != 200:
            raise ExporterError(f"/metrics answered {reply.status}: {reply.text}\n{self.logs()}")
        return reply.text

    async def ametrics(self) -> str:
        return await asyncio.to_thread(self.metrics)

    def wait_all_ran(self, *, runs: int = 1, timeout: float = 10.0) -> str:
        """Poll /metrics until every scheduled check has finished ``runs`` runs; returns that exposition."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.metrics()
            if all_checks_ran(text, runs):
                return text
            if time.monotonic() > deadline:
                raise ExporterError(f"not every check ran {runs} time(s) within {timeout}s\n{text}\n{self.logs()}")
            time.sleep(_POLL * 2)

    async def await_all_ran(self, *, runs: int = 1, timeout: float = 10.0) -> str:
        return await asyncio.to_thread(self.wait_all_ran, runs=runs, timeout=timeout)

    # --- context managers -------------------------------------------------------------------------------
    def __enter__(self) -> ExporterProcess:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> ExporterProcess:
        try:
            return await self.astart()
        except BaseException:
            await asyncio.to_thread(self.close)
            raise

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.close)


class BackgroundLoop:
    """An asyncio event loop running in a daemon thread, for peers that outlive one test.

        with BackgroundLoop() as bg:
            site = bg.run(start_http())
            ...
            bg.run(site.stop())
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-peers", daemon=True)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the background loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> BackgroundLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
