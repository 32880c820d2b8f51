"""Modules in blackbox.yml syntax: the ``modules:`` mapping and inline modules of checks.

Module keys mirror blackbox_exporter (http, dns and tcp probers). Known blackbox keys fall in three
groups. Implemented ones are in model.py; the deprecated ``no_follow_redirects`` is read as the inverse
of ``follow_redirects``. Keys that only tune behaviour outage-exporter does not have are accepted and
ignored, with a debug log line: ``http.enable_http2`` (the HTTP prober speaks HTTP/1.1),
``http.skip_resolve_phase_with_proxy``, ``query_response[].labels``. Keys whose silent omission would
change what is probed or how it authenticates (``oauth2``, ``authorization``, ``body_file``, CEL body
matchers, proxy environment settings, inline TLS keys, ``max_version`` ...) are refused as not supported.
Anything else is an unknown key. ``prober: icmp`` and ``grpc`` (or an ``icmp:``/``grpc:`` section) are
refused at the module's path.

Everything a probe needs is converted here, once: durations to seconds, regexes compiled (body and
``expect`` regexes as bytes patterns), DNS type/class/rcode names checked against dnspython.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import dns.exception
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from exporter.config.addresses import is_http_url
from exporter.config.errors import ConfigError, child_path, expected_error, kind_of, mask_url
from exporter.config.model import (
    BasicAuth,
    DNSProbe,
    HeaderMatch,
    HTTPProbe,
    Module,
    QueryResponse,
    RRValidator,
    TCPProbe,
    TLSConfig,
)
from exporter.config.values import (
    Parser,
    Section,
    as_bool,
    as_bytes_regex,
    as_duration,
    as_int,
    as_ip,
    as_nonempty,
    as_regex,
    as_size,
    as_str,
    choice,
    ip_protocol,
    list_of,
)

PROBERS: tuple[str, ...] = ("dns", "http", "tcp")
UNSUPPORTED_PROBERS: tuple[str, ...] = ("icmp", "grpc")


_MODULE_KEYS = ("prober", "timeout", "http", "dns", "tcp")

_HTTP_KEYS = (
    "valid_status_codes", "valid_http_versions", "method", "headers", "body", "fail_if_ssl",
    "fail_if_not_ssl", "fail_if_body_matches_regexp", "fail_if_body_not_matches_regexp",
    "fail_if_header_matches", "fail_if_header_not_matches", "follow_redirects", "no_follow_redirects",
    "tls_config", "basic_auth", "bearer_token", "bearer_token_file", "proxy_url", "body_size_limit",
    "compression", "preferred_ip_protocol", "ip_protocol_fallback",
)
_HTTP_IGNORED = ("enable_http2", "skip_resolve_phase_with_proxy")
_HTTP_UNSUPPORTED = (
    "body_file", "fail_if_body_json_matches_cel", "fail_if_body_json_not_matches_cel", "oauth2",
    "authorization", "no_proxy", "proxy_from_environment", "proxy_connect_header", "http_headers",
    "use_proxy_dns",
)
_TLS_KEYS = ("insecure_skip_verify", "ca_file", "cert_file", "key_file", "server_name", "min_version")
_TLS_UNSUPPORTED = ("ca", "cert", "key", "ca_ref", "cert_ref", "key_ref", "max_version")
_TLS_VERSIONS = ("TLS10", "TLS11", "TLS12", "TLS13")
_BASIC_AUTH_KEYS = ("username", "password", "password_file")
_BASIC_AUTH_UNSUPPORTED = ("username_file", "username_ref", "password_ref")
_HEADER_MATCH_KEYS = ("header", "regexp", "allow_missing")
_COMPRESSIONS = ("", "gzip", "br", "deflate", "identity")
_DNS_KEYS = (
    "query_name", "query_type", "query_class", "recursion_desired", "valid_rcodes", "transport_protocol",
    "preferred_ip_protocol", "ip_protocol_fallback", "source_ip_address", "dns_over_tls", "tls_config",
    "validate_answer_rrs", "validate_authority_rrs", "validate_additional_rrs",
)
_RR_KEYS = ("fail_if_matches_regexp", "fail_if_all_match_regexp", "fail_if_not_matches_regexp",
            "fail_if_none_matches_regexp")
_TCP_KEYS = ("tls", "tls_config", "query_response", "preferred_ip_protocol", "ip_protocol_fallback",
             "source_ip_address")
_QUERY_RESPONSE_KEYS = ("expect", "send", "starttls")

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: methods and header names
_HTTP_VERSION = re.compile(r"HTTP/\d(\.\d)?")
_HTTP = HTTPProbe()
_DNS = DNSProbe()
_TCP = TCPProbe()


def parse_module(raw: Any, path: str, name: str) -> Module:
    _refuse_unsupported_prober(raw, path)
    s = Section(raw, path, _MODULE_KEYS)
    prober = s.require("prober", _prober)
    timeout = s.get("timeout", as_duration, None)
    for other in PROBERS:
        if other != prober and s.has(other):
            raise ConfigError(s.path_of(other), f'section does not apply to prober "{prober}"')
    parse = {"http": _http, "dns": _dns, "tcp": _tcp}[prober]
    section = parse(s.raw.get(prober), s.path_of(prober))
    return Module(name=name, prober=prober, timeout=timeout, **{prober: section})


def _refuse_unsupported_prober(raw: Any, path: str) -> None:
    if not isinstance(raw, dict):
        return
    named = raw.get("prober")
    sections = [k for k in UNSUPPORTED_PROBERS if k in raw]
    found = named if named in UNSUPPORTED_PROBERS else next(iter(sections), None)
    if found:
        raise ConfigError(path, f'prober "{found}" is not supported (supported: {", ".join(PROBERS)})')


def _prober(v: Any, p: str) -> str:
    s = as_str(v, p)
    if s not in PROBERS:
        close = difflib.get_close_matches(s, PROBERS, n=1)
        hint = f'; did you mean "{close[0]}"?' if close else ""
        raise ConfigError(p, f'unknown prober "{s}"{hint} (supported: {", ".join(PROBERS)})')
    return s


def _http(raw: Any, path: str) -> HTTPProbe:
    s = Section(raw, path, _HTTP_KEYS, ignored=_HTTP_IGNORED, unsupported=_HTTP_UNSUPPORTED)
    probe = HTTPProbe(
        valid_status_codes=s.get("valid_status_codes", list_of(_status_code), ()),
        valid_http_versions=s.get("valid_http_versions", list_of(_http_version), ()),
        method=s.get("method", _method, _HTTP.method),
        headers=s.get("headers", _headers, ()),
        body=s.get("body", as_str, None),
        fail_if_ssl=s.get("fail_if_ssl", as_bool, False),
        fail_if_not_ssl=s.get("fail_if_not_ssl", as_bool, False),
        fail_if_body_matches_regexp=s.get("fail_if_body_matches_regexp", list_of(as_bytes_regex), ()),
        fail_if_body_not_matches_regexp=s.get("fail_if_body_not_matches_regexp", list_of(as_bytes_regex), ()),
        fail_if_header_matches=s.get("fail_if_header_matches", list_of(_header_match), ()),
        fail_if_header_not_matches=s.get("fail_if_header_not_matches", list_of(_header_match), ()),
        follow_redirects=_follow_redirects(s),
        tls_config=s.get("tls_config", _tls_config, TLSConfig()),
        basic_auth=s.get("basic_auth", _basic_auth, None),
        bearer_token=s.get("bearer_token", as_str, None),
        bearer_token_file=s.get("bearer_token_file", as_nonempty, None),
        proxy_url=s.get("proxy_url", _proxy_url, None),
        body_size_limit=s.get("body_size_limit", as_size, 0),
        compression=s.get("compression", choice(_COMPRESSIONS), ""),
        preferred_ip_protocol=s.get("preferred_ip_protocol", ip_protocol, _HTTP.preferred_ip_protocol),
        ip_protocol_fallback=s.get("ip_protocol_fallback", as_bool, True),
    )
    _check_http(probe, s)
    return probe


def _check_http(probe: HTTPProbe, s: Section) -> None:
    """Rules that involve more than one key."""
    if probe.fail_if_ssl and probe.fail_if_not_ssl:
        raise ConfigError(s.path, "fail_if_ssl and fail_if_not_ssl cannot both be true")
    if probe.bearer_token is not None and probe.bearer_token_file is not None:
        raise ConfigError(s.path, "set bearer_token or bearer_token_file, not both")
    if probe.basic_auth is not None and (probe.bearer_token is not None or probe.bearer_token_file):
        raise ConfigError(s.path, "set basic_auth or a bearer token, not both")
    for name, value in probe.headers:
        if name.lower() == "accept-encoding" and probe.compression and not _accepts(value, probe.compression):
            raise ConfigError(s.path_of("headers"), f'{name} "{value}" does not accept the configured '
                                                    f'compression "{probe.compression}"')


def _accepts(accept_encoding: str, coding: str) -> bool:
    """Whether an Accept-Encoding value allows ``coding`` (itself or ``*``) with a non-zero quality."""
    for item in accept_encoding.split(","):
        name, _, params = item.partition(";")
        if name.strip().lower() not in (coding, "*"):
            continue
        params = params.strip().replace(" ", "")
        try:
            quality = float(params[2:]) if params.startswith("q=") else 1.0
        except ValueError:
            quality = 0.0
        if quality > 0:
            return True
    return False


def _follow_redirects(s: Section) -> bool:
    if not s.has("no_follow_redirects"):
        return s.get("follow_redirects", as_bool, True)
    if s.has("follow_redirects"):
        raise ConfigError(s.path_of("no_follow_redirects"),
                          "set follow_redirects or the deprecated no_follow_redirects, not both")
    return not s.get("no_follow_redirects", as_bool, False)


def _status_code(v: Any, p: str) -> int:
    code = as_int(v, p)
    if not 100 <= code <= 599:
        raise ConfigError(p, f"HTTP status codes are 100..599, got {code}")
    return code


def _http_version(v: Any, p: str) -> str:
    s = as_str(v, p)
    if not _HTTP_VERSION.fullmatch(s):
        raise ConfigError(p, f'invalid HTTP version "{s}" (expected e.g. "HTTP/1.1" or "HTTP/2.0")')
    return s


def _method(v: Any, p: str) -> str:
    s = as_str(v, p)
    if not _TOKEN.fullmatch(s):
        raise ConfigError(p, f'invalid HTTP method "{s}"')
    return s


def _header_name(v: Any, p: str) -> str:
    s = as_str(v, p)
    if not _TOKEN.fullmatch(s):
        raise ConfigError(p, f'invalid HTTP header name "{s}"')
    return s


def _headers(v: Any, p: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(v, dict):
        raise expected_error(v, p, "a mapping of header names to values")
    first: dict[str, str] = {}
    out = []
    for name, value in v.items():
        name = _header_name(name, p)
        hp = child_path(p, name)
        if name.lower() in first:
            raise ConfigError(hp, f'duplicate header "{name}" (header names are case-insensitive; '
                                  f'already set as "{first[name.lower()]}")')
        first[name.lower()] = name
        text = as_str(value, hp)
        if "\r" in text or "\n" in text:
            raise ConfigError(hp, "header values must not contain line breaks")
        out.append((name, text))
    return tuple(out)


def _header_match(raw: Any, path: str) -> HeaderMatch:
    s = Section(raw, path, _HEADER_MATCH_KEYS)
    return HeaderMatch(
        header=s.require("header", _header_name),
        regexp=s.require("regexp", as_regex),
        allow_missing=s.get("allow_missing", as_bool, False),
    )


def _tls_config(raw: Any, path: str) -> TLSConfig:
    s = Section(raw, path, _TLS_KEYS, unsupported=_TLS_UNSUPPORTED)
    tls = TLSConfig(
        insecure_skip_verify=s.get("insecure_skip_verify", as_bool, False),
        ca_file=s.get("ca_file", as_nonempty, None),
        cert_file=s.get("cert_file", as_nonempty, None),
        key_file=s.get("key_file", as_nonempty, None),
        server_name=s.get("server_name", as_nonempty, None),
        min_version=s.get("min_version", choice(_TLS_VERSIONS), None),
    )
    if (tls.cert_file is None) != (tls.key_file is None):
        raise ConfigError(path, "cert_file and key_file must be set together")
    return tls


def _basic_auth(raw: Any, path: str) -> BasicAuth:
    s = Section(raw, path, _BASIC_AUTH_KEYS, unsupported=_BASIC_AUTH_UNSUPPORTED)
    auth = BasicAuth(
        username=s.get("username", as_str, ""),
        password=s.get("password", as_str, None),
        password_file=s.get("password_file", as_nonempty, None),
    )
    if auth.password is not None and auth.password_file is not None:
        raise ConfigError(path, "set password or password_file, not both")
    return auth


def _proxy_url(v: Any, p: str) -> str:
    s = as_str(v, p)
    if not is_http_url(s):
        raise ConfigError(p, f'invalid proxy_url "{mask_url(s)}": expected an http:// or https:// URL')
    return s


def _dns(raw: Any, path: str) -> DNSProbe:
    s = Section(raw, path, _DNS_KEYS)
    over_tls = s.get("dns_over_tls", as_bool, False)
    probe = DNSProbe(
        query_name=s.get("query_name", dns_name, ""),
        query_type=s.get("query_type", dns_enum(dns.rdatatype, "query type"), _DNS.query_type),
        query_class=s.get("query_class", dns_enum(dns.rdataclass, "query class"), _DNS.query_class),
        recursion_desired=s.get("recursion_desired", as_bool, True),
        valid_rcodes=s.get("valid_rcodes", list_of(dns_enum(dns.rcode, "rcode")), ()) or _DNS.valid_rcodes,
        transport_protocol=s.get("transport_protocol", choice(("udp", "tcp")), "tcp" if over_tls else "udp"),
        preferred_ip_protocol=s.get("preferred_ip_protocol", ip_protocol, _DNS.preferred_ip_protocol),
        ip_protocol_fallback=s.get("ip_protocol_fallback", as_bool, True),
        source_ip_address=s.get("source_ip_address", as_ip, None),
        dns_over_tls=over_tls,
        tls_config=s.get("tls_config", _tls_config, TLSConfig()),
        validate_answer_rrs=s.get("validate_answer_rrs", _rr_validator, RRValidator()),
        validate_authority_rrs=s.get("validate_authority_rrs", _rr_validator, RRValidator()),
        validate_additional_rrs=s.get("validate_additional_rrs", _rr_validator, RRValidator()),
    )
    if probe.dns_over_tls and probe.transport_protocol != "tcp":
        raise ConfigError(s.path_of("transport_protocol"), 'dns_over_tls needs transport_protocol "tcp"')
    return probe


def dns_name(v: Any, p: str) -> str:
    s = as_nonempty(v, p)
    try:
        dns.name.from_text(s)
    except dns.exception.DNSException as e:
        raise ConfigError(p, f'invalid DNS name "{s}": {e}') from None
    return s


def dns_enum(module: Any, what: str) -> Parser[str]:
    """A parser accepting the names a dnspython enum module knows (any case), returned in canonical form."""

    def parse(v: Any, p: str) -> str:
        s = as_str(v, p)
        try:
            return module.to_text(module.from_text(s))
        except (dns.exception.DNSException, ValueError):
            raise ConfigError(p, f'unknown DNS {what} "{s}"') from None

    return parse


def _rr_validator(raw: Any, path: str) -> RRValidator:
    s = Section(raw, path, _RR_KEYS)
    return RRValidator(**{key: s.get(key, list_of(as_regex), ()) for key in _RR_KEYS})


def _tcp(raw: Any, path: str) -> TCPProbe:
    s = Section(raw, path, _TCP_KEYS)
    return TCPProbe(
        tls=s.get("tls", as_bool, False),
        tls_config=s.get("tls_config", _tls_config, TLSConfig()),
        query_response=s.get("query_response", list_of(_query_response), ()),
        preferred_ip_protocol=s.get("preferred_ip_protocol", ip_protocol, _TCP.preferred_ip_protocol),
        ip_protocol_fallback=s.get("ip_protocol_fallback", as_bool, True),
        source_ip_address=s.get("source_ip_address", as_ip, None),
    )


def _query_response(raw: Any, path: str) -> QueryResponse:
    s = Section(raw, path, _QUERY_RESPONSE_KEYS, ignored=("labels",))
    step = QueryResponse(
        expect=s.get("expect", as_bytes_regex, None),
        send=s.get("send", as_str, None),
        starttls=s.get("starttls", as_bool, False),
    )
    if step == QueryResponse():
        raise ConfigError(path, "needs at least one of expect, send, starttls")
    return step


def parse_modules(raw: Any, path: str) -> dict[str, Module]:
    if not isinstance(raw, dict):
        raise expected_error(raw, path, "a mapping of module names to modules")
    modules = {}
    for name, body in raw.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(path, f"module names must be non-empty strings, got {kind_of(name)} ({name!r})")
        modules[name] = parse_module(body, child_path(path, name), name)
    return modules
