"""Hostile input and faulty upstreams: each case of the hardening issue, over real sockets.

Every answer is a JSON-RPC error object with a stable reason, never a plain-text page or a 500;
no input is echoed where it could inject; slow clients are cut off; sessions are bounded.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from mcpgate.config.model import Glob, SessionsConfig, ToolFilter, UpstreamConfig
from mcpgate.sessions import MAX_REOPEN_PARAMS
from tests.gateway_harness import (
    LEGACY,
    POST_HEADERS,
    RawResponse,
    RunningGateway,
    initialize,
    make_config,
    modern_call,
    modern_headers,
    port_of,
    raw_exchange,
    raw_request,
    raw_upstream,
    read_messages,
    rpc,
    running_gateway,
    session_headers,
)

pytestmark = pytest.mark.e2e

INIT_PARAMS = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}


def assert_json_error(resp: RawResponse, status: int, reason: str) -> dict[str, Any]:
    assert resp.status == status, resp
    assert resp.headers["content-type"].startswith("application/json"), resp
    assert resp.headers["server"] == "mcpgate"
    body = resp.json()
    assert body["jsonrpc"] == "2.0"
    assert body["error"]["data"]["reason"] == reason, body
    return body


async def exchange(gw: RunningGateway, request: bytes) -> RawResponse:
    resp = await asyncio.to_thread(raw_exchange, port_of(gw), request)
    assert resp is not None, "the gateway closed the connection without an answer"
    return resp


def big(message: dict[str, Any]) -> io.BytesIO:
    """A body over aiohttp's 1 MiB "large bytes" warning, as a stream."""
    return io.BytesIO(json.dumps(message).encode())


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, [r.getMessage() for r in loud]


# -- 1. sessions are bounded -------------------------------------------------------------------


async def test_initialize_keeps_only_what_reopening_needs(mcp_upstream_url: str) -> None:
    params = {
        **INIT_PARAMS,
        "clientInfo": {"name": "t", "version": "1", "icons": [{"src": "data:image/png;base64," + "A" * 500_000}]},
        "padding": "x" * 1_000_000,
    }
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        async with http.post(gw.endpoint("demo"), data=big(rpc("initialize", params)), headers=POST_HEADERS) as resp:
            assert resp.status == 200
            sid = resp.headers["Mcp-Session-Id"]
        session = await gw.gateway.sessions.get(sid)
        assert session is not None
        assert session.init_params == INIT_PARAMS
        assert len(session.to_json()) < MAX_REOPEN_PARAMS


async def test_oversized_capabilities_are_refused_before_anything_opens(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    async def upstream(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Mcp-Method", "legacy"))
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}})

    params = {**INIT_PARAMS, "capabilities": {"experimental": {"pad": "x" * 4_000_000}}}
    async with raw_upstream(upstream) as (url, _), running_gateway(make_config({"u": url})) as gw:
        async with aiohttp.ClientSession() as http:
            async with http.post(gw.endpoint("u"), data=big(rpc("initialize", params)), headers=POST_HEADERS) as resp:
                assert resp.status == 400
                body = await resp.json()
        assert body["error"]["data"] == {"reason": "invalid_request", "limit": MAX_REOPEN_PARAMS}
        assert len(gw.gateway.sessions) == 0
    assert "legacy" not in seen  # the upstream never saw that initialize
    no_errors_logged(caplog)


@asynccontextmanager
async def session_upstream() -> AsyncIterator[tuple[str, list[str]]]:
    """A minimal legacy upstream that issues session ids and records the ones DELETEd."""
    deleted: list[str] = []
    counter = iter(range(1, 10_000))

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method == "DELETE":
            deleted.append(request.headers["Mcp-Session-Id"])
            return web.Response(status=200)
        body = await request.json()
        if body.get("method") == "initialize":
            result = {"protocolVersion": LEGACY, "capabilities": {}, "serverInfo": {"name": "s", "version": "1"}}
            return web.json_response(
                {"jsonrpc": "2.0", "id": body["id"], "result": result},
                headers={"Mcp-Session-Id": f"up-{next(counter)}"},
            )
        if "id" not in body:
            return web.Response(status=202)
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": {"tools": []}})

    async with raw_upstream(handler) as (url, _):
        yield url, deleted


