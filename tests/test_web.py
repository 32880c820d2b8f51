"""The HTTP surface, in process: /probe (blackbox semantics), the landing page, /config, /metrics, reloads.

Each test runs a real Runtime (scheduler included) behind the aiohttp app, against local peers only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from exporter.runtime import Runtime
from exporter.web.app import make_app
from tests.helpers.contract import parse_exposition
from tests.helpers.text import sample, write
from tests.servers.dns import start_dns
from tests.servers.http import Site, closed_port, make_pki, start_http

SECRETS = ("tok-very-secret-123", "pa55-very-secret", "hdr-very-secret")


@dataclass
class Served:
    runtime: Runtime
    client: TestClient
    config_path: Path

    async def text(self, path: str, **kw: object) -> tuple[int, str]:
        resp = await self.client.get(path, **kw)
        return resp.status, await resp.text()

    async def metrics(self) -> str:
        resp = await self.client.get("/metrics")
        assert resp.status == 200
        return await resp.text()


@asynccontextmanager
async def serve(config_path: Path, **runtime_kw: object) -> AsyncIterator[Served]:
    runtime = Runtime(str(config_path), **runtime_kw)  # type: ignore[arg-type]
    await runtime.start()
    client = TestClient(TestServer(make_app(runtime)))
    await client.start_server()
    try:
        yield Served(runtime, client, config_path)
    finally:
        await client.close()
        await runtime.stop()


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


def all_ran(runtime: Runtime, at_least: int = 1) -> Callable[[], bool]:
    def check() -> bool:
        states = list(runtime.store.states())
        return bool(states) and all(s.runs >= at_least for s in states)

    return check


# --- fixtures ----------------------------------------------------------------------------------------------
@pytest.fixture
def modules_file(tmp_path: Path, site: Site) -> Path:
    """Modules (and one idle region) for /probe tests: nothing is scheduled."""
    return write(tmp_path / "modules.yml", f"""
        modules:
          http_2xx:
            prober: http
            timeout: 5s
          http_secret:
            prober: http
            http:
              bearer_token: "{SECRETS[0]}"
              headers:
                X-Api-Token: "{SECRETS[2]}"
          http_basic:
            prober: http
            http:
              basic_auth: {{username: prober, password: "{SECRETS[1]}"}}
          dns_noname:
            prober: dns
        regions:
          - name: lab
            resolvers: ["127.0.0.1:1"]
          - name: other
            resolvers: ["127.0.0.1:2"]
    """)


# --- health endpoints and /metrics --------------------------------------------------------------------------
async def test_health_ready_and_metrics(modules_file: Path) -> None:
    async with serve(modules_file) as s:
        assert await s.text("/-/healthy") == (200, "Healthy\n")
        assert await s.text("/-/ready") == (200, "Ready\n")
        resp = await s.client.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        body = await resp.text()
        assert sample(body, "outage_exporter_config_last_reload_successful") == 1
        assert sample(body, "outage_exporter_scheduled_checks") == 0
        status, page = await s.text("/")  # a modules-only config: no grid rows, still a page
        assert status == 200
        assert "<th>lab</th><th>other</th></tr></table>" in page
        assert "<h2>Recent failed probes</h2><p>None.</p>" in page
    assert not s.runtime.ready


# --- /probe ---------------------------------------------------------------------------------------------------
async def test_probe_unknown_module_is_400(modules_file: Path, site: Site) -> None:
    async with serve(modules_file) as s:
        status, body = await s.text("/probe", params={"module": "nope", "target": site.url()})
        assert (status, body) == (400, 'Unknown module "nope"\n')


async def test_probe_missing_target_is_400(modules_file: Path) -> None:
    async with serve(modules_file) as s:
        assert await s.text("/probe", params={"module": "http_2xx"}) == (400, "Target parameter is missing\n")
        assert (await s.text("/probe?module=http_2xx&target="))[0] == 400


async def test_probe_dns_module_without_query_name_is_400(modules_file: Path) -> None:
    async with serve(modules_file) as s:
        status, body = await s.text("/probe", params={"module": "dns_noname", "target": "127.0.0.1"})
        assert status == 400
        assert "dns.query_name" in body


async def test_probe_unknown_region_is_400(modules_file: Path, site: Site) -> None:
    async with serve(modules_file) as s:
        status, body = await s.text("/probe", params={"target": site.url(), "region": "mars"})
        assert status == 400
        assert body == 'Unknown region "mars" (known: lab, other)\n'


async def test_probe_defaults_to_http_2xx(modules_file: Path, site: Site) -> None:
    async with serve(modules_file) as s:
        resp = await s.client.get("/probe", params={"target": site.url("/status/204")})
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        body = await resp.text()
        assert sample(body, "probe_success") == 1
        assert sample(body, "probe_http_status_code") == 204
        assert sample(await s.metrics(), "outage_exporter_probe_endpoint_requests_total", module="http_2xx") == 1


async def test_failed_probe_is_still_http_200(modules_file: Path) -> None:
    sock = closed_port()
    try:
        async with serve(modules_file) as s:
            port = sock.getsockname()[1]
            status, body = await s.text("/probe", params={"module": "http_2xx", "target": f"127.0.0.1:{port}"})
    finally:
        sock.close()
    assert status == 200
    assert sample(body, "probe_success") == 0
    assert sample(body, "outage_probe_failure_info", reason="conn_refused") == 1
    assert sample(body, "probe_http_status_code") == 0
    assert 'service="' not in body  # /probe has no scheduled check, hence no identity labels


async def test_probe_http_503_reports_status_and_reason(modules_file: Path, site: Site) -> None:
    async with serve(modules_file) as s:
        status, body = await s.text("/probe", params={"module": "http_2xx", "target": site.url("/status/503")})
    assert status == 200
    assert sample(body, "probe_success") == 0
    assert sample(body, "probe_http_status_code") == 503
    assert sample(body, "outage_probe_failure_info", reason="http_status") == 1


@pytest.mark.parametrize("module", ["http_secret", "http_basic"])
async def test_probe_debug_shows_logs_metrics_and_masked_module(modules_file: Path, site: Site,
                                                               module: str) -> None:
    async with serve(modules_file) as s:
        resp = await s.client.get("/probe", params={"module": module, "target": site.url("/status/503"),
                                                    "debug": "true"})
        body = await resp.text()
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    logs, _, rest = body.partition("\n\nResult: ")
    assert logs.startswith("Logs for the probe:\n")
    assert "GET " + site.url("/status/503") in logs
    assert rest.startswith("failure: http_status")
    metrics, _, module_yaml = rest.partition("\n\nModule configuration:\n")
    assert "Metrics that would have been returned:\n" in metrics
    assert "probe_http_status_code 503" in metrics
    assert f"  {module}:\n" in module_yaml
    assert "<secret>" in module_yaml
    assert "services:" not in module_yaml
    for secret in SECRETS:
        assert secret not in body
    # the secrets were configured, and sent: only the debug output hides them
    assert site.seen[-1].headers["authorization"].startswith("Bearer " if module == "http_secret" else "Basic ")


async def test_probe_hostname_sets_host_header_and_sni(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    server_names: list[str | None] = []
    ctx = pki.server_context(pki.valid)
    ctx.sni_callback = lambda sslobj, name, context: server_names.append(name)
    tls_site = await start_http(ssl_context=ctx)
    config = write(tmp_path / "tls.yml", f"""
        modules:
          https_ca:
            prober: http
            timeout: 5s
            http:
              fail_if_not_ssl: true
              tls_config: {{ca_file: "{pki.ca_file}"}}
        regions: [{{name: lab, resolvers: ["127.0.0.1:1"]}}]
    """)
    try:
        async with serve(config) as s:
            status, body = await s.text("/probe", params={"module": "https_ca", "target": tls_site.url("/"),
                                                          "hostname": "www.test"})
    finally:
        await tls_site.stop()
    assert status == 200
    assert sample(body, "probe_success") == 1, body
    assert sample(body, "probe_http_ssl") == 1
    assert tls_site.seen[-1].headers["host"] == "www.test"
    assert server_names == ["www.test"]


async def test_probe_hostname_mismatching_certificate_fails_tls(tmp_path: Path) -> None:
    """SNI really drives verification: a name the certificate does not cover fails as a TLS problem."""
    pki = make_pki(tmp_path)
    tls_site = await start_http(ssl_context=pki.server_context(pki.valid))
    config = write(tmp_path / "tls.yml", f"""
        modules:
          https_ca: {{prober: http, timeout: 5s, http: {{tls_config: {{ca_file: "{pki.ca_file}"}}}}}}
        regions: [{{name: lab, resolvers: ["127.0.0.1:1"]}}]
    """)
    try:
        async with serve(config) as s:
            _, body = await s.text("/probe", params={"module": "https_ca", "target": tls_site.url("/"),
                                                     "hostname": "elsewhere.example"})
    finally:
        await tls_site.stop()
    assert sample(body, "probe_success") == 0
    assert sample(body, "outage_probe_failure_info", reason="tls_cert_invalid") == 1


async def test_scrape_timeout_header_caps_probe_timeout(modules_file: Path, site: Site) -> None:
    async with serve(modules_file) as s:
        started = time.monotonic()
        status, body = await s.text(
            "/probe", params={"module": "http_2xx", "target": site.url("/slow-first-byte?delay=5")},
            headers={"X-Prometheus-Scrape-Timeout-Seconds": "1.5"})
        elapsed = time.monotonic() - started
    assert status == 200
    assert 0.9 <= elapsed < 1.45, elapsed  # 1.5 s minus the 0.5 s offset, not the module's 5 s
    assert sample(body, "probe_success") == 0
    assert sample(body, "outage_probe_failure_info", reason="timeout") == 1
    duration = sample(body, "probe_duration_seconds")
    assert duration is not None and 0.9 <= duration < 1.3


async def test_scrape_timeout_header_longer_than_module_timeout_keeps_module_timeout(
        tmp_path: Path, site: Site) -> None:
    config = write(tmp_path / "short.yml", """
        modules:
          http_short: {prober: http, timeout: 500ms}
        regions: [{name: lab, resolvers: ["127.0.0.1:1"]}]
    """)
    async with serve(config) as s:
        started = time.monotonic()
        _, body = await s.text(
            "/probe", params={"module": "http_short", "target": site.url("/slow-first-byte?delay=5")},
            headers={"X-Prometheus-Scrape-Timeout-Seconds": "10"})
        elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 0.95, elapsed
    assert sample(body, "probe_success") == 0


async def test_probe_region_selects_that_regions_resolvers(tmp_path: Path, site: Site) -> None:
    good = await start_dns({"www.test.": {"A": ["127.0.0.1"]}})
    failing = await start_dns({}, {"www.test.": "servfail"})
    config = write(tmp_path / "regions.yml", f"""
        modules:
          http_2xx: {{prober: http, timeout: 3s}}
        regions:
          - name: healthy
            resolvers: ["{good.address}"]
          - name: broken
            resolvers: ["{failing.address}"]
    """)
    target = site.url("/", host="www.test")
    try:
        async with serve(config) as s:
            _, ok_body = await s.text("/probe", params={"target": target, "region": "healthy"})
            assert (good.queries, failing.queries) == (1, 0)
            _, bad_body = await s.text("/probe", params={"target": target, "region": "broken"})
            assert (good.queries, failing.queries) == (1, 1)
            _, default_body = await s.text("/probe", params={"target": target})  # the first region
            assert (good.queries, failing.queries) == (2, 1)
    finally:
        await good.stop()
        await failing.stop()
    assert sample(ok_body, "probe_success") == 1
    assert sample(ok_body, "probe_dns_lookup_time_seconds") is not None
    assert sample(bad_body, "probe_success") == 0
    assert sample(bad_body, "outage_probe_failure_info", reason="dns_servfail") == 1
    assert sample(default_body, "probe_success") == 1


# --- scheduled checks: landing page, /config ---------------------------------------------------------------
@pytest.fixture
def services_file(tmp_path: Path, site: Site) -> Path:
    return write(tmp_path / "services.yml", f"""
        defaults: {{interval: 300ms, timeout: 250ms}}
        modules:
          http_2xx:
            prober: http
            http:
              headers: {{Authorization: "Bearer {SECRETS[0]}"}}
        regions:
          - {{name: eu-west, display_name: "Europe West", resolvers: ["127.0.0.1:1"]}}
          - {{name: us-east, resolvers: ["127.0.0.1:2"]}}
        services:
          - name: shop
            provider: acme
            checks: [{{name: home, module: http_2xx, target: "{site.url('/')}"}}]
          - name: api
            provider: acme
            checks: [{{name: health, module: http_2xx, target: "{site.url('/status/503')}"}}]
          - name: mixed
            checks:
              - {{name: ok, module: http_2xx, target: "{site.url('/status/200')}", regions: [eu-west]}}
              - name: broken
                module: http_2xx
                target: "http://user@{site.host}:{site.port}/status/500"
                regions: [eu-west]
          - name: control-site
            checks: [{{name: home, module: http_2xx, target: "{site.url('/')}", control: true}}]
    """)


def _rows(page: str) -> dict[str, str]:
    """The landing page's grid rows by their first cell (the service)."""
    return {row.split("</td>", 1)[0]: row for row in page.split("<tr><td>")[1:]}


