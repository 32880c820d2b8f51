"""What one evaluation of the board can reuse from the previous one: a check whose runs, vantage and
resolver verdicts are unchanged is judged the same while none of its runs leaves the window and the
weights cannot tip a ratio (exporter.state.window.summarize says until when). The web application
evaluates every few seconds; a check run less often than that keeps its judgement, as the very same
objects (no work, and nothing new for the garbage collector to scan)."""

from __future__ import annotations

from collections.abc import Sequence

from exporter.checks import Check
from exporter.results import Sample
from exporter.state.cells import Judged, judge_check
from exporter.state.model import CellStatus

CellContext = tuple[bool, str | None, frozenset[str]]  # vantage ok, the region's verdict reason, failing resolvers
_Cell = tuple[tuple[Judged, ...], CellContext, CellStatus, dict[str, bool]]


class Memo:
    """The last evaluation's reusable judgements by check key and cells by (service, region), replaced as a
    whole by each evaluation (so removed checks drop out)."""

    __slots__ = ("judged", "cells")

    def __init__(self) -> None:
        self.judged: dict[str, Judged] = {}
        self.cells: dict[tuple[str, str], _Cell] = {}


class Judging:
    """One evaluation's use of a :class:`Memo`: reuse what still holds, remember what was judged."""

    __slots__ = ("_memo", "_previous", "_kept", "_cells", "_kept_cells")

    def __init__(self, memo: Memo | None) -> None:
        self._memo = memo
        self._previous = memo.judged if memo is not None else {}
        self._cells = memo.cells if memo is not None else {}
        self._kept: dict[str, Judged] = {}
        self._kept_cells: dict[tuple[str, str], _Cell] = {}

    def judge(self, check: Check, region: str, samples: Sequence[Sample], now: float, window: float, *,
              vantage_ok: bool, resolver_ok: bool) -> Judged:
        """:func:`exporter.state.cells.judge_check`, or the previous judgement when it provably holds."""
        key = check.key
        j = self._previous.get(key)
        if (j is not None and j.status.check is check and j.at <= now and now - window < j.steady_before
                and j.window == window and j.vantage_ok == vantage_ok and j.resolver_ok == resolver_ok
                and j.status.region == region and j.samples == samples):
            self._kept[key] = j
            return j
        j = judge_check(check, region, samples, now, window, vantage_ok=vantage_ok, resolver_ok=resolver_ok)
        if self._memo is not None and now - window < j.steady_before:
            self._kept[key] = j
        return j

    def cell(self, key: tuple[str, str], judged: Sequence[Judged], context: CellContext
             ) -> tuple[CellStatus, dict[str, bool]] | None:
        """The previous evaluation's cell (and its counted signals) when it was made of the very same
        judgements in the same context: a cell is a function of those alone, ``since`` aside."""
        prev = self._cells.get(key)
        if (prev is None or prev[1] != context or len(prev[0]) != len(judged)
                or not all(a is b for a, b in zip(prev[0], judged, strict=True))):
            return None
        self._kept_cells[key] = prev
        return prev[2], prev[3]

    def keep_cell(self, key: tuple[str, str], judged: Sequence[Judged], context: CellContext, cell: CellStatus,
                  found: dict[str, bool]) -> None:
        """Offer a cell to the next evaluation; only worth it when each of its judgements can be reused."""
        if self._memo is not None and all(self._kept.get(j.status.check.key) is j for j in judged):
            self._kept_cells[key] = (tuple(judged), context, cell, found)

    def done(self) -> None:
        if self._memo is not None:
            self._memo.judged, self._memo.cells = self._kept, self._kept_cells
