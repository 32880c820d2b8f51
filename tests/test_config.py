"""The configuration loader: what valid files turn into, and the exact message for each kind of mistake."""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

import exporter.config as config_pkg
from exporter import checks
from exporter.config import (
    ConfigError,
    default_region_name,
    dump_config,
    format_duration,
    load_config,
    load_config_text,
    parse_duration,
    parse_size,
)
from exporter.config import loader as loader_mod
from exporter.config.loader import parse_resolv_conf, system_resolvers
from exporter.config.model import Config, Defaults, Resolver
from tests.helpers.configfiles import blackbox_yml

TESTDATA = Path(__file__).parent / "testdata"


@pytest.fixture(autouse=True, params=sorted(loader_mod.YAML_LOADERS))
def yaml_loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with each YAML parser available (libyaml and pure Python): same results."""
    monkeypatch.setattr(loader_mod, "YAML_LOADER", loader_mod.YAML_LOADERS[request.param])
    return request.param


@pytest.fixture
def resolv_conf(tmp_path: Path) -> str:
    path = tmp_path / "resolv.conf"
    path.write_text("# written by a test\nsearch example.internal\nnameserver 127.0.0.53\noptions edns0\n")
    return str(path)


def load(name: str, resolv_conf: str, **kw) -> Config:
    return load_config(str(TESTDATA / name), default_region="test-1", resolv_conf=resolv_conf, **kw)


@pytest.fixture
def blackbox(tmp_path: Path) -> Path:
    """tests/testdata/blackbox.yml with the CA, certificate and token files it names present."""
    return blackbox_yml(tmp_path / "bb")


def load_blackbox(path: Path, resolv_conf: str) -> Config:
    return load_config(str(path), default_region="test-1", resolv_conf=resolv_conf)


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


def test_file_problems_have_no_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    with pytest.raises(ConfigError) as info:
        load_config(str(missing))
    assert info.value.path == ""
    assert str(info.value) == f"cannot read config file {missing}: No such file or directory"

    binary = tmp_path / "binary.yml"
    binary.write_bytes(b"modules: {}\n\xff\xfe")
    with pytest.raises(ConfigError, match=r"binary\.yml: not valid UTF-8 \(at byte 12\)$"):
        load_config(str(binary))

    with pytest.raises(ConfigError) as info:
        load_config_text("a: 1\n---\nb: 2\n")
    assert str(info.value) == ("<string>:2:1: invalid YAML: but found another document "
                               "(expected a single document in the stream)")


def test_absurdly_nested_yaml_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text("modules: " + "[" * 5000 + "]" * 5000)
    assert str(info.value) == "<string>: invalid YAML: nested too deeply"


def test_unknown_key_suggestion_and_allowed_list() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text("defaults: {intervall: 10s}")
    assert str(info.value) == ('defaults.intervall: unknown key "intervall"; did you mean "interval"? '
                               "(allowed: concurrency, interval, max_checks, timeout)")
    with pytest.raises(ConfigError) as info:
        load_config_text("defaults: {zzz: 1}")
    assert info.value.problem == 'unknown key "zzz" (allowed: concurrency, interval, max_checks, timeout)'


def test_duplicate_yaml_keys_are_found_at_any_depth() -> None:
    text = "modules:\n  web:\n    prober: http\n    http:\n      method: GET\n      method: POST\n"
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    assert info.value.path == "modules.web.http.method"
    assert info.value.problem == 'duplicate key "method" (line 6, first defined on line 5)'


# --- blackbox.yml ----------------------------------------------------------------------------------------


def test_blackbox_yml_loads_without_resolv_conf(tmp_path: Path, blackbox: Path) -> None:
    config = load_blackbox(blackbox, str(tmp_path / "missing-resolv.conf"))
    assert list(config.modules) == [
        "http_2xx", "http_post_2xx", "http_basic_auth_example", "http_bearer", "http_custom_ca",
        "http_via_proxy", "http_gzip", "tcp_connect", "tls_connect", "smtp_starttls", "irc_banner", "dns_udp",
        "dns_soa", "dns_tcp", "dns_over_tls",
    ]
    assert config.services == ()
    # No regions: section and no services: one local region, even without a usable resolv.conf.
    assert [(r.name, r.resolvers) for r in config.regions] == [("test-1", ())]
    assert all(name == m.name for name, m in config.modules.items())


def test_blackbox_http_modules(resolv_conf: str, blackbox: Path) -> None:
    modules = load_blackbox(blackbox, resolv_conf).modules
    files = blackbox.parent / "prober"
    m = modules["http_2xx"]
    assert (m.prober, m.timeout) == ("http", 5.0)
    h = m.http
    assert h.valid_http_versions == ("HTTP/1.1", "HTTP/2.0")
    assert h.valid_status_codes == ()
    assert h.headers == (
        ("Host", "www.example.org"), ("Accept-Language", "de-DE"), ("User-Agent", "probe/1.0"))
    assert h.fail_if_not_ssl and not h.fail_if_ssl
    assert h.fail_if_body_matches_regexp == (
        re.compile(b"Service Unavailable"), re.compile(b"(?i)maintenance mode"))
    assert h.fail_if_body_matches_regexp[1].search(b"site in MAINTENANCE MODE")
    assert h.fail_if_body_not_matches_regexp[0].pattern == b"</html>"
    (match,) = h.fail_if_header_matches
    assert (match.header, match.regexp.pattern, match.allow_missing) == ("X-Cache-Status", "^ERROR", True)
    (match,) = h.fail_if_header_not_matches
    assert match.regexp.search("max-age=31536000") and not match.allow_missing
    assert h.tls_config.min_version == "TLS12" and not h.tls_config.insecure_skip_verify
    assert (h.preferred_ip_protocol, h.ip_protocol_fallback) == ("ip6", False)
    assert h.follow_redirects

    post = modules["http_post_2xx"].http
    assert (post.method, post.body, post.valid_status_codes) == ("POST", '{"ping": true}', (200, 201, 202))
    assert post.preferred_ip_protocol == "ip4"  # our default, unlike blackbox's ip6

    auth = modules["http_basic_auth_example"].http.basic_auth
    assert (auth.username, auth.password, auth.password_file) == ("prober", "s3cr3t-pa55", None)

    bearer = modules["http_bearer"].http
    assert bearer.bearer_token_file == str(files / "token")
    assert bearer.follow_redirects is False  # from the deprecated no_follow_redirects: true

    tls = modules["http_custom_ca"].http.tls_config
    assert (tls.ca_file, tls.cert_file, tls.key_file, tls.server_name) == (
        str(files / "ca.pem"), str(files / "client.pem"), str(files / "client-key.pem"), "internal.example.org")

    assert modules["http_via_proxy"].http.proxy_url == "http://127.0.0.1:3128"
    gz = modules["http_gzip"].http
    assert (gz.compression, gz.body_size_limit) == ("gzip", 1024 * 1024)


def test_blackbox_tcp_modules(resolv_conf: str, blackbox: Path) -> None:
    modules = load_blackbox(blackbox, resolv_conf).modules
    assert modules["tcp_connect"].tcp.query_response == () and modules["tcp_connect"].timeout == 3.0
    tls = modules["tls_connect"].tcp
    assert tls.tls and tls.tls_config.server_name == "mail.example.org"

    smtp = modules["smtp_starttls"].tcp.query_response
    assert len(smtp) == 9
    assert smtp[0].expect.pattern == b"^220 ([^ ]+) ESMTP (.+)$"
    assert smtp[1].send == "EHLO probe.example.org\r" and smtp[1].expect is None
    assert [step.starttls for step in smtp].index(True) == 5

    irc = modules["irc_banner"].tcp
    assert irc.source_ip_address == "127.0.0.1"
    assert irc.query_response[2].expect.pattern == b"PING :([^ ]+)"
    assert irc.query_response[2].send == "PONG ${1}"


def test_blackbox_dns_modules(resolv_conf: str, blackbox: Path) -> None:
    modules = load_blackbox(blackbox, resolv_conf).modules
    d = modules["dns_udp"].dns
    assert (d.query_name, d.query_type, d.query_class) == ("www.example.org", "A", "IN")
    assert d.valid_rcodes == ("NOERROR",)
    assert (d.transport_protocol, d.recursion_desired) == ("udp", True)
    answer = d.validate_answer_rrs
    assert answer.fail_if_matches_regexp[0].pattern == r".*127\.0\.0\.1"
    assert answer.fail_if_all_match_regexp[0].search("a.\t60\tIN\tA\t10.1.2.3")
    assert answer.fail_if_not_matches_regexp[0].search("www.example.org.\t300\tIN\tA\t93.184.216.34")
    assert answer.fail_if_none_matches_regexp[0].pattern == r"93\.184\.216\.34"
    assert d.validate_authority_rrs.fail_if_matches_regexp[0].pattern == r".*127\.0\.0\.1"
    assert d.validate_additional_rrs.fail_if_not_matches_regexp == ()

    soa = modules["dns_soa"].dns
    assert (soa.query_type, soa.recursion_desired) == ("SOA", False)
    tcp = modules["dns_tcp"].dns
    assert (tcp.transport_protocol, tcp.query_class) == ("tcp", "CH")
    assert tcp.valid_rcodes == ("NOERROR", "NXDOMAIN")
    dot = modules["dns_over_tls"].dns
    assert dot.dns_over_tls and dot.transport_protocol == "tcp"  # implied by dns_over_tls
    assert dot.query_type == "AAAA"  # names are accepted in any case and stored canonically
    assert dot.tls_config.server_name == "dns.example.net"


def test_ignored_blackbox_keys_are_logged_at_debug(
        resolv_conf: str, caplog: pytest.LogCaptureFixture, blackbox: Path) -> None:
    with caplog.at_level(logging.DEBUG, logger="exporter.config.loader"):
        load_blackbox(blackbox, resolv_conf)
    ignored = sorted(r.getMessage().split(":")[0] for r in caplog.records)
    assert ignored == [
        "modules.http_2xx.http.enable_http2",
        "modules.http_via_proxy.http.skip_resolve_phase_with_proxy",
        "modules.irc_banner.tcp.query_response[2].labels",
    ]


# --- Valid files -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in TESTDATA.glob("valid-*.yml")))
def test_valid_files_load(name: str, resolv_conf: str) -> None:
    config = load(name, resolv_conf)
    raw = (TESTDATA / name).read_bytes()
    assert config.checksum == hashlib.sha256(raw).hexdigest()
    assert config.source == str(TESTDATA / name)
    checks.expand(config)  # the scheduler's view must be buildable from any valid config


def test_valid_full(tmp_path: Path) -> None:
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 127.0.0.53\nnameserver ::1\n")
    config = load("valid-full.yml", str(rc))
    assert (config.defaults.interval, config.defaults.timeout, config.defaults.concurrency) == (20.0, 8.0, 64)

    eu, us = config.regions
    assert (eu.name, eu.display_name, eu.latitude, eu.longitude) == ("eu-west", "Europe West", 53.3, -6.3)
    assert eu.resolvers == (
        Resolver("127.0.0.1:5353", "127.0.0.1", 5353),
        Resolver("system", "127.0.0.53", 53),
        Resolver("system#2", "::1", 53),
        Resolver("tls://127.0.0.2", "127.0.0.2", 853, tls=True),
        Resolver("[::1]:5300", "::1", 5300),
    )
    assert (us.name, us.resolvers, us.latitude) == ("us-east", (Resolver("127.0.0.3", "127.0.0.3"),), None)

    facebook, health = config.services
    assert (facebook.provider, health.provider) == ("meta", "resolver-health")  # provider defaults to name
    dns_check, soa, https = facebook.checks
    assert dns_check.module is config.modules["dns_a"]
    assert (dns_check.query_name, dns_check.interval, dns_check.timeout, dns_check.targets) == (
        "facebook.com", 30.0, 8.0, ())
    assert soa.targets == ("127.0.0.9", "tls://127.0.0.10:8853")
    assert (soa.regions, soa.query_name) == (("us-east",), None)
    assert soa.module.timeout == 2.0  # the module's own timeout stays on the module
    assert (https.interval, https.timeout) == (60.0, 15.0)

    control, smtp, v6 = health.checks
    assert control.control and not smtp.control
    assert (control.module.name, control.module.dns.query_type) == ("resolver-health/control", "NS")
    assert "resolver-health/control" not in config.modules
    assert (smtp.targets, smtp.interval, smtp.timeout) == (("mail.example.org:25",), 5.0, 5.0)  # capped
    assert v6.targets == ("[::1]:443", "127.0.0.1:443")

    expanded = checks.expand(config)
    # dns: 5+1 resolvers; soa: 2 servers in us-east; https: 2 targets x 2 regions;
    # control: 6 resolvers; smtp: 1 target x 2 regions; v6: 2 targets in eu-west.
    assert len(expanded) == 6 + 2 + 4 + 6 + 2 + 2
    soa_checks = [c for c in expanded if c.check == "soa"]
    assert {(c.region, c.resolver, c.query_name, c.timeout) for c in soa_checks} == {
        ("us-east", "127.0.0.9", "example.org", 2.0),
        ("us-east", "tls://127.0.0.10:8853", "example.org", 2.0),
    }


def test_unnamed_region_takes_the_local_name(resolv_conf: str) -> None:
    config = load("valid-unnamed-region.yml", resolv_conf)
    assert [r.name for r in config.regions] == ["test-1", "backup"]
    assert config.services[0].checks[0].regions == ("backup",)


def test_anchors_and_merge_keys(resolv_conf: str) -> None:
    modules = load("valid-anchors.yml", resolv_conf).modules
    assert (modules["base"].timeout, modules["slower"].timeout) == (3.0, 9.0)
    assert modules["slower"].prober == "http"


def test_empty_file_gives_defaults_and_the_implicit_region(resolv_conf: str) -> None:
    config = load("valid-empty.yml", resolv_conf)
    assert (config.defaults, config.modules, config.services) == (Config().defaults, {}, ())
    assert config.regions[0].name == "test-1"
    assert config.regions[0].resolvers == (Resolver("system", "127.0.0.53"),)


def test_null_values_mean_defaults() -> None:
    config = load_config_text("modules:\n  web:\n    prober: http\n    http:\n    timeout:\n",
                              resolv_conf="/nonexistent")
    assert config.modules["web"].timeout is None
    assert config.modules["web"].http.method == "GET"


def test_follow_redirects_and_its_deprecated_inverse_conflict() -> None:
    text = "modules:\n  w:\n    prober: http\n    http: {follow_redirects: true, no_follow_redirects: true}\n"
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    assert str(info.value) == ("modules.w.http.no_follow_redirects: set follow_redirects or the deprecated "
                               "no_follow_redirects, not both")


# --- Regions, resolv.conf and the implicit region --------------------------------------------------------


def test_parse_resolv_conf() -> None:
    text = """
