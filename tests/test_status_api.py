"""GET /api/v1/status (checked against docs/status-api.schema.json), the Statuspage-shaped
/api/v2/summary.json, and the landing page built from the same snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from tests.test_web import all_ran, eventually, serve, services_file  # noqa: F401 (fixture)
from tests.test_web_config import PASSWORD, client_context, get, pki, running, web_yaml  # noqa: F401 (fixture)

SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "status-api.schema.json").read_text())


def _incident_open(doc: dict) -> bool:
    return any(i["provider"] == "acme" for i in doc["incidents"])


async def test_status_document_follows_the_schema_and_says_what_where_why(services_file: Path) -> None:  # noqa: F811
    async with serve(services_file) as s:
        await eventually(all_ran(s.runtime, at_least=3))
        resp = await s.client.get("/api/v1/status")
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/json")
        doc = await resp.json()
    jsonschema.validate(doc, SCHEMA)
    assert doc["version"] == "v1"
    assert [g["name"] for g in doc["regions"]] == ["eu-west", "us-east"]
    assert doc["regions"][0]["vantage"] == {"healthy": True, "healthy_in_window": True, "controls": 1,
                                            "failing_controls": [], "reason": ""}
    cells = {(c["service"], c["region"]): c for c in doc["cells"]}
    assert cells["shop", "eu-west"]["state"] == "up" and cells["shop", "eu-west"]["reasons"] == []
    api = cells["api", "us-east"]
    assert api["state"] == "down" and api["signals"] == ["any", "http_5xx"] and api["reasons"] == ["HTTP 503"]
    assert api["checks"][0]["http_status"] == 503 and api["checks"][0]["failing"] is True
    assert ("mixed", "us-east") not in cells  # nothing of "mixed" runs there
    assert {s["service"]: s["state"] for s in doc["services"]}["api"] == "down"
    [incident] = [i for i in doc["incidents"] if i["provider"] == "acme"]
    assert incident["cause"] == "http" and incident["services"] == ["api"]
    assert incident["summary"].startswith("acme: HTTP 503, 1 service, 2 regions, since ")
    for secret in ("tok-very-secret-123",):
        assert secret not in json.dumps(doc)


async def test_summary_json_speaks_statuspage(services_file: Path) -> None:  # noqa: F811
    async with serve(services_file) as s:
        await eventually(all_ran(s.runtime, at_least=3))
        resp = await s.client.get("/api/v2/summary.json")
        assert resp.status == 200
        doc = await resp.json()
    assert set(doc) == {"page", "components", "incidents", "scheduled_maintenances", "status"}
    assert doc["page"]["id"] and doc["page"]["updated_at"].endswith("Z")
    components = {c["name"]: c for c in doc["components"]}
    assert components["api"]["status"] == "major_outage"  # down from both regions: the quorum
    assert components["shop"]["status"] == "operational"
    assert components["mixed"]["status"] == "major_outage"  # its only region is down
    assert "control-site" not in components
    group = components["acme"]
    assert group["group"] is True and set(group["components"]) == {components["api"]["id"], components["shop"]["id"]}
    assert group["status"] == "major_outage"
    assert components["api"]["group_id"] == group["id"]
    assert {c["status"] for c in doc["components"]} <= {"operational", "degraded_performance", "partial_outage",
                                                         "major_outage"}
    assert doc["status"] == {"indicator": "critical", "description": "Major System Outage"}
    incident = next(i for i in doc["incidents"] if i["name"].startswith("acme down"))
    assert incident["impact"] == "critical" and incident["resolved_at"] is None
    assert incident["components"] == [{"id": components["api"]["id"], "name": "api"}]
    assert incident["incident_updates"][0]["body"].startswith("acme: HTTP 503")


async def test_landing_page_shows_summary_since_and_strip_and_updates_in_place(services_file: Path) -> None:  # noqa: F811
    async with serve(services_file) as s:
        await eventually(all_ran(s.runtime, at_least=3))
        _, page = await s.text("/")
    assert "http-equiv='refresh'" not in page  # no full-page reload that would close an opened probe log
    assert "fetch(\"api/v1/status\"" in page
    summary = page.split("<div id='summary'", 1)[1].split("</div>", 1)[0]
    assert "acme: HTTP 503, 1 service, 2 regions, since " in summary
    cell = page.split("data-service='api' data-region='eu-west'", 1)[1].split("</td>", 1)[0]
    assert "<b>down</b><span class='small'> since " in cell and "HTTP 503" in cell
    assert cell.count("<span") == 1 + 60  # "since", then 60 history slots (30 minutes)
    assert "<span class='down' title=" in cell


async def test_status_endpoints_sit_behind_the_web_config(tmp_path: Path, pki) -> None:  # noqa: F811
    async with running(tmp_path, web_yaml(pki, tmp_path)) as ex:
        ctx = client_context(pki)
        for path in ("/api/v1/status", "/api/v2/summary.json"):
            assert (await get(ex.url + path, ctx))[0] == 401, path
            status, _, body = await get(ex.url + path, ctx, auth=("prometheus", PASSWORD))
            assert status == 200 and json.loads(body)


async def test_landing_pages_probe_example_works_as_it_is(services_file: Path) -> None:  # noqa: F811
    async with serve(services_file) as s:
        _, page = await s.text("/")
        link = page.split("'>/probe example</a>", 1)[0].rsplit("<a href='", 1)[1].replace("&amp;", "&")
        assert link.startswith("/probe?module=") and "/-/healthy" in link
        status, body = await s.text(link)
    assert status == 200
    assert "\nprobe_success 1\n" in body, body[:2000]
