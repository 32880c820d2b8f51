"""Small builders for Checks and ProbeResults, so tests state only what they care about."""

from __future__ import annotations

import time
from types import MappingProxyType

from exporter.checks import Check, identity
from exporter.config.model import AUTHORITATIVE_MODULE, AuthoritativeCheck, Module, Resolver, TwoPath, VantagePolicy
from exporter.probers import result as r
from exporter.probers.result import ProbeResult, ZoneReport

LOOPBACK_RESOLVER = Resolver(name="127.0.0.1:5353", host="127.0.0.1", port=5353)


def make_check(
    name: str = "home",
    *,
    service: str = "svc",
    provider: str | None = None,
    region: str = "eu",
    prober: str = "http",
    target: str | None = None,
    resolver: str | None = None,
    module: str | None = None,
    interval: float = 1.0,
    timeout: float = 0.5,
    control: bool = False,
    two_path: TwoPath | None = None,
    authoritative: AuthoritativeCheck | None = None,
    vantage: VantagePolicy | None = None,
) -> Check:
    """A Check keyed like checks.expand() would key it; targets default to loopback addresses.

    ``authoritative`` makes an authoritative check of its zone (``prober`` is then ignored).
    """
    if authoritative is not None:
        key = identity(service, region, name, authoritative.zone, "")
        return Check(service=service, provider=service if provider is None else provider, region=region,
                     check=name, target=authoritative.zone, resolver="", module=AUTHORITATIVE_MODULE,
                     resolvers=(LOOPBACK_RESOLVER,), query_name=authoritative.zone, interval=interval,
                     timeout=timeout, control=control, key=key, authoritative=authoritative,
                     vantage=vantage or VantagePolicy())
    if target is None:
        target = {"http": "http://127.0.0.1:8080/", "tcp": "127.0.0.1:8443", "dns": "www.test."}[prober]
    if resolver is None:
        resolver = LOOPBACK_RESOLVER.name if prober == "dns" else ""
    dns_server = LOOPBACK_RESOLVER if prober == "dns" else None
    return Check(
        service=service,
        provider=service if provider is None else provider,
        region=region,
        check=name,
        target=target,
        resolver=resolver,
        module=Module(name=module or f"{prober}_module", prober=prober),  # type: ignore[arg-type]
        resolvers=(LOOPBACK_RESOLVER,),
        dns_server=dns_server,
        query_name=target if prober == "dns" else "",
        interval=interval,
        timeout=timeout,
        control=control,
        key=identity(service, region, name, target, resolver),
        two_path=two_path,
        vantage=vantage or VantagePolicy(),
    )


def make_result(
    success: bool = True,
    *,
    reason: str | None = None,
    duration: float = 0.05,
    phases: dict[str, float] | None = None,
    details: dict[str, float | int | str] | None = None,
    log: tuple[str, ...] = (),
    finished_at: float | None = None,
    zone: ZoneReport | None = None,
) -> ProbeResult:
    if not success and reason is None:
        reason = r.CONN_REFUSED
    return ProbeResult(
        success=success,
        reason=reason,
        duration_seconds=duration,
        phases=MappingProxyType(dict(phases or {})),
        details=MappingProxyType(dict(details or {})),
        log=log,
        finished_at=time.time() if finished_at is None else finished_at,
        zone=zone,
    )
