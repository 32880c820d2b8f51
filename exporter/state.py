"""The one definition of state: checks, service x region cells, services, providers and incidents.

The landing page, ``/api/v1/status``, the Statuspage-shaped summary and the demo's terminal all read the
:class:`Snapshot` computed here, and it means what the recording rules in alerts/rules/recording.yml mean,
judged over the same 30 s window from each check's recent runs (``CheckState.window``):

* a monitored check is *failing* when more than half of the window failed (time-weighted, as a scrape
  every few seconds would sample it) and it is *conclusive*: the region's vantage stayed healthy over the
  window, no DNS control through the same resolver is failing, and no run in the window was inconclusive;
* a cell is *down* when one of the signals the rules page on fails there (``any`` check failing, ``dns``:
  most resolvers failing, ``http_5xx``: most of the window answered 5xx, ``nameservers``: fewer than half
  of a zone's authoritative nameserver addresses answering); *inconclusive* when it is not down and its
  vantage was unhealthy or a check with failures in the window was not conclusive; *degraded* when it is
  neither but some run in the window failed (or a zone lost some nameservers); *up* otherwise; *nodata*
  before any check of the cell has run;
* a service is *down* when a signal fails from a quorum of regions (at least 2, or every region when fewer
  report, and at least half of them), *degraded* when some cell is down or degraded without a quorum;
* a provider takes the worst state of its services; ``outage`` is the opening condition of
  OutageProviderOutage (at least 2 services and at least half of them down);
* an incident is one provider with at least one cell down, its causes ranked routing > authoritative DNS >
  resolution > connect > TLS > HTTP status; routing is named when the routing feed judges a prefix of the
  provider lost (exporter.routing.decision) or a check failed with conn_error. The provider's status page
  (exporter.statuspage) is shown beside the measured state and never opens or closes an incident.

docs/status-api.md documents the same definitions for readers of the API.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from exporter.checks import Check
from exporter.config.model import PREFIX_ROLES
from exporter.probers import result as r
from exporter.results import WINDOW_SECONDS, ResultStore, Sample
from exporter.routing import decision as rd
from exporter.statuspage import INDICATOR_WORDS

if TYPE_CHECKING:
    from exporter.routing.feed import RoutingFeed
    from exporter.runtime import Runtime
    from exporter.statuspage import StatusPagePoller

UP, DEGRADED, DOWN, INCONCLUSIVE, NODATA = "up", "degraded", "down", "inconclusive", "nodata"
STATES: tuple[str, ...] = (UP, DEGRADED, DOWN, INCONCLUSIVE, NODATA)
SIGNALS: tuple[str, ...] = ("any", "dns", "http_5xx", "nameservers")
_SEVERITY = {NODATA: 0, UP: 1, DEGRADED: 2, INCONCLUSIVE: 3, DOWN: 4}
_SERVICE_SEVERITY = {NODATA: 0, UP: 1, INCONCLUSIVE: 2, DEGRADED: 3, DOWN: 4}

HISTORY_STEP = 30.0  # seconds per slot of a cell's history strip
HISTORY_SLOTS = 60  # 30 minutes
_LATEST_WEIGHT = 1e-3  # a run that finished this instant still counts, as the next scrape would see it

# Cause classes, most fundamental first: an incident names its causes in this order.
CAUSES: tuple[str, ...] = ("routing", "authoritative", "resolution", "connect", "tls", "http", "other")
_CAUSE_OF: dict[str, str] = {
    r.CONN_ERROR: "routing",
    r.DNS_NOT_AUTHORITATIVE: "authoritative",
    **{reason: "resolution" for reason in (r.DNS_NXDOMAIN, r.DNS_SERVFAIL, r.DNS_REFUSED, r.DNS_TIMEOUT,
                                          r.DNS_NO_ANSWER, r.DNS_RCODE, r.DNS_ANSWER_MISMATCH, r.DNS_MALFORMED,
                                          r.DNS_UNREACHABLE)},
    **{reason: "connect" for reason in (r.CONN_REFUSED, r.CONN_TIMEOUT, r.CONN_RESET, r.TIMEOUT)},
    **{reason: "tls" for reason in (r.TLS_HANDSHAKE, r.TLS_CERT_INVALID, r.TLS_CERT_EXPIRED, r.TLS_REQUIRED)},
    **{reason: "http" for reason in (r.HTTP_STATUS, r.HTTP_VERSION, r.HTTP_BODY_MISMATCH, r.HTTP_HEADER_MISMATCH,
                                    r.HTTP_TOO_MANY_REDIRECTS, r.HTTP_BODY_TOO_LARGE, r.HTTP_PROTOCOL)},
}
_SHORT: dict[str, str] = {  # how an incident line names a reason
    r.DNS_SERVFAIL: "SERVFAIL", r.DNS_TIMEOUT: "timeout", r.DNS_NXDOMAIN: "NXDOMAIN", r.DNS_REFUSED: "REFUSED",
    r.DNS_NO_ANSWER: "no answer", r.DNS_RCODE: "unexpected rcode", r.DNS_ANSWER_MISMATCH: "unexpected answer",
    r.DNS_MALFORMED: "malformed answer", r.DNS_UNREACHABLE: "unreachable", r.CONN_REFUSED: "refused",
    r.CONN_TIMEOUT: "timeout", r.CONN_RESET: "reset", r.TIMEOUT: "timeout", r.TLS_HANDSHAKE: "handshake failing",
    r.TLS_CERT_INVALID: "certificate invalid", r.TLS_CERT_EXPIRED: "certificate expired",
    r.TLS_REQUIRED: "TLS required",
}
Verdicts = Mapping[str, tuple[bool, int, tuple[str, ...], str]]  # region -> healthy, controls, failing, reason
_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def cause_of(reason: str) -> str:
    """The cause class of a failure reason (see CAUSES)."""
    return _CAUSE_OF.get(reason, "other")


# --- results ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CheckStatus:
    check: Check
    region: str  # the cell's region (the exporter's own when checks carry no region label)
    state: str
    failing: bool  # the rules' check:outage_failing:bool
    conclusive: bool
    why_inconclusive: str  # "" when conclusive or not judged
    probes: int  # runs in effect during the window
    failed: int
    reasons: tuple[str, ...]  # failure reasons of the window's runs, latest first
    failed_http_statuses: tuple[int, ...]  # status codes of the window's failed runs, latest first
    http_status: int | None  # of the latest run
    rcode: int | None
    answering: int | None  # authoritative checks: nameserver addresses answering in the latest run
    nameservers: int | None
    last_run: float | None


@dataclass(frozen=True, slots=True)
class CellStatus:
    service: str
    provider: str
    region: str
    control: bool
    state: str
    signals: tuple[str, ...]  # signals failing here
    counted: tuple[str, ...]  # signals with a verdict here (the regions a quorum counts)
    reasons: tuple[str, ...]  # the concrete causes, once each
    causes: tuple[str, ...]  # cause classes of the failing checks, ranked
    since: float  # when the current state was first seen
    checks: tuple[CheckStatus, ...]
    history: tuple[tuple[float, str], ...] = ()  # (slot start, worst state in the slot), oldest first


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    service: str
    provider: str
    control: bool
    state: str
    regions_failing: tuple[str, ...]  # regions whose cell is down
    signals: tuple[str, ...]  # signals failing from a quorum of regions


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    provider: str
    state: str
    services: int
    services_down: int
    outage: bool  # OutageProviderOutage's opening condition


@dataclass(frozen=True, slots=True)
class RegionStatus:
    name: str
    display_name: str
    healthy: bool  # the vantage verdict now
    healthy_in_window: bool  # healthy throughout the window (what the rules require)
    controls: int
    failing_controls: tuple[str, ...]  # service/check of failing controls
    reason: str


@dataclass(frozen=True, slots=True)
class Incident:
    provider: str
    state: str  # the provider's state
    cause: str  # the top cause class
    causes: tuple[str, ...]
    details: tuple[str, ...]  # one phrase per cause, in order
    services: tuple[str, ...]
    regions: tuple[str, ...]
    since: float
    declared: str = ""  # the status page against the measurement, e.g. "status page unreachable"

    def summary(self, now: float) -> str:
        """"meta: DNS, authoritative nameservers unreachable (0 of 2 answering), ..., since 15:40:12 (3 min);
        status page unreachable"."""
        what = ", ".join(self.details)
        n, m = len(self.services), len(self.regions)
        clock = time.strftime("%H:%M:%S", time.localtime(self.since))
        declared = f"; {self.declared}" if self.declared else ""
        return (f"{self.provider}: {what}, {n} service{'s' * (n != 1)}, {m} region{'s' * (m != 1)}, "
                f"since {clock} ({format_age(now - self.since)}){declared}")


