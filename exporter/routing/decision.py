"""When a prefix counts as lost: every routing threshold lives here (docs/configuration.md, "routing").

The rule follows the public routing monitors: BGPalerter raises a visibility loss only when at least
``thresholdMinPeers`` collector peers withdrew the prefix, and IODA calls a prefix visible while more than
half of the full-feed peers see it. Here a prefix is *lost* when at least ``withdrawn_ratio`` (50 %) of the
peers that saw it no longer do, and at least ``min_peers`` peers saw it: fewer peers say too little to
page on. A feed that is disconnected or stalled decides nothing: the prefix is *inconclusive*, never lost.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_PEERS = 3  # peers that must have seen a prefix before its loss can be judged (BGPalerter-style)
WITHDRAWN_RATIO = 0.5  # share of those peers that must have withdrawn it (IODA's 50 % visibility)
STALE_AFTER = 60.0  # seconds without any message (pongs included) after which the feed is stalled
PING_INTERVAL = 15.0  # seconds between the client's pings: they keep a quiet, filtered feed provably alive

OK = "ok"
LOST = "lost"
UNKNOWN = "unknown"  # fewer than min_peers ever saw it: nothing to judge
INCONCLUSIVE = "inconclusive"  # the feed cannot be trusted right now
STATES = (OK, LOST, UNKNOWN, INCONCLUSIVE)


@dataclass(frozen=True, slots=True)
class Thresholds:
    min_peers: int = MIN_PEERS
    withdrawn_ratio: float = WITHDRAWN_RATIO
    stale_after: float = STALE_AFTER


def judge(seeing: int, saw: int, *, conclusive: bool, thresholds: Thresholds) -> str:
    """The state of one prefix from the peers seeing it now and the peers that saw it."""
    if not conclusive:
        return INCONCLUSIVE
    if saw < thresholds.min_peers:
        return UNKNOWN
    withdrawn = saw - seeing
    return LOST if withdrawn >= thresholds.withdrawn_ratio * saw else OK
