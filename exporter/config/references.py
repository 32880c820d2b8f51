"""Files a config's modules name (CA, client certificate and key, password or token files).

A file that is missing or unreadable is the config's problem, reported at load time at the key naming it;
the runtime checks them again on reload.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from exporter.config.errors import ConfigError, child_path
from exporter.config.model import Config, Module
from exporter.config.modules import PROBERS
from exporter.config.reading import check_readable


@dataclass(frozen=True, slots=True)
class ReferencedFile:
    """A file a module names (CA, client certificate and key, password or token file)."""

    module: str  # the module's name; an inline module is named "service/check"
    path: str  # YAML path of the key naming it
    file: str


def referenced_files(config: Config) -> tuple[ReferencedFile, ...]:
    """Every file the config's modules name, each module once (named modules first), in file order."""
    out: list[ReferencedFile] = []
    seen: set[int] = set()

    def add(module: Module, path: Callable[[], str]) -> None:
        if id(module) in seen or module.prober not in PROBERS:
            return
        seen.add(id(module))
        section = child_path(path(), module.prober)
        out.extend(ReferencedFile(module.name, p, f) for p, f in _files_in(getattr(module, module.prober), section))

    for name, module in config.modules.items():
        add(module, lambda: child_path("modules", name))  # noqa: B023 - called before the loop moves on
    for i, service in enumerate(config.services):
        for j, cc in enumerate(service.checks):
            add(cc.module, lambda: f"services[{i}].checks[{j}].module")  # noqa: B023
    return tuple(out)


def _files_in(value: Any, path: str) -> Iterable[tuple[str, str]]:
    """(YAML path, file) for every ``*_file`` field set in a module section, nested sections included."""
    for f in fields(value):
        v = getattr(value, f.name)
        if f.name.endswith("_file") and isinstance(v, str):
            yield child_path(path, f.name), v
        elif is_dataclass(v):
            yield from _files_in(v, child_path(path, f.name))


def check_referenced_files(config: Config) -> None:
    """A secret or CA that is not mounted is the config's problem: say so now, not as a failing target."""
    for ref in referenced_files(config):
        try:
            check_readable(ref.file)
        except OSError as e:
            raise ConfigError(ref.path, f"cannot read {ref.file}: {e.strerror or e}") from None
