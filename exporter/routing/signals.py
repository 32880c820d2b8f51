"""The cause signals beside the probes (routing feed, status pages): started, swapped on reload, stopped."""

from __future__ import annotations

from typing import Any

from exporter.config.model import Config
from exporter.routing.feed import RoutingFeed
from exporter.statuspage import StatusPagePoller


class Signals:
    """Owns the running feed and poller; the metrics collector reads ``routing`` and ``statuspages``."""

    def __init__(self) -> None:
        self.routing: RoutingFeed | None = None
        self.statuspages: StatusPagePoller | None = None
        self._registered = False

    def register(self, registry: Any) -> None:
        """Expose the signals on the registry /metrics renders (once)."""
        if not self._registered:
            from exporter.exposition.routing import SignalsCollector

            registry.register(SignalsCollector(self))
            self._registered = True

    async def apply(self, config: Config, store: Any) -> None:
        """Start what ``config`` asks for; a section whose settings changed is restarted, state and all."""
        routing = config.routing if config.routing.enabled else None
        if (self.routing.config if self.routing else None) != routing:
            if self.routing is not None:
                await self.routing.stop()
            self.routing = RoutingFeed(routing, store) if routing is not None else None
            if self.routing is not None:
                self.routing.start()
        pages = config.status_pages or None
        if (self.statuspages.pages if self.statuspages else None) != pages:
            if self.statuspages is not None:
                await self.statuspages.stop()
            self.statuspages = StatusPagePoller(pages) if pages else None
            if self.statuspages is not None:
                self.statuspages.start()

    async def stop(self) -> None:
        if self.routing is not None:
            await self.routing.stop()
        if self.statuspages is not None:
            await self.statuspages.stop()
