"""The running exporter: startup, --region, reloads (API, HTTP-less and SIGHUP), shutdown, /probe helpers."""

from __future__ import annotations

import asyncio
import signal
import socket
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from exporter.config import ConfigError
from exporter.config.model import Defaults, DNSProbe, Module
from exporter.runtime import Runtime
from exporter.server import serve
from tests.helpers.exporter_proc import ExporterProcess, free_port

UNREACHABLE = "http://127.0.0.1:1/"  # nothing listens on port 1: every probe fails fast, conn_refused


def config_text(*services: tuple[str, str], interval: str = "200ms") -> str:
    """A two-region config with one http check per (service, target)."""
    lines = [f"""
        defaults: {{interval: {interval}, timeout: 150ms}}
        modules:
          http_2xx: {{prober: http, timeout: 3s}}
          dns_www: {{prober: dns, dns: {{query_name: www.test, query_type: A}}}}
        regions:
          - {{name: eu, resolvers: ["127.0.0.1:1"]}}
          - {{name: us, resolvers: ["127.0.0.1:2"]}}
        services:"""]
    for name, target in services:
        lines.append(f"""
          - name: {name}
            checks: [{{name: home, module: http_2xx, target: "{target}"}}]""")
    return textwrap.dedent("".join(lines)) + "\n"


def write(path: Path, *services: tuple[str, str], **kw: str) -> Path:
    path.write_text(config_text(*services, **kw))
    return path


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        await asyncio.sleep(0.02)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write(tmp_path / "outage.yml", ("shop", UNREACHABLE))


# --- Runtime in process ---------------------------------------------------------------------------------------
async def test_start_schedules_every_region_and_stop_ends_it(config: Path) -> None:
    rt = Runtime(str(config))
    await rt.start()
    try:
        assert rt.ready
        assert [(c.service, c.region) for c in rt.checks] == [("shop", "eu"), ("shop", "us")]
        assert rt.scheduler is not None and rt.scheduler.running and rt.scheduler.checks == 2
        await eventually(lambda: all(s.runs for s in rt.store.states()))
        assert {s.last.reason for s in rt.store.states() if s.last} == {"conn_refused"}
    finally:
        await rt.stop()
    assert not rt.ready
    assert not rt.scheduler.running


async def test_region_flag_restricts_to_one_region(config: Path) -> None:
    rt = Runtime(str(config), region="us")
    await rt.start()
    try:
        assert [c.region for c in rt.checks] == ["us"]
        assert rt.region_named(None).name == "us"  # /probe without ?region= runs from this vantage
        assert rt.region_named("eu").name == "eu"  # every region stays available to /probe
    finally:
        await rt.stop()


async def test_region_flag_must_name_a_configured_region(config: Path) -> None:
    rt = Runtime(str(config), region="mars")
    with pytest.raises(ConfigError, match=r"^regions: --region 'mars' is not a configured region \(known: eu, us\)"):
        await rt.start()
    assert not rt.ready


async def test_region_named_defaults_to_first_region_and_rejects_unknown(config: Path) -> None:
    rt = Runtime(str(config))
    rt.config = rt.load()
    assert rt.region_named(None).name == "eu"
    with pytest.raises(KeyError):
        rt.region_named("mars")


async def test_reload_outcomes(tmp_path: Path) -> None:
    path = write(tmp_path / "outage.yml", ("shop", UNREACHABLE))
    rt = Runtime(str(path))
    await rt.start()
    try:
        assert await rt.reload() == (True, "config unchanged")
        path.write_text("services: [\n")
        ok, message = await rt.reload()
        assert not ok
        assert message.startswith(f"{path}:2:1: invalid YAML")
        assert rt.self_metrics.last_reload_error == message
        assert [c.service for c in rt.checks] == ["shop", "shop"]  # the last good config stays
        write(path, ("shop", UNREACHABLE), ("api", "http://127.0.0.1:2/"))
        assert await rt.reload() == (True, "config reloaded")
        assert rt.scheduler is not None and rt.scheduler.checks == 4
        assert rt.self_metrics.last_reload_error is None
    finally:
        await rt.stop()


