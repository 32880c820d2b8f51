"""``--workers N``: probing spread over N processes, one results store and one ``/metrics`` in the parent.

- ``pool``: the parent's side (``WorkerPool``, the Scheduler's interface for the Runtime).
- ``child``: the worker process (an ordinary Scheduler whose results go back to the parent).
- ``wire``: the messages between them.
- ``default_workers``: how many workers when ``--workers`` is not given.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def default_workers(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """The CPUs this process may use: its affinity mask, or the cgroup CPU quota if smaller; at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPUs' worth of time the cgroups of this process allow, the tightest from its cgroup up to the root:
    cgroup v2 ``cpu.max`` (``"150000 100000"`` is 1.5) or cgroup v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``
    (a container's CPU limit on older hosts). None when unlimited or unknown."""
    memberships = _memberships(proc_cgroup)
    quotas = [q for d in _v2_dirs(cgroup_root, memberships) if (q := _cpu_max(d / "cpu.max")) is not None]
    quotas += [q for d in _v1_dirs(cgroup_root, memberships) if (q := _cfs_quota(d)) is not None]
    return min(quotas) if quotas else None


def _memberships(proc_cgroup: Path) -> dict[str, str] | None:
    """/proc/self/cgroup as {controllers: path}; cgroup v2's line has no controllers (key ""). None if
    unreadable."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    out = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            out[parts[1]] = parts[2]
    return out


def _within(here: Path, base: Path) -> list[Path]:
    """``here`` and its ancestors down to ``base`` (inclusive)."""
    return [here, *(p for p in here.parents if p.is_relative_to(base))]


def _v2_dirs(root: Path, memberships: dict[str, str] | None) -> list[Path]:
    """This process's cgroup v2 directory and its ancestors up to ``root``."""
    if memberships is None or "" not in memberships:
        return [root]
    return _within(root / memberships[""].strip("/"), root)


def _v1_dirs(root: Path, memberships: dict[str, str] | None) -> list[Path]:
    """This process's cgroup v1 ``cpu`` directory and its ancestors up to the controller's mount. In a
    container the mount's root is often the container's own cgroup, so the ancestors include it."""
    if memberships is None:
        return []
    path = next((p for c, p in memberships.items() if "cpu" in c.split(",")), None)
    if path is None:
        return []
    mounts = [d for d in (root / "cpu,cpuacct", root / "cpu", root / "cpuacct,cpu") if d.is_dir()]
    return _within(mounts[0] / path.strip("/"), mounts[0]) if mounts else []


def _cfs_quota(directory: Path) -> float | None:
    """cgroup v1 ``cpu.cfs_quota_us / cpu.cfs_period_us`` as CPUs; None for -1 (unlimited) or no files."""
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def _cpu_max(path: Path) -> float | None:
    """``cpu.max`` as CPUs (``quota / period``), or None for ``max``, a missing file or nonsense."""
    try:
        fields = path.read_text().split()
        quota, period = int(fields[0]), int(fields[1]) if len(fields) > 1 else 100_000
    except (OSError, ValueError, IndexError):
        return None
    return quota / period if quota > 0 and period > 0 else None
