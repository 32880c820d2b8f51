"""The results store: the only state shared between probe runs and scrapes.

The scheduler writes one ``ProbeResult`` per run with :meth:`ResultStore.record`; exposition and the landing
page read it. Reading never touches the network, so a scrape costs the same whether targets are up, slow or
black-holed. All access happens on the event loop thread: nothing here is locked.

Per-check state is a ``__slots__`` object holding the latest result, counters and latency histogram counts;
it is sized for tens of thousands of checks.

Vantage health (exporter.vantage) is applied when a result is recorded: a failure of a non-control check
taken while its region's controls say the vantage is unhealthy is *inconclusive*. It still counts as a
run, but not as a failure (``failures`` by reason), so failure ratios and availability are not polluted by
the prober's own outage; it is counted in ``inconclusive_total`` instead.
"""

from __future__ import annotations

import logging
import math
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate
from typing import NamedTuple

from exporter.checks import Check
from exporter.config.model import VantagePolicy
from exporter.probers.result import D_DNS_RCODE, D_HTTP_STATUS, INTERNAL, PROBER_SIDE_REASONS, ProbeResult
from exporter.vantage import Verdict, judge

# Upper bounds (seconds) of the probe latency histogram; a final +Inf bucket is implicit.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
_DEFAULT_RATIO = VantagePolicy().min_healthy_ratio
_NO_LATENCIES = (0,) * (len(LATENCY_BUCKETS) + 1)
RECENT_PROBES = 200
RECENT_FAILURES = 100
WINDOW_SECONDS = 30.0  # the recording rules' window (alerts/rules/recording.yml): exporter.state judges over it
MAX_WINDOW_SAMPLES = 32  # per-check ring bound, whatever the interval
log = logging.getLogger("exporter.vantage")


