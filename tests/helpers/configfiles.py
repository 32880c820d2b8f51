"""Config files for tests that need the files a config refers to (CA, client certificate, token) to exist."""

from __future__ import annotations

from pathlib import Path

TESTDATA = Path(__file__).resolve().parents[1] / "testdata"
BLACKBOX_FILES_DIR = "/etc/prober/"  # where tests/testdata/blackbox.yml expects its CA, certificate and token
BLACKBOX_FILES = ("token", "ca.pem", "client.pem", "client-key.pem")


def blackbox_yml(directory: Path) -> Path:
    """tests/testdata/blackbox.yml copied to ``directory``, its files (empty) under ``directory/prober/``."""
    files = directory / "prober"
    files.mkdir(parents=True, exist_ok=True)
    for name in BLACKBOX_FILES:
        (files / name).write_text("")
    path = directory / "blackbox.yml"
    path.write_text((TESTDATA / "blackbox.yml").read_text().replace(BLACKBOX_FILES_DIR, f"{files}/"))
    return path
