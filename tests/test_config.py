"""The configuration loader: YAML in, frozen model or a compiler-style list of every problem out."""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from mcpgate.config import (
    ConfigError,
    ConfigIssue,
    default_config_paths,
    find_config_file,
    load_config,
    load_schema,
    summarize,
)
from mcpgate.config.model import (
    ApiKey,
    Bucket,
    Config,
    Glob,
    Heartbeat,
    ObservabilityConfig,
    PolicyConfig,
    RoleMapping,
    ServerConfig,
    SessionsConfig,
    UpstreamAuth,
    UpstreamConfig,
)

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "config"
MINIMAL = """\
upstreams:
  a:
    url: http://127.0.0.1:9000/mcp
"""
FULL_ENV = {"GITHUB_MCP_TOKEN": "ghp_example"}


def load(text: str, **kwargs: Any) -> Config:
    """Schema and cross-reference checks, for every section the schema knows.

    Whether this build enforces a section is another question, with tests of its own below
    (``test_sections_this_build_does_not_enforce_are_errors``).
    """
    kwargs.setdefault("env", {})
    kwargs.setdefault("check_support", False)
    return load_config(text=dedent(text), source="c.yml", **kwargs)


def problems(text: str, **kwargs: Any) -> list[str]:
    """Every issue, as ``mcpgate validate`` prints it."""
    with pytest.raises(ConfigError) as caught:
        load(text, **kwargs)
    return [str(issue) for issue in caught.value.issues]


# -- a full, valid configuration ------------------------------------------------------------------


@pytest.fixture(scope="module")
def full() -> Config:
    # Every section the schema knows, enforced by this build or not: this tests parsing and building.
    return load_config(DATA / "full.yml", env=FULL_ENV, check_support=False)


def test_full_config_server_and_sessions(full: Config) -> None:
    assert full.source == str(DATA / "full.yml")
    assert full.server == ServerConfig(
        host="127.0.0.1",
        port=8080,
        public_url="https://mcp.example.com",
        allowed_origins=("http://localhost:3000",),
        max_body_bytes=4194304,
        workers=1,
        ready_when="all",
        header_timeout=5.0,
        body_timeout=60.0,
        keepalive_timeout=120.0,
        max_header_bytes=16384,
        max_headers=64,
    )
    assert full.sessions == SessionsConfig(
        backend="memory",
        redis_url="redis://127.0.0.1:6379/0",
        idle_timeout=1800.0,
        max_sessions=500,
        max_per_client=20,
    )


def test_prefix_separator() -> None:
    assert load(MINIMAL).server.prefix_separator == "__"
    assert load(MINIMAL + "server: {prefix_separator: '-'}\n").server.prefix_separator == "-"
    assert problems(MINIMAL + "server: {prefix_separator: '/'}\n")
    assert problems(MINIMAL + "server: {prefix_separator: ''}\n")


def test_list_cache_ttl() -> None:
    assert load(MINIMAL).upstreams[0].list_cache_ttl == 30.0
    assert load(MINIMAL + "    list_cache_ttl: 0\n").upstreams[0].list_cache_ttl == 0.0
    assert load(MINIMAL + "    list_cache_ttl: 2m\n").upstreams[0].list_cache_ttl == 120.0
    assert problems(MINIMAL + "    list_cache_ttl: soon\n")


def test_upstream_description() -> None:
    config = load(MINIMAL + "    description: Search and read GitHub issues\n")
    assert config.upstreams[0].description == "Search and read GitHub issues"
    assert problems(MINIMAL + "    description: " + "x" * 1100 + "\n")


def test_unknown_upstream_suggests_the_closest_name() -> None:
    text = MINIMAL.replace("  a:", "  github:") + "routing:\n  - {match: {method: '*'}, upstream: githb}\n"
    assert problems(text) == [
        "c.yml:5:38: routing[0].upstream: unknown upstream 'githb': did you mean 'github'? (known: github)"
    ]


def test_listener_and_session_limits_reach_what_runs() -> None:
    """The limits are not only parsed: the gateway's store and the listener are built with them."""
    from mcpgate.gateway import Gateway
    from mcpgate.server import build_app, make_runner

    config = load(
        MINIMAL + "server: {header_timeout: 2s, keepalive_timeout: 9s, max_header_bytes: 4096, max_headers: 32}\n"
        "sessions: {max_sessions: 7, max_per_client: 3}\n",
        check_support=True,
    )
    store = Gateway.from_config(config).sessions
    assert (store.max_sessions, store.max_per_client) == (7, 3)
    runner = make_runner(build_app(config), config)
    assert runner._header_timeout == 2.0
    assert runner._kwargs["keepalive_timeout"] == 9.0
    assert (runner._kwargs["max_field_size"], runner._kwargs["max_headers"]) == (4096, 32)


