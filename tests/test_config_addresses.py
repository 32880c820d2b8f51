"""Addresses written in a config: DNS servers (the form every resolver and dns target takes) and http URLs."""

from __future__ import annotations

import pytest

from exporter.config.addresses import is_http_url, join_host_port, parse_dns_server, parse_dns_server_or_host
from exporter.config.model import Resolver


@pytest.mark.parametrize(("text", "host", "port", "tls"), [
    ("127.0.0.1", "127.0.0.1", 53, False),
    (" 127.0.0.1:5353 ", "127.0.0.1", 5353, False),
    ("::1", "::1", 53, False),
    ("[::1]:5353", "::1", 5353, False),
    ("tls://127.0.0.1", "127.0.0.1", 853, True),
    ("tls://[::1]:8853", "::1", 8853, True),
])
def test_dns_server_forms(text: str, host: str, port: int, tls: bool) -> None:
    assert parse_dns_server(text) == Resolver(name=text.strip(), host=host, port=port, tls=tls)


@pytest.mark.parametrize(("text", "message"), [
    ("https://127.0.0.1", "unsupported resolver scheme in 'https://127.0.0.1' (use ip, ip:port or tls://ip[:port])"),
    ("[::1", "invalid resolver address '[::1': missing ']'"),
    ("[::1]x", "invalid resolver address '[::1]x'"),
    ("127.0.0.1:0", "invalid port in resolver address '127.0.0.1:0'"),
    ("127.0.0.1:dns", "invalid port in resolver address '127.0.0.1:dns'"),
    ("dns.example.net", "invalid resolver address 'dns.example.net': expected an IP address, not a hostname"),
    ("system", "invalid resolver address 'system': expected an IP address, not a hostname"),
])
def test_dns_server_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_dns_server(text)
    assert str(info.value) == message


def test_a_host_name_is_kept_for_the_prober_when_allowed() -> None:
    assert parse_dns_server_or_host("ns1.example.net") == Resolver(name="ns1.example.net", host="ns1.example.net",
                                                                   port=53)
    assert parse_dns_server_or_host("ns1.example.net:5353").port == 5353
    assert parse_dns_server_or_host("127.0.0.1:5353") == parse_dns_server("127.0.0.1:5353")


def test_join_host_port_brackets_ipv6() -> None:
    assert join_host_port("192.0.2.1", 53) == "192.0.2.1:53"
    assert join_host_port("2001:db8::1", 53) == "[2001:db8::1]:53"


@pytest.mark.parametrize(("text", "ok"), [
    ("http://127.0.0.1/", True),
    ("https://[::1]:8443/x", True),
    ("ftp://127.0.0.1/", False),
    ("http:///path", False),
    ("http://127.0.0.1:99999/", False),
    ("http://exa mple.com/", False),
])
def test_http_urls(text: str, ok: bool) -> None:
    assert is_http_url(text) is ok
