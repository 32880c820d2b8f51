"""The parent <-> worker protocol: length-prefixed pickled messages over a Unix socket pair.

Both ends are this program, started by the parent, so pickle is safe here and carries ``Check`` and
``ProbeResult`` objects as they are. Read-only mappings (``MappingProxyType``) travel as plain dicts and
come back read-only.

Parent to worker: ``Plan(checks, concurrency)`` (start or reload: the worker's whole share) and
``Stop(wait)``. Worker to parent: ``Batch(results, stats)``, every few milliseconds while results arrive
and at least once a second.
"""

from __future__ import annotations

import asyncio
import copyreg
import io
import pickle
import struct
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from exporter.checks import Check
from exporter.probers.result import ProbeResult

_HEADER = struct.Struct("!I")
MAX_MESSAGE_BYTES = 1 << 30  # a plan of 100k checks is tens of MB; anything near this is a broken peer


@dataclass(frozen=True, slots=True)
class Plan:
    """The worker's share of the checks and its part of ``defaults.concurrency``."""

    checks: tuple[Check, ...]
    concurrency: int


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop probing (in-flight probes get ``wait`` seconds) and exit."""

    wait: float


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """A worker's scheduler counters since it started (the parent sums them over workers)."""

    checks: int = 0
    in_flight: int = 0
    lag_counts: tuple[int, ...] = ()
    lag_sum: float = 0.0
    skipped_total: int = 0
    late_total: int = 0


@dataclass(frozen=True, slots=True)
class Batch:
    """Results finished since the previous batch, as (check key, result), and the current counters."""

    results: tuple[tuple[str, ProbeResult], ...]
    stats: WorkerStats


def read_only(mapping: dict) -> MappingProxyType:
    """Unpickling a read-only mapping (the type itself has no importable name)."""
    return MappingProxyType(mapping)


def _reduce_mapping_proxy(proxy: MappingProxyType) -> tuple[Any, tuple[dict]]:
    return read_only, (dict(proxy),)


_DISPATCH = copyreg.dispatch_table.copy()
_DISPATCH[MappingProxyType] = _reduce_mapping_proxy


def encode(message: object) -> bytes:
    """One framed message."""
    buffer = io.BytesIO()
    buffer.write(b"\0\0\0\0")
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _DISPATCH
    pickler.dump(message)
    frame = buffer.getbuffer()
    _HEADER.pack_into(frame, 0, len(frame) - _HEADER.size)
    return bytes(frame)


async def read(reader: asyncio.StreamReader) -> object | None:
    """The next message, or None at end of stream (the other end exited or closed the socket)."""
    try:
        (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
        if size > MAX_MESSAGE_BYTES:
            raise ValueError(f"message of {size} bytes is over the limit")
        return pickle.loads(await reader.readexactly(size))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
