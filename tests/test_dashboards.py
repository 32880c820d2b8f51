"""The Grafana dashboards (dashboards/generate.py -> dashboards/json/): committed JSON matches the generator,
the layout and metadata are sound, every query is valid PromQL (real promtool) on documented metrics, and
(e2e) every panel shows data while the lab replays the 2021 Facebook outage."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys
import time
from collections.abc import Iterator
from importlib import metadata

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import dashboard as dm

from tests.helpers.contract import parse_metrics_doc
from tests.helpers.promtool import promtool_check_rules
from tests.helpers.tools import REPO, rule_files

DASHBOARDS_DIR = REPO / "dashboards"
JSON_DIR = DASHBOARDS_DIR / "json"
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
DOC = REPO / "docs" / "dashboards.md"
REQUIRED_VARIABLES = {"datasource", "service", "region", "provider"}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                   "bool", "offset", "inf", "nan", "atan2"}
PROMETHEUS_SERIES = {"ALERTS"}  # created by Prometheus itself from the alerting rules


def _load_generator():
    spec = importlib.util.spec_from_file_location("dashboards_generate", DASHBOARDS_DIR / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


GEN = _load_generator()


def _boards() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(JSON_DIR.glob("*.json"))}


def _panels(board: dict) -> list[dict]:
    return [p for p in board["panels"] if p["type"] != "row"]


def _targets(board: dict) -> Iterator[tuple[dict, dict]]:
    for panel in _panels(board):
        for target in panel.get("targets", []):
            yield panel, target


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's variable interpolation for the variables these dashboards use (longest names first)."""
    out = expr.replace("$__rate_interval", values.get("__rate_interval", "1m"))
    for name in sorted(values, key=len, reverse=True):
        out = out.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    return out


ALL = {"service": ".*", "region": ".*", "provider": ".*"}


def _values(board: dict, service: str) -> dict[str, str]:
    """Variable values for a board: every variable at "All", except the single-service detail board."""
    if board["uid"] == GEN.UIDS["service"]:
        return {**ALL, "service": service}
    return dict(ALL)


def _variable_selector(query: str) -> str:
    match = re.fullmatch(r"label_values\((.+), *([a-zA-Z_][a-zA-Z0-9_]*)\)", query)
    assert match, f"variable query is not label_values(selector, label): {query!r}"
    return match.group(1)


def all_queries(service: str = "facebook") -> list[tuple[str, str, str]]:
    """(board uid, where, PromQL with variables substituted) for every query in every dashboard."""
    out = []
    for board in _boards().values():
        values = _values(board, service)
        for panel, target in _targets(board):
            out.append((board["uid"], f"panel {panel['id']} {panel['title']!r} {target['refId']}",
                        substitute(target["expr"], values)))
        for note in board["annotations"]["list"]:
            out.append((board["uid"], f"annotation {note['name']!r}", substitute(note["expr"], values)))
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                out.append((board["uid"], f"variable {var['name']}",
                            substitute(_variable_selector(var["query"]["query"]), values)))
    return out


