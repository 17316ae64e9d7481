"""A fast stub MCP upstream for the benchmark, on raw aiohttp.

The official SDK server costs far more per request than the gateway does; measured behind it,
the gateway's overhead would vanish in the noise. This stub answers from pre-serialized bytes,
so the direct run measures the load generator plus the network stack, and the gateway run
adds exactly the gateway.

It still checks what a real server checks (session ids in the legacy era, the `Mcp-Method` and
`Mcp-Name` headers in the modern era) so that a gateway which drops or garbles them shows up as
errors in the benchmark instead of as a suspiciously fast result.

Two extras serve the bench's other scenarios: the tool ``stream`` (progress events stamped with
their send time, then a result of any size) and, on a legacy session, a GET stream that stays
open until the session ends, so that held streams can be counted in the gateway's memory.

    python bench/stub_upstream.py --port 9100 [--sse]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import secrets
import time
from typing import Any

import aiohttp
from aiohttp import web

MODERN = "2026-07-28"
LEGACY_VERSIONS = ("2025-03-26", "2025-06-18", "2025-11-25")
SERVER_INFO = {"name": "mcpgate-bench-stub", "version": "1.0"}
ECHO_TOOL = {
    "name": "echo",
    "description": "Answers ok.",
    "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}},
}
STREAM_TOOL = {
    "name": "stream",
    "description": "Sends `events` progress notifications stamped with their send time, then `bytes` of text.",
    "inputSchema": {
        "type": "object",
        "properties": {"events": {"type": "integer", "minimum": 0}, "bytes": {"type": "integer", "minimum": 0}},
    },
}
TOOLS = [ECHO_TOOL, STREAM_TOOL]  # echo first: what lists it first before still does
CALL_RESULT = {"content": [{"type": "text", "text": "ok"}], "isError": False}
# Bounds on what one `stream` call may ask for: the stub must not be talked into exhausting memory.
MAX_STREAM_EVENTS = 100_000
MAX_STREAM_BYTES = 64 * 1024 * 1024
# A held GET stream says something this often, so that a client that went away is noticed.
KEEPALIVE_SECONDS = 15.0

SSE_FLAG: web.AppKey[bool] = web.AppKey("sse", bool)
SESSIONS: web.AppKey[set[str]] = web.AppKey("sessions", set)
# Per session with GET streams open: set when the session ends (DELETE) or the stub stops.
STREAMS_ENDED: web.AppKey[dict[str, asyncio.Event]] = web.AppKey("streams_ended", dict)


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# Results serialized once: the hot path only splices in the request id.
_RESULTS: dict[tuple[str, bool], bytes] = {
    ("tools/call", False): _dump(CALL_RESULT),
    ("tools/call", True): _dump({**CALL_RESULT, "resultType": "complete"}),
    ("tools/list", False): _dump({"tools": TOOLS}),
    ("tools/list", True): _dump({"tools": TOOLS, "ttlMs": 60_000, "cacheScope": "public", "resultType": "complete"}),
    ("ping", False): b"{}",
    ("server/discover", True): _dump(
        {
            "supportedVersions": [MODERN],
            "capabilities": {"tools": {}},
            "serverInfo": SERVER_INFO,
            "resultType": "complete",
        }
    ),
}


def _envelope(msg_id: Any, *, result: bytes | None = None, error: dict[str, Any] | None = None) -> bytes:
    head = b'{"jsonrpc":"2.0","id":' + _dump(msg_id)
    if result is not None:
        return head + b',"result":' + result + b"}"
    return head + b',"error":' + _dump(error) + b"}"


def _error(status: int, msg_id: Any, code: int, message: str) -> web.Response:
    body = _envelope(msg_id, error={"code": code, "message": message})
    return web.Response(status=status, body=body, content_type="application/json")


async def _sse(request: web.Request, payload: bytes) -> web.StreamResponse:
    # Streamed (chunked, no Content-Length) like a real server's SSE answer, CRLF like the SDK's.
    resp = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    resp.content_type = "text/event-stream"
    await resp.prepare(request)
    await resp.write(b"event: message\r\ndata: " + payload + b"\r\n\r\n")
    await resp.write_eof()
    return resp


def _event(payload: bytes) -> bytes:
    return b"event: message\r\ndata: " + payload + b"\r\n\r\n"


@functools.lru_cache(maxsize=8)
def _text_result(size: int, modern: bool) -> bytes:
    # A megabyte serialized once, not once per call: the throughput run should measure the transfer.
    result: dict[str, Any] = {"content": [{"type": "text", "text": "x" * size}], "isError": False}
    return _dump({**result, "resultType": "complete"} if modern else result)


async def _stream_tool(request: web.Request, msg_id: Any, params: dict[str, Any], modern: bool) -> web.StreamResponse:
    """Each progress event is written on its own, stamped just before it leaves, so that the
    client can tell how long the way to it took (the bench runs on one machine, one clock)."""
    arguments = params.get("arguments") or {}
    events, size = arguments.get("events", 0), arguments.get("bytes", 0)
    if not (isinstance(events, int) and 0 <= events <= MAX_STREAM_EVENTS):
        return _error(200, msg_id, -32602, f"events must be an integer from 0 to {MAX_STREAM_EVENTS}")
    if not (isinstance(size, int) and 0 <= size <= MAX_STREAM_BYTES):
        return _error(200, msg_id, -32602, f"bytes must be an integer from 0 to {MAX_STREAM_BYTES}")
    token = (params.get("_meta") or {}).get("progressToken")
    resp = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    resp.content_type = "text/event-stream"
    await resp.prepare(request)
    if token is not None:  # progress only for a request that asked for it, as the spec says
        for i in range(1, events + 1):
            note = {
                "jsonrpc": "2.0",
                "method": "notifications/progress",
                "params": {"progressToken": token, "progress": i, "total": events, "message": str(time.time_ns())},
            }
            await resp.write(_event(_dump(note)))
    await resp.write(_event(_envelope(msg_id, result=_text_result(size, modern))))
    await resp.write_eof()
    return resp


def _modern_header_error(request: web.Request, method: str, params: dict[str, Any]) -> str | None:
    if request.headers.get("Mcp-Method") != method:
        return "Mcp-Method header does not match the body"
    name = params.get("name", params.get("uri"))
    if name is not None and request.headers.get("Mcp-Name") != name:
        return "Mcp-Name header does not match the body"
    meta = params.get("_meta") or {}
    if meta.get("io.modelcontextprotocol/protocolVersion") != MODERN:
        return "_meta protocolVersion missing or not matching MCP-Protocol-Version"
    return None


def _initialize(request: web.Request, msg_id: Any, params: dict[str, Any]) -> web.Response:
    session_id = secrets.token_hex(16)
    request.app[SESSIONS].add(session_id)
    version = params.get("protocolVersion")
    result: dict[str, Any] = {
        "protocolVersion": version if isinstance(version, str) else LEGACY_VERSIONS[-1],
        "capabilities": {"tools": {}},
        "serverInfo": SERVER_INFO,
    }
    return web.Response(
        body=_envelope(msg_id, result=_dump(result)),
        content_type="application/json",
        headers={"Mcp-Session-Id": session_id},
    )


async def handle_post(request: web.Request) -> web.StreamResponse:
    try:
        message = json.loads(await request.read())
    except ValueError:
        return _error(400, None, -32700, "parse error")
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return _error(400, None, -32600, "invalid request")
    if "id" not in message:
        return web.Response(status=202)  # a notification or a response to us
    msg_id = message["id"]
    method = message.get("method")
    params = message.get("params") or {}
    if not isinstance(method, str) or not isinstance(params, dict):
        return _error(400, msg_id, -32600, "invalid request")
    modern = request.headers.get("MCP-Protocol-Version") == MODERN

    if modern:
        problem = _modern_header_error(request, method, params)
        if problem is not None:
            return _error(400, msg_id, -32020, problem)
    elif method == "initialize":
        return _initialize(request, msg_id, params)
    else:
        session_id = request.headers.get("Mcp-Session-Id")
        if session_id is None:
            return _error(400, msg_id, -32600, "missing Mcp-Session-Id")
        if session_id not in request.app[SESSIONS]:
            return _error(404, msg_id, -32001, "unknown session")

    if method == "tools/call" and params.get("name") == "stream":
        return await _stream_tool(request, msg_id, params, modern)
    result = _RESULTS.get((method, modern))
    if result is None:
        return _error(404 if modern else 200, msg_id, -32601, f"method not found: {method}")
    payload = _envelope(msg_id, result=result)
    if method == "tools/call" and request.app[SSE_FLAG]:
        return await _sse(request, payload)
    return web.Response(body=payload, content_type="application/json")


async def handle_delete(request: web.Request) -> web.Response:
    session_id = request.headers.get("Mcp-Session-Id", "")
    if session_id not in request.app[SESSIONS]:
        return web.Response(status=404)
    request.app[SESSIONS].discard(session_id)
    ended = request.app[STREAMS_ENDED].pop(session_id, None)
    if ended is not None:
        ended.set()
    return web.Response(status=200)


async def handle_get(request: web.Request) -> web.StreamResponse:
    """A legacy session's server-to-client stream: it never says anything, but it is held open,
    like a real server's, until the session ends or the client goes away."""
    session_id = request.headers.get("Mcp-Session-Id", "")
    modern = request.headers.get("MCP-Protocol-Version") == MODERN
    if modern or session_id not in request.app[SESSIONS]:
        return web.Response(status=405, headers={"Allow": "POST, DELETE"})
    ended = request.app[STREAMS_ENDED].setdefault(session_id, asyncio.Event())
    resp = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    resp.content_type = "text/event-stream"
    await resp.prepare(request)
    while not ended.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(KEEPALIVE_SECONDS):
                await ended.wait()
            break
        try:
            await resp.write(b": keep-alive\r\n\r\n")
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            return resp  # the client went away
    with contextlib.suppress(ConnectionResetError, aiohttp.ClientConnectionResetError):
        await resp.write_eof()
    return resp


async def _end_streams(app: web.Application) -> None:
    # Held streams would otherwise keep a stopping stub waiting for them.
    for ended in app[STREAMS_ENDED].values():
        ended.set()


def make_app(*, sse: bool = False) -> web.Application:
    """The stub as an app, for tests that run it in-process."""
    app = web.Application()
    app[SSE_FLAG] = sse
    app[SESSIONS] = set()
    app[STREAMS_ENDED] = {}
    app.on_shutdown.append(_end_streams)
    app.router.add_post("/mcp", handle_post)
    app.router.add_get("/mcp", handle_get)
    app.router.add_delete("/mcp", handle_delete)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fast stub MCP upstream for bench/run.py (loopback only).")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sse", action="store_true", help="answer tools/call as text/event-stream")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        loop = None
    else:
        loop = uvloop.new_event_loop()
    web.run_app(
        make_app(sse=args.sse),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=loop,
    )


if __name__ == "__main__":
    main()
