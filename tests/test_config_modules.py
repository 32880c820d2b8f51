"""Modules in blackbox.yml syntax: what each prober's keys turn into, and the keys read or refused."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from exporter.config import ConfigError, load_config, load_config_text
from exporter.config.model import Config
from tests.helpers.configfiles import blackbox_yml

pytestmark = pytest.mark.usefixtures("yaml_loader")


@pytest.fixture
def blackbox(tmp_path: Path) -> Path:
    """tests/testdata/blackbox.yml with the CA, certificate and token files it names present."""
    return blackbox_yml(tmp_path / "bb")


def load_blackbox(path: Path, resolv_conf: str) -> Config:
    return load_config(str(path), default_region="test-1", resolv_conf=resolv_conf)


# --- blackbox.yml ---------------------------------------------------------------------------------------


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
    with caplog.at_level(logging.DEBUG, logger="exporter.config.values"):
        load_blackbox(blackbox, resolv_conf)
    ignored = sorted(r.getMessage().split(":")[0] for r in caplog.records)
    assert ignored == [
        "modules.http_2xx.http.enable_http2",
        "modules.http_via_proxy.http.skip_resolve_phase_with_proxy",
        "modules.irc_banner.tcp.query_response[2].labels",
    ]


# --- Module keys ----------------------------------------------------------------------------------------


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


def test_body_size_limit_as_integer_and_negative() -> None:
    base = "modules:\n  w:\n    prober: http\n    http: {body_size_limit: %s}\n"
    assert load_config_text(base % "2048").modules["w"].http.body_size_limit == 2048
    with pytest.raises(ConfigError) as info:
        load_config_text(base % "-1")
    assert str(info.value) == "modules.w.http.body_size_limit: must not be negative, got -1"
