"""Config loading stays bounded and checks what it points at.

A small file cannot become an enormous plan (defaults.max_checks; the read itself and the alias budget
are in test_config_reading.py); files a module names must be readable at load, and when one breaks later
the probe ends with the prober-side reason config_file_unreadable (inconclusive, not a failure of the
target). A reload reads and parses off the event loop, so a bad path never stops /-/healthy or /metrics.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import threading
from pathlib import Path

import pytest

from exporter.config import ConfigError, load_config, load_config_text
from exporter.config.references import referenced_files
from exporter.probers import result as r
from exporter.results import ResultStore
from exporter.runtime import Runtime
from tests.helpers.configfiles import amplified, config_check, one_line_error
from tests.helpers.exporter_proc import ExporterProcess
from tests.helpers.factories import make_check, make_result

GOOD = ("defaults: {interval: 1s, timeout: 500ms}\nmodules: {tcp: {prober: tcp}}\n"
        "regions: [{name: local, resolvers: ['127.0.0.1:1']}]\n"
        "services: [{name: s, checks: [{name: c, module: tcp, target: '127.0.0.1:1'}]}]\n")

pytestmark = pytest.mark.usefixtures("yaml_loader")


# --- Amplification -----------------------------------------------------------------------------------------
def test_max_checks_names_the_check_that_crosses_it() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(amplified(11, 10, max_checks=100))
    assert str(info.value) == ("services[10].checks[0]: the config expands to more than 100 scheduled checks "
                               "(this check adds 10); raise defaults.max_checks if that many are meant")
    config = load_config_text(amplified(10, 10, max_checks=100))
    assert sum(len(cc.targets) for s in config.services for cc in s.checks) == 100
    assert config.defaults.max_checks == 100


def test_max_checks_default_and_dns_checks_count_resolvers() -> None:
    assert load_config_text("").defaults.max_checks == 100_000
    text = ("defaults: {max_checks: 2}\nmodules: {d: {prober: dns, dns: {query_name: a.test}}}\n"
            "regions: [{name: r, resolvers: ['127.0.0.1:1', '127.0.0.2:1']}, {name: q, resolvers: ['127.0.0.3:1']}]\n"
            "services: [{name: s, checks: [{name: c, module: d}]}]\n")
    with pytest.raises(ConfigError, match=r"^services\[0\]\.checks\[0\]: the config expands to more than 2 "):
        load_config_text(text)


# --- Files a config refers to -----------------------------------------------------------------------------
def module_with(files: str) -> str:
    return ("modules:\n  http_auth:\n    prober: http\n    http:\n" + files +
            "regions: [{name: local, resolvers: ['127.0.0.1:1']}]\n"
            "services: [{name: s, checks: [{name: c, module: http_auth, target: 'https://127.0.0.1:1/'},\n"
            "  {name: inline, module: {prober: tcp, tcp: {tls: true, tls_config: {ca_file: CA}}}, "
            "target: '127.0.0.1:1'}]}]\n")


@pytest.mark.parametrize(("key", "yaml_key", "block"), [
    ("ca_file", "modules.http_auth.http.tls_config.ca_file", "      tls_config: {ca_file: MISSING}\n"),
    ("bearer_token_file", "modules.http_auth.http.bearer_token_file", "      bearer_token_file: MISSING\n"),
    ("password_file", "modules.http_auth.http.basic_auth.password_file",
     "      basic_auth: {username: u, password_file: MISSING}\n"),
    ("key_file", "modules.http_auth.http.tls_config.key_file",
     "      tls_config: {cert_file: CA, key_file: MISSING}\n"),
])
def test_missing_referenced_file_is_a_config_error(tmp_path: Path, key: str, yaml_key: str, block: str) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    missing = tmp_path / "x" / "missing.pem"
    text = module_with(block.replace("MISSING", str(missing))).replace("CA", str(ca))
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    assert str(info.value) == f"{yaml_key}: cannot read {missing}: No such file or directory"


def test_inline_module_files_and_non_regular_files_are_checked(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    text = module_with(f"      tls_config: {{ca_file: {ca}}}\n")
    with pytest.raises(ConfigError) as info:
        load_config_text(text.replace("ca_file: CA", f"ca_file: {tmp_path}"))
    assert str(info.value) == (f"services[0].checks[1].module.tcp.tls_config.ca_file: cannot read {tmp_path}: "
                               "not a regular file (a directory)")
    config = load_config_text(text.replace("CA", str(ca)))
    refs = referenced_files(config)
    assert [(f.module, f.path) for f in refs] == [
        ("http_auth", "modules.http_auth.http.tls_config.ca_file"),
        ("s/inline", "services[0].checks[1].module.tcp.tls_config.ca_file")]


def test_config_check_says_which_file(tmp_path: Path, yaml_loader: str) -> None:
    if yaml_loader != "python":
        pytest.skip("a subprocess: once is enough")
    path = tmp_path / "outage.yml"
    path.write_text(module_with("      bearer_token_file: /nonexistent/token\n").replace("CA", str(path)))
    line = one_line_error(config_check(path))
    assert line.endswith("modules.http_auth.http.bearer_token_file: cannot read /nonexistent/token: "
                         "No such file or directory")


def test_config_file_unreadable_is_inconclusive_not_a_failure() -> None:
    store = ResultStore()
    control = make_check("ctl", control=True)
    check = make_check("home")
    store.set_checks([control, check])
    store.record(control, make_result(False, reason=r.CONFIG_FILE_UNREADABLE))
    store.record(check, make_result(False, reason=r.CONFIG_FILE_UNREADABLE))
    state = store.get(check.key)
    assert state is not None and state.inconclusive and state.inconclusive_total == 1 and not state.failures
    assert store.vantage("eu").healthy  # a control that cannot read its CA says nothing about the network


async def test_a_file_that_breaks_after_load_ends_the_probe_prober_side(tmp_path: Path) -> None:
    from exporter.probers import PROBERS
    from exporter.scheduler import run_guarded

    token, ca = tmp_path / "token", tmp_path / "ca.pem"
    token.write_text("t0ken\n")
    ca.write_text("")
    text = (f"modules:\n  bearer: {{prober: http, http: {{bearer_token_file: {token}}}}}\n"
            f"  tls: {{prober: tcp, tcp: {{tls: true, tls_config: {{ca_file: {ca}}}}}}}\n")
    path = tmp_path / "outage.yml"
    path.write_text(text)
    rt = Runtime(str(path), resolv_conf=str(tmp_path / "none"))
    rt.config = rt.load()
    region = rt.region_named(None)
    token.unlink()
    ca.unlink()
    with socket.create_server(("127.0.0.1", 0)) as listener:  # connects complete from the backlog
        port = listener.getsockname()[1]
        for module, target in (("bearer", f"http://127.0.0.1:{port}/"), ("tls", f"127.0.0.1:{port}")):
            check = rt.adhoc_check(rt.config.modules[module], target, region=region, timeout=2.0)
            result = await run_guarded(PROBERS[check.prober], check)
            assert result.reason == r.CONFIG_FILE_UNREADABLE, (module, result.log)


async def test_config_file_gauge_follows_the_files(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    path = tmp_path / "outage.yml"
    path.write_text(GOOD.replace("modules: {tcp: {prober: tcp}}",
                                 f"modules: {{tcp: {{prober: tcp}}, web: {{prober: http, http: "
                                 f"{{bearer_token_file: {token}}}}}}}"))
    rt = Runtime(str(path), resolv_conf=str(tmp_path / "none"))
    await rt.start()
    try:
        gauge = f'outage_exporter_config_file_unreadable{{file="{token}",module="web"}}'
        assert f"{gauge} 0.0" in rt.self_metrics.render().decode()
        token.unlink()
        await rt.check_config_files()
        assert f"{gauge} 1.0" in rt.self_metrics.render().decode()
    finally:
        await rt.stop()


# --- Reload off the event loop ----------------------------------------------------------------------------
async def test_reload_parses_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "outage.yml"
    path.write_text(GOOD)
    rt = Runtime(str(path), resolv_conf=str(tmp_path / "none"))
    await rt.start()
    release = threading.Event()
    real_load = load_config

    def slow_load(*args, **kwargs):
        assert release.wait(10), "the event loop never ran while the config was loading"
        return real_load(*args, **kwargs)

    monkeypatch.setattr("exporter.runtime.load_config", slow_load)
    try:
        reload = asyncio.create_task(rt.reload())
        await asyncio.sleep(0.05)  # the loop keeps running while the load waits
        assert not reload.done()
        release.set()
        assert await asyncio.wait_for(reload, 10) == (True, "config unchanged")
    finally:
        await rt.stop()


@pytest.mark.parametrize("bad", ["fifo", "dev-zero", "oversized"])
def test_reload_onto_a_bad_path_keeps_serving(tmp_path: Path, bad: str, yaml_loader: str) -> None:
    if yaml_loader != "python":
        pytest.skip("a subprocess: once is enough")
    path = tmp_path / "outage.yml"
    path.write_text(GOOD)
    with ExporterProcess(path, args=("--config.max-size", "64KiB")) as exporter:
        exporter.wait_all_ran()
        path.unlink()
        if bad == "fifo":
            os.mkfifo(path)
        elif bad == "dev-zero":
            path.symlink_to("/dev/zero")
        else:
            path.write_bytes(b"#" * (65 * 1024))
        reply = exporter.post("/-/reload", timeout=10)
        assert reply.status == 500 and f"cannot read config file {path}" in reply.text
        exporter.signal(signal.SIGHUP)
        assert exporter.get("/-/healthy", timeout=5).status == 200
        metrics = exporter.get("/metrics", timeout=5).text
        assert "outage_exporter_config_last_reload_successful 0.0" in metrics
        assert re.search(r"^outage_exporter_scheduled_checks 1(\.0)?$", metrics, re.MULTILINE)
        assert "Traceback" not in exporter.logs()