# --- beside the probes: routing (BGP) and declared status ------------------------------------------------
@dataclass(frozen=True, slots=True)
class PrefixVerdict:
    prefix: str
    role: str  # what it holds for the provider: nameservers or edges
    state: str  # exporter.routing.decision: ok, lost, unknown or inconclusive
    peers: int  # collector peers seeing it now
    peers_max: int  # peers that saw it since it was watched (the decision's denominator)


@dataclass(frozen=True, slots=True)
class RoutingVerdict:
    """One provider's watched prefixes as the routing feed judges them; the thresholds live in
    exporter.routing.decision only."""

    provider: str
    prefixes: tuple[PrefixVerdict, ...]

    @property
    def state(self) -> str:
        """inconclusive while the feed cannot be trusted, lost when a prefix is, ok when one is judged ok,
        unknown while too few peers saw them."""
        states = {p.state for p in self.prefixes}
        return next((s for s in (rd.INCONCLUSIVE, rd.LOST, rd.OK) if s in states), rd.UNKNOWN)

    def phrase(self) -> str:
        """"BGP, 2 prefixes holding meta's nameservers withdrawn (seen by 0 of 5 peers)": per role, with the
        peers of the best-seen lost prefix, as the alert counts them."""
        parts = []
        for role in dict.fromkeys((*PREFIX_ROLES, *(p.role for p in self.prefixes))):
            lost = [p for p in self.prefixes if p.role == role and p.state == rd.LOST]
            if lost:
                n = len(lost)
                parts.append(f"{n} prefix{'es' * (n != 1)} holding {self.provider}'s {role} withdrawn (seen by "
                             f"{max(p.peers for p in lost)} of {max(p.peers_max for p in lost)} peers)")
        return "BGP, " + ", ".join(parts)

    def summary(self) -> str:
        """The verdict in words, whatever it is."""
        n = len(self.prefixes)
        watched = f"{n} prefix{'es' * (n != 1)} watched"
        state = self.state
        if state == rd.LOST:
            return self.phrase()
        if state == rd.INCONCLUSIVE:
            return f"BGP inconclusive: the routing feed is down or stalled ({watched})"
        if state == rd.OK:
            return f"BGP ok ({watched})"
        return f"BGP unknown: too few collector peers saw the prefixes yet ({watched})"


