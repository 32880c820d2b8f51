"""The metric contract against the real exporter process: every family it emits on /metrics and /probe,
after real probes of local HTTP, HTTPS, DNS and TCP peers, is documented in docs/metrics.md with exactly
its labels, every documented family shows up, and ``promtool check metrics`` has nothing to say."""

from __future__ import annotations

import textwrap
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.contract import contract_problems, documented_but_missing, parse_exposition, parse_metrics_doc
from tests.helpers.exporter_proc import BackgroundLoop, ExporterProcess
from tests.helpers.promtool import promtool_check_metrics
from tests.servers.dns import start_dns
from tests.servers.http import make_pki, start_http

RECORDS = {
    "www.test.": {"A": ["127.0.0.1"]},
    "test.": {"SOA": ["ns1.test. admin.test. 2021100401 3600 600 86400 60"]},
}


# docs/metrics.md sections whose every family this config makes the exporter emit. Features with their own
# config (two-path HTTP, authoritative nameservers) are covered by their own live tests.
COVERED_SECTIONS = ("Check inventory", "Latest result: ", "Counters and histograms", "Vantage health",
                    "Exporter health", "Process and runtime")


@dataclass
class Live:
    metrics: str
    probes: dict[str, str]  # /probe responses by a short name


def config_text(*, http: int, https: int, dns: str, ca_file: str) -> str:
    return textwrap.dedent(f"""
        defaults: {{interval: 500ms, timeout: 400ms}}
        modules:
          http_2xx: {{prober: http, http: {{tls_config: {{ca_file: "{ca_file}"}}}}}}
          http_body:
            prober: http
            http: {{fail_if_body_not_matches_regexp: ["hello"]}}
          dns_a: {{prober: dns, dns: {{query_type: A}}}}
          dns_www: {{prober: dns, dns: {{query_name: www.test, query_type: A, transport_protocol: tcp}}}}
          tcp_tls:
            prober: tcp
            tcp: {{tls: true, tls_config: {{ca_file: "{ca_file}", server_name: www.test}}}}
        regions:
          - {{name: eu-west, resolvers: ["{dns}"]}}
          - {{name: us-east, resolvers: ["{dns}"]}}
          - {{name: isolated, resolvers: ["{dns}"]}}
        services:
          - name: shop
            provider: acme
            checks:
              - {{name: home, module: http_body, target: "http://www.test:{http}/"}}
              - {{name: tls, module: http_2xx, target: "https://www.test:{https}/"}}
              - {{name: moved, module: http_2xx, target: "http://127.0.0.1:{http}/redirect/2"}}
              - {{name: dns, module: dns_a, query_name: www.test}}
              - {{name: port, module: tcp_tls, target: "www.test:{https}"}}
          - name: api
            provider: acme
            checks:
              - {{name: health, module: http_2xx, target: "http://127.0.0.1:{http}/status/503"}}
              - {{name: dns, module: dns_a, query_name: gone.test, targets: ["{dns}"], regions: [us-east]}}
          - name: control
            checks:
              - {{name: home, module: http_2xx, target: "http://127.0.0.1:{http}/", control: true,
                  regions: [eu-west, us-east]}}
              - {{name: uplink, module: http_2xx, target: "http://127.0.0.1:1/", control: true, regions: [isolated]}}
    """)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("contract")
    pki = make_pki(tmp)
    with BackgroundLoop() as bg:
        http = bg.run(start_http())
        https = bg.run(start_http(ssl_context=pki.server_context(pki.valid)))
        dns = bg.run(start_dns(RECORDS))
        path = tmp / "outage.yml"
        path.write_text(config_text(http=http.port, https=https.port, dns=dns.address, ca_file=pki.ca_file))
        # A web config (response headers only) so its reload gauge is part of the live contract too.
        web_config = tmp / "web.yml"
        web_config.write_text("http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n")
        try:
            with ExporterProcess(path, args=("--web.config.file", str(web_config))) as exporter:
                exporter.wait_all_ran(runs=2)

                def probe(module: str, target: str) -> str:
                    reply = exporter.get("/probe?" + urllib.parse.urlencode({"module": module, "target": target}))
                    assert reply.status == 200, reply.text
                    return reply.text

                probes = {
                    "https": probe("http_2xx", f"https://www.test:{https.port}/"),
                    "http_503": probe("http_2xx", f"http://127.0.0.1:{http.port}/status/503"),
                    "body": probe("http_body", f"http://127.0.0.1:{http.port}/redirect-to?url=/"),
                    "dns": probe("dns_www", dns.address),
                    "tcp_tls": probe("tcp_tls", f"127.0.0.1:{https.port}"),
                }
                yield Live(metrics=exporter.metrics(), probes=probes)
        finally:
            bg.run(dns.stop())
            bg.run(https.stop())
            bg.run(http.stop())


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == name]


