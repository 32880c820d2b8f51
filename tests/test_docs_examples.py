"""The configuration reference's example is a config that loads and follows its own advice."""

from __future__ import annotations

import re
from pathlib import Path

from exporter.config.loader import load_config_text

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def _example() -> str:
    return re.search(r"```yaml\n(defaults:.*?)```", DOC.read_text(), re.DOTALL).group(1)


def _domain(target: str) -> str:
    host = re.sub(r"^[a-z]+://", "", target).split("/")[0].rsplit(":", 1)[0]
    return ".".join(host.split(".")[-2:])


def test_reference_example_loads_and_its_controls_share_nothing_with_what_they_judge(tmp_path: Path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.53\n")
    config = load_config_text(_example(), source=str(DOC), resolv_conf=str(resolv))
    controls = [(s, c) for s in config.services for c in s.checks if c.control]
    judged = [(s, c) for s in config.services for c in s.checks if not c.control]
    assert len(controls) >= 2, "the example shows at least two controls per region, as the text advises"
    control_services = {s.name for s, _ in controls}
    assert not control_services & {s.name for s, _ in judged}, "a control sits in a service it judges"
    assert not {s.provider for s, _ in controls} & {s.provider for s, _ in judged}

    def domains(pairs):
        return {_domain(t) for _, c in pairs for t in (*c.targets, c.query_name or "") if t}

    assert not domains(controls) & domains(judged), "a control probes a domain it judges"