async def _landing_after_first_runs(s, services: tuple[str, ...]) -> tuple[int, str]:
    """GET / once every check has run and the page shows it: the page reads a snapshot that may predate
    the first runs by a moment (it is reused for a few seconds)."""
    await eventually(all_ran(s.runtime))
    deadline = time.monotonic() + 10.0
    while True:
        status, page = await s.text("/")
        rows = _rows(page)
        if all("nodata" not in rows.get(name, "nodata") for name in services) or time.monotonic() > deadline:
            return status, page
        await asyncio.sleep(0.1)


async def test_landing_page_grid_and_recent_failures(services_file: Path) -> None:
    async with serve(services_file) as s:
        status, page = await _landing_after_first_runs(s, ("shop", "api", "mixed"))
    assert status == 200
    assert page.startswith("<!doctype html>")
    assert "<th>Europe West</th><th>us-east</th>" in page
    rows = _rows(page)
    assert set(rows) == {"shop", "api", "mixed", "control-site"}
    assert rows["shop"].count("<b>up</b>") == 2
    assert rows["api"].count("<b>down</b>") == 2
    assert "HTTP 503" in rows["api"]
    assert rows["mixed"].count("<b>down</b>") == 1  # one failing check is a failing signal, as in the rules
    assert "HTTP 500" in rows["mixed"]
    assert "</div></td><td></td></tr>" in rows["mixed"]  # no check of "mixed" runs in us-east
    assert page.index("controls (judge the vantage itself)") < page.index("<tr><td>control-site")
    failures = page.split("<h2>Recent failed probes</h2>", 1)[1]
    assert "api / eu-west / health" in failures and "api / us-east / health" in failures
    assert "http_status" in failures and "<pre>" in failures and "503" in failures
    for secret in SECRETS:
        assert secret not in page


