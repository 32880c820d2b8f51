"""Child processes as every harness here handles them: stopping one (SIGTERM, a bounded wait, then SIGKILL)
and finding the live children of one (the exporter's workers)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from pathlib import Path


def terminate(proc: subprocess.Popen, timeout: float) -> bool:  # type: ignore[type-arg]
    """SIGTERM ``proc`` if it still runs and wait up to ``timeout`` seconds for it, then SIGKILL it.

    False when it had to be killed, so callers that expect a clean shutdown can say so.
    """
    if proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        return False
    return True


def children(pid: int) -> list[int]:
    """Live (not zombie) child processes of ``pid``, by scanning /proc (needs no /proc/PID/task/*/children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] != "Z" and int(fields[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)
