from __future__ import annotations

import dataclasses

import pytest

from exporter.probers import result as r
from exporter.results import LATENCY_BUCKETS, CheckState, Histogram, ResultStore
from tests.helpers.factories import make_check, make_result


def _store(*checks):
    store = ResultStore()
    store.set_checks(list(checks))
    return store


def test_record_counts_runs_failures_latency_and_last_run():
    check = make_check()
    store = _store(check)
    store.record(check, make_result(duration=0.003, finished_at=100.0))
    store.record(check, make_result(False, reason=r.DNS_SERVFAIL, duration=0.3, finished_at=200.0))
    store.record(check, make_result(False, reason=r.DNS_SERVFAIL, duration=45.0, finished_at=300.0))
    state = store.get(check.key)
    assert state.runs == 3
    assert state.failures == {r.DNS_SERVFAIL: 2}
    assert state.last.reason == r.DNS_SERVFAIL
    assert state.last_run == 300.0
    assert state.latency_sum == pytest.approx(45.303)
    cumulative = state.cumulative_buckets()
    assert len(cumulative) == len(LATENCY_BUCKETS) + 1
    assert cumulative[LATENCY_BUCKETS.index(0.0025)] == 0
    assert cumulative[LATENCY_BUCKETS.index(0.005)] == 1
    assert cumulative[LATENCY_BUCKETS.index(0.5)] == 2
    assert cumulative[LATENCY_BUCKETS.index(30.0)] == 2
    assert cumulative[-1] == 3  # +Inf == count


def test_a_duration_equal_to_a_bound_falls_in_that_bucket():
    check = make_check()
    store = _store(check)
    store.record(check, make_result(duration=0.1))
    cumulative = store.get(check.key).cumulative_buckets()
    assert cumulative[LATENCY_BUCKETS.index(0.05)] == 0
    assert cumulative[LATENCY_BUCKETS.index(0.1)] == 1


def test_new_check_has_zero_counters_and_no_result():
    check = make_check()
    state = _store(check).get(check.key)
    assert (state.runs, state.failures, state.last, state.last_run) == (0, None, None, 0.0)
    assert state.cumulative_buckets() == [0] * (len(LATENCY_BUCKETS) + 1)


def test_counters_survive_reload_and_removed_checks_are_dropped():
    kept, removed, added = make_check("kept"), make_check("removed"), make_check("added")
    store = _store(kept, removed)
    store.record(kept, make_result(False, reason=r.TIMEOUT))
    store.record(removed, make_result())
    kept_v2 = dataclasses.replace(kept, provider="new-provider", interval=5.0)  # same key, new settings
    store.set_checks([added, kept_v2])
    assert [check.check for check, _ in store.items()] == ["added", "kept"]
    state = store.get(kept.key)
    assert state.runs == 1 and state.failures == {r.TIMEOUT: 1}
    assert state.check is kept_v2
    assert removed.key not in store
    assert store.get(added.key).runs == 0
    assert len(store) == 2


def test_results_for_unloaded_checks_are_ignored():
    loaded, gone = make_check("loaded"), make_check("gone")
    store = _store(loaded)
    store.record(gone, make_result())
    assert gone.key not in store
    assert store.recent() == []


def test_generation_changes_on_every_set_checks():
    store = ResultStore()
    before = store.generation
    store.set_checks([make_check()])
    store.set_checks([make_check()])
    assert store.generation == before + 2


def test_recent_lists_are_bounded_and_newest_first():
    check = make_check()
    store = ResultStore(recent=3, recent_failures=2)
    store.set_checks([check])
    results = [make_result(i % 2 == 0, reason=None if i % 2 == 0 else r.CONN_RESET, duration=i) for i in range(7)]
    for result in results:
        store.record(check, result)
    assert [p.result.duration_seconds for p in store.recent()] == [6, 5, 4]
    assert [p.result.duration_seconds for p in store.recent_failures()] == [5, 3]
    assert all(p.check is check for p in store.recent())


def test_failed_probe_keeps_its_log_in_recent_failures():
    check = make_check()
    store = _store(check)
    store.record(check, make_result(False, reason=r.CONN_REFUSED, log=("+0.1ms connect: refused",)))
    assert store.recent_failures()[0].result.log == ("+0.1ms connect: refused",)


def test_check_state_is_compact():
    state = CheckState(make_check())
    assert not hasattr(state, "__dict__")


def test_histogram_buckets_and_cumulative_counts():
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 7.0):
        histogram.observe(value)
    assert histogram.counts == [2, 1, 1]
    assert histogram.cumulative() == [2, 3, 4]
    assert histogram.count == 4
    assert histogram.sum == pytest.approx(7.65)


def test_histogram_rejects_unsorted_bounds():
    with pytest.raises(ValueError, match="strictly increasing"):
        Histogram((1.0, 0.5))


def test_listener_sees_each_recorded_state_before_it_changes():
    check, gone = make_check("a"), make_check("b")
    store = ResultStore()
    store.set_checks([check])
    seen = []
    store.listen(lambda state: seen.append((state.check.key, state.runs)))
    store.record(check, make_result())
    store.record(gone, make_result())  # not loaded: ignored, no callback
    store.record(check, make_result(False, reason="timeout"))
    assert seen == [(check.key, 0), (check.key, 1)]
    assert store.get(check.key).runs == 2
    store.listen(None)
    store.record(check, make_result())
    assert len(seen) == 2