async def test_session_caps_refuse_in_total_and_evict_per_client(caplog: pytest.LogCaptureFixture) -> None:
    async with session_upstream() as (url, deleted):
        config = replace(make_config({"u": url}), sessions=SessionsConfig(max_sessions=3, max_per_client=2))
        async with running_gateway(config) as gw, aiohttp.ClientSession() as http:
            endpoint = gw.endpoint("u")
            first = await initialize(http, endpoint)
            second = await initialize(http, endpoint)
            third = await initialize(http, endpoint)  # the same client (address): `first` makes room
            async with http.post(endpoint, json=rpc("tools/list"), headers=session_headers(first)) as resp:
                assert resp.status == 404
                assert (await resp.json())["error"]["data"]["reason"] == "session_not_found"
            for sid in (second, third):
                async with http.post(endpoint, json=rpc("tools/list"), headers=session_headers(sid)) as resp:
                    assert resp.status == 200
            for _ in range(50):  # the evicted session's upstream session is ended in the background
                if deleted:
                    break
                await asyncio.sleep(0.05)
            assert deleted == ["up-1"]

            # The total cap: fill the store from "other clients", then the next initialize is refused.
            gw.gateway.sessions.max_per_client = 10
            await initialize(http, endpoint)
            async with http.post(endpoint, json=rpc("initialize", INIT_PARAMS), headers=POST_HEADERS) as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"] == "60"
                assert (await resp.json())["error"]["data"]["reason"] == "session_limit"
            async with http.get(gw.url + "/readyz") as resp:
                counts = (await resp.json())["sessions"]
            assert counts == {"active": 3, "max": 3, "max_per_client": 10, "evicted": 1, "refused": 1}
    no_errors_logged(caplog)


# -- 2, 3. answers that cannot be encoded, headers that are not text ----------------------------


async def test_lone_surrogate_ids_are_echoed_as_valid_json(mcp_upstream_url: str) -> None:
    body = b'{"jsonrpc":"2.0","id":"\\ud800","method":"tools/list"}'
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        resp = await exchange(gw, raw_request("POST", "/servers/demo/mcp", headers, body))
        answer = assert_json_error(resp, 400, "session_required")
        assert answer["id"] == "\ud800"
        assert resp.body.isascii()
        modern = {**modern_headers("tools/call", "x")}
        named = b'{"jsonrpc":"2.0","id":"\\udfff","method":"tools/call","params":{"name":"\\ud800"}}'
        resp = await exchange(gw, raw_request("POST", "/servers/demo/mcp", modern, named))
        assert assert_json_error(resp, 400, "header_mismatch")["id"] == "\udfff"


