"""Everything Prometheus: the only package that formats metrics (probers and the scheduler never do).

- ``scheduled``: the results store as ``/metrics`` text (hand-rendered; tens of thousands of checks).
- ``probe``: one result as a blackbox-compatible ``/probe`` response; the result-to-gauge mapping.
- ``self_metrics``: the exporter's own health through a dedicated prometheus_client registry.

Metric names and labels are a contract documented in docs/metrics.md and enforced by
tests/test_metric_contract.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.exposition.probe import CONTENT_TYPE, render_probe_result
from exporter.exposition.scheduled import (
    render_scheduled,
    render_scheduled_chunks,
    render_scheduled_chunks_async,
)
from exporter.exposition.self_metrics import SelfMetrics

if TYPE_CHECKING:
    from exporter.results import ResultStore
    from exporter.scheduler import Scheduler

__all__ = [
    "CONTENT_TYPE",
    "SelfMetrics",
    "render_metrics",
    "render_metrics_async",
    "render_metrics_chunks_async",
    "render_probe_result",
    "render_scheduled",
]


def render_metrics(store: ResultStore, scheduler: Scheduler | None, self_metrics: SelfMetrics) -> bytes:
    """The full ``/metrics`` body: the exporter's own metrics, then every scheduled check."""
    return b"".join([self_metrics.render(scheduler), *render_scheduled_chunks(store)])


async def render_metrics_async(
    store: ResultStore, scheduler: Scheduler | None, self_metrics: SelfMetrics
) -> bytes:
    """render_metrics without holding the event loop for the whole render."""
    return b"".join(await render_metrics_chunks_async(store, scheduler, self_metrics))


async def render_metrics_chunks_async(
    store: ResultStore, scheduler: Scheduler | None, self_metrics: SelfMetrics
) -> list[bytes]:
    """render_metrics_async as chunks that concatenate to the body (for the HTTP handler, which writes them
    as they are rather than copying tens of MB into one more buffer)."""
    chunks = await render_scheduled_chunks_async(store)
    return [self_metrics.render(scheduler), *chunks]
