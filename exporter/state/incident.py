"""Incidents: one per provider with a cell down, its causes ranked routing > authoritative DNS > resolution >
connect > TLS > HTTP status, each cause in words. A routing loss of the provider's prefixes comes first; its
status page is appended against the measurement; neither opens one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from exporter.probers import result as r
from exporter.routing import decision as rd
from exporter.state.model import CAUSES, DOWN, CellStatus, Incident, ProviderStatus, cause_of
from exporter.state.signals import CauseSignals

_SHORT: dict[str, str] = {  # how an incident line names a reason
    r.DNS_SERVFAIL: "SERVFAIL", r.DNS_TIMEOUT: "timeout", r.DNS_NXDOMAIN: "NXDOMAIN", r.DNS_REFUSED: "REFUSED",
    r.DNS_NO_ANSWER: "no answer", r.DNS_RCODE: "unexpected rcode", r.DNS_ANSWER_MISMATCH: "unexpected answer",
    r.DNS_MALFORMED: "malformed answer", r.DNS_UNREACHABLE: "unreachable", r.CONN_REFUSED: "refused",
    r.CONN_TIMEOUT: "timeout", r.CONN_RESET: "reset", r.TIMEOUT: "timeout", r.TLS_HANDSHAKE: "handshake failing",
    r.TLS_CERT_INVALID: "certificate invalid", r.TLS_CERT_EXPIRED: "certificate expired",
    r.TLS_REQUIRED: "TLS required",
}


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
