"""The typed, frozen configuration that the gateway runs from.

``load.py`` turns a YAML file into these objects after the JSON Schema has accepted it, so nothing
here re-validates shapes. Everything the request path needs is precomputed here, once: globs are
compiled to regexes, durations are seconds, header maps are tuples. The pipeline reads these objects
and never indexes raw config dicts.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Transport = Literal["streamable-http", "sse", "stdio"]


@dataclass(frozen=True, slots=True)
class Glob:
    """A shell-style pattern (``search_*``) compiled once at load time."""

    pattern: str
    regex: re.Pattern[str] = field(compare=False, repr=False)

    @classmethod
    def compile(cls, pattern: str) -> Glob:
        return cls(pattern, re.compile(fnmatch.translate(pattern), re.DOTALL))

    def matches(self, value: str) -> bool:
        return self.regex.match(value) is not None


def any_match(globs: tuple[Glob, ...], value: str) -> bool:
    return any(g.regex.match(value) is not None for g in globs)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    # Origins allowed to call MCP paths. Empty means loopback origins only (DNS-rebinding defence);
    # a single "*" allows any origin.
    allowed_origins: tuple[str, ...] = ()
    max_body_bytes: int = 4 * 1024 * 1024
    workers: int = 1
    # "all", "any", or the names of the upstreams that must be healthy.
    ready_when: str | tuple[str, ...] = "all"
    # Grace period for in-flight calls at shutdown; open streams end at once regardless.
    shutdown_timeout: float = 10.0
    # Between an upstream's prefix and a name on the unified endpoint: github__search.
    prefix_separator: str = "__"
    # Slow clients hold connections and memory: bound how long headers and bodies may take.
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 75.0
    max_header_bytes: int = 8190
    max_headers: int = 128


@dataclass(frozen=True, slots=True)
class SessionsConfig:
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "mcpgate"
    idle_timeout: float = 1800.0
    max_sessions: int = 10_000
    max_per_client: int = 1_000


@dataclass(frozen=True, slots=True)
class UpstreamAuth:
    """The gateway's own credential towards one upstream (never the client's)."""

    type: Literal["bearer", "header"]
    header: str  # "Authorization" for bearer
    value: str  # the full header value ("Bearer <token>" for bearer); a secret, never logged

    def __repr__(self) -> str:  # secrets never reach logs, not even through a repr
        return f"UpstreamAuth(type={self.type!r}, header={self.header!r}, value='***')"


@dataclass(frozen=True, slots=True)
class ToolFilter:
    """What an upstream exposes at all: allowed unless a deny glob matches; allow defaults to all."""

    allow: tuple[Glob, ...] = ()
    deny: tuple[Glob, ...] = ()

    def permits(self, name: str) -> bool:
        if self.deny and any_match(self.deny, name):
            return False
        return not self.allow or any_match(self.allow, name)

    @property
    def is_open(self) -> bool:
        return not self.allow and not self.deny


@dataclass(frozen=True, slots=True)
class Heartbeat:
    interval: float = 15.0
    timeout: float = 5.0
    failures: int = 3


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    name: str
    transport: Transport
    url: str | None = None  # streamable-http and sse
    command: tuple[str, ...] = ()  # stdio
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold secrets
    cwd: str | None = None
    per_session: bool = False
    lazy: bool = False  # stdio: started on first use, not with the gateway
    max_processes: int = 100  # with per_session: session processes at once
    timeout: float = 30.0
    connect_timeout: float = 10.0
    prefix: str | None = None
    description: str | None = None
    list_cache_ttl: float = 30.0
    auth: UpstreamAuth | None = None
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold secrets
    forward_headers: frozenset[str] = frozenset()  # lower-case client header names passed on
    tools: ToolFilter = ToolFilter()
    heartbeat: Heartbeat = Heartbeat()

    @property
    def target(self) -> str:
        """URL or command line, for humans (list-servers, logs)."""
        return self.url if self.url is not None else " ".join(self.command)


@dataclass(frozen=True, slots=True)
class RouteMatch:
    method: Glob = Glob.compile("*")  # noqa: RUF009 - a Glob is frozen, so one shared default is safe
    tool: Glob | None = None
    resource: Glob | None = None
    prompt: Glob | None = None


@dataclass(frozen=True, slots=True)
class RoutingRule:
    index: int
    match: RouteMatch
    upstream: str


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    key_hash: str | None = None  # "sha256:<hex>"
    key: str | None = None  # plain key, for development only
    roles: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"ApiKey(id={self.id!r}, roles={self.roles!r}, key='***')"


@dataclass(frozen=True, slots=True)
class RoleMapping:
    claim: str
    value: str
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class JwtConfig:
    issuer: str
    audience: tuple[str, ...] = ()  # server.public_url and the endpoints' URLs are accepted as well
    jwks_uri: str | None = None
    discovery: bool = False
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    client_id_claim: str = "sub"
    role_mappings: tuple[RoleMapping, ...] = ()
    leeway: float = 30.0
    scopes: tuple[str, ...] = ()  # required of every token, advertised to OAuth clients
    authorization_servers: tuple[str, ...] = ()  # for the protected-resource metadata; default (issuer,)
    jwks_cache_ttl: float = 600.0
    jwks_refetch_interval: float = 30.0


@dataclass(frozen=True, slots=True)
class AuthConfig:
    api_keys: tuple[ApiKey, ...] = ()
    jwt: JwtConfig | None = None
    gateway_header: str = "Authorization"


@dataclass(frozen=True, slots=True)
class PolicyRule:
    index: int
    decision: Literal["allow", "deny"]
    roles: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()
    methods: tuple[Glob, ...] = ()
    tools: tuple[Glob, ...] = ()
    resources: tuple[Glob, ...] = ()
    prompts: tuple[Glob, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    default: Literal["allow", "deny"] = "allow"
    rules: tuple[PolicyRule, ...] = ()
    shadow: bool = False


@dataclass(frozen=True, slots=True)
class Bucket:
    capacity: float
    refill_per_second: float


@dataclass(frozen=True, slots=True)
class RateLimitRule:
    index: int
    bucket: Bucket
    clients: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()
    methods: tuple[Glob, ...] = ()
    tools: tuple[Glob, ...] = ()
    per_tool: bool = False
    per_client: bool = True  # False: one bucket shared by every client, to protect the upstream


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "mcpgate"
    default: Bucket | None = None
    rules: tuple[RateLimitRule, ...] = ()
    on_backend_error: Literal["allow", "deny"] = "deny"


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "info"
    format: Literal["json", "text"] = "text"
    redact: tuple[str, ...] = ("authorization", "x-api-key", "cookie", "token", "password", "secret")


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    enabled: bool = True
    path: str = "/metrics"
    require_auth: bool = False
    max_label_values: int = 1000


@dataclass(frozen=True, slots=True)
class AuditConfig:
    enabled: bool = False
    log_bodies: bool = False
    path: str | None = None  # None: standard output


@dataclass(frozen=True, slots=True)
class TracingConfig:
    enabled: bool = False
    service_name: str = "mcpgate"


@dataclass(frozen=True, slots=True)
class ObservabilityConfig:
    metrics: MetricsConfig = MetricsConfig()
    audit: AuditConfig = AuditConfig()
    tracing: TracingConfig = TracingConfig()
    logging: LoggingConfig = LoggingConfig()


@dataclass(frozen=True, slots=True)
class StoreConfig:
    backend: Literal["sqlite", "postgres"] = "sqlite"
    path: str = "./mcpgate.db"
    url: str | None = field(default=None, repr=False)  # may embed a password
    encryption_key: str | None = field(default=None, repr=False)  # a secret, never logged
    poll_interval: float = 2.0


@dataclass(frozen=True, slots=True)
class AdminKey:
    id: str
    key_hash: str  # "sha256:<hex>"

    def __repr__(self) -> str:
        return f"AdminKey(id={self.id!r}, key_hash='***')"


@dataclass(frozen=True, slots=True)
class AdminConfig:
    host: str = "127.0.0.1"
    port: int = 8081
    api_keys: tuple[AdminKey, ...] = ()
    roles: tuple[str, ...] = ("admin",)


@dataclass(frozen=True, slots=True)
class AnalyticsConfig:
    backend: Literal["duckdb", "postgres"] = "duckdb"
    path: str = "./mcpgate-analytics.duckdb"
    retention: float = 30 * 86400.0
    flush_interval: float = 1.0
    queue_size: int = 100_000


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration; ``upstreams`` keeps file order."""

    source: str  # the file it came from ("<stdin>", "<string>")
    upstreams: tuple[UpstreamConfig, ...]
    server: ServerConfig = ServerConfig()
    sessions: SessionsConfig = SessionsConfig()
    routing: tuple[RoutingRule, ...] = ()
    auth: AuthConfig | None = None
    policy: PolicyConfig | None = None  # None: no policy section, every request is allowed
    rate_limit: RateLimitConfig | None = None
    observability: ObservabilityConfig = ObservabilityConfig()
    # Runtime objects (store) and the API that manages them (admin); store defaults to sqlite with admin.
    store: StoreConfig | None = None
    admin: AdminConfig | None = None
    analytics: AnalyticsConfig | None = None  # usage analytics, queried through the admin listener
    # The validated plain data this was built from, for the store to merge its objects into.
    document: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def upstream(self, name: str) -> UpstreamConfig | None:
        for u in self.upstreams:
            if u.name == name:
                return u
        return None
