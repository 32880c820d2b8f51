"""The command line as users run it: a real ``python -m exporter`` process per test, local peers only."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from exporter import __version__
from exporter.lab.dnsserver import DNSServer
from tests.helpers.configfiles import blackbox_yml
from tests.helpers.exporter_proc import ExporterProcess
from tests.servers.dns import start_dns
from tests.servers.http import Site

ROOT = Path(__file__).resolve().parents[1]
TESTDATA = ROOT / "tests" / "testdata"


@dataclass
class Ran:
    code: int
    out: str
    err: str


def run(*args: str, timeout: float = 30) -> Ran:
    proc = subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, check=False)
    return Ran(proc.returncode, proc.stdout, proc.stderr)


async def arun(*args: str, timeout: float = 30) -> Ran:
    """:func:`run` without blocking the event loop that serves the local peers."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "exporter", *args, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


def services_config(path: Path, *, http_target: str = "http://127.0.0.1:1/", dns_server: str = "127.0.0.1:1",
                    remote_dns: str = "127.0.0.1:1", module: str = "http_2xx") -> Path:
    path.write_text(textwrap.dedent(f"""
        defaults: {{interval: 300ms, timeout: 250ms}}
        modules:
          http_2xx: {{prober: http, timeout: 3s}}
          dns_www: {{prober: dns, timeout: 2s, dns: {{query_name: www.test, query_type: A}}}}
          dns_nx: {{prober: dns, timeout: 2s, dns: {{query_name: nx.test, query_type: A}}}}
          dns_any: {{prober: dns, timeout: 2s}}
        regions:
          - {{name: lab, resolvers: ["{dns_server}"]}}
          - {{name: remote, resolvers: ["{remote_dns}"]}}
        services:
          - name: shop
            checks:
              - {{name: home, module: {module}, target: "{http_target}"}}
              - {{name: dns, module: dns_www, regions: [lab]}}
    """))
    return path


# --- --config.check -------------------------------------------------------------------------------------------
def test_config_check_accepts_a_blackbox_config(tmp_path: Path) -> None:
    path = blackbox_yml(tmp_path)
    ran = run("--config.check", "--config.file", str(path))
    assert ran.code == 0, ran.err
    assert ran.out == f"{path}: OK: 15 modules, 1 region, 0 services, 0 scheduled checks\n"


def test_config_check_accepts_a_services_config(tmp_path: Path) -> None:
    path = services_config(tmp_path / "outage.yml")
    ran = run("--config.check", "--config.file", str(path))
    assert ran.code == 0, ran.err
    assert ran.out == f"{path}: OK: 4 modules, 2 regions, 1 service, 3 scheduled checks\n"
    assert ran.err == ""


def test_config_check_with_region_counts_that_regions_checks(tmp_path: Path) -> None:
    path = services_config(tmp_path / "outage.yml")
    assert run("--config.check", "--region", "remote", "--config.file", str(path)).out.endswith(
        ", 1 scheduled check\n")
    ran = run("--config.check", "--region", "mars", "--config.file", str(path))
    assert ran.code == 1
    assert ran.err == f"{path}: regions: --region 'mars' is not a configured region (known: lab, remote)\n"


def test_config_check_names_the_yaml_path_of_an_error(tmp_path: Path) -> None:
    path = services_config(tmp_path / "outage.yml", module="http_3xx")
    ran = run("--config.check", "--config.file", str(path))
    assert ran.code == 1
    assert ran.out == ""
    assert ran.err.startswith(f'{path}: services[0].checks[0].module: unknown module "http_3xx" (known: ')


def test_config_check_on_the_invalid_testdata() -> None:
    path = TESTDATA / "invalid-unknown-module.yml"
    ran = run("--config.check", "--config.file", str(path))
    assert ran.code == 1
    assert ran.err == (f'{path}: services[2].checks[0].module: unknown module "http_3xx" '
                       "(known: dns_soa, http_2xx)\n")


def test_config_check_on_a_missing_file(tmp_path: Path) -> None:
    ran = run("--config.check", "--config.file", str(tmp_path / "nope.yml"))
    assert ran.code == 1
    assert "cannot read config file" in ran.err and "No such file or directory" in ran.err


def test_startup_with_an_invalid_config_exits_1_naming_the_path(tmp_path: Path) -> None:
    path = services_config(tmp_path / "outage.yml", module="http_3xx")
    ran = run("--config.file", str(path), "--web.listen-address", "127.0.0.1:0")
    assert ran.code == 1
    assert "outage-exporter: config error: services[0].checks[0].module: unknown module" in ran.err
    assert "Traceback" not in ran.err


# --- flags ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("address", ["bogus", "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:http"])
def test_bad_listen_address_is_a_usage_error(tmp_path: Path, address: str) -> None:
    ran = run("--config.file", str(services_config(tmp_path / "c.yml")), "--web.listen-address", address)
    assert ran.code == 2
    assert f"invalid listen address '{address}' (expected host:port or :port)" in ran.err


