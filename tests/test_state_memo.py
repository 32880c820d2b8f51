"""exporter.state.memo: what the next evaluation of the board reuses, and when it must judge again."""

from __future__ import annotations

from exporter import state as st
from exporter.results import ResultStore
from exporter.state.evaluation import evaluate
from exporter.state.memo import Memo
from tests.helpers.state import NOW, REGIONS, record, service_checks


def test_an_evaluation_with_nothing_new_reuses_every_steady_cell() -> None:
    """What makes the regular evaluation cheap: nothing ran since, so nothing is judged again."""
    store = ResultStore()
    checks = [c for region, _ in REGIONS for c in service_checks("shop", "acme", region)]
    store.set_checks(checks)
    for check in checks:
        record(store, check, [check.check != "https"] * 3, every=15.0)
    inputs = [st.Input(c, c.region, tuple(store.get(c.key).window or ())) for c in checks]  # type: ignore[union-attr]
    memo = Memo()
    first = evaluate(inputs, REGIONS, NOW + 1, memo=memo)
    again = evaluate(inputs, REGIONS, NOW + 6, memo=memo)
    assert [c.state for c in again.cells] == [st.DOWN, st.DOWN]
    assert all(a is b for a, b in zip(first.cells, again.cells, strict=True))
    later = evaluate(inputs, REGIONS, NOW + 16, memo=memo)  # the oldest run left the window: judged again
    assert later.cells[0] is not again.cells[0] and later.cells[0].checks[0].probes == 2


def test_a_check_is_judged_again_when_a_run_arrives_or_its_vantage_changes() -> None:
    store = ResultStore()
    checks = service_checks("shop", "acme", "eu-west")
    store.set_checks(checks)
    for check in checks:
        record(store, check, [True] * 3, every=15.0)

    def inputs() -> list[st.Input]:
        return [st.Input(c, c.region, tuple(store.get(c.key).window or ())) for c in checks]  # type: ignore[union-attr]

    memo = Memo()
    first = evaluate(inputs(), REGIONS[:1], NOW + 1, memo=memo)
    record(store, checks[2], [False], end=NOW + 2)
    second = evaluate(inputs(), REGIONS[:1], NOW + 3, memo=memo)
    assert second.cells[0].state == st.DEGRADED and second.cells[0].checks[0] is first.cells[0].checks[0]
    unhealthy = {"eu-west": (False, 1, ("controls/ctl",), "1 of 1 controls failing")}
    third = evaluate(inputs(), REGIONS[:1], NOW + 4, memo=memo, verdicts=unhealthy)
    assert third.cells[0] is not second.cells[0] and third.cells[0].checks[0] is second.cells[0].checks[0]
    assert third.cells[0].reasons == second.cells[0].reasons  # the verdict now is not the window's vantage