# generated
; also a comment
search example.internal
nameserver 127.0.0.53
nameserver   ::1   # trailing words are ignored
nameserver dns.example.org
nameserver
options edns0 trust-ad
nameserver fe80::1%eth0
domain example.internal
"""
    assert parse_resolv_conf(text) == ("127.0.0.53", "::1", "fe80::1%eth0")
    assert parse_resolv_conf("#nameserver 10.0.0.1\n") == ()


def test_system_resolvers_are_named_system_then_numbered(tmp_path: Path) -> None:
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 2001:db8::1\n")
    assert [(r.name, r.host, r.port) for r in system_resolvers(str(rc))] == [
        ("system", "10.0.0.1", 53), ("system#2", "10.0.0.2", 53), ("system#3", "2001:db8::1", 53)]


def test_system_without_nameservers_names_the_region_path(tmp_path: Path) -> None:
    rc = tmp_path / "resolv.conf"
    rc.write_text("search example.internal\n")
    text = ("regions:\n  - {name: a, resolvers: ['127.0.0.1']}\n"
            "  - {name: b, resolvers: ['127.0.0.2', system]}\n")
    with pytest.raises(ConfigError) as info:
        load_config_text(text, resolv_conf=str(rc))
    assert str(info.value) == f'regions[1].resolvers[1]: cannot use "system": no nameserver in {rc}'


def test_implicit_region_with_services_needs_resolv_conf(tmp_path: Path) -> None:
    text = "services:\n  - name: a\n    checks: [{name: h, module: {prober: http}, target: 'http://127.0.0.1/'}]\n"
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError) as info:
        load_config_text(text, default_region="lab", resolv_conf=str(missing))
    assert str(info.value) == (
        'regions: not set, so checks run in the local region "lab" with the "system" resolver, which is '
        f"unusable: cannot read {missing}: No such file or directory")


def test_default_region_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "Probe_01.EU-West.example.com")
    assert default_region_name() == "probe-01"

    monkeypatch.setattr(socket, "gethostname", lambda: "")
    assert default_region_name() == "local"

    def broken() -> str:
        raise OSError("no hostname")

    monkeypatch.setattr(socket, "gethostname", broken)
    assert default_region_name() == "local"


def test_implicit_region_uses_the_host_name_without_default_region(
        monkeypatch: pytest.MonkeyPatch, resolv_conf: str) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "edge-7.example.net")
    assert load_config_text("", resolv_conf=resolv_conf).regions[0].name == "edge-7"


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


# --- Dumping ---------------------------------------------------------------------------------------------

SECRETS_CONFIG = """
regions: [{name: lab, resolvers: ["127.0.0.1"]}]
modules:
  basic:
    prober: http
    http:
      basic_auth: {username: alice, password: hunter2-basic}
      headers: {Authorization: "Bearer hdr-token-1", X-Auth-Token: hdr-token-2, Accept: "text/html"}
      proxy_url: "http://proxyuser:proxy-pass-3@127.0.0.1:3128/"
  bearer:
    prober: http
    http: {bearer_token: bearer-tok-4}
