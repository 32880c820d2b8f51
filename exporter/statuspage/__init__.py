"""A provider's declared status: its Atlassian Statuspage v2 ``/api/v2/summary.json``, polled.

Declared status is what people wrote, late, on a page that may itself be down (in 2021 Meta's status page
was hosted on the failing network): it is exported next to the measured status and never pages or
silences anything on its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field

import aiohttp

from exporter.config.model import StatusPage

log = logging.getLogger("exporter.statuspage")

INDICATORS = ("none", "minor", "major", "critical")
# Statuspage's own words for each indicator (its status.description)
INDICATOR_WORDS = {"none": "All Systems Operational", "minor": "Minor Service Outage",
                   "major": "Partial System Outage", "critical": "Major System Outage"}
COMPONENT_STATUSES = ("operational", "degraded_performance", "partial_outage", "major_outage",
                      "under_maintenance")
MAX_BODY_BYTES = 4 * 1024 * 1024  # a summary is kilobytes; anything this large is not one


@dataclass
class PageState:
    reachable: bool = False  # the latest poll got a valid summary
    indicator: str | None = None  # the latest valid summary's status.indicator
    components: dict[str, str] = field(default_factory=dict)  # configured component -> status
    last_success: float = 0.0  # unix time of the latest valid summary
    polls: int = 0
    failures: int = 0


def summary_url(url: str) -> str:
    return url if url.endswith(".json") else url.rstrip("/") + "/api/v2/summary.json"


def parse_summary(body: object, page: StatusPage) -> tuple[str, dict[str, str]]:
    """(indicator, component -> status) from a summary; raises ValueError when it is not one."""
    if not isinstance(body, dict) or not isinstance(body.get("status"), dict):
        raise ValueError("no status object")
    indicator = body["status"].get("indicator")
    if indicator not in INDICATORS:
        raise ValueError(f"unknown indicator {indicator!r}")
    listed = body.get("components", [])
    if not isinstance(listed, list):
        raise ValueError("components is not a list")
    by_name = {c.get("name"): c.get("status") for c in listed if isinstance(c, dict)}
    components = {}
    for name, _service in page.components:
        status = by_name.get(name)
        components[name] = status if status in COMPONENT_STATUSES else "unknown"
    return indicator, components


class StatusPagePoller:
    """Polls every configured page on its own interval; ``states`` holds the latest of each."""

    def __init__(self, pages: tuple[StatusPage, ...]) -> None:
        self.pages = pages
        self.states: dict[str, PageState] = {p.provider: PageState() for p in pages}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(p), name=f"statuspage-{p.provider}") for p in self.pages]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _loop(self, page: StatusPage) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                await self.poll(session, page)
                await asyncio.sleep(page.interval)

    async def poll(self, session: aiohttp.ClientSession, page: StatusPage) -> None:
        state = self.states[page.provider]
        state.polls += 1
        try:
            async with session.get(summary_url(page.url), timeout=aiohttp.ClientTimeout(total=page.timeout),
                                   allow_redirects=False) as resp:
                resp.raise_for_status()
                raw = await resp.content.read(MAX_BODY_BYTES)
            state.indicator, state.components = parse_summary(json.loads(raw), page)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            if state.reachable or state.polls == 1:
                log.warning("status page unreachable", extra={"fields": {
                    "provider": page.provider, "err": f"{type(exc).__name__}: {exc}"}})
            state.reachable = False
            state.failures += 1
            return
        state.reachable = True
        state.last_success = time.time()
