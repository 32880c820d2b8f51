"""Where and with what the benchmark ran: machine, versions, command and date, for the report."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from benchmarks.exporters import REPO, blackbox_binary
from benchmarks.targets import find

EVENT_LOOP_ENV = "OUTAGE_EXPORTER_EVENT_LOOP"
_WHICH_LOOP = "from exporter import eventloop; print(eventloop.choose()[0])"
# The distributions a probe's cost depends on: the exporter's direct dependencies, the event loop, and what
# aiohttp is built from (its URL, header and parser libraries change the cost per request between releases).
PACKAGES = ("aiohttp", "dnspython", "prometheus-client", "pyyaml", "uvloop", "yarl", "multidict", "propcache",
            "frozenlist", "aiohappyeyeballs", "aiosignal", "bcrypt")


@dataclass(frozen=True)
class Machine:
    date: str
    command: str
    nproc: int
    cpu_model: str
    kernel: str
    load_average: str  # at the start: a busy machine makes every figure noisier
    pinning: str
    python: str
    exporter: str
    event_loop: str  # the exporter's event loop: uvloop's clock has 1 ms resolution, asyncio's does not
    blackbox: str
    nginx: str
    dns_server: str
    packages: dict[str, str] = field(default_factory=dict)  # distribution -> version ("absent" if not installed)

    def to_json(self) -> dict:
        return asdict(self)


def describe(command: str, pinning: str, dns_software: str) -> Machine:
    return Machine(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command=command,
        nproc=os.cpu_count() or 0,
        cpu_model=_cpu_model(),
        kernel=platform.release(),
        load_average=" ".join(f"{x:.2f}" for x in os.getloadavg()),
        pinning=pinning,
        python=platform.python_version(),
        exporter=_exporter_version(),
        event_loop=_event_loop(),
        blackbox=_version([blackbox_binary(), "--version"], r"version (\S+)"),
        nginx=_version([find("nginx"), "-v"], r"nginx/(\S+)"),
        dns_server=_dns_version(dns_software),
        packages=package_versions(),
    )


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions as the exporter's interpreter (this one: it is started with ``sys.executable``) sees
    them, so two runs' figures can be told apart by what they ran with."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _run(cmd: list[str | None], cwd: Path | None = None) -> str:
    if cmd[0] is None:
        return ""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=cwd)  # type: ignore[arg-type]
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout + done.stderr


def _version(cmd: list[str | None], pattern: str) -> str:
    match = re.search(pattern, _run(cmd))
    return match.group(1) if match else "unknown"


def _exporter_version() -> str:
    version = _version([sys.executable, "-m", "exporter", "--version"], r"outage-exporter (\S+)")
    commit = _run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO).strip()
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no", "--", "exporter"], cwd=REPO).strip()
    if commit and not commit.startswith("fatal"):
        version += f" (git {commit}{', exporter/ modified' if dirty else ''})"
    return version


def _dns_version(software: str) -> str:
    if software == "knot":
        return "knot " + _version([find("knotd"), "--version"], r"version (\S+)")
    if software == "nsd":
        return "nsd " + _version([find("nsd"), "-v"], r"NSD version (\S+)")
    return software


def _event_loop() -> str:
    """The loop the exporter picks in this environment (versions without a choice run asyncio's)."""
    out = _run([sys.executable, "-c", _WHICH_LOOP], cwd=REPO).strip().splitlines()
    return out[-1] if out and out[-1] in ("uvloop", "asyncio") else "asyncio"
