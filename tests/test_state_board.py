"""exporter.state.board: since when each cell and incident holds, and each cell's bounded history."""

from __future__ import annotations

from exporter import state as st
from exporter.results import ResultStore
from exporter.state.board import Board
from tests.helpers.factories import make_check
from tests.helpers.state import (
    HTTP_503,
    NOW,
    REGIONS,
    declared_status,
    record,
    routing_verdict,
    service_checks,
    store_source,
    the_2021_shape,
)


def test_board_keeps_since_and_a_bounded_history() -> None:
    store = ResultStore()
    check = make_check("a", service="shop", region="eu-west")
    store.set_checks([check])
    board = Board(store_source(store, REGIONS[:1]), max_age=0)
    record(store, check, [True] * 4)
    first = board.snapshot(NOW)
    assert first.cell("shop", "eu-west").state == st.UP  # type: ignore[union-attr]
    record(store, check, [False] * 4, end=NOW + 40)
    down = board.snapshot(NOW + 40).cell("shop", "eu-west")
    assert down is not None and down.state == st.DOWN and down.since == NOW + 40
    assert board.snapshot(NOW + 50).cell("shop", "eu-west").since == NOW + 40  # type: ignore[union-attr]
    assert board.snapshot(NOW + 50).incidents[0].since == NOW + 40
    for minute in range(1, 61):
        later = board.snapshot(NOW + 50 + minute * 60)
    history = later.cell("shop", "eu-west").history  # type: ignore[union-attr]
    assert len(history) == st.HISTORY_SLOTS
    assert all(b[0] - a[0] >= st.HISTORY_STEP for a, b in zip(history, history[1:], strict=False))


def test_a_slot_of_the_history_keeps_its_worst_state() -> None:
    check = make_check("a", service="shop", region="eu-west")
    runs: list = []
    board = Board(lambda: ([st.Input(check, "eu-west", tuple(runs))], REGIONS[:1], {}, st.CauseSignals()),
                     max_age=0)
    start = (NOW // st.HISTORY_STEP) * st.HISTORY_STEP
    failed, passed = (ResultStore(), ResultStore())
    for store, ok in ((failed, False), (passed, True)):
        store.set_checks([check])
        record(store, check, [ok] * 4, end=start + 1)
    runs[:] = failed.get(check.key).window  # type: ignore[union-attr]
    board.snapshot(start + 1)
    runs[:] = passed.get(check.key).window  # type: ignore[union-attr]
    snap = board.snapshot(start + 2)
    assert snap.cell("shop", "eu-west").state == st.UP  # type: ignore[union-attr]
    assert snap.cell("shop", "eu-west").history == ((start, st.DOWN),)  # type: ignore[union-attr]


def test_the_board_keeps_the_routing_cause_and_declared_status() -> None:
    signals = st.CauseSignals(routing=(routing_verdict("meta", "lost"),), declared=(declared_status("meta", False),))
    board = Board(store_source(the_2021_shape(), signals=signals), max_age=0)
    board.snapshot(NOW)
    [incident] = board.snapshot(NOW + 120).incidents
    assert incident.since == NOW and incident.cause == "routing"
    assert incident.summary(NOW + 120).endswith("(2 min); status page unreachable")


def test_a_steady_board_shows_the_same_cells_without_rebuilding_them() -> None:
    """The web application evaluates every few seconds whether anyone looks; with no new runs and no slot
    change, the cells shown are the previous ones (no per-cell work) and equal what a fresh board shows."""
    store = ResultStore()
    checks = [c for region, _ in REGIONS for c in service_checks("shop", "acme", region)]
    store.set_checks(checks)
    for check in checks:
        record(store, check, [HTTP_503 if check.check == "https" else True] * 4)
    assert NOW % st.HISTORY_STEP < st.HISTORY_STEP - 3  # NOW + 1 and NOW + 3 share a history slot
    board = Board(store_source(store), max_age=0)
    first = board.snapshot(NOW + 1)
    again = board.snapshot(NOW + 3)
    assert [c.state for c in again.cells] == [st.DOWN, st.DOWN]
    assert all(a is b for a, b in zip(first.cells, again.cells, strict=True))
    fresh = Board(store_source(store), max_age=0)
    fresh.snapshot(NOW + 1)
    assert fresh.snapshot(NOW + 3) == again
    assert [c.since for c in again.cells] == [NOW + 1, NOW + 1]
