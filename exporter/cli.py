"""Command line: run the exporter, check a config, probe once, or run the outage lab demo.

    outage-exporter [--config.file F] [--web.listen-address ADDR] [--region R] [--log.level L]
                    [--log.format logfmt|json] [--config.check] [--shard I/N] [--workers N]
                    [--region.omit-label]
    outage-exporter probe --module M --target T [--region R] [--hostname H] [--config.file F]
                          [--query-name NAME] [--query-type TYPE]
    outage-exporter demo [--scenario NAME] [--speed X] [--web.listen-address ADDR] [--list] [--backend sim|real]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from exporter import __version__, eventloop, logs
from exporter.config import ConfigError, parse_size
from exporter.config.reading import GC_PAUSE, MAX_CONFIG_BYTES
from exporter.server import DEFAULT_LISTEN, parse_listen, serve
from exporter.workers import default_workers


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
    p.add_argument("--workers", type=_workers, default=None, metavar="N",
                   help="probe in N worker processes; the web server, /probe and /metrics stay in this one "
                        "(default: the CPUs this process may use, by affinity and cgroup quota; 1 probes in "
                        "this process)")
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


def _workers(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid worker count {text!r}: expected a whole number of at least 1")
    return int(text)


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
                                   workers=ns.workers or default_workers(),
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

    from exporter.config.modules import dns_enum, dns_name

    if query_name is None and query_type is None:
        return module
    if module.prober != "dns":
        raise ValueError(f"--query-name and --query-type apply to dns modules; {module.name!r} is "
                         f"{module.prober}")
    try:
        name = dns_name(query_name, "--query-name") if query_name is not None else module.dns.query_name
        rtype = (dns_enum(dns.rdatatype, "query type")(query_type, "--query-type") if query_type is not None
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
