"""Small text helpers shared by the web tests: config files written from indented literals, and one
sample read out of an exposition."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from exporter.exposition.probe import Family, Pieces, encode_pieces, new_pieces


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def sample(text: str, name: str, **labels: str) -> float | None:
    """Value of the first sample of ``name`` whose labels include ``labels``."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and labels.items() <= s.labels.items():
                return s.value
    return None


def families_text(families: Iterable[Family], write: Callable[[Pieces], None]) -> str:
    """The exposition text ``write`` appends to fresh pieces for ``families`` (one /metrics section)."""
    pieces = new_pieces(families)
    write(pieces)
    return b"".join(encode_pieces(families, pieces)).decode()
