"""The one contract every prober honours.

A prober is ``async def probe(check: Check, *, deadline: float) -> ProbeResult``. ``deadline`` is an
absolute ``asyncio`` loop time (``loop.time()``) by which the prober must have returned. Probers never
raise for a failed probe: they return ``ProbeResult(success=False, reason=...)``. They know nothing about
Prometheus; exposition turns results into metrics in one place.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# --- Failure reasons: a bounded, documented set (docs/metrics.md#failure-reasons). -----------------------
DNS_NXDOMAIN = "dns_nxdomain"
DNS_SERVFAIL = "dns_servfail"
DNS_REFUSED = "dns_refused"
DNS_TIMEOUT = "dns_timeout"
DNS_NO_ANSWER = "dns_no_answer"  # NOERROR but no usable record (NODATA), or no address of the wanted family
DNS_RCODE = "dns_rcode"  # any other rcode not accepted by valid_rcodes (FORMERR, NOTIMP, ...)
DNS_ANSWER_MISMATCH = "dns_answer_mismatch"  # validate_*_rrs regexps rejected the answer
DNS_MALFORMED = "dns_malformed"  # unparsable or mismatched response
DNS_UNREACHABLE = "dns_unreachable"  # the DNS server could not be reached at all (port refused, no route)
DNS_NOT_AUTHORITATIVE = "dns_not_authoritative"  # a nameserver asked directly answered without the AA flag
CONN_REFUSED = "conn_refused"
CONN_TIMEOUT = "conn_timeout"
CONN_RESET = "conn_reset"
CONN_ERROR = "conn_error"  # other socket-level errors (unreachable network, ...)
TLS_HANDSHAKE = "tls_handshake"
TLS_CERT_INVALID = "tls_cert_invalid"
TLS_CERT_EXPIRED = "tls_cert_expired"
TLS_REQUIRED = "tls_required"  # fail_if_ssl / fail_if_not_ssl
HTTP_STATUS = "http_status"
HTTP_VERSION = "http_version"
HTTP_BODY_MISMATCH = "http_body_mismatch"
HTTP_HEADER_MISMATCH = "http_header_mismatch"
HTTP_TOO_MANY_REDIRECTS = "http_too_many_redirects"
HTTP_BODY_TOO_LARGE = "http_body_too_large"
HTTP_PROTOCOL = "http_protocol"  # malformed HTTP response
TCP_EXPECT_MISMATCH = "tcp_expect_mismatch"
TIMEOUT = "timeout"  # the overall deadline expired in a phase without a more specific reason
POLICY_REFUSED = "policy_refused"  # /probe only: the probe policy stopped a redirect hop before connecting
INTERNAL = "internal"  # a bug in the exporter; logged with a traceback
CONFIG_FILE_UNREADABLE = "config_file_unreadable"  # a file the module names (CA, token) is unreadable: not the target

REASONS: tuple[str, ...] = (
    DNS_NXDOMAIN, DNS_SERVFAIL, DNS_REFUSED, DNS_TIMEOUT, DNS_NO_ANSWER, DNS_RCODE, DNS_ANSWER_MISMATCH,
    DNS_MALFORMED, DNS_NOT_AUTHORITATIVE, DNS_UNREACHABLE, CONN_REFUSED, CONN_TIMEOUT, CONN_RESET, CONN_ERROR,
    TLS_HANDSHAKE, TLS_CERT_INVALID, TLS_CERT_EXPIRED, TLS_REQUIRED, HTTP_STATUS, HTTP_VERSION, HTTP_BODY_MISMATCH,
    HTTP_HEADER_MISMATCH, HTTP_TOO_MANY_REDIRECTS, HTTP_BODY_TOO_LARGE, HTTP_PROTOCOL, TCP_EXPECT_MISMATCH,
    TIMEOUT, POLICY_REFUSED, CONFIG_FILE_UNREADABLE, INTERNAL,
)
PROBER_SIDE_REASONS: frozenset[str] = frozenset({CONFIG_FILE_UNREADABLE})
"""Failures that say nothing about the target: inconclusive, never counted as the target's failures."""

# --- Detail keys a prober may set. Exposition maps each to a metric (docs/metrics.md). -------------------
# Common
D_IP_PROTOCOL = "ip_protocol"  # 4 or 6: address family of the connection / query
D_ADDRESS = "address"  # str: the address actually used (informational, shown in logs and the landing page)
D_TLS = "tls"  # 1 if TLS was used, else 0
D_TLS_VERSION = "tls_version"  # str, e.g. "TLS 1.3"
D_CERT_EXPIRY = "cert_expiry"  # float: unix time of the earliest leaf/chain certificate notAfter
# HTTP
D_HTTP_STATUS = "http_status_code"  # int; 0 when no response was received
D_HTTP_VERSION = "http_version"  # float, e.g. 1.1
D_HTTP_REDIRECTS = "http_redirects"  # int
D_HTTP_CONTENT_LENGTH = "http_content_length"  # int, -1 when unknown
D_HTTP_BODY_BYTES = "http_uncompressed_body_length"  # int
D_FAILED_DUE_TO_REGEX = "failed_due_to_regex"  # 0/1
# DNS
D_DNS_RCODE = "dns_rcode"  # int rcode of the response (absent when none arrived)
D_DNS_ANSWER_RRS = "dns_answer_rrs"
D_DNS_AUTHORITY_RRS = "dns_authority_rrs"
D_DNS_ADDITIONAL_RRS = "dns_additional_rrs"
D_DNS_MIN_TTL = "dns_answer_min_ttl"  # seconds, min TTL over the answer section (absent if empty)
D_DNS_NEGATIVE_TTL = "dns_negative_ttl"  # seconds, SOA minimum on NXDOMAIN/NODATA
D_DNS_SERIAL = "dns_serial"  # SOA serial when the answer or authority carries one
D_DNS_AA = "dns_authoritative"  # 0/1 AA flag
D_DNS_TRANSPORT = "dns_transport"  # "udp" | "tcp" | "tls": transport that produced the final answer
D_DNS_TRUNCATED = "dns_truncated"  # 1 if the UDP answer was truncated and TCP was used
# HTTP two-path (``two_path`` on an http check): the second probe, sent to the pinned address
D_PINNED_SUCCESS = "pinned_success"  # 0/1: the pinned path's probe succeeded
D_PINNED_DURATION = "pinned_duration_seconds"  # float: how long the pinned path's probe took
D_PINNED_STATUS = "pinned_http_status_code"  # int: its final status code; 0 when no response arrived
D_PINNED_AGE = "pinned_address_age_seconds"  # float: seconds since DNS last gave the pinned address
D_PINNED_ADDRESS = "pinned_address"  # str: the pinned address (logs and landing page only)

