"""alerts/alertmanager.yml: valid (amtool), routes every severity to its receiver, and — with a real
Alertmanager, since amtool cannot evaluate inhibition — groups and inhibits the way docs/alerts.md says."""

from __future__ import annotations

import time

import pytest

from tests.helpers.tools import (
    ALERTMANAGER_CONFIG,
    LocalAlertmanager,
    alertmanager_config,
    amtool_check_config,
    amtool_route,
)

UNREACHABLE_SINK = "http://127.0.0.1:9"  # discard port: nothing is delivered during these short tests


def test_config_passes_amtool():
    run = amtool_check_config(ALERTMANAGER_CONFIG)
    assert run.ok, run


def test_config_with_another_sink_passes_amtool(tmp_path):
    path = tmp_path / "alertmanager.yml"
    path.write_text(alertmanager_config("http://127.0.0.1:45678/"))
    run = amtool_check_config(path)
    assert run.ok, run
    text = path.read_text()
    assert "http://127.0.0.1:45678/pager" in text and "http://127.0.0.1:45678/ticket" in text
    assert "5001" not in text


@pytest.mark.parametrize(("labels", "receiver"), [
    ({"alertname": "OutageProviderOutage", "severity": "critical", "provider": "meta"}, "pager"),
    ({"alertname": "OutageDNSNameserversUnreachable", "severity": "critical", "provider": "meta",
      "service": "facebook", "zone": "facebook.com"}, "pager"),
    ({"alertname": "OutageExporterDown", "severity": "critical", "instance": "lab"}, "pager"),
    ({"alertname": "OutageServiceDownInRegion", "severity": "warning", "service": "twitter",
      "region": "eu-west"}, "ticket"),
    ({"alertname": "OutageVantageUnhealthy", "severity": "warning", "region": "us-east"}, "ticket"),
    ({"alertname": "OutageWatchdog", "severity": "none"}, "null"),
    ({"alertname": "SomethingElse"}, "ticket"),
], ids=["provider-page", "nameservers-page", "exporter-page", "regional-ticket", "vantage-ticket", "watchdog",
        "default"])
def test_routes(labels, receiver):
    run = amtool_route(ALERTMANAGER_CONFIG, labels, expect=receiver)
    assert run.ok, run


def test_route_check_rejects_a_wrong_receiver():
    run = amtool_route(ALERTMANAGER_CONFIG, {"severity": "warning"}, expect="pager")
    assert not run.ok, run


# --- a real Alertmanager --------------------------------------------------------------------------------

@pytest.fixture
def am(tmp_path):
    with LocalAlertmanager(alertmanager_config(UNREACHABLE_SINK), tmp_path) as running:
        yield running


def _alert(**labels: str) -> dict:
    return {"labels": labels, "annotations": {"summary": labels["alertname"]}}


def _inhibited(am: LocalAlertmanager, expected: set[tuple[str, ...]], *, within: float = 10.0) -> set[tuple[str, ...]]:
    """(alertname, service, region) of every alert Alertmanager inhibits, once that set is ``expected`` or
    ``within`` seconds have passed, read again half a second later. Alertmanager's inhibitor learns of
    posted alerts on its own goroutine, so a read right after posting may not show an inhibition yet; a
    wrong inhibition does not go away, and the second read catches one that was still on its way."""
    def read() -> set[tuple[str, ...]]:
        return {(a["labels"]["alertname"], a["labels"].get("service", ""), a["labels"].get("region", ""))
                for a in am.alerts() if a["status"]["inhibitedBy"]}

    end = time.monotonic() + within
    while read() != expected and time.monotonic() < end:
        time.sleep(0.1)
    time.sleep(0.5)
    return read()


def test_unhealthy_vantage_silences_that_regions_service_alerts(am):
    am.post_alerts([
        _alert(alertname="OutageVantageUnhealthy", severity="warning", region="us-east", instance="lab"),
        _alert(alertname="OutageServiceDownInRegion", severity="warning", service="twitter", provider="twitter",
               region="us-east"),
        _alert(alertname="OutageServiceDownInRegion", severity="warning", service="twitter", provider="twitter",
               region="eu-west"),
        _alert(alertname="OutageServiceDownMultiRegion", severity="critical", service="telegram",
               provider="telegram"),
    ])
    expected = {("OutageServiceDownInRegion", "twitter", "us-east")}
    assert _inhibited(am, expected) == expected


