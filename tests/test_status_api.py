"""GET /api/v1/status (checked against docs/status-api.schema.json), the Statuspage-shaped
/api/v2/summary.json, and the landing page built from the same snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from exporter import state as st
from exporter.lab.ris import RisEmulator
from exporter.lab.statuspage import StatusPages
from exporter.web import landing
from exporter.web.status_api import status_document
from tests.helpers.state import NOW, the_2021_shape
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


# --- routing (BGP) and declared status ---------------------------------------------------------------------
def _with_signals(healthy: bool = False) -> st.Snapshot:
    """meta in the 2021 shape (or nothing down), its nameserver prefixes withdrawn, its status page silent."""
    routing = st.RoutingVerdict("meta", tuple(st.PrefixVerdict(f"127.10.{i}.0/24", "nameservers", "lost", 0, 5)
                                              for i in (0, 1)))
    beside = st.CauseSignals(routing=(routing,), declared=(st.DeclaredStatus("meta", False, None),
                                                           st.DeclaredStatus("x", True, "none")))
    inputs = [] if healthy else [st.Input(c, c.region, tuple(s.window)) for c, s in the_2021_shape().items()]
    return st.evaluate(inputs, [("eu-west", "eu-west"), ("us-east", "us-east")], NOW, beside=beside)


def test_status_document_carries_routing_and_declared_status() -> None:
    doc = status_document(_with_signals())
    jsonschema.validate(doc, SCHEMA)
    [incident] = doc["incidents"]
    assert incident["causes"][0] == "routing" and incident["declared"] == "status page unreachable"
    assert incident["summary"].startswith("meta: BGP, 2 prefixes holding meta's nameservers withdrawn "
                                          "(seen by 0 of 5 peers), DNS, authoritative nameservers unreachable")
    assert doc["routing"] == [{"provider": "meta", "state": "lost", "summary": (
        "BGP, 2 prefixes holding meta's nameservers withdrawn (seen by 0 of 5 peers)"), "prefixes": [
        {"prefix": "127.10.0.0/24", "role": "nameservers", "state": "lost", "peers": 0, "peers_max": 5},
        {"prefix": "127.10.1.0/24", "role": "nameservers", "state": "lost", "peers": 0, "peers_max": 5}]}]
    assert doc["declared"] == [
        {"provider": "meta", "reachable": False, "indicator": None, "description": None,
         "summary": "status page unreachable", "components": []},
        {"provider": "x", "reachable": True, "indicator": "none", "description": "All Systems Operational",
         "summary": "status page says All Systems Operational", "components": []}]


def test_landing_page_lists_routing_and_declared_status_with_or_without_an_incident() -> None:
    page = landing.render(_with_signals(), recent_failures=[])
    summary = page.split("<div id='summary'", 1)[1].split("</div>", 1)[0]
    assert "meta: BGP, 2 prefixes holding meta&#x27;s nameservers withdrawn (seen by 0 of 5 peers), DNS, " in summary
    assert summary.endswith("; status page unreachable</p>")
    quiet = landing.render(_with_signals(healthy=True), recent_failures=[])
    assert "No incidents: no service is down from any region." in quiet  # a routing loss alone is a ticket
    signals = quiet.split("<div id='signals'>", 1)[1].split("</div>", 1)[0]
    assert "<b>Routing and declared status</b>" in signals
    assert ("<li>meta: BGP, 2 prefixes holding meta&#x27;s nameservers withdrawn (seen by 0 of 5 peers); "
            "status page unreachable</li><li>x: status page says All Systems Operational</li>") in signals
    assert "<div id='signals'>" not in landing.render(st.evaluate([], [], NOW), recent_failures=[])


async def test_a_running_exporter_shows_a_withdrawal_and_its_status_page(services_file: Path) -> None:  # noqa: F811
    """The real feed client and poller against the lab's emulators: acme's api answers 503 everywhere, its
    prefix is withdrawn, its status page says all is well."""
    ris = await RisEmulator(peers=5).start()
    pages = await StatusPages({"acme": {"API": "api"}}).start()
    prefix = "127.10.0.0/24"
    ris.announce([prefix])
    services_file.write_text(services_file.read_text() + _signals_yaml(ris, pages, prefix))
    try:
        async with serve(services_file) as s:
            await eventually(all_ran(s.runtime, at_least=3))
            signals = s.runtime.signals
            await eventually(lambda: bool(signals.routing and signals.routing.state.health.synced
                                          and signals.statuspages and signals.statuspages.states["acme"].reachable))
            ris.withdraw([prefix])
            await eventually(lambda: st.routing_verdicts(signals.routing)[0].state == "lost")
            doc = await (await s.client.get("/api/v1/status")).json()
            _, page = await s.text("/")
    finally:
        await ris.stop()
        await pages.stop()
    jsonschema.validate(doc, SCHEMA)
    [incident] = [i for i in doc["incidents"] if i["provider"] == "acme"]
    assert incident["summary"].startswith(
        "acme: BGP, 1 prefix holding acme's nameservers withdrawn (seen by 0 of 5 peers), HTTP 503, ")
    assert incident["summary"].endswith("; status page says All Systems Operational while 1 service is down")
    assert doc["declared"][0]["components"] == [{"component": "API", "service": "api", "status": "operational"}]
    assert "<li>acme: BGP, 1 prefix holding acme&#x27;s nameservers withdrawn" in page


def _signals_yaml(ris: RisEmulator, pages: StatusPages, prefix: str) -> str:
    return f"""
routing:
  enabled: true
  endpoint: "{ris.ws_url}"
  initial_state: "{ris.looking_glass_url}"
  prefixes: [{{prefix: "{prefix}", provider: acme}}]
status_pages:
  - {{provider: acme, url: "{pages.url('acme')}", interval: 1s, timeout: 1s, components: {{API: api}}}}
"""