# Phase names (seconds). A phase that did not run is absent, never 0.
PHASE_RESOLVE = "resolve"
PHASE_CONNECT = "connect"
PHASE_TLS = "tls"
PHASE_PROCESSING = "processing"
PHASE_TRANSFER = "transfer"
PHASE_REQUEST = "request"  # DNS: from query sent to answer parsed

_EMPTY: Mapping = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class NameserverResult:
    """One authoritative nameserver address asked over one transport (see ZoneReport)."""

    nameserver: str  # the NS name, without the final dot (the address text for an unnamed static entry)
    address: str  # label form: the IP, with ":port" when the port is not 53
    transport: str  # "udp" | "tcp"
    up: bool  # answered NOERROR with AA for the zone's SOA (and for every extra query name)
    reason: str | None = None  # one of REASONS when not up
    duration_seconds: float = 0.0  # the SOA exchange
    rcode: int | None = None  # of the SOA answer; None when no answer arrived
    aa: bool | None = None  # AA flag of the SOA answer; None when no answer arrived
    serial: int | None = None  # SOA serial; None without an SOA in the answer


@dataclass(frozen=True, slots=True)
class ZoneReport:
    """What an authoritative check found: every nameserver address x transport, plus discovery state.

    Carried by the ProbeResult of the zone's check (``ProbeResult.zone``); exposition turns it into the
    ``outage_dns_authoritative_*`` and ``outage_dns_zone_*`` families.
    """

    zone: str
    nameservers: tuple[NameserverResult, ...] = ()
    discovery_success: bool | None = None  # the latest NS discovery; None for a static nameserver list
    last_discovery: float = 0.0  # unix time the latest discovery finished; 0 = never (or static)
    set_changes: int = 0  # times discovery found a different nameserver set (a counter)

    @property
    def addresses(self) -> int:
        """Nameserver addresses probed (each over one or more transports)."""
        return len({(n.nameserver, n.address) for n in self.nameservers})

    @property
    def answering(self) -> int:
        """Addresses with at least one transport up."""
        return len({(n.nameserver, n.address) for n in self.nameservers if n.up})

    @property
    def serials_agree(self) -> bool | None:
        """Whether every answering address reports the same SOA serial; None when none answers."""
        serials = {n.serial for n in self.nameservers if n.up}
        return None if not serials else len(serials) == 1


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one run of one probe found. Plain data: safe to keep, compare and render anywhere."""

    success: bool
    reason: str | None = None  # one of REASONS when success is False, None on success
    duration_seconds: float = 0.0
    phases: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    details: Mapping[str, float | int | str] = field(default_factory=lambda: _EMPTY)
    log: tuple[str, ...] = ()
    finished_at: float = 0.0  # unix time (time.time()) when the probe ended
    zone: ZoneReport | None = None  # authoritative checks only: per-nameserver results

    def __post_init__(self) -> None:
        if self.success and self.reason is not None:
            raise ValueError("a successful result has no reason")
        if not self.success and self.reason not in REASONS:
            raise ValueError(f"unknown failure reason {self.reason!r}")


class ProbeLog:
    """Per-probe buffered log: the same lines serve ``/probe?debug=true``, the landing page and the logger.

    Each line is prefixed with the milliseconds since the probe started, like ``+12.3ms connected to ...``.
    Times are on the probers' duration clock (``exporter.probers.clock.now``).
    """

    __slots__ = ("_lines", "_t0")

    def __init__(self, t0: float) -> None:
        self._t0 = t0  # clock.now() at probe start
        self._lines: list[str] = []

    def __call__(self, now: float, message: str) -> None:
        self._lines.append(f"+{(now - self._t0) * 1000:.1f}ms {message}")

    def lines(self) -> tuple[str, ...]:
        return tuple(self._lines)


def finish(
    *,
    success: bool,
    reason: str | None,
    started: float,
    now: float,
    phases: dict[str, float],
    details: dict[str, float | int | str],
    log: ProbeLog,
) -> ProbeResult:
    """Build the final result; the helper every prober ends with. ``started`` and ``now`` are on the
    duration clock (``clock.now``), not loop time: under uvloop loop time is cached to the millisecond."""
    return ProbeResult(
        success=success,
        reason=None if success else reason,
        duration_seconds=max(0.0, now - started),
        phases=MappingProxyType(phases),
        details=MappingProxyType(details),
        log=log.lines(),
        finished_at=time.time(),
    )