def test_provider_outage_silences_consequences_but_keeps_service_pages_in_view(am):
    """Per-service pages stay visible in the provider's group: a new failure during the incident is news."""
    am.post_alerts([
        _alert(alertname="OutageProviderOutage", severity="critical", provider="meta"),
        _alert(alertname="OutageServiceDownMultiRegion", severity="critical", service="facebook", provider="meta"),
        _alert(alertname="OutageHTTPServerErrors", severity="critical", service="instagram", provider="meta"),
        _alert(alertname="OutageDNSResolutionFailing", severity="critical", service="whatsapp", provider="meta"),
        _alert(alertname="OutageErrorBudgetBurn", severity="critical", service="messenger", provider="meta",
               long_window="1h", short_window="5m"),
        _alert(alertname="OutageServiceDownInRegion", severity="warning", service="messenger", provider="meta",
               region="eu-west"),
        _alert(alertname="OutageDNSNameserversUnreachable", severity="critical", service="facebook",
               provider="meta", zone="facebook.com"),
        _alert(alertname="OutageServiceDownMultiRegion", severity="critical", service="twitter",
               provider="twitter"),
    ])
    expected = {
        ("OutageErrorBudgetBurn", "messenger", ""),
        ("OutageServiceDownInRegion", "messenger", "eu-west"),
    }
    assert _inhibited(am, expected) == expected


def test_multi_region_silences_single_region_of_the_same_service(am):
    am.post_alerts([
        _alert(alertname="OutageServiceDownMultiRegion", severity="critical", service="twitter", provider="twitter"),
        _alert(alertname="OutageServiceDownInRegion", severity="warning", service="twitter", provider="twitter",
               region="eu-west"),
        _alert(alertname="OutageServiceDownInRegion", severity="warning", service="telegram", provider="telegram",
               region="eu-west"),
    ])
    expected = {("OutageServiceDownInRegion", "twitter", "eu-west")}
    assert _inhibited(am, expected) == expected


def test_critical_silences_warnings_of_the_same_service_only(am):
    am.post_alerts([
        _alert(alertname="OutageTLSCertificateExpiring", severity="critical", service="telegram",
               provider="telegram", check="https", target="https://telegram.org/"),
        _alert(alertname="OutageTLSCertificateExpiring", severity="warning", service="telegram",
               provider="telegram", check="https", target="https://telegram.org/"),
        _alert(alertname="OutageTLSCertificateExpiring", severity="warning", service="twitter",
               provider="twitter", check="https", target="https://twitter.com/"),
        # A critical alert without a service must not silence every warning without one.
        _alert(alertname="OutageVantagesLost", severity="critical"),
        _alert(alertname="OutageVantageUnhealthy", severity="warning", region="us-east", instance="lab-b"),
    ])
    expected = {("OutageTLSCertificateExpiring", "telegram", "")}
    assert _inhibited(am, expected) == expected


def test_the_2021_incident_is_one_page(am):
    """Every critical alert of the Meta outage lands in one pager group labelled provider="meta"."""
    meta = [
        _alert(alertname="OutageProviderOutage", severity="critical", provider="meta"),
        *[_alert(alertname="OutageServiceDownMultiRegion", severity="critical", service=s, provider="meta")
          for s in ("facebook", "messenger", "whatsapp", "instagram")],
        *[_alert(alertname="OutageDNSNameserversUnreachable", severity="critical", service=s, provider="meta",
                 zone=f"{s}.com") for s in ("facebook", "messenger", "whatsapp")],
        _alert(alertname="OutageHTTPServerErrors", severity="critical", service="instagram", provider="meta"),
    ]
    am.post_alerts([*meta, _alert(alertname="OutageWatchdog", severity="none")])
    pager = [g for g in am.groups() if g["receiver"]["name"] == "pager"]
    assert [g["labels"] for g in pager] == [{"provider": "meta"}]
    assert len(pager[0]["alerts"]) == len(meta)
    # The page shows every alert of the incident: the provider, its causes and the services they hit.
    assert not [a for a in pager[0]["alerts"] if a["status"]["inhibitedBy"]]
    assert {g["receiver"]["name"] for g in am.groups() if g["labels"].get("alertname") == "OutageWatchdog"} == {
        "null"}
