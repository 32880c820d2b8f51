"""aiohttp application: every endpoint reads prepared state; only /probe touches the network."""

from __future__ import annotations

import logging

from aiohttp import web

from exporter.config import dump_config
from exporter.config.model import Config
from exporter.exposition import render_metrics_async
from exporter.exposition.probe import render_probe_result
from exporter.runtime import Runtime
from exporter.web import landing

log = logging.getLogger("exporter.web")

CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"
RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)


def make_app(runtime: Runtime) -> web.Application:
    app = web.Application()
    app[RUNTIME] = runtime
    app.router.add_get("/", index)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/probe", probe)
    app.router.add_get("/config", config_page)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    return app


async def metrics(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    body = await render_metrics_async(rt.store, rt.scheduler, rt.self_metrics)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy\n")


async def ready(request: web.Request) -> web.Response:
    if request.app[RUNTIME].ready:
        return web.Response(text="Ready\n")
    return web.Response(status=503, text="Not ready\n")


async def reload(request: web.Request) -> web.Response:
    ok, message = await request.app[RUNTIME].reload()
    if ok:
        return web.Response(text=message + "\n")
    return web.Response(status=500, text=f"failed to reload config: {message}\n")


async def config_page(request: web.Request) -> web.Response:
    config = request.app[RUNTIME].config
    assert config is not None
    return web.Response(text=dump_config(config), content_type="text/plain")


async def probe(request: web.Request) -> web.Response:
    """blackbox-compatible /probe: one probe now, a fresh set of metrics for just this request."""
    rt = request.app[RUNTIME]
    config: Config | None = rt.config
    assert config is not None
    q = request.query
    module_name = q.get("module", "http_2xx")
    module = config.modules.get(module_name)
    if module is None:
        return web.Response(status=400, text=f"Unknown module \"{module_name}\"\n")
    target = q.get("target", "")
    if not target:
        return web.Response(status=400, text="Target parameter is missing\n")
    if module.prober == "dns" and not module.dns.query_name:
        return web.Response(status=400, text=f"Module \"{module_name}\" has no dns.query_name; "
                                               "set one to use it with /probe\n")
    try:
        region = rt.region_named(q.get("region"))
    except KeyError:
        known = ", ".join(r.name for r in config.regions)
        return web.Response(status=400, text=f"Unknown region \"{q.get('region')}\" (known: {known})\n")
    timeout = rt.probe_timeout(module, request.headers.get("X-Prometheus-Scrape-Timeout-Seconds"))
    hostname = q.get("hostname") or None
    try:
        check = rt.adhoc_check(module, target, region=region, timeout=timeout, hostname=hostname)
    except ValueError as exc:
        return web.Response(status=400, text=f"Invalid target \"{target}\": {exc}\n")
    assert rt.scheduler is not None
    result = await rt.scheduler.run_once(check)
    rt.self_metrics.probe_endpoint_request(module_name)
    body = render_probe_result(result, module.prober)
    if q.get("debug", "").lower() == "true":
        module_yaml = dump_config(Config(modules={module_name: module}))
        text = ("Logs for the probe:\n" + "\n".join(result.log) +
                f"\n\nResult: {'success' if result.success else 'failure: ' + str(result.reason)}"
                "\n\nMetrics that would have been returned:\n" + body +
                "\n\nModule configuration:\n" + module_yaml)
        return web.Response(text=text, content_type="text/plain")
    return web.Response(text=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def index(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    config = rt.config
    assert config is not None
    by_cell: dict[tuple[str, str], list] = {}
    services: dict[str, tuple[str, str, bool]] = {}
    for check in rt.checks:
        state = rt.store.get(check.key)
        by_cell.setdefault((check.service, check.region), []).append((check, state.last if state else None))
        prev = services.get(check.service)
        control = check.control if prev is None else (prev[2] and check.control)
        services[check.service] = (check.service, check.provider, control)
    unhealthy = {v.region for v in rt.store.vantages() if not v.healthy}  # its controls are failing
    grid = {key: landing.cell_state(items, inconclusive=key[1] in unhealthy and not services[key[0]][2])
            for key, items in by_cell.items()}
    regions = [(r.name, r.display_name) for r in config.regions
               if any(c.region == r.name for c in rt.checks)] or [(r.name, r.display_name) for r in config.regions]
    page = landing.render(
        grid=grid,
        services=list(services.values()),
        regions=regions,
        recent_failures=rt.store.recent_failures(),
        banner=rt.banner() if rt.banner else None,
        config_error=rt.self_metrics.last_reload_error,
    )
    return web.Response(text=page, content_type="text/html")