async def test_non_utf8_protocol_version_is_not_echoed(mcp_upstream_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw:
        headers: dict[str, str | bytes] = {**POST_HEADERS, "MCP-Protocol-Version": b"2026-07-28\xff"}
        resp = await exchange(gw, raw_request("POST", "/servers/demo/mcp", headers, json.dumps(rpc("ping")).encode()))
        body = assert_json_error(resp, 400, "unsupported_protocol_version")
        assert body["error"]["data"]["requested"] is None
        assert body["error"]["message"] == "Unsupported protocol version"
        headers["MCP-Protocol-Version"] = "1999-01-01"
        resp = await exchange(gw, raw_request("POST", "/servers/demo/mcp", headers, json.dumps(rpc("ping")).encode()))
        assert assert_json_error(resp, 400, "unsupported_protocol_version")["error"]["data"]["requested"] == (
            "1999-01-01"
        )
    no_errors_logged(caplog)


async def test_non_ascii_forwarded_header_is_no_internal_error(
    mcp_upstream_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\\udcff",'
    name += b'"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}'
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw:
        headers: dict[str, str | bytes] = {**modern_headers("tools/call"), "Mcp-Name": b"\xff"}
        resp = await exchange(gw, raw_request("POST", "/servers/demo/mcp", headers, name))
        assert resp.status in (400, 404), resp
        assert resp.json()["jsonrpc"] == "2.0"
        headers = {**modern_headers("tools/list"), "traceparent": b"\xc3\xa9t\xc3\xa9"}
        body = json.dumps(modern_call("tools/list")).encode()
        resp = await exchange(gw, raw_request("POST", "/servers/demo/mcp", headers, body))
        assert_json_error(resp, 400, "invalid_request")
    no_errors_logged(caplog)


# -- 4. nesting too deep to parse, from clients and from upstreams -----------------------------


@pytest.mark.parametrize("depth", [1_000, 100_000])
async def test_deeply_nested_request_is_a_parse_error(
    mcp_upstream_url: str, caplog: pytest.LogCaptureFixture, depth: int
) -> None:
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        for body in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
            async with http.post(gw.endpoint("demo"), data=body, headers=POST_HEADERS) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["data"]["reason"] == "parse_error"
    no_errors_logged(caplog)


NESTED = b'{"jsonrpc":"2.0","id":1,"result":' + b"[" * 5_000 + b"]" * 5_000 + b"}"


def nested_answer(as_sse: bool) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("method") == "server/discover":
            return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": {}})
        answer = NESTED.replace(b'"id":1', f'"id":{json.dumps(body["id"])}'.encode())
        if not as_sse:
            return web.Response(body=answer, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"event: message\r\ndata: " + answer + b"\r\n\r\n")
        return resp

    return handler


@pytest.mark.parametrize("as_sse", [False, True], ids=["json", "sse"])
async def test_deeply_nested_upstream_answers(as_sse: bool, caplog: pytest.LogCaptureFixture) -> None:
    async with raw_upstream(nested_answer(as_sse)) as (url, _):
        # An exposure filter makes the gateway parse tools/list answers to rewrite them.
        deny_x = ToolFilter(deny=(Glob.compile("x"),))
        filtered = UpstreamConfig(name="u", transport="streamable-http", url=url, tools=deny_x)
        async with running_gateway(make_config({"u": filtered})) as gw, aiohttp.ClientSession() as http:
            async with http.post(gw.endpoint("u"), json=rpc("initialize", INIT_PARAMS), headers=POST_HEADERS) as r:
                assert r.status == 502
                assert (await r.json())["error"]["data"]["reason"] == "upstream_bad_response"
            req = modern_call("tools/list", id=7)
            async with http.post(gw.endpoint("u"), json=req, headers=modern_headers("tools/list")) as r:
                if as_sse:  # the stream had started: the answer for id 7 is an error event
                    assert r.status == 200
                    events = [json.loads(line[5:]) for line in (await r.text()).splitlines() if line[:5] == "data:"]
                    assert events[-1]["id"] == 7
                    assert events[-1]["error"]["data"]["reason"] == "upstream_bad_response"
                else:
                    assert r.status == 502
                    body = await r.json()
                    assert (body["id"], body["error"]["data"]["reason"]) == (7, "upstream_bad_response")
    no_errors_logged(caplog)


# -- 5. upstream faults during initialize ------------------------------------------------------


def initialize_fault(kind: str, release: asyncio.Event) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("method") != "initialize":
            return web.json_response({"jsonrpc": "2.0", "id": body.get("id", 0), "result": {}})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b": priming\r\n\r\n")
        if kind == "silence":
            await release.wait()
        else:
            assert request.transport is not None
            request.transport.close()
        return resp

    return handler


@pytest.mark.parametrize(
    ("kind", "status", "reason"), [("silence", 504, "upstream_timeout"), ("drop", 502, "upstream_bad_response")]
)
async def test_upstream_fault_during_initialize(
    kind: str, status: int, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    release = asyncio.Event()
    async with raw_upstream(initialize_fault(kind, release)) as (url, _):
        upstream = UpstreamConfig(name="u", transport="streamable-http", url=url, timeout=0.5)
        async with running_gateway(make_config({"u": upstream})) as gw, aiohttp.ClientSession() as http:
            async with http.post(
                gw.endpoint("u"), json=rpc("initialize", INIT_PARAMS, id=5), headers=POST_HEADERS
            ) as r:
                assert r.status == status
                body = await r.json()
                assert (body["id"], body["error"]["data"]["reason"]) == (5, reason)
            assert len(gw.gateway.sessions) == 0
        release.set()
    no_errors_logged(caplog)


# -- 6. slow clients ---------------------------------------------------------------------------


async def test_slow_headers_and_silent_connections_are_cut_off(mcp_upstream_url: str) -> None:
    config = make_config({"demo": mcp_upstream_url}, header_timeout=0.3)
    async with running_gateway(config) as gw:
        partial = b"POST /servers/demo/mcp HTTP/1.1\r\nHost: x\r\nContent-Type: appl"
        for sent in (partial, b""):  # half a request; nothing at all
            resp = await exchange(gw, sent)
            body = assert_json_error(resp, 408, "request_timeout")
            assert body["id"] is None
            assert resp.headers["connection"] == "close"
        # On a kept-alive connection the clock restarts with the next request's first byte.
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b'"}'), 10)
        assert first.startswith(b"HTTP/1.1 200")
        writer.write(b"GET /healthz HTTP/1.1\r\nHo")
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), 10)
        assert rest.startswith(b"HTTP/1.1 408")
        writer.close()
        async with aiohttp.ClientSession() as http, http.get(gw.url + "/readyz") as r:
            assert (await r.json())["rejected"]["header_timeouts"] == 3


