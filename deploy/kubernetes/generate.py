"""Write deploy/kubernetes/rules/prometheusrule.yaml: the project's Prometheus rules (alerts/rules/*.yml) as one
Prometheus Operator PrometheusRule, every group unchanged and in file order.

    python deploy/kubernetes/generate.py           # rewrite it after editing alerts/rules/
    python deploy/kubernetes/generate.py --check   # exit 1 when the committed file is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULES_DIR = HERE.parents[1] / "alerts" / "rules"
TARGET = HERE / "rules" / "prometheusrule.yaml"
NAME = "outage-exporter"
HEADER = ("# Generated from alerts/rules/*.yml by deploy/kubernetes/generate.py: do not edit, run the script.\n"
          "# The comments explaining each rule are in alerts/rules/; docs/alerts.md describes the alerts.\n")


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the PromQL expressions and descriptions) as literal blocks, as in alerts/."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    block = "\n" in value and not any(line != line.rstrip() for line in value.splitlines())
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if block else None)


_Dumper.add_representer(str, _str)


def rule_files(rules_dir: Path | None = None) -> list[Path]:
    return sorted((rules_dir or RULES_DIR).glob("*.yml"))


def groups(rules_dir: Path | None = None) -> list[dict]:
    """Every rule group of the rule files, in file order then group order."""
    out: list[dict] = []
    for path in rule_files(rules_dir):
        out.extend(yaml.safe_load(path.read_text())["groups"])
    names = [g["name"] for g in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"rule group names must be unique across {rules_dir or RULES_DIR}: {duplicates}")
    return out


def manifest(rules_dir: Path | None = None) -> dict:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": NAME, "labels": {"app.kubernetes.io/name": "outage-exporter",
                                              "app.kubernetes.io/component": "rules"}},
        "spec": {"groups": groups(rules_dir)},
    }


def render(rules_dir: Path | None = None) -> str:
    return HEADER + yaml.dump(manifest(rules_dir), Dumper=_Dumper, sort_keys=False, width=120,
                              allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the committed file is out of date")
    ns = p.parse_args(argv)
    text = render()
    if ns.check:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run python deploy/kubernetes/generate.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
