"""What every benchmark shares: the run's temp directory, the CPU plan and the running targets."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.procs import Cores, http_ok
from benchmarks.targets import Targets, dns_answers


@dataclass
class Context:
    workdir: Path
    cores: Cores
    targets: Targets
    modules: Path  # the blackbox.yml both exporters load for /probe

    def subdir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def check_targets(self) -> None:
        """Fail loudly if a target stopped answering: a dead target would make every probe cheap."""
        if not http_ok(self.targets.http_url):
            raise RuntimeError(f"HTTP target {self.targets.http_url} stopped answering")
        if not dns_answers(self.targets.dns_server):
            raise RuntimeError(f"DNS target {self.targets.dns_server} stopped answering")


def sleep_until(deadline: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``deadline`` (no-op if it already has)."""
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)
