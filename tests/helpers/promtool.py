"""Run ``promtool`` from tests. Missing promtool skips locally and fails in CI (``CI=true``)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def promtool_path() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not installed (Debian: apt-get install prometheus; or run scripts/install-test-tools)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


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
