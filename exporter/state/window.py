"""The recording rules' arithmetic over one window of a check's runs (alerts/rules/recording.yml): each run
weighs the seconds it was in effect, as consecutive scrapes would sample it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import NamedTuple

from exporter.checks import Check
from exporter.probers import result as r
from exporter.results import WINDOW_SECONDS, Sample

Runs = Sequence[tuple[Sample, float]]  # (run, seconds in effect during the window)
_LATEST_WEIGHT = 1e-3  # a run that finished this instant still counts, as the next scrape would see it
_FINISHED = itemgetter(0)  # Sample.t


def in_window(samples: Iterable[Sample], now: float, window: float = WINDOW_SECONDS) -> list[tuple[Sample, float]]:
    """Each run in effect during [now - window, now], with the seconds it was in effect: a run counts from
    the moment it finished until the next one, as consecutive scrapes would sample it."""
    items = sorted(samples, key=_FINISHED)
    start, out = now - window, []
    last = len(items) - 1
    for i, s in enumerate(items):  # runs every evaluation for every check: plain comparisons, no min/max
        t = s.t
        lo = start if start > t else t
        if i == last:
            if t <= now:
                out.append((s, now - lo if now - lo >= _LATEST_WEIGHT else _LATEST_WEIGHT))
            break
        end = items[i + 1].t
        hi = now if now < end else end
        if hi > lo:
            out.append((s, hi - lo))
    return out


def majority_failed(runs: Runs) -> bool:
    """More than half of the window failed, time-weighted."""
    total = failed = 0.0
    for s, w in runs:
        total += w
        if not s.success:
            failed += w
    return total > 0 and failed / total > 0.5


def mostly_5xx(runs: Runs) -> bool | None:
    """The http_5xx signal of one check: None without status codes in the window."""
    total = errors = 0.0
    for s, w in runs:
        if s.http_status >= 0:
            total += w
            if s.http_status >= 500:
                errors += w
    return errors / total > 0.5 if total else None


def zone_failing(runs: Runs) -> bool | None:
    """The nameservers signal of one zone check: fewer than half of the addresses answering on average."""
    zoned = [(s, w) for s, w in runs if s.nameservers >= 0]
    total = sum(w for _, w in zoned)
    if not total:
        return None
    nameservers = sum(s.nameservers * w for s, w in zoned) / total
    answering = sum(s.answering * w for s, w in zoned) / total
    return nameservers > 0 and answering / nameservers < 0.5


def vantage_healthy(controls: Sequence[tuple[Check, Sequence[Sample]]], now: float, window: float) -> bool:
    """Whether the region's controls judged its vantage healthy at every moment of the window (vantage.judge's
    rule, applied at each run's finish time)."""
    if not controls:
        return True
    ratio = controls[0][0].vantage.min_healthy_ratio
    moments = {now - window, now} | {s.t for _, samples in controls for s in samples if s.t >= now - window}
    for moment in moments:
        failing = 0
        for _, samples in controls:
            before = [s for s in samples if s.t <= moment]
            latest = max(before, key=lambda s: s.t) if before else None
            if latest is not None and not latest.success and latest.reason not in r.PROBER_SIDE_REASONS:
                failing += 1
        if len(controls) - failing < ratio * len(controls):
            return False
    return True


class Summary(NamedTuple):
    """One check's window in a single pass: what :func:`in_window`, :func:`majority_failed` and
    :func:`mostly_5xx` give, without building the (run, seconds) pairs (this runs for every check at every
    evaluation of the status board)."""

    probes: int  # runs in effect during the window
    latest: Sample | None
    failed: tuple[Sample, ...]  # the window's failed runs, oldest first
    inconclusive: bool  # some run in the window was inconclusive
    majority: bool  # majority_failed
    http_5xx: bool | None  # mostly_5xx
    steady_before: float  # all of the above holds at a later moment whose window starts before this


def summarize(samples: Iterable[Sample], now: float, window: float = WINDOW_SECONDS) -> Summary:
    """:func:`in_window`'s runs and weights, folded as :func:`majority_failed` and :func:`mostly_5xx` fold
    them (same order of additions, so the same floating-point sums).

    ``steady_before``: with no run after ``now``, the runs in effect change only when the window's start
    reaches the finish of the oldest one's successor; the weights change all the time, but when every run
    failed or none did (and every status code is 5xx or none is) the ratios are exactly 1 or 0 whatever
    they are. Otherwise it is -inf: nothing can be reused at another moment."""
    items = sorted(samples, key=_FINISHED)
    start, last = now - window, len(items) - 1
    probes, latest, failed, inconclusive = 0, None, [], False
    total = bad = coded = errors = 0.0
    n_coded = n_5xx = 0
    steady = math.inf
    for i, s in enumerate(items):
        t = s.t
        lo = start if start > t else t
        if i == last:
            if t > now:
                break
            w = now - lo if now - lo >= _LATEST_WEIGHT else _LATEST_WEIGHT
        else:
            end = items[i + 1].t
            hi = now if now < end else end
            if not hi > lo:
                continue
            w = hi - lo
            if end < steady:
                steady = end
        probes, latest = probes + 1, s
        total += w
        if not s.success:
            bad += w
            failed.append(s)
        if s.inconclusive:
            inconclusive = True
        if s.http_status >= 0:
            coded += w
            n_coded += 1
            if s.http_status >= 500:
                errors += w
                n_5xx += 1
    uniform = len(failed) in (0, probes) and n_5xx in (0, n_coded) and (not items or items[-1].t <= now)
    return Summary(probes, latest, tuple(failed), inconclusive, total > 0 and bad / total > 0.5,
                   errors / coded > 0.5 if coded else None, steady if uniform else -math.inf)