class Histogram:
    """A fixed-bucket histogram: per-bucket (not cumulative) counts, the last one being +Inf."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be strictly increasing")
        self.bounds: tuple[float, ...] = tuple(bounds)
        self.counts: list[int] = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[int]:
        """Counts per ``le`` bound as Prometheus wants them, ending with the +Inf bucket (== count)."""
        return list(accumulate(self.counts))


class Sample(NamedTuple):
    """One run, reduced to what exporter.state needs to judge a window like the recording rules do."""

    t: float  # unix time the run finished
    success: bool
    inconclusive: bool
    reason: str | None
    http_status: int  # -1 when the result has none
    rcode: int  # -1 when no DNS answer arrived
    answering: int  # authoritative checks: nameserver addresses answering; -1 otherwise
    nameservers: int  # authoritative checks: nameserver addresses probed; -1 otherwise


def sample_of(result: ProbeResult, inconclusive: bool) -> Sample:
    details, zone = result.details, result.zone
    status, rcode = details.get(D_HTTP_STATUS, -1), details.get(D_DNS_RCODE, -1)
    return Sample(result.finished_at or time.time(), result.success, inconclusive, result.reason,
                  status if isinstance(status, int) else -1, rcode if isinstance(rcode, int) else -1,
                  zone.answering if zone is not None else -1, zone.addresses if zone is not None else -1)


def window_samples(interval: float) -> int:
    """Ring size covering the window plus the run in effect when it began, for a check run every ``interval``."""
    return max(3, min(MAX_WINDOW_SAMPLES, math.ceil(WINDOW_SECONDS / max(interval, 0.001)) + 2))


class CheckState:
    """Everything exported for one scheduled check. Counters start at zero and survive reloads."""

    __slots__ = ("check", "last", "runs", "failures", "buckets", "latency_sum", "last_run", "inconclusive",
                 "inconclusive_total", "window")

    def __init__(self, check: Check) -> None:
        self.check = check
        self.last: ProbeResult | None = None  # the latest result; None until the first run
        self.runs = 0
        self.failures: dict[str, int] | None = None  # reason -> count; allocated on the first failure
        self.buckets: list[int] | None = None  # per-bucket latency counts (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.last_run = 0.0  # unix time the latest run finished; 0 until the first run
        self.inconclusive = False  # the latest result failed while the region's vantage was unhealthy
        self.inconclusive_total = 0  # failed runs not counted as failures for that reason
        self.window: deque[Sample] | None = None  # the latest runs, enough to cover WINDOW_SECONDS

    def cumulative_buckets(self) -> list[int]:
        """Latency counts per ``le`` bound of LATENCY_BUCKETS, then +Inf (== runs)."""
        return list(accumulate(self.buckets or _NO_LATENCIES))


class RecentProbe(NamedTuple):
    check: Check
    result: ProbeResult


class ResultStore:
    """Latest result and counters per check key, plus short histories for the landing page."""

    def __init__(self, *, recent: int = RECENT_PROBES, recent_failures: int = RECENT_FAILURES) -> None:
        self._states: dict[str, CheckState] = {}
        self._recent: deque[RecentProbe] = deque(maxlen=recent)
        self._recent_failures: deque[RecentProbe] = deque(maxlen=recent_failures)
        self._controls: dict[str, list[CheckState]] = {}  # region -> its control checks, in load order
        self._policy: dict[str, float] = {}  # region -> min_healthy_ratio
        self._healthy: dict[str, bool] = {}  # region -> the vantage verdict last logged
        self.generation = 0  # bumped by set_checks: lets readers cache per-check text until the next load
        self._listener: Callable[[CheckState], None] | None = None

    def listen(self, callback: Callable[[CheckState], None] | None) -> None:
        """Call ``callback(state)`` whenever a result is about to be recorded into ``state``, before it
        changes (replacing any earlier callback).

        Exposition uses it to mark the check's cached text stale, and, when a scrape is part way through
        rendering, to render a check it has not reached yet as it was before the new result.
        """
        self._listener = callback

    # --- writers ----------------------------------------------------------------------------------------
    def set_checks(self, checks: Sequence[Check]) -> None:
        """Adopt a new set of checks (startup or reload), in the given order.

        Checks whose key persists keep their counters and latest result (and take the new ``Check`` object,
        so label or module changes show up); removed keys are dropped; new keys start with zero counters.
        A duplicate key replaces the earlier check of that key.
        """
        old = self._states
        states: dict[str, CheckState] = {}
        for check in checks:
            state = old.get(check.key)
            if state is None:
                state = CheckState(check)
            else:
                state.check = check
            states[check.key] = state
        self._states = states
        self._controls, self._policy = {}, {}
        for state in states.values():
            check = state.check
            self._policy.setdefault(check.region, check.vantage.min_healthy_ratio)
            if check.control:
                self._controls.setdefault(check.region, []).append(state)
        self.generation += 1

    def record(self, check: Check, result: ProbeResult) -> None:
        """Account one finished run. Results for keys no longer loaded are ignored."""
        state = self._states.get(check.key)
        if state is None:
            return
        if self._listener is not None:
            self._listener(state)
        state.last = result
        state.runs += 1
        current = state.check
        if current.control:
            self._note_vantage(current.region)
        state.inconclusive = not result.success and (
            result.reason in PROBER_SIDE_REASONS  # the exporter's own setup failed, not the target
            or (not current.control and not self.vantage(current.region).healthy))
        if state.inconclusive:
            state.inconclusive_total += 1
        elif not result.success:
            failures = state.failures
            if failures is None:
                failures = state.failures = {}
            reason = result.reason or INTERNAL
            failures[reason] = failures.get(reason, 0) + 1
        buckets = state.buckets
        if buckets is None:
            buckets = state.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        duration = result.duration_seconds
        buckets[bisect_left(LATENCY_BUCKETS, duration)] += 1
        state.latency_sum += duration
        state.last_run = result.finished_at or time.time()
        window = state.window
        if window is None or window.maxlen != window_samples(current.interval):
            window = state.window = deque(window or (), maxlen=window_samples(current.interval))
        window.append(sample_of(result, state.inconclusive))
        entry = RecentProbe(state.check, result)
        self._recent.append(entry)
        if not result.success:
            self._recent_failures.append(entry)

    def _note_vantage(self, region: str) -> None:
        """Log when a control's result turns the region's vantage unhealthy or healthy again."""
        verdict = self.vantage(region)
        if verdict.healthy == self._healthy.get(region, True):
            return
        self._healthy[region] = verdict.healthy
        if verdict.healthy:
            log.info("vantage healthy again", extra={"fields": {"region": region}})
        else:
            log.warning("vantage unhealthy: failures of the region's other checks are inconclusive",
                        extra={"fields": {"region": region, "reason": verdict.reason}})

    # --- readers ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, key: object) -> bool:
        return key in self._states

    def get(self, key: str) -> CheckState | None:
        return self._states.get(key)

    def items(self) -> Iterator[tuple[Check, CheckState]]:
        """(check, state) pairs in load order."""
        for state in self._states.values():
            yield state.check, state

    def states(self) -> Iterator[CheckState]:
        """States in load order (stable between two ``set_checks`` calls)."""
        return iter(self._states.values())

    def vantage(self, region: str) -> Verdict:
        """The region's vantage verdict from its controls' latest results (healthy without controls)."""
        controls = self._controls.get(region, ())
        return judge(region, ((s.check, s.last) for s in controls), self._policy.get(region, _DEFAULT_RATIO))

    def vantages(self) -> list[Verdict]:
        """A verdict for every region with loaded checks, in load order."""
        return [self.vantage(region) for region in self._policy]

    def recent(self) -> list[RecentProbe]:
        """The latest probes, newest first."""
        return list(reversed(self._recent))

    def recent_failures(self) -> list[RecentProbe]:
        """The latest failed probes (with their logs), newest first."""
        return list(reversed(self._recent_failures))
