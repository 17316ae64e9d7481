"""Everything that can be wrong with a parsed configuration, in words an operator can act on.

Two sources: JSON Schema errors, humanized, and the cross-references the schema cannot express
(names that must exist, combinations that cannot work).

jsonschema's own messages are written for schema authors ("'abc' is not of type 'integer'",
"is not valid under any of the given schemas") and quote the offending value verbatim, which may be
a secret pulled in from the environment. Here every error becomes a :class:`Finding`: a path into
the document, a short sentence, and whether the culprit is a key or a value, so the loader can
point at the right column. Values are quoted only when the caller says they are safe to show.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from jsonschema.exceptions import ValidationError

KeyPath = tuple[str | int, ...]
# Whether the value at a path may be quoted in a message (False for secrets and ${VAR} values).
Reveal = Callable[[KeyPath], bool]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
}
# When one value breaks several keywords, the first of these is the most useful thing to say.
_RANK = {"type": 0, "enum": 1, "const": 1, "pattern": 2, "format": 3}
_SHOWN_LENGTH = 40


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem, not yet tied to a file position: the loader resolves ``path`` to line:col.

    ``at`` says what to point at: the value, or the key that names the offending entry (unknown
    keys, bad key names, and mappings that lack something).
    """

    path: KeyPath
    message: str
    at: Literal["key", "value"] = "value"


def dotted(path: KeyPath) -> str:
    """``routing[2].upstream``; keys that are not identifiers are quoted: ``upstreams["a.b"]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def describe(value: object, reveal: bool) -> str:
    """A value as a message fragment, e.g. ``string 'abc'``; hidden values name only their kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}" if reveal else "a boolean (value hidden)"
    if isinstance(value, dict | list):
        return _TYPE_NAMES["object" if isinstance(value, dict) else "array"]
    kind = "string" if isinstance(value, str) else "integer" if isinstance(value, int) else "number"
    if not reveal:
        return f"{'an' if kind == 'integer' else 'a'} {kind} (value hidden)"
    text = repr(value)
    return f"{kind} {text if len(text) <= _SHOWN_LENGTH else text[: _SHOWN_LENGTH - 4] + '…' + text[-1]}"


def explain_all(errors: Iterable[ValidationError], reveal: Reveal) -> list[Finding]:
    """Findings for every error, the most telling first for each value (see ``_RANK``)."""
    ordered = sorted(errors, key=lambda e: (tuple(map(str, e.absolute_path)), _RANK.get(str(e.validator), 9)))
    return [finding for error in ordered for finding in explain(error, reveal)]


def explain(error: ValidationError, reveal: Reveal) -> Iterator[Finding]:
    """Findings for one error; one error may name several keys (unknown or missing ones)."""
    path: KeyPath = tuple(error.absolute_path)
    validator = str(error.validator)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if len(error.schema_path) >= 2 and error.schema_path[-2] == "propertyNames":
        # jsonschema reports a bad key name at the mapping, with the key as the instance.
        message = schema.get("patternErrorMessage") or f"invalid key name {error.instance!r}"
        yield Finding((*path, str(error.instance)), message, "key")
    elif validator == "additionalProperties" and error.validator_value is False:
        yield from _unknown_keys(path, error.instance, schema)
    elif validator == "required":
        for key in _list(error.validator_value):
            if isinstance(error.instance, dict) and key not in error.instance:
                yield Finding(path, f"missing required key {key!r}", "key")
    elif validator in ("oneOf", "anyOf"):
        yield from _alternatives(error, reveal)
    elif validator in ("not", "None"):  # None: a ``false`` subschema
        yield Finding(path, schema.get("errorMessage", "is not allowed here"), "key")
    else:
        yield Finding(path, _sentence(validator, error.validator_value, error.instance, schema, reveal(path)))


def _unknown_keys(path: KeyPath, instance: object, schema: dict[str, Any]) -> Iterator[Finding]:
    known = list(schema.get("properties", {}))
    patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
    for key in instance if isinstance(instance, dict) else ():
        if key in known or any(p.search(key) for p in patterns):
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (expected one of: {', '.join(known)})"
        yield Finding((*path, key), f"unknown key {key!r}{hint}", "key")


