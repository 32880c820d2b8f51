"""Beside the probes: what the routing feed (BGP) and the providers' status pages say, per provider.

A lost prefix becomes an incident's first cause; a status page is only shown against the measurement.
Neither opens or closes an incident (exporter.state.incident)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter.config.model import PREFIX_ROLES
from exporter.routing import decision as rd
from exporter.statuspage import INDICATOR_WORDS

if TYPE_CHECKING:
    from exporter.routing.feed import RoutingFeed
    from exporter.statuspage import StatusPagePoller


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
    """What the routing feed and the status pages say, per provider, for exporter.state.evaluate."""

    routing: tuple[RoutingVerdict, ...] = ()
    declared: tuple[DeclaredStatus, ...] = ()


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
