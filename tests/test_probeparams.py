"""exporter.web.probeparams: /probe's parameters checked before anything is looked up or probed, each
problem one line naming the parameter."""

from __future__ import annotations

from multidict import MultiDict

from exporter.web.probeparams import host_problem, hostname_problem, query_problem, target_problem
from tests.helpers.factories import make_check


def test_a_parameter_is_given_once_short_and_without_control_characters() -> None:
    assert query_problem(MultiDict(target="127.0.0.1:80", module="http_2xx", debug="true", other="x" * 9999)) is None
    assert query_problem(MultiDict([("target", "a"), ("target", "b")])) == (
        'parameter "target" is given 2 times; give it once')
    assert query_problem(MultiDict(module="m" * 129)) == (
        'parameter "module" is 129 characters long; at most 128 are accepted')
    assert query_problem(MultiDict(hostname="shop.test\r\nX-Forged: 1")) == (
        'parameter "hostname" contains the control character U+000D')
    assert query_problem(MultiDict(debug="yes")) == 'parameter "debug" must be true or false'


def test_a_hostname_is_a_host_name_or_address_with_an_optional_port() -> None:
    for good in ("shop.test", "shop.test:8443", "127.0.0.1", "[::1]:443", "[::1]", "bücher.test"):
        assert hostname_problem(good) is None, good
    assert hostname_problem("shop.test:0") == "has an invalid port: 'shop.test:0'"
    assert hostname_problem("[shop.test]") == "is not a host name or address: '[shop.test]'"
    assert hostname_problem("a..test") == "is not a host name or address (empty label): 'a..test'"
    assert query_problem(MultiDict(hostname="-bad.test")) == (
        "parameter \"hostname\" is not a host name or address (invalid label '-bad'): '-bad.test'")


def test_names_dns_and_tls_cannot_carry_are_refused() -> None:
    assert host_problem("x" * 63 + ".test") is None
    assert host_problem("x" * 64 + ".test") == f"invalid label {'x' * 64!r}"
    assert host_problem(".".join(["abcdefghi"] * 26)) == "name longer than 253 characters"
    assert host_problem(".") == "empty name"


def test_an_ad_hoc_target_needs_a_valid_host_and_port() -> None:
    assert target_problem(make_check(target="http://127.0.0.1:8080/")) is None
    assert target_problem(make_check(target="http://bad_label-.test/")) == "invalid host: invalid label 'bad_label-'"
    assert target_problem(make_check(prober="tcp", target="127.0.0.1")) == "not host:port and a valid port"
