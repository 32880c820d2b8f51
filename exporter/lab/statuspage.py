"""Statuspage-style pages for the lab's providers: ``/<provider>/api/v2/summary.json`` (Statuspage v2).

    pages = StatusPages({"meta": {"Facebook": "facebook", ...}})
    await pages.start()
    pages.set("meta", "unreachable")              # the page is hosted on the failing network
    pages.set("twitter", "reachable", indicator="minor", components={"Twitter": "degraded_performance"})

An unreachable page cuts every connection without an answer. Nothing leaves the loopback interface.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

log = logging.getLogger("exporter.lab.statuspage")

PAGE_STATES = ("reachable", "unreachable")
INDICATOR_TEXT = {"none": "All Systems Operational", "minor": "Minor Service Outage",
                  "major": "Partial System Outage", "critical": "Major System Outage"}


@dataclass
class _Page:
    components: dict[str, str]  # component name -> service
    state: str = "reachable"
    indicator: str = "none"
    statuses: dict[str, str] = field(default_factory=dict)  # component -> status; missing = operational


class StatusPages:
    def __init__(self, providers: Mapping[str, Mapping[str, str]], host: str = "127.0.0.1", port: int = 0) -> None:
        self.pages = {p: _Page(dict(components)) for p, components in providers.items()}
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None

    def url(self, provider: str) -> str:
        return f"http://{self.host}:{self.port}/{provider}/"

    async def start(self) -> StatusPages:
        app = web.Application()
        app.router.add_get("/{provider}/api/v2/summary.json", self._summary)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def set(self, provider: str, state: str, *, indicator: str | None = None,
            components: Mapping[str, str] | None = None) -> None:
        page = self.pages[provider]
        if state not in PAGE_STATES:
            raise ValueError(f"unknown status page state {state!r} (expected one of {', '.join(PAGE_STATES)})")
        if indicator is not None and indicator not in INDICATOR_TEXT:
            raise ValueError(f"unknown indicator {indicator!r} (expected one of {', '.join(INDICATOR_TEXT)})")
        if state != page.state:
            log.info("status page of %s -> %s", provider, state)
        page.state = state
        if indicator is not None:
            page.indicator = indicator
        if components is not None:
            page.statuses.update(components)

    def reset(self) -> None:
        for page in self.pages.values():
            page.state, page.indicator, page.statuses = "reachable", "none", {}

    async def _summary(self, request: web.Request) -> web.StreamResponse:
        page = self.pages.get(request.match_info["provider"])
        if page is None:
            raise web.HTTPNotFound()
        if page.state == "unreachable":
            if request.transport is not None:
                request.transport.abort()
            raise web.HTTPServiceUnavailable()
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        return web.json_response({
            "page": {"id": request.match_info["provider"], "name": request.match_info["provider"],
                     "url": self.url(request.match_info["provider"]), "updated_at": now},
            "status": {"indicator": page.indicator, "description": INDICATOR_TEXT[page.indicator]},
            "components": [{"id": f"c{i}", "name": name, "status": page.statuses.get(name, "operational"),
                            "updated_at": now} for i, name in enumerate(page.components)],
            "incidents": [], "scheduled_maintenances": []})
