"""End to end with the official SDK on both sides: MCPServer upstream, mcp.Client in each era."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.gateway_harness import (
    LEGACY,
    POST_HEADERS,
    initialize,
    make_config,
    modern_call,
    modern_headers,
    open_session,
    rpc,
    running_gateway,
    sdk_client,
    session_headers,
)

pytestmark = pytest.mark.e2e

MODES = ["legacy", "2026-07-28", "auto"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", ["/servers/demo/mcp", "/mcp/demo"])
async def test_tools_resources_prompts_through_the_gateway(mcp_upstream_url: str, mode: str, path: str) -> None:
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, sdk_client(gw.url + path, mode) as c:
        tools = await c.list_tools()
        assert {"add", "echo", "countdown", "sleep", "fail"} <= {t.name for t in tools.tools}

        result = await c.call_tool("add", {"a": 2, "b": 3})
        assert not result.is_error
        assert result.structured_content == {"result": 5}

        failed = await c.call_tool("fail", {"message": "boom"})
        assert failed.is_error
        assert "fail" in failed.content[0].text  # type: ignore[union-attr]

        resource = await c.read_resource("demo://greeting")
        assert resource.contents[0].text == "Hello from the mcpgate demo server"  # type: ignore[union-attr]
        templated = await c.read_resource("demo://items/42")
        assert templated.contents[0].text == "item 42"  # type: ignore[union-attr]

        prompt = await c.get_prompt("review", {"code": "x = 1"})
        assert "x = 1" in prompt.messages[0].content.text  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", MODES)
async def test_progress_reaches_the_sdk_client(mcp_upstream_url: str, mode: str) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw:
        async with sdk_client(gw.endpoint("demo"), mode) as c:
            result = await c.call_tool("countdown", {"steps": 3, "delay": 0.01}, progress_callback=on_progress)
    assert result.content[0].text == "lift-off after 3 steps"  # type: ignore[union-attr]
    assert [p for p, _, _ in seen] == [1, 2, 3]
    assert seen[0][2] == "step 1 of 3"


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_progress_is_streamed_not_buffered(mcp_upstream_url: str, era: str) -> None:
    """The first progress event reaches the client while the tool is still running."""
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        url = gw.endpoint("demo")
        params = {"name": "countdown", "arguments": {"steps": 3, "delay": 0.5}, "_meta": {"progressToken": "p"}}
        if era == "legacy":
            headers, body = session_headers(await initialize(http, url)), rpc("tools/call", params, id=7)
        else:
            headers = modern_headers("tools/call", "countdown")
            body = modern_call("tools/call", params, id=7)
            body["params"]["_meta"]["progressToken"] = "p"
        async with http.post(url, json=body, headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert resp.headers["X-Accel-Buffering"] == "no"
            first = b""
            while b"\n\n" not in first.replace(b"\r\n", b"\n"):
                first += await resp.content.readany()
            assert b"notifications/progress" in first
            assert b'"result"' not in first, "the result came together with the first progress event"
            rest = await resp.read()
        assert b'"id":7' in rest and b"lift-off after 3 steps" in rest


async def test_gateway_issues_its_own_session_ids(mcp_upstream_url: str) -> None:
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        url, sid, session = await open_session(gw, http)
        upstream_sid = session.upstream_sessions["demo"]
        assert upstream_sid and upstream_sid != sid
        assert len(sid) == 32 and int(sid, 16) >= 0  # 128 random bits, hex

        async with http.post(url, json=rpc("tools/list", {}, id=2), headers=session_headers(sid)) as resp:
            assert resp.status == 200
            assert resp.headers["Mcp-Session-Id"] == sid
            assert upstream_sid not in await resp.text()

        # A session belongs to the endpoint it was opened on.
        other = gw.url + "/servers/other/mcp"
        async with http.post(other, json=rpc("tools/list", {}, id=3), headers=session_headers(sid)) as resp:
            assert resp.status == 404


async def test_unknown_and_missing_sessions(mcp_upstream_url: str) -> None:
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        url = gw.endpoint("demo")
        async with http.post(url, json=rpc("tools/list", {}), headers=session_headers("f" * 32)) as resp:
            assert resp.status == 404
            body = await resp.json()
            assert body["error"]["data"]["reason"] == "session_not_found"
            assert body["id"] == 1
        headers = {**POST_HEADERS, "MCP-Protocol-Version": LEGACY}
        async with http.post(url, json=rpc("tools/list", {}), headers=headers) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["data"]["reason"] == "session_required"
        async with http.get(url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": "nope"}) as resp:
            assert resp.status == 404
        async with http.delete(url, headers={"Mcp-Session-Id": "nope"}) as resp:
            assert resp.status == 404


async def test_delete_ends_the_upstream_session_too(mcp_upstream_url: str) -> None:
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        url, sid, session = await open_session(gw, http)
        upstream_sid = session.upstream_sessions["demo"]
        assert upstream_sid is not None
        async with http.delete(url, headers={"Mcp-Session-Id": sid, "MCP-Protocol-Version": LEGACY}) as resp:
            assert resp.status == 200
        async with http.post(url, json=rpc("tools/list", {}), headers=session_headers(sid)) as resp:
            assert resp.status == 404
        # The upstream no longer knows the session either.
        direct = session_headers(upstream_sid)
        async with http.post(mcp_upstream_url, json=rpc("tools/list", {}), headers=direct) as resp:
            assert resp.status == 404


async def test_expired_upstream_session_is_reopened_transparently(mcp_upstream_url: str) -> None:
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        url, sid, session = await open_session(gw, http)
        old = session.upstream_sessions["demo"]
        assert old is not None
        # The upstream forgets the session behind the gateway's back.
        async with http.delete(mcp_upstream_url, headers={"Mcp-Session-Id": old}) as resp:
            assert resp.status == 200
        body = rpc("tools/call", {"name": "add", "arguments": {"a": 1, "b": 1}}, id=5)
        async with http.post(url, json=body, headers=session_headers(sid)) as resp:
            assert resp.status == 200
            text = await resp.text()
        assert '"id":5' in text and '"isError":false' in text
        new = session.upstream_sessions["demo"]
        assert new is not None and new != old


async def test_legacy_get_stream_and_modern_get(mcp_upstream_url: str) -> None:
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        url = gw.endpoint("demo")
        sid = await initialize(http, url)
        headers = {"Accept": "text/event-stream", "Mcp-Session-Id": sid, "MCP-Protocol-Version": LEGACY}
        async with http.get(url, headers=headers) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/event-stream"
        # Modern: GET is answered as the upstream answers it (the SDK says 405, POST only).
        async with http.get(url, headers={"Accept": "text/event-stream", "MCP-Protocol-Version": "2026-07-28"}) as r:
            assert r.status == 405
            assert "POST" in r.headers.get("Allow", "")


async def test_notifications_get_202(mcp_upstream_url: str) -> None:
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        url = gw.endpoint("demo")
        sid = await initialize(http, url)
        note = rpc("notifications/cancelled", {"requestId": 99}, id=None)
        async with http.post(url, json=note, headers=session_headers(sid)) as resp:
            assert resp.status == 202
            assert await resp.read() == b""


async def test_modern_header_mismatch_is_rejected_before_the_upstream(mcp_upstream_url: str) -> None:
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        url = gw.endpoint("demo")
        body = modern_call("tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}})
        for headers in (modern_headers("tools/call", "echo"), modern_headers("tools/list", "add")):
            async with http.post(url, json=body, headers=headers) as resp:
                assert resp.status == 400
                error = (await resp.json())["error"]
                assert error["code"] == -32020
                assert error["data"]["reason"] == "header_mismatch"
        # The base64 form of a header value is understood.
        encoded = modern_headers("tools/call", "=?base64?YWRk?=")
        async with http.post(url, json=body, headers=encoded) as resp:
            assert resp.status == 200
            assert json.loads(await resp.read())["result"]["structuredContent"] == {"result": 3}


async def test_batches_only_in_2025_03_26(mcp_upstream_url: str) -> None:
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        url = gw.endpoint("demo")
        sid = await initialize(http, url)
        batch = [rpc("tools/list", {}, id=1), rpc("prompts/list", {}, id=2)]
        async with http.post(url, json=batch, headers=session_headers(sid)) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["data"]["reason"] == "batch_not_supported"


async def test_many_concurrent_calls(mcp_upstream_url: str) -> None:
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw:
        async with sdk_client(gw.endpoint("demo"), "2026-07-28") as c:
            results = await asyncio.gather(*(c.call_tool("add", {"a": i, "b": i}) for i in range(20)))
    assert [r.structured_content for r in results] == [{"result": 2 * i} for i in range(20)]


async def test_concurrent_calls_reopen_a_lost_upstream_session_once(
    mcp_upstream_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="mcpgate.proxy")
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        url, sid, session = await open_session(gw, http)
        old = session.upstream_sessions["demo"]
        async with http.delete(mcp_upstream_url, headers={"Mcp-Session-Id": old or ""}) as resp:
            assert resp.status == 200

        async def call(i: int) -> str:
            body = rpc("tools/call", {"name": "add", "arguments": {"a": i, "b": 0}}, id=100 + i)
            async with http.post(url, json=body, headers=session_headers(sid)) as resp:
                assert resp.status == 200
                return await resp.text()

        answers = await asyncio.gather(*(call(i) for i in range(5)))
    assert all(f'"id":{100 + i}' in a for i, a in enumerate(answers))
    reopened = [r for r in caplog.records if r.getMessage().startswith("re-opened the session")]
    assert len(reopened) == 1
    assert not gw.gateway.sessions._locks
