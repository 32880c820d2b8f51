"""One evaluation: judge every check and cell over the window, then services by a quorum of regions,
providers by their worst service, and the incidents. Stateless: :class:`exporter.state.board.Board` adds
what a single evaluation cannot know (since when, history)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from exporter.checks import Check
from exporter.results import WINDOW_SECONDS, Sample
from exporter.state.cells import Judged, cell_causes, cell_reasons, cell_signals, cell_state
from exporter.state.incident import incidents
from exporter.state.memo import CellContext, Judging, Memo
from exporter.state.model import (
    DEGRADED,
    DOWN,
    NODATA,
    SERVICE_SEVERITY,
    SIGNALS,
    UP,
    CellStatus,
    Input,
    ProviderStatus,
    RegionStatus,
    ServiceStatus,
    Snapshot,
    Verdicts,
)
from exporter.state.signals import CauseSignals
from exporter.state.window import in_window, majority_failed, vantage_healthy


def evaluate(inputs: Sequence[Input], regions: Sequence[tuple[str, str]], now: float, *,
             window: float = WINDOW_SECONDS, verdicts: Verdicts | None = None,
             beside: CauseSignals | None = None, memo: Memo | None = None) -> Snapshot:
    """The snapshot for ``inputs`` at ``now``; every "since" is ``now`` and no cell has a history
    (:class:`Board` remembers those). ``memo`` carries judgements over to the next evaluation (the same
    result for less work), except that an unchanged cell keeps the ``since`` it was first judged at.

    ``regions`` is (name, display name) in display order; ``verdicts`` the vantage verdict now per region
    (healthy, controls, failing controls, reason); ``beside`` the routing verdicts and declared status.
    """
    beside = beside or CauseSignals()
    controls: dict[str, list[tuple[Check, Sequence[Sample]]]] = {}
    for item in inputs:
        if item.check.control:
            controls.setdefault(item.region, []).append((item.check, item.samples))
    vantage_ok = {name: vantage_healthy(found, now, window) for name, found in controls.items()}
    failing_resolvers: dict[str, set[str]] = {}
    for item in inputs:
        check = item.check
        if check.control and check.prober == "dns" and majority_failed(in_window(item.samples, now, window)):
            failing_resolvers.setdefault(item.region, set()).add(check.resolver)
    by_cell: dict[tuple[str, str], list[Judged]] = {}
    judging = Judging(memo)
    for item in inputs:
        check = item.check
        judged = judging.judge(check, item.region, item.samples, now, window,
                               vantage_ok=vantage_ok.get(item.region, True),
                               resolver_ok=check.resolver not in failing_resolvers.get(item.region, ()))
        by_cell.setdefault((check.service, item.region), []).append(judged)
    verdicts = verdicts or {}
    cells: list[CellStatus] = []
    counted: dict[tuple[str, str], dict[str, bool]] = {}
    contexts: dict[str, CellContext] = {}
    for key, judged in by_cell.items():
        region = key[1]
        context = contexts.get(region)
        if context is None:
            verdict = verdicts.get(region)
            context = contexts[region] = (vantage_ok.get(region, True), verdict[3] if verdict else None,
                                          frozenset(failing_resolvers.get(region, ())))
        reused = judging.cell(key, judged, context)
        cell, found = reused if reused is not None else _cell(key, judged, context, now)
        if reused is None:
            judging.keep_cell(key, judged, context, cell, found)
        cells.append(cell)
        counted[key] = found
    judging.done()
    services = _services(cells, counted)
    region_rows = tuple(_region_status(name, display, verdicts.get(name), vantage_ok.get(name, True))
                        for name, display in regions)
    providers = _providers(services)
    return Snapshot(generated_at=now, window=window, regions=region_rows, cells=tuple(cells), services=services,
                    providers=providers, incidents=incidents(cells, providers, {}, now, beside),
                    routing=beside.routing, declared=beside.declared)


def _cell(key: tuple[str, str], judged: Sequence[Judged], context: CellContext, now: float
          ) -> tuple[CellStatus, dict[str, bool]]:
    """One service x region cell from its checks' judgements, and its signals with a verdict."""
    (service, region), (ok, verdict_reason, failing_resolvers) = key, context
    first = judged[0].status.check
    control = all(j.status.check.control for j in judged)
    found, signals = cell_signals(judged, ok) if not control else ({}, [])
    state = cell_state(judged, signals, ok, control)
    vantage_reason = "" if ok or control or state == NODATA else (verdict_reason
                                                                 or "controls failing in the last 30 s")
    reasons = cell_reasons(judged, failing_resolvers, vantage_reason) if state != UP else ()
    return CellStatus(
        service=service, provider=first.provider, region=region, control=control, state=state,
        signals=tuple(signals), counted=tuple(s for s in SIGNALS if s in found), reasons=reasons,
        causes=cell_causes(judged, signals) if state == DOWN and not control else (), since=now,
        checks=tuple(j.status for j in judged)), found


def _quorum(counted: int, failing: int) -> bool:
    return counted > 0 and failing >= min(counted, 2) and failing / counted >= 0.5


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
        quorum = _service_quorum(service, rows, counted) if any(c.signals for c in rows) else ()
        states = [c.state for c in rows]
        if quorum:
            state = DOWN
        elif DOWN in states or DEGRADED in states:
            state = DEGRADED
        else:
            state = max(states, key=SERVICE_SEVERITY.__getitem__)
        out.append(ServiceStatus(service=service, provider=rows[0].provider, control=all(c.control for c in rows),
                                 state=state, regions_failing=tuple(c.region for c in rows if c.state == DOWN),
                                 signals=quorum))
    return tuple(out)


def _service_quorum(service: str, rows: Sequence[CellStatus], counted: Mapping[tuple[str, str], Mapping[str, bool]]
                    ) -> tuple[str, ...]:
    """The signals failing in a quorum of the service's regions (only asked when some cell has one failing:
    a quorum needs at least one)."""
    quorum = []
    for signal in SIGNALS:
        verdicts = [counted[service, c.region][signal] for c in rows if signal in counted[service, c.region]]
        if _quorum(len(verdicts), sum(verdicts)):
            quorum.append(signal)
    return tuple(quorum)


def _providers(services: Sequence[ServiceStatus]) -> tuple[ProviderStatus, ...]:
    by_provider: dict[str, list[ServiceStatus]] = {}
    for s in services:
        if not s.control:
            by_provider.setdefault(s.provider, []).append(s)
    out = []
    for provider, rows in by_provider.items():
        down = sum(s.state == DOWN for s in rows)
        state = max((s.state for s in rows), key=SERVICE_SEVERITY.__getitem__)
        out.append(ProviderStatus(provider=provider, state=state, services=len(rows), services_down=down,
                                  outage=down >= 2 and down / len(rows) >= 0.5))
    return tuple(out)