async def test_slow_body_gets_408(mcp_upstream_url: str, caplog: pytest.LogCaptureFixture) -> None:
    config = make_config({"demo": mcp_upstream_url}, body_timeout=0.3)
    async with running_gateway(config) as gw:
        head = raw_request("POST", "/servers/demo/mcp", POST_HEADERS, b"x" * 1000)
        resp = await exchange(gw, head[: head.index(b"\r\n\r\n") + 4 + 100])  # 100 of 1000 bytes
        assert_json_error(resp, 408, "request_timeout")
    no_errors_logged(caplog)


# -- 7. what aiohttp used to answer itself -----------------------------------------------------

GARBAGE = {
    "header too long": (raw_request("GET", "/healthz", {"X-Big": "a" * 9000}), 431, "headers_too_large"),
    "too many headers": (
        raw_request("GET", "/healthz", {f"X-{i}": "1" for i in range(200)}),
        431,
        "headers_too_large",
    ),
    "NUL in a header": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400, "bad_http_request"),
    "CR in a header": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400, "bad_http_request"),
    "not HTTP": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n", 400, "bad_http_request"),
    "bad request line": (b"GET\r\n\r\n", 400, "bad_http_request"),
    "OPTIONS on MCP": (raw_request("OPTIONS", "/servers/demo/mcp"), 405, "method_not_allowed"),
    "TRACE on MCP": (raw_request("TRACE", "/mcp/demo"), 405, "method_not_allowed"),
    "POST on healthz": (raw_request("POST", "/healthz", body=b"{}"), 405, "method_not_allowed"),
    "unknown path": (raw_request("GET", "/wp-login.php"), 404, "not_found"),
    "trailing slash": (raw_request("POST", "/servers/demo/mcp/", POST_HEADERS, b"{}"), 404, "not_found"),
    "root": (raw_request("GET", "/"), 404, "not_found"),
}