services:
  - name: s
    checks:
      - {name: c, module: basic, target: "https://bob@127.0.0.1/"}
"""


def test_dump_masks_secrets() -> None:
    config = load_config_text(SECRETS_CONFIG)
    text = dump_config(config)
    secrets = ("hunter2-basic", "hdr-token-1", "hdr-token-2", "proxy-pass-3", "bearer-tok-4")
    assert [s for s in secrets if s in text] == []
    doc = yaml.safe_load(text)
    http = doc["modules"]["basic"]["http"]
    assert http["basic_auth"] == {"username": "alice", "password": "<secret>"}
    assert http["headers"] == {"Authorization": "<secret>", "X-Auth-Token": "<secret>", "Accept": "text/html"}
    assert http["proxy_url"] == "http://proxyuser:<secret>@127.0.0.1:3128/"
    assert doc["modules"]["bearer"]["http"]["bearer_token"] == "<secret>"
    assert doc["services"][0]["checks"][0]["targets"] == ["https://bob@127.0.0.1/"]
    # The loaded config itself is untouched: probes still need the real values.
    assert config.modules["basic"].http.basic_auth.password == "hunter2-basic"


def test_error_messages_mask_url_passwords() -> None:
    text = ("regions: [{name: lab, resolvers: ['127.0.0.1']}]\n"
            "services: [{name: s, checks: [{name: c, module: {prober: http}, target: 'https://u:pw9@[::1/'}]}]\n")
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    assert info.value.path == "services[0].checks[0].target"
    assert info.value.problem.startswith('invalid http target "https://u:<secret>@[::1/": expected')


def test_dump_round_trips(tmp_path: Path) -> None:
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 127.0.0.53\nnameserver 127.0.0.54\n")
    config = load("valid-full.yml", str(rc))
    text = dump_config(config)
    assert text.startswith(f"# Effective configuration from {config.source} (sha256 {config.checksum})\n")
    assert "# Region eu-west: system = 127.0.0.53:53, system#2 = 127.0.0.54:53\n" in text
    again = load_config_text(text, source=config.source, resolv_conf=str(rc))
    assert again.regions == config.regions
    assert again.modules == config.modules
    assert again.services == config.services
    assert again.defaults == config.defaults


def test_dump_round_trips_blackbox_modules(resolv_conf: str, blackbox: Path) -> None:
    config = load_blackbox(blackbox, resolv_conf)
    again = load_config_text(dump_config(config), resolv_conf=resolv_conf)
    for name, module in config.modules.items():
        if name != "http_basic_auth_example":  # its password is masked
            assert again.modules[name] == module, name


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


def test_body_size_limit_as_integer_and_negative() -> None:
    base = "modules:\n  w:\n    prober: http\n    http: {body_size_limit: %s}\n"
    assert load_config_text(base % "2048").modules["w"].http.body_size_limit == 2048
    with pytest.raises(ConfigError) as info:
        load_config_text(base % "-1")
    assert str(info.value) == "modules.w.http.body_size_limit: must not be negative, got -1"


# --- Packaging -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["exporter.checks", "exporter.config"])
def test_import_order_does_not_matter(first: str) -> None:
    """checks.py imports the model and the loader uses checks.py: neither import order may fail."""
    code = f"import {first}, exporter.checks, exporter.config; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parent.parent, timeout=30)
    assert out.stdout.strip() == "ok", out.stderr
