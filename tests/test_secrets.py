"""Credential files read at probe time: trimmed, re-read after a change, refused when not a regular file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exporter.probers.errors import ConfigFileUnreadable
from exporter.probers.secrets import MAX_SECRET_BYTES, read_secret


def test_contents_are_trimmed_and_follow_a_rotation(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("  first\n")
    assert read_secret(str(token)) == "first"
    token.write_text("second-token\n")  # a different size: seen without any reload
    assert read_secret(str(token)) == "second-token"


@pytest.mark.parametrize("make", ["missing", "fifo", "directory", "too_large"])
def test_unusable_files_are_config_file_unreadable(tmp_path: Path, make: str) -> None:
    path = tmp_path / make
    if make == "fifo":
        os.mkfifo(path)  # nobody writes: a plain read would block the event loop
    elif make == "directory":
        path.mkdir()
    elif make == "too_large":
        path.write_bytes(b"x" * (MAX_SECRET_BYTES + 1))
    with pytest.raises(ConfigFileUnreadable) as info:
        read_secret(str(path))
    assert info.value.file == str(path)
