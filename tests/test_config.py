"""The configuration loader: what valid files turn into, and the exact message for each kind of mistake."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import exporter.config as config_pkg
from exporter import checks
from exporter.config import (
    ConfigError,
    format_duration,
    load_config,
    load_config_text,
    parse_duration,
    parse_size,
)
from exporter.config.model import Config, Defaults, Resolver
from tests.helpers.configfiles import TESTDATA

pytestmark = pytest.mark.usefixtures("yaml_loader")


def load(name: str, resolv_conf: str, **kw) -> Config:
    return load_config(str(TESTDATA / name), default_region="test-1", resolv_conf=resolv_conf, **kw)


def test_public_names() -> None:
    assert sorted(config_pkg.__all__) == [
        "ConfigError", "default_region_name", "dump_config", "format_duration", "load_config",
        "load_config_text", "parse_duration", "parse_size",
    ]


# --- Invalid files: one exact message per file -----------------------------------------------------------

INVALID = {
    "invalid-accept-encoding.yml":
        'modules.web.http.headers: Accept-Encoding "br, gzip;q=0" does not accept the configured '
        'compression "gzip"',
    "invalid-authoritative-and-module.yml":
        'services[0].checks[0].authoritative: set "module" or "authoritative", not both',
    "invalid-authoritative-duplicate-nameserver.yml":
        'services[0].checks[0].authoritative.nameservers[1]: duplicate nameserver address "127.0.0.9:5300" '
        "(already used at services[0].checks[0].authoritative.nameservers[0])",
    "invalid-authoritative-nameserver.yml":
        'services[0].checks[0].authoritative.nameservers[0]: invalid nameserver "a.ns.facebook.com": expected '
        '"name=ip[:port]" or "ip[:port]" (the address is not looked up)',
    "invalid-authoritative-no-zone.yml": 'services[0].checks[0].authoritative: missing required key "zone"',
    "invalid-authoritative-port.yml":
        "services[0].checks[0].authoritative.port: must be a port number (1-65535), got 70000",
    "invalid-authoritative-query-name-outside.yml":
        'services[0].checks[0].authoritative.query_names[1]: "www.fb.com" is not in zone facebook.com (its '
        "nameservers only answer for the zone)",
    "invalid-authoritative-rediscover.yml":
        "services[0].checks[0].authoritative.rediscover_interval: must not be shorter than the check's interval "
        "(15s), got 10s",
    "invalid-authoritative-root-zone.yml":
        "services[0].checks[0].authoritative.zone: must be a zone below the root (it is read from its parent's "
        "delegation)",
    "invalid-authoritative-static-and-parents.yml":
        'services[0].checks[0].authoritative.parents: only applies when nameservers are discovered (a static '
        '"nameservers" list is set)',
    "invalid-authoritative-targets.yml":
        "services[0].checks[0].targets: does not apply to authoritative checks (they ask the zone's nameservers, "
        "set under authoritative)",
    "invalid-authoritative-transport.yml":
        'services[0].checks[0].authoritative.transports[1]: invalid value "tls" (allowed: "udp", "tcp")',
    "invalid-basic-auth.yml": "modules.web.http.basic_auth: set password or password_file, not both",
    "invalid-body-regex.yml":
        'modules.http_2xx.http.fail_if_body_matches_regexp[1]: invalid regular expression "(unclosed": '
        "missing ), unterminated subpattern at position 0",
    "invalid-body-size.yml":
        'modules.web.http.body_size_limit: invalid size "10 megabytes": expected bytes or a number with a '
        'unit (B, KB, KiB, MB, MiB, GB, GiB, ...), e.g. "10MB"',
    "invalid-compression.yml":
        'modules.web.http.compression: invalid value "zstd" '
        '(allowed: "", "gzip", "br", "deflate", "identity")',
    "invalid-concurrency.yml": "defaults.concurrency: must be at least 1, got 0",
    "invalid-defaults-timeout.yml":
        "defaults.timeout: timeout (1m) must not be longer than the interval (5s)",
    "invalid-dns-no-query-name.yml":
        'services[0].checks[0]: a dns check needs a query_name: set one on the check or in module "dns_a"',
    "invalid-dns-over-tls-udp.yml":
        'modules.dot.dns.transport_protocol: dns_over_tls needs transport_protocol "tcp"',
    "invalid-dns-target-system.yml":
        'services[0].checks[0].targets[0]: "system" cannot be a dns target (leave targets out to ask the '
        "region's resolvers, system included)",
    "invalid-duplicate-check.yml":
        'services[0].checks[1].name: duplicate check name "dns" (already used at services[0].checks[0].name)',
    "invalid-duplicate-header.yml":
        'modules.web.http.headers.host: duplicate header "host" (header names are case-insensitive; '
        'already set as "Host")',
    "invalid-duplicate-region.yml":
        'regions[1].name: duplicate region name "eu-west" (already used at regions[0].name)',
    "invalid-duplicate-resolver.yml":
        'regions[0].resolvers[2]: duplicate resolver "127.0.0.1" (already used at regions[0].resolvers[0])',
    "invalid-duplicate-service.yml":
        'services[2].name: duplicate service name "facebook" (already used at services[0].name)',
    "invalid-duplicate-yaml-key.yml":
        'modules.http_2xx: duplicate key "http_2xx" (line 7, first defined on line 2)',
    "invalid-duration-no-unit.yml": 'defaults.interval: durations need a unit, e.g. "15s" (got 15)',
    "invalid-duration-order.yml":
        'defaults.interval: invalid duration "30s1m": units must go from largest to smallest, '
        "each at most once",
    "invalid-duration-syntax.yml":
        'modules.slow.timeout: invalid duration "5 seconds": expected e.g. "500ms", "15s" or "1m30s" '
        "(units: y, w, d, h, m, s, ms)",
    "invalid-duration-zero.yml": 'defaults.timeout: duration must be greater than 0 (got "0s")',
    "invalid-empty-checks.yml": "services[0].checks: must not be empty",
    "invalid-empty-regions-list.yml":
        "services[0].checks[0].regions: must not be empty (leave it out to run in every region)",
    "invalid-fail-if-ssl-both.yml": "modules.web.http: fail_if_ssl and fail_if_not_ssl cannot both be true",
    "invalid-grpc-section.yml":
        'modules.grpc_health: prober "grpc" is not supported (supported: dns, http, tcp)',
    "invalid-header-value-type.yml":
        "modules.web.http.headers.X-Api-Version: expected a string, got an integer (put it in quotes)",
    "invalid-http-target.yml":
        'services[0].checks[0].targets[1]: invalid http target "ftp://a.example/pub": expected an http:// '
        "or https:// URL",
    "invalid-icmp.yml": 'modules.icmp_ping: prober "icmp" is not supported (supported: dns, http, tcp)',
    "invalid-ip-protocol.yml":
        'modules.web.http.preferred_ip_protocol: invalid value "ipv4" (allowed: "ip4", "ip6")',
    "invalid-latitude.yml": "regions[0].latitude: must be between -90 and 90, got 91",
    "invalid-longitude-type.yml": "regions[0].longitude: expected a number, got a string",
    "invalid-missing-module.yml":
        'services[0].checks[0]: missing required key "module" (or "authoritative" for a nameserver check)',
    "invalid-missing-prober.yml": 'modules.web: missing required key "prober"',
    "invalid-missing-service-name.yml": 'services[0]: missing required key "name"',
    "invalid-missing-targets.yml":
        'services[0].checks[0]: an http check needs targets (URLs such as "https://example.com/")',
    "invalid-prober-section-mismatch.yml": 'modules.web.http: section does not apply to prober "dns"',
    "invalid-query-name-on-http.yml":
        "services[0].checks[0].query_name: only applies to dns checks (the module's prober is \"http\")",
    "invalid-query-response-empty.yml":
        "modules.banner.tcp.query_response[1]: needs at least one of expect, send, starttls",
    "invalid-query-type.yml": 'modules.dns_a.dns.query_type: unknown DNS query type "AAAAA"',
    "invalid-rcode.yml": 'modules.dns_a.dns.valid_rcodes[1]: unknown DNS rcode "NXDOMIAN"',
    "invalid-region-name-missing-twice.yml":
        'regions[1]: only one region may leave out its name (regions[0] already takes the local region '
        'name "test-1")',
    "invalid-resolver-hostname.yml":
        "regions[0].resolvers[1]: invalid resolver address 'dns.google': expected an IP address, "
        "not a hostname",
    "invalid-rr-regex.yml":
        'modules.dns_a.dns.validate_answer_rrs.fail_if_none_matches_regexp[0]: invalid regular expression '
        '"[a-": unterminated character set at position 0',
    "invalid-status-code.yml":
        "modules.web.http.valid_status_codes[1]: HTTP status codes are 100..599, got 600",
    "invalid-target-password.yml": 'services[0].checks[0].target: http target "https://admin:<secret>@127.0.0.1/" '
                                   "carries a password, which would be exported in the target label; use the "
                                   "module's http.basic_auth instead",
    "invalid-target-and-targets.yml": 'services[0].checks[0].target: set "target" or "targets", not both',
    "invalid-tcp-target.yml":
        'services[0].checks[0].target: invalid tcp target "mail.example.org": expected host:port, e.g. '
        '"example.com:443" or "[2001:db8::1]:443"',
    "invalid-timeout-over-interval.yml":
        "services[0].checks[0].timeout: timeout (12s) must not be longer than the interval (10s)",
    "invalid-tls-cert-without-key.yml":
        "modules.web.http.tls_config: cert_file and key_file must be set together",
    "invalid-tls-version.yml":
        'modules.tls.tcp.tls_config.min_version: invalid value "TLS1.2" (allowed: "TLS10", "TLS11", "TLS12", '
        '"TLS13")',
    "invalid-top-level-list.yml":
        "the configuration must be a mapping (keys: defaults, modules, regions, services, probe, routing, "
        "status_pages), got a list",
    "invalid-two-path-key.yml":
        'services[0].checks[0].two_path.max-age: unknown key "max-age"; did you mean "max_age"? (allowed: '
        "enabled, max_age)",
    "invalid-two-path-on-dns.yml":
        'services[0].checks[0].two_path: only applies to http checks (the module\'s prober is "dns")',
    "invalid-unknown-http-key.yml":
        'modules.http_2xx.http.valid_status_code: unknown key "valid_status_code"; did you mean '
        '"valid_status_codes"? (allowed: basic_auth, bearer_token, bearer_token_file, body, body_size_limit, '
        "compression, fail_if_body_matches_regexp, fail_if_body_not_matches_regexp, fail_if_header_matches, "
        "fail_if_header_not_matches, fail_if_not_ssl, fail_if_ssl, follow_redirects, headers, "
        "ip_protocol_fallback, method, no_follow_redirects, preferred_ip_protocol, proxy_url, tls_config, "
        "valid_http_versions, valid_status_codes)",
    "invalid-unknown-module.yml":
        'services[2].checks[0].module: unknown module "http_3xx" (known: dns_soa, http_2xx)',
    "invalid-unknown-prober.yml":
        'modules.web.prober: unknown prober "htttp"; did you mean "http"? (supported: dns, http, tcp)',
    "invalid-unknown-region.yml":
        'services[0].checks[0].regions[1]: unknown region "eu-wset" (known: eu-west, us-east)',
    "invalid-unknown-top-key.yml":
        'modulez: unknown key "modulez"; did you mean "modules"? '
        "(allowed: defaults, modules, probe, regions, routing, services, status_pages)",
    "invalid-unsupported-blackbox-key.yml":
        'modules.api.http.oauth2: blackbox_exporter option "oauth2" is not supported by outage-exporter',
    "invalid-vantage-ratio.yml": "regions[0].vantage.min_healthy_ratio: must be between 0 and 1, got 1.5",
    "invalid-wrong-type.yml": "defaults.concurrency: expected an integer, got a string",
    "invalid-yaml-syntax.yml":
        "{file}:5:11: invalid YAML: mapping values are not allowed here",
}


def test_every_invalid_file_has_an_expected_message() -> None:
    assert sorted(p.name for p in TESTDATA.glob("invalid-*.yml")) == sorted(INVALID)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_config(name: str, resolv_conf: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(name, resolv_conf)
    assert str(info.value) == INVALID[name].format(file=TESTDATA / name)


def test_error_carries_path_and_problem() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text("defaults: {interval: 15}")
    assert info.value.path == "defaults.interval"
    assert info.value.problem == 'durations need a unit, e.g. "15s" (got 15)'


def test_unknown_key_suggestion_and_allowed_list() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text("defaults: {intervall: 10s}")
    assert str(info.value) == ('defaults.intervall: unknown key "intervall"; did you mean "interval"? '
                               "(allowed: concurrency, interval, max_checks, timeout)")
    with pytest.raises(ConfigError) as info:
        load_config_text("defaults: {zzz: 1}")
    assert info.value.problem == 'unknown key "zzz" (allowed: concurrency, interval, max_checks, timeout)'


# --- Valid files -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in TESTDATA.glob("valid-*.yml")))
def test_valid_files_load(name: str, resolv_conf: str) -> None:
    config = load(name, resolv_conf)
    raw = (TESTDATA / name).read_bytes()
    assert config.checksum == hashlib.sha256(raw).hexdigest()
    assert config.source == str(TESTDATA / name)
    checks.expand(config)  # the scheduler's view must be buildable from any valid config


def test_unnamed_region_takes_the_local_name(resolv_conf: str) -> None:
    config = load("valid-unnamed-region.yml", resolv_conf)
    assert [r.name for r in config.regions] == ["test-1", "backup"]
    assert config.services[0].checks[0].regions == ("backup",)


def test_empty_file_gives_defaults_and_the_implicit_region(resolv_conf: str) -> None:
    config = load("valid-empty.yml", resolv_conf)
    assert (config.defaults, config.modules, config.services) == (Config().defaults, {}, ())
    assert config.regions[0].name == "test-1"
    assert config.regions[0].resolvers == (Resolver("system", "127.0.0.53"),)


# --- Embedded default config (loaded only; never probed) -------------------------------------------------


def test_embedded_default(resolv_conf: str) -> None:
    config = load_config(None, default_region="test-1", resolv_conf=resolv_conf)
    assert config.source == "<embedded>"
    assert len(config.checksum) == 64
    assert [(s.name, s.provider) for s in config.services] == [
        ("facebook", "meta"), ("instagram", "meta"), ("whatsapp", "meta"), ("messenger", "meta"),
        ("twitter", "twitter"), ("telegram", "telegram")]
    (region,) = config.regions
    assert region.name == "test-1"
    assert [r.name for r in region.resolvers] == ["system", "1.1.1.1", "8.8.8.8", "9.9.9.9"]
    assert region.resolvers[0].host == "127.0.0.53"
    assert (config.defaults.interval, config.defaults.timeout) == (Defaults().interval, Defaults().timeout)
    for service in config.services:
        dns_check, https = service.checks
        assert (dns_check.module.prober, dns_check.targets) == ("dns", ())
        assert dns_check.module.dns.query_type == "A"
        assert https.targets == (f"https://{dns_check.query_name}/",)
        assert https.module.http.follow_redirects
    expanded = checks.expand(config)
    assert len(expanded) == 6 * (4 + 1)  # a DNS check per resolver plus one HTTPS check, per service
    assert {c.region for c in expanded} == {"test-1"}


# --- Durations and sizes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("15s", 15.0), ("1m30s", 90.0), ("2h", 7200.0), ("1d", 86400.0), ("1w", 604800.0),
    ("1y", 365 * 86400.0), ("1h0m1s", 3601.0), ("1.5s", 1.5), ("0.25m", 15.0), (" 10s ", 10.0),
    ("1s1ms", 1.001),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


BAD_SYNTAX = 'expected e.g. "500ms", "15s" or "1m30s" (units: y, w, d, h, m, s, ms)'


@pytest.mark.parametrize(("text", "message"), [
    ("15", 'durations need a unit, e.g. "15s" (got "15")'),
    ("1.5", 'durations need a unit, e.g. "15s" (got "1.5")'),
    ("", 'empty duration: expected e.g. "15s"'),
    ("0s", 'duration must be greater than 0 (got "0s")'),
    ("-5s", f'invalid duration "-5s": {BAD_SYNTAX}'),
    ("5S", f'invalid duration "5S": {BAD_SYNTAX}'),
    ("10us", f'invalid duration "10us": {BAD_SYNTAX}'),
    ("1s1s", 'invalid duration "1s1s": units must go from largest to smallest, each at most once'),
    ("30s1m", 'invalid duration "30s1m": units must go from largest to smallest, each at most once'),
])
def test_parse_duration_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == message


@pytest.mark.parametrize(("value", "problem"), [
    ("15", 'durations need a unit, e.g. "15s" (got 15)'),
    ("2.5", 'durations need a unit, e.g. "15s" (got 2.5)'),
    ("true", 'expected a duration such as "15s", got a boolean'),
    ("[1s]", 'expected a duration such as "15s", got a list'),
])
def test_duration_values_in_yaml(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(f"defaults: {{timeout: {value}}}")
    assert (info.value.path, info.value.problem) == ("defaults.timeout", problem)


@pytest.mark.parametrize(("seconds", "text"), [
    (0.5, "500ms"), (15.0, "15s"), (90.0, "1m30s"), (7200.0, "2h"), (86400.0, "1d"),
    (90061.001, "1d1h1m1s1ms"), (0.0005, "0.0005s"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


@given(st.integers(min_value=1, max_value=400 * 86400 * 1000))
def test_format_duration_round_trips_whole_milliseconds(ms: int) -> None:
    assert parse_duration(format_duration(ms / 1000)) == pytest.approx(ms / 1000)


@pytest.mark.parametrize(("text", "size"), [
    ("0", 0), ("512", 512), ("512B", 512), ("1KB", 1024), ("1KiB", 1024), ("10MB", 10 * 2**20),
    ("2GiB", 2 * 2**30),
])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "1.5MB", "10 MB", "10mb", "-1", "MB"])
def test_parse_size_errors(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


# --- Packaging -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["exporter.checks", "exporter.config"])
def test_import_order_does_not_matter(first: str) -> None:
    """checks.py imports the model and the loader uses checks.py: neither import order may fail."""
    code = f"import {first}, exporter.checks, exporter.config; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parent.parent, timeout=30)
    assert out.stdout.strip() == "ok", out.stderr
