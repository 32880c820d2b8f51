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

The parts, in the order an evaluation uses them: ``model`` (the states and a snapshot's rows), ``window``
(the rules' arithmetic over a window), ``cells`` (a check and a cell judged), ``memo`` (what the next
evaluation may reuse), ``evaluation`` (services, providers, the snapshot), ``incident`` (causes ranked and
worded), ``signals`` (routing and declared status beside the probes) and ``board`` (since, history, and
the source reading a running exporter).
"""

from exporter.state.board import Board, Source, runtime_source
from exporter.state.evaluation import evaluate
from exporter.state.incident import incidents
from exporter.state.model import (
    CAUSES,
    DEGRADED,
    DOWN,
    HISTORY_SLOTS,
    HISTORY_STEP,
    INCONCLUSIVE,
    NODATA,
    SIGNALS,
    STATES,
    UP,
    CellStatus,
    CheckStatus,
    Incident,
    Input,
    ProviderStatus,
    RegionStatus,
    ServiceStatus,
    Snapshot,
    Verdicts,
    cause_of,
    format_age,
)
from exporter.state.signals import (
    CauseSignals,
    DeclaredStatus,
    PrefixVerdict,
    RoutingVerdict,
    declared_statuses,
    routing_verdicts,
    signal_lines,
)
from exporter.state.window import in_window

__all__ = [
    "CAUSES", "DEGRADED", "DOWN", "HISTORY_SLOTS", "HISTORY_STEP", "INCONCLUSIVE", "NODATA", "SIGNALS", "STATES",
    "UP", "Board", "CauseSignals", "CellStatus", "CheckStatus", "DeclaredStatus", "Incident", "Input",
    "PrefixVerdict", "ProviderStatus", "RegionStatus", "RoutingVerdict", "ServiceStatus", "Snapshot", "Source",
    "Verdicts", "cause_of", "declared_statuses", "evaluate", "format_age", "in_window", "incidents",
    "routing_verdicts", "runtime_source", "signal_lines",
]
