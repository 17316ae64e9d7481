"""Configuration: YAML with positions, ``${VAR}`` expansion, JSON Schema validation, frozen model."""

from mcpgate.config.load import (
    ConfigError,
    ConfigIssue,
    default_config_paths,
    find_config_file,
    load_config,
    load_schema,
    summarize,
)
from mcpgate.config.model import Config, UpstreamConfig

__all__ = [
    "Config",
    "ConfigError",
    "ConfigIssue",
    "UpstreamConfig",
    "default_config_paths",
    "find_config_file",
    "load_config",
    "load_schema",
    "summarize",
]