@pytest.mark.parametrize(
    "bad",
    ["server: {header_timeout: 0}", "server: {max_header_bytes: 10}", "sessions: {max_sessions: 0}"],
)
def test_limits_must_be_sane(bad: str) -> None:
    assert problems(MINIMAL + bad + "\n")


def test_full_config_upstreams(full: Config) -> None:
    assert [u.name for u in full.upstreams] == ["github", "files", "old"]  # file order
    github, files, old = full.upstreams
    assert github.transport == "streamable-http"
    assert github.url == "https://github-mcp.example.com/mcp"
    assert (github.timeout, github.connect_timeout, github.prefix) == (30.0, 10.0, "github")
    assert github.auth == UpstreamAuth("bearer", "Authorization", "Bearer ghp_example")
    assert github.headers == (("X-Tenant", "acme"), ("X-Version", "2"))
    assert [g.pattern for g in github.tools.allow] == ["search_*", "get_*"]
    assert github.tools.permits("search_issues") and not github.tools.permits("delete_admin")
    assert github.heartbeat == Heartbeat(interval=15.0, timeout=5.0, failures=3)
    assert files == UpstreamConfig(
        name="files",
        transport="stdio",
        command=("npx", "-y", "@modelcontextprotocol/server-filesystem", "/data"),
        env=(("LOG_LEVEL", "warn"), ("DEBUG", "false")),
        per_session=True,
    )
    assert (old.transport, old.url) == ("sse", "http://old-server:9000/sse")
    assert old.auth == UpstreamAuth("header", "X-Key", "dev-key")


def test_full_config_routing_auth_policy(full: Config) -> None:
    assert [(r.index, r.upstream) for r in full.routing] == [(0, "github"), (1, "files"), (2, "old")]
    first = full.routing[0].match
    assert (first.method, first.tool, first.resource) == (Glob.compile("tools/call"), Glob.compile("github__*"), None)
    assert full.routing[2].match.method.matches("anything/at/all")
    assert full.auth is not None
    engineering, laptop = full.auth.api_keys
    assert engineering == ApiKey(
        "engineering",
        key_hash="sha256:" + "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        roles=("engineer",),
    )
    assert (laptop.key, laptop.key_hash, laptop.roles) == ("dev-only-key", None, ())
    jwt = full.auth.jwt
    assert jwt is not None
    assert (jwt.issuer, jwt.audience, jwt.algorithms, jwt.leeway) == (
        "https://idp.example.com/",
        ("mcpgate",),
        ("RS256", "ES256"),
        30.0,
    )
    assert jwt.role_mappings == (RoleMapping("groups", "admins", ("admin",)),)
    assert full.policy.default == "deny"
    assert [(r.index, r.decision, r.clients, r.servers) for r in full.policy.rules] == [
        (0, "allow", (), ()),
        (1, "allow", ("engineering",), ("github", "files")),
        (2, "allow", ("contractors",), ("github",)),
    ]


def test_full_config_rate_limit_and_observability(full: Config) -> None:
    limits = full.rate_limit
    assert limits is not None
    assert (limits.backend, limits.key_prefix, limits.on_backend_error) == ("memory", "mcpgate", "deny")
    assert limits.default == Bucket(100.0, 10.0)
    (rule,) = limits.rules
    assert (rule.index, rule.bucket, rule.servers, rule.methods, rule.per_tool) == (
        0,
        Bucket(20.0, 2.0),
        ("github",),
        (Glob.compile("tools/call"),),
        False,
    )
    obs = full.observability
    assert obs.metrics.enabled and obs.audit.enabled and not obs.audit.log_bodies
    assert (obs.logging.level, obs.logging.format) == ("info", "json")
    assert obs.logging.redact == ("authorization", "x-api-key", "token", "password", "secret")