@pytest.mark.parametrize("case", list(GARBAGE))
async def test_requests_no_route_takes_get_json_errors(
    mcp_upstream_url: str, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    request, status, reason = GARBAGE[case]
    caplog.set_level(logging.DEBUG)
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw:
        resp = await exchange(gw, request)
        assert_json_error(resp, status, reason)
        assert b"aaaa" not in resp.body and b"X-Big" not in resp.body  # nothing is echoed
        if status == 405:
            assert resp.headers["allow"]
    no_errors_logged(caplog)


async def test_connect_requests_get_a_json_error(mcp_upstream_url: str) -> None:
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw:
        resp = await exchange(gw, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        assert 400 <= resp.status < 500
        assert resp.json()["error"]["data"]["reason"] in ("not_found", "method_not_allowed", "bad_http_request")


# -- 8. headers --------------------------------------------------------------------------------


async def test_server_header_names_no_versions(mcp_upstream_url: str) -> None:
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        for method, path in (("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/nope")):
            async with http.request(method, gw.url + path) as resp:
                assert resp.headers["Server"] == "mcpgate"
        req = modern_call("tools/list")
        async with http.post(gw.endpoint("demo"), json=req, headers=modern_headers("tools/list")) as resp:
            assert resp.status == 200
            assert resp.headers["Server"] == "mcpgate"


@pytest.mark.parametrize(
    ("retry_after", "passed"),
    [("120", True), ("Wed, 21 Oct 2026 07:28:00 GMT", True), ("9" * 8000, False), ("soon", False), ("-1", False)],
    ids=["seconds", "date", "8000 digits", "word", "negative"],
)
async def test_upstream_retry_after_is_checked(retry_after: str, passed: bool) -> None:
    async def busy(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("method") == "server/discover":
            return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": {}})
        headers = {"Retry-After": retry_after, "Cache-Control": "x" * 5000}
        error = {"code": -32000, "message": "busy"}
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "error": error}, status=429, headers=headers)

    async with raw_upstream(busy) as (url, _), running_gateway(make_config({"u": url})) as gw:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                gw.endpoint("u"), json=modern_call("tools/list"), headers=modern_headers("tools/list")
            ) as r:
                assert r.status == 429
                assert r.headers.get("Retry-After") == (retry_after if passed else None)
                assert "Cache-Control" not in r.headers


# -- 9. the MCP fast path (server.fast_handler) ------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "endpoint"),
    [
        ("POST", "/mcp", "*"),
        ("POST", "/mcp?x=1", "*"),
        ("GET", "/servers/demo/mcp", "demo"),
        ("DELETE", "/mcp/demo", "demo"),
        ("POST", "/servers/demo/mcp/", None),  # the router's 404
        ("POST", "/servers//mcp", None),
        ("POST", "/servers/a/b/mcp", None),
        ("POST", "/servers/de%6do/mcp", None),  # decoded by the router
        ("POST", "/mcp/", None),
        ("PUT", "/mcp", None),  # the router's 405 with Allow
        ("POST", "/healthz", None),
    ],
)
def test_the_fast_path_takes_only_what_the_routes_would_send_to_the_pipeline(
    method: str, target: str, endpoint: str | None
) -> None:
    from aiohttp.test_utils import make_mocked_request

    from mcpgate.server import mcp_endpoint

    assert mcp_endpoint(make_mocked_request(method, target)) == endpoint
    assert mcp_endpoint(make_mocked_request(method, target, headers={"Expect": "100-continue"})) is None


async def test_what_the_fast_path_leaves_to_the_router_still_works(mcp_upstream_url: str) -> None:
    """Percent-encoded names, Expect: 100-continue and other methods reach the same pipeline (or
    the same refusal) through the router; every answer is named and carries the request id."""
    async with running_gateway(make_config({"demo": mcp_upstream_url})) as gw, aiohttp.ClientSession() as http:
        req = modern_call("tools/list")
        for url, extra in (
            (gw.url + "/servers/de%6Do/mcp", {}),
            (gw.endpoint("demo"), {"Expect": "100-continue"}),
            (gw.endpoint("demo"), {}),
        ):
            headers = {**modern_headers("tools/list"), **extra, "X-Request-ID": "fast-path-1"}
            async with http.post(url, json=req, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                assert resp.headers["Server"] == "mcpgate"
                assert resp.headers["X-Request-ID"] == "fast-path-1"
                assert (await read_messages(resp))[-1]["result"]["tools"]
        async with http.put(gw.url + "/mcp", json=req) as resp:
            assert resp.status == 405 and "POST" in resp.headers["Allow"]
