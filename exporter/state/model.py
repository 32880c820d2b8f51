"""What a state is: the five states, the signals the rules page on, the cause classes, and the frozen rows
a :class:`Snapshot` is made of. Nothing here judges; the thresholds live with the code that applies them
(exporter.state.window and exporter.state.cells)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from exporter.checks import Check
from exporter.probers import result as r
from exporter.results import Sample
from exporter.state.signals import DeclaredStatus, RoutingVerdict

UP, DEGRADED, DOWN, INCONCLUSIVE, NODATA = "up", "degraded", "down", "inconclusive", "nodata"
STATES: tuple[str, ...] = (UP, DEGRADED, DOWN, INCONCLUSIVE, NODATA)
SIGNALS: tuple[str, ...] = ("any", "dns", "http_5xx", "nameservers")
SEVERITY = {NODATA: 0, UP: 1, DEGRADED: 2, INCONCLUSIVE: 3, DOWN: 4}  # the worst of a cell's checks or slot
SERVICE_SEVERITY = {NODATA: 0, UP: 1, INCONCLUSIVE: 2, DEGRADED: 3, DOWN: 4}  # measured beats unknown

HISTORY_STEP = 30.0  # seconds per slot of a cell's history strip
HISTORY_SLOTS = 60  # 30 minutes

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
Verdicts = Mapping[str, tuple[bool, int, tuple[str, ...], str]]  # region -> healthy, controls, failing, reason


def cause_of(reason: str) -> str:
    """The cause class of a failure reason (see CAUSES)."""
    return _CAUSE_OF.get(reason, "other")


def format_age(seconds: float) -> str:
    """"45 s", "3 min", "2 h 05 min"."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


@dataclass(frozen=True, slots=True)
class Input:
    """One scheduled check and its recent runs, placed in its cell's region."""

    check: Check
    region: str
    samples: tuple[Sample, ...]


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

    def remembered(self, since: float, history: tuple[tuple[float, str], ...]) -> CellStatus:
        """This cell with the board's memory of it. ``dataclasses.replace`` would do the same at several
        times the cost; the board calls this for every changed cell at every evaluation."""
        return CellStatus(self.service, self.provider, self.region, self.control, self.state, self.signals,
                          self.counted, self.reasons, self.causes, since, self.checks, history)


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
