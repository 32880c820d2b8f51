"""The scheduled checks in ``/metrics``: the results store rendered as exposition text.

Each check's identity label string (and the lines that only change on reload) is rendered once per
``ResultStore.generation`` and cached; a scrape then only formats numbers. Families come out in a fixed
order, each with one HELP/TYPE header, series in check load order. The async variant hands the event loop
back every few hundred checks, so a large scrape does not show up as latency in running probes.
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
    iter_encoded,
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
YIELD_EVERY_CHUNKS = 200  # encoded chunks (~20 kB each) between two yields

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


_cache: weakref.WeakKeyDictionary[ResultStore, tuple[int, list[_CheckText]]] = weakref.WeakKeyDictionary()


def _check_texts(store: ResultStore) -> list[_CheckText]:
    cached = _cache.get(store)
    if cached is None or cached[0] != store.generation:
        cached = (store.generation, [_check_text(state) for state in store.states()])
        _cache[store] = cached
    return cached[1]


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


def render_scheduled(store: ResultStore) -> str:
    """Every scheduled check's series as exposition text (empty when nothing is loaded)."""
    return b"".join(render_scheduled_chunks(store)).decode()


def render_scheduled_chunks(store: ResultStore) -> list[bytes]:
    """render_scheduled as UTF-8 chunks, for callers that concatenate further (``/metrics``)."""
    pieces = new_pieces(SCHEDULED_FAMILIES)
    for state, text in zip(store.states(), _check_texts(store), strict=True):
        _write_check(state, text, pieces)
    write_vantages(store.vantages(), pieces)
    return encode_pieces(SCHEDULED_FAMILIES, pieces)


async def render_scheduled_chunks_async(store: ResultStore, *, batch: int = YIELD_EVERY) -> list[bytes]:
    """render_scheduled_chunks, handing the event loop back every ``batch`` checks.

    Rendering 10k checks takes a good part of a second of CPU in one go; running probes would see that as
    latency. Between batches other tasks run; a check is always rendered whole, and reloads during the
    render do not disturb it (it keeps iterating the checks it started with).
    """
    pieces = new_pieces(SCHEDULED_FAMILIES)
    for i, (state, text) in enumerate(zip(store.states(), _check_texts(store), strict=True), start=1):
        _write_check(state, text, pieces)
        if i % batch == 0:
            await asyncio.sleep(0)
    write_vantages(store.vantages(), pieces)
    chunks: list[bytes] = []
    for chunk in iter_encoded(SCHEDULED_FAMILIES, pieces):
        chunks.append(chunk)
        if len(chunks) % YIELD_EVERY_CHUNKS == 0:
            await asyncio.sleep(0)
    return chunks