def test_summary_is_one_line(full: Config) -> None:
    assert summarize(full) == (
        f"{full.source}: valid — 3 upstreams (1 streamable-http, 1 stdio, 1 sse), 3 routing rules, auth: api_keys+jwt, "
        "policy: 3 rules (default deny), rate_limit: memory"
    )
    assert summarize(load(MINIMAL)) == (
        "c.yml: valid — 1 upstream (1 streamable-http), 0 routing rules, auth: none, policy: none (everything allowed)"
    )


# -- defaults -------------------------------------------------------------------------------------


def test_minimal_config_gets_every_default() -> None:
    config = load(MINIMAL)
    assert config == Config(
        source="c.yml",
        upstreams=(UpstreamConfig(name="a", transport="streamable-http", url="http://127.0.0.1:9000/mcp"),),
    )
    assert (config.auth, config.rate_limit, config.routing) == (None, None, ())
    assert config.policy is None  # no policy section: everything is allowed
    assert config.observability == ObservabilityConfig()


def test_a_policy_section_without_default_denies() -> None:
    assert load(MINIMAL + "policy: {shadow: true}\n").policy == PolicyConfig(default="deny", shadow=True)


def test_writing_the_documented_defaults_changes_nothing() -> None:
    """The schema's ``default`` values (what the docs show) are what the model really uses."""
    schema = load_schema()["$defs"]
    sections = {
        "server": schema["server"]["properties"],
        "sessions": schema["sessions"]["properties"],
        "upstreams.a": schema["upstream"]["properties"],
        "upstreams.a.heartbeat": schema["upstream"]["properties"]["heartbeat"]["properties"],
        "observability.logging": schema["observability"]["properties"]["logging"]["properties"],
        "observability.metrics": schema["observability"]["properties"]["metrics"]["properties"],
        "observability.audit": schema["observability"]["properties"]["audit"]["properties"],
    }
    overrides = {
        f"{section}.{name}": spec["default"]
        for section, properties in sections.items()
        for name, spec in properties.items()
        if "default" in spec
        and not (section == "upstreams.a" and name in ("env", "per_session", "max_processes", "lazy"))  # stdio-only
    }
    assert "server.shutdown_timeout" in overrides and "upstreams.a.heartbeat.interval" in overrides
    assert load(MINIMAL, overrides=overrides) == load(MINIMAL)


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        (12, 12.0),
        (0.25, 0.25),
    ],
)
def test_durations(written: object, seconds: float) -> None:
    config = load(MINIMAL + f"    timeout: {written}\n")
    assert config.upstreams[0].timeout == seconds


def test_transport_is_derived_and_shapes_are_normalized() -> None:
    config = load(
        """\
        server: {allowed_origins: "*", ready_when: [a], public_url: "https://gw.example.com"}
        upstreams:
          a: {url: "http://h/mcp"}
          b: {command: [srv]}
        auth:
          jwt: {issuer: i, audience: [x, y], discovery: true}
        """
    )
    assert [u.transport for u in config.upstreams] == ["streamable-http", "stdio"]
    assert config.server.allowed_origins == ("*",)
    assert config.server.ready_when == ("a",)
    assert config.auth is not None and config.auth.jwt is not None
    assert (config.auth.jwt.audience, config.auth.jwt.discovery, config.auth.jwt.jwks_uri) == (("x", "y"), True, None)


def test_anchors_live_under_x_keys_and_merge() -> None:
    text = """\
    x-http: &http {timeout: 5s, connect_timeout: 2s}
    upstreams:
      a:
        <<: *http
        url: http://h/mcp
      b: {<<: *http, url: "http://h2/mcp", timeout: 1s}
    """
    config = load(text)
    assert [(u.timeout, u.connect_timeout) for u in config.upstreams] == [(5.0, 2.0), (1.0, 2.0)]


# -- every problem, at its place ------------------------------------------------------------------


def test_unknown_key_points_at_the_key() -> None:
    assert problems("server:\n  prot: 8080\n" + MINIMAL) == [
        "c.yml:2:3: server.prot: unknown key 'prot' (did you mean 'port'?)"
    ]


def test_wrong_type_points_at_the_value() -> None:
    assert problems("server:\n  port: abc\n" + MINIMAL) == [
        "c.yml:2:9: server.port: expected an integer, got string 'abc'"
    ]


def test_out_of_range_and_enum() -> None:
    assert problems("server: {port: 70000}\nsessions: {backend: redsi}\n" + MINIMAL) == [
        "c.yml:1:16: server.port: must be at most 65535 (got integer 70000)",
        "c.yml:2:21: sessions.backend: must be one of: memory, redis (got string 'redsi')",
    ]


