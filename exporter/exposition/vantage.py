"""Vantage health in ``/metrics``: per region, whether its controls say the prober itself is fine.

Labelled by ``region`` only (plus which control is failing for the info series): these describe the
vantage point, not a check. See exporter/vantage.py for how the verdict is reached.
"""

from __future__ import annotations

from collections.abc import Iterable

from exporter.exposition.probe import Family, Pieces, label_pair
from exporter.vantage import Verdict

HEALTHY = Family("outage_vantage_healthy", "gauge",
                 "Whether the region's control checks say its vantage is healthy (1) or not (0).")
CONTROLS = Family("outage_vantage_controls", "gauge", "Control checks loaded in the region.")
FAILING = Family("outage_vantage_controls_failing", "gauge", "Control checks of the region whose latest run failed.")
FAILING_INFO = Family("outage_vantage_failing_control_info", "gauge",
                      "A failing control check of the region (value 1).")

VANTAGE_FAMILIES: tuple[Family, ...] = (HEALTHY, CONTROLS, FAILING, FAILING_INFO)


def write_vantages(verdicts: Iterable[Verdict], out: Pieces) -> None:
    for verdict in verdicts:
        region = label_pair("region", verdict.region)
        plain = f"{{{region}}} "
        out[HEALTHY.name] += (HEALTHY.name, plain, "1\n" if verdict.healthy else "0\n")
        out[CONTROLS.name] += (CONTROLS.name, plain, str(verdict.controls), "\n")
        out[FAILING.name] += (FAILING.name, plain, str(len(verdict.failing)), "\n")
        seen: set[tuple[str, str, str]] = set()
        for check in verdict.failing:  # DNS controls fail once per resolver: one series per check/target
            key = (check.service, check.check, check.target)
            if key in seen:
                continue
            seen.add(key)
            labels = ",".join((region, label_pair("service", check.service), label_pair("check", check.check),
                               label_pair("target", check.target)))
            out[FAILING_INFO.name] += (FAILING_INFO.name, "{", labels, "} 1\n")