def _alternatives(error: ValidationError, reveal: Reveal) -> Iterator[Finding]:
    """Name the alternative the author evidently meant, instead of "not valid under any of ...".

    A branch whose type does not even fit the value was clearly not meant. If exactly one branch
    fits, its own errors are the specific ones; otherwise the schema's ``errorMessage`` (or a list
    of the accepted types) says what would be accepted.
    """
    branches: dict[object, list[ValidationError]] = {}
    for sub in error.context or ():
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    fitting = [subs for subs in branches.values() if not any(_is_type_mismatch(sub) for sub in subs)]
    if len(fitting) == 1:
        for sub in sorted(fitting[0], key=lambda e: _RANK.get(str(e.validator), 9)):
            yield from explain(sub, reveal)
        return
    path: KeyPath = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    message = schema.get("errorMessage")
    if message is None:
        expected = [
            _expected(b.get("type")) for b in _list(error.validator_value) if isinstance(b, dict) and "type" in b
        ]
        if branches and not fitting and expected:
            message = f"expected {' or '.join(expected)}, got {describe(error.instance, reveal(path))}"
        else:
            message = "does not match any of the accepted forms"
    # A mapping that fits no alternative usually lacks or mixes keys: point at its name.
    yield Finding(path, message, "key" if isinstance(error.instance, dict) else "value")


def _is_type_mismatch(error: ValidationError) -> bool:
    return error.validator == "type" and not error.relative_path


def _is_container(value: object) -> bool:
    return isinstance(value, dict | list)


def _expected(types: object) -> str:
    names = types if isinstance(types, list) else [types]
    return " or ".join(_TYPE_NAMES.get(str(name), str(name)) for name in names)


def _sentence(validator: str, expected: Any, value: object, schema: dict[str, Any], reveal: bool) -> str:
    got = f" (got {describe(value, reveal)})" if reveal and not _is_container(value) else ""
    if validator == "type":
        return f"expected {_expected(expected)}, got {describe(value, reveal)}"
    if validator == "enum":
        return f"must be one of: {', '.join(map(str, expected))}{got}"
    if validator == "const":
        return f"must be {json.dumps(expected)}{got}"
    if validator == "pattern":
        return str(schema.get("patternErrorMessage") or f"must match the pattern {expected}")
    if validator == "format":
        return "must be a valid URL" if expected == "uri" else f"must be a valid {expected}"
    return _bound(validator, expected, got)


def _bound(validator: str, limit: Any, got: str) -> str:
    if validator in ("minLength", "minItems", "minProperties") and limit == 1:
        return "must not be empty"
    sentences = {
        "minimum": f"must be at least {limit}{got}",
        "maximum": f"must be at most {limit}{got}",
        "exclusiveMinimum": f"must be greater than {limit}{got}",
        "exclusiveMaximum": f"must be less than {limit}{got}",
        "minLength": f"must be at least {limit} characters long",
        "maxLength": f"must be at most {limit} characters long",
        "minItems": f"must have at least {limit} items",
        "maxItems": f"must have at most {limit} items",
        "minProperties": f"must have at least {limit} entries",
        "uniqueItems": "must not contain duplicates",
    }
    return sentences.get(validator, f"is not valid ({validator})")


# Cross-references: what the schema cannot see. The data may still be malformed where the schema
# already complained, so these look only at parts that have the expected shape.

_HTTP_ONLY = ("headers", "auth", "forward_headers")
# Never forwarded, whatever forward_headers says: the client's credentials are for the gateway,
# and hop-by-hop or framing headers belong to one connection (RFC 9110 section 7.6.1).
NEVER_FORWARDED = frozenset(
    {
        "authorization", "proxy-authorization", "cookie", "x-api-key", "api-key",
        "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "host",
        "content-length", "mcp-session-id", "accept", "x-request-id",
    }
)  # fmt: skip
_STDIO_ONLY = ("env", "cwd", "per_session", "max_processes", "lazy")


def cross_references(data: dict[str, Any], reveal: Reveal) -> Iterator[Finding]:
    upstreams = _dict(data.get("upstreams"))
    if upstreams:
        yield from _unknown_upstreams(data, list(upstreams), reveal)
    gateway_header = _dict(data.get("auth")).get("gateway_header")
    yield from _upstream_shapes(upstreams, gateway_header if isinstance(gateway_header, str) else None)
    yield from _shared_state(data)
    yield from _auth(data)
    yield from _metrics_path(data)
    yield from _store(data)
    yield from _analytics(data)


