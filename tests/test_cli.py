from __future__ import annotations

import asyncio
import errno
import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from aiohttp import web
from click.testing import CliRunner, Result

import mcpgate
from mcpgate import cli
from mcpgate.config.model import Config
from tests.conftest import ROOT, free_port

# What this build serves: start and validate accept it.
CONFIG = """\
server:
  host: 127.0.0.1
  port: 8001
upstreams:
  demo:
    url: http://127.0.0.1:9000/mcp
    prefix: demo
    auth: {type: bearer, token: "${DEMO_TOKEN:-s3cret-bearer}"}
  kb:
    url: "https://user:s3cret-pw@kb.example.com/mcp?api_token=s3cret-q&tenant=acme"
    auth: {type: header, header: X-Api-Key, value: s3cret-key}
    headers: {X-Tenant: acme}
"""
# Plus what it does not serve yet: start and validate refuse it, routes and list-servers describe it.
DESCRIBED = (
    CONFIG
    + """\
  files:
    command: [npx, -y, "@modelcontextprotocol/server-filesystem", --token=s3cret-arg, /data]
  old:
    url: "https://old.example.com/sse?key=s3cret-sse"
    transport: sse
routing:
  - match: {method: tools/call, tool: "math.*"}
    upstream: demo
  - match: {method: "*"}
    upstream: kb
"""
)

BROKEN = """\
upstreams:
  demo:
    url: http://127.0.0.1:9000/mcp
    bogus: 1
routing:
  - match: {method: "*"}
    upstream: nowhere
"""

ISSUE_LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<path>\S+): (?P<message>.+)$")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No MCPGATE_* from the developer's shell, no stray config file, and logging put back."""
    import os

    for key in list(os.environ):
        if key.startswith("MCPGATE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", "/nonexistent-home")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no ./mcpgate.yml unless a test writes one
    path = tmp_path / "gateway.yml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def described_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "described.yml"
    path.write_text(DESCRIBED)
    return path


def invoke(*args: str, input: str | None = None, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli.main, list(args), input=input, env=env, catch_exceptions=False)


# -- the shape of the interface ----------------------------------------------------------------


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"mcpgate {mcpgate.__version__}\n"


def test_python_dash_m_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mcpgate", "--version"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"mcpgate {mcpgate.__version__}"


