"""The typed value parsers every config section reads through (exporter/config/values.py).

Each error is checked as the user reads it: the YAML path, then the problem.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from exporter.config.errors import ConfigError
from exporter.config.values import (
    Names,
    Parser,
    Section,
    as_bool,
    as_bytes_regex,
    as_duration,
    as_int,
    as_ip,
    as_name,
    as_nonempty,
    as_number,
    as_positive_int,
    as_regex,
    as_size,
    as_str,
    choice,
    choices,
    list_of,
    nonempty_unique,
    timeout_within,
    unique,
)

TRANSPORTS = choices(("udp", "tcp"), "transport")


def error(parse: Parser[Any], value: Any, path: str = "p") -> str:
    with pytest.raises(ConfigError) as info:
        parse(value, path)
    assert info.value.path == path or info.value.path.startswith(path)
    return str(info.value)


def unique_names(v: Any, p: str) -> tuple[str, ...]:
    return unique(v, p, as_name, "name")


def nonempty_names(v: Any, p: str) -> tuple[str, ...]:
    return nonempty_unique(v, p, as_name, "name")


# --- single values -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("parse", "value", "expected"), [
    (as_duration, "15s", 15.0), (as_duration, "1m30s", 90.0), (as_duration, "500ms", 0.5),
    (as_str, "", ""), (as_nonempty, " x ", " x "), (as_name, "a b", "a b"),
    (as_bool, False, False), (as_int, -3, -3), (as_positive_int, 1, 1), (as_number, 2, 2.0),
    (as_number, 0.25, 0.25), (as_size, "10MB", 10 * 1024**2), (as_size, 0, 0), (as_ip, "::1", "::1"),
    (choice(("a", "b")), "b", "b"), (list_of(as_int), [1, 2], (1, 2)), (list_of(as_int), [], ()),
    (TRANSPORTS, ["tcp", "udp"], ("tcp", "udp")),
])
def test_valid_values(parse: Parser[Any], value: Any, expected: Any) -> None:
    assert parse(value, "p") == expected


def test_patterns_compile_to_text_or_bytes() -> None:
    assert as_regex("^ok$", "p").match("ok")
    assert as_bytes_regex("caf\u00e9", "p").pattern == "caf\u00e9".encode()


@pytest.mark.parametrize(("value", "path", "message"), [
    (15, "defaults.interval", 'defaults.interval: durations need a unit, e.g. "15s" (got 15)'),
    (1.5, "p", 'p: durations need a unit, e.g. "15s" (got 1.5)'),
    ("15", "p", 'p: durations need a unit, e.g. "15s" (got "15")'),
    ("abc", "p", 'p: invalid duration "abc": expected e.g. "500ms", "15s" or "1m30s" (units: y, w, d, h, m, s, ms)'),
    ("-1s", "p", 'p: invalid duration "-1s": expected e.g. "500ms", "15s" or "1m30s" (units: y, w, d, h, m, s, ms)'),
    ("3651d", "p", 'p: duration "3651d" is longer than the maximum of 10y'),
    ("9" * 400 + "s", "p", f'p: duration "{"9" * 60}..." is longer than the maximum of 10y'),
    (True, "p", 'p: expected a duration such as "15s", got a boolean'),
    ([1], "p", 'p: expected a duration such as "15s", got a list'),
])
def test_duration_errors(value: Any, path: str, message: str) -> None:
    assert error(as_duration, value, path) == message


@pytest.mark.parametrize(("parse", "value", "message"), [
    (as_str, 1, "p: expected a string, got an integer (put it in quotes)"),
    (as_str, True, "p: expected a string, got a boolean (put it in quotes)"),
    (as_str, 1.5, "p: expected a string, got a number (put it in quotes)"),
    (as_str, None, "p: expected a string, got null"),
    (as_str, [1], "p: expected a string, got a list"),
    (as_nonempty, " \t", "p: must not be empty"),
    (as_name, " a", 'p: " a" must not start or end with whitespace'),
    (as_name, "", "p: must not be empty"),
    (as_bool, "yes", "p: expected true or false, got a string"),
    (as_int, 1.5, "p: expected an integer, got a number"),
    (as_int, True, "p: expected an integer, got a boolean"),
    (as_positive_int, 0, "p: must be at least 1, got 0"),
    (as_number, "1", "p: expected a number, got a string"),
    (as_number, False, "p: expected a number, got a boolean"),
    (as_size, -1, "p: must not be negative, got -1"),
    (as_size, 1.5, 'p: expected a size such as "10MB" or a number of bytes, got a number'),
    (as_size, "ten", 'p: invalid size "ten": expected bytes or a number with a unit (B, KB, KiB, MB, MiB, GB, '
                     'GiB, ...), e.g. "10MB"'),
    (as_regex, "(", 'p: invalid regular expression "(": missing ), unterminated subpattern at position 0'),
    (as_bytes_regex, "(", 'p: invalid regular expression "(": missing ), unterminated subpattern at position 0'),
    (as_ip, "1.2.3", 'p: invalid IP address "1.2.3"'),
    (as_ip, 1, "p: expected a string, got an integer (put it in quotes)"),
    (choice(("a", "b")), "c", 'p: invalid value "c" (allowed: "a", "b")'),
])
def test_value_errors(parse: Parser[Any], value: Any, message: str) -> None:
    assert error(parse, value) == message


# --- lists -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("parse", "value", "message"), [
    (list_of(as_int), "a", "p: expected a list, got a string"),
    (list_of(as_int), {"a": 1}, "p: expected a list, got a mapping"),
    (list_of(as_int), [1, "a"], "p[1]: expected an integer, got a string"),
    (unique_names, ["a", "b", "a"], 'p[2]: duplicate name "a" (already used at p[0])'),
    (unique_names, ["a", " b"], 'p[1]: " b" must not start or end with whitespace'),
    (nonempty_names, [], "p: must not be empty (leave it out for the default)"),
    (TRANSPORTS, ["udp", "udp"], 'p[1]: duplicate transport "udp" (already used at p[0])'),
    (TRANSPORTS, [], "p: must not be empty (leave it out for the default)"),
    (TRANSPORTS, ["udp", "tls"], 'p[1]: invalid value "tls" (allowed: "udp", "tcp")'),
    (TRANSPORTS, "udp", "p: expected a list, got a string"),
])
def test_list_errors_name_the_item(parse: Parser[Any], value: Any, message: str) -> None:
    assert error(parse, value) == message


def test_unique_compares_by_the_given_key() -> None:
    assert unique(["A", "b"], "p", as_str, "zone") == ("A", "b")
    with pytest.raises(ConfigError) as info:
        unique(["A", "a"], "p", as_str, "zone", str.lower)
    assert str(info.value) == 'p[1]: duplicate zone "a" (already used at p[0])'
    assert unique([], "p", as_str, "zone") == ()


# --- sections ----------------------------------------------------------------------------------------------

def section_error(raw: Any, path: str, keys: tuple[str, ...] = ("interval", "timeout"), **kinds: Any) -> str:
    with pytest.raises(ConfigError) as info:
        Section(raw, path, keys, **kinds)
    return str(info.value)


@pytest.mark.parametrize(("raw", "path", "message"), [
    ({"timout": "1s"}, "defaults", 'defaults.timout: unknown key "timout"; did you mean "timeout"? '
                                   "(allowed: interval, timeout)"),
    ({"zzz": 1}, "services[0].checks[2]", 'services[0].checks[2].zzz: unknown key "zzz" (allowed: interval, timeout)'),
    ({"a.b": 1}, "modules.m", 'modules.m["a.b"]: unknown key "a.b" (allowed: interval, timeout)'),
    ({1: 1}, "defaults", "defaults: keys must be strings, got an integer (1)"),
    ({1: 1}, "", "top-level keys must be strings, got an integer (1)"),
    ([1], "defaults", "defaults: expected a mapping, got a list"),
    ("x", "regions[0]", "regions[0]: expected a mapping, got a string"),
])
def test_a_section_refuses_unknown_keys_and_non_mappings(raw: Any, path: str, message: str) -> None:
    assert section_error(raw, path) == message


def test_known_blackbox_keys_are_refused_or_ignored_by_name(caplog: pytest.LogCaptureFixture) -> None:
    assert section_error({"preferred_ip_protocol": "ip4"}, "modules.m.dns", unsupported=("preferred_ip_protocol",)) \
        == 'modules.m.dns.preferred_ip_protocol: blackbox_exporter option "preferred_ip_protocol" is not supported ' \
           "by outage-exporter"
    with caplog.at_level(logging.DEBUG, logger="exporter.config.values"):
        s = Section({"interval": "1s", "headers": {}}, "modules.m.http", ("interval",), ignored=("headers",))
    assert s.get("interval", as_duration, 0.0) == 1.0
    assert "modules.m.http.headers: blackbox_exporter option accepted and ignored" in caplog.messages


def test_an_empty_key_means_the_default_and_values_carry_their_own_path() -> None:
    assert Section(None, "defaults", ("interval",)).get("interval", as_duration, 30.0) == 30.0
    s = Section({"interval": None, "timeout": 5}, "services[0].checks[1]", ("interval", "timeout", "target"))
    assert not s.has("interval") and s.get("interval", as_duration, 30.0) == 30.0
    assert s.has("timeout") and not s.has("target")
    with pytest.raises(ConfigError) as info:
        s.get("timeout", as_duration, 1.0)
    assert str(info.value) == 'services[0].checks[1].timeout: durations need a unit, e.g. "15s" (got 5)'
    with pytest.raises(ConfigError) as info:
        s.require("interval", as_duration)
    assert str(info.value) == 'services[0].checks[1]: missing required key "interval"'
    assert s.path_of("target") == "services[0].checks[1].target"


def test_names_point_at_the_first_use() -> None:
    names = Names("service")
    names.add("a", "services[0]")
    names.add("b", "services[1]")
    with pytest.raises(ConfigError) as info:
        names.add("a", "services[3]")
    assert str(info.value) == 'services[3]: duplicate service "a" (already used at services[0])'


# --- timeouts ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "interval", "expected"), [
    ({}, 10.0, 5.0),  # inherited: the default
    ({}, 2.0, 2.0),  # inherited and longer than the interval: capped at it
    ({"timeout": None}, 1.0, 1.0),  # empty is inherited
    ({"timeout": "3s"}, 10.0, 3.0),
    ({"timeout": "10s"}, 10.0, 10.0),  # as long as the interval is fine
])
def test_a_timeout_fits_in_its_interval(raw: dict[str, Any], interval: float, expected: float) -> None:
    assert timeout_within(Section(raw, "services[0].checks[0]", ("timeout",)), interval, 5.0) == expected


def test_an_explicit_timeout_longer_than_the_interval_is_an_error() -> None:
    s = Section({"timeout": "1m30s"}, "services[0].checks[0]", ("timeout",))
    with pytest.raises(ConfigError) as info:
        timeout_within(s, 60.0, 5.0)
    assert str(info.value) == ("services[0].checks[0].timeout: timeout (1m30s) must not be longer than the "
                               "interval (1m)")
