"""exporter.state.model: how a snapshot names its rows, ages and cause classes."""

from __future__ import annotations

import dataclasses
import time

from exporter.probers import result as r
from exporter.state.model import CAUSES, DOWN, UP, CellStatus, Incident, Snapshot, cause_of, format_age
from tests.helpers.state import NOW


def test_ages_are_written_in_seconds_minutes_then_hours() -> None:
    assert [format_age(s) for s in (-3, 0, 59.9, 60, 3599, 3600, 7500)] == [
        "0 s", "0 s", "59 s", "1 min", "59 min", "1 h 00 min", "2 h 05 min"]


def test_an_incident_summary_counts_services_and_regions_and_appends_the_status_page() -> None:
    one = Incident(provider="acme", state=DOWN, cause="connect", causes=("connect",),
                   details=("connections refused",), services=("shop",), regions=("eu-west",), since=NOW)
    clock = time.strftime("%H:%M:%S", time.localtime(NOW))
    assert one.summary(NOW + 45) == f"acme: connections refused, 1 service, 1 region, since {clock} (45 s)"
    two = Incident(provider="acme", state=DOWN, cause="connect", causes=("connect", "tls"),
                   details=("connections refused", "TLS handshake failing"), services=("shop", "api"),
                   regions=("eu-west", "us-east"), since=NOW, declared="status page unreachable")
    assert two.summary(NOW + 180) == (f"acme: connections refused, TLS handshake failing, 2 services, 2 regions, "
                                      f"since {clock} (3 min); status page unreachable")


def test_every_failure_reason_has_a_cause_class() -> None:
    assert cause_of(r.CONN_ERROR) == "routing" and cause_of(r.DNS_SERVFAIL) == "resolution"
    assert cause_of(r.TLS_CERT_EXPIRED) == "tls" and cause_of(r.HTTP_STATUS) == "http"
    assert cause_of("not_a_reason") == "other"
    assert {cause_of(reason) for reason in r.REASONS} <= set(CAUSES)


def test_a_snapshot_finds_its_cells_and_services_by_name() -> None:
    cell = CellStatus(service="shop", provider="acme", region="eu-west", control=False, state=UP, signals=(),
                      counted=(), reasons=(), causes=(), since=NOW, checks=())
    snap = Snapshot(generated_at=NOW, window=30.0, regions=(), cells=(cell,), services=(), providers=(),
                    incidents=())
    assert snap.cell("shop", "eu-west") is cell
    assert snap.cell("shop", "us-east") is None and snap.service("shop") is None


def test_a_remembered_cell_keeps_every_field_but_since_and_history() -> None:
    cell = CellStatus(service="shop", provider="acme", region="eu-west", control=False, state=DOWN,
                      signals=("any",), counted=("any", "http_5xx"), reasons=("HTTP 503",), causes=("http",),
                      since=NOW, checks=(), history=((NOW - 30, UP),))
    history = ((NOW - 30, UP), (NOW, DOWN))
    shown = cell.remembered(NOW - 90, history)
    assert shown == dataclasses.replace(cell, since=NOW - 90, history=history)
    unchanged = [f.name for f in dataclasses.fields(CellStatus) if f.name not in ("since", "history")]
    assert all(getattr(shown, name) is getattr(cell, name) for name in unchanged)