def test_listen_address_in_use_is_reported_without_traceback(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        ran = run("--config.file", str(services_config(tmp_path / "c.yml")),
                  "--web.listen-address", f"127.0.0.1:{port}")
    finally:
        busy.close()
    assert ran.code == 1
    assert f'msg="cannot listen" address=127.0.0.1:{port}' in ran.err
    assert "address already in use" in ran.err
    assert "Traceback" not in ran.err


def test_version() -> None:
    ran = run("--version")
    assert (ran.code, ran.out) == (0, f"outage-exporter {__version__}\n")


def test_log_format_json_emits_json_lines(tmp_path: Path) -> None:
    exporter = ExporterProcess(services_config(tmp_path / "c.yml"), args=("--log.format", "json"))
    with exporter:
        exporter.wait_all_ran()
        exporter.stop()
        lines = exporter.logs().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON document
    assert [r["msg"] for r in records] == ["started", "listening", "shutting down"]
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    assert records[1]["address"] == exporter.address
    assert records[0]["checks"] == 3 and records[0]["level"] == "info"


def test_log_level_filters(tmp_path: Path) -> None:
    exporter = ExporterProcess(services_config(tmp_path / "c.yml"), args=("--log.level", "warn"))
    with exporter:
        exporter.stop()
        assert exporter.logs() == ""


# --- probe ----------------------------------------------------------------------------------------------------
@pytest.fixture
async def dns() -> AsyncIterator[DNSServer]:
    server = await start_dns({"www.test.": {"A": ["127.0.0.1"]}}, {"nx.test.": "nxdomain"})
    yield server
    await server.stop()


@pytest.fixture
async def broken_dns() -> AsyncIterator[DNSServer]:
    server = await start_dns({}, {"www.test.": "servfail"})
    yield server
    await server.stop()


async def test_probe_success_prints_verdict_timings_and_log(tmp_path: Path, site: Site) -> None:
    config = services_config(tmp_path / "c.yml")
    ran = await arun("probe", "--module", "http_2xx", "--target", site.url("/"), "--config.file", str(config))
    assert ran.code == 0, ran.err
    lines = ran.out.splitlines()
    assert re.fullmatch(rf"SUCCESS: http probe of {re.escape(site.url('/'))} from region lab in \d+\.\d ms",
                        lines[0])
    assert re.fullmatch(r"phases: connect \d+\.\d ms, processing \d+\.\d ms, transfer \d+\.\d ms", lines[1])
    assert lines[2].startswith("details: ") and "http_status_code=200" in lines[2]
    assert lines[3] == "log:"
    assert any("received HTTP/1.1 200" in line for line in lines[4:])
    assert ran.err == ""


async def test_probe_failure_prints_reason_and_exits_1(tmp_path: Path, site: Site) -> None:
    config = services_config(tmp_path / "c.yml")
    ran = await arun("probe", "--module", "http_2xx", "--target", site.url("/status/503"),
                     "--config.file", str(config))
    assert ran.code == 1
    assert ran.out.startswith(f"FAILURE (http_status): http probe of {site.url('/status/503')} from region lab in ")
    assert "http_status_code=503" in ran.out
    assert ran.err == ""


async def test_probe_hostname_and_region(tmp_path: Path, site: Site, dns: DNSServer, broken_dns: DNSServer) -> None:
    config = services_config(tmp_path / "c.yml", dns_server=dns.address, remote_dns=broken_dns.address)
    target = site.url("/", host="www.test")
    ran = await arun("probe", "--module", "http_2xx", "--target", target, "--region", "lab",
                     "--hostname", "vhost.test", "--config.file", str(config))
    assert ran.code == 0, ran.out + ran.err
    assert "phases: resolve " in ran.out
    assert site.seen[-1].headers["host"] == "vhost.test"
    ran = await arun("probe", "--module", "http_2xx", "--target", target, "--region", "remote",
                     "--config.file", str(config))
    assert ran.code == 1
    assert ran.out.startswith("FAILURE (dns_servfail): http probe of ")  # asked remote's resolver
    assert broken_dns.queries == 1


async def test_probe_dns_verdicts(tmp_path: Path, dns: DNSServer) -> None:
    config = services_config(tmp_path / "c.yml")
    ok = await arun("probe", "--module", "dns_www", "--target", dns.address, "--config.file", str(config))
    assert ok.code == 0, ok.out + ok.err
    assert ok.out.startswith(f"SUCCESS: dns probe of www.test via {dns.address} from region lab in ")
    nx = await arun("probe", "--module", "dns_nx", "--target", dns.address, "--config.file", str(config))
    assert nx.code == 1
    assert nx.out.startswith(f"FAILURE (dns_nxdomain): dns probe of nx.test via {dns.address}")


async def test_probe_timeout_flag(tmp_path: Path, site: Site) -> None:
    config = services_config(tmp_path / "c.yml")
    ran = await arun("probe", "--module", "http_2xx", "--target", site.url("/slow-first-byte?delay=5"),
                     "--timeout", "0.5", "--config.file", str(config))
    assert ran.code == 1
    match = re.match(r"FAILURE \(timeout\): .* in (\d+\.\d) ms", ran.out)
    assert match and 450 <= float(match.group(1)) < 1000, ran.out


@pytest.mark.parametrize(("args", "message"), [
    (("--module", "nope", "--target", "x"), "unknown module 'nope' (known: dns_any, dns_nx, dns_www, http_2xx)"),
    (("--module", "http_2xx", "--target", "x", "--region", "mars"),
     "regions: --region 'mars' is not a configured region (known: lab, remote)"),
    (("--module", "dns_www", "--target", "ns1.test:abc"), "invalid target 'ns1.test:abc': invalid port"),
    (("--module", "dns_any", "--target", "127.0.0.1"), "module 'dns_any' has no dns.query_name"),
])
def test_probe_usage_errors_exit_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    ran = run("probe", *args, "--config.file", str(services_config(tmp_path / "c.yml")))
    assert ran.code == 2
    assert message in ran.err
    assert ran.out == ""


def test_probe_with_an_invalid_config_exits_2(tmp_path: Path) -> None:
    path = services_config(tmp_path / "c.yml", module="http_3xx")
    ran = run("probe", "--module", "http_2xx", "--target", "x", "--config.file", str(path))
    assert ran.code == 2
    assert "config error: services[0].checks[0].module: unknown module" in ran.err
