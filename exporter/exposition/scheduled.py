"""The scheduled checks in ``/metrics``: the results store rendered as exposition text.

A check's text is rendered when its result is recorded (the store calls back), into one column per family:
``cols[family][check]``. A scrape then only joins already-encoded bytes, family by family, so its cost is
a memory copy of the body rather than formatting tens of thousands of checks, and formatting is spread
over the probe interval as results arrive. Identity label strings and the lines that only change on reload
are rendered once per ``ResultStore.generation``; the first scrape after a load renders every check (the
async variant handing the event loop back every few hundred checks). Families come out in a fixed order,
each with one HELP/TYPE header, series in check load order; vantage families are small and rendered per
scrape.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass

from exporter.checks import IDENTITY_LABELS
from exporter.exposition.authoritative import AUTHORITATIVE_FAMILIES, write_zone, zone_labels
from exporter.exposition.probe import (
    RESULT_FAMILIES,
    Family,
    Pieces,
    encode_pieces,
    escape_label_value,
    format_value,
    label_pair,
    new_pieces,
    write_result,
)
from exporter.exposition.twopath import TWO_PATH_FAMILIES, write_paths
from exporter.exposition.vantage import VANTAGE_FAMILIES, write_vantages
from exporter.results import LATENCY_BUCKETS, CheckState, ResultStore

CHECK_INFO = Family(
    "outage_probe_check_info",
    "gauge",
    "One series per scheduled check (value 1) from load on: its module, prober and whether it is a control.",
)
INTERVAL = Family("outage_probe_interval_seconds", "gauge", "How often the check runs, in seconds.")
RUNS = Family("outage_probe_runs_total", "counter", "Probe runs completed since the check was loaded.")
FAILURES = Family("outage_probe_failures_total", "counter", "Failed probe runs, by failure reason.")
LATENCY = Family("outage_probe_latency_seconds", "histogram", "Duration of every probe run, in seconds.")
LAST_RUN = Family(
    "outage_probe_last_run_timestamp_seconds", "gauge", "Unix time at which the latest probe run finished."
)
INCONCLUSIVE = Family(
    "outage_probe_inconclusive",
    "gauge",
    "Whether the latest run failed while the region's vantage was unhealthy (1), so it is not a service failure.",
)
INCONCLUSIVE_TOTAL = Family(
    "outage_probe_inconclusive_total",
    "counter",
    "Failed probe runs not counted as failures because the region's vantage was unhealthy.",
)

YIELD_EVERY = 500  # checks rendered between two yields to the event loop (async rendering)

SCHEDULED_FAMILIES: tuple[Family, ...] = (
    CHECK_INFO, INTERVAL, *RESULT_FAMILIES, RUNS, FAILURES, INCONCLUSIVE, INCONCLUSIVE_TOTAL, LATENCY, LAST_RUN,
    *TWO_PATH_FAMILIES, *AUTHORITATIVE_FAMILIES, *VANTAGE_FAMILIES,
)


@dataclass(frozen=True, slots=True)
class _CheckText:
    """Per-check text that only changes when the checks are (re)loaded."""

    plain: str  # '{<identity labels>} ': between name and value of a series with no extra labels
    open_: str  # '{<identity labels>,': start of a series with extra labels
    prober: str
    info_line: str
    interval_line: str
    control: bool
    two_path: bool
    zone: str | None  # authoritative checks: the labels of their zone series (exposition.authoritative)


def _check_text(state: CheckState) -> _CheckText:
    check = state.check
    pairs = zip(IDENTITY_LABELS, check.labels(), strict=True)
    labels = ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs)
    info_line = (
        f'{CHECK_INFO.name}{{{labels},module="{escape_label_value(check.module.name)}",'
        f'prober="{escape_label_value(check.prober)}",control="{"true" if check.control else "false"}"}} 1\n'
    )
    interval_line = f"{INTERVAL.name}{{{labels}}} {format_value(float(check.interval))}\n"
    return _CheckText(
        plain=f"{{{labels}}} ",
        open_=f"{{{labels},",
        prober=check.prober,
        info_line=info_line,
        interval_line=interval_line,
        control=check.control,
        two_path=check.two_path is not None and check.two_path.enabled,
        zone=zone_labels(check) if check.authoritative is not None else None,
    )


_BUCKET = f"{LATENCY.name}_bucket"
_SUM = f"{LATENCY.name}_sum"
_COUNT = f"{LATENCY.name}_count"
_BUCKET_CLOSE: tuple[str, ...] = tuple(
    f'le="{le}"}} ' for le in [*(repr(float(b)) for b in LATENCY_BUCKETS), "+Inf"]
)


def _write_histogram(text: _CheckText, state: CheckState, out: list[str]) -> None:
    open_ = text.open_
    for close, count in zip(_BUCKET_CLOSE, state.cumulative_buckets(), strict=True):
        out += (_BUCKET, open_, close, str(count), "\n")
    out += (_SUM, text.plain, format_value(state.latency_sum) or "0", "\n", _COUNT, text.plain, str(state.runs), "\n")


def _write_check(state: CheckState, text: _CheckText, pieces: Pieces) -> None:
    plain = text.plain
    pieces[CHECK_INFO.name].append(text.info_line)
    pieces[INTERVAL.name].append(text.interval_line)
    pieces[RUNS.name] += (RUNS.name, plain, str(state.runs), "\n")
    if state.failures:
        failures = pieces[FAILURES.name]
        for reason, count in state.failures.items():
            failures += (FAILURES.name, text.open_, label_pair("reason", reason), "} ", str(count), "\n")
    if not text.control:
        pieces[INCONCLUSIVE_TOTAL.name] += (INCONCLUSIVE_TOTAL.name, plain, str(state.inconclusive_total), "\n")
    _write_histogram(text, state, pieces[LATENCY.name])
    result = state.last
    if result is not None:
        pieces[LAST_RUN.name] += (LAST_RUN.name, plain, format_value(state.last_run) or "0", "\n")
        write_result(result, text.prober, plain, text.open_, pieces)
        if not text.control:
            pieces[INCONCLUSIVE.name] += (INCONCLUSIVE.name, plain, "1\n" if state.inconclusive else "0\n")
        if text.two_path:
            write_paths(result, plain, text.open_, pieces)
        if text.zone is not None and result.zone is not None:
            write_zone(text.zone, result.zone, pieces)


class _Columns:
    """The rendered text of every check of one store generation, one column per family.

    ``cols[f][i]`` holds check ``i``'s samples of family ``f`` as UTF-8 (``b""`` when it has none), so the
    output stays grouped by family while each check is rendered on its own: when its result is recorded
    (the store calls :meth:`on_record`), not at scrape time. A scrape joins the columns.
    """

    __slots__ = ("generation", "states", "texts", "index", "cols", "filled", "touched")

    def __init__(self, generation: int, states: list[CheckState]) -> None:
        self.generation = generation
        self.states = states
        self.texts = [_check_text(state) for state in states]  # taken now: a reload may swap state.check
        self.index = {id(state): i for i, state in enumerate(states)}
        self.cols: list[list[bytes]] = [[b""] * len(states) for _ in _CHECK_FAMILIES]
        self.filled = [0] * len(_CHECK_FAMILIES)  # non-empty cells per family: empty families are skipped
        self.touched: list[tuple[int, ...]] = [()] * len(states)  # families with text, per check

    def render(self, i: int) -> None:
        """(Re)render check ``i`` from its state into every column."""
        pieces = _CheckPieces()
        _write_check(self.states[i], self.texts[i], pieces)
        cols, filled = self.cols, self.filled
        old = self.touched[i]
        new = tuple(_FAMILY_INDEX[name] for name, body in pieces.items() if body)
        for f in old:
            if f not in new:
                cols[f][i] = b""
                filled[f] -= 1
        for name, body in pieces.items():
            if body:
                f = _FAMILY_INDEX[name]
                if not cols[f][i]:
                    filled[f] += 1
                cols[f][i] = "".join(body).encode()
        self.touched[i] = new

    def on_record(self, state: CheckState) -> None:
        i = self.index.get(id(state))
        if i is not None:
            self.render(i)

    def snapshot(self) -> list[tuple[bytes, list[bytes]]]:
        """(header, cells) of every family with samples; the cell lists are copies, so later records do not
        change a scrape already under way."""
        return [(_HEADERS[f], col.copy()) for f, col in enumerate(self.cols) if self.filled[f]]


class _CheckPieces(dict[str, list[str]]):
    """Pieces that create a family's list on first use (a check touches a few of the many families)."""

    __slots__ = ()

    def __missing__(self, name: str) -> list[str]:
        body: list[str] = []
        self[name] = body
        return body


