"""The scheduled checks in ``/metrics``: the results store rendered as exposition text.

Each check's text is cached as UTF-8, one column per family: ``cols[family][check]``. Recording a result
only marks its check dirty (the store calls back, O(1)); a scrape re-renders the dirty checks and joins
the columns family by family; between scrapes, dirty checks are also rendered in small background
batches, a few times per scrape interval. So a check probed many times per scrape is formatted only a few
times, and a scrape mostly copies memory. Identity label strings and the
lines that only change on reload are rendered once per ``ResultStore.generation``; after a reload, checks
whose labels did not change keep their text. The async variant hands the event loop back every few
hundred checks rendered and between families, and still shows one instant (see ``_Columns``). Families
come out in a fixed order, each with one HELP/TYPE header, series in check load order; vantage families
are small and rendered per scrape.
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
# Dirty checks are also rendered in the background, at most once per this share of the time between the
# last two scrapes (bounds below), so a scrape renders only what ran since: cheap scrapes, while a check
# probed many times per scrape is still rendered only a few times.
FLUSH_SHARE = 0.25
FLUSH_MIN_SECONDS = 1.0
FLUSH_FIRST_SECONDS = 5.0  # until two scrapes have been seen
FLUSH_BATCH = 100  # checks rendered per loop turn in the background (~2 ms: keeps event-loop lag low)

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
    control: bool
    two_path: bool
    zone: str | None  # authoritative checks: the labels of their zone series (exposition.authoritative)


def _check_text(state: CheckState) -> tuple[_CheckText, bytes, bytes]:
    """The check's label texts, and its (never changing) check_info and interval series."""
    check = state.check
    pairs = zip(IDENTITY_LABELS, check.labels(), strict=True)
    labels = ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs)
    info_line = (
        f'{CHECK_INFO.name}{{{labels},module="{escape_label_value(check.module.name)}",'
        f'prober="{escape_label_value(check.prober)}",control="{"true" if check.control else "false"}"}} 1\n'
    )
    interval_line = f"{INTERVAL.name}{{{labels}}} {format_value(float(check.interval))}\n"
    text = _CheckText(
        plain=f"{{{labels}}} ",
        open_=f"{{{labels},",
        prober=check.prober,
        control=check.control,
        two_path=check.two_path is not None and check.two_path.enabled,
        zone=zone_labels(check) if check.authoritative is not None else None,
    )
    return text, info_line.encode(), interval_line.encode()


_BUCKET = f"{LATENCY.name}_bucket"
_SUM = f"{LATENCY.name}_sum"
_COUNT = f"{LATENCY.name}_count"
_BUCKET_CLOSE: tuple[str, ...] = tuple(
    f'le="{le}"}} ' for le in [*(repr(float(b)) for b in LATENCY_BUCKETS), "+Inf"]
)
# The whole histogram of a check as one %-format: (open_, count) per bucket, then plain, sum, plain, runs.
_HISTOGRAM = "".join(f"{_BUCKET}%s{close}%d\n" for close in _BUCKET_CLOSE) + f"{_SUM}%s%s\n{_COUNT}%s%d\n"
_HISTOGRAM_ARGS = 2 * len(_BUCKET_CLOSE)


def _histogram(text: _CheckText, state: CheckState) -> bytes:
    args: list[object] = [text.open_] * _HISTOGRAM_ARGS
    args[1::2] = state.cumulative_buckets()
    args += (text.plain, format_value(state.latency_sum) or "0", text.plain, state.runs)
    return (_HISTOGRAM % tuple(args)).encode()


def _write_check(state: CheckState, text: _CheckText, cols: list[list[bytes]], i: int, pieces: Pieces) -> list[int]:
    """Render the check's changing families: its own straight into cell ``i`` of ``cols`` (returning
    which), the result's (shared with /probe) into ``pieces``."""
    plain = text.plain
    cols[_RUNS][i] = f"{RUNS.name}{plain}{state.runs}\n".encode()
    cols[_LATENCY][i] = _histogram(text, state)
    touched = [_RUNS, _LATENCY]
    if state.failures:
        open_ = text.open_
        cols[_FAILURES][i] = "".join([
            f'{FAILURES.name}{open_}{label_pair("reason", reason)}}} {count}\n'
            for reason, count in state.failures.items()
        ]).encode()
        touched.append(_FAILURES)
    if not text.control:
        cols[_INCONCLUSIVE_TOTAL][i] = f"{INCONCLUSIVE_TOTAL.name}{plain}{state.inconclusive_total}\n".encode()
        touched.append(_INCONCLUSIVE_TOTAL)
    result = state.last
    if result is not None:
        cols[_LAST_RUN][i] = f"{LAST_RUN.name}{plain}{format_value(state.last_run) or '0'}\n".encode()
        touched.append(_LAST_RUN)
        if not text.control:
            cols[_INCONCLUSIVE][i] = f"{INCONCLUSIVE.name}{plain}{'1' if state.inconclusive else '0'}\n".encode()
            touched.append(_INCONCLUSIVE)
        write_result(result, text.prober, plain, text.open_, pieces)
        if text.two_path:
            write_paths(result, plain, text.open_, pieces)
        if text.zone is not None and result.zone is not None:
            write_zone(text.zone, result.zone, pieces)
    return touched


