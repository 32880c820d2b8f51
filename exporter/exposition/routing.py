"""``outage_routing_*`` and ``outage_statuspage_*``: the routing signal and declared status on /metrics.

A collector registered in the self-metrics registry (like the scheduler's), reading the runtime's current
feed and poller at scrape time; absent families mean the section is not configured.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.routing.decision import LOST
from exporter.statuspage import COMPONENT_STATUSES, INDICATORS

if TYPE_CHECKING:
    from exporter.routing.feed import RoutingFeed
    from exporter.statuspage import StatusPagePoller

_PREFIX_LABELS = ["prefix", "provider", "role"]


class SignalSource(Protocol):
    routing: RoutingFeed | None
    statuspages: StatusPagePoller | None


class SignalsCollector(Collector):
    def __init__(self, source: SignalSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        if self._source.routing is not None:
            yield from routing_families(self._source.routing)
        if self._source.statuspages is not None:
            yield from statuspage_families(self._source.statuspages)


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels or [])


def routing_families(feed: RoutingFeed) -> Iterator[Metric]:
    state, health = feed.state, feed.state.health
    now = time.monotonic()
    states = state.states(now)
    peers = _gauge("outage_routing_prefix_peers", "Collector peers whose latest message announced the prefix.",
                   _PREFIX_LABELS)
    peers_max = _gauge("outage_routing_prefix_peers_max", "Collector peers that announced the prefix since it "
                       "was first watched (the decision's denominator).", _PREFIX_LABELS)
    lost = _gauge("outage_routing_prefix_lost", "1 when most peers that saw the prefix withdrew it and the feed "
                  "is conclusive, else 0.", _PREFIX_LABELS)
    changed = _gauge("outage_routing_prefix_last_change_timestamp_seconds",
                     "Unix time the set of peers seeing the prefix last changed; 0 = not yet.", _PREFIX_LABELS)
    withdrawals = CounterMetricFamily("outage_routing_prefix_withdrawals", "Withdrawals of the prefix received.",
                                      labels=_PREFIX_LABELS)
    announcements = CounterMetricFamily("outage_routing_prefix_announcements",
                                        "Announcements of the prefix received.", labels=_PREFIX_LABELS)
    for prefix, provider, role in feed.series():
        p = state.prefixes.get(prefix)
        if p is None:
            continue
        labels = [prefix, provider, role]
        peers.add_metric(labels, len(p.seeing))
        peers_max.add_metric(labels, len(p.saw))
        lost.add_metric(labels, 1 if states[prefix] == LOST else 0)
        changed.add_metric(labels, p.last_change)
        withdrawals.add_metric(labels, p.withdrawals)
        announcements.add_metric(labels, p.announcements)
    yield from (peers, peers_max, lost, changed, withdrawals, announcements)
    yield GaugeMetricFamily("outage_routing_feed_connected", "1 while the routing feed's websocket is open.",
                            value=1 if health.connected else 0)
    yield GaugeMetricFamily("outage_routing_feed_conclusive", "1 while the feed is connected, synced and heard "
                            "from within stale_after; 0 makes every prefix inconclusive.",
                            value=0 if state.inconclusive(now) else 1)
    yield GaugeMetricFamily("outage_routing_feed_last_message_timestamp_seconds",
                            "Unix time of the feed's latest message (pongs included); 0 = none yet.",
                            value=health.last_message_unix)
    for name, doc, value in (
        ("outage_routing_feed_messages", "Feed messages handled.", health.messages),
        ("outage_routing_feed_reconnects", "Connection attempts after the first.", health.reconnects),
        ("outage_routing_feed_dropped_messages", "Feed messages dropped because the queue was full.",
         health.dropped),
        ("outage_routing_feed_malformed_messages", "Feed messages that were not valid RIS Live messages.",
         health.malformed),
    ):
        yield CounterMetricFamily(name, doc, value=value)


def statuspage_families(poller: StatusPagePoller) -> Iterator[Metric]:
    up = _gauge("outage_statuspage_up", "1 if the provider's status page answered a valid summary at the "
                "latest poll.", ["provider"])
    indicator = _gauge("outage_statuspage_indicator", "1 for the overall indicator the status page declares "
                       "(none, minor, major, critical), 0 for the others.", ["provider", "indicator"])
    component = _gauge("outage_statuspage_component_status", "1 for the status the page declares for a "
                       "configured component, 0 for the others.", ["provider", "service", "component", "status"])
    success = _gauge("outage_statuspage_last_success_timestamp_seconds",
                     "Unix time of the latest valid summary; 0 = none yet.", ["provider"])
    for page in poller.pages:
        s = poller.states[page.provider]
        up.add_metric([page.provider], 1 if s.reachable else 0)
        success.add_metric([page.provider], s.last_success)
        for value in INDICATORS:
            indicator.add_metric([page.provider, value], 1 if s.indicator == value else 0)
        for name, service in page.components:
            current = s.components.get(name, "unknown")
            for value in (*COMPONENT_STATUSES, "unknown"):
                component.add_metric([page.provider, service, name, value], 1 if current == value else 0)
    yield from (up, indicator, component, success)
