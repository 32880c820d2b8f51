"""Child processes of the harness: CPU pinning, start/stop with a log file, and /proc readings.

Every process the harness starts goes through :class:`Managed`, so each one is pinned the same way, logs to
the run's temp directory, and is stopped by its own pid (never by name).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.processes import terminate

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Cores:
    """Which CPUs the prober under test gets and which everything else (targets, driver) gets.

    On a machine with one usable CPU nothing is pinned: both sets are empty and commands run as given.
    """

    prober: tuple[int, ...]
    others: tuple[int, ...]

    @classmethod
    def plan(cls) -> Cores:
        usable = sorted(os.sched_getaffinity(0))
        if len(usable) < 2 or shutil.which("taskset") is None:
            return cls((), ())
        return cls((usable[0],), tuple(usable[1:]))

    @property
    def pinned(self) -> bool:
        return bool(self.prober)

    def pin_harness(self) -> None:
        """Move this process (the harness: its scrapes, its sampling) off the prober's CPU. Left there, it
        takes turns with the exporter it measures, and a timed ``GET /metrics`` (54 MB at 10k checks) times
        the harness's own reading as much as the exporter's answer."""
        if self.pinned:
            os.sched_setaffinity(0, self.others)

    def describe(self) -> str:
        if not self.pinned:
            return "not pinned (fewer than 2 CPUs or no taskset)"
        return (f"prober on CPU {_cpulist(self.prober)}, targets, load driver and harness on CPU "
                f"{_cpulist(self.others)}")


def _cpulist(cpus: Sequence[int]) -> str:
    return ",".join(str(c) for c in cpus)


def pinned(cmd: Sequence[str], cpus: Sequence[int]) -> list[str]:
    """``cmd`` run under ``taskset -c`` (taskset execs, so the pid stays the command's own)."""
    if not cpus:
        return list(cmd)
    return ["taskset", "-c", _cpulist(cpus), *cmd]


class Managed:
    """One child process with its output in ``log``; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, cmd: Sequence[str], *, log: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None, stdin: int | None = subprocess.DEVNULL,
                 stdout: int | None = None) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(self.cmd, cwd=cwd, env=env, stdin=stdin,
                                     stdout=self._out if stdout is None else stdout, stderr=self._out)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_until(self, ready: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Poll ``ready`` until it is true; raise with the log tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before {what}\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: {what} not reached within {timeout:.0f}s\n{self.tail()}")
            time.sleep(0.05)

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        terminate(self.proc, timeout)
        self._out.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15)


def rss_bytes(pid: int) -> int:
    """Resident set size now, from /proc/<pid>/statm."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


def peak_rss_bytes(pid: int) -> int:
    """High-water mark of the resident set (VmHWM) since the process started."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """Whether GET ``url`` answers 200 (connection errors count as not yet)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback only)
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def http_get(url: str, timeout: float = 120.0) -> tuple[bytes, float]:
    """Body of GET ``url`` and the client-side time it took (request sent to last byte read), in seconds."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback only)
        body = resp.read()
    return body, time.perf_counter() - started


_SINK = memoryview(bytearray(1 << 20))  # timed_get reads every body through this one buffer


def timed_get(url: str, timeout: float = 120.0) -> tuple[int, float]:
    """The size of GET ``url``'s body and the client-side time it took, read as a scraper reads it: through
    one reused buffer. Reading a 54 MB body into new memory, as ``http_get`` does, costs the client a page
    fault per 4 KiB; on a virtual machine that is more than the exporter's answer, and Prometheus parses
    as it reads instead."""
    started = time.perf_counter()
    size = 0
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback only)
        while n := resp.readinto(_SINK):
            size += n
    return size, time.perf_counter() - started


def free_port(host: str = "127.0.0.1", *, udp_too: bool = False) -> int:
    """A TCP port free on ``host`` a moment ago (and free for UDP too, with ``udp_too``)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            if not udp_too:
                return port
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind((host, port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port found")
