"""Run real Prometheus and Alertmanager next to an exporter, with a webhook sink that records notifications.

Used by ``outage-exporter demo --with-stack``, by ``deploy/local/run`` and by the end-to-end alert tests: the
binaries are the installed ones (Debian: ``prometheus``, ``prometheus-alertmanager``), the rules and routes
are the project's own files from ``alerts/``, the Prometheus configuration is ``deploy/local/prometheus.yml``
with the addresses filled in (:func:`fill_prometheus_config`, the one source of that configuration), and
every process listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from aiohttp import web

log = logging.getLogger("exporter.stack")

SINK_PLACEHOLDER = "http://127.0.0.1:5001"  # webhook base URL in alerts/alertmanager.yml, replaced at start
EXPORTER_JOB = "outage-exporter"  # the job name the rules expect (docs/alerts.md)
PROMETHEUS_TEMPLATE = Path("deploy") / "local" / "prometheus.yml"  # relative to the project's root
BINARIES = {"prometheus": ("prometheus",), "alertmanager": ("prometheus-alertmanager", "alertmanager")}


def find_binary(kind: str) -> str | None:
    for name in BINARIES[kind]:
        path = shutil.which(name)
        if path:
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_alerts_dir(start: Path | None = None) -> Path | None:
    """The project's alerts/ directory: next to the package in a source checkout, or under the cwd."""
    candidates = [Path(__file__).resolve().parents[2] / "alerts", (start or Path.cwd()) / "alerts"]
    for c in candidates:
        if (c / "alertmanager.yml").is_file() and (c / "rules").is_dir():
            return c
    return None


def find_prometheus_template(start: Path | None = None) -> Path | None:
    """deploy/local/prometheus.yml: next to the package in a source checkout, or under the cwd."""
    for root in (Path(__file__).resolve().parents[2], start or Path.cwd()):
        if (root / PROMETHEUS_TEMPLATE).is_file():
            return root / PROMETHEUS_TEMPLATE
    return None


def fill_prometheus_config(template: Path, *, exporters: Sequence[str], alertmanagers: Sequence[str],
                           scrape_interval: str | None = None, evaluation_interval: str | None = None) -> dict:
    """The shipped Prometheus config with these ``host:port`` addresses and absolute ``rule_files``.

    Absolute rule paths let the result live anywhere (a temporary directory), unlike the shipped file whose
    paths are relative to its own directory. A shorter ``scrape_interval`` also caps ``scrape_timeout``.
    """
    from exporter.config.durations import parse_duration

    config = yaml.safe_load(template.read_text())
    base = template.resolve().parent
    config["rule_files"] = [str((base / pattern).resolve()) for pattern in config["rule_files"]]
    glob = config["global"]
    if scrape_interval is not None:
        glob["scrape_interval"] = scrape_interval
        if parse_duration(str(glob.get("scrape_timeout", "10s"))) > parse_duration(scrape_interval):
            glob["scrape_timeout"] = scrape_interval
    if evaluation_interval is not None:
        glob["evaluation_interval"] = evaluation_interval
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": list(alertmanagers)}]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == EXPORTER_JOB)
    job["static_configs"] = [{"targets": list(exporters)}]
    return config


@dataclass
class Notification:
    receiver: str  # the webhook path, e.g. "pager"
    received_at: float  # unix time
    payload: dict

    @property
    def alerts(self) -> list[dict]:
        return self.payload.get("alerts", [])

    def summary(self) -> str:
        common = self.payload.get("commonLabels", {})
        names = sorted({a["labels"].get("alertname", "?") for a in self.alerts})
        status = self.payload.get("status", "?")
        regions = sorted({a["labels"]["region"] for a in self.alerts if "region" in a["labels"]})
        text = [a.get("annotations", {}).get("summary", "") for a in self.alerts[:1]]
        labels = " ".join(f"{k}={v}" for k, v in sorted(common.items()) if k != "alertname")
        return (f"[{self.receiver}] {status.upper()} {','.join(names)} {labels}"
                f"{' regions=' + ','.join(regions) if regions else ''} {text[0] if text else ''}")

    def title(self) -> str:
        """The shipped template's title (alerts/templates/outage.tmpl, ``outage.title``)."""
        from exporter.lab import notification

        try:
            return notification.title(self.payload)
        except (KeyError, TypeError, ValueError, AttributeError):  # not Alertmanager's shape: say what came
            return self.summary()

    def text(self) -> str:
        """The shipped template's body (``outage.text``); empty for a payload it cannot render."""
        from exporter.lab import notification

        try:
            return notification.text(self.payload)
        except (KeyError, TypeError, ValueError, AttributeError):
            return ""

    def time(self) -> str:
        """When it arrived, in UTC: ``2021-10-04 15:40:12 UTC``."""
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.received_at))

    def printed(self) -> str:
        """What a terminal shows: arrival time and receiver, the title, then the body indented."""
        body = "".join(f"\n    {line}" if line else "\n" for line in self.text().splitlines())
        return f"[{self.time()}] {self.receiver}: {self.title()}{body}"


