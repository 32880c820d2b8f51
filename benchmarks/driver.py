"""Load driver: GET /probe at a fixed rate, in its own process so its CPU never counts as the prober's.

    python -m benchmarks.driver --url http://127.0.0.1:PORT/probe?module=M&target=T --rate 200

Open loop: requests are sent on a fixed timetable whether or not earlier ones have finished (up to
``--max-in-flight``; beyond that a send is counted as skipped), the way Prometheus scrapes on its own
schedule. Connections are kept alive, as Prometheus does. On each ``snap`` line on stdin it prints its
counters as one JSON line; ``quit`` or end of input stops it.

A probe counts as ``ok`` when the response is 200 and says ``probe_success 1``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from benchmarks.procs import Managed, pinned

TICK = 0.005


@dataclass
class Counters:
    sent: int = 0
    ok: int = 0  # 200 with probe_success 1
    failed: int = 0  # 200 with probe_success 0
    errors: int = 0  # not 200, or no response
    skipped: int = 0  # not sent: too many in flight

    @property
    def done(self) -> int:
        return self.ok + self.failed + self.errors


async def _one(session: aiohttp.ClientSession, url: str, counters: Counters) -> None:
    try:
        async with session.get(url) as resp:
            body = await resp.read()
    except (TimeoutError, aiohttp.ClientError, OSError):
        counters.errors += 1
        return
    if resp.status != 200:
        counters.errors += 1
    elif b"\nprobe_success 1" in b"\n" + body:
        counters.ok += 1
    else:
        counters.failed += 1


async def _drive(url: str, rate: float, max_in_flight: int, counters: Counters, stop: asyncio.Event) -> None:
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=max_in_flight, force_close=False)
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while not stop.is_set():
            due = int((loop.time() - start) * rate)
            while counters.sent + counters.skipped < due:
                if len(tasks) >= max_in_flight:
                    counters.skipped += 1
                    continue
                counters.sent += 1
                task = asyncio.create_task(_one(session, url, counters))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(TICK)
        if tasks:
            await asyncio.wait(tasks, timeout=10)


async def _commands(counters: Counters, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "snap":
            print(json.dumps({**asdict(counters), "done": counters.done, "t": time.monotonic()}), flush=True)
        elif line in ("quit", ""):
            stop.set()
            return


async def main_async(url: str, rate: float, max_in_flight: int) -> None:
    counters, stop = Counters(), asyncio.Event()
    commands = asyncio.create_task(_commands(counters, stop))
    await _drive(url, rate, max_in_flight, counters, stop)
    await commands


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.driver", description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--rate", type=float, required=True, help="requests per second")
    p.add_argument("--max-in-flight", type=int, default=256)
    ns = p.parse_args(argv)
    asyncio.run(main_async(ns.url, ns.rate, ns.max_in_flight))
    return 0


class DriverProcess:
    """The harness's handle on a running driver: :meth:`snap` returns its counters at this instant."""

    def __init__(self, url: str, rate: float, *, cpus: Sequence[int], log: Path) -> None:
        cmd = pinned([sys.executable, "-m", "benchmarks.driver", "--url", url, "--rate", f"{rate:g}"], cpus)
        self._proc = Managed("load driver", cmd, log=log, cwd=Path(__file__).resolve().parents[1],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def snap(self) -> dict:
        proc = self._proc.proc
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"snap\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load driver exited\n{self._proc.tail()}")
        return json.loads(line)

    def stop(self) -> None:
        proc = self._proc.proc
        if proc.stdin is not None and not proc.stdin.closed:
            try:
                proc.stdin.write(b"quit\n")
                proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
        self._proc.stop()
        if proc.stdout is not None:
            proc.stdout.close()


if __name__ == "__main__":
    sys.exit(main())