def test_bad_url() -> None:
    assert problems("upstreams:\n  a:\n    url: ftp://example.com/mcp\n") == [
        "c.yml:3:10: upstreams.a.url: must be an http:// or https:// URL with a host, e.g. https://mcp.example.com/mcp"
    ]
    assert problems("upstreams:\n  a: {url: 'https://exa mple.com/'}\n") == [
        "c.yml:2:12: upstreams.a.url: must be a valid URL"
    ]


def test_unset_variable() -> None:
    assert problems(MINIMAL + "    headers: {X-Token: '${GITHUB_TOKEN}'}\n") == [
        "c.yml:4:24: upstreams.a.headers.X-Token: environment variable GITHUB_TOKEN is not set "
        "(use ${GITHUB_TOKEN:-default} for a default)"
    ]


def test_routing_rule_naming_an_unknown_upstream() -> None:
    text = MINIMAL + "routing:\n  - match: {method: '*'}\n    upstream: b\n"
    assert problems(text) == ["c.yml:6:15: routing[0].upstream: unknown upstream 'b' (known: a)"]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "server: {port: 1}\n"])
def test_missing_upstreams(text: str) -> None:
    assert problems(text) == ["c.yml:1:1: (root): missing required key 'upstreams'"]


def test_empty_upstreams_and_root_of_the_wrong_kind() -> None:
    assert problems("upstreams: {}\n") == ["c.yml:1:12: upstreams: must not be empty"]
    assert problems("- a\n- b\n") == ["c.yml:1:1: (root): expected a mapping, got a list"]


def test_an_empty_section_points_at_its_key() -> None:
    assert problems("policy:\n" + MINIMAL) == ["c.yml:1:1: policy: expected a mapping, got null"]


def test_url_and_command_both_or_neither() -> None:
    message = "needs exactly one of 'url' (an HTTP upstream) or 'command' (a stdio upstream)"
    assert problems("upstreams:\n  a:\n    url: http://h/mcp\n    command: [x]\n") == [
        f"c.yml:2:3: upstreams.a: {message}"
    ]
    assert problems("upstreams:\n  a: {timeout: 5s}\n") == [f"c.yml:2:3: upstreams.a: {message}"]


def test_bad_duration() -> None:
    assert problems(MINIMAL + "    timeout: 5x\n") == [
        "c.yml:4:14: upstreams.a.timeout: must be a duration greater than zero, like 500ms, 30s, 2m, 1h or 1m30s "
        "(units: ms, s, m, h, d)"
    ]
    assert problems(MINIMAL + "    timeout: [1]\n") == [
        "c.yml:4:14: upstreams.a.timeout: must be a duration greater than zero: seconds as a number, "
        "or a string like 500ms, 30s, 2m, 1h, 1m30s"
    ]
    assert problems(MINIMAL + "    timeout: 0s\n")[0].startswith(
        "c.yml:4:14: upstreams.a.timeout: must be a duration greater"
    )


def test_bad_header_name_points_at_the_name() -> None:
    assert problems(MINIMAL + "    headers:\n      X Tenant: acme\n") == [
        'c.yml:5:7: upstreams.a.headers["X Tenant"]: must be a valid HTTP header name: letters, digits and '
        "!#$%&'*+-.^_`|~, no spaces or colons"
    ]


def test_header_value_with_line_break() -> None:
    text = MINIMAL + '    headers: {X-A: "one\\r\\nX-Injected: two"}\n'
    assert problems(text) == [
        "c.yml:4:20: upstreams.a.headers.X-A: must not contain line breaks (they would split the HTTP header)"
    ]


def test_bad_api_key_hash() -> None:
    text = MINIMAL + "auth:\n  api_keys:\n    - id: ci\n      key_hash: sha256:abc\n"
    assert problems(text) == [
        "c.yml:7:17: auth.api_keys[0].key_hash: must be sha256: followed by 64 hex digits (mcpgate hash-key prints it)"
    ]


def test_api_keys_need_one_secret_and_unique_ids() -> None:
    text = MINIMAL + "auth:\n  api_keys:\n    - {id: ci, key: k1}\n    - {id: ci}\n"
    assert problems(text) == [
        "c.yml:7:7: auth.api_keys[1]: needs exactly one of 'key_hash' (sha256:<64 hex digits>, from mcpgate hash-key) "
        "or 'key' (plain, for development)",
        "c.yml:7:12: auth.api_keys[1].id: duplicate id 'ci' (also auth.api_keys[0])",
    ]


