"""Run ``promtool`` from tests. Missing promtool skips locally and fails in CI (``CI=true``)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.helpers.tools import ToolRun, promtool, run_tool


def promtool_path() -> str:
    return promtool()


def promtool_check_metrics(text: str) -> str:
    """Everything ``promtool check metrics`` reports about an exposition; "" when it is clean."""
    proc = subprocess.run(
        [promtool_path(), "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    report = (proc.stdout + proc.stderr).decode(errors="replace").strip()
    if proc.returncode != 0 and not report:
        report = f"promtool check metrics exited with {proc.returncode}"
    return report


def promtool_check_rules(paths: Sequence[Path]) -> ToolRun:
    """``promtool check rules`` with duplicate-rule linting as an error."""
    return run_tool([promtool_path(), "check", "rules", "--lint=duplicate-rules", "--lint-fatal",
                     *map(str, paths)])


def promtool_test_rules(path: Path) -> ToolRun:
    """``promtool test rules`` on one unit-test file (rule_files resolve relative to it)."""
    return run_tool([promtool_path(), "test", "rules", path.name], cwd=path.parent)


def promtool_check_config(path: Path) -> ToolRun:
    """``promtool check config``: the config and every rule file it loads."""
    return run_tool([promtool_path(), "check", "config", str(path)])
