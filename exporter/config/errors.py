"""The one config error type and the one way every part of the config names a place in the file.

A problem is located by its YAML path (``services[2].checks[0].module``), built with :func:`child_path` and
:func:`index_path` so every message spells paths alike. Values quoted in messages are cut short and have
URL passwords masked: a message must stay one readable line and never leak a secret.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

SECRET = "<secret>"


_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*):[^/?#]*@")  # scheme://user:password@


class ConfigError(Exception):
    """A configuration problem, located by its YAML path (``""`` for problems with the file itself)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def child_path(path: str, key: str) -> str:
    if not _PLAIN_KEY.fullmatch(key):
        return f"{path}[{json.dumps(key)}]"
    return f"{path}.{key}" if path else key


def index_path(path: str, i: int) -> str:
    return f"{path}[{i}]"


def kind_of(value: object) -> str:
    if value is None:
        return "null"
    for t, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                    (list, "a list"), (dict, "a mapping")):
        if isinstance(value, t):
            return name
    return f"a {type(value).__name__}"


def expected_error(value: object, path: str, what: str) -> ConfigError:
    return ConfigError(path, f"expected {what}, got {kind_of(value)}")


def quoted(options: Iterable[str]) -> str:
    return ", ".join(f'"{o}"' for o in options)


def cut(text: str, limit: int = 60) -> str:
    """A value quoted in a message, cut short: the message must stay one readable line."""
    return text if len(text) <= limit else text[:limit] + "..."


def short(value: object) -> str:
    """``repr`` for messages, cut short: a key may be a huge (aliased) structure."""
    return cut(repr(value))


def mask_url(url: str) -> str:
    """``url`` with the password of its userinfo (``user:pass@``) replaced by ``<secret>``.

    A pattern rather than urlsplit, so that malformed URLs quoted in error messages are masked too.
    """
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{SECRET}@", url, count=1)