def test_workers_need_shared_state() -> None:
    text = "server:\n  workers: 4\nrate_limit: {backend: memory}\n" + MINIMAL
    assert problems(text) == [
        "c.yml:2:12: server.workers: workers > 1 needs sessions.backend: redis (memory sessions live in one process)",
        "c.yml:2:12: server.workers: workers > 1 needs rate_limit.backend: redis (memory buckets live in one process)",
    ]
    shared = "server: {workers: 4}\nsessions: {backend: redis}\nrate_limit: {backend: redis}\n" + MINIMAL
    assert load(shared).server.workers == 4


def test_upstream_auth_kinds() -> None:
    assert problems(MINIMAL + "    auth: {type: bearer}\n") == [
        "c.yml:4:5: upstreams.a.auth: missing required key 'token'"
    ]
    assert problems(MINIMAL + "    auth: {type: bearer, token: t, header: X-A}\n") == [
        "c.yml:4:36: upstreams.a.auth.header: only used with type: header"
    ]


def test_transport_and_keys_must_fit_the_kind_of_upstream() -> None:
    text = """\
    upstreams:
      a:
        command: [srv]
        transport: sse
        headers: {X-A: b}
      b:
        url: http://h/mcp
        per_session: true
    """
    assert problems(text) == [
        "c.yml:4:16: upstreams.a.transport: transport 'sse' needs 'url'; a 'command' upstream is stdio",
        "c.yml:5:5: upstreams.a.headers: 'headers' only applies to HTTP ('url') upstreams",
        "c.yml:8:5: upstreams.b.per_session: 'per_session' only applies to stdio ('command') upstreams",
    ]


def test_names_prefixes_and_references() -> None:
    text = """\
    server: {ready_when: [a, nope]}
    upstreams:
      a: {url: "http://h/mcp", prefix: p}
      b: {url: "http://h/mcp", prefix: p}
      bad/name: {url: "http://h/mcp"}
    policy:
      rules: [{servers: [a, ghost], decision: allow}]
    rate_limit:
      rules: [{servers: [spectre], capacity: 1, refill_per_second: 1}]
    """
    known = "(known: a, b, bad/name)"
    assert problems(text) == [
        f"c.yml:1:26: server.ready_when[1]: unknown upstream 'nope' {known}",
        "c.yml:4:36: upstreams.b.prefix: prefix 'p' is already used by upstream 'a'",
        'c.yml:5:3: upstreams["bad/name"]: upstream names must start with a letter or digit and contain only '
        "letters, digits, '_', '.' and '-' (at most 64 characters): they appear in URL paths",
        f"c.yml:7:25: policy.rules[0].servers[1]: unknown upstream 'ghost' {known}",
        f"c.yml:9:22: rate_limit.rules[0].servers[0]: unknown upstream 'spectre' {known}",
    ]


def test_yaml_syntax_error_has_the_parser_position() -> None:
    assert problems("server:\n  host: a: b\n") == [
        "c.yml:2:10: (root): YAML syntax error: mapping values are not allowed here"
    ]
    assert problems("server: {port: 1\n") == [
        "c.yml:2:1: (root): YAML syntax error: expected ',' or '}', but got '<stream end>' "
        "(while parsing a flow mapping at line 1, column 9)"
    ]
    (issue,) = problems("upstreams:\n\ta: 1\n")
    assert issue.startswith("c.yml:2:1: (root): YAML syntax error: found character '\\t'")


def test_duplicate_keys_are_issues_not_crashes() -> None:
    text = MINIMAL + "    timeout: 5s\n    timeout: 6s\nserver: {}\nserver: {port: 1}\n"
    assert problems(text) == [
        "c.yml:5:5: upstreams.a.timeout: duplicate key 'timeout' (first defined at line 4)",
        "c.yml:7:1: server: duplicate key 'server' (first defined at line 6)",
    ]


def test_every_problem_is_reported_at_once() -> None:
    text = """\
    server:
      prot: 8080
      workers: 2
    upstreams:
      a:
        url: ftp://x
        timeout: soon
    routing:
      - match: {method: "*"}
        upstream: z
    observability:
      logging: {level: loud}
    """
    found = problems(text, env={})
    assert [issue.split(": ")[1] for issue in found] == [
        "server.prot",
        "server.workers",
        "upstreams.a.url",
        "upstreams.a.timeout",
        "routing[0].upstream",
        "observability.logging.level",
    ]
    assert [issue.split(":")[1] for issue in found] == ["2", "3", "6", "7", "10", "12"]


