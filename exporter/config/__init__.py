"""Configuration: the strict YAML loader (a superset of blackbox.yml) and the typed model it produces.

See :mod:`exporter.config.loader` for the validation rules (each section of the file has its own module)
and :mod:`exporter.config.model` for the dataclasses.
"""

from exporter.config.dump import dump_config
from exporter.config.durations import format_duration, parse_duration, parse_size
from exporter.config.errors import ConfigError
from exporter.config.loader import load_config, load_config_text
from exporter.config.regions import default_region_name

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
