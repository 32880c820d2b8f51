"""What a new user meets first: --help, `probe` for a DNS module without a name, /probe?debug=true, the log
timestamps, a reload that recovers, and the demo refusing a busy port before it prints a URL."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from exporter import logs
from exporter.lab.demo import load, run_demo
from exporter.lab.dnsserver import DNSServer
from exporter.runtime import Runtime
from tests.helpers.probeweb import serve
from tests.helpers.text import write
from tests.servers.dns import start_dns
from tests.servers.http import Site
from tests.test_cli import arun, run, services_config


@pytest.fixture
async def dns() -> AsyncIterator[DNSServer]:
    server = await start_dns({"www.test.": {"A": ["127.0.0.1"], "TXT": ["hello"]}})
    yield server
    await server.stop()


# --- --help -----------------------------------------------------------------------------------------------
def test_help_lists_the_probe_and_demo_subcommands() -> None:
    ran = run("--help")
    assert ran.code == 0
    assert "{probe,demo}" in ran.out.splitlines()[1]
    sub = ran.out[ran.out.index("subcommands"):]
    assert "\n  probe " in sub and "\n  demo " in sub


# --- probe --query-name / --query-type --------------------------------------------------------------------
async def test_probe_asks_the_given_name_and_type_with_a_module_that_has_none(tmp_path: Path,
                                                                              dns: DNSServer) -> None:
    config = services_config(tmp_path / "c.yml")
    ran = await arun("probe", "--module", "dns_any", "--target", dns.address, "--query-name", "www.test",
                     "--query-type", "txt", "--config.file", str(config))
    assert ran.code == 0, ran.out + ran.err
    assert ran.out.startswith(f"SUCCESS: dns probe of www.test via {dns.address} from region lab in ")
    assert "TXT" in ran.out


async def test_probe_query_type_overrides_the_modules(tmp_path: Path, dns: DNSServer) -> None:
    config = services_config(tmp_path / "c.yml")
    ran = await arun("probe", "--module", "dns_nx", "--target", dns.address, "--query-name", "www.test",
                     "--config.file", str(config))
    assert ran.code == 0, ran.out + ran.err  # dns_nx asks nx.test: the flag's name replaced it
    assert ran.out.startswith("SUCCESS: dns probe of www.test via ")


@pytest.mark.parametrize(("args", "message"), [
    (("--module", "dns_any", "--query-type", "BOGUS", "--query-name", "www.test"),
     '--query-type: unknown DNS query type "BOGUS"'),
    (("--module", "dns_any", "--query-name", "bad..name"), '--query-name: invalid DNS name "bad..name"'),
    (("--module", "http_2xx", "--query-name", "www.test"),
     "--query-name and --query-type apply to dns modules; 'http_2xx' is http"),
    (("--module", "dns_any",), "pass --query-name NAME"),
])
def test_probe_query_flags_usage_errors(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    ran = run("probe", *args, "--target", "127.0.0.1:1", "--config.file", str(services_config(tmp_path / "c.yml")))
    assert ran.code == 2
    assert message in ran.err
    assert ran.out == ""


# --- /probe?debug=true names the region's resolvers ---------------------------------------------------------
@pytest.fixture
def two_regions(tmp_path: Path) -> Path:
    return write(tmp_path / "c.yml", """
        modules:
          http_2xx: {prober: http, timeout: 3s}
          dns_www: {prober: dns, timeout: 2s, dns: {query_name: www.test, query_type: A}}
        regions:
          - {name: lab, resolvers: ["127.0.0.1:1"]}
          - {name: other, resolvers: ["127.0.0.1:2", "127.0.0.1:3"]}
    """)


async def test_probe_debug_says_which_regions_resolvers_it_used(two_regions: Path, site: Site,
                                                                dns: DNSServer) -> None:
    async with serve(two_regions) as client:
        resp = await client.get("/probe", params={"module": "http_2xx", "target": site.url("/"), "debug": "true",
                                                  "region": "other"})
        assert "\nRegion: other (resolvers: 127.0.0.1:2, 127.0.0.1:3)\n" in await resp.text()
        resp = await client.get("/probe", params={"module": "http_2xx", "target": site.url("/"), "debug": "true"})
        assert "\nRegion: lab (resolvers: 127.0.0.1:1)\n" in await resp.text()
        resp = await client.get("/probe", params={"module": "dns_www", "target": dns.address, "debug": "true"})
        assert f"\nRegion: lab (DNS server asked directly: {dns.address})\n" in await resp.text()


# --- logs -----------------------------------------------------------------------------------------------------
def test_logfmt_and_json_lines_carry_the_same_timestamp() -> None:
    record = logging.LogRecord("exporter", logging.INFO, __file__, 1, "started", None, None)
    record.created, record.msecs = 1_700_000_000.25, 250.0
    logfmt = logs.LogfmtFormatter().format(record)
    doc = json.loads(logs.JSONFormatter().format(record))
    assert logfmt.startswith("ts=2023-11-14T22:13:20.250Z ")
    assert doc["ts"] == "2023-11-14T22:13:20.250Z"


# --- a reload that recovers says so ------------------------------------------------------------------------------
GOOD = """
    modules: {http_2xx: {prober: http, timeout: 1s}}
    regions: [{name: lab, resolvers: ["127.0.0.1:1"]}]
    services:
      - name: shop
        checks: [{name: home, module: http_2xx, target: "http://127.0.0.1:1/", interval: 1h}]
"""


@pytest.mark.parametrize("fixed", ["same", "changed"])
async def test_a_reload_after_a_failed_one_logs_the_recovery(tmp_path: Path, fixed: str) -> None:
    stream = io.StringIO()
    logs.setup("info", "logfmt", stream=stream)
    path = write(tmp_path / "c.yml", GOOD)
    rt = Runtime(str(path))
    await rt.start()
    try:
        assert (await rt.reload())[0]
        assert "recovered" not in stream.getvalue()  # a good reload after a good one: nothing to recover from
        write(path, GOOD + "    color: red\n")
        assert not (await rt.reload())[0]
        write(path, GOOD if fixed == "same" else GOOD.replace("interval: 1h", "interval: 2h"))
        assert (await rt.reload())[0]
        assert (await rt.reload())[0]
    finally:
        await rt.stop()
        logging.getLogger().handlers.clear()
    lines = [line for line in stream.getvalue().splitlines() if "recovered" in line]
    assert len(lines) == 1, stream.getvalue()
    assert 'msg="config reload recovered after a failed one"' in lines[0]
    assert "previous_err=" in lines[0] and "color" in lines[0]


# --- the demo refuses a busy port before it prints a URL ---------------------------------------------------------
async def test_demo_refuses_a_busy_port_before_printing_its_url(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code = await run_demo(load("healthy"), 10.0, ("127.0.0.1", port), once=True)
    out = capsys.readouterr().out
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out
    assert "http://" not in out and "landing page" not in out
