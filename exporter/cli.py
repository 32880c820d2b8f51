"""Command line: run the exporter, check a config, probe once, or run the outage lab demo.

    outage-exporter [--config.file F] [--web.listen-address ADDR] [--region R] [--log.level L]
                    [--log.format logfmt|json] [--config.check] [--shard I/N] [--region.omit-label]
    outage-exporter probe --module M --target T [--region R] [--hostname H] [--config.file F]
                          [--query-name NAME] [--query-type TYPE]
    outage-exporter demo [--scenario NAME] [--speed X] [--web.listen-address ADDR] [--list] [--backend sim|real]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator, Sequence

from exporter import __version__, eventloop, logs
from exporter.config import ConfigError, parse_size
from exporter.config.loader import GC_PAUSE, MAX_CONFIG_BYTES

DEFAULT_LISTEN = ":19115"  # blackbox_exporter uses 9115; the 9100-9999 range is fully allocated
log = logging.getLogger("exporter")


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` or ``:port`` (all interfaces) -> (host, port); raises ArgumentTypeError."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"invalid listen address {value!r} (expected host:port or :port)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log.level", dest="log_level", choices=logs.LEVELS, default="info")
    p.add_argument("--log.format", dest="log_format", choices=("logfmt", "json"), default="logfmt")


SUBCOMMANDS_HELP = """subcommands (each has its own --help):
  probe   run one probe now and print the verdict, its phases and its log:
            outage-exporter probe --module http_2xx --target https://example.com/
  demo    replay an outage against a simulated internet on loopback, with a landing page:
            outage-exporter demo [--scenario facebook-2021-10-04] [--with-stack]
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="outage-exporter", description="Probe services per region over DNS, "
                                "HTTP and TCP and export the results to Prometheus.",
                                usage="%(prog)s [options]\n       %(prog)s {probe,demo} [options]",
                                epilog=SUBCOMMANDS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"outage-exporter {__version__}")
    p.add_argument("--config.file", dest="config_file", default=None,
                   help="YAML config (blackbox.yml modules + regions + services). Default: the embedded "
                        "config probing a few public services.")
    p.add_argument("--config.max-size", dest="config_max_bytes", type=_size, default=MAX_CONFIG_BYTES,
                   metavar="SIZE", help="refuse config files larger than this (default 64MiB); only regular "
                                        "files are read")
    p.add_argument("--web.listen-address", dest="listen", type=parse_listen, default=DEFAULT_LISTEN,
                   help=f"address to serve on (default {DEFAULT_LISTEN})")
    p.add_argument("--region", default=None, help="this vantage point's region: names the implicit region, "
                   "or restricts a multi-region config to one region")
    p.add_argument("--shard", type=_shard, default=None, metavar="I/N",
                   help="run shard I of N (numbered from 1): N replicas with --shard 1/N .. N/N probe every "
                        "check exactly once between them; control checks run on every shard")
    p.add_argument("--region.omit-label", dest="omit_region_label", action="store_true",
                   help="leave the region label out of /metrics (one region per exporter): the agent's "
                        "external label or a scrape target label names the region instead")
    p.add_argument("--config.check", dest="config_check", action="store_true",
                   help="validate the config, print a summary or the error, and exit")
    p.add_argument("--web.config.file", dest="web_config_file", default=None,
                   help="TLS, basic auth and headers for the HTTP endpoints (Prometheus exporter-toolkit "
                        "format; docs/security.md)")
    p.add_argument("--web.disable-probe", dest="disable_probe", action="store_true",
                   help="refuse every /probe request (403); scheduled checks keep running")
    _common(p)
    return p


def _size(text: str) -> int:
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if size < 1:
        raise argparse.ArgumentTypeError("must be at least 1 byte")
    return size