def test_error_message_is_the_issues_one_per_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load("server: {prot: 1, hots: x}\n" + MINIMAL)
    assert str(caught.value) == "\n".join(map(str, caught.value.issues))
    assert len(caught.value.issues) == 2
    assert pickle.loads(pickle.dumps(caught.value)).issues == caught.value.issues


def test_issue_formatting() -> None:
    assert str(ConfigIssue("f.yml", 3, 5, "server.port", "bad")) == "f.yml:3:5: server.port: bad"
    assert str(ConfigIssue("f.yml", 1, 1, "", "bad")) == "f.yml:1:1: (root): bad"


# -- ${VAR} expansion -----------------------------------------------------------------------------


def test_variables_with_defaults_and_coercion() -> None:
    text = """\
    server:
      host: ${HOST:-0.0.0.0}
      port: ${PORT:-8080}
      public_url: https://${DOMAIN}/base
    observability:
      audit:
        enabled: ${AUDIT:-false}
    """
    config = load(dedent(text) + MINIMAL, env={"DOMAIN": "mcp.example.com", "AUDIT": "true"})
    assert (config.server.host, config.server.port) == ("0.0.0.0", 8080)
    assert config.server.public_url == "https://mcp.example.com/base"
    assert config.observability.audit.enabled is True


def test_a_lone_variable_takes_the_reading_the_schema_accepts() -> None:
    """Flow mappings cannot hold an unquoted ``${``, and a digits-only token must stay a string."""
    text = """\
    server: {port: "${PORT}", shutdown_timeout: "${GRACE}"}
    observability: {metrics: {enabled: "${METRICS:-false}"}}
    upstreams:
      a:
        url: http://h/mcp
        auth:
          type: bearer
          token: ${TOKEN}
    """
    config = load(text, env={"PORT": "9000", "GRACE": "5", "TOKEN": "123456"})
    assert (config.server.port, config.server.shutdown_timeout) == (9000, 5.0)
    assert config.observability.metrics.enabled is False
    assert config.upstreams[0].auth == UpstreamAuth("bearer", "Authorization", "Bearer 123456")
    # Neither reading fits: the message is about the one of the right type, without the value.
    assert problems(text, env={"PORT": "70000", "GRACE": "5", "TOKEN": "t"}) == [
        "c.yml:1:16: server.port: must be at most 65535"
    ]
    assert problems(MINIMAL + "auth:\n  api_keys: [{id: a, key_hash: '${H}'}]\n", env={"H": "123"}) == [
        "c.yml:5:32: auth.api_keys[0].key_hash: must be sha256: followed by 64 hex digits (mcpgate hash-key prints it)"
    ]


def test_set_variables_win_and_empty_ones_take_the_default() -> None:
    text = "server:\n  port: ${PORT:-8080}\n  host: ${HOST:-localhost}\n" + MINIMAL
    config = load(text, env={"PORT": "9000", "HOST": ""})
    assert (config.server.port, config.server.host) == (9000, "localhost")


def test_double_dollar_is_a_literal_dollar() -> None:
    config = load(MINIMAL + "    headers: {X-Price: 'cost $$5 and $${NOT_A_VAR}', X-Lone: a$b}\n")
    assert config.upstreams[0].headers == (("X-Price", "cost $5 and ${NOT_A_VAR}"), ("X-Lone", "a$b"))


def test_malformed_reference() -> None:
    assert problems(MINIMAL + "    headers: {X-A: 'a${b'}\n") == [
        "c.yml:4:20: upstreams.a.headers.X-A: malformed ${...} reference (write $$ for a literal $)"
    ]


def test_keys_are_not_expanded() -> None:
    (issue,) = problems(MINIMAL + "    headers:\n      X-${A}: v\n", env={"A": "expanded"})
    assert issue.startswith('c.yml:5:7: upstreams.a.headers["X-${A}"]: must be a valid HTTP header name')


# -- overrides ------------------------------------------------------------------------------------


