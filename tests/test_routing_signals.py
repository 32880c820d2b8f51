"""exporter.routing.signals: the routing feed and the status page poller follow the config across reloads:
started when asked for, kept (state and all) while their section is unchanged, replaced when it changes."""

from __future__ import annotations

from exporter.config import load_config_text
from exporter.results import ResultStore
from exporter.routing.signals import Signals

ROUTING = ("routing: {enabled: true, endpoint: 'ws://127.0.0.1:9/', "
           "prefixes: [{prefix: 127.10.0.0/24, provider: meta}]}\n")
PAGES = "status_pages: [{provider: meta, url: 'http://127.0.0.1:9/'}]\n"


async def test_a_section_is_restarted_only_when_it_changes() -> None:
    signals, store = Signals(), ResultStore()
    await signals.apply(load_config_text(""), store)
    assert signals.routing is None and signals.statuspages is None
    await signals.apply(load_config_text(ROUTING + PAGES), store)
    feed, poller = signals.routing, signals.statuspages
    assert feed is not None and poller is not None and [p.provider for p in poller.pages] == ["meta"]
    await signals.apply(load_config_text(ROUTING + PAGES), store)
    assert signals.routing is feed and signals.statuspages is poller  # unchanged: same state, no restart
    await signals.apply(load_config_text(ROUTING + PAGES.replace("127.0.0.1:9", "127.0.0.1:10")), store)
    assert signals.routing is feed and signals.statuspages is not poller
    await signals.apply(load_config_text(PAGES), store)
    assert signals.routing is None and not feed.state.health.connected  # the old feed was stopped
    await signals.stop()
