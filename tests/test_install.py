"""The install is reproducible: the README's commands, CI and the image all install the pinned set."""

from __future__ import annotations

import os
import re
import tomllib
from importlib import metadata
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
            continue  # an extra this install does not use (uvloop)
        assert installed == version, f"{name} {installed} is installed, constraints.txt pins {version}"