@dataclass(frozen=True, slots=True)
class DeclaredStatus:
    """What a provider's status page declares. People write it late, on a page that may share the failing
    network, so it is shown against the measurement and never opens or closes an incident."""

    provider: str
    reachable: bool | None  # None until the first poll answered or failed
    indicator: str | None  # none, minor, major, critical; None unless reachable
    components: tuple[tuple[str, str, str], ...] = ()  # (component, service, declared status)

    @property
    def description(self) -> str | None:
        """The indicator in Statuspage's words: "All Systems Operational" for none."""
        return INDICATOR_WORDS.get(self.indicator) if self.indicator else None

    def summary(self) -> str:
        if self.reachable is None:
            return "status page not polled yet"
        if not self.reachable or self.description is None:
            return "status page unreachable"
        return f"status page says {self.description}"

    def against(self, services_down: int) -> str:
        """The phrase an incident with ``services_down`` services down appends; "" when nothing is known."""
        if self.reachable is None:
            return ""
        if not self.reachable or self.description is None:
            return "status page unreachable"
        if self.indicator == "none":
            n = services_down
            return (f"status page says {self.description} while {n} service{'s' * (n != 1)} "
                    f"{'are' if n != 1 else 'is'} down")
        return f"status page: {self.description}"


def signal_lines(routing: Sequence[RoutingVerdict], declared: Sequence[DeclaredStatus]) -> tuple[str, ...]:
    """One line per provider with watched prefixes or a status page, by provider: "meta: BGP, 2 prefixes
    holding meta's nameservers withdrawn (seen by 0 of 5 peers); status page unreachable"."""
    by_provider: dict[str, list[str]] = {}
    for item in (*routing, *declared):
        by_provider.setdefault(item.provider, []).append(item.summary())
    return tuple(f"{provider}: {'; '.join(parts)}" for provider, parts in sorted(by_provider.items()))


