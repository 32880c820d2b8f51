"""aiohttp application: every endpoint reads prepared state; only /probe touches the network."""

from __future__ import annotations

import asyncio
import logging
import math

from aiohttp import web

from exporter.checks import Check
from exporter.config import dump_config
from exporter.config.model import Config, Region
from exporter.config.probe_policy import CONNECT_GUARD, REFUSED_DISABLED, REFUSED_RATE_LIMITED, RateLimit
from exporter.exposition import render_metrics_chunks_async
from exporter.exposition.probe import render_probe_result
from exporter.logs import mask_secrets
from exporter.probers import result as r
from exporter.runtime import Runtime
from exporter.web import probeguard, probeparams, status_api
from exporter.web.ratelimit import TokenBuckets
from exporter.web.webconfig import WebSecurity

log = logging.getLogger("exporter.web")

CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"


class ProbeGate:
    """Per-application /probe state: the --web.disable-probe switch, the rate limiter (rebuilt when a reload
    changes its settings) and the handlers in flight, cancelled at shutdown."""

    def __init__(self, *, disabled: bool = False) -> None:
        self.disabled = disabled
        self.in_flight: set[asyncio.Task[object]] = set()
        self._limit: RateLimit | None = None
        self._buckets: TokenBuckets | None = None

    def buckets(self, limit: RateLimit) -> TokenBuckets:
        if self._buckets is None or limit != self._limit:
            self._limit, self._buckets = limit, TokenBuckets(limit.rate, limit.burst)
        return self._buckets

    def cancel_in_flight(self) -> None:
        for task in list(self.in_flight):
            task.cancel()


RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)
PROBE_GATE: web.AppKey[ProbeGate] = web.AppKey("probe_gate", ProbeGate)


def make_app(runtime: Runtime, *, security: WebSecurity | None = None, disable_probe: bool = False) -> web.Application:
    """The exporter's application. ``security`` (from --web.config.file) adds basic auth and response
    headers; ``disable_probe`` (--web.disable-probe) turns /probe off whatever the config says."""
    app = web.Application(middlewares=[security.middleware] if security is not None else [])
    if security is not None:
        app.on_response_prepare.append(security.add_headers)
    app[RUNTIME] = runtime
    app[PROBE_GATE] = gate = ProbeGate(disabled=disable_probe)

    async def cancel_probes(_: web.Application) -> None:  # shutdown: a probe may wait on a black hole
        gate.cancel_in_flight()

    app.on_shutdown.append(cancel_probes)
    status_api.setup(app, runtime)  # /, /api/v1/status, /api/v2/summary.json
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/probe", probe)
    app.router.add_get("/config", config_page)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    return app


async def metrics(request: web.Request) -> web.StreamResponse:
    """The exporter's own metrics and every scheduled check. The body (tens of MB at 10k checks) is written
    chunk by chunk with its length known up front: no extra copy into one buffer, no chunked encoding."""
    rt = request.app[RUNTIME]
    chunks = await render_metrics_chunks_async(rt.store, rt.scheduler, rt.self_metrics)
    response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE_LATEST})
    response.content_length = sum(len(chunk) for chunk in chunks)
    await response.prepare(request)
    if request.method != "HEAD":  # HEAD: the headers (and length) of a GET, no body
        for chunk in chunks:
            await response.write(chunk)
    await response.write_eof()
    return response


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


def _refuse(request: web.Request, status: int, reason: str, message: str, *,
            headers: dict[str, str] | None = None, quiet: bool = False) -> web.Response:
    """A refused /probe request: counted by reason, logged (``quiet``: at debug level), explained."""
    _count_refusal(request, reason, message, quiet=quiet)
    return web.Response(status=status, text=f"Probe refused: {message}\n", headers=headers)