async def test_landing_page_places_checks_when_the_region_label_is_left_to_the_agent(
        services_file: Path) -> None:
    """With --region.omit-label the series carry region "", but the grid still shows the exporter's region."""
    async with serve(services_file, region="us-east", omit_region_label=True) as s:
        status, page = await _landing_after_first_runs(s, ("shop", "api"))
        _, metrics = await s.text("/metrics")
    rows = _rows(page)
    assert status == 200
    assert "<th>us-east</th>" in page and "Europe West" not in page
    assert rows["shop"].count("<b>up</b>") == 1
    assert rows["api"].count("<b>down</b>") == 1
    assert 'region="us-east"' not in metrics and 'region=""' in metrics


async def test_config_page_masks_secrets(services_file: Path) -> None:
    async with serve(services_file) as s:
        resp = await s.client.get("/config")
        body = await resp.text()
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert f"# Effective configuration from {services_file}" in body
    assert "Authorization: <secret>" in body
    assert "http://user@127.0.0.1" in body  # a password in a target is refused at load (config tests)
    assert "name: shop" in body and "display_name: Europe West" in body
    for secret in SECRETS:
        assert secret not in body


async def test_metrics_carry_scheduled_results(services_file: Path) -> None:
    async with serve(services_file) as s:
        await eventually(all_ran(s.runtime))
        body = await s.metrics()
    families = parse_exposition(body)
    assert sample(body, "outage_exporter_scheduled_checks") == 8
    assert sample(body, "probe_success", service="shop", region="us-east") == 1
    assert sample(body, "probe_success", service="api", region="eu-west") == 0
    assert sample(body, "outage_probe_failure_info", service="api", region="eu-west", reason="http_status") == 1
    assert sample(body, "outage_probe_check_info", service="control-site", control="true") == 1
    assert {"service", "region", "reason"} <= set().union(*families["outage_probe_failures_total"].label_sets)