async def test_reload_keeps_counters_and_phase_of_unchanged_checks(tmp_path: Path) -> None:
    path = write(tmp_path / "outage.yml", ("shop", UNREACHABLE))
    rt = Runtime(str(path))
    await rt.start()
    try:
        await eventually(lambda: all(s.runs >= 2 for s in rt.store.states()))
        key = rt.checks[0].key
        state = rt.store.get(key)
        assert rt.scheduler is not None
        due = rt.scheduler.next_due(key)
        write(path, ("shop", UNREACHABLE), ("api", "http://127.0.0.1:2/"))
        assert (await rt.reload())[0]
        assert rt.store.get(key) is state and state.runs >= 2
        steps = ((rt.scheduler.next_due(key) or 0) - (due or 0)) / 0.2
        assert steps == pytest.approx(round(steps), abs=1e-6)  # still on the same phase grid
        write(path, ("api", "http://127.0.0.1:2/"))
        assert (await rt.reload())[0]
        assert rt.store.get(key) is None  # removed checks are dropped
    finally:
        await rt.stop()


async def test_concurrent_reloads_are_serialised(tmp_path: Path) -> None:
    path = write(tmp_path / "outage.yml", ("shop", UNREACHABLE))
    rt = Runtime(str(path))
    await rt.start()
    try:
        write(path, ("shop", UNREACHABLE), ("api", "http://127.0.0.1:2/"))
        results = await asyncio.gather(*(rt.reload() for _ in range(5)))
        assert results[0] == (True, "config reloaded")
        assert set(results[1:]) == {(True, "config unchanged")}
    finally:
        await rt.stop()


async def test_one_runtime_stopping_leaves_the_shared_session_to_the_others(tmp_path: Path) -> None:
    """Runtimes on one loop share the HTTP session and DNS sockets: the last one to stop closes them, so
    another runtime's probes in flight never end as ``internal`` (the lab runs several runtimes at once)."""
    from aiohttp import web

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(0.4)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    paths = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.yml"
        text = config_text((name, f"http://127.0.0.1:{port}/"), interval="1s").replace("150ms", "900ms")
        path.write_text(text)
        paths.append(path)
    first, second = Runtime(str(paths[0])), Runtime(str(paths[1]))
    try:
        await first.start()
        await second.start()
        await asyncio.sleep(1.2)  # every check of both runtimes has a probe waiting on the slow site
        await first.stop()
        await asyncio.sleep(1.5)
        states = [second.store.get(check.key) for check in second.checks]
        assert all(state.runs >= 2 for state in states)
        assert not any((state.failures or {}).get("internal") for state in states), [s.failures for s in states]
        assert all(state.last is not None and state.last.success for state in states)
    finally:
        await second.stop()
        await runner.cleanup()


# --- /probe helpers -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("header", "module_timeout", "expected"), [
    (None, None, Defaults().timeout),  # defaults.timeout of a config without defaults
    ("1.5", None, 1.0),
    ("1.5", 0.5, 0.5),
    ("10", 3.0, 3.0),
    ("0.3", None, 0.1),  # never zero or negative
    ("soon", 3.0, 3.0),  # an unparsable header is ignored
    ("", 3.0, 3.0),
])
def test_probe_timeout(tmp_path: Path, header: str | None, module_timeout: float | None, expected: float) -> None:
    path = tmp_path / "m.yml"
    path.write_text("modules: {http_2xx: {prober: http}}\nregions: [{name: lab, resolvers: ['127.0.0.1']}]\n")
    rt = Runtime(str(path))
    rt.config = rt.load()
    module = Module(name="m", prober="http", timeout=module_timeout)
    assert rt.probe_timeout(module, header) == pytest.approx(expected)


