"""Run the exporter: the runtime, the web app on its listen address, and the signals that stop or reload it.

The command line (``exporter.cli``) and the outage lab (``exporter.lab``) both start the exporter through
``serve``; the listen-address syntax they accept lives here with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

from exporter import __version__, eventloop
from exporter.config import ConfigError
from exporter.config.reading import MAX_CONFIG_BYTES

DEFAULT_LISTEN = ":19115"  # blackbox_exporter uses 9115; the 9100-9999 range is fully allocated
log = logging.getLogger("exporter")


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` or ``:port`` (all interfaces) -> (host, port); raises ArgumentTypeError."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"invalid listen address {value!r} (expected host:port or :port)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


async def serve(config_file: str | None, listen: tuple[str, int], *, region: str | None = None,
                runtime=None, stop_event: asyncio.Event | None = None, shard=None, workers: int = 1,
                omit_region_label: bool = False, web_config_file: str | None = None,
                disable_probe: bool = False, config_max_bytes: int = MAX_CONFIG_BYTES) -> int:
    """Run the exporter until SIGINT/SIGTERM (or ``stop_event``). SIGHUP reloads the config.

    Returns 0 after a clean shutdown (bounded by SHUTDOWN_SECONDS), 1 when the listen address cannot be
    bound (logged, no traceback).
    """
    from aiohttp import web

    from exporter.runtime import Runtime
    from exporter.web.app import make_app

    rt = runtime or Runtime(config_file, region=region, shard=shard, omit_region_label=omit_region_label,
                            config_max_bytes=config_max_bytes, workers=workers)
    security = _web_security(web_config_file, rt)
    await rt.start()
    rt.ready = False  # ready (/-/ready) once the listener is up too
    app = make_app(rt, security=security, disable_probe=disable_probe)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=HANDLER_GRACE_SECONDS)
    await runner.setup()
    address = format_listen(listen)
    ssl_context = security.ssl_context if security is not None else None
    try:
        await web.TCPSite(runner, listen[0], listen[1], reuse_address=True, ssl_context=ssl_context).start()
    except OSError as exc:  # address in use, not a local address, unknown host name
        log.error("cannot listen", extra={"fields": {"address": address, "err": str(exc)}})
        await rt.stop()
        await runner.cleanup()
        return 1
    rt.ready = True
    bound = ", ".join(format_listen(a[:2]) for a in runner.addresses)  # the real port when asked for port 0
    log.info("listening", extra={"fields": {"address": bound, "version": __version__,
                                          "loop": eventloop.running_name()}})
    stop = stop_event or asyncio.Event()
    with _signals(stop, rt):  # still installed while shutting down: a second SIGTERM changes nothing
        await stop.wait()
        log.info("shutting down")
        await _shutdown(rt, runner)
    return 0


HANDLER_GRACE_SECONDS = 1.0  # requests other than /probe (a /metrics scrape) may finish within this
SHUTDOWN_SECONDS = 5.0  # SIGTERM to exit, at most, even with probes waiting on black-holed targets


async def _shutdown(rt, runner) -> None:
    """Stop accepting, cancel /probe requests and scheduled probes in flight, close every socket.

    The listeners close first, then /probe handlers are cancelled (the app's on_shutdown) and other
    requests get HANDLER_GRACE_SECONDS; then the scheduler cancels its probes. Each step is bounded so the
    whole takes at most about SHUTDOWN_SECONDS.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SHUTDOWN_SECONDS
    try:
        async with asyncio.timeout_at(deadline - SHUTDOWN_SECONDS / 2):
            await runner.cleanup()
    except TimeoutError:
        log.warning("HTTP server did not stop in time; closing anyway")
    await rt.stop(wait=max(deadline - loop.time() - 0.5, 0.1))
    log.debug("stopped", extra={"fields": {"seconds": round(SHUTDOWN_SECONDS - (deadline - loop.time()), 3)}})


def _web_security(path: str | None, rt):
    """The --web.config.file, loaded before anything starts; reloaded with the config."""
    if path is None:
        return None
    from exporter.web.webconfig import WebSecurity

    try:
        security = WebSecurity(path, on_load=rt.self_metrics.web_config_loaded)
    except ConfigError as exc:
        raise ConfigError("", f"--web.config.file {path}: {exc}") from None
    rt.reload_hooks.append(security.reload)
    return security


def format_listen(listen: tuple[str, int]) -> str:
    host, port = listen
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@contextlib.contextmanager
def _signals(stop: asyncio.Event, rt) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop``; SIGHUP reloads. Handlers are removed again on exit (embedding, tests)."""
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones

    def reload() -> None:
        task = asyncio.ensure_future(rt.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    installed = []
    for signum, handler in ((signal.SIGINT, stop.set), (signal.SIGTERM, stop.set), (signal.SIGHUP, reload)):
        try:
            loop.add_signal_handler(signum, handler)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
            continue
        installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
