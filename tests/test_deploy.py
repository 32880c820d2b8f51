"""The deploy artefacts: Dockerfile, compose stack, Kubernetes kustomizations, systemd unit, Prometheus scrape
configs and the compose webhook sink. No Docker engine, cluster or systemd is available here, so each artefact
is checked with the real tool that can check it offline (the Compose Specification schema, ``kubectl
kustomize``, ``promtool``, ``amtool``, ``systemd-analyze verify``) and by running the pieces that run without
them (the image's health check command, the sink, the exporter under the Kubernetes resource limits)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import aiohttp
import pytest
import yaml

from exporter.lab.sink import LoggingSink
from tests.helpers.binaries import require_binary
from tests.helpers.exporter_proc import BackgroundLoop, ExporterProcess, free_port
from tests.helpers.tools import REPO, amtool_check_config, promtool, rule_files, run_tool

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
K8S = REPO / "deploy" / "kubernetes"
SYSTEMD_UNIT = REPO / "deploy" / "systemd" / "outage-exporter.service"
SYSTEMD_ENV = REPO / "deploy" / "systemd" / "outage-exporter.env"
PROMETHEUS_EXAMPLES = REPO / "deploy" / "prometheus"
GRAFANA_PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
DOC = REPO / "docs" / "deploy.md"

# The Compose Specification schema, fetched by scripts/install-test-tools from a pinned wheel (not committed).
COMPOSE_SCHEMA = REPO / ".cache" / "compose-spec" / "compose_spec.json"
COMPOSE_SCHEMA_SHA256 = "0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac"
PINNED_IMAGE = re.compile(r"^[\w.\-/]+:[\w.\-]+@sha256:[0-9a-f]{64}$")
EXACT_TAG = re.compile(r"^v?\d+\.\d+\.\d+([\-.][\w.\-]+)?$")
EXPORTER_JOB = "outage-exporter"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"deploy_{path.parent.name}_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


# --- Dockerfile ---------------------------------------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, backslash continuations joined."""
    out, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


INSTRUCTIONS = dockerfile_instructions(DOCKERFILE.read_text())


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for word, args in INSTRUCTIONS:
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, args))
    return stages


def _global_args() -> dict[str, str]:
    """ARGs declared before the first FROM, with their defaults (what FROM may use)."""
    out = {}
    for word, args in INSTRUCTIONS:
        if word == "FROM":
            break
        if word == "ARG":
            name, _, default = args.partition("=")
            out[name] = default
    return out


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def _final(word: str) -> str:
    (args,) = [a for w, a in _stages()[-1] if w == word][-1:]
    return args


def test_dockerfile_base_images_are_pinned_by_exact_tag_and_digest():
    variables = _global_args()
    stage_names = set()
    for stage in _stages():
        image, _, alias = stage[0][1].partition(" AS ")
        image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables[m.group(1) or m.group(2)], image.strip())
        if image not in stage_names:
            assert PINNED_IMAGE.match(image), f"base image not pinned by tag and digest: {image}"
            name, _, tag = image.split("@")[0].rpartition(":")
            assert name.endswith("python") and EXACT_TAG.match(tag) and "slim" in tag, image
        if alias:
            stage_names.add(alias.strip())
    assert len(_stages()) >= 2, "multi-stage: the wheels are built in a stage of their own"
    assert "latest" not in DOCKERFILE.read_text()


def test_dockerfile_runtime_stage_copies_the_built_environment_and_no_source_tree():
    build, runtime = _stages()[0], _stages()[-1]
    assert any(w == "RUN" and "pip wheel" in a for w, a in build), "wheels are built in the first stage"
    copies = [a for w, a in runtime if w == "COPY"]
    assert any(a.startswith("--from=") for a in copies)
    assert not any(a.split()[0] in ("exporter", ".", "./exporter") for a in copies), copies
    assert not [a for w, a in INSTRUCTIONS if w == "ADD"], "COPY, never ADD (no remote URLs, no archives)"


def test_dockerfile_runs_as_a_numeric_non_root_user():
    users = [a for w, a in _stages()[-1] if w == "USER"]
    assert users, "the runtime stage sets USER"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) > 0 and (not group or (group.isdigit() and int(group) > 0)), users


