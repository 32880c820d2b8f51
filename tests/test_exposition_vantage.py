"""exporter.exposition.vantage: per region, whether its controls say the vantage is healthy."""

from __future__ import annotations

from exporter.exposition.vantage import VANTAGE_FAMILIES, write_vantages
from exporter.vantage import Verdict
from tests.helpers.factories import make_check
from tests.helpers.text import families_text, sample


def test_a_failing_control_is_listed_once_per_check_and_target() -> None:
    dns = [make_check("dns", service="ctl", region="eu-west", prober="dns", target="control.test.",
                      resolver=f"127.0.0.1:{port}", control=True) for port in (5301, 5302)]
    home = make_check("home", service="ctl", region="eu-west", control=True)
    verdicts = [Verdict("eu-west", False, 4, (*dns, home)), Verdict("us-east", True, 4)]
    text = families_text(VANTAGE_FAMILIES, lambda out: write_vantages(verdicts, out))
    assert sample(text, "outage_vantage_healthy", region="eu-west") == 0
    assert sample(text, "outage_vantage_healthy", region="us-east") == 1
    assert sample(text, "outage_vantage_controls", region="eu-west") == 4
    assert sample(text, "outage_vantage_controls_failing", region="eu-west") == 3  # every failing run counts
    info = [line for line in text.splitlines() if line.startswith("outage_vantage_failing_control_info{")]
    assert len(info) == 2  # the DNS control fails through both resolvers: one series
    assert sample(text, "outage_vantage_failing_control_info", region="eu-west", check="dns",
                  target="control.test.") == 1
    assert sample(text, "outage_vantage_failing_control_info", region="us-east") is None
