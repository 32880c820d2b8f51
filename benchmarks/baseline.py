"""The stored CPU ratios a run is compared with, so a change that makes a probe much dearer is noticed.

``benchmarks/baseline.json`` holds, per protocol and mode, our CPU per probe divided by blackbox_exporter's
in the same run (a ratio, not milliseconds: both exporters share the machine's speed and most of its load).
A run is judged by its cheapest round's ratio: a burst of load on a shared machine inflates single rounds,
while a real regression shows in every round. A ratio above ``margin`` times its baseline is a regression.
The margin is wide because short runs on a shared machine are noisy; it still catches what it is for: a
dependency bump or a change that doubles the cost per probe. Refresh the file from a full run
(``python -m benchmarks --only cpu --json out.json``, then ``python -m benchmarks.baseline out.json``) when a
change makes probes cheaper on purpose.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

PATH = Path(__file__).with_name("baseline.json")
DEFAULT_MARGIN = 2.0


@dataclass(frozen=True)
class Comparison:
    protocol: str
    mode: str
    ratio: float  # this run: ours / blackbox
    baseline: float  # the stored ratio
    limit: float  # baseline x margin

    @property
    def regressed(self) -> bool:
        return self.ratio > self.limit


def load(path: Path = PATH) -> dict:
    return json.loads(path.read_text())


def compare(ratios: dict[str, dict[str, float]], stored: dict) -> list[Comparison]:
    """Each (protocol, mode) this run measured that the baseline has, against baseline x margin."""
    margin = float(stored.get("margin", DEFAULT_MARGIN))
    out = []
    for protocol, modes in stored["ratios_vs_blackbox"].items():
        for mode, base in modes.items():
            ratio = ratios.get(protocol, {}).get(mode)
            if ratio is not None:
                out.append(Comparison(protocol, mode, ratio, base, base * margin))
    return out


def from_run(run: dict, margin: float = DEFAULT_MARGIN) -> dict:
    """A baseline document from a run's ``--json`` output: its ratios and what it ran with."""
    machine = run["machine"]
    return {
        "margin": margin,
        "ratios_vs_blackbox": {p: {m: round(v, 3) for m, v in modes.items()}
                               for p, modes in run["cpu"]["ratios_vs_blackbox"].items()},
        "measured": {key: machine.get(key) for key in ("date", "command", "nproc", "cpu_model", "load_average",
                                                       "python", "event_loop", "blackbox", "packages")},
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m benchmarks.baseline RUN.json  (a run's --json output; rewrites baseline.json)",
              file=sys.stderr)
        return 2
    PATH.write_text(json.dumps(from_run(json.loads(Path(argv[0]).read_text())), indent=2) + "\n")
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
