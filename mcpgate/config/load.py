"""Load a configuration file into the frozen model, or explain every problem with it.

The order is fixed: parse YAML keeping positions → expand ``${VAR}`` in string values → apply
overrides → validate against ``schema.json`` → cross-reference checks → build the model. Every
stage reports into one list of findings, so ``mcpgate validate`` can show all problems at once,
each as ``FILE:LINE:COL: dotted.path: message`` like a compiler. Nothing here starts anything or
touches the network; the only I/O is reading the file. Building the model from the validated
plain data is the pure last step, in ``build.py``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode
from ruamel.yaml.scalarbool import ScalarBoolean
from ruamel.yaml.scalarstring import PlainScalarString, ScalarString

from mcpgate.config.build import build_config
from mcpgate.config.messages import Finding, KeyPath, cross_references, dotted, explain_all, unsupported
from mcpgate.config.model import Config

OVERRIDE_SOURCE = "<override>"
ENV_PREFIX = "MCPGATE__"  # MCPGATE__UPSTREAMS__GITHUB__TIMEOUT=10s overrides upstreams.github.timeout
# Keys whose values are credentials (or may embed one): never quoted in messages.
_SENSITIVE_KEYS = frozenset({"token", "key", "key_hash", "value", "headers", "env", "redis_url", "auth"})
_REFERENCE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|(\{))")
_WHOLE_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem at one place; ``line``/``col`` are 1-based, 0 when there is no position."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.path or '(root)'}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; ``issues`` holds every problem found, in file order."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(map(str, self.issues)))

    def __reduce__(self) -> tuple[type[ConfigError], tuple[tuple[ConfigIssue, ...]]]:
        # The default reduce would rebuild from the joined message, not from the issues.
        return type(self), (self.issues,)


@functools.cache
def load_schema() -> dict[str, Any]:
    """The packaged JSON Schema; shared, so callers must not modify it."""
    text = resources.files("mcpgate.config").joinpath("schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(load_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)


def default_config_paths(env: Mapping[str, str] | None = None) -> list[Path]:
    """Where a configuration is looked for when none is named, most specific first."""
    env = os.environ if env is None else env
    paths = [Path(env["MCPGATE_CONFIG"])] if env.get("MCPGATE_CONFIG") else []
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    return [*paths, Path("mcpgate.yml"), home / ".config/mcpgate/config.yml", Path("/etc/mcpgate/config.yml")]


def find_config_file(explicit: str | None, env: Mapping[str, str] | None = None) -> str:
    """The file to load: ``explicit`` if given, else the first default path that exists.

    A named file that is missing is an error rather than a reason to fall back, and so is a
    ``$MCPGATE_CONFIG`` that names a missing file: silently loading some other configuration than
    the one the operator pointed at is worse than refusing to start.
    """
    env = os.environ if env is None else env
    named = explicit if explicit is not None else env.get("MCPGATE_CONFIG") or None
    if named is not None:
        if named != "-" and not Path(named).is_file():
            problem = "not a regular file" if Path(named).exists() else "file not found"
            raise ConfigError([ConfigIssue(named, 0, 0, "", problem)])
        return named
    searched = default_config_paths(env)
    for candidate in searched:
        if candidate.is_file():
            return str(candidate)
    listing = ", ".join(map(str, searched))
    message = f"no configuration file found (searched: {listing}); pass -c FILE or set MCPGATE_CONFIG"
    raise ConfigError([ConfigIssue("<config>", 0, 0, "", message)])


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    text: str | None = None,
    source: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
    origins: Mapping[str, str] | None = None,
    check_support: bool = True,
) -> Config:
    """Parse, expand, override, validate and build; raises :class:`ConfigError` listing every issue.

    ``path`` "-" reads stdin; ``text`` parses a string instead of a file. ``overrides`` maps dotted
    paths (``server.port``) to values that replace the file's; they are validated like the file,
    and ``origins`` names where each came from (``--set server.port``, ``MCPGATE__SERVER__PORT``)
    for the issues they cause. An origin starting with ``MCPGATE__`` matches keys case-insensitively.
    ``check_support=False`` accepts sections this build cannot enforce yet: for tooling and tests
    of the schema only; nothing that serves traffic may use it.
    """
    if text is None:
        name = find_config_file(None if path is None else os.fspath(path), env)
        source = source or ("<stdin>" if name == "-" else name)
        text = _read(name, source)
    document = _Document(source or "<string>", os.environ if env is None else env)
    document.parse(text)
    document.apply_overrides(overrides or {}, origins or {})
    return document.validate(check_support)


def validate_data(data: dict[str, Any], source: str) -> tuple[Config | None, list[Finding]]:
    """Validate and build plain data that did not come from a file (the file merged with the
    store's objects, say): the same schema and cross-references, findings by path, no positions.
    No value is quoted in a message: some of them are credentials."""
    data = json.loads(json.dumps(data))  # a private copy: the model keeps it as its document

    def reveal(path: KeyPath) -> bool:
        return False

    findings = list(_unique(explain_all(_validator().iter_errors(data), reveal)))
    malformed = {finding.path for finding in findings if finding.at == "value"}
    references = [*cross_references(data, reveal), *unsupported(data)]
    findings += [f for f in references if f.at == "key" or f.path not in malformed]
    if findings:
        return None, findings
    return build_config(data, source), []


def _read(name: str, source: str) -> str:
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text (invalid byte at offset {exc.start})"
    except OSError as exc:
        message = f"cannot read the file: {exc.strerror or exc}"
    raise ConfigError([ConfigIssue(source, 0, 0, "", message)])


@dataclass
class _Document:
    """One file on its way to a model: the YAML tree (for positions) next to plain data (for the schema)."""

    source: str
    env: Mapping[str, str]
    tree: Any = None
    data: Any = None
    findings: list[Finding] = field(default_factory=list)
    issues: list[ConfigIssue] = field(default_factory=list)
    hidden: set[KeyPath] = field(default_factory=set)  # values that came from ${VAR} or overrides
    overridden: set[KeyPath] = field(default_factory=set)
    origins: dict[KeyPath, str] = field(default_factory=dict)  # override path -> the flag or variable
    # The other reading of a value that is exactly one ${VAR}: its text, or the YAML scalar it spells.
    other_reading: dict[KeyPath, object] = field(default_factory=dict)

    def parse(self, text: str) -> None:
        yaml = YAML(typ="rt")
        yaml.preserve_quotes = True  # quoted and plain "${PORT}" read differently (see _expand)
        yaml.allow_duplicate_keys = True  # found by _duplicate_keys first, with both positions
        try:
            self.issues.extend(self._duplicate_keys(yaml.compose(text), ()))
            self.tree = yaml.load(text)
        except MarkedYAMLError as exc:
            raise ConfigError([self._syntax_issue(exc)]) from None
        except YAMLError as exc:
            raise ConfigError([ConfigIssue(self.source, 0, 0, "", f"YAML error: {type(exc).__name__}")]) from None
        self.data = {} if self.tree is None else self._plain(self.tree, ())

    def _syntax_issue(self, exc: MarkedYAMLError) -> ConfigIssue:
        # Only the parser's own words and positions: its snippets of the file could hold a secret.
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        message = f"YAML syntax error: {exc.problem or exc.context}"
        if exc.context and exc.problem and exc.context_mark is not None:
            message += f" ({exc.context} at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
        return ConfigIssue(self.source, line, col, "", message)

    def _duplicate_keys(self, node: Node | None, path: KeyPath, seen: set[int] | None = None) -> Iterator[ConfigIssue]:
        seen = set() if seen is None else seen
        if node is None or id(node) in seen:  # aliases may form cycles
            return
        seen.add(id(node))
        if isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                yield from self._duplicate_keys(item, (*path, index), seen)
        elif isinstance(node, MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                name, line = str(key.value), key.start_mark.line + 1
                if name in first:
                    message = f"duplicate key {name!r} (first defined at line {first[name]})"
                    yield ConfigIssue(self.source, line, key.start_mark.column + 1, dotted((*path, name)), message)
                first.setdefault(name, line)
                yield from self._duplicate_keys(value, (*path, name), seen)

    def _plain(self, node: Any, path: KeyPath) -> Any:
        """JSON-like data for the schema, with ``${VAR}`` expanded in string values."""
        if isinstance(node, dict):
            return {str(key): self._plain(value, (*path, str(key))) for key, value in node.items()}
        if isinstance(node, list):
            return [self._plain(item, (*path, index)) for index, item in enumerate(node)]
        if isinstance(node, str):
            return self._expand(node, path)
        if isinstance(node, bool | ScalarBoolean):
            return bool(node)
        if isinstance(node, int):
            return int(node)  # plain int, not ruamel's ScalarInt
        if isinstance(node, float) or node is None:
            return node if node is None else float(node)
        self.findings.append(Finding(path, f"unsupported YAML value ({type(node).__name__}); quote it"))
        return str(node)

    def _expand(self, text: str, path: KeyPath) -> object:
        if "$" not in text:
            return str(text)
        problems: list[str] = []
        expanded = _REFERENCE.sub(lambda match: self._substitute(match, problems, path), text)
        self.findings.extend(Finding(path, problem) for problem in problems)
        coerced = _coerce(expanded)
        if problems or not _WHOLE_REFERENCE.fullmatch(text) or coerced is expanded:
            return expanded
        # Unquoted, ${PORT} reads like the plain scalar it expands to (8080 is a number); quoted, as
        # text. Flow mappings cannot hold an unquoted ${, so the schema may still ask for the other.
        plain = not isinstance(text, ScalarString) or isinstance(text, PlainScalarString)
        self.other_reading[path] = expanded if plain else coerced
        return coerced if plain else expanded

    def _substitute(self, match: re.Match[str], problems: list[str], path: KeyPath) -> str:
        literal_dollar, name, default, malformed = match.groups()
        if literal_dollar:
            return "$"
        if malformed:
            problems.append("malformed ${...} reference (write $$ for a literal $)")
            return ""
        self.hidden.add(path)
        value = self.env.get(name)
        if value is None or (value == "" and default is not None):  # ":-" as in the shell
            if default is None:
                problems.append(f"environment variable {name} is not set (use ${{{name}:-default}} for a default)")
            return default or ""
        return value

    def apply_overrides(self, overrides: Mapping[str, object], origins: Mapping[str, str]) -> None:
        if not isinstance(self.data, dict):
            return  # the schema reports the root itself
        for key, value in overrides.items():
            origin = origins.get(key, OVERRIDE_SOURCE)
            parts = tuple(key.split("."))
            if not all(parts):
                self.issues.append(ConfigIssue(origin, 0, 0, key, "invalid override path"))
                continue
            if origin.startswith(ENV_PREFIX):
                parts = self._spelled_as_in_file(parts)
            node = self.data
            for depth, part in enumerate(parts[:-1]):
                child = node.get(part)
                if child is None:
                    child = node[part] = {}
                if not isinstance(child, dict):
                    problem = f"cannot override: {dotted(parts[: depth + 1])} is not a mapping"
                    self.issues.append(ConfigIssue(origin, 0, 0, key, problem))
                    break
                node = child
            else:
                node[parts[-1]] = _jsonable(value)
                self.overridden.add(parts)
                self.origins[parts] = origin
                self.hidden.add(parts)
                for path in [p for p in self.other_reading if p[: len(parts)] == parts]:
                    del self.other_reading[path]  # the file's ${VAR} is gone, and so is its other reading

    def validate(self, check_support: bool = True) -> Config:
        findings = list(_unique([*self.findings, *explain_all(self._schema_errors(), self._reveal)]))
        if isinstance(self.data, dict):
            # Cross-references may say several things about one value, but nothing about a value
            # that is already reported as malformed.
            malformed = {finding.path for finding in findings if finding.at == "value"}
            references = list(cross_references(self.data, self._reveal))
            if check_support:
                references += unsupported(self.data)
            findings += [f for f in references if f.at == "key" or f.path not in malformed]
        self.issues.extend(map(self._issue, findings))
        if self.issues:
            # The file's issues in file order, then those of flags and variables (no position).
            raise ConfigError(sorted(self.issues, key=lambda i: (i.file != self.source, i.line, i.col)))
        return build_config(self.data, self.source)

    def _schema_errors(self) -> list[ValidationError]:
        """Schema errors, after trying the other reading of each rejected ``${VAR}`` value once."""
        errors = list(_validator().iter_errors(self.data))
        rejected = {tuple(error.absolute_path) for error in errors} & self.other_reading.keys()
        if rejected:
            self._swap_readings(rejected)
            errors = list(_validator().iter_errors(self.data))
            # Neither reading fits: keep the one of the right type, whose message says more.
            still = {tuple(e.absolute_path) for e in errors if e.validator == "type"} & rejected
            if still:
                self._swap_readings(still)
                errors = list(_validator().iter_errors(self.data))
        return errors

    def _swap_readings(self, paths: Iterable[KeyPath]) -> None:
        for path in paths:
            parent = functools.reduce(lambda node, part: node[part], path[:-1], self.data)
            parent[path[-1]], self.other_reading[path] = self.other_reading[path], parent[path[-1]]

    def _reveal(self, path: KeyPath) -> bool:
        if any(part in _SENSITIVE_KEYS for part in path):
            return False
        return not any(path[: len(hidden)] == hidden for hidden in self.hidden)

    def _spelled_as_in_file(self, parts: tuple[str, ...]) -> tuple[str, ...]:
        """An environment variable's path (upper-case by custom) as the file spells it: each part
        matches an existing key case-insensitively, else is taken in lower case (schema keys are)."""
        node: Any = self.data
        spelled: list[str] = []
        for part in parts:
            text = str(part)
            match = (
                next((k for k in node if isinstance(k, str) and k.lower() == text.lower()), None)
                if isinstance(node, dict)
                else None
            )
            spelled.append(match if match is not None else text.lower())
            node = node.get(match) if isinstance(node, dict) and match is not None else None
        return tuple(spelled)

    def _issue(self, finding: Finding) -> ConfigIssue:
        for p in self.overridden:
            if finding.path[: len(p)] == p:
                return ConfigIssue(self.origins.get(p, OVERRIDE_SOURCE), 0, 0, dotted(finding.path), finding.message)
        line, col = _position(self.tree, finding.path, finding.at)
        return ConfigIssue(self.source, line, col, dotted(finding.path), finding.message)


def _position(tree: Any, path: KeyPath, at: str) -> tuple[int, int]:
    """1-based line:col of the key or value at ``path``, or of its deepest ancestor in the file."""
    line = col = 0
    node = tree
    for depth, part in enumerate(path):
        entry, child = _entry(node, part)
        if entry is None:
            break
        # An empty value has no position of its own (ruamel gives the next token's): use the key's.
        use_value = at == "value" and depth == len(path) - 1 and isinstance(node, dict) and child is not None
        line, col = (entry[2], entry[3]) if use_value else (entry[0], entry[1])
        node = child
    return line + 1, col + 1


def _entry(node: Any, part: str | int) -> tuple[list[int] | None, Any]:
    lc = getattr(node, "lc", None)
    if lc is None:
        return None, None
    if isinstance(node, dict):
        for key, value in node.items():
            if str(key) == part:
                return lc.data.get(key), value  # merged (<<) keys have no position of their own
    elif isinstance(node, list) and isinstance(part, int) and part < len(node):
        return lc.data.get(part), node[part]
    return None, None


def _unique(findings: Iterable[Finding]) -> Iterator[Finding]:
    """One message per bad value (the first, most specific); every distinct one per key."""
    seen: set[tuple[object, ...]] = set()
    for finding in findings:
        key = (finding.path, finding.at) if finding.at == "value" else (finding.path, finding.at, finding.message)
        if key not in seen:
            seen.add(key)
            yield finding


def _coerce(text: str) -> object:
    """``text`` as YAML reads an unquoted scalar: ``8080`` is a number, ``true`` a bool; else ``text`` itself."""
    try:
        value = YAML(typ="safe", pure=True).load(text)
    except YAMLError:
        return text
    return value if isinstance(value, bool | int | float) else text


def _jsonable(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def summarize(config: Config) -> str:
    """One line for ``mcpgate validate``: what was understood, so a typo'd section shows up as missing."""
    kinds = Counter(upstream.transport for upstream in config.upstreams).most_common()
    transports = ", ".join(f"{count} {kind}" for kind, count in kinds)
    auth = config.auth
    methods = [name for name, on in (("api_keys", auth and auth.api_keys), ("jwt", auth and auth.jwt)) if on]
    parts = [
        f"{_count(len(config.upstreams), 'upstream')} ({transports})",
        _count(len(config.routing), "routing rule"),
        f"auth: {'+'.join(methods) or 'none'}",
    ]
    policy = config.policy
    if policy is None:
        parts.append("policy: none (everything allowed)")
    else:
        shadow = ", shadow" if policy.shadow else ""
        parts.append(f"policy: {_count(len(policy.rules), 'rule')} (default {policy.default}{shadow})")
    if config.rate_limit is not None:
        parts.append(f"rate_limit: {config.rate_limit.backend}")
    if config.store is not None:
        parts.append(f"store: {config.store.backend}")
    if config.admin is not None:
        host = f"[{config.admin.host}]" if ":" in config.admin.host else config.admin.host
        parts.append(f"admin API on {host}:{config.admin.port}")
    if config.analytics is not None:
        parts.append(f"analytics: {config.analytics.backend}")
    return f"{config.source}: valid — {', '.join(parts)}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
