"""exporter.probers.result: what every prober returns. A failure carries one of the documented reasons,
a success none; a zone report counts nameserver addresses, not address x transport."""

from __future__ import annotations

import pytest

from exporter.probers import result as r
from exporter.probers.result import NameserverResult, ProbeLog, ProbeResult, ZoneReport, finish


def test_a_result_carries_a_documented_reason_exactly_when_it_failed() -> None:
    assert ProbeResult(False, r.DNS_SERVFAIL).reason == r.DNS_SERVFAIL
    with pytest.raises(ValueError, match="unknown failure reason 'dns_broken'"):
        ProbeResult(False, "dns_broken")
    with pytest.raises(ValueError, match="unknown failure reason None"):
        ProbeResult(False)
    with pytest.raises(ValueError, match="a successful result has no reason"):
        ProbeResult(True, r.TIMEOUT)


def test_finish_times_the_probe_and_keeps_its_log() -> None:
    log = ProbeLog(t0=10.0)
    log(10.0123, "connected to 127.0.0.1:80")
    ok = finish(success=True, reason=r.TIMEOUT, started=10.0, now=10.25, phases={r.PHASE_REQUEST: 0.2},
                details={}, log=log)
    assert ok.reason is None and ok.duration_seconds == 0.25  # a reason passed with success is dropped
    assert ok.log == ("+12.3ms connected to 127.0.0.1:80",) and ok.finished_at > 0
    late = finish(success=False, reason=r.TIMEOUT, started=10.0, now=9.0, phases={}, details={}, log=log)
    assert late.duration_seconds == 0.0  # a clock never runs backwards into a negative duration


def test_a_zone_report_counts_addresses_answering_on_any_transport() -> None:
    def ns(address: str, transport: str, up: bool, serial: int | None = None) -> NameserverResult:
        return NameserverResult("ns.example.test", address, transport, up=up, serial=serial,
                                reason=None if up else r.DNS_TIMEOUT)

    report = ZoneReport("example.test", (ns("127.0.0.1", "udp", False), ns("127.0.0.1", "tcp", True, 5),
                                         ns("127.0.0.2", "udp", False), ns("127.0.0.2", "tcp", False)))
    assert (report.addresses, report.answering, report.serials_agree) == (2, 1, True)
    assert ZoneReport("example.test", (ns("127.0.0.1", "udp", True, 5), ns("127.0.0.2", "udp", True, 6))
                      ).serials_agree is False
    assert ZoneReport("example.test", (ns("127.0.0.1", "udp", False),)).serials_agree is None
