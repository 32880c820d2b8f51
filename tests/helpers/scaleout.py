"""A multi-region outage-exporter deployment on loopback, from the shipped files in deploy/:

    region eu-west: exporter(s) -> vmagent (-remoteWrite.label=region=eu-west) --+
    region us-east: exporter(s) -> vmagent (-remoteWrite.label=region=us-east) --+--> victoria-metrics
    vmalert: rules against victoria-metrics (query, remote write, remote read) --> alertmanager a + b
    alertmanager a <-> b (one cluster) --> webhook sink

    async with MultiRegion(workdir, {"eu-west": ["127.0.0.1:19115"], "us-east": [...]}) as mr:
        await mr.query("up")             # through victoria-metrics
        mr.sink.notifications            # what the Alertmanager cluster sent

The agents use deploy/multi-region/vmagent-scrape.yml, vmalert the project's recording rules plus
deploy/multi-region/vmalert/alerts.yml, and the Alertmanager nodes are started by
deploy/alertmanager-ha/run-node with alerts/alertmanager.yml. docs/scale-out.md shows the same commands.
Every process listens on 127.0.0.1 and is stopped (then killed) on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

from exporter.lab.stack import SINK_PLACEHOLDER, WebhookSink
from tests.helpers.binaries import require_binary
from tests.helpers.exporter_proc import free_port
from tests.helpers.tools import REPO

DEPLOY = REPO / "deploy"
SCRAPE_TEMPLATE = DEPLOY / "multi-region" / "vmagent-scrape.yml"
VMALERT_ALERTS = DEPLOY / "multi-region" / "vmalert" / "alerts.yml"
RECORDING_RULES = REPO / "alerts" / "rules" / "recording.yml"
RUN_NODE = DEPLOY / "alertmanager-ha" / "run-node"
EVALUATION_INTERVAL = "2s"  # one recording-rule hop per evaluation: docs/scale-out.md, "Timings"


def victoria_metrics() -> str:
    return require_binary("victoria-metrics", package="victoria-metrics")


def vmagent() -> str:
    return require_binary("vmagent", package="victoria-metrics")


def vmalert() -> str:
    return require_binary("vmalert", package="victoria-metrics")


def scrape_config(targets: Sequence[str]) -> str:
    """deploy/multi-region/vmagent-scrape.yml scraping ``targets``."""
    config = yaml.safe_load(SCRAPE_TEMPLATE.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "outage-exporter")
    job["static_configs"] = [{"targets": list(targets)}]
    return yaml.safe_dump(config, sort_keys=False)


def vmalert_rule_args() -> list[str]:
    return [f"-rule={RECORDING_RULES}", f"-rule={VMALERT_ALERTS}"]


@dataclass
class Processes:
    """Started programs, each logging to ``workdir/<name>.log``; stop() ends every one of them."""

    workdir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.Popen:
        with (self.workdir / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, **(env or {})}, start_new_session=True)
        self.procs[name] = proc
        return proc

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)[-3000:]}")

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class MultiRegion:
    """victoria-metrics, one vmagent per region, vmalert and a two-node Alertmanager cluster."""

    workdir: Path
    regions: Mapping[str, Sequence[str]]  # region -> the exporters (host:port) its agent scrapes
    procs: Processes = field(init=False)
    sink: WebhookSink = field(init=False)
    ports: dict[str, int] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def alertmanagers(self) -> list[str]:
        return [self.url("am-a"), self.url("am-b")]

    async def __aenter__(self) -> MultiRegion:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.procs = Processes(self.workdir)
        self.sink = await WebhookSink().start()
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        await asyncio.to_thread(self.procs.stop)
        await self.sink.stop()

    async def _start(self) -> None:
        names = ["vm", "vmalert", "am-a", "am-b", "am-a-cluster", "am-b-cluster",
                 *(f"vmagent-{r}" for r in self.regions)]
        self.ports = {name: free_port() for name in names}
        self._start_victoria_metrics()
        self._start_alertmanagers()
        for region, targets in self.regions.items():
            self._start_vmagent(region, targets)
        self._start_vmalert()
        for name in names:
            if not name.endswith("-cluster"):
                await self.wait_ready(self.url(name) + ("/-/ready" if name.startswith("am-") else "/health"))

    def _start_victoria_metrics(self) -> None:
        # latencyOffset: VictoriaMetrics hides the newest 30 s of samples from queries by default, which would
        # delay every alert by 30 s; remote-written samples are complete as soon as they arrive.
        # minStalenessInterval: vmalert writes each recording rule's result asynchronously, so the rule after
        # it may look before the newest sample has landed; a 20 s floor keeps the series visible meanwhile.
        self.procs.spawn("vm", [
            victoria_metrics(), f"-storageDataPath={self.workdir / 'vm-data'}", "-retentionPeriod=1d",
            f"-httpListenAddr=127.0.0.1:{self.ports['vm']}", "-search.latencyOffset=1s",
            "-search.minStalenessInterval=20s", "-loggerLevel=WARN"])

    def _start_vmagent(self, region: str, targets: Sequence[str]) -> None:
        config = self.workdir / f"vmagent-{region}.yml"
        config.write_text(scrape_config(targets))
        self.procs.spawn(f"vmagent-{region}", [
            vmagent(), f"-promscrape.config={config}", f"-remoteWrite.url={self.url('vm')}/api/v1/write",
            f"-remoteWrite.label=region={region}", "-remoteWrite.flushInterval=1s",
            f"-remoteWrite.tmpDataPath={self.workdir / f'vmagent-{region}-data'}",
            f"-httpListenAddr=127.0.0.1:{self.ports[f'vmagent-{region}']}", "-loggerLevel=WARN"])

    def _start_vmalert(self) -> None:
        vm = self.url("vm")
        self.procs.spawn("vmalert", [
            vmalert(), *vmalert_rule_args(), f"-datasource.url={vm}", f"-remoteWrite.url={vm}",
            f"-remoteRead.url={vm}", *(f"-notifier.url={am}" for am in self.alertmanagers),
            f"-evaluationInterval={EVALUATION_INTERVAL}", "-remoteWrite.flushInterval=1s",
            f"-httpListenAddr=127.0.0.1:{self.ports['vmalert']}", "-loggerLevel=WARN"])

    def _start_alertmanagers(self) -> None:
        require_binary("prometheus-alertmanager", "alertmanager", package="prometheus-alertmanager")
        config = self.workdir / "alertmanager.yml"
        config.write_text((REPO / "alerts" / "alertmanager.yml").read_text().replace(SINK_PLACEHOLDER,
                                                                                       self.sink.base_url))
        nodes = {"am-a": "am-b", "am-b": "am-a"}
        for node, peer in nodes.items():
            env = {"ALERTMANAGER_CONFIG": str(config), "DATA_DIR": str(self.workdir / f"{node}-data")}
            self.procs.spawn(node, [
                str(RUN_NODE), node, f"127.0.0.1:{self.ports[node]}", f"127.0.0.1:{self.ports[node + '-cluster']}",
                f"127.0.0.1:{self.ports[peer + '-cluster']}", "--", "--log.level=warn"], env=env)

    async def wait_ready(self, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                self.procs.check()
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(url) as reply:
                        if reply.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise TimeoutError(f"{url} not ready after {timeout:.0f} s; logs in {self.workdir}")

    async def get_json(self, url: str, **params: str) -> object:
        async with aiohttp.ClientSession() as http, http.get(url, params=params) as reply:
            reply.raise_for_status()
            return await reply.json()

    async def query(self, promql: str) -> list[dict]:
        """Instant query against victoria-metrics."""
        body = await self.get_json(self.url("vm") + "/api/v1/query", query=promql)
        assert isinstance(body, dict) and body.get("status") == "success", body
        return body["data"]["result"]

    async def wait_for_series(self, promql: str, timeout: float) -> float:
        """Wait until ``promql`` returns a series; returns the seconds waited.

        vmalert records one rule per evaluation hop and a brand-new series takes seconds to become
        searchable, so the rule chain needs a while after a cold start before the alerts can see it.
        """
        started = time.monotonic()
        while not await self.query(promql):
            self.procs.check()
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"no {promql} after {timeout:.0f} s; logs in {self.workdir}")
            await asyncio.sleep(1)
        return time.monotonic() - started

    async def cluster_peers(self, node: str) -> int:
        status = await self.get_json(self.url(node) + "/api/v2/status")
        assert isinstance(status, dict)
        return len(status["cluster"]["peers"])

    async def alerts(self, node: str) -> list[dict]:
        """Alerts held by one Alertmanager node."""
        return await self.get_json(self.url(node) + "/api/v2/alerts")  # type: ignore[return-value]
