"""Probers: one module per protocol, each exposing ``async def probe(check, *, deadline) -> ProbeResult``.

``PROBERS`` maps a module's ``prober`` name to that function; adding a protocol means adding one module
and one line to ``_MODULES``. The map is built on first access rather than at import time so that
``exporter.probers.result`` and friends can be imported by the probers themselves without a cycle.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from exporter.checks import Check
    from exporter.probers.result import ProbeResult

__all__ = ["PROBERS", "ProberFn"]

_MODULES: dict[str, str] = {
    "http": "exporter.probers.http",
    "dns": "exporter.probers.dns",
    "tcp": "exporter.probers.tcp",
    "authoritative": "exporter.probers.authoritative",
}


class ProberFn(Protocol):
    """The signature every prober implements (see result.py for the contract)."""

    def __call__(self, check: Check, *, deadline: float) -> Awaitable[ProbeResult]: ...


PROBERS: dict[str, ProberFn]


def __getattr__(name: str) -> object:
    if name == "PROBERS":
        probers = {kind: importlib.import_module(path).probe for kind, path in _MODULES.items()}
        globals()["PROBERS"] = probers
        return probers
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