def test_dockerfile_entrypoint_cmd_port_and_healthcheck():
    assert _exec_form(_final("ENTRYPOINT")) == ["outage-exporter"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "outage-exporter" in scripts
    assert _exec_form(_final("CMD")) == ["--config.file=/etc/outage-exporter/config.yml",
                                         "--web.listen-address=0.0.0.0:19115"]
    assert _final("EXPOSE").split() == ["19115"]
    health = _final("HEALTHCHECK")
    command = _exec_form(health.split(" CMD ", 1)[1])
    assert command[:2] == ["python", "-c"] and "/-/healthy" in command[2], health
    assert not {"curl", "wget"} & set(command), "the slim image has neither curl nor wget"


def _healthcheck_command() -> str:
    return _exec_form(_final("HEALTHCHECK").split(" CMD ", 1)[1])[2]


@pytest.fixture(scope="module")
def idle_exporter(tmp_path_factory) -> Iterator[ExporterProcess]:
    """An exporter with a blackbox-style config (modules only: nothing is probed)."""
    config = tmp_path_factory.mktemp("idle") / "config.yml"
    config.write_text("modules:\n  tcp_connect: {prober: tcp}\n")
    with ExporterProcess(config) as exporter:
        yield exporter


def _run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30, check=False,
                          env={**os.environ, **(env or {})})