def test_overrides_win_over_the_file_and_create_sections() -> None:
    config = load(
        "server: {port: 8080}\n" + MINIMAL,
        overrides={"server.port": 9000, "observability.logging.level": "debug", "upstreams.a.timeout": "2s"},
    )
    assert config.server.port == 9000
    assert config.observability.logging.level == "debug"
    assert config.upstreams[0].timeout == 2.0


def test_overrides_are_validated_and_named() -> None:
    found = problems(
        MINIMAL, overrides={"server.port": "abc", "server.wrokers": 2, "upstreams.a.url.x": 1, "server..host": "h"}
    )
    assert sorted(found) == [
        "<override>:0:0: server..host: invalid override path",
        "<override>:0:0: server.port: expected an integer, got a string (value hidden)",
        "<override>:0:0: server.wrokers: unknown key 'wrokers' (did you mean 'workers'?)",
        "<override>:0:0: upstreams.a.url.x: cannot override: upstreams.a.url is not a mapping",
    ]
    file_value = "server:\n  port: ${PORT}\n" + MINIMAL
    assert load(file_value, env={"PORT": "1"}, overrides={"server.port": 2}).server.port == 2


# -- secrets --------------------------------------------------------------------------------------

SECRET = "sk-live-9c1e0f3d8a7b6c5d4e3f2a1b"


def test_secrets_never_reach_messages_or_reprs() -> None:
    text = """\
    server:
      port: ${SECRET}
      host: [x]
    upstreams:
      a:
        url: http://h/mcp
        auth: {type: bearer, token: ["${SECRET}"], tokne: "${SECRET}"}
        headers: {X-Key: {nested: "${SECRET}"}}
    auth:
      api_keys:
        - {id: ci, key_hash: "sha256:${SECRET}"}
        - {id: dev, key: [sk-live-9c1e0f3d8a7b6c5d4e3f2a1b]}
    sessions:
      backend: ${SECRET}
    """
    with pytest.raises(ConfigError) as caught:
        load(text, env={"SECRET": SECRET}, overrides={"server.workers": SECRET})
    error = caught.value
    assert len(error.issues) >= 8
    for rendering in (str(error), repr(error), repr(error.issues), *map(str, error.issues)):
        assert SECRET not in rendering
        assert "9c1e0f3d" not in rendering


def test_model_reprs_hide_credentials() -> None:
    config = load(
        MINIMAL + "    auth: {type: bearer, token: '${SECRET}'}\n    headers: {X-Key: '${SECRET}'}\n"
        "auth: {api_keys: [{id: a, key: '${SECRET}'}]}\n",
        env={"SECRET": SECRET},
    )
    assert config.upstreams[0].auth is not None and config.upstreams[0].auth.value == "Bearer " + SECRET
    assert SECRET not in repr(config)


# -- finding the file -----------------------------------------------------------------------------


def test_default_config_paths_order(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "MCPGATE_CONFIG": "/srv/gate.yml"}
    assert default_config_paths(env) == [
        Path("/srv/gate.yml"),
        Path("mcpgate.yml"),
        tmp_path / ".config/mcpgate/config.yml",
        Path("/etc/mcpgate/config.yml"),
    ]
    assert default_config_paths({"HOME": str(tmp_path)})[0] == Path("mcpgate.yml")


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    return tmp_path


def test_find_config_file_order(in_tmp: Path) -> None:
    env = {"HOME": str(in_tmp / "home")}
    user = in_tmp / "home/.config/mcpgate/config.yml"
    user.parent.mkdir(parents=True)
    user.write_text(MINIMAL)
    assert find_config_file(None, env) == str(user)
    Path("mcpgate.yml").write_text(MINIMAL)
    assert find_config_file(None, env) == "mcpgate.yml"
    named = in_tmp / "named.yml"
    named.write_text(MINIMAL)
    assert find_config_file(None, {**env, "MCPGATE_CONFIG": str(named)}) == str(named)
    assert find_config_file("mcpgate.yml", {**env, "MCPGATE_CONFIG": str(named)}) == "mcpgate.yml"
    assert find_config_file("-", env) == "-"


def test_a_named_file_that_is_missing_is_an_error(in_tmp: Path) -> None:
    Path("mcpgate.yml").write_text(MINIMAL)
    env = {"HOME": str(in_tmp / "home")}
    for explicit, named in ((str(in_tmp / "nope.yml"), None), (None, str(in_tmp / "gone.yml"))):
        with pytest.raises(ConfigError) as caught:
            find_config_file(explicit, {**env, "MCPGATE_CONFIG": named} if named else env)
        assert str(caught.value).endswith(".yml:0:0: (root): file not found")


