"""exporter.state.cells: one check, then one service x region cell, judged over the window: its state,
signals, reasons and causes."""

from __future__ import annotations

from exporter import state as st
from exporter.config.model import AuthoritativeCheck
from exporter.probers import result as r
from exporter.results import ResultStore
from exporter.state.cells import judge_check
from tests.helpers.factories import make_check, make_result
from tests.helpers.state import HTTP_200, HTTP_503, NOW, REGIONS, record, service_checks, snapshot_of, zone_report


def test_a_check_is_judged_conclusive_only_with_a_healthy_vantage_and_resolver() -> None:
    store = ResultStore()
    check = make_check("a", service="shop", region="eu-west", prober="dns", resolver="127.0.0.1:5301")
    zone = make_check("authns", service="shop", region="eu-west", authoritative=AuthoritativeCheck(zone="shop.test"))
    store.set_checks([check, zone])
    record(store, check, [False] * 4, reason=r.DNS_SERVFAIL)
    record(store, zone, [make_result(True, zone=zone_report(1))] * 4)
    runs = store.get(check.key).window  # type: ignore[union-attr]
    judged = judge_check(check, "eu-west", runs, NOW, 30.0, vantage_ok=True, resolver_ok=True).status
    assert (judged.state, judged.failing, judged.reasons) == (st.DOWN, True, (r.DNS_SERVFAIL,))
    for vantage_ok, resolver_ok, why in ((False, True, "vantage unhealthy"),
                                         (True, False, "resolver failing its controls")):
        judged = judge_check(check, "eu-west", runs, NOW, 30.0, vantage_ok=vantage_ok,
                             resolver_ok=resolver_ok).status
        assert (judged.state, judged.failing, judged.why_inconclusive) == (st.INCONCLUSIVE, False, why)
    partial = judge_check(zone, "eu-west", store.get(zone.key).window, NOW, 30.0,  # type: ignore[union-attr]
                          vantage_ok=True, resolver_ok=True).status
    assert (partial.state, partial.answering, partial.nameservers) == (st.DEGRADED, 1, 2)


def test_an_unhealthy_vantage_makes_failures_inconclusive_and_uncounted() -> None:
    store = ResultStore()
    control = make_check("home", service="ctl", region="eu-west", control=True, target="http://127.0.0.2/")
    checks = [control, make_check("a", service="shop", region="eu-west"),
              make_check("a", service="shop", region="us-east")]
    store.set_checks(checks)
    record(store, control, [False] * 4)
    record(store, checks[1], [False] * 4)
    record(store, checks[2], [True] * 4)
    snap = snapshot_of(store)
    eu = snap.cell("shop", "eu-west")
    assert eu is not None and eu.state == st.INCONCLUSIVE and not eu.signals and eu.counted == ()
    assert eu.checks[0].why_inconclusive == "vantage unhealthy"
    assert snap.cell("ctl", "eu-west").state == st.DOWN  # type: ignore[union-attr]
    assert snap.service("shop").state == st.INCONCLUSIVE and not snap.incidents  # type: ignore[union-attr]
    assert not snap.regions[0].healthy_in_window and snap.regions[1].healthy_in_window


def test_a_resolver_failing_its_controls_is_named_and_its_queries_are_inconclusive() -> None:
    store = ResultStore()
    bad = "127.0.0.1:5301"
    control = make_check("dns", service="ctl", region="eu-west", prober="dns", resolver=bad, control=True,
                         target="control.test.")
    other_control = make_check("dns", service="ctl", region="eu-west", prober="dns", resolver="127.0.0.1:5302",
                               control=True, target="control.test.")
    checks = [control, other_control, *service_checks("shop", "acme", "eu-west")]
    store.set_checks(checks)
    record(store, control, [False] * 4, reason=r.DNS_SERVFAIL)
    record(store, other_control, [True] * 4)
    for check in checks[2:]:
        record(store, check, [False] * 4 if check.resolver == bad else [True] * 4, reason=r.DNS_SERVFAIL)
    cell = snapshot_of(store, regions=REGIONS[:1]).cell("shop", "eu-west")
    assert cell is not None and cell.state == st.INCONCLUSIVE and not cell.signals
    assert f"resolver {bad} failing its controls" in cell.reasons
    assert f"dns_servfail via {bad}" in cell.reasons


def test_dns_signal_needs_most_resolvers_and_names_them() -> None:
    store = ResultStore()
    checks = service_checks("shop", "acme", "eu-west")
    store.set_checks(checks)
    for check in checks:
        record(store, check, [False] * 4 if check.prober == "dns" else [True] * 4, reason=r.DNS_SERVFAIL)
    cell = snapshot_of(store, regions=REGIONS[:1]).cell("shop", "eu-west")
    assert cell is not None and set(cell.signals) == {"any", "dns"}
    assert cell.reasons == ("dns_servfail via 127.0.0.1:5301, 127.0.0.1:5302",)
    assert cell.causes == ("resolution",)


def test_a_cell_names_the_status_code_of_an_earlier_failure_in_the_window() -> None:
    store = ResultStore()
    check = make_check("https", service="shop", region="eu-west")
    store.set_checks([check])
    record(store, check, [HTTP_200, HTTP_503, make_result(False, reason=r.DNS_SERVFAIL)])
    cell = snapshot_of(store, regions=REGIONS[:1]).cell("shop", "eu-west")
    assert cell is not None and cell.state == st.DOWN
    assert cell.reasons == ("dns_servfail", "HTTP 503")