# --- /-/reload ------------------------------------------------------------------------------------------------
def one_service(site: Site, *, extra: str = "", module: str = "http_2xx") -> str:
    return f"""
        defaults: {{interval: 200ms, timeout: 150ms}}
        modules:
          http_2xx: {{prober: http}}
        regions: [{{name: lab, resolvers: ["127.0.0.1:1"]}}]
        services:
          - name: shop
            checks:
              - name: home
                module: {module}
                target: "{site.url('/')}"
        {extra}
    """


SECOND_SERVICE = """
          - name: api
            checks: [{name: health, module: http_2xx, target: "http://127.0.0.1:1/"}]
"""


async def test_reload_requires_post(tmp_path: Path, site: Site) -> None:
    async with serve(write(tmp_path / "c.yml", one_service(site))) as s:
        resp = await s.client.get("/-/reload")
        assert resp.status == 405


async def test_reload_good_file_schedules_new_checks(tmp_path: Path, site: Site) -> None:
    path = write(tmp_path / "c.yml", one_service(site))
    async with serve(path) as s:
        await eventually(all_ran(s.runtime))
        resp = await s.client.post("/-/reload")
        assert (resp.status, await resp.text()) == (200, "config unchanged\n")
        write(path, one_service(site) + SECOND_SERVICE)
        resp = await s.client.post("/-/reload")
        assert (resp.status, await resp.text()) == (200, "config reloaded\n")
        assert s.runtime.scheduler is not None and s.runtime.scheduler.checks == 2
        await eventually(all_ran(s.runtime))
        body = await s.metrics()
    assert sample(body, "outage_exporter_scheduled_checks") == 2
    assert sample(body, "probe_success", service="api") == 0
    assert sample(body, "outage_exporter_config_last_reload_successful") == 1
    assert sample(body, "outage_exporter_config_reloads_total") == 3  # startup, unchanged, changed