def _shard(text: str):
    from exporter.checks import parse_shard

    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_probe_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="outage-exporter probe", description="Run one probe and print a verdict.")
    p.add_argument("--module", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--region", default=None)
    p.add_argument("--hostname", default=None, help="Host header and TLS SNI override")
    p.add_argument("--timeout", type=float, default=None, help="seconds (default: module / config timeout)")
    p.add_argument("--query-name", dest="query_name", default=None,
                   help="dns modules: the name to ask for (required when the module has no dns.query_name)")
    p.add_argument("--query-type", dest="query_type", default=None,
                   help="dns modules: the record type to ask for (default: the module's, else ANY)")
    p.add_argument("--config.file", dest="config_file", default=None)
    _common(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "probe":
        return _probe_main(build_probe_parser().parse_args(args[1:]))
    if args and args[0] == "demo":
        from exporter.lab.demo import main as demo_main
        return demo_main(args[1:])
    ns = build_parser().parse_args(args)
    logs.setup(ns.log_level, ns.log_format)
    if ns.config_check:
        return _check_main(ns)
    try:
        return eventloop.run(serve(ns.config_file, ns.listen, region=ns.region, shard=ns.shard,
                                   omit_region_label=ns.omit_region_label,
                                   web_config_file=ns.web_config_file, disable_probe=ns.disable_probe,
                                   config_max_bytes=ns.config_max_bytes))
    except ConfigError as exc:
        print(f"outage-exporter: config error: {exc}", file=sys.stderr)
        return 1


def _check_main(ns: argparse.Namespace) -> int:
    """Validate like startup does (including ``--region``) without starting anything."""
    from exporter.runtime import Runtime

    rt = Runtime(ns.config_file, region=ns.region, shard=ns.shard, omit_region_label=ns.omit_region_label,
                 config_max_bytes=ns.config_max_bytes)
    try:
        with GC_PAUSE:  # the process ends here: no collection of objects freed on return anyway
            config = rt.load()
            n = len(rt.expand_checks(config))
    except ConfigError as exc:
        print(f"{ns.config_file or '<embedded>'}: {exc}", file=sys.stderr)
        return 1
    counts = [(len(config.modules), "module"), (len(config.regions), "region"),
              (len(config.services), "service"), (n, "scheduled check")]
    print(f"{config.source}: OK: " + ", ".join(f"{k} {what}{'' if k == 1 else 's'}" for k, what in counts))
    return 0


async def serve(config_file: str | None, listen: tuple[str, int], *, region: str | None = None,
                runtime=None, stop_event: asyncio.Event | None = None, shard=None,
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
                            config_max_bytes=config_max_bytes)
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


def _probe_main(ns: argparse.Namespace) -> int:
    logs.setup(ns.log_level, ns.log_format)
    try:
        return asyncio.run(_probe_once(ns))
    except ConfigError as exc:
        print(f"outage-exporter: config error: {exc}", file=sys.stderr)
        return 2


async def _probe_once(ns: argparse.Namespace) -> int:
    """One probe as /probe would run it; usage problems exit 2 before anything is sent."""
    from exporter.probers import PROBERS, http
    from exporter.runtime import Runtime
    from exporter.scheduler import run_guarded

    rt = Runtime(ns.config_file, region=ns.region)
    rt.config = rt.load()
    module = rt.config.modules.get(ns.module)
    if module is None:
        known = ", ".join(sorted(rt.config.modules))
        return _usage_error(f"unknown module {ns.module!r} (known: {known})")
    try:
        module = with_query(module, ns.query_name, ns.query_type)
    except ValueError as exc:
        return _usage_error(str(exc))
    if module.prober == "dns" and not module.dns.query_name:
        return _usage_error(f"module {ns.module!r} has no dns.query_name; pass --query-name NAME "
                            "(and --query-type TYPE) or set one in the module")
    try:
        region = rt.region_named(ns.region)
    except KeyError:
        return _usage_error(f"unknown region {ns.region!r}")
    timeout = ns.timeout or rt.probe_timeout(module, None)
    try:
        check = rt.adhoc_check(module, ns.target, region=region, timeout=timeout, hostname=ns.hostname)
    except ValueError as exc:
        return _usage_error(f"invalid target {ns.target!r}: {exc}")
    try:
        result = await run_guarded(PROBERS[module.prober], check)
    finally:
        await http.close()
    print(format_verdict(check, result))
    return 0 if result.success else 1


def with_query(module, query_name: str | None, query_type: str | None):
    """``module`` asking for this name and type instead of its own; ValueError names the bad option."""
    from dataclasses import replace

    import dns.rdatatype

    from exporter.config.loader import _dns_enum, _dns_name

    if query_name is None and query_type is None:
        return module
    if module.prober != "dns":
        raise ValueError(f"--query-name and --query-type apply to dns modules; {module.name!r} is "
                         f"{module.prober}")
    try:
        name = _dns_name(query_name, "--query-name") if query_name is not None else module.dns.query_name
        rtype = (_dns_enum(dns.rdatatype, "query type")(query_type, "--query-type") if query_type is not None
                 else module.dns.query_type)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return replace(module, dns=replace(module.dns, query_name=name, query_type=rtype))


def _usage_error(message: str) -> int:
    print(f"outage-exporter probe: {message}", file=sys.stderr)
    return 2


def format_verdict(check, result) -> str:
    verdict = "SUCCESS" if result.success else f"FAILURE ({result.reason})"
    lines = [f"{verdict}: {check.module.prober} probe of {check.target}"
             f"{' via ' + check.resolver if check.resolver else ''} from region {check.region} "
             f"in {result.duration_seconds * 1000:.1f} ms"]
    if result.phases:
        lines.append("phases: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in result.phases.items()))
    if result.details:
        lines.append("details: " + ", ".join(f"{k}={v}" for k, v in result.details.items()))
    lines.append("log:")
    lines.extend("  " + line for line in result.log)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
