"""Configuration: the strict YAML loader (a superset of blackbox.yml) and the typed model it produces.

See :mod:`exporter.config.loader` for the validation rules and :mod:`exporter.config.model` for the
dataclasses.
"""

from exporter.config.durations import format_duration, parse_duration, parse_size
from exporter.config.loader import (
    ConfigError,
    default_region_name,
    dump_config,
    load_config,
    load_config_text,
)

__all__ = [
    "ConfigError",
    "default_region_name",
    "dump_config",
    "format_duration",
    "load_config",
    "load_config_text",
    "parse_duration",
    "parse_size",
]
