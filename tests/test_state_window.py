"""exporter.state.window: the recording rules' arithmetic over the 30 s window, each run weighted by the
seconds it was in effect."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as hs

from exporter import state as st
from exporter.results import ResultStore, Sample
from exporter.state.window import in_window, majority_failed, mostly_5xx, summarize
from tests.helpers.factories import make_check
from tests.helpers.state import NOW, REGIONS, record, snapshot_of


def _run(t: float, success: bool) -> Sample:
    return Sample(t, success, False, None if success else "conn_refused", -1, -1, -1, -1)


def test_a_run_weighs_the_seconds_it_was_in_effect_within_the_window() -> None:
    runs = [_run(NOW - 50, False), _run(NOW - 20, True), _run(NOW - 5, False), _run(NOW + 5, True)]
    weighed = in_window(runs, NOW, 30.0)
    assert [(s.t, w) for s, w in weighed] == [(NOW - 50, 10.0), (NOW - 20, 15.0), (NOW - 5, 5.0)]
    assert not majority_failed(weighed)  # 15 of 30 s failing is not more than half
    assert in_window([_run(NOW, False)], NOW)[0][1] > 0  # finished this instant: it still counts
    assert majority_failed(in_window([_run(NOW, False)], NOW))


def test_a_check_fails_when_more_than_half_of_the_window_failed() -> None:
    store = ResultStore()
    one, two = make_check("a", service="one", region="eu-west"), make_check("a", service="two", region="eu-west")
    store.set_checks([one, two])
    record(store, one, [True, False, True, True])  # 10 of 30 s failing: a blip
    record(store, two, [True, False, False, True])  # 20 of 30 s failing
    snap = snapshot_of(store, NOW + 0.5, regions=REGIONS[:1])
    assert snap.cell("one", "eu-west").state == st.DEGRADED  # type: ignore[union-attr]
    assert snap.cell("two", "eu-west").state == st.DOWN  # type: ignore[union-attr]
    assert snap.cell("two", "eu-west").checks[0].failing  # type: ignore[union-attr]
    assert snap.service("two").state == st.DOWN  # one region reports, and it fails  # type: ignore[union-attr]


def test_a_failure_before_the_window_counts_while_it_is_in_effect() -> None:
    store = ResultStore()
    check = make_check("a", service="slow", region="eu-west", interval=60)
    store.set_checks([check])
    record(store, check, [False], end=NOW - 45)  # the latest run, 45 s ago, failed: still failing now
    assert snapshot_of(store, regions=REGIONS[:1]).cell("slow", "eu-west").state == st.DOWN  # type: ignore[union-attr]


_SAMPLES = hs.lists(hs.builds(
    Sample, t=hs.floats(NOW - 90, NOW + 5).map(lambda t: round(t, 2)), success=hs.booleans(),
    inconclusive=hs.booleans(), reason=hs.sampled_from([None, "conn_refused", "http_status"]),
    http_status=hs.sampled_from([-1, 200, 404, 500, 503]), rcode=hs.just(-1), answering=hs.just(-1),
    nameservers=hs.just(-1)), max_size=8)


@settings(max_examples=400, deadline=None)
@given(samples=_SAMPLES, now=hs.floats(NOW - 10, NOW + 10), later=hs.lists(hs.floats(0, 60), max_size=5))
def test_one_pass_over_a_window_agrees_with_the_rules_arithmetic_and_says_how_long_it_holds(
        samples: list[Sample], now: float, later: list[float]) -> None:
    """summarize() is what the status board judges each check with at every evaluation; it must say what
    in_window + majority_failed + mostly_5xx say, and a later moment before ``steady_before`` (which the
    board then skips) must not change a thing but the weights."""
    def folded(at: float) -> tuple:
        runs = in_window(samples, at, 30.0)
        return (len(runs), runs[-1][0] if runs else None, tuple(s for s, _ in runs if not s.success),
                any(s.inconclusive for s, _ in runs), majority_failed(runs), mostly_5xx(runs))

    summary = summarize(samples, now, 30.0)
    assert tuple(summary[:6]) == folded(now)
    for step in later:
        if (now + step) - 30.0 < summary.steady_before:
            assert folded(now + step) == tuple(summary[:6])
