"""One check, then one service x region cell, judged over the window: its state, the signals failing there,
the concrete reasons and the cause classes an incident ranks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from exporter.checks import Check
from exporter.probers import result as r
from exporter.results import Sample
from exporter.state.model import (
    CAUSES,
    DEGRADED,
    DOWN,
    INCONCLUSIVE,
    NODATA,
    SEVERITY,
    SIGNALS,
    UP,
    CheckStatus,
    cause_of,
)
from exporter.state.window import in_window, summarize, zone_failing

_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


@dataclass(frozen=True, slots=True)
class Judged:
    """A check's status with what the cell's signals need from its window (folded once, not per signal),
    and what it was judged from, so that the next evaluation can tell whether it still holds
    (exporter.state.memo)."""

    status: CheckStatus
    http_5xx: bool | None  # mostly_5xx over the window; None without status codes
    zone: bool | None  # authoritative checks: zone_failing over the window; None otherwise or without data
    steady_before: float  # the same inputs judge the same at a later moment whose window starts before this
    samples: Sequence[Sample]
    vantage_ok: bool
    resolver_ok: bool
    window: float
    at: float  # the moment judged


def judge_check(check: Check, region: str, samples: Sequence[Sample], now: float, window: float, *,
                vantage_ok: bool, resolver_ok: bool) -> Judged:
    """One check over the window: failing only when conclusive (healthy vantage and resolver, no
    inconclusive run) and mostly failed."""
    summary = summarize(samples, now, window)
    latest, failed = summary.latest, summary.failed
    prober = check.module.prober
    monitored = not check.control and prober != "authoritative"
    why = ""
    if not check.control:
        if not vantage_ok:
            why = "vantage unhealthy"
        elif monitored and not resolver_ok:
            why = "resolver failing its controls"
        elif monitored and summary.inconclusive:
            why = "inconclusive result"
    conclusive = monitored and not why
    zone = None
    if prober == "authoritative":
        zone = zone_failing(in_window(samples, now, window))
        majority = bool(zone)
        partial = latest is not None and 0 <= latest.answering < latest.nameservers
    else:
        majority, partial = summary.majority, False
    failing = conclusive and majority
    if latest is None:
        state = NODATA
    elif why and (failed or majority or partial):
        state = INCONCLUSIVE
    elif majority:
        state = DOWN
    elif failed or partial:
        state = DEGRADED
    else:
        state = UP
    status = CheckStatus(
        check=check, region=region, state=state, failing=failing, conclusive=conclusive, why_inconclusive=why,
        probes=summary.probes, failed=len(failed),
        reasons=tuple(dict.fromkeys(s.reason for s in reversed(failed) if s.reason)) if failed else (),
        failed_http_statuses=tuple(dict.fromkeys(s.http_status for s in reversed(failed) if s.http_status > 0))
        if failed else (),
        http_status=latest.http_status if latest is not None and latest.http_status >= 0 else None,
        rcode=latest.rcode if latest is not None and latest.rcode >= 0 else None,
        answering=latest.answering if latest is not None and latest.answering >= 0 else None,
        nameservers=latest.nameservers if latest is not None and latest.nameservers >= 0 else None,
        last_run=latest.t if latest is not None else None)
    steady = -math.inf if prober == "authoritative" else summary.steady_before  # zone averages weigh runs
    return Judged(status, summary.http_5xx, zone, steady, samples, vantage_ok, resolver_ok, window, now)


def cell_signals(judged: Sequence[Judged], vantage_ok: bool) -> tuple[dict[str, bool], list[str]]:
    """The rules' service_region:outage_failing:bool per signal, for the signals with a verdict."""
    out: dict[str, bool] = {}
    conclusive = [j for j in judged if j.status.conclusive and j.status.probes]
    if conclusive:
        out["any"] = any(j.status.failing for j in conclusive)
    dns = [j for j in conclusive if j.status.check.prober == "dns"]
    if dns:
        out["dns"] = sum(j.status.failing for j in dns) / len(dns) > 0.5
    coded = [j.http_5xx for j in conclusive if j.http_5xx is not None]
    if coded:
        out["http_5xx"] = any(coded)
    if vantage_ok:
        zone_checks = [j for j in judged if j.status.check.prober == "authoritative" and not j.status.check.control]
        zones = [j.zone for j in zone_checks if j.zone is not None]
        if zones:
            out["nameservers"] = any(zones)
    return out, [s for s in SIGNALS if out.get(s)]


def cell_reasons(judged: Sequence[Judged], failing_resolvers: AbstractSet[str], vantage_reason: str
                 ) -> tuple[str, ...]:
    """The concrete causes, once each: "HTTP 503", "dns_servfail via 127.0.0.1:53", "nameservers 0 of 4
    answering (example.com)", "resolver 10.0.0.53:53 failing its controls", "vantage unhealthy: ..."."""
    out: dict[str, list[str]] = {}
    if vantage_reason:
        out[f"vantage unhealthy: {vantage_reason}"] = []
    for j in judged:
        st, check = j.status, j.status.check
        if check.resolver in failing_resolvers and check.prober == "dns" and not check.control:
            out.setdefault(f"resolver {check.resolver} failing its controls", [])
        if st.nameservers is not None and st.answering is not None and st.answering < st.nameservers:
            out.setdefault(f"nameservers {st.answering} of {st.nameservers} answering ({check.target})", [])
        for reason in st.reasons:
            text = reason
            if reason == r.HTTP_STATUS and st.failed_http_statuses:
                text = "HTTP " + "/".join(map(str, st.failed_http_statuses))
            elif reason == r.DNS_RCODE and st.rcode is not None:
                text = f"{reason} {_RCODES.get(st.rcode, st.rcode)}"
            via = out.setdefault(text, [])
            if check.resolver and check.prober == "dns" and check.resolver not in via:
                via.append(check.resolver)
    return tuple(f"{text} via {', '.join(via)}" if via else text for text, via in out.items())


def cell_causes(judged: Sequence[Judged], signals: Sequence[str]) -> tuple[str, ...]:
    """Cause classes of a down cell: its failing monitored checks' reasons, plus authoritative DNS when the
    nameservers signal fails (the zone check's own reasons say how its SOA queries failed, not why)."""
    found = {cause_of(reason) for j in judged if j.status.failing for reason in j.status.reasons}
    if "nameservers" in signals:
        found.add("authoritative")
    return tuple(c for c in CAUSES if c in found)


def cell_state(judged: Sequence[Judged], signals: Sequence[str], vantage_ok: bool, control: bool) -> str:
    """Down on a failing signal, else inconclusive, degraded or up; a control cell takes its worst check."""
    states = [j.status.state for j in judged]
    if all(s == NODATA for s in states):
        return NODATA
    if control:
        return max(states, key=SEVERITY.__getitem__)
    if signals:
        return DOWN
    if not vantage_ok or INCONCLUSIVE in states:
        return INCONCLUSIVE
    if DEGRADED in states or DOWN in states:
        return DEGRADED
    return UP
