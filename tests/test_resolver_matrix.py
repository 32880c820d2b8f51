"""The resolver matrix on schedule: one series per resolver of the region (plain and DNS-over-TLS), with the
answer TTL and the negative-caching TTL that say how long resolvers may keep an answer or a failure."""

from __future__ import annotations

import asyncio
import ssl
import textwrap
import time

import trustme
from prometheus_client.parser import text_string_to_metric_families

from exporter.checks import expand
from exporter.config import load_config_text
from exporter.exposition import render_scheduled
from exporter.probers import PROBERS
from exporter.results import ResultStore
from exporter.scheduler import Scheduler
from tests.servers.dns import start_dns, start_dot

RECORDS = {
    "www.test.": {"A": ["127.0.0.1"]},
    "txt.test.": {"TXT": ['"only text here"']},
    "test.": {"SOA": ["ns1.test. admin.test. 2021100401 3600 600 86400 60"]},
}
TTLS = {"www.test.": {"A": 120}}


async def test_dns_checks_across_plain_and_tls_resolvers_report_ttls(tmp_path):
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    plain = await start_dns(RECORDS, ttls=TTLS)
    dot = await start_dot(RECORDS, ctx, ttls=TTLS)
    config = load_config_text(textwrap.dedent(f"""
        defaults: {{interval: 300ms, timeout: 250ms}}
        modules:
          dns_a: {{prober: dns, dns: {{query_type: A, tls_config: {{ca_file: "{ca_file}"}}}}}}
        regions:
          - {{name: eu, resolvers: ["{plain.address}", "tls://{dot.address}"]}}
        services:
          - name: shop
            checks:
              - {{name: www, module: dns_a, query_name: www.test}}
              - {{name: gone, module: dns_a, query_name: gone.test}}
              - {{name: nodata, module: dns_a, query_name: txt.test}}
    """))
    checks = expand(config)
    store = ResultStore()
    scheduler = Scheduler(store, PROBERS, concurrency=8)
    await scheduler.start(checks)
    try:
        deadline = time.monotonic() + 5
        while not all(state.runs for _, state in store.items()):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        await scheduler.stop()
        await dot.stop()
        await plain.stop()
    text = render_scheduled(store)

    def values(name: str) -> dict[tuple[str, str], float]:
        return {(s.labels["check"], s.labels["resolver"]): s.value
                for f in text_string_to_metric_families(text) for s in f.samples if s.name == name}

    resolvers = (plain.address, f"tls://{dot.address}")
    assert values("probe_success") == {
        (check, resolver): 1.0 if check != "gone" else 0.0
        for check in ("www", "gone", "nodata") for resolver in resolvers}
    assert values("outage_probe_dns_answer_ttl_seconds") == {("www", resolver): 120.0 for resolver in resolvers}
    assert values("outage_probe_dns_negative_ttl_seconds") == {
        (check, resolver): 60.0 for check in ("gone", "nodata") for resolver in resolvers}
    assert values("outage_probe_dns_rcode") == {
        (check, resolver): 3.0 if check == "gone" else 0.0
        for check in ("www", "gone", "nodata") for resolver in resolvers}
    tls = {s.labels["resolver"]: s.labels["version"] for f in text_string_to_metric_families(text)
           for s in f.samples if s.name == "probe_tls_version_info"}
    assert set(tls) == {f"tls://{dot.address}"} and tls[f"tls://{dot.address}"].startswith("TLS")
    assert {k[1] for k in values("probe_ssl_earliest_cert_expiry")} == {f"tls://{dot.address}"}