class _Columns:
    """The rendered text of every check of one store generation, one column per family, rendered lazily.

    ``cols[f][i]`` holds check ``i``'s samples of family ``f`` as UTF-8 (``b""`` when it has none), so the
    output stays grouped by family while each check is rendered on its own. Recording a result only marks
    its check dirty (the store calls :meth:`on_record`); a scrape first re-renders the dirty checks, then
    joins the columns. Between scrapes, the dirty checks are also rendered in the background in small
    batches, at most once per ``FLUSH_SHARE`` of the scrape interval, so a scrape finds few left to render
    while a check probed many times per scrape is still rendered only a few times.

    Consistency: a refresh takes the dirty set at one instant and renders it, possibly across several
    turns of the event loop. A result arriving meanwhile for a check not rendered yet has that check
    rendered first, as it was (the store calls back before it changes the state), and marks it dirty for
    the next scrape; so the scrape shows every check as it was when the refresh started.
    """

    __slots__ = ("generation", "states", "texts", "index", "cols", "touched", "dirty", "pending", "lock",
                 "flush", "flush_delay", "last_scrape")

    def __init__(self, generation: int, states: list[CheckState], previous: _Columns | None = None) -> None:
        self.generation = generation
        self.states = states
        self.cols: list[list[bytes]] = [[b""] * len(states) for _ in _CHECK_FAMILIES]
        self.texts: list[_CheckText] = []
        self.index: dict[CheckState, int] = {state: i for i, state in enumerate(states)}  # by identity
        self.touched: list[tuple[int, ...]] = [()] * len(states)  # families with text, per check
        self.dirty: set[CheckState] = set()
        self.pending: dict[CheckState, int] = {}  # taken from dirty by the refresh under way, not rendered yet
        self.lock = asyncio.Lock()  # one async refresh-and-join at a time
        self.flush: asyncio.Handle | None = None  # the background render armed, if any
        self.flush_delay = FLUSH_FIRST_SECONDS if previous is None else previous.flush_delay
        self.last_scrape: float | None = None if previous is None else previous.last_scrape
        if previous is not None and previous.flush is not None:
            previous.flush.cancel()
        info, interval = self.cols[_CHECK_INFO], self.cols[_INTERVAL]
        for i, state in enumerate(states):  # taken now: a reload may swap state.check
            text, info[i], interval[i] = _check_text(state)
            self.texts.append(text)
            if previous is None or not self._reuse(previous, state, i, text):
                self.dirty.add(state)

    def _reuse(self, previous: _Columns, state: CheckState, i: int, text: _CheckText) -> bool:
        """Take check ``i``'s text from the previous generation if it is still valid there: the same state,
        rendered since its latest result, with the same labels."""
        j = previous.index.get(state)
        if j is None or state in previous.dirty or state in previous.pending or previous.texts[j] != text:
            return False
        families = self.touched[i] = previous.touched[j]
        cols, old = self.cols, previous.cols
        for f in families:
            cols[f][i] = old[f][j]
        return True

    def render(self, i: int) -> None:
        """(Re)render check ``i`` from its state into every column it has text in."""
        cols = self.cols
        pieces = _CheckPieces()
        families = _write_check(self.states[i], self.texts[i], cols, i, pieces)
        for name, body in pieces.items():
            f = _FAMILY_INDEX[name]
            cols[f][i] = "".join(body).encode()
            families.append(f)
        touched = tuple(families)
        old = self.touched[i]
        if touched != old:  # rare: the check's families changed (a failure, a new detail, ...)
            for f in set(old).difference(touched):
                cols[f][i] = b""
            self.touched[i] = _TOUCHED.setdefault(touched, touched)

    def on_record(self, state: CheckState) -> None:
        """The store is about to record a result into ``state``."""
        if self.pending:
            i = self.pending.pop(state, None)
            if i is not None:
                self.render(i)
        self.dirty.add(state)
        if self.flush is None:
            self._arm(self.flush_delay)

    def _arm(self, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # recorded outside an event loop: only scrapes render
            return
        self.flush = loop.call_later(delay, self._flush) if delay > 0 else loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Render up to ``FLUSH_BATCH`` dirty checks in the background, then again on the next loop turn
        while some are left. Not while an async scrape renders: it takes the dirty checks itself, and
        rendering newer ones before its snapshot would tear it (the next record arms a new flush)."""
        self.flush = None
        if self.lock.locked():
            return
        dirty, index = self.dirty, self.index
        for _ in range(min(FLUSH_BATCH, len(dirty))):
            i = index.get(dirty.pop())
            if i is not None:
                self.render(i)
        if dirty:
            self._arm(0)

    def scraped(self, now: float) -> None:
        """Note a scrape at ``now`` (loop time): the background render follows the scrape interval."""
        if self.last_scrape is not None and now > self.last_scrape:
            self.flush_delay = max(FLUSH_MIN_SECONDS, FLUSH_SHARE * (now - self.last_scrape))
        self.last_scrape = now

    def take_dirty(self) -> dict[CheckState, int]:
        """Move the dirty checks of this generation into ``pending`` (check -> index) and return it."""
        pending, index = self.pending, self.index
        for state in self.dirty:
            i = index.get(state)
            if i is not None:
                pending[state] = i
        self.dirty = set()
        return pending

    def refresh(self) -> None:
        """Render every dirty check now."""
        pending = self.take_dirty()
        while pending:
            self.render(pending.popitem()[1])

    async def refresh_async(self, batch: int) -> None:
        """refresh, handing the event loop back every ``batch`` checks (caller holds ``lock``)."""
        pending = self.take_dirty()
        while pending:
            for _ in range(min(batch, len(pending))):
                self.render(pending.popitem()[1])
            if pending:
                await asyncio.sleep(0)

    def snapshot(self) -> list[tuple[bytes, list[bytes]]]:
        """(header, cells) of every family; the cell lists are copies, so a later refresh does not change a
        scrape already under way."""
        return [(_HEADERS[f], col.copy()) for f, col in enumerate(self.cols)]


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
_CHECK_INFO, _INTERVAL, _RUNS, _FAILURES, _INCONCLUSIVE, _INCONCLUSIVE_TOTAL, _LATENCY, _LAST_RUN = (
    _FAMILY_INDEX[f.name]
    for f in (CHECK_INFO, INTERVAL, RUNS, FAILURES, INCONCLUSIVE, INCONCLUSIVE_TOTAL, LATENCY, LAST_RUN)
)
_TOUCHED: dict[tuple[int, ...], tuple[int, ...]] = {}  # one shared tuple per distinct set of families
_columns: weakref.WeakKeyDictionary[ResultStore, _Columns] = weakref.WeakKeyDictionary()


def _columns_of(store: ResultStore) -> _Columns:
    """The store's columns for its current generation. After a load or reload they are made anew, keeping
    the text of checks whose labels did not change and that have no new result; the rest are dirty."""
    columns = _columns.get(store)
    if columns is None or columns.generation != store.generation:
        columns = _columns[store] = _Columns(store.generation, list(store.states()), columns)
        store.listen(columns.on_record)
    return columns


async def _columns_of_async(store: ResultStore) -> _Columns:
    """_columns_of, first letting a scrape of an older generation that is still rendering finish: it needs
    the store's callbacks until then to stay consistent."""
    while (old := _columns.get(store)) is not None and old.generation != store.generation and old.lock.locked():
        async with old.lock:
            pass
    return _columns_of(store)


async def prepare_scheduled(store: ResultStore, *, batch: int = YIELD_EVERY) -> None:
    """Render every check's text now, ``batch`` checks per turn of the event loop. Called after a load or
    reload, before the exporter says it is ready: the first scrape then only joins text (at 10,000 checks,
    building the label texts and rendering every check is about 90 ms that it would otherwise wait for)."""
    columns = await _columns_of_async(store)
    async with columns.lock:
        await columns.refresh_async(batch)


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
    columns = _columns_of(store)
    columns.refresh()
    return _joined(columns.snapshot()) + _vantage_chunks(store)


async def render_scheduled_chunks_async(store: ResultStore, *, batch: int = YIELD_EVERY) -> list[bytes]:
    """render_scheduled_chunks, handing the event loop back every ``batch`` checks rendered and between
    families.

    The scrape shows every check as it was when it started rendering (see _Columns), even if results
    arrive meanwhile; concurrent scrapes take turns.
    """
    columns = await _columns_of_async(store)
    columns.scraped(asyncio.get_running_loop().time())
    async with columns.lock:
        await columns.refresh_async(batch)
        families = columns.snapshot()
        vantage = _vantage_chunks(store)
    chunks: list[bytes] = []
    for header, cells in families:
        body = b"".join(cells)
        if body:
            chunks += (header, body)
        await asyncio.sleep(0)
    return chunks + vantage


def _joined(families: list[tuple[bytes, list[bytes]]]) -> list[bytes]:
    chunks: list[bytes] = []
    for header, cells in families:
        body = b"".join(cells)
        if body:
            chunks += (header, body)
    return chunks
