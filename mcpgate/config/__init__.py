"""Configuration: YAML with positions, ``${VAR}`` expansion, JSON Schema validation, frozen model."""

import sys

# jsonschema[format-nongpl] brings rfc3987-syntax, which compiles a grammar at import time (about
# two seconds, on every `mcpgate` command and every start) for the "iri" formats only. Our schema
# uses "uri", checked by rfc3986-validator, so jsonschema is imported without it. Any later import
# of rfc3987_syntax by someone else still works: the block is lifted right after.
if "jsonschema" not in sys.modules and "rfc3987_syntax" not in sys.modules:
    sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]
    try:
        import jsonschema  # noqa: F401
    finally:
        del sys.modules["rfc3987_syntax"]

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
