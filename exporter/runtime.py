"""The running exporter: owns the current config, the results store, the scheduler and reloads.

Reload is all-or-nothing: a file that fails to load or validate leaves the last good config running and
is reported through ``outage_exporter_config_last_reload_successful 0`` and an error log line.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from exporter import checks as checks_mod
from exporter import heap
from exporter.checks import Check
from exporter.config import ConfigError, load_config
from exporter.config.addresses import parse_dns_server_or_host
from exporter.config.model import Config, Module, Region
from exporter.config.reading import GC_PAUSE, MAX_CONFIG_BYTES, check_readable
from exporter.config.references import ReferencedFile, referenced_files
from exporter.exposition.scheduled import prepare_scheduled
from exporter.exposition.self_metrics import SelfMetrics
from exporter.looplag import LoopLagMonitor
from exporter.results import ResultStore
from exporter.routing.signals import Signals
from exporter.scheduler import ProberFn, Scheduler
from exporter.workers.pool import WorkerPool

log = logging.getLogger("exporter.runtime")

CONFIG_FILE_RECHECK_SECONDS = 30.0  # how often the files modules name (CA, tokens) are checked again
SCRAPE_TIMEOUT_OFFSET = 0.5  # seconds kept back from Prometheus' scrape timeout, as blackbox does
MIN_PROBE_TIMEOUT = 0.1  # seconds: a scrape timeout shorter than the offset still gets a (short) probe
PROBE_TIMEOUT_CAP = 120.0  # seconds: no /probe probe runs longer, whatever the request or config says


def _positive_seconds(text: str | None) -> float | None:
    """``text`` as a finite positive number of seconds, or None."""
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value > 0 else None


@dataclass
class Runtime:
    config_path: str | None
    region: str | None = None  # --region: restrict to (or name) this region
    shard: checks_mod.Shard | None = None  # --shard i/N: run only this replica's share of the checks
    workers: int = 1  # --workers N: probe in N worker processes (exporter.workers); 1 probes in this one
    omit_region_label: bool = False  # --region.omit-label: the collector (agent, target label) adds region
    resolv_conf: str = "/etc/resolv.conf"
    config_max_bytes: int = MAX_CONFIG_BYTES  # --config.max-size: larger config files are refused
    config: Config | None = None
    checks: list[Check] = field(default_factory=list)
    store: ResultStore = field(default_factory=ResultStore)
    self_metrics: SelfMetrics = field(default_factory=SelfMetrics)
    scheduler: Scheduler | WorkerPool | None = None
    looplag: LoopLagMonitor | None = None
    signals: Signals = field(default_factory=Signals)  # routing feed and status pages (exporter/routing)
    ready: bool = False
    banner: Callable[[], dict[str, str]] | None = None  # extra facts for the landing page (the demo)
    reload_hooks: list[Callable[[], object]] = field(default_factory=list)  # also run on every reload (web config)
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _files: tuple[ReferencedFile, ...] = ()  # files the current config names
    _files_task: asyncio.Task | None = None
    _probing: bool = False  # holds the loop's shared probe resources (probers.shared) until stop()

    def load(self) -> Config:
        """Load and validate the config file; raises ConfigError naming the YAML path."""
        config = load_config(self.config_path, default_region=self.region, resolv_conf=self.resolv_conf,
                             max_bytes=self.config_max_bytes)
        if self.region is not None and config.regions and self.region not in {r.name for r in config.regions}:
            known = ", ".join(sorted(r.name for r in config.regions))
            raise ConfigError("regions", f"--region {self.region!r} is not a configured region (known: {known})")
        if self.omit_region_label and self.region is None and len(config.regions) > 1:
            known = ", ".join(r.name for r in config.regions)
            raise ConfigError("regions", "--region.omit-label needs one region per exporter: pass --region "
                              f"or use a one-region config (configured: {known})")
        return config

    def expand_checks(self, config: Config) -> list[Check]:
        """The checks this process schedules for ``config`` (all regions, or only the --region one)."""
        only = self.region if self.region is not None and config.regions else None
        with GC_PAUSE:  # tens of thousands of new objects and no garbage: see reading._GCPause
            checks = checks_mod.select_shard(checks_mod.expand(config, only_region=only), self.shard)
            return checks_mod.without_region_label(checks) if self.omit_region_label else checks

    async def start(self) -> None:
        from exporter.probers import PROBERS, shared  # imported here: --config.check needs none of the probers

        config = self.load()
        self.config = config
        self.checks = self.expand_checks(config)
        self.scheduler = self._scheduler(PROBERS, config.defaults.concurrency)
        self.looplag = LoopLagMonitor()
        self.looplag.start()
        self.self_metrics.scheduler = self.scheduler
        self.self_metrics.looplag = self.looplag
        self._export_shard()
        shared.acquire()
        self._probing = True
        await self.scheduler.start(self.checks)
        self.signals.register(self.self_metrics.registry)
        await self.signals.apply(config, self.store)
        self._files = referenced_files(config)
        await self.check_config_files()
        self._files_task = asyncio.create_task(self._recheck_config_files(), name="config-files")
        await self._settle_load()
        self.self_metrics.reload_succeeded()
        self.ready = True
        log.info("started", extra={"fields": {"config": config.source, "checks": len(self.checks),
                                              "regions": len(config.regions), "workers": self.workers}})

    async def _settle_load(self) -> None:
        """After a load: render every check's /metrics text (the next scrape only joins it), then keep what
        the load made out of later full garbage collections (exporter.heap)."""
        await prepare_scheduled(self.store)
        heap.settle()

    def _scheduler(self, probers: Mapping[str, ProberFn], concurrency: int) -> Scheduler | WorkerPool:
        """This process probes (one worker), or a pool of worker processes does."""
        if self.workers > 1:
            return WorkerPool(self.store, probers, concurrency=concurrency, workers=self.workers)
        return Scheduler(self.store, probers, concurrency=concurrency)

    async def check_config_files(self) -> None:
        """``outage_exporter_config_file_unreadable``: was checked at load; a file can break afterwards."""
        files = self._files
        states = await asyncio.to_thread(_file_states, files) if files else []
        self.self_metrics.config_files_checked(states)

    async def _recheck_config_files(self) -> None:
        while True:
            await asyncio.sleep(CONFIG_FILE_RECHECK_SECONDS)
            await self.check_config_files()

    def _export_shard(self) -> None:
        """``outage_exporter_shard_info{shard,shards}``: which share of the checks this replica runs."""
        if self.shard is not None:
            self.self_metrics.set_shard(self.shard.index, self.shard.count)

    async def reload(self) -> tuple[bool, str]:
        """Reload the config file. Returns (ok, message); never raises for a bad file."""
        async with self._reload_lock:
            for hook in self.reload_hooks:  # off the event loop too: they read files (the web config)
                await asyncio.to_thread(hook)
            try:  # off the event loop: a large file must not stall scrapes and probes while it parses
                config = await asyncio.to_thread(self.load)
            except ConfigError as exc:
                self.self_metrics.reload_failed(str(exc))
                log.error("config reload failed; keeping the last good config",
                          extra={"fields": {"err": str(exc)}})
                return False, str(exc)
            except Exception as exc:  # noqa: BLE001 - a loader bug must not cost the last good config
                message = f"internal error while loading the config: {type(exc).__name__}: {exc}"
                self.self_metrics.reload_failed(message)
                log.error("config reload failed; keeping the last good config", exc_info=exc,
                          extra={"fields": {"err": message}})
                return False, message
            if self.config is not None and config.checksum == self.config.checksum:
                self._reload_succeeded()
                return True, "config unchanged"
            new_checks = await asyncio.to_thread(self.expand_checks, config)
            assert self.scheduler is not None
            await self.scheduler.reload(new_checks)
            self.config, self.checks = config, new_checks
            await self.signals.apply(config, self.store)
            self._files = referenced_files(config)
            await self.check_config_files()
            await self._settle_load()
            self._reload_succeeded()
            log.info("config reloaded", extra={"fields": {"checks": len(new_checks)}})
            return True, "config reloaded"

    def _reload_succeeded(self) -> None:
        """Record a good load; say so when it ends a run of failed ones (the error log is not the last word)."""
        previous_error = self.self_metrics.last_reload_error
        self.self_metrics.reload_succeeded()
        if previous_error is not None:
            log.info("config reload recovered after a failed one",
                     extra={"fields": {"previous_err": previous_error}})

    async def stop(self, *, wait: float | None = None) -> None:
        """Stop probing; in-flight probes are cancelled and awaited for at most ``wait`` seconds."""
        self.ready = False
        if self._files_task is not None:
            self._files_task.cancel()
        if self.scheduler is not None:
            await (self.scheduler.stop() if wait is None else self.scheduler.stop(wait=wait))
        if self.looplag is not None:
            await self.looplag.stop()
        await self.signals.stop()
        if self._probing:
            self._probing = False
            from exporter.probers import shared

            await shared.release()
        heap.release()

    # --- one-off probes (/probe and the `probe` command) -------------------------------------------------
    def region_named(self, name: str | None) -> Region:
        assert self.config is not None
        regions = self.config.regions
        if name is None:
            if self.region is not None:
                name = self.region
            else:
                return regions[0]
        for region in regions:
            if region.name == name:
                return region
        raise KeyError(name)

    def adhoc_check(self, module: Module, target: str, *, region: Region, timeout: float,
                    hostname: str | None = None) -> Check:
        """A Check for one ad-hoc probe of ``target`` with ``module`` (blackbox /probe semantics)."""
        common = dict(service="", provider="", region=region.name, check=module.name, module=module,
                      resolvers=region.resolvers, hostname=hostname, interval=timeout, timeout=timeout)
        if module.prober == "dns":
            server = parse_dns_server_or_host(target)
            qname = module.dns.query_name
            return Check(target=qname, resolver=server.name, dns_server=server, query_name=qname, **common)
        if module.prober == "http" and "://" not in target:
            target = "http://" + target
        return Check(target=target, resolver="", **common)

    def probe_timeout(self, module: Module, scrape_timeout_header: str | None) -> float:
        """The /probe deadline: Prometheus' scrape timeout less an offset, else ``defaults.timeout``; never
        past the module's timeout nor PROBE_TIMEOUT_CAP. A header that is not a finite positive number
        (nan, inf, 0, -1, 1e999, text) is ignored: no request can lift or stretch the deadline."""
        assert self.config is not None
        timeout = self.config.defaults.timeout
        scrape_timeout = _positive_seconds(scrape_timeout_header)
        if scrape_timeout is not None:
            timeout = max(scrape_timeout - SCRAPE_TIMEOUT_OFFSET, MIN_PROBE_TIMEOUT)
        if module.timeout:
            timeout = min(timeout, module.timeout)
        return min(timeout, PROBE_TIMEOUT_CAP)


def _file_states(files: tuple[ReferencedFile, ...]) -> list[tuple[str, str, bool]]:
    """(module, file, unreadable) for each distinct (module, file)."""
    states = {}
    for ref in files:
        if (ref.module, ref.file) not in states:
            try:
                check_readable(ref.file)
                states[ref.module, ref.file] = False
            except OSError:
                states[ref.module, ref.file] = True
    return [(module, file, bad) for (module, file), bad in states.items()]