def _unknown_upstreams(data: dict[str, Any], names: list[str], reveal: Reveal) -> Iterator[Finding]:
    references: list[tuple[KeyPath, object]] = []
    for i, rule in enumerate(_list(data.get("routing"))):
        references.append((("routing", i, "upstream"), _dict(rule).get("upstream")))
    for section in ("policy", "rate_limit"):
        for i, rule in enumerate(_list(_dict(data.get(section)).get("rules"))):
            servers = _list(_dict(rule).get("servers"))
            references += [((section, "rules", i, "servers", j), name) for j, name in enumerate(servers)]
    ready = _list(_dict(data.get("server")).get("ready_when"))
    references += [(("server", "ready_when", j), name) for j, name in enumerate(ready)]
    known = f"(known: {', '.join(names)})"
    for path, name in references:
        if isinstance(name, str) and name not in names:
            if not reveal(path):
                yield Finding(path, f"unknown upstream {known}")
                continue
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            hint = f": did you mean {close[0]!r}?" if close else ""
            yield Finding(path, f"unknown upstream {name!r}{hint} {known}")


def _forward_headers(spec: dict[str, Any], path: KeyPath, gateway_header: str | None) -> Iterator[Finding]:
    never = NEVER_FORWARDED | ({gateway_header.lower()} if gateway_header else set())
    if spec.get("transport") == "sse" and "forward_headers" in spec:
        yield Finding((*path, "forward_headers"), "forward_headers only applies to Streamable HTTP upstreams", "key")
    for i, name in enumerate(_list(spec.get("forward_headers"))):
        if isinstance(name, str) and name.lower() in never:
            why = (
                "a credential for the gateway"
                if name.lower() in CREDENTIALS or name.lower() == (gateway_header or "").lower()
                else "managed by the gateway, or meaningful for one connection only"
            )
            yield Finding((*path, "forward_headers", i), f"{name!r} can never be forwarded: it is {why}")


CREDENTIALS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"})


def _upstream_shapes(upstreams: dict[str, Any], gateway_header: str | None = None) -> Iterator[Finding]:
    prefixes: dict[str, str] = {}
    for name, spec in upstreams.items():
        spec, path = _dict(spec), ("upstreams", name)
        is_http, is_stdio = "url" in spec and "command" not in spec, "command" in spec and "url" not in spec
        transport = spec.get("transport")
        if is_stdio and transport in ("streamable-http", "sse"):
            yield Finding((*path, "transport"), f"transport {transport!r} needs 'url'; a 'command' upstream is stdio")
        if is_http and transport == "stdio":
            yield Finding((*path, "transport"), "transport 'stdio' needs 'command'; a 'url' upstream is HTTP")
        for key in _HTTP_ONLY if is_stdio else _STDIO_ONLY if is_http else ():
            if key in spec:
                kind = "HTTP ('url')" if key in _HTTP_ONLY else "stdio ('command')"
                yield Finding((*path, key), f"{key!r} only applies to {kind} upstreams", "key")
        yield from _forward_headers(spec, path, gateway_header)
        prefix = spec.get("prefix")
        if isinstance(prefix, str) and prefix in prefixes:
            yield Finding((*path, "prefix"), f"prefix {prefix!r} is already used by upstream {prefixes[prefix]!r}")
        elif isinstance(prefix, str):
            prefixes[prefix] = name


def _shared_state(data: dict[str, Any]) -> Iterator[Finding]:
    """More than one worker process shares nothing in memory, so sessions and buckets must live in redis."""
    workers = _dict(data.get("server")).get("workers")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers <= 1:
        return
    path = ("server", "workers")
    if _dict(data.get("sessions")).get("backend", "memory") != "redis":
        yield Finding(path, "workers > 1 needs sessions.backend: redis (memory sessions live in one process)")
    if "rate_limit" in data and _dict(data["rate_limit"]).get("backend", "memory") != "redis":
        yield Finding(path, "workers > 1 needs rate_limit.backend: redis (memory buckets live in one process)")


def unsupported(data: dict[str, Any]) -> Iterator[Finding]:
    """Configured sections this build validates but does not enforce: errors, never warnings, since
    running without them would fail open (an ``auth:`` that lets everyone in). This version enforces
    every section of the schema; a section added to the schema before its code yields its finding
    here, with the words "is not enforced by this version of mcpgate yet"."""
    yield from ()


_TAKEN_PATHS = frozenset({"/mcp", "/servers", "/healthz", "/health", "/live", "/readyz", "/ready"})


def _metrics_path(data: dict[str, Any]) -> Iterator[Finding]:
    path = _dict(_dict(data.get("observability")).get("metrics")).get("path")
    if isinstance(path, str) and (
        path in _TAKEN_PATHS or path.startswith(("/mcp/", "/servers/", "/.well-known/")) or path.endswith("/")
    ):
        yield Finding(("observability", "metrics", "path"), f"{path!r} is taken by another endpoint; use e.g. /metrics")


