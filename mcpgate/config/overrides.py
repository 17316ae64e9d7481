"""Configuration values from the command line and the environment, on top of the file. Pure.

``--set upstreams.github.timeout=10s`` (repeatable) and ``MCPGATE__UPSTREAMS__GITHUB__TIMEOUT=10s``
override any value by its dotted path; values are read as YAML (``9000`` is a number, ``true`` a
boolean, ``[a, b]`` a list, ``10s`` a string). Precedence, lowest first: the file, ``MCPGATE__*``
variables, the common ``MCPGATE_PORT``-style variables, ``--set``, the common flags (``--port``).
Each value remembers its origin, so that a bad one is reported as ``--set server.port`` or
``MCPGATE__SERVER__PORT`` rather than as a line of the file.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from mcpgate.config.load import ENV_PREFIX


class OverrideError(ValueError):
    """A ``--set`` that is not ``PATH=VALUE``."""


@dataclass
class Overrides:
    values: dict[str, object] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)

    def add(self, path: str, value: object, origin: str) -> None:
        """A later addition wins over an earlier one for the same path."""
        self.values[path] = value
        self.origins[path] = origin


def scalar(text: str) -> object:
    """A value as YAML reads it; text YAML cannot read stays text."""
    if text == "":
        return ""
    try:
        value = YAML(typ="safe", pure=True).load(io.StringIO(text))
    except YAMLError:
        return text
    return text if value is None and text.strip() not in ("null", "~") else value


def from_environment(environ: Mapping[str, str]) -> Overrides:
    """``MCPGATE__A__B_C=v`` → ``a.b_c = v`` (the loader matches each part to the file's spelling)."""
    found = Overrides()
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            path = ".".join(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
            found.add(path, scalar(environ[name]), name)
    return found


def from_flags(items: Iterable[str]) -> Overrides:
    found = Overrides()
    for item in items:
        path, sep, value = item.partition("=")
        if not sep or not path.strip():
            raise OverrideError(f"--set {item!r}: expected PATH=VALUE, e.g. --set server.port=9000")
        path = path.strip()
        found.add(path, scalar(value), f"--set {path}")
    return found
