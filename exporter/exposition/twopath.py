"""HTTP two-path checks in ``/metrics``: the resolved and the pinned path side by side (label ``path``).

The resolved path is the check's own probe (the same values as probe_success, probe_duration_seconds and
probe_http_status_code); the pinned path appears once a pinned address is known and disappears when it
ages out. Only scheduled checks have a pinned path, so none of this is part of ``/probe``.
"""

from __future__ import annotations

from exporter.exposition.probe import Family, Pieces, format_value
from exporter.probers import result as r
from exporter.probers.result import ProbeResult

PATH_SUCCESS = Family("outage_http_path_success", "gauge", "Whether the probe over this path succeeded (1) or not (0).")
PATH_DURATION = Family("outage_http_path_duration_seconds", "gauge", "How long the probe over this path took.")
PATH_STATUS = Family("outage_http_path_status_code", "gauge",
                     "Final HTTP status code over this path; 0 when no response arrived.")
PINNED_AGE = Family("outage_http_pinned_address_age_seconds", "gauge",
                    "Seconds since DNS last returned the pinned address.")

TWO_PATH_FAMILIES: tuple[Family, ...] = (PATH_SUCCESS, PATH_DURATION, PATH_STATUS, PINNED_AGE)
_RESOLVED = 'path="resolved"} '
_PINNED = 'path="pinned"} '


def write_paths(result: ProbeResult, plain: str, open_: str, out: Pieces) -> None:
    """The two-path series of a two-path check's latest result (``plain``/``open_`` as in write_result)."""
    details = result.details
    status = format_value(details.get(r.D_HTTP_STATUS, 0)) or "0"  # type: ignore[arg-type]
    _write(open_ + _RESOLVED, result.success, result.duration_seconds, status, out)
    if r.D_PINNED_SUCCESS not in details:
        return
    pinned_status = format_value(details.get(r.D_PINNED_STATUS, 0)) or "0"  # type: ignore[arg-type]
    duration = details.get(r.D_PINNED_DURATION, 0.0)
    _write(open_ + _PINNED, bool(details[r.D_PINNED_SUCCESS]), float(duration), pinned_status, out)
    age = format_value(details.get(r.D_PINNED_AGE, 0.0)) or "0"  # type: ignore[arg-type]
    out[PINNED_AGE.name] += (PINNED_AGE.name, plain, age, "\n")


def _write(labels: str, success: bool, duration: float, status: str, out: Pieces) -> None:
    out[PATH_SUCCESS.name] += (PATH_SUCCESS.name, labels, "1\n" if success else "0\n")
    out[PATH_DURATION.name] += (PATH_DURATION.name, labels, format_value(duration) or "0", "\n")
    out[PATH_STATUS.name] += (PATH_STATUS.name, labels, status, "\n")