def test_adhoc_check_http_and_dns(config: Path) -> None:
    rt = Runtime(str(config))
    rt.config = rt.load()
    region = rt.region_named("us")
    http = rt.adhoc_check(rt.config.modules["http_2xx"], "127.0.0.1:8080/x", region=region, timeout=2.0,
                          hostname="www.test")
    assert (http.target, http.resolver, http.hostname, http.timeout) == ("http://127.0.0.1:8080/x", "", "www.test",
                                                                          2.0)
    assert http.resolvers == region.resolvers and http.region == "us"
    dns = rt.adhoc_check(rt.config.modules["dns_www"], "127.0.0.1:5353", region=region, timeout=1.0)
    assert dns.dns_server is not None and (dns.dns_server.host, dns.dns_server.port) == ("127.0.0.1", 5353)
    assert (dns.target, dns.query_name, dns.resolver) == ("www.test", "www.test", "127.0.0.1:5353")
    named = rt.adhoc_check(Module(name="d", prober="dns", dns=DNSProbe(query_name="a.test")), "ns1.test",
                           region=region, timeout=1.0)
    assert named.dns_server is not None and (named.dns_server.host, named.dns_server.port) == ("ns1.test", 53)


# --- cli.serve in process -----------------------------------------------------------------------------------
async def test_serve_until_stop_event(config: Path) -> None:
    port = free_port()
    stop = asyncio.Event()
    rt = Runtime(str(config))
    server = asyncio.create_task(serve(str(config), ("127.0.0.1", port), runtime=rt, stop_event=stop))
    try:
        async with aiohttp.ClientSession() as session:
            await eventually(lambda: rt.ready)
            async with session.get(f"http://127.0.0.1:{port}/-/ready") as resp:
                assert resp.status == 200
            async with session.post(f"http://127.0.0.1:{port}/-/reload") as resp:
                assert (resp.status, await resp.text()) == (200, "config unchanged\n")
    finally:
        stop.set()
        assert await asyncio.wait_for(server, 10) == 0
    assert not rt.ready
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


async def test_serve_reports_an_unusable_listen_address(config: Path, caplog: pytest.LogCaptureFixture) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    rt = Runtime(str(config))
    try:
        code = await asyncio.wait_for(serve(str(config), busy.getsockname(), runtime=rt), 10)
    finally:
        busy.close()
    assert code == 1
    assert not rt.ready and rt.scheduler is not None and not rt.scheduler.running
    assert any(r.getMessage() == "cannot listen" for r in caplog.records)


# --- the real process ---------------------------------------------------------------------------------------
def wait_for(exporter: ExporterProcess, predicate: Callable[[str], bool], timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = exporter.metrics()
        if predicate(text):
            return text
        assert time.monotonic() < deadline, f"metrics never matched\n{text}\n{exporter.logs()}"
        time.sleep(0.05)


def test_process_ready_sighup_reload_and_sigterm(tmp_path: Path) -> None:
    path = write(tmp_path / "outage.yml", ("shop", UNREACHABLE))
    with ExporterProcess(path) as exporter:
        assert exporter.get("/-/ready").status == 200
        assert exporter.get("/-/healthy").status == 200
        exporter.wait_all_ran()
        assert "outage_exporter_scheduled_checks 2.0" in exporter.metrics()

        write(path, ("shop", UNREACHABLE), ("api", "http://127.0.0.1:2/"))
        exporter.signal(signal.SIGHUP)
        wait_for(exporter, lambda t: "outage_exporter_scheduled_checks 4.0" in t)
        exporter.wait_all_ran()

        bad = config_text(("shop", UNREACHABLE)).replace(f'"{UNREACHABLE}"}}', f'"{UNREACHABLE}", color: red}}')
        path.write_text(bad)
        exporter.signal(signal.SIGHUP)
        text = wait_for(exporter, lambda t: "outage_exporter_config_last_reload_successful 0.0" in t)
        assert "outage_exporter_scheduled_checks 4.0" in text  # still the last good config
        assert "outage_exporter_config_reload_failures_total 1.0" in text
        assert exporter.get("/-/ready").status == 200

        code = exporter.stop()
        logs = exporter.logs()
    assert code == 0
    assert "msg=\"config reload failed; keeping the last good config\"" in logs
    assert 'err="services[0].checks[0].color: unknown key \\"color\\"' in logs
    assert "msg=\"shutting down\"" in logs
    assert "Traceback" not in logs
