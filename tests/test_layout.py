"""Tests mirror modules: every module of ``exporter/`` with behaviour of its own has a test file of its own.

A module has behaviour when it defines a function or a method; one holding only constants, plain data
classes or re-exports has none. Its tests live in ``tests/test_<package>_<module>.py``
(``exporter/state/board.py`` -> ``tests/test_state_board.py``), in ``tests/test_<module>.py`` when that file
imports it (``tests/test_authoritative.py`` tests the prober, not its namesakes in exporter/lab or
exporter/exposition), or, for a module whose tests carry another name, in the files
:data:`TESTED_UNDER_ANOTHER_NAME` lists, each of which must import it.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "exporter"

# Modules whose tests carry another name: each file must exist and import the module.
TESTED_UNDER_ANOTHER_NAME: dict[str, tuple[str, ...]] = {
    "exporter.checks": ("tests/test_config.py", "tests/test_sharding.py"),
    "exporter.config.durations": ("tests/test_config.py",),
    "exporter.config.errors": ("tests/test_config.py",),  # the tests/testdata/invalid-*.yml table
    "exporter.config.loader": ("tests/test_config.py",),
    "exporter.config.references": ("tests/test_config_limits.py",),
    "exporter.discovery": ("tests/test_authoritative.py",),
    "exporter.eventloop": ("tests/test_probe_timing.py",),
    "exporter.exposition.probe": ("tests/test_exposition.py",),
    "exporter.exposition.scheduled": ("tests/test_exposition.py",),
    "exporter.lab.certs": ("tests/test_lab_world.py",),
    "exporter.lab.edges": ("tests/test_lab_world.py",),
    "exporter.lab.labconfig": ("tests/test_authoritative.py",),
    "exporter.lab.notification": ("tests/test_notification_templates.py",),
    "exporter.lab.ris": ("tests/test_routing.py",),
    "exporter.lab.scenario": ("tests/test_scenarios.py",),
    "exporter.lab.sink": ("tests/test_deploy.py",),
    "exporter.lab.stack": ("tests/test_alerts_e2e.py",),
    "exporter.lab.statuspage": ("tests/test_routing.py",),
    "exporter.logs": ("tests/test_new_user.py",),
    "exporter.looplag": ("tests/test_scheduler.py",),
    "exporter.probers": ("tests/test_resolver_matrix.py",),
    "exporter.probers.clock": ("tests/test_probe_timing.py",),
    "exporter.probers.dns": ("tests/test_dns_prober.py",),
    "exporter.probers.dnsanswer": ("tests/test_dns_prober.py", "tests/test_dns_strict.py"),
    "exporter.probers.errors": ("tests/test_tcp_prober.py",),
    "exporter.probers.http": ("tests/test_http_prober.py",),
    "exporter.probers.httpsession": ("tests/test_probers_shared.py",),
    "exporter.probers.tcp": ("tests/test_tcp_prober.py",),
    "exporter.probers.tlsutil": ("tests/test_tcp_prober.py",),
    "exporter.probers.udpmux": ("tests/test_probe_timing.py", "tests/hostile/test_dns_peers.py"),
    "exporter.routing.decision": ("tests/test_routing.py",),
    "exporter.routing.feed": ("tests/test_routing.py",),
    "exporter.routing.state": ("tests/test_routing.py",),
    "exporter.server": ("tests/test_runtime.py",),
    "exporter.statuspage": ("tests/test_routing.py",),
    "exporter.web.app": ("tests/test_web.py",),
    "exporter.web.landing": ("tests/test_status_api.py",),
    "exporter.web.probeguard": ("tests/test_probe_policy.py",),
    "exporter.web.webconfig": ("tests/test_web_config.py",),
    "exporter.workers.pool": ("tests/test_workers.py",),
    "exporter.workers.wire": ("tests/test_workers.py", "tests/test_workers_child.py"),
}
# Modules tested by running the exporter as a program (``python -m exporter``) rather than importing them.
RUN_AS_A_PROGRAM: dict[str, str] = {"exporter.cli": "tests/test_cli.py"}
# Packages tested as a whole: they need root (network namespaces), so their tests build the world end to end.
TESTED_AS_A_WHOLE: dict[str, tuple[str, ...]] = {
    "exporter.lab.netlab": ("tests/test_netlab.py", "tests/test_netlab_config.py"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def has_behaviour(source: str) -> bool:
    """A function or method anywhere: constants, plain data classes and re-exports are not behaviour."""
    return any(isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) for node in ast.walk(ast.parse(source)))


def imports(source: str, module: str) -> bool:
    """Whether ``source`` imports ``module`` itself (``import m``, ``from m import x``, ``from pkg import m``,
    or ``from pkg import x`` where pkg re-exports x from m), at any depth (a function-level import counts)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(alias.name == module for alias in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module and not node.level and module in _from(node):
            return True
    return False


def _from(node: ast.ImportFrom) -> set[str | None]:
    """The modules a ``from`` import reaches: its own, each name that is a module, each re-exported name's."""
    base = node.module or ""
    return {base} | {f"{base}.{alias.name}" for alias in node.names} | {
        reexports(base).get(alias.name) for alias in node.names}


@cache
def reexports(package: str) -> dict[str, str]:
    """Names a package of exporter/ re-exports from its own modules: name -> the module defining it."""
    init = PACKAGE.parent.joinpath(*package.split("."), "__init__.py")
    if not package.startswith("exporter") or not init.is_file():
        return {}
    out = {}
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level <= 1:
            origin = node.module if not node.level else ".".join(filter(None, (package, node.module)))
            out.update({alias.asname or alias.name: origin or package for alias in node.names})
    return out


def conventional_tests(module: str) -> tuple[str, ...]:
    """``tests/test_<module>.py`` and ``tests/test_<package>_<module>.py`` (a package counts as its module)."""
    parts = module.split(".")[1:]
    names = [f"tests/test_{parts[-1]}.py"]
    if len(parts) > 1:
        names.append(f"tests/test_{parts[-2]}_{parts[-1]}.py")
    return tuple(names)


def modules_with_behaviour() -> dict[str, Path]:
    found = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    return {name: path for name, path in found.items() if has_behaviour(path.read_text())}


def _within(module: str, packages: dict) -> str | None:
    return next((p for p in packages if module == p or module.startswith(p + ".")), None)


def _imports_file(rel: str, module: str) -> bool:
    path = ROOT / rel
    return path.is_file() and imports(path.read_text(), module)


def _whole_package_tested(package: str) -> bool:
    """One of the package's test files imports one of its modules."""
    inside = [m for m in (module_name(p) for p in PACKAGE.rglob("*.py")) if _within(m, {package: None})]
    return any(_imports_file(rel, m) for rel in TESTED_AS_A_WHOLE[package] for m in inside)


def has_conventional_test(module: str) -> bool:
    """``tests/test_<package>_<module>.py`` names one module, so existing is enough; a bare
    ``tests/test_<module>.py`` may be about a namesake in another package, so it must import the module."""
    bare, *qualified = conventional_tests(module)
    return _imports_file(bare, module) or any((ROOT / rel).is_file() for rel in qualified)


def untested(module: str) -> bool:
    if has_conventional_test(module):
        return False
    if module in TESTED_UNDER_ANOTHER_NAME:
        return False  # checked entry by entry below
    if module in RUN_AS_A_PROGRAM:
        return False
    package = _within(module, TESTED_AS_A_WHOLE)
    return package is None or not _whole_package_tested(package)


def test_every_module_with_behaviour_has_a_test_file() -> None:
    missing = [m for m in modules_with_behaviour() if untested(m)]
    assert not missing, ("modules without a test file (add tests/test_<package>_<module>.py, or map the file "
                         f"that imports and tests it in TESTED_UNDER_ANOTHER_NAME): {missing}")


def test_every_mapped_file_exists_and_imports_its_module() -> None:
    behaving = modules_with_behaviour()
    for module, files in TESTED_UNDER_ANOTHER_NAME.items():
        assert module in behaving, f"{module}: no such module with behaviour; drop its entry"
        for rel in files:
            assert _imports_file(rel, module), f"{module}: {rel} does not exist or does not import it"
        assert not has_conventional_test(module), f"{module}: its test file follows the convention; drop its entry"


def test_programs_and_whole_packages_point_at_real_tests() -> None:
    for module, rel in RUN_AS_A_PROGRAM.items():
        assert module in modules_with_behaviour(), module
        assert '"-m", "exporter"' in (ROOT / rel).read_text(), f"{rel} does not run the exporter"
    for package in TESTED_AS_A_WHOLE:
        assert _whole_package_tested(package), f"{package}: none of its test files imports it"


# --- the rules themselves --------------------------------------------------------------------------------

def test_only_functions_and_methods_are_behaviour() -> None:
    assert not has_behaviour("X = 1\nfrom a import b\n__all__ = ['b']\n")
    assert not has_behaviour("from dataclasses import dataclass\n@dataclass\nclass A:\n    x: int = 0\n")
    assert has_behaviour("class A:\n    @property\n    def x(self) -> int:\n        return 1\n")
    assert has_behaviour("async def f() -> None:\n    pass\n")


def test_a_test_file_imports_the_module_itself_not_a_sibling() -> None:
    assert imports("from exporter.state import board\n", "exporter.state.board")
    assert imports("def t():\n    from exporter.state.board import Board\n", "exporter.state.board")
    assert imports("import exporter.state.board as b\n", "exporter.state.board")
    assert imports("from exporter.state import Board\n", "exporter.state.board")  # re-exported from there
    assert not imports("from exporter.state import Board\n", "exporter.state.model")
    assert not imports("from exporter.state.boardroom import x\n", "exporter.state.board")
    assert conventional_tests("exporter.state.board") == ("tests/test_board.py", "tests/test_state_board.py")
    assert conventional_tests("exporter.vantage") == ("tests/test_vantage.py",)