def test_image_healthcheck_command_passes_on_a_live_exporter_and_fails_without_one(idle_exporter):
    code = _healthcheck_command()
    ok = _run_python(code, {"HEALTHCHECK_URL": idle_exporter.url + "/-/healthy"})
    assert ok.returncode == 0, ok.stderr
    down = _run_python(code, {"HEALTHCHECK_URL": f"http://127.0.0.1:{free_port()}/-/healthy"})
    assert down.returncode != 0


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path (or one of its parent directories) decides."""
    parts = path.split("/")
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        regex = (re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
                 .replace(r"\[", "[").replace(r"\]", "]"))
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_sends_only_what_the_build_copies():
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    for word, args in INSTRUCTIONS:
        if word == "COPY" and not args.startswith("--from="):
            for source in args.split()[:-1]:
                assert (REPO / source).exists(), f"COPY source {source} missing"
                assert not dockerignore_excludes(source.rstrip("/"), patterns), f"{source} is ignored"
    for kept in ("exporter/cli.py", "exporter/config/default.yaml", "pyproject.toml", "README.md"):
        assert not dockerignore_excludes(kept, patterns), kept
    for dropped in (".git/HEAD", ".venv/bin/python", "tests/test_cli.py", "tests/testdata/x.yml", "docs/deploy.md",
                    "exporter/__pycache__/cli.cpython-311.pyc", ".cache/compose-spec/compose_spec.json",
                    "deploy/compose/compose.yaml", ".hypothesis/examples/x"):
        assert dockerignore_excludes(dropped, patterns), dropped


# --- compose ------------------------------------------------------------------------------------------------

@functools.cache
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _services() -> dict[str, dict]:
    return compose()["services"]


@pytest.fixture(scope="module")
def compose_schema() -> dict:
    if not COMPOSE_SCHEMA.is_file():
        message = f"{COMPOSE_SCHEMA} missing: run scripts/install-test-tools"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    data = COMPOSE_SCHEMA.read_bytes()
    assert hashlib.sha256(data).hexdigest() == COMPOSE_SCHEMA_SHA256, "not the pinned Compose schema"
    return json.loads(data)


def _schema_errors(schema: dict, document: dict) -> list[str]:
    from jsonschema import Draft201909Validator

    validator = Draft201909Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_matches_the_compose_specification_schema(compose_schema):
    assert _schema_errors(compose_schema, compose()) == []


def test_compose_schema_check_catches_mistakes(compose_schema):
    broken = json.loads(json.dumps(compose()))
    broken["services"]["exporter"]["helthcheck"] = broken["services"]["exporter"].pop("healthcheck")
    broken["services"]["prometheus"]["depends_on"]["exporter"]["condition"] = "service_ready"
    errors = _schema_errors(compose_schema, broken)
    assert any("helthcheck" in e for e in errors) and any("service_ready" in e for e in errors), errors


def test_compose_images_are_pinned_and_the_project_image_is_built_from_the_dockerfile():
    for name, service in _services().items():
        image = service.get("image")
        assert image, f"{name}: no image"
        repo, _, tag = image.rpartition(":")
        assert repo and EXACT_TAG.match(tag), f"{name}: image {image} is not pinned to an exact version"
        if "build" in service:
            assert (COMPOSE_DIR / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == DOCKERFILE
            assert image == f"outage-exporter:{_version()}", image
    assert {s["image"].split(":")[0] for s in _services().values()} >= {
        "prom/prometheus", "prom/alertmanager", "grafana/grafana", "outage-exporter"}


def _bind_mounts(service: dict) -> list[tuple[Path, str]]:
    out = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        assert source.startswith("."), f"only repository files are mounted, not {source}"
        out.append(((COMPOSE_DIR / source).resolve(), target))
    return out


def test_compose_mounts_only_files_that_exist_in_the_repository():
    for name, service in _services().items():
        for source, _target in _bind_mounts(service):
            assert source.exists(), f"{name}: {source} does not exist"
            assert REPO in source.parents, f"{name}: {source} is outside the repository"


def _published(service: dict) -> dict[int, str]:
    """container port -> host address for the ``host_ip:host_port:container_port`` entries."""
    out = {}
    for entry in service.get("ports", []):
        host, host_port, container = entry.rsplit(":", 2)
        assert host_port == container, entry
        out[int(container)] = host
    return out


def test_compose_ports_are_published_on_loopback_only():
    expected = {"exporter": 19115, "sink": 5001, "alertmanager": 9093, "prometheus": 9090, "grafana": 3000}
    for name, port in expected.items():
        assert _published(_services()[name]) == {port: "127.0.0.1"}, name


def _flag(args: list[str], flag: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")] or [
        args[i + 1] for i, a in enumerate(args) if a == flag]
    return value


def test_compose_exporter_runs_the_2021_demo_on_the_published_port():
    from exporter.lab.demo import DEFAULT_SCENARIO, build_parser

    command = _services()["exporter"]["command"]
    assert command[0] == "demo"
    ns = build_parser().parse_args(command[1:])
    assert ns.scenario == DEFAULT_SCENARIO == "facebook-2021-10-04"
    assert ns.listen == ("0.0.0.0", 19115)


def test_compose_sink_runs_the_lab_sink_from_the_project_image():
    from exporter.lab.sink import build_parser

    sink = _services()["sink"]
    assert sink["entrypoint"] == ["python", "-m", "exporter.lab.sink"]
    assert sink["image"] == _services()["exporter"]["image"]
    assert build_parser().parse_args(sink["command"]).listen == ("0.0.0.0", 5001)


def _service_port(name: str) -> int:
    """The port a compose service listens on, from its command line (or the image's default)."""
    defaults = {"prometheus": 9090, "alertmanager": 9093, "grafana": 3000}
    service = _services()[name]
    if name == "exporter":
        return int(_flag(service["command"], "--web.listen-address").rsplit(":", 1)[1])
    if name == "sink":
        return int(_flag(service["command"], "--listen").rsplit(":", 1)[1])
    return defaults[name]


def _resolves(address: str, service: str) -> None:
    host, _, port = address.rpartition(":")
    assert host == service and host in _services(), f"{address} is not the {service} service"
    assert int(port) == _service_port(service), f"{address}: {service} listens on {_service_port(service)}"


def _compose_generator() -> ModuleType:
    return _load(COMPOSE_DIR / "generate.py")


def test_compose_alertmanager_config_is_generated_from_the_project_config():
    gen = _compose_generator()
    assert (COMPOSE_DIR / "alertmanager.yml").read_text() == gen.render(), (
        "deploy/compose/alertmanager.yml is out of date: run python deploy/compose/generate.py")
    project = yaml.safe_load((REPO / "alerts" / "alertmanager.yml").read_text())
    generated = yaml.safe_load((COMPOSE_DIR / "alertmanager.yml").read_text())
    for config in (project, generated):
        for receiver in config["receivers"]:
            for hook in receiver.get("webhook_configs", []):
                hook["url"] = hook["url"].split("/", 3)[3]  # the path (receiver) stays
    assert project == generated, "only the webhook base URL may differ"


def test_compose_generator_fails_its_check_when_the_file_drifts(tmp_path, monkeypatch):
    gen = _compose_generator()
    drifted = tmp_path / "alertmanager.yml"
    drifted.write_text(gen.render().replace("group_wait: 10s", "group_wait: 15s"))
    monkeypatch.setattr(gen, "TARGET", drifted)
    assert gen.main(["--check"]) == 1
    assert gen.main([]) == 0 and gen.main(["--check"]) == 0
    with pytest.raises(ValueError, match="no longer sends"):
        gen.render("receivers: []\n")


def test_compose_webhooks_go_to_the_sink_service_and_the_config_passes_amtool():
    gen = _compose_generator()
    urls = gen.webhook_urls((COMPOSE_DIR / "alertmanager.yml").read_text())
    assert {u.rsplit("/", 1)[1] for u in urls} == {"pager", "ticket"}
    for url in urls:
        _resolves(url.split("/")[2], "sink")
    run = amtool_check_config(COMPOSE_DIR / "alertmanager.yml")
    assert run.ok, run
    mounted = {t: s for s, t in _bind_mounts(_services()["alertmanager"])}
    assert mounted["/etc/alertmanager/alertmanager.yml"] == COMPOSE_DIR / "alertmanager.yml"
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in _services()["alertmanager"]["command"]


def _promtool_check_config(config: Path, *, agent: bool = False) -> None:
    run = run_tool([promtool(), "check", "config", *(["--agent"] if agent else []), config.name], cwd=config.parent)
    assert run.ok, run


def test_compose_prometheus_scrapes_the_exporter_with_the_alert_budget_and_loads_the_rules(tmp_path):
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    budget = {"scrape_interval": "10s", "scrape_timeout": "8s", "evaluation_interval": "5s"}  # docs/alerts.md
    assert config["global"] == budget
    (job,) = config["scrape_configs"]
    assert job["job_name"] == EXPORTER_JOB and job["honor_labels"] is True
    (target,) = job["static_configs"][0]["targets"]
    _resolves(target, "exporter")
    (am,) = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    _resolves(am, "alertmanager")
    # The rules are mounted at rules/ next to the config: check it that way, rules included.
    prom = _services()["prometheus"]
    mounted = {t: s for s, t in _bind_mounts(prom)}
    assert mounted["/etc/prometheus/prometheus.yml"] == COMPOSE_DIR / "prometheus.yml"
    assert mounted["/etc/prometheus/rules"] == REPO / "alerts" / "rules"
    assert config["rule_files"] == ["rules/*.yml"]
    shutil.copy(COMPOSE_DIR / "prometheus.yml", tmp_path / "prometheus.yml")
    (tmp_path / "rules").symlink_to(REPO / "alerts" / "rules")
    run = run_tool([promtool(), "check", "config", "prometheus.yml"], cwd=tmp_path)
    assert run.ok, run
    assert f"{len(rule_files())} rule files found" in run.output, run


def test_compose_grafana_provisions_the_dashboards_and_the_pinned_datasources():
    grafana = _services()["grafana"]
    mounted = {t: s for s, t in _bind_mounts(grafana)}
    (provider,) = yaml.safe_load((GRAFANA_PROVISIONING / "dashboards" / "outage-exporter.yml").read_text())["providers"]
    assert mounted[provider["options"]["path"]] == REPO / "dashboards" / "json"
    assert mounted["/etc/grafana/provisioning/dashboards/outage-exporter.yml"] == (
        GRAFANA_PROVISIONING / "dashboards" / "outage-exporter.yml")
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (REPO / "dashboards" / "json" / Path(home).name).is_file()
    (datasources_file,) = [s for t, s in mounted.items() if t.startswith("/etc/grafana/provisioning/datasources/")]
    ours = yaml.safe_load(datasources_file.read_text())["datasources"]
    reference_file = GRAFANA_PROVISIONING / "datasources" / "outage-exporter.yml"
    reference = yaml.safe_load(reference_file.read_text())["datasources"]
    strip = [{k: v for k, v in d.items() if k != "url"} for d in reference]
    assert [{k: v for k, v in d.items() if k != "url"} for d in ours] == strip, "same data sources but the URLs"
    urls = {d["type"]: d["url"] for d in ours}
    _resolves(urls["prometheus"].removeprefix("http://"), "prometheus")
    _resolves(urls["alertmanager"].removeprefix("http://"), "alertmanager")


def test_compose_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies():
    for name, service in _services().items():
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD" and any("/-/healthy" in t or "/-/ready" in t or "/api/health" in t for t in test), name
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in _services() and condition == {"condition": "service_healthy"}, (name, dependency)
    order = {"alertmanager": {"sink"}, "prometheus": {"exporter", "alertmanager"},
             "grafana": {"prometheus", "alertmanager"}}
    for name, dependencies in order.items():
        assert set(_services()[name]["depends_on"]) == dependencies, name


def _compose_python_healthcheck(name: str, port: int) -> str:
    test = _services()[name]["healthcheck"]["test"]
    assert test[1:3] == ["python", "-c"], test
    return test[3].replace(f":{_service_port(name)}/", f":{port}/")


def test_compose_exporter_healthcheck_command_works(idle_exporter):
    assert _run_python(_compose_python_healthcheck("exporter", idle_exporter.port)).returncode == 0
    assert _run_python(_compose_python_healthcheck("exporter", free_port())).returncode != 0


# --- the webhook sink ---------------------------------------------------------------------------------------

PAYLOAD = {
    "version": "4", "status": "firing", "receiver": "pager", "groupLabels": {"provider": "meta"},
    "commonLabels": {"alertname": "OutageProviderOutage", "provider": "meta", "severity": "critical"},
    "alerts": [{"status": "firing", "labels": {"alertname": "OutageProviderOutage", "provider": "meta",
                                               "severity": "critical", "region": "eu-west"},
                "annotations": {"summary": "2 services of meta are down."}}],
}


async def test_sink_logs_each_notification_as_one_json_line():
    out = io.StringIO()
    sink = await LoggingSink("127.0.0.1", 0, out=out, keep=2).start()
    try:
        async with aiohttp.ClientSession() as http:
            for receiver in ("pager", "ticket", "pager"):
                async with http.post(f"{sink.base_url}/{receiver}", json=PAYLOAD) as resp:
                    assert resp.status == 200
            async with http.post(f"{sink.base_url}/pager", data=b"not json") as resp:
                assert resp.status == 400
            async with http.get(f"{sink.base_url}/-/healthy") as resp:
                assert resp.status == 200
            async with http.get(f"{sink.base_url}/") as resp:
                latest = await resp.json()
    finally:
        await sink.stop()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines
    records = [json.loads(line) for line in lines]
    assert [r["receiver"] for r in records] == ["pager", "ticket", "pager"]
    first = records[0]
    assert first["status"] == "firing" and first["notification"] == PAYLOAD
    assert "OutageProviderOutage" in first["summary"] and "regions=eu-west" in first["summary"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert [r["receiver"] for r in latest] == ["pager", "ticket"], "newest first, only --keep kept"


def test_sink_module_runs_serves_its_healthcheck_and_stops_on_sigterm():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "exporter.lab.sink", "--listen", f"127.0.0.1:{port}",
                             "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        deadline = time.monotonic() + 15
        while _run_python(_compose_python_healthcheck("sink", port)).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/ticket", data=json.dumps(PAYLOAD).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as reply:
            assert reply.status == 200
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    (line,) = stdout.decode().splitlines()
    assert json.loads(line)["receiver"] == "ticket"
    assert _run_python(_compose_python_healthcheck("sink", port)).returncode != 0


def test_sink_rejects_a_bad_keep():
    from exporter.lab.sink import main

    assert main(["--keep", "0"]) == 2


# --- Kubernetes ---------------------------------------------------------------------------------------------

def overlays() -> list[Path]:
    return sorted(p for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())


@functools.cache
def kustomize(directory: Path) -> tuple[dict, ...]:
    kubectl = require_binary("kubectl", package="kubernetes-client")
    run = run_tool([kubectl, "kustomize", str(directory)], timeout=60)
    assert run.ok, run
    return tuple(d for d in yaml.safe_load_all(run.output) if d)


def _one(documents: tuple[dict, ...], kind: str) -> dict:
    (doc,) = [d for d in documents if d["kind"] == kind]
    return doc


def _container(documents: tuple[dict, ...]) -> dict:
    (container,) = _one(documents, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _alert_groups() -> list[dict]:
    return [g for path in rule_files() for g in yaml.safe_load(path.read_text())["groups"]]


def test_every_kustomization_builds():
    assert {p.name for p in overlays()} >= {"eu-west", "us-east"}
    base = kustomize(K8S / "base")
    assert {d["kind"] for d in base} == {"Deployment", "Service", "ConfigMap", "ServiceMonitor"}
    assert {d["kind"] for d in kustomize(K8S / "rules")} == {"PrometheusRule"}
    for overlay in overlays():
        assert {d["kind"] for d in kustomize(overlay)} == {d["kind"] for d in base}, overlay.name


def test_the_prometheus_rule_is_the_project_rules_exactly():
    rule = _one(kustomize(K8S / "rules"), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == _alert_groups()
    assert [g["name"] for g in rule["spec"]["groups"]] == [g["name"] for g in _alert_groups()]


def test_the_committed_prometheus_rule_matches_its_generator(tmp_path, monkeypatch):
    gen = _load(K8S / "generate.py")
    assert (K8S / "rules" / "prometheusrule.yaml").read_text() == gen.render(), (
        "deploy/kubernetes/rules/prometheusrule.yaml is out of date: run python deploy/kubernetes/generate.py")
    rules = tmp_path / "rules"
    rules.mkdir()
    for path in rule_files():
        shutil.copy(path, rules / path.name)
    (rules / "recording.yml").write_text((rules / "recording.yml").read_text().replace("[30s]", "[45s]", 1))
    assert gen.render(rules) != gen.render(), "an edited rule file changes the output"
    monkeypatch.setattr(gen, "RULES_DIR", rules)
    assert gen.main(["--check"]) == 1
    (rules / "extra.yml").write_text(yaml.safe_dump({"groups": [_alert_groups()[0]]}))
    with pytest.raises(ValueError, match="unique"):
        gen.groups(rules)


@pytest.mark.parametrize("overlay", ["eu-west", "us-east"])
def test_overlay_runs_the_prober_for_its_region(overlay):
    docs = kustomize(K8S / "overlays" / overlay)
    args = _container(docs)["args"]
    assert [a for a in args if a.startswith("--region")] == [f"--region={overlay}"]
    deployment, service, monitor = (_one(docs, k) for k in ("Deployment", "Service", "ServiceMonitor"))
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["region"] == overlay
    assert deployment["spec"]["selector"]["matchLabels"]["region"] == overlay
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["selector"]["region"] == overlay
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector["region"] == overlay and selector.items() <= service["metadata"]["labels"].items()
    assert all(f"-{overlay}" in d["metadata"]["name"] for d in docs), "a name suffix per region"


def test_overlays_do_not_carry_the_rules():
    """The rules compare regions: they run once, centrally, not in every region's cluster."""
    for overlay in overlays():
        assert not [d for d in kustomize(overlay) if d["kind"] == "PrometheusRule"], overlay.name


def test_service_monitor_scrapes_with_honor_labels_as_the_job_the_rules_expect():
    for directory in (K8S / "base", *overlays()):
        docs = kustomize(directory)
        monitor, service, container = _one(docs, "ServiceMonitor"), _one(docs, "Service"), _container(docs)
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["honorLabels"] is True and endpoint["path"] == "/metrics"
        assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == EXPORTER_JOB
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        (port,) = service["spec"]["ports"]
        assert port["targetPort"] in {p["name"] for p in container["ports"]}


def test_deployment_probes_security_and_config():
    for directory in (K8S / "base", *overlays()):
        docs = kustomize(directory)
        container, deployment, config_map = _container(docs), _one(docs, "Deployment"), _one(docs, "ConfigMap")
        (port,) = container["ports"]
        assert port["containerPort"] == int(_flag(container["args"], "--web.listen-address").rsplit(":", 1)[1])
        assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": port["name"]}
        assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": port["name"]}
        pod = deployment["spec"]["template"]["spec"]
        user = [a for w, a in _stages()[-1] if w == "USER"][-1].split(":")[0]
        assert pod["securityContext"]["runAsNonRoot"] is True and str(pod["securityContext"]["runAsUser"]) == user
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert pod["automountServiceAccountToken"] is False
        image = container["image"]
        assert EXACT_TAG.match(image.rpartition(":")[2]) and image.rpartition(":")[2] == _version(), image
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        config_path = Path(_flag(container["args"], "--config.file"))
        volume = volumes[mounts[str(config_path.parent)]]
        assert volume["configMap"]["name"] == config_map["metadata"]["name"]
        assert config_path.name in config_map["data"]


def test_configmap_config_is_valid_for_every_region(tmp_path, capsys):
    from exporter.cli import main

    for overlay in overlays():
        config = tmp_path / f"{overlay.name}.yml"
        config.write_text(_one(kustomize(overlay), "ConfigMap")["data"]["config.yml"])
        assert main(["--config.check", f"--config.file={config}", f"--region={overlay.name}"]) == 0
        assert "OK" in capsys.readouterr().out


def _quantity(value: str) -> float:
    """CPU in cores or memory in bytes from a Kubernetes quantity ("150m", "1", "128Mi")."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def test_resources_are_set_and_documented():
    resources = _container(kustomize(K8S / "base"))["resources"]
    for kind in ("cpu", "memory"):
        assert _quantity(resources["limits"][kind]) >= _quantity(resources["requests"][kind]), kind
    doc = DOC.read_text()
    for kind in ("requests", "limits"):
        for value in resources[kind].values():
            assert f"`{value}`" in doc, f"docs/deploy.md does not state the {kind} value {value}"


def _proc_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds used, peak resident bytes) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return cpu, int(status["VmHWM"].split()[0]) * 1024


def _many_checks(port: int, count: int, interval: str) -> dict:
    """``count`` checks, half HTTP and half TCP, against one loopback server, in services of 20."""
    services = []
    for s in range(count // 20):
        checks = []
        for i in range(10):
            checks.append({"name": f"http{i}", "module": "http_2xx", "target": f"http://127.0.0.1:{port}/?s={s}&i={i}"})
            checks.append({"name": f"tcp{i}", "module": "tcp_connect", "target": f"127.0.0.1:{port}"})
        services.append({"name": f"svc{s:03d}", "checks": checks})
    return {"defaults": {"interval": interval, "timeout": "4s"},
            "modules": {"http_2xx": {"prober": "http", "http": {"preferred_ip_protocol": "ip4"}},
                        "tcp_connect": {"prober": "tcp"}},
            "services": services}


@pytest.mark.slow
def test_a_thousand_checks_fit_the_kubernetes_resources(tmp_path):
    """The sizing of docs/deploy.md: 1,000 HTTP and TCP checks every 5 s, scraped every 5 s, stay within the
    Deployment's memory request and well within its CPU limit."""
    from tests.servers.http import start_http

    resources = _container(kustomize(K8S / "base"))["resources"]
    with BackgroundLoop() as loop:
        site = loop.run(start_http())
        try:
            config = tmp_path / "many.yml"
            config.write_text(yaml.safe_dump(_many_checks(site.port, 1000, "5s")))
            with ExporterProcess(config, ready_timeout=60) as exporter:
                exporter.wait_all_ran(timeout=30)
                assert exporter.proc is not None
                cpu_before, _ = _proc_usage(exporter.proc.pid)
                started = time.monotonic()
                while time.monotonic() - started < 10:
                    time.sleep(2.5)
                    exporter.metrics()  # scrape as Prometheus would
                cpu_after, peak = _proc_usage(exporter.proc.pid)
                cpu_rate = (cpu_after - cpu_before) / (time.monotonic() - started)
        finally:
            loop.run(site.stop())
    print(f"1000 checks every 5s: {cpu_rate * 1000:.0f}m CPU, peak RSS {peak / 2**20:.0f} MiB")
    assert peak <= _quantity(resources["requests"]["memory"]), f"peak RSS {peak / 2**20:.0f} MiB"
    assert cpu_rate <= _quantity(resources["limits"]["cpu"]) / 2, f"{cpu_rate * 1000:.0f}m CPU"


# --- systemd ------------------------------------------------------------------------------------------------

def unit_entries(text: str) -> dict[str, list[tuple[str, str]]]:
    """Section -> [(key, value)] in order; repeated keys are kept (systemd accumulates many of them)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        assert current is not None, line
        current.append((key.strip(), value.strip()))
    return sections


UNIT = unit_entries(SYSTEMD_UNIT.read_text())


def _unit_value(key: str, section: str = "Service") -> str:
    values = [v for k, v in UNIT[section] if k == key]
    assert values, f"{key} not set"
    return values[-1]


def test_systemd_unit_is_hardened():
    assert _unit_value("DynamicUser") == "yes" or _unit_value("User") not in ("", "root")
    assert _unit_value("ProtectSystem") == "strict"
    assert _unit_value("NoNewPrivileges") == "yes"
    assert _unit_value("CapabilityBoundingSet") == ""
    assert set(_unit_value("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert _unit_value("Restart") == "on-failure"
    assert shlex.split(_unit_value("ExecReload")) == ["/bin/kill", "-HUP", "$MAINPID"]
    assert _unit_value("WantedBy", "Install") == "multi-user.target"


def _env_file() -> dict[str, str]:
    return dict(line.split("=", 1) for line in SYSTEMD_ENV.read_text().splitlines()
                if line.strip() and not line.startswith("#"))


def _expand(command: str, env: dict[str, str]) -> list[str]:
    """systemd's expansion: ``${VAR}`` is one word, a lone ``$VAR`` splits on whitespace."""
    words = []
    for word in command.split():
        if re.fullmatch(r"\$\w+", word):
            words.extend(env.get(word[1:], "").split())
        else:
            words.append(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word))
    return words


def test_systemd_command_line_is_valid_with_and_without_the_env_file():
    from exporter.cli import build_parser

    defaults = dict(v.split("=", 1) for k, v in UNIT["Service"] if k == "Environment")
    assert _unit_value("EnvironmentFile").lstrip("-") == "/etc/default/outage-exporter"
    for env, region in ((defaults, None), ({**defaults, **_env_file()}, "eu-west")):
        argv = _expand(_unit_value("ExecStart"), env)
        assert argv[0] == "/opt/outage-exporter/bin/outage-exporter"
        ns = build_parser().parse_args(argv[1:])
        assert ns.config_file == "/etc/outage-exporter/config.yml"
        assert ns.listen == ("0.0.0.0", 19115) and ns.region == region


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # optional tool: the checks above still ran
        pytest.skip("systemd-analyze not installed")
    # verify requires the executables to exist: point them at ones that do on this machine.
    text = SYSTEMD_UNIT.read_text().replace("/opt/outage-exporter/bin/outage-exporter", sys.executable)
    text = text.replace("/bin/kill", shutil.which("kill") or "/bin/kill")
    unit = tmp_path / "outage-exporter.service"
    unit.write_text(text)
    run = run_tool([analyze, "verify", str(unit)], cwd=tmp_path)
    assert run.ok and not run.output, run
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace("ProtectSystem=strict", "ProtectSystem=sometimes"))
    run = run_tool([analyze, "verify", str(broken)], cwd=tmp_path)
    assert "ProtectSystem" in run.output or "protect system" in run.output.lower(), run


# --- Prometheus scrape configs ------------------------------------------------------------------------------

def test_example_prometheus_configs_pass_promtool():
    configs = sorted(PROMETHEUS_EXAMPLES.glob("*.yml"))
    assert {c.name for c in configs} >= {"scheduled.yml", "probe-mode.yml"}
    for config in configs:
        _promtool_check_config(config)


def test_scheduled_mode_honors_the_exporters_labels_and_loads_the_rules():
    config = yaml.safe_load((PROMETHEUS_EXAMPLES / "scheduled.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == EXPORTER_JOB]
    assert job["honor_labels"] is True
    assert all(group["labels"]["region"] for group in job["static_configs"])
    patterns = [(PROMETHEUS_EXAMPLES / p).resolve() for p in config["rule_files"]]
    assert sorted(p for pattern in patterns for p in pattern.parent.glob(pattern.name)) == rule_files()


def test_probe_mode_uses_the_blackbox_relabelling():
    config = yaml.safe_load((PROMETHEUS_EXAMPLES / "probe-mode.yml").read_text())
    probe_jobs = [j for j in config["scrape_configs"] if j.get("metrics_path") == "/probe"]
    assert probe_jobs
    for job in probe_jobs:
        relabel = job["relabel_configs"]
        assert relabel[0] == {"source_labels": ["__address__"], "target_label": "__param_target"}
        assert relabel[1] == {"source_labels": ["__param_target"], "target_label": "instance"}
        assert relabel[-1]["target_label"] == "__address__" and relabel[-1]["replacement"].endswith(":19115")
        assert job["params"]["module"]
    assert any({"source_labels": ["region"], "target_label": "__param_region"} in j["relabel_configs"]
               for j in probe_jobs)
    (own,) = [j for j in config["scrape_configs"] if j["job_name"] == EXPORTER_JOB]
    assert own["honor_labels"] is True


# --- docs ---------------------------------------------------------------------------------------------------

def test_deploy_doc_points_at_every_artefact():
    text = DOC.read_text()
    artefacts = ["Dockerfile", ".dockerignore", "deploy/compose/compose.yaml", "deploy/compose/generate.py",
                 "deploy/kubernetes/generate.py", "deploy/systemd/outage-exporter.service",
                 "deploy/prometheus/scheduled.yml", "deploy/prometheus/probe-mode.yml", "exporter/lab/sink.py"]
    artefacts += [f"deploy/kubernetes/overlays/{p.name}" for p in overlays()]
    for artefact in artefacts:
        assert artefact in text, f"docs/deploy.md does not mention {artefact}"
    assert "docker compose up" in text


def test_sink_json_line_shape_is_documented():
    async def one() -> str:
        out = io.StringIO()
        sink = await LoggingSink("127.0.0.1", 0, out=out).start()
        try:
            async with aiohttp.ClientSession() as http, http.post(f"{sink.base_url}/pager", json=PAYLOAD):
                pass
        finally:
            await sink.stop()
        return out.getvalue()

    record = json.loads(asyncio.run(one()))
    text = DOC.read_text()
    for key in record:
        assert f'"{key}"' in text, f"docs/deploy.md does not show the sink's {key!r} field"
