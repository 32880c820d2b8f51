"""`outage-exporter demo`: the lab, the exporter and a scenario in one process."""

import asyncio

import aiohttp

from exporter.cli import main
from exporter.lab.demo import load, run_demo
from exporter.lab.stack import free_port


def test_list_names_every_builtin_scenario(capsys):
    assert main(["demo", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("facebook-2021-10-04", "regional-blip", "vantage-isolated", "slow-migration", "cert-expiry",
                 "healthy"):
        assert name in out


def test_unknown_scenario_is_a_clear_error(capsys):
    assert main(["demo", "--scenario", "nope"]) == 2
    assert "unknown scenario 'nope'" in capsys.readouterr().out


async def test_demo_serves_the_story_and_stops_cleanly(tmp_path):
    port = free_port()
    stop = asyncio.Event()
    scenario = load("facebook-2021-10-04")
    config_out = tmp_path / "lab.yml"
    task = asyncio.ensure_future(run_demo(scenario, 600.0, ("127.0.0.1", port), once=False,
                                          config_out=str(config_out), stop_event=stop))
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        page = metrics = ""
        for _ in range(150):  # the DNS phase arrives within a few seconds at 600x; probes spread over 10 s
            await asyncio.sleep(0.2)
            try:
                async with http.get(base + "/") as resp:
                    page = await resp.text()
                async with http.get(base + "/metrics") as resp:
                    metrics = await resp.text()
            except aiohttp.ClientConnectionError:
                continue
            if "dns_servfail" in page and 'probe_success{service="facebook"' in metrics:
                break
        assert "facebook-2021-10-04" in page and "phase" in page
        assert "dns_servfail" in page
        assert 'probe_success{service="facebook"' in metrics
    assert "regions:" in config_out.read_text()
    stop.set()
    assert await asyncio.wait_for(task, 15) == 0