def test_metrics_keep_the_documented_contract(live: Live) -> None:
    assert contract_problems(live.metrics, parse_metrics_doc()) == []


@pytest.mark.parametrize("name", ["https", "http_503", "body", "dns", "tcp_tls"])
def test_probe_responses_keep_the_documented_contract(live: Live, name: str) -> None:
    assert contract_problems(live.probes[name], parse_metrics_doc(), probe=True) == []


def test_every_documented_family_of_the_covered_sections_is_emitted(live: Live) -> None:
    docs = {name: doc for name, doc in parse_metrics_doc().items() if doc.section.startswith(COVERED_SECTIONS)}
    assert len(docs) > 50
    assert documented_but_missing(docs, [live.metrics, *live.probes.values()]) == set()


def test_promtool_check_metrics_is_clean(live: Live) -> None:
    assert promtool_check_metrics(live.metrics) == ""
    for name, text in live.probes.items():
        assert promtool_check_metrics(text) == "", name


def test_scheduled_metrics_carry_service_region_and_reason(live: Live) -> None:
    success = {(labels["service"], labels["region"], labels["check"]): value
               for labels, value in samples(live.metrics, "probe_success")}
    assert success[("shop", "eu-west", "home")] == 1
    assert success[("shop", "us-east", "tls")] == 1
    assert success[("shop", "eu-west", "port")] == 1
    assert success[("api", "eu-west", "health")] == 0
    assert success[("api", "us-east", "dns")] == 0
    assert success[("control", "isolated", "uplink")] == 0
    vantage = {labels["region"]: value for labels, value in samples(live.metrics, "outage_vantage_healthy")}
    assert vantage == {"eu-west": 1, "us-east": 1, "isolated": 0}
    reasons = {(labels["service"], labels["region"], labels["check"], labels["reason"])
               for labels, _ in samples(live.metrics, "outage_probe_failure_info") if labels["region"] != "isolated"}
    assert reasons == {("api", "eu-west", "health", "http_status"), ("api", "us-east", "health", "http_status"),
                       ("api", "us-east", "dns", "dns_nxdomain")}
    failures = samples(live.metrics, "outage_probe_failures_total")
    assert {labels["reason"] for labels, value in failures if value >= 2} == {"http_status", "dns_nxdomain",
                                                                               "conn_refused"}
    families = parse_exposition(live.metrics)
    for family in ("probe_success", "outage_probe_runs_total", "outage_probe_latency_seconds"):
        for labels in families[family].label_sets:
            assert {"service", "region"} <= labels, family


def test_probe_results_match_what_was_probed(live: Live) -> None:
    https = live.probes["https"]
    assert samples(https, "probe_success") == [({}, 1)]
    assert samples(https, "probe_http_ssl") == [({}, 1)]
    assert samples(https, "probe_ssl_earliest_cert_expiry") and samples(https, "probe_dns_lookup_time_seconds")
    assert samples(live.probes["http_503"], "probe_http_status_code") == [({}, 503)]
    assert samples(live.probes["body"], "probe_http_redirects") == [({}, 1)]
    assert samples(live.probes["body"], "probe_failed_due_to_regex") == [({}, 0)]
    assert samples(live.probes["dns"], "probe_dns_answer_rrs") == [({}, 1)]
    assert [labels["version"] for labels, _ in samples(live.probes["tcp_tls"], "probe_tls_version_info")] == ["TLS 1.3"]
