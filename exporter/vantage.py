"""Is the vantage itself healthy? A region's control checks decide.

Controls (``control: true``) probe targets expected to stay up. When too many of them fail at once, the
likeliest cause is the probing host's own network or resolvers, not every target at the same moment, so
the region's other failures are *inconclusive* rather than service failures (see results.py).

The verdict is a pure function of the controls' latest results: healthy while at least
``min_healthy_ratio`` of the region's controls are not failing. A control that has not run yet is not
failing, so right after a start or reload one early failure cannot condemn the vantage before the other
controls report, and a region without controls is healthy: with nothing to judge by, failures are taken at
face value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from exporter.checks import Check
from exporter.probers.result import PROBER_SIDE_REASONS, ProbeResult


@dataclass(frozen=True, slots=True)
class Verdict:
    region: str
    healthy: bool
    controls: int  # control checks loaded in the region
    failing: tuple[Check, ...] = ()  # controls whose latest result failed, in load order

    @property
    def reason(self) -> str:
        """Which controls failed, for logs and the landing page ("" when healthy)."""
        if self.healthy:
            return ""
        names = ", ".join(dict.fromkeys(f"{c.service}/{c.check}" for c in self.failing))
        return f"{len(self.failing)} of {self.controls} controls failing: {names}"


def judge(region: str, controls: Iterable[tuple[Check, ProbeResult | None]], min_healthy_ratio: float) -> Verdict:
    """The verdict for one region from its controls' latest results (None = not run yet)."""
    items = list(controls)
    failing = tuple(c for c, r in items if r is not None and not r.success and r.reason not in PROBER_SIDE_REASONS)
    healthy = len(items) - len(failing) >= min_healthy_ratio * len(items)
    return Verdict(region=region, healthy=healthy, controls=len(items), failing=failing)
