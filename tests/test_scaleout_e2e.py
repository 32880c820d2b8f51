"""Scale-out on a real TSDB: two regions, one exporter each, per-region vmagent -> victoria-metrics, vmalert
evaluating the project's rules and notifying a two-node Alertmanager cluster, a webhook sink.

The fast tests check the shipped deploy/ files with the real tools (vmalert -dryRun, promtool, amtool,
vmagent -dryRun). The end-to-end run replays the 2021 outage in the lab; the us-east exporter leaves the
region label out (--region.omit-label) and its agent names the region. Printed: the notifications and the
page delay after the nameserver cut (docs/scale-out.md quotes them).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from exporter.lab.scenario import Player, load_builtin
from exporter.lab.stack import Notification
from exporter.lab.world import World
from tests.helpers.exporter_proc import ExporterProcess
from tests.helpers.scaleout import (
    DEPLOY,
    RECORDING_RULES,
    RUN_NODE,
    SCRAPE_TEMPLATE,
    VMALERT_ALERTS,
    MultiRegion,
    scrape_config,
    vmagent,
    vmalert,
    vmalert_rule_args,
)
from tests.helpers.tools import ALERTMANAGER_CONFIG, REPO, amtool_check_config, promtool, run_tool

GENERATOR = DEPLOY / "multi-region" / "gen-vmalert-rules"
SHIPPED_ALERTS = REPO / "alerts" / "rules" / "alerts.yml"


# --- the shipped files, checked by the real tools -------------------------------------------------------

def test_vmalert_accepts_the_rules_it_is_given():
    run = run_tool([vmalert(), "-dryRun", *vmalert_rule_args()])
    assert run.ok, run


def test_vmalert_copy_differs_from_the_rules_only_by_keep_firing_for():
    run = run_tool([sys.executable, str(GENERATOR), "--check"])
    assert run.ok, run
    shipped = yaml.safe_load(SHIPPED_ALERTS.read_text())
    copy = yaml.safe_load(VMALERT_ALERTS.read_text())
    for group in shipped["groups"]:
        for rule in group["rules"]:
            rule.pop("keep_firing_for", None)
    assert copy == shipped
    assert not re.search(r"^\s+keep_firing_for:", VMALERT_ALERTS.read_text(), re.MULTILINE)


def test_this_vmalert_rejects_the_shipped_rules_only_for_keep_firing_for(tmp_path):
    """When a vmalert that accepts keep_firing_for (v1.92+) is installed, the copy is no longer needed."""
    run = run_tool([vmalert(), "-dryRun", f"-rule={RECORDING_RULES}", f"-rule={SHIPPED_ALERTS}"])
    if run.ok:
        pytest.skip("this vmalert accepts keep_firing_for: alerts/rules/ can be used unchanged")
    assert "unknown fields in rule: keep_firing_for" in run.output, run


def test_agent_configs_are_valid(tmp_path):
    run = run_tool([promtool(), "check", "config", "--agent", str(DEPLOY / "multi-region" / "prometheus-agent.yml")])
    assert run.ok, run
    path = tmp_path / "scrape.yml"
    path.write_text(scrape_config(["127.0.0.1:19115", "127.0.0.1:19116"]))
    for config in (SCRAPE_TEMPLATE, path):
        run = run_tool([vmagent(), f"-promscrape.config={config}", "-promscrape.config.dryRun",
                        "-promscrape.config.strictParse"])
        assert run.ok, run
    job = yaml.safe_load(SCRAPE_TEMPLATE.read_text())["scrape_configs"][0]
    assert job["job_name"] == "outage-exporter" and job["honor_labels"] is True


def test_alertmanager_ha_node_runs_the_project_config():
    assert amtool_check_config(ALERTMANAGER_CONFIG).ok
    usage = subprocess.run([str(RUN_NODE)], capture_output=True, text=True, check=False)
    assert usage.returncode == 2 and "run-node NAME WEB_ADDR CLUSTER_ADDR PEER_ADDR" in usage.stderr


# --- the end-to-end run ---------------------------------------------------------------------------------

SCENARIO = "facebook-2021-10-04"
CUT = "dns-prefixes-withdrawn"
WARM_UP_LIMIT = 120.0  # seconds for the rule chain to exist before the scenario starts
RUN_LIMIT = 120.0  # seconds from the scenario start to give up waiting for the page
AFTER_PAGE = 30.0  # keep listening after the first page: a duplicate from the second node comes ~15 s late


@dataclass
class Run:
    phases: dict[str, float] = field(default_factory=dict)
    notifications: list[Notification] = field(default_factory=list)
    alerts_per_node: dict[str, list[dict]] = field(default_factory=dict)
    peers: dict[str, int] = field(default_factory=dict)
    region_series: dict[str, list[str]] = field(default_factory=dict)
    started: float = 0.0
    warm_up: float = 0.0  # seconds until the whole recording-rule chain existed in victoria-metrics

    def pages(self) -> list[Notification]:
        return [n for n in self.notifications if n.receiver == "pager" and n.payload.get("status") == "firing"]

    def timeline(self) -> str:
        lines = []
        for note in self.notifications:
            since = {p: note.received_at - t for p, t in self.phases.items() if t <= note.received_at}
            last = max(since, key=lambda p: self.phases[p]) if since else ""
            ref = f"+{since[last]:.0f} s after {last!r}" if last else ""
            lines.append(f"  {note.received_at - self.started:6.1f} s  {ref:40} {note.summary()[:160]}")
        return "\n".join(lines)


async def _scale_out_run(workdir: Path) -> Run:
    run = Run()
    world = World(speed=load_builtin(SCENARIO).default_speed)
    await world.start()
    config = workdir / "lab.yml"
    config.write_text(yaml.safe_dump(world.exporter_config(), sort_keys=False))
    exporters = {"eu-west": ExporterProcess(config, args=("--region", "eu-west"), ready_timeout=30),
                 "us-east": ExporterProcess(config, args=("--region", "us-east", "--region.omit-label"),
                                            ready_timeout=30)}
    player = None
    try:
        for exporter in exporters.values():
            await exporter.astart()
        us_east = (await exporters["us-east"].aget("/metrics")).text
        assert 'region="us-east"' not in us_east and 'region=""' in us_east
        async with MultiRegion(workdir / "stack", {r: [e.address] for r, e in exporters.items()}) as mr:
            run.warm_up = await mr.wait_for_series("provider:outage_services_down:count", WARM_UP_LIMIT)
            scenario = load_builtin(SCENARIO)
            player = Player(scenario, world)
            player.add_listener(lambda phase: run.phases.__setitem__(phase.name, time.time()))
            run.started = time.time()
            player.start()
            deadline = time.monotonic() + RUN_LIMIT
            while not run_pages(mr) and time.monotonic() < deadline:
                mr.procs.check()
                await asyncio.sleep(1)
            if run_pages(mr):
                await asyncio.sleep(AFTER_PAGE)
            run.notifications = list(mr.sink.notifications)
            run.alerts_per_node = {node: await mr.alerts(node) for node in ("am-a", "am-b")}
            run.peers = {node: await mr.cluster_peers(node) for node in ("am-a", "am-b")}
            for metric in ("outage_probe_check_info", "outage_vantage_healthy"):
                result = await mr.query(f"count by (region) ({metric})")
                run.region_series[metric] = sorted(r["metric"].get("region", "") for r in result)
    finally:
        if player is not None:
            await player.stop()
        for exporter in exporters.values():
            await asyncio.to_thread(exporter.close)
        await world.stop()
    return run


def run_pages(mr: MultiRegion) -> list[Notification]:
    return [n for n in mr.sink.notifications if n.receiver == "pager" and n.payload.get("status") == "firing"]


@pytest.fixture(scope="module")
def run() -> Run:
    vmalert(), vmagent()  # skip (or fail in CI) before starting anything when they are missing
    with tempfile.TemporaryDirectory(prefix="scaleout-") as tmp:
        return asyncio.run(_scale_out_run(Path(tmp)))


def _text(notes: list[Notification]) -> str:
    return json.dumps([n.payload for n in notes]).lower()


@pytest.mark.e2e
@pytest.mark.slow
def test_print_timeline(run, capsys):
    with capsys.disabled():
        print(f"\nscale-out ({SCENARIO}), rule chain ready {run.warm_up:.0f} s after start:\n{run.timeline()}")
        pages = run.pages()
        if pages and CUT in run.phases:
            print(f"first page {pages[0].received_at - run.phases[CUT]:.0f} s after the nameserver cut, "
                  f"{pages[0].received_at - run.phases['edges-lose-backends']:.0f} s after the edges failed")


@pytest.mark.e2e
@pytest.mark.slow
def test_both_regions_reach_the_tsdb_labelled_by_exporter_or_agent(run):
    assert run.region_series["outage_probe_check_info"] == ["eu-west", "us-east"]
    assert run.region_series["outage_vantage_healthy"] == ["eu-west", "us-east"]
    assert run.peers == {"am-a": 2, "am-b": 2}, "the two Alertmanager nodes form one cluster"


@pytest.mark.e2e
@pytest.mark.slow
def test_the_provider_page_arrives_and_names_both_regions(run):
    pages = run.pages()
    assert pages, run.timeline()
    assert {n.payload["commonLabels"].get("provider") for n in pages} == {"meta"}, run.timeline()
    first = pages[0]
    text = _text([first])
    assert "eu-west" in text and "us-east" in text, text[:3000]
    assert first.received_at - run.phases[CUT] <= 120, run.timeline()


@pytest.mark.e2e
@pytest.mark.slow
def test_the_page_arrives_exactly_once_although_both_nodes_hold_it(run):
    firing = {a["labels"]["alertname"] for node in run.alerts_per_node.values() for a in node
              if a["labels"].get("severity") == "critical"}
    for node, alerts in run.alerts_per_node.items():
        held = {a["labels"]["alertname"] for a in alerts if a["labels"].get("severity") == "critical"}
        assert held == firing and held, f"vmalert sends every alert to {node} too"
    seen: dict[tuple, int] = {}
    for note in run.notifications:
        key = (note.receiver, note.payload["groupKey"], note.payload["status"],
               tuple(sorted((a["fingerprint"], a["status"]) for a in note.alerts)))
        seen[key] = seen.get(key, 0) + 1
    assert all(count == 1 for count in seen.values()), run.timeline()
    assert len([n for n in run.pages() if n.payload["commonLabels"].get("provider") == "meta"]) >= 1


@pytest.mark.e2e
@pytest.mark.slow
def test_no_page_for_controls_or_other_providers(run):
    for note in run.notifications:
        for alert in note.alerts:
            assert not alert["labels"].get("service", "").startswith("control-"), note.summary()
            if note.receiver == "pager":
                assert alert["labels"].get("provider") == "meta", note.summary()
    assert "nxdomain" not in _text(run.notifications)
