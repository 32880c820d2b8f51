"""Just enough of the Prometheus text format for the harness, fast on a 100 MB exposition.

Only the families asked for are parsed, line by line, so summing ``outage_probe_runs_total`` over 30,000
checks costs one pass with a string split per matching line rather than a full parse.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Samples = dict[str, list[tuple[str, float]]]  # sample name -> [(raw label text, value)]


def samples(text: str | bytes, names: Iterable[str]) -> Samples:
    """Samples of the given sample names (e.g. ``foo_bucket``, ``foo_count``), with raw label text."""
    if isinstance(text, bytes):
        text = text.decode()
    wanted = set(names)
    out: Samples = {name: [] for name in wanted}
    prefixes = tuple(wanted)
    for line in text.splitlines():
        if not line.startswith(prefixes):
            continue
        brace = line.find("{")
        space = line.find(" ")
        if brace != -1 and brace < space:
            name = line[:brace]
            close = line.rindex("}")
            labels, rest = line[brace + 1:close], line[close + 1:]
        else:
            name, labels, rest = line[:space], "", line[space:]
        if name in out:
            out[name].append((labels, float(rest.split()[0])))
    return out


def labels(raw: str) -> dict[str, str]:
    return {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(raw)}


def total(text: str | bytes, name: str) -> float:
    """Sum of every sample called ``name``."""
    return sum(v for _, v in samples(text, [name])[name])


@dataclass(frozen=True)
class Buckets:
    """A histogram without labels: cumulative counts per upper bound (the last bound is +Inf)."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def read(cls, text: str | bytes, family: str) -> Buckets:
        rows = []
        for raw, value in samples(text, [family + "_bucket"])[family + "_bucket"]:
            rows.append((float(labels(raw)["le"]), value))
        rows.sort()
        return cls(tuple(b for b, _ in rows), tuple(v for _, v in rows))

    def __sub__(self, earlier: Buckets) -> Buckets:
        if earlier.bounds != self.bounds:
            raise ValueError("histograms with different buckets")
        return Buckets(self.bounds, tuple(a - b for a, b in zip(self.cumulative, earlier.cumulative, strict=True)))

    @property
    def count(self) -> float:
        return self.cumulative[-1] if self.cumulative else 0.0

    def quantile(self, q: float) -> float:
        """Like PromQL's histogram_quantile: linear inside the bucket; the highest finite bound if in +Inf."""
        if not self.count:
            return math.nan
        rank = q * self.count
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in zip(self.bounds, self.cumulative, strict=True):
            if count >= rank:
                if math.isinf(bound):
                    return lower_bound
                if count == lower_count:
                    return bound
                return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
            lower_bound, lower_count = bound, count
        return lower_bound

    def max_bound(self) -> float:
        """Upper bound of the highest non-empty bucket: the largest observation is at most this."""
        for bound, count in zip(self.bounds, self.cumulative, strict=True):
            if count >= self.count:
                return bound
        return math.nan


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of raw values (``q`` in 0..1); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    index = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[index]
