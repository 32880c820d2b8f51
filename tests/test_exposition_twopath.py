"""exporter.exposition.twopath: the resolved and the pinned path of a two-path check, side by side."""

from __future__ import annotations

from exporter.exposition.twopath import TWO_PATH_FAMILIES, write_paths
from exporter.probers import result as r
from exporter.probers.result import ProbeResult
from tests.helpers.factories import make_result
from tests.helpers.text import families_text, sample


def _text(result: ProbeResult) -> str:
    return families_text(TWO_PATH_FAMILIES, lambda out: write_paths(result, '{check="home"} ', '{check="home",', out))


def test_only_the_resolved_path_until_a_pinned_address_is_known() -> None:
    text = _text(make_result(True, duration=0.25, details={r.D_HTTP_STATUS: 200}))
    assert sample(text, "outage_http_path_success", check="home", path="resolved") == 1
    assert sample(text, "outage_http_path_duration_seconds", path="resolved") == 0.25
    assert sample(text, "outage_http_path_status_code", path="resolved") == 200
    assert sample(text, "outage_http_path_success", path="pinned") is None
    assert sample(text, "outage_http_pinned_address_age_seconds") is None


def test_the_pinned_path_shows_beside_the_resolved_one() -> None:
    """DNS moved the name to a failing address while the old (pinned) one still serves."""
    result = make_result(False, reason=r.CONN_REFUSED, details={
        r.D_PINNED_SUCCESS: 1, r.D_PINNED_DURATION: 0.5, r.D_PINNED_STATUS: 200, r.D_PINNED_AGE: 42.0})
    text = _text(result)
    assert sample(text, "outage_http_path_success", path="resolved") == 0
    assert sample(text, "outage_http_path_status_code", path="resolved") == 0  # no response arrived
    assert sample(text, "outage_http_path_success", path="pinned") == 1
    assert sample(text, "outage_http_path_duration_seconds", path="pinned") == 0.5
    assert sample(text, "outage_http_path_status_code", path="pinned") == 200
    assert sample(text, "outage_http_pinned_address_age_seconds", check="home") == 42
