"""The install is reproducible: the README's commands, CI and the image all install the pinned set."""

from __future__ import annotations

import os
import re
import tomllib
import types
from importlib import metadata
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"constraints.txt: {line!r} is not an exact pin (name==version)"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"constraints.txt pins {name} twice"
        pins[name] = match.group(2)
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return [Requirement(text) for text in project["dependencies"] + [t for group in extras.values() for t in group]]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    return [block.strip() for block in blocks[:2]]


def test_every_declared_dependency_is_pinned_within_its_range():
    pins = constraints()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is declared in pyproject.toml but not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject.toml's {requirement.specifier}"


def _grafana_sdk_pin():
    loader = SourceFileLoader("grafana_sdk_pin", str(REPO / "scripts" / "grafana-sdk-pin"))
    module = types.ModuleType(loader.name)
    module.__file__ = loader.path
    loader.exec_module(module)
    return module


def test_the_grafana_sdk_pin_is_the_newest_build_for_the_composed_grafana_not_the_newest_epoch():
    pin = _grafana_sdk_pin()
    versions = ["1769699998!10.1.0", "1769699452!11.5.0", "1759917919!11.6.0", "1769699379!11.6.0",
                "1758039791!11.6.0", "1769699241", "0.0.21"]
    assert pin.newest_build(versions, "11.6.0") == "1769699379!11.6.0"
    with pytest.raises(SystemExit):
        pin.newest_build(versions, "12.0.0")
    grafana = pin.grafana_version((REPO / "deploy" / "compose" / "compose.yaml").read_text())
    assert constraints()["grafana-foundation-sdk"].split("!")[1] == grafana
    refresh = (REPO / "scripts" / "refresh-constraints").read_text()
    assert re.search(r'grafana-sdk-pin" > "\$work/(\S+)"', refresh)
    assert re.search(r'pip" install .*-c "\$work/grafana-sdk\.txt" "\$root\[test,fast\]"', refresh)


def test_the_default_install_brings_uvloop_where_it_builds():
    """The README's plain ``pip install .`` is the measured fast path, not an extra nobody picks."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    uvloop = [Requirement(t) for t in project["dependencies"] if canonicalize_name(Requirement(t).name) == "uvloop"]
    assert len(uvloop) == 1 and uvloop[0].marker is not None
    assert uvloop[0].marker.evaluate({"sys_platform": "linux", "platform_python_implementation": "CPython"})
    assert not uvloop[0].marker.evaluate({"sys_platform": "win32", "platform_python_implementation": "CPython"})
    assert not uvloop[0].marker.evaluate({"sys_platform": "linux", "platform_python_implementation": "PyPy"})


def test_readme_commands_install_the_pinned_set_and_ci_runs_the_test_command():
    demo, tests = readme_commands()
    assert "outage-exporter demo" in demo and "-c constraints.txt" in demo
    assert tests.endswith("pytest") and "-c constraints.txt" in tests
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert tests in ci, ".ci/run must run the README's test command exactly as written"


def test_image_builds_with_the_pinned_set():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^COPY .*constraints\.txt", dockerfile, re.MULTILINE)
    assert re.search(r"pip wheel .*-c constraints\.txt", dockerfile)


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="a developer's venv may hold other versions on purpose")
def test_ci_runs_on_exactly_the_pinned_versions():
    for name, version in constraints().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # a dependency this platform does not install (uvloop off CPython or on Windows)
        assert installed == version, f"{name} {installed} is installed, constraints.txt pins {version}"