def _count_refusal(request: web.Request, reason: str, message: str, *, quiet: bool = False) -> None:
    rt = request.app[RUNTIME]
    rt.self_metrics.probe_refused(reason)
    fields = {"reason": reason, "client": request.remote or "", "module": request.query.get("module", ""),
              "target": mask_secrets(request.query.get("target", "")), "detail": message}
    log.log(logging.DEBUG if quiet else logging.WARNING, "probe request refused", extra={"fields": fields})


def _gate(request: web.Request, config: Config) -> web.Response | None:
    """The switches and the rate limit, checked before anything else is looked at."""
    gate = request.app[PROBE_GATE]
    if gate.disabled or not config.probe.enabled:
        why = "--web.disable-probe" if gate.disabled else "probe.enabled: false in the configuration"
        return _refuse(request, 403, REFUSED_DISABLED, f"the /probe endpoint is disabled ({why})")
    decision = gate.buckets(config.probe.rate_limit).take(request.remote or "unknown")
    if decision.allowed:
        return None
    retry = max(1, math.ceil(decision.retry_after))
    return _refuse(request, 429, REFUSED_RATE_LIMITED, f"too many requests from {request.remote}; retry in {retry}s "
                   "(probe.rate_limit)", headers={"Retry-After": str(retry)}, quiet=not decision.first_refusal)


async def probe(request: web.Request) -> web.StreamResponse:
    """blackbox-compatible /probe: one probe now, a fresh set of metrics for just this request."""
    gate = request.app[PROBE_GATE]
    task = asyncio.current_task()
    assert task is not None
    gate.in_flight.add(task)
    try:
        return await _probe(request)
    finally:
        gate.in_flight.discard(task)


async def _probe(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    config: Config | None = rt.config
    assert config is not None
    refused = _gate(request, config)
    if refused is not None:
        return refused
    q = request.query
    problem = probeparams.query_problem(q)
    if problem is not None:
        return web.Response(status=400, text=f"Invalid request: {problem}\n")
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
        return web.Response(status=400, text=f"Invalid target \"{mask_secrets(target)}\": {exc}\n")
    problem = probeparams.target_problem(check)
    if problem is not None:
        return web.Response(status=400, text=f"Invalid target \"{mask_secrets(target)}\": {problem}\n")
    guard = probeguard.pre_check(config.probe, module_name, check)
    if isinstance(guard, probeguard.Refusal):
        return _refuse(request, 403, guard.reason, guard.message)
    assert rt.scheduler is not None
    token = CONNECT_GUARD.set(guard)
    try:
        result = await rt.scheduler.run_once(check)
    finally:
        CONNECT_GUARD.reset(token)
    refused = probeguard.during_check(guard) or probeguard.post_check(guard, result)
    if refused is not None and refused.on_redirect:  # the target was probed: report its failure
        _count_refusal(request, refused.reason, refused.message)
    elif refused is not None:
        return _refuse(request, 403, refused.reason, refused.message)
    rt.self_metrics.probe_endpoint_request(module_name)
    if not result.success:
        rt.self_metrics.probe_endpoint_failure(module_name, result.reason or r.INTERNAL)
    body = render_probe_result(result, module.prober)
    if q.get("debug", "").lower() == "true":
        module_yaml = dump_config(Config(modules={module_name: module}))
        text = ("Logs for the probe:\n" + "\n".join(mask_secrets(line) for line in result.log) +
                f"\n\nResult: {'success' if result.success else 'failure: ' + str(result.reason)}"
                f"\n\n{_debug_region(region, check)}"
                "\n\nMetrics that would have been returned:\n" + body +
                "\n\nModule configuration:\n" + module_yaml)
        return web.Response(text=text, content_type="text/plain")
    return web.Response(text=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _debug_region(region: Region, check: Check) -> str:
    """Which region's view the probe took: the resolvers a name was looked up with, or the server asked."""
    if check.dns_server is not None:
        return f"Region: {region.name} (DNS server asked directly: {check.resolver})"
    resolvers = ", ".join(r.name for r in region.resolvers) or "none"
    return f"Region: {region.name} (resolvers: {resolvers})"