def metric_names(expr: str) -> set[str]:
    """Series names an expression selects: identifiers outside strings, matchers, grouping clauses and
    ranges that are not function calls or keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word, rest = match.group(0), text[match.end():].lstrip()
        if word.lower() in PROMQL_KEYWORDS or rest.startswith("("):
            continue
        if match.start() > 0 and (text[match.start() - 1].isdigit() or text[match.start() - 1] == "."):
            continue  # the exponent or suffix of a number
        names.add(word)
    return names


def known_names() -> set[str]:
    names = set(PROMETHEUS_SERIES)
    for name, doc in parse_metrics_doc().items():
        names.add(name)
        if doc.type == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {rule["record"] for rule in group["rules"] if "record" in rule}
    return names


# --- generator and committed JSON -----------------------------------------------------------------------

def test_committed_json_matches_the_generator():
    built = GEN.build()
    assert sorted(built) == sorted(p.stem for p in JSON_DIR.glob("*.json")), "run python dashboards/generate.py"
    for name, board in built.items():
        committed = (JSON_DIR / f"{name}.json").read_text()
        assert committed == GEN.render(board), f"{name}.json drifted: run python dashboards/generate.py"


def test_generator_writes_the_files(tmp_path):
    assert GEN.main(tmp_path) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in JSON_DIR.glob("*.json"))
    for path in tmp_path.iterdir():
        assert path.read_text() == (JSON_DIR / path.name).read_text()


def test_the_generator_builds_with_grafanas_sdk():
    for name, board in GEN.build().items():
        assert isinstance(board, dm.Dashboard), name
        assert board.panels and all(isinstance(p, dm.Panel | dm.RowPanel) for p in board.panels), name


def test_the_sdk_build_is_the_one_for_the_composed_grafana():
    compose = (REPO / "deploy" / "compose" / "compose.yaml").read_text()
    assert f"image: grafana/grafana:{GEN.GRAFANA_VERSION}\n" in compose
    pinned = next(line.split("==")[1] for line in (REPO / "constraints.txt").read_text().splitlines()
                  if line.startswith("grafana_foundation_sdk=="))
    assert pinned.split("!")[1] == GEN.GRAFANA_VERSION
    assert metadata.version("grafana-foundation-sdk") == pinned, "pip install -c constraints.txt -e '.[test]'"


def test_the_generator_refuses_an_sdk_built_for_another_grafana(monkeypatch):
    monkeypatch.setattr(GEN.metadata, "version", lambda name: "1769699998!10.1.0")
    with pytest.raises(SystemExit, match="not a build for Grafana 11.6.0"):
        GEN.build()


# --- structure ------------------------------------------------------------------------------------------

# Fields of Prometheus annotations that the SDK's annotation model does not carry (added by the generator).
PROMETHEUS_ANNOTATION_FIELDS = {"step", "titleFormat", "textFormat", "tagKeys", "useValueForTime"}


def lost_in_the_model(written: object, read_back: object, path: str = "") -> list[str]:
    """Keys the SDK's model dropped or values it changed when reading the JSON back; defaults it adds for
    fields the JSON leaves out are fine."""
    if isinstance(written, dict) and isinstance(read_back, dict):
        return [lost for key, value in written.items()
                for lost in ([f"{path}/{key} dropped"] if key not in read_back
                             else lost_in_the_model(value, read_back[key], f"{path}/{key}"))]
    if isinstance(written, list) and isinstance(read_back, list) and len(written) == len(read_back):
        return [lost for i, (a, b) in enumerate(zip(written, read_back, strict=True))
                for lost in lost_in_the_model(a, b, f"{path}[{i}]")]
    return [] if written == read_back else [f"{path}: {written!r} became {read_back!r}"]


def test_lost_in_the_model():
    assert lost_in_the_model({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2, "c": 3}], "d": 4}) == []
    assert lost_in_the_model({"a": [1, {"b": 2}]}, {"a": [1, {}]}) == ["/a[1]/b dropped"]
    assert lost_in_the_model({"a": 1}, {"a": 2}) == ["/a: 1 became 2"]


@pytest.mark.parametrize("name", sorted(p.stem for p in JSON_DIR.glob("*.json")))
def test_the_sdk_model_reads_every_field_back(name):
    """Grafana's own model of a dashboard knows every field and option written (a misspelt or unknown one
    would be dropped here, and ignored by Grafana)."""
    register_default_plugins()
    written = _boards()[name]
    read_back = json.loads(json.dumps(dm.Dashboard.from_json(written), cls=JSONEncoder))
    lost = lost_in_the_model(written, read_back)
    assert [entry for entry in lost if entry.split()[0].rsplit("/", 1)[1] not in PROMETHEUS_ANNOTATION_FIELDS
            or not entry.startswith("/annotations/list[")] == []


def test_the_four_dashboards_have_stable_unique_uids():
    uids = [b["uid"] for b in _boards().values()]
    assert sorted(uids) == sorted(GEN.UIDS.values())
    assert len(set(uids)) == len(uids)
    assert "home" in _boards()["outage-overview"]["tags"]


@pytest.mark.parametrize("name", sorted(p.stem for p in JSON_DIR.glob("*.json")))
def test_panel_ids_are_unique_and_panels_do_not_overlap(name):
    panels = _boards()[name]["panels"]
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids)
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["x"] + pos["w"] <= GEN.GRID_WIDTH, panel
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


@pytest.mark.parametrize("name", sorted(p.stem for p in JSON_DIR.glob("*.json")))
def test_every_panel_has_title_description_unit_and_the_datasource_variable(name):
    board = _boards()[name]
    for panel in _panels(board):
        assert panel["title"] and len(panel["description"]) > 20, panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        if panel["type"] != "alertlist":
            assert panel["targets"], panel["title"]


@pytest.mark.parametrize("name", sorted(p.stem for p in JSON_DIR.glob("*.json")))
def test_variables_links_and_rate_intervals(name):
    board = _boards()[name]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) >= REQUIRED_VARIABLES
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    others = {uid for uid in GEN.UIDS.values() if uid != board["uid"]}
    assert {link["url"].removeprefix("/d/") for link in board["links"]} == others
    for panel, target in _targets(board):
        for window in re.findall(r"\b(?:rate|irate|increase)\((?:[^()\[]|\([^()]*\))*\[([^\]]+)\]", target["expr"]):
            assert window == "$__rate_interval", f"{panel['title']!r}: rate window {window}"
    assert board["annotations"]["list"] and "ALERTS" in board["annotations"]["list"][0]["expr"]


def test_the_grid_links_to_the_service_detail_and_maps_every_state():
    board = _boards()["outage-overview"]
    grid = next(p for p in board["panels"] if p["title"] == "Service x region")
    assert grid["type"] in ("status-history", "state-timeline")
    (link,) = grid["fieldConfig"]["defaults"]["links"]
    assert link["url"].startswith(f"/d/{GEN.UIDS['service']}?var-service=${{__field.labels.service}}")
    texts = set()
    for mapping in grid["fieldConfig"]["defaults"]["mappings"]:
        options = mapping["options"]
        texts |= {o["text"] for o in options.values()} if mapping["type"] == "value" else {options["result"]["text"]}
    assert texts == {"up", "degraded", "down", "inconclusive", "no data"}


def test_provisioning_pins_the_datasource_uids_and_loads_the_dashboards_into_a_folder():
    sources = yaml.safe_load((PROVISIONING / "datasources" / "outage-exporter.yml").read_text())["datasources"]
    by_type = {s["type"]: s for s in sources}
    assert by_type["prometheus"]["uid"] == GEN.PROMETHEUS_UID
    assert by_type["alertmanager"]["uid"] == GEN.ALERTMANAGER_UID
    assert by_type["alertmanager"]["jsonData"]["implementation"] == "prometheus"
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "outage-exporter.yml").read_text())["providers"]
    assert provider["type"] == "file" and provider["folder"] and provider["options"]["path"]
    for board in _boards().values():
        ds = next(v for v in board["templating"]["list"] if v["name"] == "datasource")
        assert ds["current"]["value"] == GEN.PROMETHEUS_UID
    alertlist = next(p for p in _boards()["outage-overview"]["panels"] if p["type"] == "alertlist")
    assert alertlist["options"]["datasource"] == GEN.ALERTMANAGER_UID


def test_the_incident_panels_read_the_incident_alert_of_the_rules():
    alerts = {rule["alert"] for path in rule_files() for group in yaml.safe_load(path.read_text())["groups"]
              for rule in group["rules"] if "alert" in rule}
    assert GEN.INCIDENT_ALERT in alerts
    board = _boards()["outage-overview"]
    exprs = [t["expr"] for p in _panels(board) if p["title"] in ("Open incidents", "Incidents per provider")
             for t in p["targets"]]
    assert len(exprs) == 2 and all(f'alertname="{GEN.INCIDENT_ALERT}"' in e for e in exprs)


def test_the_component_panel_maps_every_documented_status():
    doc = next(line for line in (REPO / "docs" / "metrics.md").read_text().splitlines()
               if line.startswith("| `outage_statuspage_component_status`"))
    documented = set(re.findall(r"`([a-z_]+)`", doc.split("|")[4].split("`service` is")[0]))
    assert {status for status, _ in GEN.COMPONENT_STATUSES} == documented
    panel = next(p for p in _boards()["outage-overview"]["panels"] if p["title"] == "Declared component status")
    (values, _) = panel["fieldConfig"]["defaults"]["mappings"]
    assert len(values["options"]) == len(GEN.COMPONENT_STATUSES)


def test_docs_list_every_dashboard_and_panel():
    text = DOC.read_text()
    for board in _boards().values():
        assert board["title"] in text and board["uid"] in text
        for panel in _panels(board):
            assert panel["title"] in text, f"docs/dashboards.md does not list {panel['title']!r}"


# --- queries --------------------------------------------------------------------------------------------

def test_every_query_is_valid_promql(tmp_path):
    queries = all_queries()
    rules = [{"record": f"dashboard:query_{i}:check", "expr": expr} for i, (_, _, expr) in enumerate(queries)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, sort_keys=False))
    run = promtool_check_rules([path])
    where = "\n".join(f"query_{i}: {uid} {w}" for i, (uid, w, _) in enumerate(queries))
    assert run.ok, f"{run}\n{where}"


def test_every_metric_name_is_documented_or_recorded():
    known = known_names()
    for uid, where, expr in all_queries():
        names = metric_names(expr)
        assert names, f"{uid} {where}: no metric in {expr!r}"
        assert names <= known, f"{uid} {where}: unknown {sorted(names - known)}"


def test_metric_name_extraction():
    expr = ('topk by (service) (1, sum by (service, reason) (rate(outage_probe_failures_total{a="b:c"}[5m])))'
            ' / ignoring (reason) group_left () x:y:z * 1e3 or vector(0)')
    assert metric_names(expr) == {"outage_probe_failures_total", "x:y:z"}


# --- real data ------------------------------------------------------------------------------------------

# Panels that may be empty in the facebook-2021-10-04 replay, with the reason.
ALLOWED_EMPTY = {
    "Negative TTL": "only NXDOMAIN and NODATA answers carry one; nobody answers NXDOMAIN in this outage",
    "TLS certificate expiry": "facebook's probes stop at DNS, so no certificate is seen (the same query "
                              "for twitter, which stays up, must return data)",
}
EMPTY_ONLY_FOR_THE_SERVICE = {"TLS certificate expiry"}
# The resolvers' caches have drained: the DNS signal of the alerting rules fails for every META_DOWN service.
DNS_VISIBLE = 'service:outage_quorum_failing:bool{signal="dns", service=~"facebook|messenger|whatsapp"} == 1'
STABLE_POLLS = 3  # the grid and meta's incident must show the outage on this many polls in a row (2 s apart)
META_DOWN = {"facebook", "messenger", "whatsapp"}


async def _replay_and_query(seconds_budget: float) -> tuple[list[tuple[str, str, str, list]], list, list]:
    from exporter.lab.scenario import load_builtin
    from tests.helpers.labstack import lab_with_stack

    scenario = load_builtin("facebook-2021-10-04")
    async with lab_with_stack(scenario, scenario.default_speed) as lab:
        stack = lab.stack
        deadline, stable = time.monotonic() + seconds_budget, 0
        while time.monotonic() < deadline and stable < STABLE_POLLS:
            await asyncio.sleep(2)
            grid = await stack.query(substitute(GEN.GRID_EXPR, ALL))
            down = {s["metric"]["service"] for s in grid if s["value"][1] == str(GEN.DOWN)}
            dns = {s["metric"]["service"] for s in await stack.query(DNS_VISIBLE)}
            incident = await stack.query(f'ALERTS{{alertname="{GEN.INCIDENT_ALERT}", alertstate="firing"}}')
            ready = dns == META_DOWN and down >= META_DOWN and bool(incident)
            stable = stable + 1 if ready else 0
        results = [(uid, where, expr, await stack.query(expr)) for uid, where, expr in all_queries("facebook")]
        results += [(uid, f"{where} (twitter)", expr, await stack.query(expr))
                    for uid, where, expr in all_queries("twitter")
                    if uid == GEN.UIDS["service"] and any(f"{t!r}" in where for t in EMPTY_ONLY_FOR_THE_SERVICE)]
        controls = await stack.query(substitute(GEN.CONTROL_GRID_EXPR, ALL))
        grid = await stack.query(substitute(GEN.GRID_EXPR, ALL))
        return results, grid, controls


@pytest.fixture(scope="module")
def replay():
    from exporter.lab.stack import find_alerts_dir
    from tests.helpers.binaries import require_binary

    require_binary("prometheus", package="prometheus")
    require_binary("prometheus-alertmanager", "alertmanager", package="prometheus-alertmanager")
    assert find_alerts_dir() is not None
    return asyncio.run(_replay_and_query(seconds_budget=90))


@pytest.mark.e2e
@pytest.mark.slow
def test_every_panel_shows_data_during_the_2021_outage(replay):
    results, _, _ = replay
    def allowed(where: str) -> bool:
        return any(f"{title!r}" in where and not (where.endswith("(twitter)")
                                                  and title in EMPTY_ONLY_FOR_THE_SERVICE)
                   for title in ALLOWED_EMPTY)

    empty = [f"{uid} {where}: {expr}" for uid, where, expr, data in results if not data and not allowed(where)]
    assert not empty, "\n".join(empty)


@pytest.mark.e2e
@pytest.mark.slow
def test_the_incident_panels_show_metas_incident_open(replay):
    results, _, _ = replay
    def data(title: str) -> list:
        return next(d for uid, where, _, d in results if uid == GEN.UIDS["overview"] and f"{title!r}" in where)

    timeline = {s["metric"]["provider"]: s["value"][1] for s in data("Incidents per provider")}
    assert timeline["meta"] == "1" and set(timeline.values()) == {"0", "1"}, timeline
    (open_count,) = data("Open incidents")
    assert open_count["value"][1] == "1"


@pytest.mark.e2e
@pytest.mark.slow
def test_the_grid_shows_meta_down_and_the_controls_up(replay):
    _, grid, controls = replay
    state = {(s["metric"]["service"], s["metric"]["region"]): int(s["value"][1]) for s in grid}
    regions = {region for _, region in state}
    assert regions == {"eu-west", "us-east"}, state
    for service in META_DOWN:
        for region in regions:
            assert state[(service, region)] == GEN.DOWN, (service, region, state)
    assert not any(s.startswith("control-") for s, _ in state), "controls are not in the service grid"
    control_state = {(s["metric"]["service"], s["metric"]["region"]): int(s["value"][1]) for s in controls}
    assert {s for s, _ in control_state} == {"control-a", "control-b"}
    assert set(control_state.values()) == {GEN.UP}, control_state
