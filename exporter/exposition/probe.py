"""One probe result as Prometheus samples: the mapping shared by ``/probe`` and the scheduled ``/metrics``.

Metric names and meanings follow blackbox_exporter wherever they mean the same thing, so dashboards and
alerts written for it keep working; additions carry the ``outage_`` prefix (docs/metrics.md). Phases and
details a probe did not produce are absent, never 0.

Text is rendered by hand in exposition format 0.0.4: ``/metrics`` may hold tens of thousands of checks and a
fresh registry per scrape would cost far more than string formatting.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from exporter.probers import result as r
from exporter.probers.result import ProbeResult

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Pieces = dict[str, list[str]]  # family name -> text pieces; concatenated, they are the family's samples


@dataclass(frozen=True, slots=True)
class Family:
    """A metric family: one HELP and TYPE line, then its samples."""

    name: str
    type: str  # "gauge" | "counter" | "histogram"
    help: str

    @property
    def header(self) -> str:
        text = self.help.replace("\\", "\\\\").replace("\n", "\\n")
        return f"# HELP {self.name} {text}\n# TYPE {self.name} {self.type}\n"


def _g(name: str, help: str) -> Family:
    return Family(name, "gauge", help)


# Families describing the latest result of one probe, in exposition order.
RESULT_FAMILIES: tuple[Family, ...] = (
    _g("probe_success", "Whether the probe succeeded (1) or failed (0)."),
    _g("probe_duration_seconds", "How long the probe took to complete, in seconds."),
    _g("outage_probe_failure_info", "Why the probe failed (value 1); absent when it succeeded."),
    _g("probe_http_duration_seconds", "Duration of each HTTP probe phase that ran, in seconds."),
    _g("probe_dns_duration_seconds", "Duration of each DNS probe phase that ran, in seconds."),
    _g("outage_probe_tcp_duration_seconds", "Duration of each TCP probe phase that ran, in seconds."),
    _g("probe_dns_lookup_time_seconds", "Time spent resolving the target host name, in seconds."),
    _g("probe_ip_protocol", "IP protocol version (4 or 6) of the address the probe used."),
    _g("probe_http_status_code", "HTTP status code of the final response; 0 when none arrived."),
    _g("probe_http_version", "HTTP version of the final response, e.g. 1.1."),
    _g("probe_http_redirects", "Number of redirects followed."),
    _g("probe_http_ssl", "Whether the final HTTP request used TLS (1) or not (0)."),
    _g("probe_http_content_length", "Content-Length of the final response in bytes; -1 when unknown."),
    _g("probe_http_uncompressed_body_length", "Decompressed length of the final response body, in bytes."),
    _g("probe_failed_due_to_regex", "Whether a body or header regexp check failed (1) or not (0)."),
    _g("probe_ssl_earliest_cert_expiry", "Unix time at which the earliest certificate of the chain expires."),
    _g("probe_tls_version_info", "TLS version the connection negotiated (value 1)."),
    _g("probe_dns_query_succeeded", "Whether a DNS response arrived (1) or not (0)."),
    _g("outage_probe_dns_rcode", "Numeric DNS response code (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, ...)."),
    _g("probe_dns_answer_rrs", "Number of records in the answer section that answer the question "
                               "(its class; the name asked or its CNAME chain)."),
    _g("probe_dns_authority_rrs", "Number of records of the question's class in the authority section."),
    _g("probe_dns_additional_rrs", "Number of records of the question's class in the additional section."),
    _g("probe_dns_serial", "SOA serial number found in the response."),
    _g("outage_probe_dns_answer_ttl_seconds", "Smallest TTL in the answer section, in seconds."),
    _g("outage_probe_dns_negative_ttl_seconds", "Negative-caching TTL of an NXDOMAIN or NODATA response."),
    _g("outage_probe_dns_authoritative", "Whether the response had the AA flag set (1) or not (0)."),
)

# Detail keys exported as a plain gauge, independent of the prober.
_DETAIL_FAMILY: dict[str, str] = {
    r.D_IP_PROTOCOL: "probe_ip_protocol",
    r.D_HTTP_STATUS: "probe_http_status_code",
    r.D_HTTP_VERSION: "probe_http_version",
    r.D_HTTP_REDIRECTS: "probe_http_redirects",
    r.D_HTTP_CONTENT_LENGTH: "probe_http_content_length",
    r.D_HTTP_BODY_BYTES: "probe_http_uncompressed_body_length",
    r.D_FAILED_DUE_TO_REGEX: "probe_failed_due_to_regex",
    r.D_CERT_EXPIRY: "probe_ssl_earliest_cert_expiry",
    r.D_DNS_RCODE: "outage_probe_dns_rcode",
    r.D_DNS_ANSWER_RRS: "probe_dns_answer_rrs",
    r.D_DNS_AUTHORITY_RRS: "probe_dns_authority_rrs",
    r.D_DNS_ADDITIONAL_RRS: "probe_dns_additional_rrs",
    r.D_DNS_SERIAL: "probe_dns_serial",
    r.D_DNS_MIN_TTL: "outage_probe_dns_answer_ttl_seconds",
    r.D_DNS_NEGATIVE_TTL: "outage_probe_dns_negative_ttl_seconds",
    r.D_DNS_AA: "outage_probe_dns_authoritative",
}
# Detail keys shown in logs and on the landing page only: free-form or redundant with a metric.
UNEXPORTED_DETAILS: frozenset[str] = frozenset({r.D_ADDRESS, r.D_DNS_TRANSPORT, r.D_DNS_TRUNCATED})

_PHASE_FAMILY: dict[str, str] = {
    "http": "probe_http_duration_seconds",
    "dns": "probe_dns_duration_seconds",
    "tcp": "outage_probe_tcp_duration_seconds",
}


def escape_label_value(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


_SPECIAL_FLOATS = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}


def format_value(value: float | int) -> str | None:
    """Exposition text for a sample value; None for a non-number (such a sample is dropped)."""
    kind = value.__class__
    if kind is float:
        text = repr(value)
        return _SPECIAL_FLOATS.get(text, text)
    if kind is int:
        return str(value)
    if kind is bool:
        return "1" if value else "0"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return format_value(float(value))
    return None


def label_pair(name: str, value: str) -> str:
    """`name="value"` with the value escaped."""
    return f'{name}="{escape_label_value(value)}"'


# Cached label texts that close a series' label set: 'phase="connect"} ', 'reason="timeout"} 1\n'.
_PHASE_CLOSE: dict[str, str] = {}
_REASON_CLOSE: dict[str, str] = {reason: label_pair("reason", reason) + "} 1\n" for reason in r.REASONS}


def _phase_close(phase: str) -> str:
    text = _PHASE_CLOSE.get(phase)
    if text is None:
        text = _PHASE_CLOSE[phase] = label_pair("phase", phase) + "} "
    return text


def write_result(result: ProbeResult, prober: str, plain: str, open_: str, out: Pieces) -> None:
    """Append the gauges of one result to ``out``: every phase and detail present, nothing that is not.

    ``plain`` goes between the name and the value of a series without extra labels (``'{<identity>} '`` for a
    scheduled check, ``' '`` for /probe); ``open_`` starts the label set of a series with extra labels
    (``'{<identity>,'`` or ``'{'``). One function serves both so their semantics cannot drift apart.
    """
    out["probe_success"] += ("probe_success", plain, "1\n" if result.success else "0\n")
    duration = format_value(result.duration_seconds) or "0"
    out["probe_duration_seconds"] += ("probe_duration_seconds", plain, duration, "\n")
    if not result.success:
        reason = result.reason or r.INTERNAL
        close = _REASON_CLOSE.get(reason) or label_pair("reason", reason) + "} 1\n"
        out["outage_probe_failure_info"] += ("outage_probe_failure_info", open_, close)
    phases = result.phases
    if phases:
        _write_phases(phases, prober, plain, open_, out)
    details = result.details
    for key, raw in details.items():
        family = _DETAIL_FAMILY.get(key)
        if family is not None:
            value = format_value(raw)  # type: ignore[arg-type]
            if value is not None:
                out[family] += (family, plain, value, "\n")
        elif key == r.D_TLS_VERSION and isinstance(raw, str):
            out["probe_tls_version_info"] += ("probe_tls_version_info", open_, label_pair("version", raw), "} 1\n")
        elif key == r.D_TLS and prober == "http":
            value = format_value(raw)  # type: ignore[arg-type]
            if value is not None:
                out["probe_http_ssl"] += ("probe_http_ssl", plain, value, "\n")
    if prober == "dns":
        succeeded = "1\n" if r.D_DNS_RCODE in details else "0\n"
        out["probe_dns_query_succeeded"] += ("probe_dns_query_succeeded", plain, succeeded)


def _write_phases(phases: Mapping[str, float], prober: str, plain: str, open_: str, out: Pieces) -> None:
    family = _PHASE_FAMILY.get(prober)
    if family is not None:
        pieces = out[family]
        for phase, seconds in phases.items():
            value = format_value(seconds)
            if value is not None:
                pieces += (family, open_, _phase_close(phase), value, "\n")
    if prober != "dns" and r.PHASE_RESOLVE in phases:
        value = format_value(phases[r.PHASE_RESOLVE])
        if value is not None:
            out["probe_dns_lookup_time_seconds"] += ("probe_dns_lookup_time_seconds", plain, value, "\n")


def new_pieces(families: Iterable[Family]) -> Pieces:
    """An empty piece buffer per family, in exposition order."""
    return {family.name: [] for family in families}


# Pieces per encoded chunk: ~20 kB of text, below malloc's mmap threshold, so chunk memory is reused.
_CHUNK_PIECES = 512


def encode_pieces(families: Iterable[Family], pieces: Pieces) -> list[bytes]:
    """Each family with samples, header first, as UTF-8 chunks of about 20 kB."""
    return list(iter_encoded(families, pieces))


def iter_encoded(families: Iterable[Family], pieces: Pieces) -> Iterator[bytes]:
    """encode_pieces, one chunk at a time (lets an async caller yield between chunks).

    Samples are kept as pieces (shared label strings and short values) rather than one str per line, and
    encoded in small chunks: a ``/metrics`` body for 10k checks is tens of MB, and building it line by line
    and then as one str would copy every byte several times through freshly allocated memory.
    """
    for family in families:
        body = pieces[family.name]
        if body:
            yield family.header.encode()
            for start in range(0, len(body), _CHUNK_PIECES):
                yield "".join(body[start:start + _CHUNK_PIECES]).encode()


def render_probe_result(result: ProbeResult, prober: str) -> str:
    """The body of one ``/probe`` response: the result's gauges, without identity labels."""
    pieces = new_pieces(RESULT_FAMILIES)
    write_result(result, prober, " ", "{", pieces)
    return b"".join(encode_pieces(RESULT_FAMILIES, pieces)).decode()
