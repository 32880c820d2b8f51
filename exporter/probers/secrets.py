"""Credential files a module names (``basic_auth.password_file``, ``bearer_token_file``), read at probe time.

Read like Prometheus does (contents trimmed) and only when the file changed, so a rotated token is used on
the next probe without a reload. A file that cannot be read makes the run inconclusive, not failed.
"""

from __future__ import annotations

import functools
import os

from exporter.config.reading import read_bounded
from exporter.probers.errors import ConfigFileUnreadable

MAX_SECRET_BYTES = 64 * 1024


def read_secret(path: str) -> str:
    """File contents, trimmed like Prometheus does; re-read only when the file changes."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigFileUnreadable(path, exc) from exc
    return _read_secret(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _read_secret(path: str, mtime_ns: int, size: int) -> str:
    try:  # only a regular file, bounded: a FIFO or device must not block or flood the event loop
        return read_bounded(path, MAX_SECRET_BYTES).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileUnreadable(path, exc) from exc