def _auth(data: dict[str, Any]) -> Iterator[Finding]:
    """An auth section must be able to let someone in, and OAuth metadata needs the gateway's URL."""
    if "auth" not in data or not isinstance(data["auth"], dict):
        return
    auth = data["auth"]
    # With a store, keys may all come from it (the admin API creates them): an empty list is fine.
    if not _list(auth.get("api_keys")) and "jwt" not in auth and "store" not in data and "admin" not in data:
        yield Finding(("auth",), "needs 'api_keys' or 'jwt': with neither, no client could authenticate", "key")
    jwt = auth.get("jwt")
    public_url = _dict(data.get("server")).get("public_url")
    if isinstance(jwt, dict) and not public_url:
        message = (
            "needs server.public_url: the OAuth metadata and WWW-Authenticate name the gateway by it, "
            "never by the request's Host"
        )
        yield Finding(("auth", "jwt"), message, "key")
    yield from _duplicate_ids(_list(auth.get("api_keys")))


def _store(data: dict[str, Any]) -> Iterator[Finding]:
    """A store must be reachable as configured, and the admin API must be usable by someone."""
    from mcpgate.store.cipher import parse_key

    store = _dict(data.get("store"))
    backend = store.get("backend", "sqlite")
    if backend == "postgres" and "url" not in store and "store" in data:
        yield Finding(("store",), "backend postgres needs 'url' (postgresql://user@host:5432/db)", "key")
    for name, only in (("url", "postgres"), ("path", "sqlite")):
        if name in store and backend != only and backend in ("sqlite", "postgres"):
            yield Finding(("store", name), f"{name!r} only applies to backend {only}", "key")
    key = store.get("encryption_key")
    if isinstance(key, str) and key and parse_key(key) is None:
        message = "must be 32 bytes as 64 hex digits or base64 (openssl rand -hex 32 makes one)"
        yield Finding(("store", "encryption_key"), message)
    if "admin" not in data or not isinstance(data["admin"], dict):
        return
    admin = data["admin"]
    jwt = isinstance(_dict(data.get("auth")).get("jwt"), dict)
    if not _list(admin.get("api_keys")) and not (jwt and admin.get("roles", ["admin"])):
        message = "needs 'api_keys', or auth.jwt and 'roles': with neither, no one could use the admin API"
        yield Finding(("admin",), message, "key")
    server = _dict(data.get("server"))
    port, host = admin.get("port", 8081), admin.get("host", "127.0.0.1")
    if port and port == server.get("port", 8080) and host == server.get("host", "127.0.0.1"):
        yield Finding(("admin", "port"), "is server.port: the admin API has a listener of its own")
    ids = [_dict(k).get("id") for k in _list(admin.get("api_keys"))]
    for i, key_id in enumerate(ids):
        if isinstance(key_id, str) and key_id in ids[:i]:
            yield Finding(("admin", "api_keys", i, "id"), f"duplicate id {key_id!r}")


def _analytics(data: dict[str, Any]) -> Iterator[Finding]:
    """Where the events go must exist, be installed, and be writable by every process that records."""
    if not isinstance(data.get("analytics"), dict):
        return
    analytics = data["analytics"]
    backend = analytics.get("backend", "duckdb")
    if backend == "postgres":
        if "path" in analytics:
            yield Finding(("analytics", "path"), "'path' only applies to backend duckdb", "key")
        store = _dict(data.get("store"))
        if store.get("backend") != "postgres":
            message = "backend postgres keeps events in the store's database: it needs store.backend postgres"
            yield Finding(("analytics", "backend"), message)
        return
    if backend != "duckdb":
        return
    workers = _dict(data.get("server")).get("workers")
    if isinstance(workers, int) and not isinstance(workers, bool) and workers > 1:
        message = (
            "a DuckDB file is held by one process: with server.workers > 1 (or several instances) "
            "use backend: postgres, the store's database"
        )
        yield Finding(("analytics", "backend"), message)
    if not duckdb_installed():
        yield Finding(("analytics", "backend"), "duckdb needs the duckdb package: pip install 'mcpgate[analytics]'")


def duckdb_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("duckdb") is not None


def _duplicate_ids(api_keys: list[Any]) -> Iterator[Finding]:
    first: dict[str, int] = {}
    for i, entry in enumerate(api_keys):
        key_id = _dict(entry).get("id")
        if isinstance(key_id, str) and key_id in first:
            message = f"duplicate id {key_id!r} (also auth.api_keys[{first[key_id]}])"
            yield Finding(("auth", "api_keys", i, "id"), message)
        elif isinstance(key_id, str):
            first[key_id] = i


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []
