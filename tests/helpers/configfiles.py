"""Config files for tests: blackbox.yml with the files it refers to (CA, client certificate, token),
generated configs, and ``--config.check`` runs on them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTDATA = ROOT / "tests" / "testdata"
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


def config_check(path: str | Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``outage-exporter --config.check`` on ``path``, as an operator runs it before a reload."""
    return subprocess.run([sys.executable, "-m", "exporter", "--config.file", str(path), "--config.check", *extra],
                          capture_output=True, text=True, timeout=30, cwd=ROOT, check=False)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused config (exit status 1, no traceback)."""
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def amplified(services: int, targets: int, *, max_checks: int | None = None) -> str:
    """A small config whose aliases repeat one check list of ``targets`` URLs over ``services`` services."""
    urls = ", ".join(f'"http://127.0.0.1:1/{i}"' for i in range(targets))
    defaults = f"defaults: {{max_checks: {max_checks}}}\n" if max_checks else ""
    lines = [defaults + "modules: {web: {prober: http}}", "regions: [{name: local, resolvers: ['127.0.0.1:1']}]",
             "services:", f"  - {{name: s0, checks: &c [{{name: c, module: web, targets: &t [{urls}]}}]}}"]
    lines += [f"  - {{name: s{i}, checks: *c}}" for i in range(1, services)]
    return "\n".join(lines) + "\n"
