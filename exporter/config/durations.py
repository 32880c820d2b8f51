"""Durations and byte sizes as written in configuration files.

Durations follow Prometheus: a sequence of ``<number><unit>`` parts, largest unit first, each unit at
most once (``500ms``, ``15s``, ``1m30s``, ``2h``, ``1d``). Decimals are accepted (``1.5s``) because Go's
own duration syntax allows them and blackbox.yml files in the wild use them. A bare number is refused:
"15" could mean seconds or milliseconds, and guessing wrong turns a timeout into a hang.

Sizes follow blackbox_exporter's ``body_size_limit`` (kingpin's base-2 units): ``KB`` and ``KiB`` both
mean 1024 bytes, so a limit copied from a blackbox.yml means the same number of bytes here.
"""

from __future__ import annotations

import re

# Seconds per unit, largest first: the order a duration's parts must follow.
_DURATION_UNITS: dict[str, float] = {
    "y": 365 * 86400.0,
    "w": 7 * 86400.0,
    "d": 86400.0,
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 0.001,
}
_UNIT_RANK = {unit: rank for rank, unit in enumerate(_DURATION_UNITS)}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|y|w|d|h|m|s)")
_BARE_NUMBER = re.compile(r"[+-]?\d+(?:\.\d*)?")
_UNIT_LIST = ", ".join(_DURATION_UNITS)

_SIZE = re.compile(r"(\d+)(B|[KMGTPE]i?B)?")
_SIZE_POWERS = {p: 1024 ** (i + 1) for i, p in enumerate("KMGTPE")}


def parse_duration(text: str) -> float:
    """Seconds in a duration string such as ``"1m30s"``; raise ValueError with a message for users."""
    s = text.strip()
    if _BARE_NUMBER.fullmatch(s):
        raise ValueError(f'durations need a unit, e.g. "15s" (got "{text}")')
    total, pos, last_rank = 0.0, 0, -1
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise ValueError(f'invalid duration "{text}": expected e.g. "500ms", "15s" or "1m30s" '
                             f"(units: {_UNIT_LIST})")
        rank = _UNIT_RANK[m.group(2)]
        if rank <= last_rank:
            raise ValueError(f'invalid duration "{text}": units must go from largest to smallest, '
                             "each at most once")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos, last_rank = m.end(), rank
    if not s:
        raise ValueError('empty duration: expected e.g. "15s"')
    if total <= 0:
        raise ValueError(f'duration must be greater than 0 (got "{text}")')
    return total


def format_duration(seconds: float) -> str:
    """The shortest string :func:`parse_duration` reads back as ``seconds`` (``90.0`` -> ``"1m30s"``)."""
    ms = round(seconds * 1000)
    if ms <= 0 or abs(ms / 1000 - seconds) > 1e-9:
        return f"{seconds!r}s"  # not a whole number of milliseconds: keep full precision
    parts = []
    for unit, size in _DURATION_UNITS.items():
        unit_ms = round(size * 1000)
        count, ms = divmod(ms, unit_ms)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_size(text: str) -> int:
    """Bytes in a size such as ``"10MB"``, ``"1KiB"`` or ``"512"`` (base 2: ``KB`` == ``KiB`` == 1024)."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f'invalid size "{text}": expected bytes or a number with a unit '
                         '(B, KB, KiB, MB, MiB, GB, GiB, ...), e.g. "10MB"')
    unit = m.group(2) or "B"
    return int(m.group(1)) * (1 if unit == "B" else _SIZE_POWERS[unit[0]])
