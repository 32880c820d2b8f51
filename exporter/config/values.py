"""Typed values read from parsed YAML: each parser takes (value, YAML path) and raises ConfigError there.

Every section of the config (and the ``--web.config.file``) is read through :class:`Section`: it knows its
allowed keys, so an unknown key fails at once with the allowed list and the closest match, and it hands
out values converted by the parsers below, each with its own path for the message.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from exporter.config.durations import format_duration, parse_duration, parse_size
from exporter.config.errors import ConfigError, child_path, cut, expected_error, index_path, kind_of, quoted, short

log = logging.getLogger(__name__)

T = TypeVar("T")
Parser = Callable[[Any, str], T]


MAX_DURATION = 10 * 365 * 86400.0  # seconds; anything longer is a typo, and infinity breaks the scheduler


def as_str(v: Any, p: str) -> str:
    if isinstance(v, str):
        return v
    hint = " (put it in quotes)" if isinstance(v, (bool, int, float)) else ""
    raise ConfigError(p, f"expected a string, got {kind_of(v)}{hint}")


def as_nonempty(v: Any, p: str) -> str:
    s = as_str(v, p)
    if not s.strip():
        raise ConfigError(p, "must not be empty")
    return s


def as_name(v: Any, p: str) -> str:
    s = as_nonempty(v, p)
    if s != s.strip():
        raise ConfigError(p, f'"{s}" must not start or end with whitespace')
    return s


def as_bool(v: Any, p: str) -> bool:
    if isinstance(v, bool):
        return v
    raise expected_error(v, p, "true or false")


def as_int(v: Any, p: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    raise expected_error(v, p, "an integer")


def as_positive_int(v: Any, p: str) -> int:
    n = as_int(v, p)
    if n < 1:
        raise ConfigError(p, f"must be at least 1, got {n}")
    return n


def as_number(v: Any, p: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    raise expected_error(v, p, "a number")


def as_duration(v: Any, p: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        raise ConfigError(p, f'durations need a unit, e.g. "15s" (got {v})')
    if not isinstance(v, str):
        raise expected_error(v, p, 'a duration such as "15s"')
    try:
        seconds = parse_duration(v)
    except ValueError as e:
        raise ConfigError(p, str(e)) from None
    if not seconds <= MAX_DURATION:  # also catches inf: "9999...9s" overflows a float
        raise ConfigError(p, f'duration "{cut(v)}" is longer than the maximum of {format_duration(MAX_DURATION)}')
    return seconds


def as_size(v: Any, p: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 0:
            raise ConfigError(p, f"must not be negative, got {v}")
        return v
    if not isinstance(v, str):
        raise expected_error(v, p, 'a size such as "10MB" or a number of bytes')
    try:
        return parse_size(v)
    except ValueError as e:
        raise ConfigError(p, str(e)) from None


def as_items(v: Any, p: str) -> list[Any]:
    if isinstance(v, list):
        return v
    raise expected_error(v, p, "a list")


def list_of(item: Parser[T]) -> Parser[tuple[T, ...]]:
    def parse(v: Any, p: str) -> tuple[T, ...]:
        return tuple(item(x, index_path(p, i)) for i, x in enumerate(as_items(v, p)))

    return parse


def choice(options: tuple[str, ...]) -> Parser[str]:
    def parse(v: Any, p: str) -> str:
        s = as_str(v, p)
        if s not in options:
            raise ConfigError(p, f'invalid value "{s}" (allowed: {quoted(options)})')
        return s

    return parse


ip_protocol = choice(("ip4", "ip6"))


def as_regex(v: Any, p: str) -> re.Pattern[str]:
    s = as_str(v, p)
    try:
        return re.compile(s)
    except re.error as e:
        raise ConfigError(p, f'invalid regular expression "{s}": {e}') from None


def as_bytes_regex(v: Any, p: str) -> re.Pattern[bytes]:
    s = as_str(v, p)
    try:
        return re.compile(s.encode("utf-8"))
    except re.error as e:
        raise ConfigError(p, f'invalid regular expression "{s}": {e}') from None


def as_ip(v: Any, p: str) -> str:
    s = as_str(v, p)
    try:
        ipaddress.ip_address(s)
    except ValueError:
        raise ConfigError(p, f'invalid IP address "{s}"') from None
    return s


def _unknown_key(key: str, allowed: Iterable[str]) -> str:
    allowed = sorted(allowed)
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f'; did you mean "{close[0]}"?' if close else ""
    return f'unknown key "{key}"{hint} (allowed: {", ".join(allowed)})'


class Section:
    """One YAML mapping being read: keys checked up front, then typed values handed out with their paths.

    ``ignored`` are known blackbox keys accepted without effect; ``unsupported`` are known blackbox keys
    refused with a message saying so rather than "unknown key".
    """

    def __init__(self, raw: Any, path: str, keys: Iterable[str], *,
                 ignored: Iterable[str] = (), unsupported: Iterable[str] = ()) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise expected_error(raw, path, "a mapping")
        self.raw: dict[str, Any] = raw
        self.path = path
        keys = tuple(keys)
        for key in raw:
            if not isinstance(key, str):
                where = "" if path else "top-level "  # the root has no path of its own to name
                raise ConfigError(path, f"{where}keys must be strings, got {kind_of(key)} ({short(key)})")
            if key in keys:
                continue
            if key in unsupported:
                raise ConfigError(self.path_of(key), f'blackbox_exporter option "{key}" '
                                                     "is not supported by outage-exporter")
            if key not in ignored:
                raise ConfigError(self.path_of(key), _unknown_key(key, keys))
            log.debug("%s: blackbox_exporter option accepted and ignored", self.path_of(key))

    def path_of(self, key: str) -> str:
        return child_path(self.path, key)

    def has(self, key: str) -> bool:
        """Whether ``key`` has a value: ``key:`` with nothing after it means "use the default"."""
        return self.raw.get(key) is not None

    def get(self, key: str, parse: Parser[T], default: T) -> T:
        value = self.raw.get(key)
        return default if value is None else parse(value, self.path_of(key))

    def require(self, key: str, parse: Parser[T]) -> T:
        if not self.has(key):
            raise ConfigError(self.path, f'missing required key "{key}"')
        return parse(self.raw[key], self.path_of(key))


class Names:
    """Rejects a name already used in the same scope, pointing at its first use."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.first: dict[str, str] = {}

    def add(self, name: str, path: str) -> None:
        if name in self.first:
            raise ConfigError(path, f'duplicate {self.what} "{name}" (already used at {self.first[name]})')
        self.first[name] = path


def timeout_within(s: Section, interval: float, default: float) -> float:
    """An explicit timeout must fit in the interval; an inherited one is capped at it."""
    if not s.has("timeout"):
        return min(default, interval)
    timeout = s.get("timeout", as_duration, default)
    if timeout > interval:
        raise ConfigError(s.path_of("timeout"), f"timeout ({format_duration(timeout)}) must not be longer "
                                                f"than the interval ({format_duration(interval)})")
    return timeout


def unique(v: Any, p: str, item: Parser[T], what: str, key: Callable[[T], str] = str) -> tuple[T, ...]:
    """A list whose items must differ by ``key`` (a duplicate points at the first use)."""
    values = list_of(item)(v, p)
    seen = Names(what)
    for i, value in enumerate(values):
        seen.add(key(value), index_path(p, i))
    return values


def nonempty_unique(v: Any, p: str, item: Parser[T], what: str, key: Callable[[T], str] = str) -> tuple[T, ...]:
    values = unique(v, p, item, what, key)
    if not values:
        raise ConfigError(p, "must not be empty (leave it out for the default)")
    return values


def choices(options: tuple[str, ...], what: str) -> Parser[tuple[str, ...]]:
    """A non-empty list of distinct values from ``options``."""
    one = choice(options)

    def parse(v: Any, p: str) -> tuple[str, ...]:
        return nonempty_unique(v, p, one, what)

    return parse
