"""alerts/templates/outage.tmpl: what a chat message, a PagerDuty incident or an e-mail says, rendered by
`amtool template render` on webhook payloads captured from lab runs (tests/testdata/notifications/), the
shipped config loading the templates and its commented receiver examples, and the lab's own rendering
(exporter/lab/notification.py, used by the sink and the demo) saying exactly the same."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from exporter.lab import notification
from tests.helpers.tools import ALERTMANAGER_CONFIG, RULES_DIR, amtool, amtool_check_config, run_tool

TEMPLATES = ALERTMANAGER_CONFIG.parent / "templates"
PAYLOADS = Path(__file__).parent / "testdata" / "notifications"
RUNBOOK = "https://github.com/outage-exporter/outage-exporter/blob/main/docs/runbooks.md#"

# Title of each captured payload: provider, state, causes (most specific first), regions.
TITLES = {
    "facebook-2021-first-page":
        "meta DOWN: services down together (dns_servfail, dns_timeout, http_status), eu-west + us-east",
    "facebook-2021-page-update":
        "meta DOWN: DNS, authoritative nameservers unreachable; DNS, resolution failing; HTTP 5xx, "
        "eu-west + us-east",
    "regional-blip-ticket": "twitter DEGRADED: failing from one region (https http_status), eu-west",
    "regional-blip-resolved": "twitter RESOLVED: failing from one region, eu-west",  # its last description: none
    "two-services-503-page": "meta DOWN: HTTP 5xx, eu-west + us-east",
    # instagram recovered, the incident stays open on whatsapp's last failing window: no reason left to name
    "two-services-503-recovering": "meta DOWN: services down together, eu-west + us-east",
    "two-services-503-resolved": "meta RESOLVED: HTTP 5xx, eu-west + us-east",
}


def render(template_text: str, payload: Path, *, html: bool = False) -> str:
    run = run_tool([amtool(), "template", "render", f"--template.glob={TEMPLATES}/*.tmpl",
                    f"--template.text={template_text}", f"--template.data={payload}",
                    *(["--template.type=html"] if html else [])])
    assert run.ok, run
    return run.output


def payloads() -> list[Path]:
    return sorted(PAYLOADS.glob("*.json"))


def rule_alert_names() -> set[str]:
    return {rule["alert"] for path in RULES_DIR.glob("*.yml")
            for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"] if "alert" in rule}


def test_every_captured_payload_has_an_expected_title():
    assert sorted(p.stem for p in payloads()) == sorted(TITLES)


@pytest.mark.parametrize("payload", payloads(), ids=lambda p: p.stem)
def test_title_names_provider_state_cause_and_regions(payload: Path):
    assert render('{{ template "outage.title" . }}', payload) == TITLES[payload.stem]


def test_page_text_lists_services_since_dashboard_reasons_and_runbooks():
    payload = PAYLOADS / "facebook-2021-page-update.json"
    text = render('{{ template "outage.text" . }}', payload)
    lines = text.splitlines()
    assert lines[:3] == ["Services: facebook, messenger, whatsapp, instagram",
                         "Since: 2026-12-05 08:41:03 UTC",
                         "Dashboard: http://localhost:3000/d/outage-overview/outage-overview?var-provider=meta"]
    headers = [line for line in lines if line and not line.startswith("- ") and ":" in line][3:]
    assert [h.split(" (Outage")[0] for h in headers] == [
        "DNS, authoritative nameservers unreachable", "DNS, resolution failing", "HTTP 5xx",
        "services down together", "down from most regions"]  # most specific cause first
    for name in ("outagednsnameserversunreachable", "outagednsresolutionfailing", "outagehttpservererrors",
                 "outageprovideroutage", "outageservicedownmultiregion"):
        assert text.count(f"runbook: {RUNBOOK}{name}") == 1  # once per cause, not per alert
    alerts = [line for line in lines if line.startswith("- ")]
    assert len(alerts) == len(json.loads(payload.read_text())["alerts"])
    assert "Latest status codes: eu-west 503, us-east 503." in text  # the reasons, from the rule's description
    assert all(re.search(r"\[since \d\d:\d\d:\d\d UTC\]$", line) for line in alerts)


def test_resolved_text_says_when_it_ended():
    text = render('{{ template "outage.text" . }}', PAYLOADS / "two-services-503-resolved.json")
    assert re.search(r"^Since: \S+ \S+ UTC, resolved \S+ \S+ UTC$", text, re.M)
    assert all(line.endswith("[resolved]") for line in text.splitlines() if line.startswith("- "))


def test_html_body_escapes_what_the_alerts_say(tmp_path: Path):
    data = json.loads((PAYLOADS / "regional-blip-ticket.json").read_text())
    data["alerts"][0]["annotations"]["description"] = "<script>x</script> & more"
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(data))
    out = render('{{ template "outage.html" . }}', path, html=True)
    assert "<script>" not in out and "&lt;script&gt;x&lt;/script&gt; &amp; more" in out
    assert out.startswith("<p><b>twitter DEGRADED: failing from one region")


def test_every_alert_of_the_rules_has_a_cause_in_the_ranking():
    names = sorted(rule_alert_names())
    quoted = " ".join(f'"{n}"' for n in names)
    text = f'{{{{ range stringSlice {quoted} }}}}{{{{ . }}}}={{{{ template "outage.cause" . }}}}\n{{{{ end }}}}'
    rendered = dict(line.split("=", 1) for line in render(text, payloads()[0]).splitlines())
    assert set(notification.CAUSES) == set(names)
    assert rendered == {n: notification.CAUSES[n] for n in names}
    template = (TEMPLATES / "outage.tmpl").read_text()
    ranked = [re.findall(r'"(Outage\w+)"', line) for line in template.splitlines() if "stringSlice" in line]
    assert ranked and all(r == list(notification.CAUSES) for r in ranked)  # one ranking, everywhere


@pytest.mark.parametrize("payload", payloads(), ids=lambda p: p.stem)
def test_lab_rendering_matches_the_template(payload: Path):
    """The sink and the demo print what a templated receiver would show."""
    data = json.loads(payload.read_text())
    expected = render('{{ template "outage.title" . }}\n{{ template "outage.text" . }}', payload)
    assert f"{notification.title(data)}\n{notification.text(data)}" == expected


def test_lab_rendering_matches_on_mixed_and_unknown_alerts(tmp_path: Path):
    data = json.loads((PAYLOADS / "facebook-2021-page-update.json").read_text())
    extra = json.loads(json.dumps(data["alerts"][0]))
    extra["labels"] = {"alertname": "SomethingElse", "severity": "critical", "region": "ap-south"}
    extra["annotations"] = {"summary": "not one of ours"}
    data["alerts"].append(extra)
    data["commonLabels"] = {"severity": "critical"}
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(data))
    expected = render('{{ template "outage.title" . }}\n{{ template "outage.text" . }}', path)
    assert expected.startswith("outage-exporter DOWN: DNS, authoritative nameservers unreachable;")
    assert ", ap-south\n" in expected and "SomethingElse" in expected
    assert f"{notification.title(data)}\n{notification.text(data)}" == expected


def test_withdrawn_routes_rank_before_dns(tmp_path: Path):
    data = json.loads((PAYLOADS / "facebook-2021-page-update.json").read_text())
    routing = json.loads(json.dumps(data["alerts"][0]))
    routing["labels"] = {"alertname": "OutageProviderRoutingLost", "severity": "critical", "provider": "meta",
                         "role": "nameservers"}
    data["alerts"].append(routing)
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(data))
    title = render('{{ template "outage.title" . }}', path)
    assert title.startswith("meta DOWN: routing, BGP routes withdrawn; DNS, authoritative nameservers unreachable;")
    assert notification.title(data) == title


# --- the shipped config ------------------------------------------------------------------------------------
def test_shipped_config_loads_the_templates_next_to_it():
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    assert config["templates"] == ["templates/*.tmpl"]
    assert list(ALERTMANAGER_CONFIG.parent.glob(config["templates"][0])) == [TEMPLATES / "outage.tmpl"]
    run = amtool_check_config(ALERTMANAGER_CONFIG)
    assert run.ok and "1 templates" in run.output, run


def test_a_broken_template_fails_the_config_check(tmp_path: Path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "outage.tmpl").write_text((TEMPLATES / "outage.tmpl").read_text() + "{{ end }}")
    (tmp_path / "alertmanager.yml").write_text(ALERTMANAGER_CONFIG.read_text())
    assert not amtool_check_config(tmp_path / "alertmanager.yml").ok


def examples() -> dict[str, dict]:
    """The commented receiver examples of alerts/alertmanager.yml, uncommented, by receiver."""
    blocks = re.findall(r"^( *)# --- example: (\w+) ---\n(.*?)^\1# --- end of example ---$",
                        ALERTMANAGER_CONFIG.read_text(), re.M | re.S)
    return {name: yaml.safe_load(re.sub(rf"(?m)^{indent}# ?", "", body)) for indent, name, body in blocks}


def test_receiver_examples_use_the_templates_and_pass_amtool(tmp_path: Path):
    found = examples()
    assert set(found) == {"pager", "ticket"}
    assert {kind for body in found.values() for kind in body} == {"slack_configs", "pagerduty_configs",
                                                                  "email_configs"}
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    for receiver in config["receivers"]:
        receiver.update(found.get(receiver["name"], {}))
    config["templates"] = [str(TEMPLATES / "*.tmpl")]
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    run = amtool_check_config(path)
    assert run.ok, run
    slack = found["pager"]["slack_configs"][0]
    assert slack["title"] == '{{ template "outage.title" . }}' and "outage.text" in slack["text"]
    assert found["pager"]["pagerduty_configs"][0]["description"] == '{{ template "outage.title" . }}'
    email = found["ticket"]["email_configs"][0]
    assert email["headers"]["Subject"] == '{{ template "outage.title" . }}' and "outage.html" in email["html"]
