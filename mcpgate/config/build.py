"""Build the frozen model from a configuration document that has passed validation.

By now the schema has vouched for every shape, so this only converts: durations to seconds, lists
to tuples, globs compiled. Absent keys keep the dataclass defaults. The input is plain data (dicts,
lists, str, int, float, bool, None) after parsing, ``${VAR}`` expansion and overrides; nothing here
reads files or knows about YAML, so a model can be built from any source of such data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from mcpgate.config.model import (
    AdminConfig,
    AdminKey,
    AnalyticsConfig,
    ApiKey,
    AuditConfig,
    AuthConfig,
    Bucket,
    Config,
    Glob,
    Heartbeat,
    JwtConfig,
    LoggingConfig,
    MetricsConfig,
    ObservabilityConfig,
    PolicyConfig,
    PolicyRule,
    RateLimitConfig,
    RateLimitRule,
    RoleMapping,
    RouteMatch,
    RoutingRule,
    ServerConfig,
    SessionsConfig,
    StoreConfig,
    ToolFilter,
    TracingConfig,
    UpstreamAuth,
    UpstreamConfig,
)

Converters = Mapping[str, Callable[[Any], Any]]
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|d|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _fields(spec: Mapping[str, Any], convert: Converters, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Keyword arguments for a model class: the keys present in ``spec``, each converted if need be."""
    return {key: convert[key](value) if key in convert else value for key, value in spec.items() if key not in skip}


def _seconds(value: float | str) -> float:
    if isinstance(value, int | float):
        return float(value)
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(value))


def _globs(patterns: list[str]) -> tuple[Glob, ...]:
    return tuple(Glob.compile(pattern) for pattern in patterns)


def _pairs(mapping: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((key, str(v).lower() if isinstance(v, bool) else str(v)) for key, v in mapping.items())


def _one_or_many(value: str | list[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _upstream_auth(spec: dict[str, Any]) -> UpstreamAuth:
    if spec["type"] == "bearer":
        return UpstreamAuth("bearer", "Authorization", "Bearer " + spec["token"])
    return UpstreamAuth("header", spec["header"], spec["value"])


def _bucket(spec: dict[str, Any]) -> Bucket:
    return Bucket(float(spec["capacity"]), float(spec["refill_per_second"]))


_MATCHERS: Converters = {
    "roles": tuple,
    "clients": tuple,
    "servers": tuple,
    "methods": _globs,
    "tools": _globs,
    "resources": _globs,
    "prompts": _globs,
}
_SERVER: Converters = {
    "port": int,
    "workers": int,
    "max_body_bytes": int,
    "shutdown_timeout": _seconds,
    "header_timeout": _seconds,
    "body_timeout": _seconds,
    "keepalive_timeout": _seconds,
    "allowed_origins": _one_or_many,
    "ready_when": lambda value: value if isinstance(value, str) else tuple(value),
}
_HEARTBEAT: Converters = {"interval": _seconds, "timeout": _seconds, "failures": int}
_UPSTREAM: Converters = {
    "command": tuple,
    "max_processes": int,
    "env": _pairs,
    "headers": _pairs,
    "forward_headers": lambda names: frozenset(name.lower() for name in names),
    "auth": _upstream_auth,
    "timeout": _seconds,
    "connect_timeout": _seconds,
    "list_cache_ttl": _seconds,
    "tools": lambda spec: ToolFilter(_globs(spec.get("allow", [])), _globs(spec.get("deny", []))),
    "heartbeat": lambda spec: Heartbeat(**_fields(spec, _HEARTBEAT)),
}
_ROUTE_MATCH: Converters = dict.fromkeys(("method", "tool", "resource", "prompt"), Glob.compile)
_JWT: Converters = {
    "audience": _one_or_many,
    "algorithms": tuple,
    "leeway": _seconds,
    "jwks_cache_ttl": _seconds,
    "jwks_refetch_interval": _seconds,
    "scopes": tuple,
    "authorization_servers": tuple,
    "role_mappings": lambda specs: tuple(RoleMapping(s["claim"], s["value"], tuple(s["roles"])) for s in specs),
}
_API_KEY: Converters = {"roles": tuple, "key_hash": str.lower}
_AUTH: Converters = {
    "api_keys": lambda specs: tuple(ApiKey(**_fields(spec, _API_KEY)) for spec in specs),
    "jwt": lambda spec: JwtConfig(**_fields(spec, _JWT)),
}
_ADMIN: Converters = {
    "roles": tuple,
    "api_keys": lambda keys: tuple(AdminKey(k["id"], k["key_hash"].lower()) for k in keys),
}
_OBSERVABILITY: Converters = {
    "metrics": lambda spec: MetricsConfig(**spec),
    "audit": lambda spec: AuditConfig(**spec),
    "tracing": lambda spec: TracingConfig(**spec),
    "logging": lambda spec: LoggingConfig(**_fields(spec, {"redact": tuple})),
}


def _policy(spec: dict[str, Any]) -> PolicyConfig:
    rules = tuple(PolicyRule(index=i, **_fields(r, _MATCHERS)) for i, r in enumerate(spec.get("rules", [])))
    # A policy section that forgets its default fails closed; no section at all means no policy.
    return PolicyConfig(**{"default": "deny", **_fields(spec, {}, skip=("rules",))}, rules=rules)


def _rate_limit(spec: dict[str, Any]) -> RateLimitConfig:
    rules = tuple(
        RateLimitRule(index=i, bucket=_bucket(r), **_fields(r, _MATCHERS, skip=("capacity", "refill_per_second")))
        for i, r in enumerate(spec.get("rules", []))
    )
    return RateLimitConfig(**_fields(spec, {"default": _bucket}, skip=("rules",)), rules=rules)


_SECTIONS: Converters = {
    "server": lambda spec: ServerConfig(**_fields(spec, _SERVER)),
    "sessions": lambda spec: SessionsConfig(**_fields(spec, {"idle_timeout": _seconds})),
    "routing": lambda specs: tuple(
        RoutingRule(i, RouteMatch(**_fields(s["match"], _ROUTE_MATCH)), s["upstream"]) for i, s in enumerate(specs)
    ),
    "auth": lambda spec: AuthConfig(**_fields(spec, _AUTH)),
    "policy": _policy,
    "rate_limit": _rate_limit,
    "observability": lambda spec: ObservabilityConfig(**_fields(spec, _OBSERVABILITY)),
    "store": lambda spec: StoreConfig(**_fields(spec, {"poll_interval": _seconds})),
    "admin": lambda spec: AdminConfig(**_fields(spec, _ADMIN)),
    "analytics": lambda spec: AnalyticsConfig(**_fields(spec, {"retention": _seconds, "flush_interval": _seconds})),
}


def build_config(data: Mapping[str, Any], source: str) -> Config:
    """The model for ``data``, a document the schema and the cross-reference checks have accepted."""
    upstreams = tuple(
        UpstreamConfig(
            name=name,
            transport=spec.get("transport") or ("stdio" if "command" in spec else "streamable-http"),
            **_fields(spec, _UPSTREAM, skip=("transport",)),
        )
        for name, spec in data.get("upstreams", {}).items()
    )
    sections = {key: value for key, value in data.items() if key != "upstreams" and not key.startswith("x-")}
    if "admin" in sections and "store" not in sections:
        sections["store"] = {}  # the admin API keeps what it is given in the default store
    return Config(source=source, upstreams=upstreams, **_fields(sections, _SECTIONS), document=data)
