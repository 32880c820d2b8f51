"""exporter.exposition.self_metrics: the exporter's own health as the application reports it (reloads,
/probe requests and refusals, referenced files, shard), in its own registry."""

from __future__ import annotations

from exporter.config.probe_policy import REFUSAL_REASONS
from exporter.exposition.self_metrics import SelfMetrics
from tests.helpers.text import sample


def _text(metrics: SelfMetrics) -> str:
    return metrics.render().decode()


def test_a_failed_reload_keeps_the_last_success_time_and_names_the_error() -> None:
    metrics = SelfMetrics(version="9.9.9")
    metrics.reload_succeeded(timestamp=1_700_000_000.0)
    metrics.reload_failed("services[0]: unknown module 'nope'")
    text = _text(metrics)
    assert sample(text, "outage_exporter_config_last_reload_successful") == 0
    assert sample(text, "outage_exporter_config_last_reload_success_timestamp_seconds") == 1_700_000_000.0
    assert sample(text, "outage_exporter_config_reloads_total") == 2
    assert sample(text, "outage_exporter_config_reload_failures_total") == 1
    assert metrics.last_reload_error == "services[0]: unknown module 'nope'"
    assert sample(text, "outage_exporter_build_info", version="9.9.9") == 1
    metrics.reload_succeeded(timestamp=1_700_000_100.0)
    assert metrics.last_reload_error is None
    assert sample(_text(metrics), "outage_exporter_config_last_reload_successful") == 1


def test_probe_requests_failures_and_every_refusal_reason_are_counted() -> None:
    metrics = SelfMetrics()
    text = _text(metrics)
    assert all(sample(text, "outage_exporter_probe_requests_refused_total", reason=x) == 0 for x in REFUSAL_REASONS)
    metrics.probe_endpoint_request("http_2xx")
    metrics.probe_endpoint_request("http_2xx")
    metrics.probe_endpoint_failure("http_2xx", "conn_refused")
    metrics.probe_refused(REFUSAL_REASONS[0])
    text = _text(metrics)
    assert sample(text, "outage_exporter_probe_endpoint_requests_total", module="http_2xx") == 2
    assert sample(text, "outage_exporter_probe_endpoint_failures_total", module="http_2xx", reason="conn_refused") == 1
    assert sample(text, "outage_exporter_probe_requests_refused_total", reason=REFUSAL_REASONS[0]) == 1
    assert "outage_exporter_web_config_last_reload_successful" not in text  # only once a web config is used


def test_file_checks_and_shard_replace_their_previous_series() -> None:
    metrics = SelfMetrics()
    assert sample(_text(metrics), "outage_exporter_shard_info", shard="1", shards="1") == 1
    metrics.set_shard(2, 3)
    metrics.config_files_checked([("https_ca", "/etc/ca.pem", True), ("https_ca", "/etc/other.pem", False)])
    metrics.config_files_checked([("https_ca", "/etc/other.pem", True)])
    metrics.web_config_loaded(False)
    text = _text(metrics)
    assert sample(text, "outage_exporter_shard_info", shard="1") is None
    assert sample(text, "outage_exporter_shard_info", shard="2", shards="3") == 1
    assert sample(text, "outage_exporter_config_file_unreadable", file="/etc/ca.pem") is None
    assert sample(text, "outage_exporter_config_file_unreadable", module="https_ca", file="/etc/other.pem") == 1
    assert sample(text, "outage_exporter_web_config_last_reload_successful") == 0