@dataclass(frozen=True, slots=True)
class CauseSignals:
    """What the routing feed and the status pages say, per provider, for :func:`evaluate`."""

    routing: tuple[RoutingVerdict, ...] = ()
    declared: tuple[DeclaredStatus, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    generated_at: float
    window: float
    regions: tuple[RegionStatus, ...]
    cells: tuple[CellStatus, ...]
    services: tuple[ServiceStatus, ...]
    providers: tuple[ProviderStatus, ...]
    incidents: tuple[Incident, ...]
    routing: tuple[RoutingVerdict, ...] = ()  # per provider with watched prefixes
    declared: tuple[DeclaredStatus, ...] = ()  # per provider with a status page

    def cell(self, service: str, region: str) -> CellStatus | None:
        return next((c for c in self.cells if c.service == service and c.region == region), None)

    def service(self, name: str) -> ServiceStatus | None:
        return next((s for s in self.services if s.service == name), None)


def format_age(seconds: float) -> str:
    """"45 s", "3 min", "2 h 05 min"."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# --- the window -------------------------------------------------------------------------------------------
def in_window(samples: Iterable[Sample], now: float, window: float = WINDOW_SECONDS) -> list[tuple[Sample, float]]:
    """Each run in effect during [now - window, now], with the seconds it was in effect: a run counts from
    the moment it finished until the next one, as consecutive scrapes would sample it."""
    items = sorted(samples, key=lambda s: s.t)
    start, out = now - window, []
    for i, s in enumerate(items):
        end = items[i + 1].t if i + 1 < len(items) else now
        lo, hi = max(s.t, start), min(end, now)
        if i + 1 == len(items) and s.t <= now:
            out.append((s, max(hi - lo, _LATEST_WEIGHT)))
        elif hi > lo:
            out.append((s, hi - lo))
    return out


def _majority_failed(runs: Sequence[tuple[Sample, float]]) -> bool:
    total = failed = 0.0
    for s, w in runs:
        total += w
        if not s.success:
            failed += w
    return total > 0 and failed / total > 0.5


def _mostly_5xx(runs: Sequence[tuple[Sample, float]]) -> bool | None:
    """The http_5xx signal of one check: None without status codes in the window."""
    total = errors = 0.0
    for s, w in runs:
        if s.http_status >= 0:
            total += w
            if s.http_status >= 500:
                errors += w
    return errors / total > 0.5 if total else None


def _zone_failing(runs: Sequence[tuple[Sample, float]]) -> bool | None:
    """The nameservers signal of one zone check: fewer than half of the addresses answering on average."""
    zoned = [(s, w) for s, w in runs if s.nameservers >= 0]
    total = sum(w for _, w in zoned)
    if not total:
        return None
    nameservers = sum(s.nameservers * w for s, w in zoned) / total
    answering = sum(s.answering * w for s, w in zoned) / total
    return nameservers > 0 and answering / nameservers < 0.5


def _vantage_healthy(controls: Sequence[tuple[Check, Sequence[Sample]]], now: float, window: float) -> bool:
    """Whether the region's controls judged its vantage healthy at every moment of the window (vantage.judge's
    rule, applied at each run's finish time)."""
    if not controls:
        return True
    ratio = controls[0][0].vantage.min_healthy_ratio
    moments = {now - window, now} | {s.t for _, samples in controls for s in samples if s.t >= now - window}
    for moment in moments:
        failing = 0
        for _, samples in controls:
            before = [s for s in samples if s.t <= moment]
            latest = max(before, key=lambda s: s.t) if before else None
            if latest is not None and not latest.success and latest.reason not in r.PROBER_SIDE_REASONS:
                failing += 1
        if len(controls) - failing < ratio * len(controls):
            return False
    return True


# --- evaluation -------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Judged:
    status: CheckStatus
    runs: tuple[tuple[Sample, float], ...]


def _judge_check(check: Check, region: str, samples: Sequence[Sample], now: float, window: float, *,
                 vantage_ok: bool, resolver_ok: bool) -> _Judged:
    runs = tuple(in_window(samples, now, window))
    latest = runs[-1][0] if runs else None
    failed = [s for s, _ in runs if not s.success]
    monitored = not check.control and check.prober != "authoritative"
    why = ""
    if not check.control:
        if not vantage_ok:
            why = "vantage unhealthy"
        elif monitored and not resolver_ok:
            why = "resolver failing its controls"
        elif monitored and any(s.inconclusive for s, _ in runs):
            why = "inconclusive result"
    conclusive = monitored and not why
    if check.prober == "authoritative":
        majority = bool(_zone_failing(runs))
        partial = latest is not None and 0 <= latest.answering < latest.nameservers
    else:
        majority, partial = _majority_failed(runs), False
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
    reasons = tuple(dict.fromkeys(s.reason for s in reversed(failed) if s.reason))
    status = CheckStatus(
        check=check, region=region, state=state, failing=failing, conclusive=conclusive, why_inconclusive=why,
        probes=len(runs), failed=len(failed), reasons=reasons,
        failed_http_statuses=tuple(dict.fromkeys(s.http_status for s in reversed(failed) if s.http_status > 0)),
        http_status=latest.http_status if latest is not None and latest.http_status >= 0 else None,
        rcode=latest.rcode if latest is not None and latest.rcode >= 0 else None,
        answering=latest.answering if latest is not None and latest.answering >= 0 else None,
        nameservers=latest.nameservers if latest is not None and latest.nameservers >= 0 else None,
        last_run=latest.t if latest is not None else None)
    return _Judged(status, runs)


def _signals(judged: Sequence[_Judged], vantage_ok: bool) -> tuple[dict[str, bool], list[str]]:
    """The rules' service_region:outage_failing:bool per signal, for the signals with a verdict."""
    out: dict[str, bool] = {}
    conclusive = [j for j in judged if j.status.conclusive and j.runs]
    if conclusive:
        out["any"] = any(j.status.failing for j in conclusive)
    dns = [j for j in conclusive if j.status.check.prober == "dns"]
    if dns:
        out["dns"] = sum(j.status.failing for j in dns) / len(dns) > 0.5
    coded = [v for v in (_mostly_5xx(j.runs) for j in conclusive) if v is not None]
    if coded:
        out["http_5xx"] = any(coded)
    if vantage_ok:
        zone_checks = [j for j in judged if j.status.check.prober == "authoritative" and not j.status.check.control]
        zones = [v for v in (_zone_failing(j.runs) for j in zone_checks) if v is not None]
        if zones:
            out["nameservers"] = any(zones)
    return out, [s for s in SIGNALS if out.get(s)]


def _cell_reasons(judged: Sequence[_Judged], failing_resolvers: set[str], vantage_reason: str) -> tuple[str, ...]:
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


def _cell_causes(judged: Sequence[_Judged], signals: Sequence[str]) -> tuple[str, ...]:
    """Cause classes of a down cell: its failing monitored checks' reasons, plus authoritative DNS when the
    nameservers signal fails (the zone check's own reasons say how its SOA queries failed, not why)."""
    found = {cause_of(reason) for j in judged if j.status.failing for reason in j.status.reasons}
    if "nameservers" in signals:
        found.add("authoritative")
    return tuple(c for c in CAUSES if c in found)


def _cell_state(judged: Sequence[_Judged], signals: Sequence[str], vantage_ok: bool, control: bool) -> str:
    states = [j.status.state for j in judged]
    if all(s == NODATA for s in states):
        return NODATA
    if control:
        return max(states, key=_SEVERITY.__getitem__)
    if signals:
        return DOWN
    if not vantage_ok or INCONCLUSIVE in states:
        return INCONCLUSIVE
    if DEGRADED in states or DOWN in states:
        return DEGRADED
    return UP


def _quorum(counted: int, failing: int) -> bool:
    return counted > 0 and failing >= min(counted, 2) and failing / counted >= 0.5


@dataclass(frozen=True, slots=True)
class Input:
    """One scheduled check and its recent runs, placed in its cell's region."""

    check: Check
    region: str
    samples: tuple[Sample, ...]


def evaluate(inputs: Sequence[Input], regions: Sequence[tuple[str, str]], now: float, *,
             window: float = WINDOW_SECONDS, verdicts: Verdicts | None = None,
             beside: CauseSignals | None = None) -> Snapshot:
    """The snapshot for ``inputs`` at ``now``; every "since" is ``now`` and no cell has a history
    (:class:`Board` remembers those).

    ``regions`` is (name, display name) in display order; ``verdicts`` the vantage verdict now per region
    (healthy, controls, failing controls, reason); ``beside`` the routing verdicts and declared status.
    """
    beside = beside or CauseSignals()
    controls: dict[str, list[tuple[Check, Sequence[Sample]]]] = {}
    for item in inputs:
        if item.check.control:
            controls.setdefault(item.region, []).append((item.check, item.samples))
    vantage_ok = {name: _vantage_healthy(found, now, window) for name, found in controls.items()}
    failing_resolvers: dict[str, set[str]] = {}
    for item in inputs:
        check = item.check
        if check.control and check.prober == "dns" and _majority_failed(in_window(item.samples, now, window)):
            failing_resolvers.setdefault(item.region, set()).add(check.resolver)
    by_cell: dict[tuple[str, str], list[_Judged]] = {}
    for item in inputs:
        check = item.check
        judged = _judge_check(check, item.region, item.samples, now, window,
                              vantage_ok=vantage_ok.get(item.region, True),
                              resolver_ok=check.resolver not in failing_resolvers.get(item.region, ()))
        by_cell.setdefault((check.service, item.region), []).append(judged)
    verdicts = verdicts or {}
    cells: list[CellStatus] = []
    counted: dict[tuple[str, str], dict[str, bool]] = {}
    for (service, region), judged in by_cell.items():
        first = judged[0].status.check
        control = all(j.status.check.control for j in judged)
        ok = vantage_ok.get(region, True)
        verdict = verdicts.get(region)
        found, signals = _signals(judged, ok) if not control else ({}, [])
        counted[service, region] = found
        state = _cell_state(judged, signals, ok, control)
        vantage_reason = "" if ok or control or state == NODATA else (verdict[3] if verdict and verdict[3]
                                                                     else "controls failing in the last 30 s")
        reasons = _cell_reasons(judged, failing_resolvers.get(region, set()), vantage_reason) if state != UP else ()
        cells.append(CellStatus(
            service=service, provider=first.provider, region=region, control=control, state=state,
            signals=tuple(signals), counted=tuple(s for s in SIGNALS if s in found), reasons=reasons,
            causes=_cell_causes(judged, signals) if state == DOWN and not control else (), since=now,
            checks=tuple(j.status for j in judged)))
    services = _services(cells, counted)
    region_rows = tuple(_region_status(name, display, verdicts.get(name), vantage_ok.get(name, True))
                        for name, display in regions)
    providers = _providers(services)
    return Snapshot(generated_at=now, window=window, regions=region_rows, cells=tuple(cells), services=services,
                    providers=providers, incidents=incidents(cells, providers, {}, now, beside),
                    routing=beside.routing, declared=beside.declared)


def _region_status(name: str, display: str, verdict: tuple[bool, int, tuple[str, ...], str] | None,
                   in_window_ok: bool) -> RegionStatus:
    healthy, controls, failing, reason = verdict or (True, 0, (), "")
    return RegionStatus(name=name, display_name=display or name, healthy=healthy, healthy_in_window=in_window_ok,
                        controls=controls, failing_controls=failing, reason=reason)


def _services(cells: Sequence[CellStatus], counted: Mapping[tuple[str, str], Mapping[str, bool]]
              ) -> tuple[ServiceStatus, ...]:
    by_service: dict[str, list[CellStatus]] = {}
    for cell in cells:
        by_service.setdefault(cell.service, []).append(cell)
    out = []
    for service, rows in by_service.items():
        quorum = []
        for signal in SIGNALS:
            verdicts = [counted[service, c.region][signal] for c in rows if signal in counted[service, c.region]]
            if _quorum(len(verdicts), sum(verdicts)):
                quorum.append(signal)
        states = [c.state for c in rows]
        if quorum:
            state = DOWN
        elif DOWN in states or DEGRADED in states:
            state = DEGRADED
        else:
            state = max(states, key=_SERVICE_SEVERITY.__getitem__)
        out.append(ServiceStatus(service=service, provider=rows[0].provider, control=all(c.control for c in rows),
                                 state=state, regions_failing=tuple(c.region for c in rows if c.state == DOWN),
                                 signals=tuple(quorum)))
    return tuple(out)


def _providers(services: Sequence[ServiceStatus]) -> tuple[ProviderStatus, ...]:
    by_provider: dict[str, list[ServiceStatus]] = {}
    for s in services:
        if not s.control:
            by_provider.setdefault(s.provider, []).append(s)
    out = []
    for provider, rows in by_provider.items():
        down = sum(s.state == DOWN for s in rows)
        state = max((s.state for s in rows), key=_SERVICE_SEVERITY.__getitem__)
        out.append(ProviderStatus(provider=provider, state=state, services=len(rows), services_down=down,
                                  outage=down >= 2 and down / len(rows) >= 0.5))
    return tuple(out)


# --- incidents --------------------------------------------------------------------------------------------
def _phrase(cause: str, cells: Sequence[CellStatus], dns_named: bool) -> str:
    """One cause of an incident in words, from the failing checks of its down cells."""
    failing = [c for cell in cells for c in cell.checks if c.failing or c.check.prober == "authoritative"]
    reasons = list(dict.fromkeys(reason for c in failing for reason in c.reasons if cause_of(reason) == cause))
    shorts = "/".join(dict.fromkeys(_SHORT.get(x, x) for x in reasons))
    if cause == "authoritative":
        zones: dict[str, tuple[int, int]] = {}
        for cell in cells:
            for c in cell.checks:
                if c.answering is not None and c.nameservers is not None:
                    seen = zones.get(c.check.target)
                    if seen is None or c.answering < seen[0]:
                        zones[c.check.target] = (c.answering, c.nameservers)
        answering, total = zones.get(min(zones, key=lambda z: zones[z][0]), (0, 0)) if zones else (0, 0)
        return f"DNS, authoritative nameservers unreachable ({answering} of {total} answering)"
    if cause == "resolution":
        return f"{'' if dns_named else 'DNS, '}resolvers {shorts or 'failing'}"
    if cause == "routing":
        return "routing, network unreachable"
    if cause == "connect":
        return f"connections {shorts or 'failing'}"
    if cause == "tls":
        return f"TLS {shorts or 'failing'}"
    if cause == "http":
        codes = sorted({code for c in failing for code in c.failed_http_statuses})
        named = [x for x in reasons if x != r.HTTP_STATUS]
        return "HTTP " + "/".join([str(code) for code in codes] + named) if codes or named else "HTTP status"
    return ", ".join(reasons) or "failing"


def incidents(snapshot_cells: Sequence[CellStatus], providers: Sequence[ProviderStatus],
              since: Mapping[str, float], now: float, beside: CauseSignals | None = None) -> tuple[Incident, ...]:
    """One incident per provider with a cell down, ranked by its top cause, then by provider. A routing loss
    of the provider's prefixes is its first cause; its status page is appended, and neither opens one."""
    beside = beside or CauseSignals()
    lost = {v.provider: v for v in beside.routing if v.state == rd.LOST}
    pages = {d.provider: d for d in beside.declared}
    state_of = {p.provider: p.state for p in providers}
    by_provider: dict[str, list[CellStatus]] = {}
    for cell in snapshot_cells:
        if cell.state == DOWN and not cell.control:
            by_provider.setdefault(cell.provider, []).append(cell)
    out = []
    for provider, cells in by_provider.items():
        found = {c for cell in cells for c in cell.causes} | ({"routing"} if provider in lost else set())
        causes = tuple(c for c in CAUSES if c in found) or ("other",)
        details = tuple(lost[provider].phrase() if c == "routing" and provider in lost
                        else _phrase(c, cells, "authoritative" in causes) for c in causes)
        services = tuple(dict.fromkeys(c.service for c in cells))
        page = pages.get(provider)
        out.append(Incident(provider=provider, state=state_of.get(provider, DOWN), cause=causes[0], causes=causes,
                            details=details, services=services, regions=tuple(sorted({c.region for c in cells})),
                            since=since.get(provider, now), declared=page.against(len(services)) if page else ""))
    out.sort(key=lambda i: (CAUSES.index(i.cause), i.state != DOWN, i.provider))
    return tuple(out)


# --- memory: since, history, incidents ----------------------------------------------------------------------
@dataclass
class _Memory:
    state: str
    since: float
    history: deque[list] = field(default_factory=lambda: deque(maxlen=HISTORY_SLOTS))


class Board:
    """The snapshot plus what a single evaluation cannot know: since when each cell and incident holds,
    and each cell's last 30 minutes (HISTORY_SLOTS slots of HISTORY_STEP seconds, bounded in memory).

    ``source`` returns (inputs, regions, verdicts, beside) for :func:`evaluate`; call :meth:`snapshot` regularly
    (the web application does every few seconds) so the history has no holes.
    """

    def __init__(self, source: Source, *, max_age: float = 0.2) -> None:
        self._source = source
        self._cells: dict[tuple[str, str], _Memory] = {}
        self._incidents: dict[str, float] = {}
        self._last: Snapshot | None = None
        self._max_age = max_age

    def snapshot(self, now: float | None = None) -> Snapshot:
        """The current snapshot; one evaluated within ``max_age`` seconds is reused."""
        now = time.time() if now is None else now
        fresh = self._fresh(now)
        if fresh is not None:
            return fresh
        inputs, regions, verdicts, beside = self._source()
        return self._adopt(evaluate(inputs, regions, now, verdicts=verdicts, beside=beside))

    async def snapshot_async(self) -> Snapshot:
        """:meth:`snapshot`, evaluated in a worker thread: at tens of thousands of checks an evaluation
        takes a few hundred milliseconds that probes and scrapes should not wait for."""
        now = time.time()
        fresh = self._fresh(now)
        if fresh is not None:
            return fresh
        inputs, regions, verdicts, beside = self._source()  # copied on the loop: the store changes only there
        raw = await asyncio.to_thread(evaluate, inputs, regions, now, verdicts=verdicts, beside=beside)
        return self._adopt(raw)

    def _fresh(self, now: float) -> Snapshot | None:
        last = self._last
        return last if last is not None and 0 <= now - last.generated_at < self._max_age else None

    def _adopt(self, raw: Snapshot) -> Snapshot:
        """Add since, history and incident times to a fresh evaluation (an older one is dropped)."""
        now = raw.generated_at
        if self._last is not None and now < self._last.generated_at:
            return self._last
        cells = tuple(self._remember(cell, now) for cell in raw.cells)
        if len(self._cells) > len(cells):  # checks were removed by a reload
            keep = {(c.service, c.region) for c in cells}
            self._cells = {k: v for k, v in self._cells.items() if k in keep}
        down = {c.provider for c in cells if c.state == DOWN and not c.control}
        self._incidents = {p: self._incidents.get(p, now) for p in down}
        beside = CauseSignals(raw.routing, raw.declared)
        self._last = replace(raw, cells=cells, incidents=incidents(cells, raw.providers, self._incidents, now,
                                                                   beside))
        return self._last

    def _remember(self, cell: CellStatus, now: float) -> CellStatus:
        key = (cell.service, cell.region)
        memory = self._cells.get(key)
        if memory is None:
            memory = self._cells[key] = _Memory(cell.state, now)
        elif memory.state != cell.state:
            memory.state, memory.since = cell.state, now
        slot = math.floor(now / HISTORY_STEP) * HISTORY_STEP
        history = memory.history
        if history and history[-1][0] == slot:
            if _SEVERITY[cell.state] > _SEVERITY[history[-1][1]]:
                history[-1][1] = cell.state
        else:
            history.append([slot, cell.state])
        return replace(cell, since=memory.since, history=tuple((t, s) for t, s in history))


Source = Callable[[], tuple[list[Input], list[tuple[str, str]], Verdicts, CauseSignals]]


def routing_verdicts(feed: RoutingFeed | None) -> tuple[RoutingVerdict, ...]:
    """The routing feed's own judgement of each provider's prefixes (nothing recomputed here)."""
    if feed is None:
        return ()
    states = feed.state.states()
    by_provider: dict[str, list[PrefixVerdict]] = {}
    for prefix, provider, role in feed.series():
        p = feed.state.prefixes.get(prefix)
        if p is not None:
            by_provider.setdefault(provider, []).append(
                PrefixVerdict(prefix, role, states[prefix], len(p.seeing), len(p.saw)))
    return tuple(RoutingVerdict(provider, tuple(rows)) for provider, rows in sorted(by_provider.items()))


def declared_statuses(poller: StatusPagePoller | None) -> tuple[DeclaredStatus, ...]:
    """Each polled status page's latest state; a page whose first poll is still out is not yet known."""
    if poller is None:
        return ()
    out = []
    for page in poller.pages:
        s = poller.states[page.provider]
        reachable = True if s.reachable else (False if s.failures else None)  # None: first poll still out
        components = tuple((name, service, s.components.get(name, "unknown")) for name, service in page.components)
        out.append(DeclaredStatus(page.provider, reachable, s.indicator if s.reachable else None,
                                  components if s.reachable else ()))
    return tuple(sorted(out, key=lambda d: d.provider))


def runtime_source(runtime: Runtime) -> Source:
    """A Board source reading a running exporter's checks, results store, regions, routing feed and
    status pages."""

    def source() -> tuple[list[Input], list[tuple[str, str]], Verdicts, CauseSignals]:
        config = runtime.config
        home = runtime.region_named(None).name if runtime.omit_region_label and config is not None else ""
        store: ResultStore = runtime.store
        inputs = []
        for check in runtime.checks:
            state = store.get(check.key)
            window = tuple(state.window) if state is not None and state.window else ()
            inputs.append(Input(check, check.region or home, window))
        probed = {i.region for i in inputs}
        all_regions = [(g.name, g.display_name) for g in config.regions] if config is not None else []
        regions = [g for g in all_regions if g[0] in probed] or all_regions
        verdicts = {}
        for v in store.vantages():
            failing = tuple(dict.fromkeys(f"{c.service}/{c.check}" for c in v.failing))
            verdicts[v.region or home] = (v.healthy, v.controls, failing, v.reason)
        beside = CauseSignals(routing_verdicts(runtime.signals.routing),
                              declared_statuses(runtime.signals.statuspages))
        return inputs, regions, verdicts, beside

    return source
