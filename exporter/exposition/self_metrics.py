"""The exporter's own health: config reloads, build info, scheduler and event-loop state, process stats.

A dedicated prometheus_client registry (not the global default) so tests and embedding applications get
exactly these families; ``_created`` series are disabled because they double the series count for no
dashboard or alert we ship. Scheduler and loop-lag state is read at scrape time by a custom collector.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.config.probe_policy import REFUSAL_REASONS
from exporter.results import Histogram

if TYPE_CHECKING:
    from exporter.looplag import LoopLagMonitor
    from exporter.scheduler import Scheduler
    from exporter.workers.pool import WorkerPool


def _histogram_family(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    bounds = [repr(float(b)) for b in histogram.bounds] + ["+Inf"]
    buckets = list(zip(bounds, histogram.cumulative(), strict=True))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=histogram.sum)


class _RuntimeCollector(Collector):
    """Reads scheduler and event-loop state at scrape time."""

    def __init__(self, owner: SelfMetrics) -> None:
        self._owner = owner

    def collect(self) -> Iterator[Metric]:
        scheduler, looplag = self._owner.scheduler, self._owner.looplag
        if scheduler is not None:
            yield GaugeMetricFamily(
                "outage_exporter_scheduled_checks", "Checks currently scheduled.", value=scheduler.checks
            )
            yield GaugeMetricFamily(
                "outage_exporter_probes_in_flight",
                "Scheduled probes running right now.",
                value=scheduler.in_flight,
            )
            stats = scheduler.stats
            yield _histogram_family(
                "outage_exporter_scheduler_lag_seconds",
                "Delay between a run's due time and its start, including the wait for a concurrency slot.",
                stats.lag,
            )
            yield CounterMetricFamily(
                "outage_exporter_scheduler_skipped_runs",
                "Scheduled runs not started because the check's previous run was still in flight.",
                value=stats.skipped_total,
            )
            yield CounterMetricFamily(
                "outage_exporter_scheduler_late_runs",
                "Runs that started more than 1 s after their due time.",
                value=stats.late_total,
            )
            yield GaugeMetricFamily(
                "outage_exporter_workers", "Processes probing the scheduled checks (--workers).",
                value=scheduler.workers,
            )
            yield CounterMetricFamily(
                "outage_exporter_worker_restarts",
                "Worker processes that exited unasked and were started again with their share of the checks.",
                value=scheduler.worker_restarts,
            )
        if looplag is not None:
            yield _histogram_family(
                "outage_exporter_event_loop_lag_seconds",
                "How late the event loop wakes up from a short sleep: time stolen by blocking work.",
                looplag.histogram,
            )


class SelfMetrics:
    """The exporter's own metrics; the application calls the methods, ``render`` produces the text."""

    def __init__(
        self,
        *,
        scheduler: Scheduler | WorkerPool | None = None,
        looplag: LoopLagMonitor | None = None,
        version: str = __version__,
    ) -> None:
        prometheus_client.disable_created_metrics()
        self.scheduler = scheduler
        self.looplag = looplag
        self.last_reload_error: str | None = None  # message of the failed load, shown on the landing page
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        Gauge(
            "outage_exporter_build_info",
            "Version of the exporter and of the Python running it (value 1).",
            ["version", "python_version"],
            registry=registry,
        ).labels(version, platform.python_version()).set(1)
        self._reload_ok = Gauge(
            "outage_exporter_config_last_reload_successful",
            "Whether the last configuration load succeeded (1) or failed (0).",
            registry=registry,
        )
        self._reload_ts = Gauge(
            "outage_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load.",
            registry=registry,
        )
        self._reloads = Counter(
            "outage_exporter_config_reloads",
            "Configuration loads (startup, signal or HTTP), successful or not.",
            registry=registry,
        )
        self._reload_failures = Counter(
            "outage_exporter_config_reload_failures",
            "Configuration loads that failed; the previous configuration stays active.",
            registry=registry,
        )
        self._probe_requests = Counter(
            "outage_exporter_probe_endpoint_requests",
            "Requests to the /probe endpoint, by module.",
            ["module"],
            registry=registry,
        )
        self._probe_failures = Counter(
            "outage_exporter_probe_endpoint_failures",
            "Requests to the /probe endpoint whose probe failed, by module and failure reason.",
            ["module", "reason"],
            registry=registry,
        )
        self._probe_refused = Counter(
            "outage_exporter_probe_requests_refused",
            "Requests to /probe refused before (or instead of) returning a result, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in REFUSAL_REASONS:
            self._probe_refused.labels(reason)
        self._web_config_ok: Gauge | None = None  # registered on the first load of a --web.config.file
        self._shard = Gauge(
            "outage_exporter_shard_info",
            "The share of the checks this exporter runs, --shard shard/shards (value 1).",
            ["shard", "shards"],
            registry=registry,
        )
        self._shard.labels("1", "1").set(1)
        self._config_files = Gauge(
            "outage_exporter_config_file_unreadable",
            "1 if a file a module names (CA, certificate, key, password or token file) cannot be read, else 0.",
            ["module", "file"],
            registry=registry,
        )
        registry.register(_RuntimeCollector(self))

    # --- called by the application ----------------------------------------------------------------------
    def reload_succeeded(self, *, timestamp: float | None = None) -> None:
        """A configuration load succeeded (the first one at startup counts too)."""
        self._reloads.inc()
        self._reload_ok.set(1)
        self._reload_ts.set(time.time() if timestamp is None else timestamp)
        self.last_reload_error = None

    def reload_failed(self, error: str | None = None) -> None:
        """A load failed: the previous configuration keeps running and its success timestamp stays."""
        self._reloads.inc()
        self._reload_failures.inc()
        self._reload_ok.set(0)
        self.last_reload_error = error or "configuration reload failed"

    def probe_endpoint_request(self, module: str) -> None:
        """Count one /probe request. ``module`` must be a configured module name (bounded label values)."""
        self._probe_requests.labels(module).inc()

    def probe_endpoint_failure(self, module: str, reason: str) -> None:
        """Count one /probe result that failed; ``reason`` is one of the bounded failure reasons. An
        ``internal`` here is an exporter bug, which an alert must see even though /probe keeps no series."""
        self._probe_failures.labels(module, reason).inc()

    def probe_refused(self, reason: str) -> None:
        """Count one refused /probe request; ``reason`` is one of probe_policy.REFUSAL_REASONS."""
        self._probe_refused.labels(reason).inc()

    def web_config_loaded(self, ok: bool) -> None:
        """A --web.config.file load (startup or reload) succeeded or failed (the old one then stays)."""
        if self._web_config_ok is None:
            self._web_config_ok = Gauge(
                "outage_exporter_web_config_last_reload_successful",
                "Whether the last load of --web.config.file succeeded (1) or failed (0).",
                registry=self.registry,
            )
        self._web_config_ok.set(1 if ok else 0)

    def config_files_checked(self, states: Iterable[tuple[str, str, bool]]) -> None:
        """The latest check of the files the config names: (module, file, unreadable), one series each."""
        self._config_files.clear()
        for module, file, unreadable in states:
            self._config_files.labels(module, file).set(1 if unreadable else 0)

    def set_shard(self, index: int, count: int) -> None:
        """This exporter runs shard ``index`` of ``count`` (``--shard``); unsharded is 1 of 1."""
        self._shard.clear()
        self._shard.labels(str(index), str(count)).set(1)

    # --- scrape -----------------------------------------------------------------------------------------
    def render(self, scheduler: Scheduler | WorkerPool | None = None) -> bytes:
        """Exposition text of the exporter's own metrics; ``scheduler`` replaces the bound one if given."""
        if scheduler is not None:
            self.scheduler = scheduler
        return generate_latest(self.registry)