_CHECK_FAMILIES: tuple[Family, ...] = tuple(f for f in SCHEDULED_FAMILIES if f not in VANTAGE_FAMILIES)
_FAMILY_INDEX = {family.name: f for f, family in enumerate(_CHECK_FAMILIES)}
_HEADERS = tuple(family.header.encode() for family in _CHECK_FAMILIES)
_columns: weakref.WeakKeyDictionary[ResultStore, _Columns] = weakref.WeakKeyDictionary()


def _current(store: ResultStore) -> _Columns | None:
    columns = _columns.get(store)
    return columns if columns is not None and columns.generation == store.generation else None


def _adopt(store: ResultStore, columns: _Columns) -> None:
    """Start keeping ``columns`` up to date with every result the store records."""
    _columns[store] = columns
    store.listen(columns.on_record)


def _columns_now(store: ResultStore) -> _Columns:
    columns = _current(store)
    if columns is None:
        columns = _Columns(store.generation, list(store.states()))
        _adopt(store, columns)
        for i in range(len(columns.states)):
            columns.render(i)
    return columns


async def _columns_async(store: ResultStore, batch: int) -> _Columns:
    """_columns_now, handing the event loop back every ``batch`` checks while rendering from scratch.

    Results recorded meanwhile are rendered into the new columns as they arrive (re-rendering a check not
    reached yet is harmless). A reload meanwhile does not disturb the render: it keeps the checks and label
    texts it started with, and the next scrape renders the new generation.
    """
    columns = _current(store)
    if columns is not None:
        return columns
    columns = _Columns(store.generation, list(store.states()))
    _adopt(store, columns)
    for i in range(len(columns.states)):
        columns.render(i)
        if (i + 1) % batch == 0:
            await asyncio.sleep(0)
    return columns