class WebhookSink:
    """An Alertmanager webhook receiver on 127.0.0.1 that keeps every notification in memory.

    ``sock``: serve on this listening socket instead, e.g. one opened inside a lab namespace (a socket keeps
    the network namespace it was created in), so an Alertmanager there can reach the sink.
    """

    def __init__(self, *, echo: bool = False, port: int = 0, sock: socket.socket | None = None) -> None:
        self.notifications: list[Notification] = []
        self.echo = echo
        self.port = port
        self.host = "127.0.0.1"
        self.sock = sock
        self._runner: web.AppRunner | None = None
        self.arrived = asyncio.Event()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> WebhookSink:
        app = web.Application()
        app.router.add_post("/{receiver}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        if self.sock is not None:
            self.host, self.port = self.sock.getsockname()[:2]
            await web.SockSite(self._runner, self.sock).start()
            return self
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        try:
            payload = await request.json()
        except (json.JSONDecodeError, ValueError):
            return web.Response(status=400, text="expected JSON\n")
        note = Notification(request.match_info["receiver"], time.time(), payload)
        self.notifications.append(note)
        self.arrived.set()
        if self.echo:
            print(note.printed(), flush=True)
        return web.Response(text="ok\n")


def alertmanager_config_text(alerts_dir: Path, sink_url: str) -> str:
    """The shipped alerts/alertmanager.yml with its webhook receivers pointed at ``sink_url`` and its
    ``templates`` globs made absolute, so the copy loads the shipped templates from anywhere."""
    text = (alerts_dir / "alertmanager.yml").read_text().replace(SINK_PLACEHOLDER, sink_url)
    config = yaml.safe_load(text)
    if not config.get("templates"):
        return text
    config["templates"] = [str((alerts_dir / glob).resolve()) for glob in config["templates"]]
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class Stack:
    """Prometheus (scraping ``exporter_address`` with the project's rules) + Alertmanager + webhook sink.

    Ports left at 0 are picked free at start.
    """

    exporter_address: str  # host:port of the exporter's /metrics
    alerts_dir: Path
    workdir: Path
    scrape_interval: str | None = None  # None: deploy/local/prometheus.yml's, the project's timing budget
    evaluation_interval: str | None = None
    echo: bool = False
    sink: WebhookSink = field(init=False)
    prometheus_port: int = 0
    alertmanager_port: int = 0
    sink_port: int = 0
    prometheus_template: Path | None = None  # default: find_prometheus_template()
    _procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.alertmanager_port}"

    def prometheus_config(self) -> dict:
        template = self.prometheus_template or find_prometheus_template()
        if template is None:
            raise FileNotFoundError(f"{PROMETHEUS_TEMPLATE} not found (run from a source checkout)")
        return fill_prometheus_config(template, exporters=[self.exporter_address],
                                      alertmanagers=[f"127.0.0.1:{self.alertmanager_port}"],
                                      scrape_interval=self.scrape_interval,
                                      evaluation_interval=self.evaluation_interval)

    def alertmanager_config(self) -> str:
        return alertmanager_config_text(self.alerts_dir, self.sink.base_url)

    async def start(self) -> Stack:
        prometheus, alertmanager = find_binary("prometheus"), find_binary("alertmanager")
        if prometheus is None or alertmanager is None:
            raise FileNotFoundError("prometheus and prometheus-alertmanager must be installed "
                                    "(Debian: apt-get install prometheus prometheus-alertmanager)")
        self.sink = await WebhookSink(echo=self.echo, port=self.sink_port).start()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prometheus_port = self.prometheus_port or free_port()
        self.alertmanager_port = self.alertmanager_port or free_port()
        am_cfg = self.workdir / "alertmanager.yml"
        am_cfg.write_text(self.alertmanager_config())
        prom_cfg = self.workdir / "prometheus.yml"
        prom_cfg.write_text(yaml.safe_dump(self.prometheus_config(), sort_keys=False))
        self._spawn("alertmanager", [
            alertmanager, f"--config.file={am_cfg}", f"--storage.path={self.workdir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{self.alertmanager_port}", "--cluster.listen-address=",
            "--log.level=warn"])
        self._spawn("prometheus", [
            prometheus, f"--config.file={prom_cfg}", f"--storage.tsdb.path={self.workdir / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{self.prometheus_port}", "--log.level=warn"])
        await self._wait_ready(self.alertmanager_url + "/-/ready")
        await self._wait_ready(self.prometheus_url + "/-/ready")
        return self

    def _spawn(self, name: str, argv: list[str]) -> None:
        logf = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self._procs.append(subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env={**os.environ}))
        logf.close()

    async def _wait_ready(self, url: str, timeout: float = 30.0) -> None:
        import aiohttp

        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                for proc in self._procs:
                    if proc.poll() is not None:
                        raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}; see {self.workdir}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(url) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise TimeoutError(f"{url} not ready after {timeout:.0f} s; logs in {self.workdir}")

    async def query(self, promql: str) -> list[dict]:
        """Instant query through Prometheus' HTTP API."""
        import aiohttp

        async with aiohttp.ClientSession() as http, http.get(
                self.prometheus_url + "/api/v1/query", params={"query": promql}) as resp:
            body = await resp.json()
        if body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {body}")
        return body["data"]["result"]

    async def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        self._procs.clear()
        await self.sink.stop()
