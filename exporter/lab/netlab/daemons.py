"""Long-running programs inside a lab namespace (knotd, unbound, nginx, the exporter, Prometheus).

Each runs in the foreground under ``ip netns exec`` (which execs it, so the pid is the program's own), with
stdout and stderr in a log file of the lab's work directory, and is stopped with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from exporter.lab.netlab.netns import Namespaces, NetlabError

STOP_TIMEOUT = 5.0

# program -> the Debian package that ships it (for error messages and scripts/install-test-tools)
PACKAGES = {"knotd": "knot", "knotc": "knot", "unbound": "unbound", "unbound-control": "unbound",
            "nginx": "nginx-light", "ip": "iproute2"}


def binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise NetlabError(f"{name} is not installed (Debian: apt-get install {PACKAGES.get(name, name)})")
    return path


def missing_programs() -> list[str]:
    """Programs of the real backend not installed (empty when it can run)."""
    return [p for p in PACKAGES if shutil.which(p) is None and shutil.which(p, path="/usr/sbin:/sbin") is None]


class Daemon:
    def __init__(self, name: str, netns: Namespaces, ns: str, argv: Sequence[str], log: Path, *,
                 cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.cwd = cwd
        self.env = env
        self.ns = ns
        self.argv = list(argv)
        self.log = log
        self._netns = netns
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self._netns.exec_argv(self.ns, self.argv), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         cwd=self.cwd, env=self.env)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        """Raise if the program exited (with the end of its log)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise NetlabError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def signal(self, signum: int) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signum)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, daemons: Sequence[Daemon] = ()) -> None:
    """Poll ``predicate()`` until true; fail early when one of ``daemons`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        for d in daemons:
            d.check()
        if predicate():
            return
        if time.monotonic() > deadline:
            raise NetlabError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.05)