def _vantage_chunks(store: ResultStore) -> list[bytes]:
    pieces = new_pieces(VANTAGE_FAMILIES)
    write_vantages(store.vantages(), pieces)
    return encode_pieces(VANTAGE_FAMILIES, pieces)


def render_scheduled(store: ResultStore) -> str:
    """Every scheduled check's series as exposition text (empty when nothing is loaded)."""
    return b"".join(render_scheduled_chunks(store)).decode()


def render_scheduled_chunks(store: ResultStore) -> list[bytes]:
    """render_scheduled as UTF-8 chunks (a header, then a family's samples), for callers that concatenate
    further (``/metrics``)."""
    chunks: list[bytes] = []
    for header, cells in _columns_now(store).snapshot():
        chunks += (header, b"".join(cells))
    return chunks + _vantage_chunks(store)


async def render_scheduled_chunks_async(store: ResultStore, *, batch: int = YIELD_EVERY) -> list[bytes]:
    """render_scheduled_chunks, handing the event loop back between families (and every ``batch`` checks
    when the text has to be rendered from scratch: the first scrape, or the first after a reload).

    The cells are taken in one go, so the scrape shows every check as it was at one instant.
    """
    families = (await _columns_async(store, batch)).snapshot()
    vantage = _vantage_chunks(store)
    chunks: list[bytes] = []
    for header, cells in families:
        await asyncio.sleep(0)
        chunks += (header, b"".join(cells))
    return chunks + vantage