def test_cli_import_stays_light() -> None:
    """`health --url` runs as a Docker HEALTHCHECK: it must not import the config loader (seconds)."""
    code = (
        "import sys, mcpgate.cli, mcpgate.upstream.probe;"
        "heavy = sorted(m for m in sys.modules if m.startswith(('mcpgate.config', 'jsonschema', 'ruamel')));"
        "print(heavy)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


COMMANDS = sorted(cli.main.commands)
NO_DEFAULT = (None, getattr(click.core, "UNSET", None))  # click >= 8.3 marks "no default" with a sentinel


def test_all_verbs_exist() -> None:
    assert COMMANDS == [
        "admin", "hash-key", "health", "list-servers", "migrate", "policy", "reload", "routes", "schema", "start",
        "validate",
    ]  # fmt: skip


@pytest.mark.parametrize("name", COMMANDS)
def test_help_of_every_command(name: str) -> None:
    for flag in ("--help", "-h"):
        result = invoke(name, flag)
        assert result.exit_code == 0
        assert "Examples:" in result.stdout
        assert "-c, --config PATH" in result.stdout
        assert "--log-level" in result.stdout and "--log-format" in result.stdout
    command = cli.main.commands[name]
    short = command.get_short_help_str(limit=200)
    assert short and not short.endswith(".")
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{name} {param.opts} has no help"
            if param.default not in NO_DEFAULT and not param.is_flag:
                assert param.show_default, f"{name} {param.opts} hides its default"


def test_group_help_lists_exit_codes() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for code in ("69", "78", "RestartPreventExitStatus=78"):
        assert code in result.stdout


def test_exit_code_constants() -> None:
    assert (cli.EXIT_OK, cli.EXIT_FAILURE, cli.EXIT_USAGE, cli.EXIT_UNAVAILABLE, cli.EXIT_CONFIG) == (0, 1, 2, 69, 78)
    assert invoke("validate", "--no-such-flag").exit_code == cli.EXIT_USAGE


# -- validate ----------------------------------------------------------------------------------


def test_validate_valid(config_file: Path) -> None:
    result = invoke("validate", "-c", str(config_file))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip()
    assert len(result.stdout.strip().splitlines()) == 1


def test_validate_reads_stdin(config_file: Path) -> None:
    result = invoke("validate", "-c", "-", input=CONFIG)
    assert result.exit_code == 0, result.stderr


def test_validate_finds_config_through_env(config_file: Path) -> None:
    result = invoke("validate", env={"MCPGATE_CONFIG": str(config_file)})
    assert result.exit_code == 0, result.stderr


def test_validate_finds_config_in_working_directory(config_file: Path) -> None:
    (config_file.parent / "mcpgate.yml").write_text(CONFIG)
    assert invoke("validate").exit_code == 0


def test_validate_invalid_prints_every_issue(tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    path.write_text(BROKEN)
    result = invoke("validate", "-c", str(path))
    assert result.exit_code == 1
    assert result.stdout == ""
    *issues, last = result.stderr.strip().splitlines()
    assert last == f"{len(issues)} error(s)"
    assert len(issues) >= 2
    for line in issues:
        match = ISSUE_LINE.match(line)
        assert match, line
        assert match["file"] == str(path)
    paths = {ISSUE_LINE.match(line)["path"] for line in issues}  # type: ignore[index]
    assert any(p.startswith("upstreams.demo") for p in paths)
    assert any(p.startswith("routing[0]") for p in paths)


def test_validate_json(tmp_path: Path, config_file: Path) -> None:
    result = invoke("validate", "-c", str(config_file), "--json")
    assert result.exit_code == 0
    ok = json.loads(result.stdout)
    assert ok["valid"] is True and ok["errors"] == [] and ok["summary"]

    broken = tmp_path / "broken.yml"
    broken.write_text(BROKEN)
    result = invoke("validate", "-c", str(broken), "--json")
    assert result.exit_code == 1
    bad = json.loads(result.stdout)
    assert bad["valid"] is False and bad["summary"] is None
    assert bad["errors"]
    for error in bad["errors"]:
        assert set(error) == {"file", "line", "col", "path", "message"}
        assert error["file"] == str(broken)
        assert isinstance(error["line"], int) and isinstance(error["col"], int)


def test_validate_warns_about_names_clients_reject(tmp_path: Path) -> None:
    path = tmp_path / "dotted.yml"
    path.write_text(
        "server: {prefix_separator: '.'}\n"
        "upstreams:\n  gh: {url: http://127.0.0.1:9000/mcp, prefix: gh}\n  kb: {url: http://127.0.0.1:9001/mcp}\n"
    )
    result = invoke("validate", "-c", str(path))
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        "warning: upstreams.gh.prefix: tool names 'gh.<tool>' on /mcp break ^[a-zA-Z0-9_-]{1,64}$, "
        "which Claude and OpenAI clients require"
    ]
    data = json.loads(invoke("validate", "-c", str(path), "--json").stdout)
    assert data["valid"] is True and len(data["warnings"]) == 1
    path.write_text("upstreams:\n  gh: {url: http://127.0.0.1:9000/mcp, prefix: gh}\n")
    assert invoke("validate", "-c", str(path)).stderr == ""


def test_validate_builds_what_start_would(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid YAML that this build cannot run fails validate too, not only start."""
    monkeypatch.setattr("mcpgate.observability.otel.available", lambda: False)  # as without the otel extra
    path = tmp_path / "tracing.yml"
    path.write_text("upstreams:\n  demo: {url: http://127.0.0.1:9000/mcp}\nobservability: {tracing: {enabled: true}}\n")
    result = invoke("validate", "-c", str(path))
    assert result.exit_code == 1
    first, last = result.stderr.strip().splitlines()
    assert "pip install 'mcpgate[otel]'" in first and first.startswith(f"{path}")
    assert last == "1 error(s)"


def test_switched_off_sections_are_accepted(tmp_path: Path, captured_run: list[Config]) -> None:
    config = tmp_path / "gateway.yml"
    config.write_text(
        "upstreams:\n  demo: {url: http://127.0.0.1:9000/mcp}\n"
        "observability: {metrics: {enabled: false}, audit: {enabled: false}}\n"
    )
    assert invoke("validate", "-c", str(config)).exit_code == 0


def test_every_transport_is_served_and_described(described_file: Path) -> None:
    checked = invoke("validate", "-c", str(described_file))
    assert checked.exit_code == 0, checked.stderr
    assert "s3cret" not in checked.stderr + checked.stdout
    assert invoke("routes", "-c", str(described_file)).exit_code == 0
    assert invoke("list-servers", "-c", str(described_file)).exit_code == 0


def test_validate_missing_file(tmp_path: Path) -> None:
    result = invoke("validate", "-c", str(tmp_path / "absent.yml"))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].endswith("error(s)")


# -- schema ------------------------------------------------------------------------------------


def test_schema_is_json() -> None:
    result = invoke("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert isinstance(schema, dict) and "$schema" in schema
    assert result.stdout.startswith("{\n  ")  # indented for people and editors


# -- routes ------------------------------------------------------------------------------------


def test_routes_table(described_file: Path) -> None:
    result = invoke("routes", "-c", str(described_file))
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "s3cret" not in out
    lines = out.splitlines()
    assert lines[0].split() == ["PATH", "UPSTREAM", "TRANSPORT", "TARGET", "STATUS"]
    assert lines[1].split()[:3] == ["/servers/demo/mcp", "demo", "streamable-http"]
    assert lines[1].endswith("served")
    assert lines[3].startswith("/servers/files/mcp")
    assert lines[3].endswith("served")
    assert lines[4].startswith("/servers/old/mcp")
    assert lines[4].endswith("served")
    assert "/mcp/<name>" in out
    assert "The unified endpoint /mcp" in out
    rules = lines[lines.index(next(line for line in lines if line.startswith("#"))) :]
    assert rules[0].split() == ["#", "MATCH", "UPSTREAM", "NOTE"]
    assert rules[1].split() == ["0", "method=tools/call", "tool=math.*", "demo"]
    assert rules[2].split() == ["1", "method=*", "kb"]
    # demo's prefix rule and the catalogue come after routing[1], which takes every call.
    assert rules[3].split()[:3] == ["-", "name=demo__*", "demo"]
    assert rules[3].endswith("never matches: routing[1] takes it all first")
    assert rules[4].startswith("-  listed by an upstream") and rules[4].endswith("routing[1] takes it all first")


def test_routes_columns_are_aligned(described_file: Path) -> None:
    lines = invoke("routes", "-c", str(described_file)).stdout.splitlines()[:4]
    column = lines[0].index("UPSTREAM")
    assert all(line[column - 2 : column] == "  " and line[column] != " " for line in lines)


def test_routes_json(described_file: Path) -> None:
    result = invoke("routes", "-c", str(described_file), "--json")
    assert result.exit_code == 0
    assert "s3cret" not in result.stdout
    data = json.loads(result.stdout)
    assert data["servers"][0] == {
        "path": "/servers/demo/mcp",
        "alias": "/mcp/demo",
        "upstream": "demo",
        "transport": "streamable-http",
        "target": "http://127.0.0.1:9000/mcp",
        "served": True,
        "status": "served",
    }
    assert [s["served"] for s in data["servers"]] == [True, True, True, True]
    assert data["unified"] == {
        "path": "/mcp",
        "served": True,
        "rules": [
            {"index": 0, "match": {"method": "tools/call", "tool": "math.*"}, "upstream": "demo", "shadowed_by": None},
            {"index": 1, "match": {"method": "*"}, "upstream": "kb", "shadowed_by": None},
        ],
        "prefixes": [{"upstream": "demo", "prefix": "demo__", "shadowed_by": 1}],
        "catalogue": {"shadowed_by": 1},
        "unreachable": ["files", "old"],
        "unsafe_prefixes": [],
    }


def test_routes_without_rules_shows_prefixes_and_the_catalogue(tmp_path: Path) -> None:
    path = tmp_path / "one.yml"
    path.write_text("upstreams:\n  demo:\n    url: http://127.0.0.1:9000/mcp\n    prefix: d\n")
    result = invoke("routes", "-c", str(path))
    assert result.exit_code == 0
    table = result.stdout.splitlines()[3:]
    assert table[-2].split() == ["-", "name=d__*", "demo", "prefix", "(stripped)"]
    assert table[-1].split() == ["-", "listed", "by", "an", "upstream", "(first", "in", "file", "order)", "catalogue"]
    assert "Unreachable" not in result.stdout


def test_routes_flags_shadowed_rules_and_unsafe_prefixes(tmp_path: Path) -> None:
    path = tmp_path / "shadow.yml"
    path.write_text(
        "upstreams:\n  a: {url: http://127.0.0.1:9000/mcp}\n"
        f"  b: {{url: http://127.0.0.1:9001/mcp, prefix: {'p' * 40}}}\n"
        "routing:\n  - match: {method: tools/call}\n    upstream: a\n"
        "  - match: {method: tools/call, tool: x}\n    upstream: b\n"
    )
    data = json.loads(invoke("routes", "-c", str(path), "--json").stdout)["unified"]
    assert [r["shadowed_by"] for r in data["rules"]] == [None, 0]
    assert data["unsafe_prefixes"] == []  # 40 + 2 characters still leave room for a name
    out = invoke("routes", "-c", str(path)).stdout
    assert "never matches: routing[0] takes it all first" in out


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["tools/call", "demo__add"], 0, "tools/call demo__add -> kb (by routing[1])"),
        (["tools/call", "math.sqrt"], 0, "tools/call math.sqrt -> demo (by routing[0])"),
        (["ping"], 0, "ping -> kb (by routing[1])"),
    ],
)
def test_routes_check(described_file: Path, args: list[str], code: int, said: str) -> None:
    result = invoke("routes", "-c", str(described_file), "--check", *args)
    assert result.exit_code == code, result.output
    assert result.stdout.strip() == said


def test_routes_check_without_a_route(tmp_path: Path) -> None:
    path = tmp_path / "p.yml"
    path.write_text("upstreams:\n  demo: {url: http://127.0.0.1:9000/mcp, prefix: demo}\n")
    result = invoke("routes", "-c", str(path), "--check", "tools/call", "demo__add", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["route"] == {"upstream": "demo", "name": "add", "via": "prefix"}
    result = invoke("routes", "-c", str(path), "--check", "tools/call", "add")
    assert result.exit_code == 1
    assert "catalogue" in result.stdout
    assert invoke("routes", "-c", str(path), "--check", "ping", "x").exit_code == 2
    assert invoke("routes", "-c", str(path), "add").exit_code == 2


def test_routes_with_broken_config_fails(tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    path.write_text(BROKEN)
    result = invoke("routes", "-c", str(path))
    assert result.exit_code == 1
    assert ISSUE_LINE.match(result.stderr.splitlines()[0])


# -- list-servers ------------------------------------------------------------------------------


def test_list_servers_table(described_file: Path) -> None:
    result = invoke("list-servers", "-c", str(described_file))
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "s3cret" not in out
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "TRANSPORT", "TARGET", "AUTH", "PREFIX"]
    assert lines[1].split() == ["demo", "streamable-http", "http://127.0.0.1:9000/mcp", "bearer", "demo"]
    kb = lines[2].split()
    assert kb[0] == "kb" and kb[-2:] == ["header:X-Api-Key", "-"]
    assert kb[2] == "https://user:***@kb.example.com/mcp?api_token=***&tenant=acme"
    assert lines[3].split()[:2] == ["files", "stdio"]
    assert "--token=***" in lines[3]


def test_list_servers_json(described_file: Path) -> None:
    result = invoke("list-servers", "-c", str(described_file), "--json")
    assert result.exit_code == 0
    assert "s3cret" not in result.stdout
    servers = json.loads(result.stdout)["servers"]
    assert [s["auth"] for s in servers] == ["bearer", "header:X-Api-Key", "none", "none"]
    assert [s["prefix"] for s in servers] == ["demo", None, None, None]
    assert all("probe" not in s for s in servers)


def write_demo_config(tmp_path: Path, url: str, extra: str = "") -> Path:
    path = tmp_path / "demo.yml"
    path.write_text(f"upstreams:\n  demo:\n    url: {url}\n    auth: {{type: bearer, token: s3cret-tok}}\n{extra}")
    return path


def test_list_servers_probe(tmp_path: Path, mcp_upstream_url: str) -> None:
    path = write_demo_config(tmp_path, mcp_upstream_url)
    result = invoke("list-servers", "-c", str(path), "--probe")
    assert result.exit_code == 0, result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "NAME",
        "TRANSPORT",
        "TARGET",
        "AUTH",
        "PREFIX",
        "HEALTH",
        "PROTOCOL",
        "TOOLS",
        "RESOURCES",
        "PROMPTS",
        "LATENCY",
    ]
    row = lines[1].split()
    assert row[:9] == ["demo", "streamable-http", mcp_upstream_url, "bearer", "-", "healthy", "2026-07-28", "5", "1"]
    assert row[9] == "1" and row[10].endswith("ms")
    assert "s3cret" not in result.stdout


def test_list_servers_probe_json_and_unhealthy_exit(tmp_path: Path, mcp_upstream_url: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}/mcp"
    path = write_demo_config(tmp_path, mcp_upstream_url, f"  down:\n    url: {closed}\n")
    result = invoke("list-servers", "-c", str(path), "--probe", "--json", "--timeout", "3")
    assert result.exit_code == 1
    up, down = json.loads(result.stdout)["servers"]
    assert up["probe"]["healthy"] is True and up["probe"]["era"] == "modern" and up["probe"]["tools"] == 5
    assert down["probe"] == {
        "name": "down",
        "healthy": False,
        "protocol_version": None,
        "era": None,
        "tools": None,
        "resources": None,
        "prompts": None,
        "latency_ms": None,
        "error": "connection refused",
    }
    table = invoke("list-servers", "-c", str(path), "--probe")
    assert table.exit_code == 1
    assert "unhealthy" in table.stdout
    assert table.stdout.rstrip().endswith("down: connection refused")


# -- health ------------------------------------------------------------------------------------


@pytest.fixture
def readiness_server() -> Iterator[Callable[[int, Any], str]]:
    """An aiohttp server in its own thread (the CLI runs its own event loop) answering /readyz."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runners: list[web.AppRunner] = []

    def start(status: int, body: Any) -> str:
        async def readyz(request: web.Request) -> web.Response:
            return web.json_response(body, status=status)

        async def serve() -> str:
            app = web.Application()
            app.router.add_get("/readyz", readyz)
            runner = web.AppRunner(app)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            return f"http://127.0.0.1:{runner.addresses[0][1]}/readyz"

        return asyncio.run_coroutine_threadsafe(serve(), loop).result(10)

    yield start

    async def stop() -> None:
        for runner in runners:
            await runner.cleanup()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_health_ok(readiness_server: Callable[[int, Any], str]) -> None:
    url = readiness_server(200, {"status": "ready"})
    result = invoke("health", "--url", url)
    assert result.exit_code == 0
    assert result.stdout == f"healthy: {url} (200)\n"


def test_health_given_a_base_url_asks_its_readyz(readiness_server: Callable[[int, Any], str]) -> None:
    url = readiness_server(200, {"status": "ready"})
    base = url.removesuffix("/readyz")
    for given in (base, base + "/"):
        result = invoke("health", "--url", given)
        assert result.exit_code == 0, result.stdout
        assert result.stdout == f"healthy: {url} (200)\n"


def test_health_not_ready(readiness_server: Callable[[int, Any], str]) -> None:
    body = {
        "status": "not_ready",
        "upstreams": {
            "github": {"state": "unhealthy", "last_error": "connection refused"},
            "kb": {"state": "healthy", "last_error": None},
        },
    }
    url = readiness_server(503, body)
    result = invoke("health", "--url", url)
    assert result.exit_code == 1
    assert result.stdout == f"unhealthy: {url} (503): not_ready: github unhealthy (connection refused)\n"


def test_health_json(readiness_server: Callable[[int, Any], str]) -> None:
    url = readiness_server(503, {"status": "shutting_down"})
    result = invoke("health", "--url", url, "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "healthy": False,
        "url": url,
        "status": 503,
        "error": None,
        "body": {"status": "shutting_down"},
    }
    assert result.stderr.startswith("unhealthy: ")


def test_health_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}/readyz"
    result = invoke("health", "--url", url, "--timeout", "2")
    assert result.exit_code == 1
    assert result.stdout == f"unreachable: {url}: connection refused\n"


def test_health_url_from_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    port = free_port()
    (tmp_path / "mcpgate.yml").write_text(
        f"server: {{host: 0.0.0.0, port: {port}}}\nupstreams:\n  demo: {{url: http://127.0.0.1:9/mcp}}\n"
    )
    result = invoke("health")
    assert result.stdout == f"unreachable: http://127.0.0.1:{port}/readyz: connection refused\n"
    other = free_port()
    result = invoke("health", env={"MCPGATE_PORT": str(other)})
    assert f"http://127.0.0.1:{other}/readyz" in result.stdout


def test_health_with_invalid_config_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mcpgate.yml").write_text(BROKEN)
    result = invoke("health")
    assert result.exit_code == 1
    assert ISSUE_LINE.match(result.stderr.splitlines()[0])
    assert "pass --url" in result.stderr.splitlines()[-1]


def test_health_with_missing_named_config_fails(tmp_path: Path) -> None:
    assert invoke("health", "-c", str(tmp_path / "absent.yml")).exit_code == 1


def test_health_without_config_uses_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.default_health_url(None) == "http://127.0.0.1:8080/readyz"
    monkeypatch.setenv("MCPGATE_HOST", "::")
    monkeypatch.setenv("MCPGATE_PORT", "9001")
    assert cli.default_health_url(None) == "http://127.0.0.1:9001/readyz"
    monkeypatch.setenv("MCPGATE_HOST", "::1")
    assert cli.default_health_url(None) == "http://[::1]:9001/readyz"


# -- start -------------------------------------------------------------------------------------


@pytest.fixture
def captured_run(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """Replace the server with a recorder: start is tested up to the hand-over, no socket opened."""
    import mcpgate.server

    seen: list[Config] = []

    def fake_run(config: Config, loader: object = None, *, migrate: bool = True) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr(mcpgate.server, "run", fake_run)
    monkeypatch.setattr("mcpgate.workers.supervise", fake_run)  # server.workers > 1: no fork either
    return seen


def test_start_uses_the_file(config_file: Path, captured_run: list[Config]) -> None:
    result = invoke("start", "-c", str(config_file))
    assert result.exit_code == 0, result.stderr
    (config,) = captured_run
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8001)
    assert [u.name for u in config.upstreams] == ["demo", "kb"]


def test_start_precedence_flag_over_env_over_file(config_file: Path, captured_run: list[Config]) -> None:
    env = {"MCPGATE_PORT": "8002", "MCPGATE_HOST": "0.0.0.0", "MCPGATE_LOG_LEVEL": "debug"}
    invoke("start", "-c", str(config_file), env=env)
    invoke("start", "-c", str(config_file), "--port", "8003", "--log-level", "error", env=env)
    from_env, from_flag = captured_run
    assert (from_env.server.host, from_env.server.port) == ("0.0.0.0", 8002)
    assert from_env.observability.logging.level == "debug"
    assert (from_flag.server.host, from_flag.server.port) == ("0.0.0.0", 8003)
    assert from_flag.observability.logging.level == "error"


def test_start_default_when_neither_file_nor_flag(tmp_path: Path, captured_run: list[Config]) -> None:
    path = tmp_path / "minimal.yml"
    path.write_text("upstreams:\n  demo: {url: http://127.0.0.1:9000/mcp}\n")
    assert invoke("start", "-c", str(path)).exit_code == 0
    assert captured_run[0].server.port == 8080
    assert captured_run[0].server.workers == 1


def test_start_every_override(tmp_path: Path, captured_run: list[Config], monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "shared.yml"
    path.write_text(CONFIG + "sessions: {backend: redis}\nrate_limit: {backend: redis}\n")
    args = ["--host", "::1", "--port", "9100", "--workers", "2", "--shutdown-timeout", "3.5", "--log-format", "json"]
    env = {"MCPGATE_WORKERS": "4", "MCPGATE_SHUTDOWN_TIMEOUT": "1", "MCPGATE_LOG_FORMAT": "text"}
    invoke("start", "-c", str(path), *args, env=env)
    invoke("start", "-c", str(path), env=env)
    flags, envs = (c.server for c in captured_run)
    assert (flags.host, flags.port, flags.workers, flags.shutdown_timeout) == ("::1", 9100, 2, 3.5)
    assert (envs.workers, envs.shutdown_timeout) == (4, 1.0)
    assert [c.observability.logging.format for c in captured_run] == ["json", "text"]


def test_start_validates_overrides_like_the_file(config_file: Path, captured_run: list[Config]) -> None:
    result = invoke("start", "-c", str(config_file), "--workers", "2")  # memory sessions: one process only
    assert result.exit_code == 78
    assert captured_run == []
    assert ISSUE_LINE.match(result.stderr.splitlines()[0])
    assert "server.workers" in result.stderr


def test_start_returns_the_servers_exit_code(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mcpgate.server

    monkeypatch.setattr(mcpgate.server, "run", lambda config, loader=None, migrate=True: 3)
    assert invoke("start", "-c", str(config_file)).exit_code == 3


def test_start_with_broken_config_exits_78(tmp_path: Path, captured_run: list[Config]) -> None:
    path = tmp_path / "broken.yml"
    path.write_text(BROKEN)
    result = invoke("start", "-c", str(path))
    assert result.exit_code == cli.EXIT_CONFIG == 78
    assert captured_run == []
    lines = result.stderr.strip().splitlines()
    assert ISSUE_LINE.match(lines[0])
    assert "not starting" in lines[-1]


def test_start_without_any_config_exits_78(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert invoke("start").exit_code == 78


def test_start_bind_failure_exits_69(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mcpgate.server

    def taken(config: Config, loader: object = None, *, migrate: bool = True) -> int:
        raise OSError(errno.EADDRINUSE, "error while attempting to bind on address ('127.0.0.1', 8001)")

    monkeypatch.setattr(mcpgate.server, "run", taken)
    result = invoke("start", "-c", str(config_file))
    assert result.exit_code == cli.EXIT_UNAVAILABLE == 69
    assert result.stderr == "mcpgate: cannot listen on 127.0.0.1:8001: address already in use\n"


def test_start_bad_flag_value_is_a_usage_error(config_file: Path, captured_run: list[Config]) -> None:
    assert invoke("start", "-c", str(config_file), "--port", "70000").exit_code == 2
    assert invoke("start", "-c", str(config_file), env={"MCPGATE_PORT": "http"}).exit_code == 2
    assert captured_run == []


# -- overriding any value: --set and MCPGATE__ ----------------------------------------------------


def test_set_and_mcpgate_variables_override_any_value_in_precedence_order(
    tmp_path: Path, captured_run: list[Config]
) -> None:
    path = tmp_path / "gateway.yml"
    path.write_text(CONFIG.replace("  demo:", "  Demo:") + "sessions: {idle_timeout: 5m}\n")
    env: dict[str, str | None] = {
        "MCPGATE__UPSTREAMS__DEMO__TIMEOUT": "12s",  # matched to "Demo" whatever its case
        "MCPGATE__SERVER__PORT": "9001",
        "MCPGATE__SERVER__ALLOWED_ORIGINS": "[https://a.example, https://b.example]",
        "MCPGATE__SESSIONS__IDLE_TIMEOUT": "1m",
    }
    invoke("start", "-c", str(path), env=env)
    invoke("start", "-c", str(path), "--set", "sessions.idle_timeout=90", "--set", "server.port=9002", env=env)
    invoke("start", "-c", str(path), "--set", "server.port=9002", env={**env, "MCPGATE_PORT": "9003"})
    invoke("start", "-c", str(path), "--set", "server.port=9002", "--port", "9004", env=env)
    by_env, by_set, set_over_env_var, flag_over_set = captured_run
    assert by_env.upstreams[0].timeout == 12.0 and by_env.sessions.idle_timeout == 60.0
    assert by_env.server.port == 9001
    assert by_env.server.allowed_origins == ("https://a.example", "https://b.example")  # YAML, not text
    assert (by_set.sessions.idle_timeout, by_set.server.port) == (90.0, 9002)
    assert set_over_env_var.server.port == 9002  # a flag beats any variable
    assert flag_over_set.server.port == 9004  # the named flag beats --set


def test_bad_overrides_are_reported_by_the_flag_or_variable_that_gave_them(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yml"
    path.write_text(CONFIG)
    result = invoke(
        "validate", "-c", str(path), "--set", "server.port=high", env={"MCPGATE__UPSTREAMS__DEMO__TIMEOUT": "soon"}
    )
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert "--set server.port:0:0: server.port: expected an integer, got a string (value hidden)" in lines
    assert any(line.startswith("MCPGATE__UPSTREAMS__DEMO__TIMEOUT:0:0: upstreams.demo.timeout: ") for line in lines)
    started = invoke("start", "-c", str(path), "--set", "server.port=high")
    assert started.exit_code == 78
    assert invoke("validate", "-c", str(path), "--set", "port").exit_code == 2  # not PATH=VALUE: usage


def test_override_values_are_read_as_yaml() -> None:
    from mcpgate.config.overrides import from_environment, scalar

    assert [scalar(t) for t in ("9000", "true", "10s", "[a, b]", "", "null", "a: b")] == [
        9000, True, "10s", ["a", "b"], "", None, {"a": "b"},
    ]  # fmt: skip
    found = from_environment({"MCPGATE__SERVER__MAX_BODY_BYTES": "1024", "MCPGATE_PORT": "1", "MCPGATE__": "x"})
    assert found.values == {"server.max_body_bytes": 1024}
    assert found.origins == {"server.max_body_bytes": "MCPGATE__SERVER__MAX_BODY_BYTES"}