def test_no_config_anywhere_lists_every_path_searched(in_tmp: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        find_config_file(None, {"HOME": str(in_tmp / "home")})
    message = str(caught.value)
    for path in ("mcpgate.yml", str(in_tmp / "home/.config/mcpgate/config.yml"), "/etc/mcpgate/config.yml"):
        assert path in message


def test_load_config_from_a_path_and_from_stdin(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Path("gate.yml").write_text("server:\n  prot: 1\n" + MINIMAL)
    with pytest.raises(ConfigError) as caught:
        load_config("gate.yml", env={})
    assert str(caught.value) == "gate.yml:2:3: server.prot: unknown key 'prot' (did you mean 'port'?)"
    monkeypatch.setattr("sys.stdin", io.StringIO(MINIMAL))
    assert load_config("-", env={}).source == "<stdin>"
    assert load_config(text=MINIMAL, env={}).source == "<string>"


# -- the schema -----------------------------------------------------------------------------------


def test_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(load_schema())
    assert load_schema() is load_schema()


def _properties(node: object, where: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property definition; conditions (if/then, alternatives) only constrain, they define nothing."""
    if isinstance(node, dict):
        for name, spec in node.get("properties", {}).items():
            yield f"{where}/{name}", spec
        for key, child in node.items():
            if key not in ("if", "then", "else", "oneOf", "anyOf", "allOf"):
                yield from _properties(child, f"{where}/{key}")


def test_every_property_is_documented() -> None:
    """``mcpgate schema`` and the docs are generated from the schema, so nothing may go unexplained."""
    defs = load_schema()["$defs"]
    undocumented = []
    for where, spec in _properties(load_schema()):
        resolved = {**defs[spec["$ref"].rsplit("/", 1)[1]], **spec} if "$ref" in spec else spec
        if not ("title" in resolved and "description" in resolved):
            undocumented.append(where)
    assert undocumented == []


# -- the examples that ship with the project ------------------------------------------------------


def _example_params() -> list[Any]:
    examples = sorted(ROOT.glob("examples/**/*.yml"))
    if not examples:
        return [pytest.param(None, marks=pytest.mark.skip(reason="no example configs yet"))]
    return [pytest.param(path, id=str(path.relative_to(ROOT))) for path in examples]


@pytest.mark.parametrize("path", _example_params())
def test_example_configs_load(path: Path) -> None:
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text()))
    config = load_config(path, env={name: f"example-{name.lower()}" for name in names})
    assert config.upstreams


# -- auth and policy: what the schema cannot say ---------------------------------------------------


def test_an_auth_section_must_let_someone_in() -> None:
    assert problems(MINIMAL + "auth: {gateway_header: X-Key}\n") == [
        "c.yml:4:1: auth: needs 'api_keys' or 'jwt': with neither, no client could authenticate"
    ]
    assert problems(MINIMAL + "auth: {api_keys: []}\n") == [
        "c.yml:4:1: auth: needs 'api_keys' or 'jwt': with neither, no client could authenticate"
    ]


def test_jwt_needs_the_public_url_and_takes_it_as_an_audience() -> None:
    jwt = "auth:\n  jwt: {issuer: 'https://idp.example.com/', jwks_uri: 'https://idp.example.com/keys'}\n"
    assert problems(MINIMAL + jwt) == [
        "c.yml:5:3: auth.jwt: needs server.public_url: the OAuth metadata and WWW-Authenticate name the "
        "gateway by it, never by the request's Host"
    ]
    config = load("server: {public_url: 'https://gw.example.com'}\n" + MINIMAL + jwt)
    assert config.auth is not None and config.auth.jwt is not None
    assert config.auth.jwt.audience == ()  # the gateway's own URLs are accepted instead
    assert (config.auth.jwt.jwks_cache_ttl, config.auth.jwt.jwks_refetch_interval) == (600.0, 30.0)


def test_policy_rules_take_prompt_and_resource_globs() -> None:
    config = load(MINIMAL + "policy:\n  rules:\n    - {prompts: ['greet*'], resources: ['kb://*'], decision: allow}\n")
    assert config.policy is not None
    [rule] = config.policy.rules
    assert [g.pattern for g in rule.prompts] == ["greet*"]
    assert [g.pattern for g in rule.resources] == ["kb://*"]
    assert config.policy.default == "deny"
