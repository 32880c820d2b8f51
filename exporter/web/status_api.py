"""The status surfaces: the landing page, ``GET /api/v1/status`` and the Statuspage-shaped
``GET /api/v2/summary.json``, all rendered from one :class:`exporter.state.Board` (docs/status-api.md).

They sit behind the same middleware (basic auth, headers from --web.config.file) as every other route.
A background task evaluates the board every few seconds so "since" and the 30-minute history strips have
no holes when nobody is looking.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from aiohttp import web

from exporter import state as st
from exporter.runtime import Runtime
from exporter.web import landing

API_VERSION = "v1"
EVALUATE_EVERY = 5.0  # seconds between background evaluations (the page polls as often)
BOARD: web.AppKey[st.Board] = web.AppKey("status_board", st.Board)
_RUNTIME: web.AppKey[Runtime] = web.AppKey("status_runtime", Runtime)


def setup(app: web.Application, runtime: Runtime) -> None:
    """Add the status routes and the board that feeds them to ``app``."""
    app[_RUNTIME] = runtime
    app[BOARD] = st.Board(st.runtime_source(runtime))
    app.cleanup_ctx.append(_evaluate_regularly)
    app.router.add_get("/", index)
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/api/v2/summary.json", summary)


async def _evaluate_regularly(app: web.Application) -> AsyncIterator[None]:
    async def loop() -> None:
        while True:
            if app[_RUNTIME].ready:
                await app[BOARD].snapshot_async()
            await asyncio.sleep(EVALUATE_EVERY)

    task = asyncio.create_task(loop(), name="status-board")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _snapshot(request: web.Request) -> st.Snapshot:
    return await request.app[BOARD].snapshot_async()


async def index(request: web.Request) -> web.Response:
    rt = request.app[_RUNTIME]
    page = landing.render(
        await _snapshot(request),
        recent_failures=rt.store.recent_failures(),
        banner=rt.banner() if rt.banner else None,
        config_error=rt.self_metrics.last_reload_error,
        probe_example=_probe_example(request),
    )
    return web.Response(text=page, content_type="text/html")


def _probe_example(request: web.Request) -> str | None:
    """A /probe link that works as it is: an http module probing this exporter's own /-/healthy, by the
    address the request came in on (a name could resolve elsewhere through the region's resolvers)."""
    config = request.app[_RUNTIME].config
    module = next((name for name, m in config.modules.items() if m.prober == "http"), None) if config else None
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    if module is None or not sockname:
        return None
    host, port = sockname[0], sockname[1]
    if ":" in host:
        host = f"[{host}]"
    return (f"/probe?module={quote(module)}&target={quote(f'{request.scheme}://{host}:{port}/-/healthy')}"
            "&debug=true")


async def status(request: web.Request) -> web.Response:
    return web.json_response(status_document(await _snapshot(request)), headers={"Cache-Control": "no-store"})


async def summary(request: web.Request) -> web.Response:
    base = f"{request.scheme}://{request.host}/"
    return web.json_response(summary_document(await _snapshot(request), base), headers={"Cache-Control": "no-store"})


# --- /api/v1/status ---------------------------------------------------------------------------------------
def iso(t: float | None) -> str | None:
    """RFC 3339 UTC with milliseconds, or None."""
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _check(c: st.CheckStatus) -> dict[str, Any]:
    check = c.check
    return {
        "check": check.check, "target": landing.mask_password(check.target), "resolver": check.resolver,
        "prober": check.prober, "control": check.control, "state": c.state, "failing": c.failing,
        "conclusive": c.conclusive, "inconclusive_because": c.why_inconclusive or None,
        "probes": c.probes, "failed": c.failed, "reasons": list(c.reasons),
        "failed_http_statuses": list(c.failed_http_statuses), "http_status": c.http_status,
        "rcode": c.rcode, "nameservers_answering": c.answering, "nameservers": c.nameservers,
        "last_run": iso(c.last_run),
    }


def _cell(c: st.CellStatus) -> dict[str, Any]:
    return {
        "service": c.service, "provider": c.provider, "region": c.region, "control": c.control,
        "state": c.state, "since": iso(c.since), "signals": list(c.signals), "reasons": list(c.reasons),
        "causes": list(c.causes), "checks": [_check(x) for x in c.checks],
        "history": [{"t": iso(t), "state": s} for t, s in c.history],
    }


def status_document(snap: st.Snapshot) -> dict[str, Any]:
    """The /api/v1/status body (docs/status-api.schema.json)."""
    return {
        "version": API_VERSION,
        "generated_at": iso(snap.generated_at),
        "window_seconds": snap.window,
        "history_step_seconds": st.HISTORY_STEP,
        "states": list(st.STATES),
        "regions": [{"name": g.name, "display_name": g.display_name,
                     "vantage": {"healthy": g.healthy, "healthy_in_window": g.healthy_in_window,
                                 "controls": g.controls, "failing_controls": list(g.failing_controls),
                                 "reason": g.reason}} for g in snap.regions],
        "services": [{"service": s.service, "provider": s.provider, "control": s.control, "state": s.state,
                      "regions_failing": list(s.regions_failing), "signals": list(s.signals)} for s in snap.services],
        "providers": [{"provider": p.provider, "state": p.state, "services": p.services,
                       "services_down": p.services_down, "outage": p.outage} for p in snap.providers],
        "cells": [_cell(c) for c in snap.cells],
        "incidents": [{"provider": i.provider, "state": i.state, "cause": i.cause, "causes": list(i.causes),
                       "details": list(i.details), "services": list(i.services), "regions": list(i.regions),
                       "since": iso(i.since), "declared": i.declared or None, "summary": i.summary(snap.generated_at)}
                      for i in snap.incidents],
        "routing": [_routing(v) for v in snap.routing],
        "declared": [_declared(d) for d in snap.declared],
    }


def _routing(v: st.RoutingVerdict) -> dict[str, Any]:
    return {"provider": v.provider, "state": v.state, "summary": v.summary(),
            "prefixes": [{"prefix": p.prefix, "role": p.role, "state": p.state, "peers": p.peers,
                          "peers_max": p.peers_max} for p in v.prefixes]}


def _declared(d: st.DeclaredStatus) -> dict[str, Any]:
    return {"provider": d.provider, "reachable": d.reachable, "indicator": d.indicator,
            "description": d.description, "summary": d.summary(),
            "components": [{"component": name, "service": service, "status": status}
                           for name, service, status in d.components]}


# --- /api/v2/summary.json (Atlassian Statuspage shape) -----------------------------------------------------
_COMPONENT_STATUS = {st.DOWN: "major_outage", st.DEGRADED: "partial_outage"}
_INDICATOR = (("critical", "Major System Outage"), ("major", "Partial System Outage"),
              ("minor", "Minor Service Outage"), ("none", "All Systems Operational"))


def _component_status(service: st.ServiceStatus, cells: list[st.CellStatus]) -> str:
    """major_outage: down from a quorum of regions; partial_outage: down somewhere; degraded_performance:
    some probes failing; operational otherwise (inconclusive and no data included: nothing known against)."""
    if service.state == st.DOWN:
        return "major_outage"
    if any(c.state == st.DOWN for c in cells):
        return "partial_outage"
    if any(c.state == st.DEGRADED for c in cells):
        return "degraded_performance"
    return "operational"


def summary_document(snap: st.Snapshot, base_url: str) -> dict[str, Any]:
    """The same snapshot as a Statuspage v2 summary.json: components per service (grouped by provider),
    one unresolved incident per provider incident, and the page's status indicator."""
    updated = iso(snap.generated_at)
    page = {"id": "outage-exporter", "name": "outage-exporter", "url": base_url, "time_zone": "Etc/UTC",
            "updated_at": updated}
    components: list[dict[str, Any]] = []
    groups: dict[str, dict[str, Any]] = {}
    cells_of: dict[str, list[st.CellStatus]] = {}
    for cell in snap.cells:
        cells_of.setdefault(cell.service, []).append(cell)
    for position, service in enumerate(s for s in snap.services if not s.control):
        group = groups.get(service.provider)
        if group is None:
            group = groups[service.provider] = _component(f"provider:{service.provider}", service.provider or "-",
                                                           len(groups), updated, group=True)
            components.append(group)
        cells = cells_of.get(service.service, [])
        since = min((c.since for c in cells), default=snap.generated_at)
        item = _component(f"service:{service.service}", service.service, position, updated,
                          status=_component_status(service, cells), group_id=group["id"], created=iso(since))
        item["description"] = "; ".join(f"{c.region}: {c.state}" + (f" ({', '.join(c.reasons)})" if c.reasons else "")
                                        for c in cells)
        group["components"].append(item["id"])
        components.append(item)
    for group in groups.values():
        members = [c["status"] for c in components if c.get("group_id") == group["id"]]
        group["status"] = max(members, key=_STATUS_ORDER.index) if members else "operational"
    incidents = [_incident(i, snap, updated, base_url) for i in snap.incidents]
    statuses = {c["status"] for c in components}
    level = (0 if "major_outage" in statuses else 1 if "partial_outage" in statuses
             else 2 if "degraded_performance" in statuses else 3)
    indicator, description = _INDICATOR[level]
    return {"page": page, "components": components, "incidents": incidents, "scheduled_maintenances": [],
            "status": {"indicator": indicator, "description": description}}


_STATUS_ORDER = ["operational", "degraded_performance", "partial_outage", "major_outage"]


def _component(cid: str, name: str, position: int, updated: str | None, *, status: str = "operational",
               group: bool = False, group_id: str | None = None, created: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": cid, "name": name, "status": status, "created_at": created or updated,
                           "updated_at": updated, "position": position, "description": None, "showcase": True,
                           "start_date": None, "group_id": group_id, "page_id": "outage-exporter", "group": group,
                           "only_show_if_degraded": False}
    if group:
        out["components"] = []
    return out


def _incident(i: st.Incident, snap: st.Snapshot, updated: str | None, base_url: str) -> dict[str, Any]:
    text = i.summary(snap.generated_at)
    started = iso(i.since)
    return {
        "id": f"provider:{i.provider}", "name": f"{i.provider} {'down' if i.state == st.DOWN else 'degraded'}: "
        f"{i.details[0]}", "status": "identified" if i.cause != "other" else "investigating",
        "created_at": started, "updated_at": updated, "monitoring_at": None, "resolved_at": None,
        "impact": "critical" if i.state == st.DOWN else "major", "shortlink": base_url, "started_at": started,
        "page_id": "outage-exporter",
        "incident_updates": [{"id": f"provider:{i.provider}:{int(i.since)}", "status": "identified",
                              "body": text, "incident_id": f"provider:{i.provider}", "created_at": started,
                              "updated_at": updated, "display_at": updated, "affected_components": None}],
        "components": [{"id": f"service:{s}", "name": s} for s in i.services],
    }
