"""The Board: evaluations plus memory (since when each cell and incident holds, each cell's last 30 minutes),
and the source that feeds it from a running exporter."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from exporter.results import ResultStore
from exporter.state.evaluation import evaluate
from exporter.state.incident import incidents
from exporter.state.memo import Memo
from exporter.state.model import DOWN, HISTORY_SLOTS, HISTORY_STEP, SEVERITY, CellStatus, Input, Snapshot, Verdicts
from exporter.state.signals import CauseSignals, declared_statuses, routing_verdicts

if TYPE_CHECKING:
    from exporter.runtime import Runtime

Source = Callable[[], tuple[list[Input], list[tuple[str, str]], Verdicts, CauseSignals]]


@dataclass(slots=True)
class _Memory:
    """A cell's since and history strip; the strip is kept as the tuple the snapshot shows, rebuilt only
    when it changes (a new slot or a worse state in the current one), not at every evaluation."""

    state: str
    since: float
    history: tuple[tuple[float, str], ...] = ()
    raw: CellStatus | None = None  # the last evaluation's cell ...
    shown: CellStatus | None = None  # ... and the one shown for it, reused while neither changes


class Board:
    """The snapshot plus what a single evaluation cannot know: since when each cell and incident holds,
    and each cell's last 30 minutes (HISTORY_SLOTS slots of HISTORY_STEP seconds, bounded in memory).

    ``source`` returns (inputs, regions, verdicts, beside) for :func:`evaluate`; call :meth:`snapshot` regularly
    (the web application does every few seconds) so the history has no holes.
    """

    def __init__(self, source: Source, *, max_age: float = 0.2) -> None:
        self._source = source
        self._cells: dict[tuple[str, str], _Memory] = {}
        self._incidents: dict[str, float] = {}
        self._last: Snapshot | None = None
        self._max_age = max_age
        self._memo = Memo()

    def snapshot(self, now: float | None = None) -> Snapshot:
        """The current snapshot; one evaluated within ``max_age`` seconds is reused."""
        now = time.time() if now is None else now
        fresh = self._fresh(now)
        if fresh is not None:
            return fresh
        inputs, regions, verdicts, beside = self._source()
        return self._adopt(evaluate(inputs, regions, now, verdicts=verdicts, beside=beside, memo=self._memo))

    async def snapshot_async(self) -> Snapshot:
        """:meth:`snapshot`, evaluated in a worker thread: at tens of thousands of checks an evaluation
        takes a few hundred milliseconds that probes and scrapes should not wait for."""
        now = time.time()
        fresh = self._fresh(now)
        if fresh is not None:
            return fresh
        inputs, regions, verdicts, beside = self._source()  # copied on the loop: the store changes only there
        raw = await asyncio.to_thread(evaluate, inputs, regions, now, verdicts=verdicts, beside=beside,
                                      memo=self._memo)
        return self._adopt(raw)

    def _fresh(self, now: float) -> Snapshot | None:
        last = self._last
        return last if last is not None and 0 <= now - last.generated_at < self._max_age else None

    def _adopt(self, raw: Snapshot) -> Snapshot:
        """Add since, history and incident times to a fresh evaluation (an older one is dropped)."""
        now = raw.generated_at
        if self._last is not None and now < self._last.generated_at:
            return self._last
        cells = tuple(self._remember(cell, now) for cell in raw.cells)
        if len(self._cells) > len(cells):  # checks were removed by a reload
            keep = {(c.service, c.region) for c in cells}
            self._cells = {k: v for k, v in self._cells.items() if k in keep}
        down = {c.provider for c in cells if c.state == DOWN and not c.control}
        self._incidents = {p: self._incidents.get(p, now) for p in down}
        beside = CauseSignals(raw.routing, raw.declared)
        self._last = replace(raw, cells=cells, incidents=incidents(cells, raw.providers, self._incidents, now,
                                                                   beside))
        return self._last

    def _remember(self, cell: CellStatus, now: float) -> CellStatus:
        key = (cell.service, cell.region)
        memory = self._cells.get(key)
        if memory is None:
            memory = self._cells[key] = _Memory(cell.state, now)
        elif memory.state != cell.state:
            memory.state, memory.since = cell.state, now
        slot = math.floor(now / HISTORY_STEP) * HISTORY_STEP
        history = memory.history
        if history and history[-1][0] == slot:
            if SEVERITY[cell.state] > SEVERITY[history[-1][1]]:
                memory.history = (*history[:-1], (slot, cell.state))
        else:
            memory.history = (*history, (slot, cell.state))[-HISTORY_SLOTS:]
        shown = memory.shown
        if shown is None or cell is not memory.raw or shown.history is not memory.history:
            shown = memory.shown = cell.remembered(memory.since, memory.history)
            memory.raw = cell
        return shown


def runtime_source(runtime: Runtime) -> Source:
    """A Board source reading a running exporter's checks, results store, regions, routing feed and
    status pages."""

    def source() -> tuple[list[Input], list[tuple[str, str]], Verdicts, CauseSignals]:
        config = runtime.config
        home = runtime.region_named(None).name if runtime.omit_region_label and config is not None else ""
        store: ResultStore = runtime.store
        inputs = []
        for check in runtime.checks:
            state = store.get(check.key)
            window = tuple(state.window) if state is not None and state.window else ()
            inputs.append(Input(check, check.region or home, window))
        probed = {i.region for i in inputs}
        all_regions = [(g.name, g.display_name) for g in config.regions] if config is not None else []
        regions = [g for g in all_regions if g[0] in probed] or all_regions
        verdicts = {}
        for v in store.vantages():
            failing = tuple(dict.fromkeys(f"{c.service}/{c.check}" for c in v.failing))
            verdicts[v.region or home] = (v.healthy, v.controls, failing, v.reason)
        beside = CauseSignals(routing_verdicts(runtime.signals.routing),
                              declared_statuses(runtime.signals.statuspages))
        return inputs, regions, verdicts, beside

    return source
