"""Bad input and upstream faults: each gets a clear JSON-RPC error and the right status; nothing hangs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from mcpgate.config import ConfigError, load_config
from mcpgate.config.model import UpstreamAuth, UpstreamConfig
from tests.conftest import free_port
from tests.gateway_harness import (
    POST_HEADERS,
    RunningGateway,
    initialize,
    make_config,
    modern_call,
    modern_headers,
    raw_upstream,
    rpc,
    running_gateway,
    session_headers,
)

pytestmark = pytest.mark.e2e


async def expect_error(
    resp: aiohttp.ClientResponse, status: int, reason: str, code: int | None = None
) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["jsonrpc"] == "2.0"
    assert body["error"]["data"]["reason"] == reason
    if code is not None:
        assert body["error"]["code"] == code
    return body


async def test_malformed_and_wrong_input(mcp_upstream_url: str) -> None:
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        url = gw.endpoint("demo")
        async with http.post(url, data=b"{not json", headers=POST_HEADERS) as resp:
            body = await expect_error(resp, 400, "parse_error", -32700)
            assert body["id"] is None
        for wrong in (
            [],
            42,
            {"jsonrpc": "1.0", "id": 1, "method": "x"},
            {"jsonrpc": "2.0", "id": 1},
            {"jsonrpc": "2.0", "id": True, "method": "x"},
            {"jsonrpc": "2.0", "method": "x", "params": [1]},
        ):
            async with http.post(url, data=json.dumps(wrong), headers=POST_HEADERS) as resp:
                await expect_error(resp, 400, "invalid_request", -32600)
        async with http.post(url, data=b"{}", headers={**POST_HEADERS, "Content-Type": "text/plain"}) as resp:
            await expect_error(resp, 415, "unsupported_media_type")
        async with http.post(url, json=rpc("ping"), headers={**POST_HEADERS, "Accept": "application/json"}) as resp:
            await expect_error(resp, 406, "not_acceptable")
        headers = {**POST_HEADERS, "MCP-Protocol-Version": "1999-01-01"}
        async with http.post(url, json=rpc("tools/list", {}), headers=headers) as resp:
            body = await expect_error(resp, 400, "unsupported_protocol_version", -32022)
            assert "2026-07-28" in body["error"]["data"]["supported"]
        async with http.put(url, data=b"{}", headers=POST_HEADERS) as resp:
            await expect_error(resp, 405, "method_not_allowed")
            assert "POST" in resp.headers["Allow"]


async def test_the_body_must_be_declared_json_however_the_header_spells_it(mcp_upstream_url: str) -> None:
    """Content-Type is read as aiohttp reads it (media type case-insensitive, parameters ignored),
    once per distinct value: a cached reading must not let a near miss through."""
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        url = gw.endpoint("demo")
        for accepted in ("application/json; charset=utf-8", "Application/JSON", "application/json ;charset=UTF-8"):
            for _ in range(2):  # the second time from the cache
                headers = {**modern_headers("tools/list"), "Content-Type": accepted}
                async with http.post(url, data=json.dumps(modern_call("tools/list")), headers=headers) as resp:
                    assert resp.status == 200, (accepted, await resp.text())
                    assert "tools" in (await resp.json())["result"]
        for refused in ("text/plain", "application/jsonx", "application/json-seq", "json", ""):
            for _ in range(2):
                headers = {**modern_headers("tools/list"), "Content-Type": refused}
                async with http.post(url, data=json.dumps(modern_call("tools/list")), headers=headers) as resp:
                    await expect_error(resp, 415, "unsupported_media_type")
        no_type = {k: v for k, v in modern_headers("tools/list").items() if k != "Content-Type"}
        body = json.dumps(modern_call("tools/list"))
        async with http.post(url, data=body, headers=no_type, skip_auto_headers=["Content-Type"]) as resp:
            await expect_error(resp, 415, "unsupported_media_type")


async def test_an_unknown_version_is_answered_with_what_the_upstream_discovers(mcp_upstream_url: str) -> None:
    """MCP-NOTES: -32022's data.supported lists only versions the server's server/discover lists,
    and data.requested echoes the version asked for; a gateway speaking for an upstream must agree
    with that upstream, and on /mcp with its own discover answer."""

    async def discovering(request: web.Request) -> web.Response:
        body = await request.json()
        result = {"supportedVersions": ["2026-07-28", "2099-01-01"], "capabilities": {}, "serverInfo": {"name": "u"}}
        return web.json_response({"jsonrpc": "2.0", "id": body.get("id"), "result": result})

    async with raw_upstream(discovering) as (url, _):
        async with running_gateway(make_config({"modern": url, "demo": mcp_upstream_url})) as gw:
            await gw.gateway.upstreams["modern"].probe()  # the heartbeat's server/discover
            async with aiohttp.ClientSession() as http:
                answers = {}
                for path in ("/servers/modern/mcp", "/mcp"):
                    headers = {**modern_headers("tools/list"), "MCP-Protocol-Version": "1999-01-01"}
                    async with http.post(gw.url + path, json=modern_call("tools/list"), headers=headers) as resp:
                        answers[path] = await expect_error(resp, 400, "unsupported_protocol_version", -32022)
                async with http.post(gw.url + "/mcp", json=modern_call("server/discover"),
                                     headers=modern_headers("server/discover")) as resp:  # fmt: skip
                    own = (await resp.json())["result"]["supportedVersions"]
    upstream_error, gateway_error = answers["/servers/modern/mcp"]["error"], answers["/mcp"]["error"]
    assert upstream_error["data"] == {"reason": "unsupported_protocol_version", "supported": ["2026-07-28"],
                                      "requested": "1999-01-01"}  # fmt: skip
    assert upstream_error["code"] == -32022 and answers["/mcp"]["id"] == 1  # the request's own id (SEP-2575)
    assert gateway_error["data"]["supported"] == own and gateway_error["data"]["requested"] == "1999-01-01"


async def test_request_id_is_echoed_in_gateway_errors(mcp_upstream_url: str) -> None:
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        body = modern_call("tools/call", {"name": "add"}, id=41)
        async with http.post(gw.endpoint("demo"), json=body, headers=modern_headers("tools/call", "x")) as resp:
            assert (await expect_error(resp, 400, "header_mismatch"))["id"] == 41


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversized_body(mcp_upstream_url: str, chunked: bool) -> None:
    config = make_config({"demo": mcp_upstream_url}, max_body_bytes=1024)
    async with running_gateway(config) as gw, aiohttp.ClientSession() as http:
        payload = json.dumps(rpc("tools/call", {"name": "echo", "arguments": {"text": "x" * 4096}})).encode()

        async def body_stream() -> Any:
            for i in range(0, len(payload), 100):
                yield payload[i : i + 100]

        data: Any = body_stream() if chunked else payload
        async with http.post(gw.endpoint("demo"), data=data, headers=POST_HEADERS) as resp:
            body = await expect_error(resp, 413, "body_too_large")
            assert body["error"]["data"]["limit"] == 1024


async def test_origin_allowlist(mcp_upstream_url: str) -> None:
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        url = gw.endpoint("demo")
        evil = {**POST_HEADERS, "Origin": "http://evil.example"}
        async with http.post(url, json=rpc("tools/list", {}), headers=evil) as resp:
            await expect_error(resp, 403, "origin_not_allowed")
        local = {**modern_headers("tools/list"), "Origin": "http://localhost:6274"}
        async with http.post(url, json=modern_call("tools/list"), headers=local) as resp:
            assert resp.status == 200
    config = make_config({"demo": mcp_upstream_url}, allowed_origins=("https://app.example.com",))
    async with running_gateway(config) as gw, aiohttp.ClientSession() as http:
        url = gw.endpoint("demo")
        for origin, status in (("https://app.example.com", 200), ("http://localhost:6274", 403)):
            headers = {**modern_headers("tools/list"), "Origin": origin}
            async with http.post(url, json=modern_call("tools/list"), headers=headers) as resp:
                assert resp.status == status


async def test_unknown_server(mcp_upstream_url: str) -> None:
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        for path in ("/servers/nope/mcp", "/mcp/nope"):
            async with http.post(
                gw.url + path, json=modern_call("tools/list"), headers=modern_headers("tools/list")
            ) as r:
                await expect_error(r, 404, "server_not_found")


async def test_upstream_refusing_connections() -> None:
    dead = f"http://127.0.0.1:{free_port()}/mcp"
    async with (
        running_gateway(make_config({"dead": dead})) as gw,
        aiohttp.ClientSession() as http,
        http.post(gw.endpoint("dead"), json=modern_call("tools/list"), headers=modern_headers("tools/list")) as r,
    ):
        body = await expect_error(r, 502, "upstream_unreachable")
        assert body["error"]["data"]["upstream"] == "dead"
        assert body["id"] == 1


async def test_upstream_timing_out(mcp_upstream_url: str) -> None:
    slow = UpstreamConfig(name="demo", transport="streamable-http", url=mcp_upstream_url, timeout=0.5)
    async with running_gateway(make_config({"demo": slow})) as gw, aiohttp.ClientSession() as http:
        body = modern_call("tools/call", {"name": "sleep", "arguments": {"seconds": 5}}, id=9)
        async with http.post(gw.endpoint("demo"), json=body, headers=modern_headers("tools/call", "sleep")) as resp:
            if resp.status == 200:  # the upstream started an SSE stream, then went quiet
                text = await resp.text()
                assert '"upstream_timeout"' in text and '"id":9' in text
            else:
                await expect_error(resp, 504, "upstream_timeout")


async def garbage_html(request: web.Request) -> web.Response:
    return web.Response(text="<html>hello</html>", content_type="text/html")


async def garbage_500(request: web.Request) -> web.Response:
    return web.Response(status=500, text="Internal Server Error")


async def garbage_401(request: web.Request) -> web.Response:
    return web.Response(status=401, headers={"WWW-Authenticate": "Bearer"})


async def garbage_truncated(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "1000"})
    await resp.prepare(request)
    await resp.write(b'{"jsonrpc":"2.0",')
    request.transport.close()  # type: ignore[union-attr]
    return resp


@pytest.mark.parametrize(
    ("handler", "status"),
    [(garbage_html, 200), (garbage_500, 500), (garbage_401, 401), (garbage_truncated, None)],
)
async def test_upstream_answering_garbage(handler: Any, status: int | None) -> None:
    async with raw_upstream(handler) as (url, _), running_gateway(make_config({"bad": url})) as gw:
        async with aiohttp.ClientSession() as http:
            req = modern_call("tools/list", id=3)
            async with http.post(gw.endpoint("bad"), json=req, headers=modern_headers("tools/list")) as resp:
                body = await expect_error(resp, 502, "upstream_bad_response")
                assert body["id"] == 3
                if status is not None:
                    assert body["error"]["data"]["status"] == status
                    assert "WWW-Authenticate" not in resp.headers


async def test_forward_headers_pass_chosen_client_headers_to_that_upstream_only() -> None:
    seen: dict[str, list[dict[str, str]]] = {"tenant": [], "plain": []}

    def recorder(name: str) -> Any:
        async def handle(request: web.Request) -> web.Response:
            if request.headers.get("Mcp-Method") != "server/discover":  # not the heartbeat
                seen[name].append({k.lower(): v for k, v in request.headers.items()})
            return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}})

        return handle

    async with raw_upstream(recorder("tenant")) as (tenant_url, _), raw_upstream(recorder("plain")) as (plain_url, _):
        text = (
            "server: {port: 0}\nupstreams:\n"
            f"  tenant: {{url: '{tenant_url}', forward_headers: [X-Tenant, x-request-source, X-Region],"
            " headers: {X-Region: eu-west}}\n"
            f"  plain: {{url: '{plain_url}'}}\n"
        )
        async with running_gateway(load_config(text=text, source="f.yml")) as gw, aiohttp.ClientSession() as http:
            headers = {
                **modern_headers("tools/list"),
                "X-Tenant": "acme",
                "X-Request-Source": "ide",
                "X-Region": "us-east",  # the upstream's configured value wins
                "X-Other": "nope",
            }
            for name in ("tenant", "plain"):
                async with http.post(gw.endpoint(name), json=modern_call("tools/list"), headers=headers) as resp:
                    assert resp.status == 200
    tenant, plain = seen["tenant"][0], seen["plain"][0]
    assert (tenant["x-tenant"], tenant["x-request-source"], tenant["x-region"]) == ("acme", "ide", "eu-west")
    assert "x-other" not in tenant
    assert not {"x-tenant", "x-request-source", "x-region", "x-other"} & set(plain)


@pytest.mark.parametrize(
    ("listed", "why"),
    [
        ("Authorization", "a credential for the gateway"),
        ("cookie", "a credential for the gateway"),
        ("X-Gateway-Key", "a credential for the gateway"),  # auth.gateway_header
        ("Mcp-Session-Id", "managed by the gateway"),
        ("Transfer-Encoding", "managed by the gateway"),
    ],
)
def test_credentials_and_hop_by_hop_headers_can_never_be_forwarded(listed: str, why: str) -> None:
    text = (
        "upstreams:\n"
        f"  a: {{url: 'http://127.0.0.1:9/mcp', forward_headers: [x-tenant, {listed}]}}\n"
        "auth:\n  gateway_header: X-Gateway-Key\n  api_keys: [{id: k, key_hash: 'sha256:" + "0" * 64 + "'}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(text=text, source="f.yml")
    [issue] = caught.value.issues
    assert issue.path == "upstreams.a.forward_headers[1]" and issue.line == 2
    assert f"{listed!r} can never be forwarded: it is {why}" in issue.message


def test_forward_headers_are_for_streamable_http_upstreams() -> None:
    for spec in (
        "{command: [srv], forward_headers: [x-a]}",
        "{url: 'http://127.0.0.1:9/sse', transport: sse, forward_headers: [x-a]}",
    ):
        with pytest.raises(ConfigError) as caught:
            load_config(text=f"upstreams:\n  a: {spec}\n", source="f.yml")
        assert any(i.path == "upstreams.a.forward_headers" for i in caught.value.issues)


async def test_gateway_credentials_never_forwarded_and_upstream_auth_injected() -> None:
    seen: list[dict[str, str]] = []

    async def recorder(request: web.Request) -> web.Response:
        if request.headers.get("Mcp-Method") != "server/discover":  # not the heartbeat
            seen.append(dict(request.headers))
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}})

    async with raw_upstream(recorder) as (url, _):
        upstream = UpstreamConfig(
            name="rec",
            transport="streamable-http",
            url=url,
            auth=UpstreamAuth("bearer", "Authorization", "Bearer upstream-secret"),
            headers=(("X-Tenant", "acme"),),
        )
        async with running_gateway(make_config({"rec": upstream})) as gw, aiohttp.ClientSession() as http:
            headers = {
                **modern_headers("tools/list"),
                "Authorization": "Bearer client-secret",
                "X-API-Key": "client-key",
                "Cookie": "session=abc",
                "Mcp-Param-Region": "eu",
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "X-Random": "nope",
                "Last-Event-ID": "evt-41",
                "Mcp-Session-Id": "client-chosen",
            }
            async with http.post(gw.endpoint("rec"), json=modern_call("tools/list"), headers=headers) as resp:
                assert resp.status == 200
    got = {k.lower(): v for k, v in seen[0].items()}
    assert got["authorization"] == "Bearer upstream-secret"
    assert got["x-tenant"] == "acme"
    assert got["mcp-param-region"] == "eu"
    assert got["mcp-method"] == "tools/list"
    assert got["mcp-protocol-version"] == "2026-07-28"
    assert got["traceparent"].startswith("00-0af7")
    assert got["last-event-id"] == "evt-41"
    for leaked in ("x-api-key", "cookie", "x-random", "mcp-session-id"):
        assert leaked not in got
    assert "client-secret" not in json.dumps(seen)


async def test_client_disconnect_mid_stream_cancels_upstream() -> None:
    """A client that leaves must leave nothing behind: the upstream's handler is cancelled and the
    connection of that call closed (the heartbeat's kept-alive one may stay; it is not the call's)."""
    active = 0
    started = asyncio.Event()
    ended = asyncio.Event()
    transports: list[asyncio.BaseTransport | None] = []

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal active
        if request.headers.get("Mcp-Method") == "server/discover":  # the gateway's heartbeat
            return web.json_response({"jsonrpc": "2.0", "id": "x", "result": {}})
        active += 1
        transports.append(request.transport)
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b'event: message\r\ndata: {"jsonrpc":"2.0","method":"notifications/progress"}\r\n\r\n')
            started.set()
            await asyncio.sleep(3600)
            return resp
        finally:
            active -= 1
            ended.set()

    async with raw_upstream(endless) as (url, _), running_gateway(make_config({"s": url})) as gw:
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                gw.endpoint("s"), json=modern_call("tools/list"), headers=modern_headers("tools/list")
            )
            assert resp.status == 200
            assert b"notifications/progress" in await resp.content.readany()
            await started.wait()
            assert active == 1
            resp.close()  # the client goes away mid-stream
        async with asyncio.timeout(10):
            await ended.wait()
            while not all(t is None or t.is_closing() for t in transports):
                await asyncio.sleep(0.02)
        assert active == 0 and len(transports) == 1
        assert len(gw.gateway.streams) == 0


async def test_tools_filter_hides_and_forbids(mcp_upstream_url: str) -> None:
    from mcpgate.config.model import Glob, ToolFilter

    filtered = UpstreamConfig(
        name="demo",
        transport="streamable-http",
        url=mcp_upstream_url,
        tools=ToolFilter(allow=(Glob.compile("a*"), Glob.compile("e*")), deny=(Glob.compile("echo"),)),
    )
    async with running_gateway(make_config({"demo": filtered})) as gw, aiohttp.ClientSession() as http:
        url = gw.endpoint("demo")
        async with http.post(url, json=modern_call("tools/list"), headers=modern_headers("tools/list")) as resp:
            assert resp.status == 200
            text = await resp.text()
        names = (
            {t["name"] for t in json.loads(text)["result"]["tools"]}
            if resp.content_type == "application/json"
            else {
                t["name"]
                for line in text.splitlines()
                if line.startswith("data:")
                for t in json.loads(line[5:])["result"]["tools"]
            }
        )
        assert names == {"add"}
        call = modern_call("tools/call", {"name": "echo", "arguments": {"text": "x"}})
        async with http.post(url, json=call, headers=modern_headers("tools/call", "echo")) as resp:
            await expect_error(resp, 403, "forbidden")
        sid = await initialize(http, url)
        async with http.post(url, json=rpc("tools/list", {}, id=4), headers=session_headers(sid)) as resp:
            text = await resp.text()
        assert '"add"' in text and '"echo"' not in text and '"countdown"' not in text


async def test_shutting_down_refuses_new_calls(mcp_upstream_url: str) -> None:
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        gw.gateway.begin_shutdown()
        async with http.post(
            gw.endpoint("demo"), json=modern_call("tools/list"), headers=modern_headers("tools/list")
        ) as r:
            await expect_error(r, 503, "shutting_down")


async def test_legacy_version_without_header_is_assumed(mcp_upstream_url: str) -> None:
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        url = gw.endpoint("demo")
        sid = await initialize(http, url, version="2025-03-26")
        headers = {**POST_HEADERS, "Mcp-Session-Id": sid}
        async with http.post(url, json=rpc("tools/list", {}, id=2), headers=headers) as resp:
            assert resp.status == 200
        # 2025-03-26 sessions may batch: the gateway lets the batch through to the upstream,
        # whose own answer (whatever it is) comes back, not the gateway's refusal.
        batch = [rpc("tools/list", {}, id=3), rpc("prompts/list", {}, id=4)]
        async with http.post(url, json=batch, headers={**headers, "MCP-Protocol-Version": "2025-03-26"}) as resp:
            answer = await resp.json()
        # The SDK server refuses batches in every version; what matters is that it, not the
        # gateway, said so (gateway errors always carry data.reason).
        assert "reason" not in (answer["error"].get("data") or {})


async def test_credentials_in_the_upstream_url_become_basic_auth() -> None:
    seen: list[str | None] = []

    async def recorder(request: web.Request) -> web.Response:
        if request.headers.get("Mcp-Method") != "server/discover":
            seen.append(request.headers.get("Authorization"))
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}})

    async with raw_upstream(recorder) as (url, _):
        with_user = url.replace("http://", "http://svc:s3cret@")
        async with running_gateway(make_config({"u": with_user})) as gw, aiohttp.ClientSession() as http:
            headers = {**modern_headers("tools/list"), "Authorization": "Bearer client-secret"}
            async with http.post(gw.endpoint("u"), json=modern_call("tools/list"), headers=headers) as resp:
                assert resp.status == 200
    assert seen == ["Basic c3ZjOnMzY3JldA=="]  # base64("svc:s3cret")


@pytest.mark.parametrize("filtered", [False, True])
async def test_upstream_compressing_anyway_is_decoded(filtered: bool) -> None:
    """The gateway asks for identity; an upstream that gzips regardless is still relayed and filtered right."""
    from aiohttp.web import ContentCoding

    from mcpgate.config.model import Glob, ToolFilter

    async def gzipping(request: web.Request) -> web.Response:
        tools = [{"name": "keep", "inputSchema": {"type": "object"}}, {"name": "drop", "inputSchema": {}}]
        resp = web.json_response({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}})
        resp.enable_compression(force=ContentCoding.gzip)
        return resp

    async with raw_upstream(gzipping) as (url, _):
        tools = ToolFilter(deny=(Glob.compile("drop"),)) if filtered else ToolFilter()
        upstream = UpstreamConfig(name="z", transport="streamable-http", url=url, tools=tools)
        async with running_gateway(make_config({"z": upstream})) as gw, aiohttp.ClientSession() as http:
            async with http.post(
                gw.endpoint("z"), json=modern_call("tools/list"), headers=modern_headers("tools/list")
            ) as r:
                assert r.status == 200
                names = [t["name"] for t in (await r.json())["result"]["tools"]]
    assert names == (["keep"] if filtered else ["keep", "drop"])


async def test_stream_whose_headers_never_come_times_out() -> None:
    release = asyncio.Event()

    async def stalling(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            await release.wait()
        return web.json_response({"jsonrpc": "2.0", "id": "x", "result": {}})

    async with raw_upstream(stalling) as (url, _):
        slow = UpstreamConfig(name="s", transport="streamable-http", url=url, timeout=0.3)
        async with running_gateway(make_config({"s": slow})) as gw, aiohttp.ClientSession() as http:
            headers = {"Accept": "text/event-stream", "MCP-Protocol-Version": "2026-07-28"}
            async with http.get(gw.endpoint("s"), headers=headers) as resp:
                await expect_error(resp, 504, "upstream_timeout")
            release.set()


async def test_client_vanishing_mid_body_is_no_internal_error(
    mcp_upstream_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw:
        host, port = gw.url.removeprefix("http://").split(":")
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /servers/demo/mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Accept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n{"jsonrpc":'
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        async with aiohttp.ClientSession() as http:  # the gateway carries on serving
            async with http.post(
                gw.endpoint("demo"), json=modern_call("tools/list"), headers=modern_headers("tools/list")
            ) as r:
                assert r.status == 200
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


async def test_stream_that_stalls_ends_with_an_error_event_for_the_request() -> None:
    release = asyncio.Event()

    async def stalling_stream(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Mcp-Method") == "server/discover":
            return web.json_response({"jsonrpc": "2.0", "id": "x", "result": {}})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'event: message\r\ndata: {"jsonrpc":"2.0","method":"notifications/progress"}\r\n\r\n')
        await release.wait()
        return resp

    async with raw_upstream(stalling_stream) as (url, _):
        slow = UpstreamConfig(name="s", transport="streamable-http", url=url, timeout=0.3)
        async with running_gateway(make_config({"s": slow})) as gw, aiohttp.ClientSession() as http:
            body = modern_call("tools/call", {"name": "x", "arguments": {}}, id=12)
            async with http.post(gw.endpoint("s"), json=body, headers=modern_headers("tools/call", "x")) as resp:
                assert resp.status == 200
                text = await resp.text()
            release.set()
    events = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]
    assert events[0]["method"] == "notifications/progress"
    assert events[-1]["id"] == 12
    assert events[-1]["error"]["data"]["reason"] == "upstream_timeout"
    assert events[-1]["error"]["data"]["upstream"] == "s"


async def test_upstream_cookies_are_neither_kept_nor_relayed() -> None:
    """The upstream pool is shared by all clients: a cookie set for one must not reach another."""
    cookies: list[str | None] = []

    async def cookie_setter(request: web.Request) -> web.Response:
        if request.headers.get("Mcp-Method") == "server/discover":
            return web.json_response({"jsonrpc": "2.0", "id": "x", "result": {}})
        cookies.append(request.headers.get("Cookie"))
        resp = web.json_response({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}})
        resp.set_cookie("upstream_session", "alice-secret")
        return resp

    async with raw_upstream(cookie_setter) as (url, _):
        # A host name, not an IP: cookie jars ignore cookies of IP hosts, which would hide a leak.
        url = url.replace("127.0.0.1", "localhost")
        async with running_gateway(make_config({"c": url})) as gw:
            await two_clients(gw)
    assert cookies == [None, None]


async def two_clients(gw: RunningGateway) -> None:
    for _ in range(2):  # two different clients, one after the other
        async with aiohttp.ClientSession() as http:
            req = modern_call("tools/list")
            async with http.post(gw.endpoint("c"), json=req, headers=modern_headers("tools/list")) as r:
                assert r.status == 200
                assert "Set-Cookie" not in r.headers


async def test_modern_requests_need_their_meta_and_removed_methods_are_404(mcp_upstream_url: str) -> None:
    """2026-07-28 (SEP-2575): a request without _meta, or whose _meta lacks the protocol version or
    the client capabilities, is -32602 / 400; initialize, ping and logging/setLevel no longer exist
    (-32601 / 404). On /mcp the gateway answers these itself, so it must say so itself."""
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        url = gw.url + "/mcp"
        full = modern_call("server/discover")["params"]["_meta"]
        for n, meta in enumerate(
            [None, {k: v for k, v in full.items() if "protocolVersion" not in k},
             {k: v for k, v in full.items() if "clientCapabilities" not in k}]
        ):  # fmt: skip
            body = {
                "jsonrpc": "2.0",
                "id": 100 + n,
                "method": "server/discover",
                "params": {} if meta is None else {"_meta": meta},
            }
            async with http.post(url, json=body, headers=modern_headers("server/discover")) as resp:
                error = await expect_error(resp, 400, "invalid_params", -32602)
                assert error["id"] == 100 + n
        for method in ("initialize", "ping", "logging/setLevel"):
            async with http.post(url, json=modern_call(method, id=7), headers=modern_headers(method)) as resp:
                assert (await expect_error(resp, 404, "method_not_found", -32601))["id"] == 7
        async with http.post(
            url, json=modern_call("server/discover"), headers=modern_headers("server/discover")
        ) as resp:
            assert resp.status == 200  # with its _meta whole, the same request is answered
