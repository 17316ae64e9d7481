from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from mcpgate.config.model import UpstreamAuth, UpstreamConfig
from mcpgate.upstream.probe import MAX_PAGES, ProbeResult, probe_upstream
from tests.conftest import DEMO_SERVER, free_port

SECRET = "Bearer pr0be-s3cret"


def http_upstream(url: str, **kwargs: Any) -> UpstreamConfig:
    return UpstreamConfig(name="up", transport="streamable-http", url=url, **kwargs)


# -- against the real SDK server ---------------------------------------------------------------


async def test_modern_server_detected_with_counts(mcp_upstream_url: str) -> None:
    result = await probe_upstream(http_upstream(mcp_upstream_url, auth=UpstreamAuth("bearer", "Authorization", SECRET)))
    assert result == ProbeResult(
        name="up",
        healthy=True,
        protocol_version="2026-07-28",
        era="modern",
        tools=5,  # add, echo, countdown, sleep, fail
        resources=1,  # demo://greeting; the items template is not a resource
        prompts=1,  # review
        latency_ms=result.latency_ms,
        error=None,
    )
    assert result.latency_ms is not None and result.latency_ms > 0


async def test_legacy_handshake_against_the_sdk_server(mcp_upstream_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo server speaks both eras: pretend discovery failed to drive the legacy path for real."""
    from mcpgate.upstream import probe

    async def not_modern(self: Any) -> tuple[str, None]:
        return "HTTP 400 Bad Request", None

    monkeypatch.setattr(probe._Rpc, "discover", not_modern)
    result = await probe_upstream(http_upstream(mcp_upstream_url))
    assert result.healthy, result.error
    assert (result.era, result.protocol_version) == ("legacy", "2025-11-25")
    assert (result.tools, result.resources, result.prompts) == (5, 1, 1)


async def test_shared_session_is_left_open(mcp_upstream_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        first = await probe_upstream(http_upstream(mcp_upstream_url), session=session)
        second = await probe_upstream(http_upstream(mcp_upstream_url), session=session)
        assert not session.closed
    assert first.healthy and second.healthy


async def test_closed_port_is_unhealthy_without_raising() -> None:
    result = await probe_upstream(http_upstream(f"http://127.0.0.1:{free_port()}/mcp"))
    assert not result.healthy
    assert result.error == "connection refused"
    assert result.era is None and result.latency_ms is None


async def test_an_sse_upstream_that_is_down_is_unhealthy_at_once() -> None:
    cfg = UpstreamConfig(name="x", transport="sse", url=f"http://127.0.0.1:{free_port()}/sse")
    result = await probe_upstream(cfg)
    assert not result.healthy
    assert result.error == "cannot open the event stream: ClientConnectorError"


async def test_a_stdio_upstream_is_started_asked_and_stopped() -> None:
    cfg = UpstreamConfig(
        name="x", transport="stdio", command=(sys.executable, str(DEMO_SERVER), "--transport", "stdio")
    )
    result = await probe_upstream(cfg, timeout=30)
    assert result.healthy, result.error
    assert (result.era, result.protocol_version) == ("legacy", "2025-11-25")
    assert (result.tools, result.resources, result.prompts) == (5, 1, 1)


async def test_a_stdio_upstream_that_exits_is_unhealthy_at_once() -> None:
    cfg = UpstreamConfig(name="x", transport="stdio", command=(sys.executable, "-c", "raise SystemExit(2)"))
    result = await probe_upstream(cfg, timeout=30)
    assert not result.healthy
    assert result.error == "exited with status 2 before answering initialize"


# -- against scripted servers ------------------------------------------------------------------

Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


@dataclass
class Scripted:
    url: str
    seen: list[tuple[str, dict[str, str], dict[str, Any] | None]] = field(default_factory=list)

    def methods(self) -> list[str]:
        return [m for m, _, _ in self.seen]


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Handler], Awaitable[Scripted]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> Scripted:
        state = Scripted("")

        async def endpoint(request: web.Request) -> web.StreamResponse:
            body = await request.json() if request.method == "POST" else None
            state.seen.append(
                (body["method"] if body else request.method, dict(request.headers), body)  # type: ignore[arg-type]
            )
            return await handler(request, body or {})

        app = web.Application()
        app.router.add_route("*", "/mcp", endpoint)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/mcp"
        return state

    yield start
    for runner in runners:
        await runner.cleanup()


def sse(*messages: dict[str, Any]) -> bytes:
    # CRLF framing, as the SDK server writes it.
    return b"".join(b"event: message\r\ndata: " + json.dumps(m).encode() + b"\r\n\r\n" for m in messages)


async def legacy_server(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """A legacy-only server: rejects server/discover, pages tools/list, answers in SSE."""
    if request.method == "DELETE":
        return web.Response(status=200)
    method, rid = body.get("method"), body.get("id")
    if method == "server/discover":
        return web.json_response(
            {"jsonrpc": "2.0", "id": rid, "error": {"code": -32000, "message": "Bad Request"}}, status=400
        )
    if method == "initialize":
        result = {
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}, "resources": {}},
            "serverInfo": {"name": "old"},
        }
        return web.Response(
            body=sse({"jsonrpc": "2.0", "id": rid, "result": result}),
            content_type="text/event-stream",
            headers={"Mcp-Session-Id": "sess-1"},
        )
    if method == "notifications/initialized":
        return web.Response(status=202)
    if method == "tools/list":
        cursor = body.get("params", {}).get("cursor")
        page = (
            {"tools": [{"name": "a"}, {"name": "b"}], "nextCursor": "p2"}
            if cursor is None
            else {"tools": [{"name": "c"}]}
        )
        log = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}}
        return web.Response(
            body=sse(log, {"jsonrpc": "2.0", "id": rid, "result": page}), content_type="text/event-stream"
        )
    if method == "resources/list":
        return web.json_response({"jsonrpc": "2.0", "id": rid, "result": {"resources": []}})
    return web.json_response({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "nope"}})


async def test_legacy_fallback_session_and_pagination(scripted: Callable[[Handler], Awaitable[Scripted]]) -> None:
    server = await scripted(legacy_server)
    cfg = http_upstream(server.url, auth=UpstreamAuth("header", "X-Api-Key", "k3y"), headers=(("X-Tenant", "acme"),))
    result = await probe_upstream(cfg)
    assert result.healthy, result.error
    assert (result.era, result.protocol_version) == ("legacy", "2025-06-18")
    assert (result.tools, result.resources, result.prompts) == (3, 0, None)  # prompts not advertised
    assert server.methods() == [
        "server/discover",
        "initialize",
        "notifications/initialized",
        "tools/list",
        "tools/list",
        "resources/list",
        "DELETE",
    ]
    for _, headers, _ in server.seen:
        assert headers["X-Api-Key"] == "k3y" and headers["X-Tenant"] == "acme"
    _, discover_headers, discover = server.seen[0]
    assert discover_headers["Mcp-Method"] == "server/discover"
    assert discover_headers["MCP-Protocol-Version"] == "2026-07-28"
    assert "text/event-stream" in discover_headers["Accept"]
    assert (
        discover is not None and discover["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] == "2026-07-28"
    )
    _, init_headers, init = server.seen[1]
    assert "Mcp-Session-Id" not in init_headers
    assert init is not None and init["params"]["clientInfo"]["name"] == "mcpgate-probe"
    assert init["params"]["protocolVersion"] == "2025-11-25"
    for _, headers, _ in server.seen[2:]:
        assert headers["Mcp-Session-Id"] == "sess-1"
        assert headers["MCP-Protocol-Version"] == "2025-06-18"
        assert "Mcp-Method" not in headers


async def test_pagination_is_bounded(scripted: Callable[[Handler], Awaitable[Scripted]]) -> None:
    async def endless(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        rid = body["id"]
        if body["method"] == "server/discover":
            return web.json_response({"jsonrpc": "2.0", "id": rid, "result": {"capabilities": {"prompts": {}}}})
        return web.json_response({"jsonrpc": "2.0", "id": rid, "result": {"prompts": [{}], "nextCursor": "again"}})

    server = await scripted(endless)
    result = await probe_upstream(http_upstream(server.url))
    assert result.healthy and result.era == "modern"
    assert result.prompts == MAX_PAGES
    assert (result.tools, result.resources) == (None, None)


async def test_modern_requests_carry_meta_and_method(scripted: Callable[[Handler], Awaitable[Scripted]]) -> None:
    async def modern(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        rid = body["id"]
        if body["method"] == "server/discover":
            return web.json_response({"jsonrpc": "2.0", "id": rid, "result": {"capabilities": {"tools": {}}}})
        return web.Response(
            body=sse({"jsonrpc": "2.0", "id": rid, "result": {"tools": [{"name": "t"}]}}).replace(b"\r\n", b"\n"),
            content_type="text/event-stream",
        )

    server = await scripted(modern)
    result = await probe_upstream(http_upstream(server.url))
    assert (result.healthy, result.tools) == (True, 1)
    _, headers, body = server.seen[1]
    assert headers["Mcp-Method"] == "tools/list" and headers["MCP-Protocol-Version"] == "2026-07-28"
    assert body is not None and "io.modelcontextprotocol/clientCapabilities" in body["params"]["_meta"]


async def respond_401(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    return web.Response(status=401, text=f"bad token {request.headers.get('Authorization')}")


async def respond_bad_json(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    if body["method"] == "server/discover":
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": {"capabilities": {"tools": {}}}})
    return web.Response(text="{not json", content_type="application/json")


async def respond_slowly(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    await asyncio.sleep(1)  # well past the probe's 0.3s; short so that the test server stops quickly
    return web.Response(status=500)


async def respond_tool_error(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    if body["method"] == "server/discover":
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": {"capabilities": {"tools": {}}}})
    error = {"code": -32603, "message": "database down"}
    return web.json_response({"jsonrpc": "2.0", "id": body["id"], "error": error})


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (respond_401, "initialize: HTTP 401 Unauthorized (server/discover: HTTP 401 Unauthorized)"),
        (respond_bad_json, "tools/list: bad JSON in response"),
        (respond_slowly, "timed out after 0.3s"),
        (respond_tool_error, "tools/list: error -32603: database down"),
    ],
)
async def test_failures_are_short_and_secret_free(
    scripted: Callable[[Handler], Awaitable[Scripted]], handler: Handler, expected: str
) -> None:
    server = await scripted(handler)
    url = server.url.replace("http://", "http://user:pw-s3cret@")
    result = await probe_upstream(
        http_upstream(url, auth=UpstreamAuth("header", "X-Api-Key", "k3y-s3cret")), timeout=0.3
    )
    assert not result.healthy
    assert result.error == expected
    assert "s3cret" not in repr(result)


async def test_credentials_in_url_and_header_are_reported_not_raised() -> None:
    cfg = http_upstream("http://user:pw-s3cret@127.0.0.1:1/mcp", auth=UpstreamAuth("bearer", "Authorization", SECRET))
    result = await probe_upstream(cfg)
    assert not result.healthy
    assert result.error is not None and "s3cret" not in result.error


async def test_partial_findings_survive_a_failure(scripted: Callable[[Handler], Awaitable[Scripted]]) -> None:
    server = await scripted(respond_tool_error)
    result = await probe_upstream(http_upstream(server.url))
    assert (result.healthy, result.era, result.tools) == (False, "modern", None)
    assert result.latency_ms is not None
