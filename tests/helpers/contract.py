"""The metric contract as test helpers: parse docs/metrics.md and compare an exposition against it.

Usable by any test that has exposition text (rendered in-process or scraped from a running exporter)::

    docs = parse_metrics_doc()
    assert contract_problems(metrics_text, docs) == []
    assert contract_problems(probe_text, docs, probe=True) == []
    assert documented_but_missing(docs, [metrics_text, probe_text]) == set()
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from exporter.checks import IDENTITY_LABELS

DOCS_PATH = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
METRIC_TABLE_HEADER = ("metric", "type", "labels", "meaning")
REASON_TABLE_HEADER = ("reason", "meaning")
IDENTITY = "(identity)"
NO_LABELS = "(none)"
_HISTOGRAM_ONLY_LABELS = frozenset({"le"})


@dataclass(frozen=True)
class DocumentedMetric:
    name: str
    type: str
    labels: frozenset[str]  # labels beyond the identity set
    identity: bool  # whether the series carry the identity labels on /metrics
    section: str  # the heading the table sits under
    meaning: str

    @property
    def in_probe(self) -> bool:
        """Documented as part of the /probe response."""
        return "/probe" in self.section

    def expected_labels(self, *, probe: bool = False) -> frozenset[str]:
        if self.identity and not probe:
            return self.labels | frozenset(IDENTITY_LABELS)
        return self.labels


@dataclass
class ExposedFamily:
    name: str  # as queried: counters include their ``_total`` suffix
    type: str
    label_sets: set[frozenset[str]] = field(default_factory=set)
    samples: int = 0


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _tables(text: str, header: tuple[str, ...]) -> Iterable[tuple[str, list[str]]]:
    """(section heading, row cells) for every row of every table with exactly this header."""
    section, in_table = "", False
    for line in text.splitlines():
        if line.startswith("#"):
            section, in_table = line.lstrip("#").strip(), False
            continue
        if not line.startswith("|"):
            in_table = False
            continue
        cells = _cells(line)
        if tuple(c.lower() for c in cells) == header:
            in_table = True
        elif in_table and not set("".join(cells)) <= set("-: "):
            if len(cells) != len(header):
                raise ValueError(f"malformed table row under {section!r}: {line!r}")
            yield section, cells


def _name(cell: str) -> str:
    match = re.fullmatch(r"`([a-zA-Z_:][a-zA-Z0-9_:]*)`", cell)
    if not match:
        raise ValueError(f"metric names in docs/metrics.md are written as `name`, got {cell!r}")
    return match.group(1)


def parse_metrics_doc(text: str | None = None) -> dict[str, DocumentedMetric]:
    """Every ``| metric | type | labels | meaning |`` row of docs/metrics.md (or ``text``), by name."""
    text = DOCS_PATH.read_text() if text is None else text
    out: dict[str, DocumentedMetric] = {}
    for section, (metric, kind, labels, meaning) in _tables(text, METRIC_TABLE_HEADER):
        name = _name(metric)
        if name in out:
            raise ValueError(f"{name} is documented twice")
        parts = [] if labels == NO_LABELS else [p.strip() for p in labels.split(",")]
        if not all(parts):
            raise ValueError(f"{name}: empty label in {labels!r}")
        extra = frozenset(p for p in parts if p != IDENTITY)
        if len(extra) != len([p for p in parts if p != IDENTITY]):
            raise ValueError(f"{name}: a label is listed twice in {labels!r}")
        out[name] = DocumentedMetric(name, kind, extra, IDENTITY in parts, section, meaning)
    if not out:
        raise ValueError("no metric tables found in docs/metrics.md")
    return out


def parse_failure_reasons(text: str | None = None) -> dict[str, str]:
    """The ``| reason | meaning |`` table: reason -> meaning."""
    text = DOCS_PATH.read_text() if text is None else text
    return {_name(reason): meaning for _, (reason, meaning) in _tables(text, REASON_TABLE_HEADER)}


def parse_exposition(text: str) -> dict[str, ExposedFamily]:
    """Families of a text-format exposition with the label-name sets their series use."""
    out: dict[str, ExposedFamily] = {}
    for family in text_string_to_metric_families(text):
        name = family.name
        if family.type == "counter" and family.samples and all(s.name.endswith("_total") for s in family.samples):
            name += "_total"
        exposed = out.setdefault(name, ExposedFamily(name, family.type))
        for sample in family.samples:
            labels = frozenset(sample.labels)
            if family.type == "histogram":
                labels -= _HISTOGRAM_ONLY_LABELS
            exposed.label_sets.add(labels)
            exposed.samples += 1
    return out


def contract_problems(
    text: str, docs: Mapping[str, DocumentedMetric], *, probe: bool = False
) -> list[str]:
    """Where an exposition breaks the documented contract; [] when it keeps it.

    ``probe=True`` checks a /probe response: only families documented for /probe, without identity labels.
    """
    problems: list[str] = []
    for name, family in sorted(parse_exposition(text).items()):
        doc = docs.get(name)
        if doc is None:
            problems.append(f"{name}: emitted but not documented in docs/metrics.md")
            continue
        if family.type != doc.type:
            problems.append(f"{name}: emitted as {family.type}, documented as {doc.type}")
        if probe and not doc.in_probe:
            problems.append(f"{name}: emitted by /probe but not documented under a /probe section")
        expected = doc.expected_labels(probe=probe)
        for labels in sorted(family.label_sets, key=sorted):
            if labels != expected:
                problems.append(
                    f"{name}: series with labels {sorted(labels)}, documented {sorted(expected)}"
                )
    return problems


def emitted_names(texts: Iterable[str]) -> set[str]:
    names: set[str] = set()
    for text in texts:
        names |= set(parse_exposition(text))
    return names


def documented_but_missing(docs: Mapping[str, DocumentedMetric], texts: Iterable[str]) -> set[str]:
    """Documented families that none of ``texts`` emits."""
    return set(docs) - emitted_names(texts)
