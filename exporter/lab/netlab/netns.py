"""Network namespaces, veth links and processes inside them, driven through iproute2 (``ip``).

Every namespace of one lab shares a run prefix ``olab<pid>x<random>-`` (``RUN_BASE`` + owner pid), so
parallel labs never collide and a stale lab (its owner process gone) can be found and removed without
touching anything else: :func:`cleanup_stale` only deletes namespaces with that base whose owner pid is dead.

Code that must talk from inside a namespace (a DNS query from a region, an HTTP scrape from the central
namespace) runs in a thread that joined it with ``setns(2)``: the network namespace is per thread, and a
socket keeps the namespace it was created in (:func:`run_in`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("exporter.lab.netlab")

RUN_BASE = "olab"
NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_RUN_RE = re.compile(rf"^{RUN_BASE}(\d+)x[0-9a-f]+-")

T = TypeVar("T")


class NetlabError(RuntimeError):
    """A command building or driving the lab failed; the message carries the command and its output."""


def ip_binary() -> str:
    path = shutil.which("ip")
    if path is None:
        raise NetlabError("the ip command (iproute2) is not installed")
    return path


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a short command (``ip ...``, ``knotc ...``); raises NetlabError with its output on failure."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=30)
    if check and proc.returncode != 0:
        raise NetlabError(f"{' '.join(argv)}: exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()}")
    return proc


def new_prefix() -> str:
    return f"{RUN_BASE}{os.getpid()}x{secrets.token_hex(3)}-"


def list_namespaces() -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_namespaces() -> list[str]:
    """Lab namespaces whose owner process is gone (only names with the lab's own run prefix)."""
    out = []
    for name in list_namespaces():
        m = _RUN_RE.match(name)
        if m and not _pid_alive(int(m.group(1))):
            out.append(name)
    return out


def cleanup_stale() -> list[str]:
    """Delete the namespaces (and kill their processes) of labs whose owner died without tearing down."""
    names = stale_namespaces()
    for name in names:
        delete_namespace(name)
    if names:
        log.info("removed %d stale lab namespaces", len(names))
    return names


def namespace_pids(name: str) -> list[int]:
    proc = run(ip_binary(), "netns", "pids", name, check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def delete_namespace(name: str) -> None:
    """Kill what still runs in the namespace, then delete it (its veth ends go with it)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = namespace_pids(name)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if not pids:
            break
        _wait_gone(pids, 2.0)
    run(ip_binary(), "netns", "delete", name, check=False)


def _wait_gone(pids: list[int], timeout: float) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
        time.sleep(0.05)


class Namespaces:
    """The namespaces of one lab run: created on demand, all deleted by :meth:`delete_all`."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix or new_prefix()
        self.created: list[str] = []
        self._ip = ip_binary()

    def full(self, short: str) -> str:
        return f"{self.prefix}{short}"

    def create(self, short: str) -> str:
        name = self.full(short)
        run(self._ip, "netns", "add", name)
        self.created.append(name)
        self.ip(name, "link", "set", "lo", "up")
        for scope in ("all", "default"):  # IPv4 only: no link-local IPv6 either
            self.sysctl(name, f"net.ipv6.conf.{scope}.disable_ipv6", "1")
        return name

    def ip(self, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(self._ip, "-n", ns, *args, check=check)

    def exec_argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        """The argv that runs ``argv`` inside ``ns`` (``ip netns exec`` replaces itself with the program)."""
        return [self._ip, "netns", "exec", ns, *argv]

    def sysctl(self, ns: str, key: str, value: str) -> None:
        run(*self.exec_argv(ns, ["sysctl", "-q", "-w", f"{key}={value}"]))

    def veth(self, ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
        """A veth pair with one end in each namespace (names are per namespace, so runs never clash)."""
        self.ip(ns_a, "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b)
        self.ip(ns_a, "link", "set", name_a, "up")
        self.ip(ns_b, "link", "set", name_b, "up")

    def delete_all(self) -> None:
        for name in reversed(self.created):
            delete_namespace(name)
        self.created.clear()


def _setns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / name, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in(ns: str, fn: Callable[[], T], timeout: float | None = 60.0) -> T:
    """Call ``fn()`` in a fresh thread that joined network namespace ``ns``; returns or raises its outcome."""
    box: dict[str, object] = {}

    def body() -> None:
        try:
            _setns(ns)
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=body, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"call inside namespace {ns} still running after {timeout} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def http_get(ns: str, host: str, port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, str]:
    """GET over a connection made from inside ``ns`` (no proxies from the environment); (status, body)."""
    import http.client

    def get() -> tuple[int, str]:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()
    return run_in(ns, get, timeout + 5)


async def arun_in(ns: str, fn: Callable[[], T], timeout: float | None = 60.0) -> T:
    import asyncio

    return await asyncio.to_thread(run_in, ns, fn, timeout)
