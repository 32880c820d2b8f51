"""exporter.state.evaluation: services judged by a quorum of regions, providers by their worst service."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as hs

from exporter import state as st
from exporter.results import ResultStore, Sample
from exporter.state.evaluation import evaluate
from exporter.state.memo import Memo
from tests.helpers.factories import make_check, make_result
from tests.helpers.state import HTTP_503, NOW, REGIONS, record, service_checks, snapshot_of, zone_report


def test_a_check_that_never_ran_is_nodata_and_every_region_is_listed() -> None:
    check = make_check("a", service="shop", region="eu-west")
    snap = evaluate([st.Input(check, "eu-west", ())], [*REGIONS, ("ap-south", "")], NOW,
                    verdicts={"us-east": (False, 2, ("ctl/home",), "2 of 2 controls failing")})
    assert snap.cell("shop", "eu-west").state == st.NODATA  # type: ignore[union-attr]
    assert snap.service("shop").state == st.NODATA and snap.incidents == ()  # type: ignore[union-attr]
    assert [(g.name, g.display_name, g.healthy, g.reason) for g in snap.regions] == [
        ("eu-west", "Europe West", True, ""), ("us-east", "US East", False, "2 of 2 controls failing"),
        ("ap-south", "ap-south", True, "")]


def test_a_service_answering_503_everywhere_is_down_not_degraded() -> None:
    """instagram in the 2021 replay: DNS fine, every HTTP probe 503 from both regions. The rules page
    (signal any and http_5xx, quorum of regions); the page must say down too, with the status code."""
    store = ResultStore()
    checks = [c for region, _ in REGIONS for c in service_checks("instagram", "meta", region, authoritative=True)]
    store.set_checks(checks)
    for check in checks:
        if check.check == "https":
            record(store, check, [HTTP_503] * 4)
        elif check.authoritative is not None:
            record(store, check, [make_result(True, zone=zone_report(2))] * 4)
        else:
            record(store, check, [True] * 4)
    snap = snapshot_of(store)
    for region, _ in REGIONS:
        cell = snap.cell("instagram", region)
        assert cell is not None and cell.state == st.DOWN
        assert set(cell.signals) == {"any", "http_5xx"}
        assert cell.reasons == ("HTTP 503",)
        assert cell.causes == ("http",)
    service = snap.service("instagram")
    assert service is not None and service.state == st.DOWN and set(service.signals) == {"any", "http_5xx"}
    [incident] = snap.incidents
    assert incident.provider == "meta" and incident.cause == "http"
    assert incident.summary(NOW + 180).startswith("meta: HTTP 503, 1 service, 2 regions, since ")
    assert incident.summary(NOW + 180).endswith("(3 min)")


def test_quorum_needs_two_regions_and_half_of_them() -> None:
    regions = [("a", "a"), ("b", "b"), ("c", "c")]
    store = ResultStore()
    checks = [make_check("x", service=f"s{n}", region=region) for n in (1, 2) for region, _ in regions]
    store.set_checks(checks)
    for check in checks:
        failing = check.region == "a" or (check.service == "s2" and check.region == "b")
        record(store, check, [not failing] * 4)
    snap = snapshot_of(store, regions=regions)
    assert snap.service("s1").state == st.DEGRADED  # 1 of 3 regions  # type: ignore[union-attr]
    assert snap.service("s2").state == st.DOWN  # 2 of 3  # type: ignore[union-attr]
    assert [(p.services_down, p.outage) for p in snap.providers] == [(0, False), (1, False)]


_CHECKS = [make_check("ctl", service="controls", provider="", region=region, prober="dns", control=True,
                      resolver="127.0.0.1:5301") for region, _ in REGIONS] + [
    c for region, _ in REGIONS for name in ("shop", "mail") for c in service_checks(name, "acme", region)]
_OUTCOMES = hs.sampled_from([(True, None, 200), (False, "http_status", 503), (False, "dns_servfail", -1),
                             (False, "conn_refused", -1), (True, None, 404)])


@settings(max_examples=150, deadline=None)
@given(plan=hs.lists(hs.tuples(hs.sampled_from([0.0, 0.5, 2.0, 5.0, 5.0, 12.0, 31.0]),  # seconds to the next look
                               hs.lists(hs.tuples(hs.integers(0, len(_CHECKS) - 1), _OUTCOMES), max_size=6),
                               hs.booleans()),  # whether us-east's vantage verdict says why it is unhealthy
                     min_size=1, max_size=25))
def test_an_evaluation_reusing_the_last_ones_judgements_says_exactly_what_a_fresh_one_says(plan: list) -> None:
    """The board evaluates every few seconds with a Memo: a check or cell is reused only while it provably
    judges the same. Runs arrive, leave the window, fail or not; the snapshot must not differ (a cell's
    since aside, which the Board keeps)."""
    windows: dict[str, list[Sample]] = {c.key: [] for c in _CHECKS}
    memo, now = Memo(), NOW
    for wait, runs, reason in plan:
        now += wait
        for i, (ok, why, status) in runs:
            windows[_CHECKS[i].key] = [*windows[_CHECKS[i].key][-5:], Sample(now, ok, False, why, status, -1, -1, -1)]
        inputs = [st.Input(c, c.region, tuple(windows[c.key])) for c in _CHECKS]
        verdicts = {"us-east": (True, 1, (), "1 of 1 controls failing" if reason else "")}
        fresh = evaluate(inputs, REGIONS, now, verdicts=verdicts)
        reused = evaluate(inputs, REGIONS, now, verdicts=verdicts, memo=memo)
        assert replace(reused, cells=tuple(replace(c, since=now) for c in reused.cells)) == fresh