async def test_reload_bad_file_keeps_old_checks_until_fixed(tmp_path: Path, site: Site) -> None:
    path = write(tmp_path / "c.yml", one_service(site))
    async with serve(path) as s:
        await eventually(all_ran(s.runtime))
        write(path, one_service(site, module="http_3xx"))
        resp = await s.client.post("/-/reload")
        message = await resp.text()
        assert resp.status == 500
        assert message.startswith("failed to reload config: services[0].checks[0].module: unknown module")
        body = await s.metrics()
        assert sample(body, "outage_exporter_config_last_reload_successful") == 0
        assert sample(body, "outage_exporter_config_reload_failures_total") == 1
        _, page = await s.text("/")
        assert "Last config reload failed" in page and "services[0].checks[0].module" in page
        # the last good config keeps probing
        state = s.runtime.store.get(s.runtime.checks[0].key)
        assert state is not None
        runs = state.runs
        await eventually(lambda: state.runs >= runs + 2)
        assert s.runtime.checks[0].target == site.url("/")

        write(path, one_service(site) + SECOND_SERVICE)
        resp = await s.client.post("/-/reload")
        assert resp.status == 200
        body = await s.metrics()
        assert sample(body, "outage_exporter_config_last_reload_successful") == 1
        assert sample(body, "outage_exporter_scheduled_checks") == 2
        _, page = await s.text("/")
        assert "Last config reload failed" not in page


async def test_counters_of_unchanged_checks_survive_reload(tmp_path: Path, site: Site) -> None:
    path = write(tmp_path / "c.yml", one_service(site) + SECOND_SERVICE)
    async with serve(path) as s:
        await eventually(all_ran(s.runtime, at_least=2))
        before = await s.metrics()
        kept = sample(before, "outage_probe_runs_total", service="shop")
        assert kept is not None and kept >= 2
        # change the second service's target: same service/check names, new identity
        write(path, one_service(site) + SECOND_SERVICE.replace("127.0.0.1:1/", "127.0.0.1:2/"))
        resp = await s.client.post("/-/reload")
        assert resp.status == 200
        after = await s.metrics()
    assert sample(after, "outage_probe_runs_total", service="shop") >= kept  # type: ignore[operator]
    # the new identity counts from zero: at most the one run it may have had while the reload finished
    assert sample(after, "outage_probe_runs_total", service="api", target="http://127.0.0.1:2/") in (0, 1)
    assert sample(after, "outage_probe_runs_total", target="http://127.0.0.1:1/") is None
    assert sample(after, "outage_probe_failures_total", target="http://127.0.0.1:1/") is None


async def test_landing_page_escapes_html(tmp_path: Path, site: Site) -> None:
    """Names and probe logs are untrusted text on the page."""
    path = write(tmp_path / "c.yml", f"""
        defaults: {{interval: 200ms, timeout: 150ms}}
        modules: {{http_2xx: {{prober: http}}}}
        regions: [{{name: lab, display_name: "<i>lab</i>", resolvers: ["127.0.0.1:1"]}}]
        services:
          - name: shop
            checks: [{{name: home, module: http_2xx, target: "{site.url('/status/500?<script>')}"}}]
    """)
    async with serve(path) as s:
        await eventually(all_ran(s.runtime))
        _, page = await s.text("/")
    assert page.count("<script>") == 1 and "?<script>" not in page and "<i>lab</i>" not in page  # ours only
    assert "&lt;i&gt;lab&lt;/i&gt;" in page

