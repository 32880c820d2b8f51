"""Write deploy/compose/alertmanager.yml: the project's alerts/alertmanager.yml with its webhooks sent to the
compose stack's ``sink`` service instead of the placeholder on 127.0.0.1.

    python deploy/compose/generate.py           # rewrite alertmanager.yml after editing alerts/alertmanager.yml
    python deploy/compose/generate.py --check   # exit 1 when the committed file is out of date

Only the webhook base URL changes, so routes, grouping and inhibition in compose are exactly the tested ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[1] / "alerts" / "alertmanager.yml"
TARGET = HERE / "alertmanager.yml"
PLACEHOLDER = "http://127.0.0.1:5001"  # the webhook base URL of alerts/alertmanager.yml
SINK = "http://sink:5001"  # the sink service of compose.yaml, on the compose network
HEADER = ("# Generated from alerts/alertmanager.yml by deploy/compose/generate.py: do not edit, run the script.\n"
          f"# The only change: webhooks go to the compose sink service ({SINK}) instead of {PLACEHOLDER}.\n")


def render(source: str = "") -> str:
    """The compose Alertmanager config for ``source`` (default: the project's alerts/alertmanager.yml)."""
    text = source or SOURCE.read_text()
    if PLACEHOLDER not in text:
        raise ValueError(f"{SOURCE} no longer sends its webhooks to {PLACEHOLDER}; update PLACEHOLDER")
    out = HEADER + text.replace(PLACEHOLDER, SINK)
    urls = webhook_urls(out)
    if not urls or any(not u.startswith(SINK + "/") for u in urls):
        raise ValueError(f"every webhook must go to the sink, got {urls}")
    return out


def webhook_urls(text: str) -> list[str]:
    """Every webhook URL of an Alertmanager config."""
    config = yaml.safe_load(text)
    return [w["url"] for r in config.get("receivers", []) for w in r.get("webhook_configs", []) or []]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if alertmanager.yml is out of date")
    ns = p.parse_args(argv)
    text = render()
    if ns.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is out of date: run python deploy/compose/generate.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
