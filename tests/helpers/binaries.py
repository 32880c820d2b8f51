"""Find external programs the tests drive. A missing one skips the test locally and fails it in CI (CI=true),
so a CI image that lost a package cannot turn a suite green by skipping."""

from __future__ import annotations

import os
import shutil

import pytest

INSTALL_HINT = "Debian: apt-get install {package}; or run scripts/install-test-tools"


def require_binary(*names: str, package: str | None = None) -> str:
    """Path of the first of ``names`` found on PATH (or as an absolute path); skip or fail when none is."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    hint = INSTALL_HINT.format(package=package or names[0])
    message = f"{' / '.join(names)} not installed ({hint})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)
