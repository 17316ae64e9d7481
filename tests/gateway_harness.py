"""Run a gateway in the test's own event loop, and small raw-HTTP helpers for MCP requests."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from aiohttp import web

from mcpgate.config.model import Config, ServerConfig, UpstreamConfig
from mcpgate.gateway import Gateway
from mcpgate.server import GATEWAY, build_app, make_runner
from mcpgate.sessions import Session

LEGACY = "2025-11-25"
MODERN = "2026-07-28"
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
}
POST_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def make_config(upstreams: Mapping[str, str | UpstreamConfig], **server: Any) -> Config:
    ups = tuple(
        u if isinstance(u, UpstreamConfig) else UpstreamConfig(name=name, transport="streamable-http", url=u)
        for name, u in upstreams.items()
    )
    return Config(source="<test>", upstreams=ups, server=replace(ServerConfig(port=0), **server))


@dataclass
class RunningGateway:
    url: str
    gateway: Gateway
    runner: web.AppRunner

    def endpoint(self, name: str) -> str:
        return f"{self.url}/servers/{name}/mcp"


@asynccontextmanager
async def running_gateway(config: Config) -> AsyncIterator[RunningGateway]:
    app = build_app(config)
    runner = make_runner(app, config)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        yield RunningGateway(f"http://127.0.0.1:{port}", app[GATEWAY], runner)
    finally:
        await runner.cleanup()


def rpc(method: str, params: dict[str, Any] | None = None, id: int | str | None = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    if id is not None:
        message["id"] = id
    return message


def tool_call(name: str, arguments: dict[str, Any], request_id: object = 1, **meta: Any) -> dict[str, Any]:
    """A legacy-shaped ``tools/call`` (``meta`` becomes ``params._meta``), for channels and raw peers."""
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    if meta:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def modern_headers(method: str, name: str | None = None) -> dict[str, str]:
    headers = {**POST_HEADERS, "MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if name is not None:
        headers["Mcp-Name"] = name
    return headers


def modern_call(method: str, params: dict[str, Any] | None = None, id: int = 1) -> dict[str, Any]:
    return rpc(method, {**(params or {}), "_meta": dict(MODERN_META)}, id)


async def read_messages(resp: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    """Every JSON-RPC message of a JSON or SSE answer."""
    body = await resp.read()
    if resp.content_type == "application/json":
        return [json.loads(body)]
    messages = []
    for line in body.decode().replace("\r\n", "\n").split("\n"):
        if line.startswith("data:") and line[5:].strip():
            messages.append(json.loads(line[5:].strip()))
    return messages


async def initialize(http: aiohttp.ClientSession, url: str, version: str = LEGACY) -> str:
    """A legacy handshake through ``url``; returns the session id the client sees."""
    params = {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}
    async with http.post(url, json=rpc("initialize", params), headers=POST_HEADERS) as resp:
        assert resp.status == 200, await resp.text()
        session_id = resp.headers["Mcp-Session-Id"]
        messages = await read_messages(resp)
        assert messages[-1]["result"]["protocolVersion"] == version
    headers = {**POST_HEADERS, "Mcp-Session-Id": session_id, "MCP-Protocol-Version": version}
    async with http.post(url, json=rpc("notifications/initialized", id=None), headers=headers) as resp:
        assert resp.status == 202
    return session_id


async def open_session(gw: RunningGateway, http: aiohttp.ClientSession, name: str = "demo") -> tuple[str, str, Session]:
    """A legacy session through the gateway: its endpoint, the id the client sees, what the store holds."""
    url = gw.endpoint(name)
    sid = await initialize(http, url)
    session = await gw.gateway.sessions.get(sid)
    assert session is not None
    return url, sid, session


def session_headers(session_id: str, version: str = LEGACY) -> dict[str, str]:
    return {**POST_HEADERS, "Mcp-Session-Id": session_id, "MCP-Protocol-Version": version}


@asynccontextmanager
async def sdk_client(url: str, mode: str, headers: dict[str, str] | None = None, **options: Any) -> AsyncIterator[Any]:
    """The official client (``mcp.Client``); the SDK leaves closing a caller-supplied httpx2 client to the caller."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(headers=headers or {}, timeout=30) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode, **options) as c:
            yield c


@asynccontextmanager
async def raw_upstream(handler: Callable[[web.Request], Any]) -> AsyncIterator[tuple[str, web.AppRunner]]:
    """A hand-made upstream for faults the real SDK server never produces."""
    app = web.Application()
    app.router.add_route("*", "/mcp", handler)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/mcp", runner
    finally:
        await runner.cleanup()


@dataclass
class RawResponse:
    """An HTTP answer read off a socket, for requests no HTTP client library would send."""

    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_exchange(port: int, request: bytes, timeout: float = 15.0) -> RawResponse | None:
    """Send ``request`` bytes as they are, read until the server closes; ``None`` if it said nothing.

    Blocking on purpose: usable from a hypothesis test and, through ``asyncio.to_thread``, from an
    async one. ``timeout`` bounds every read, so a gateway that hangs fails the test, not CI.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # the server may answer and close before taking it all
            sock.sendall(request)
        data = bytearray()
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    return parse_raw_response(bytes(data)) if data else None


def parse_raw_response(data: bytes) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        decoded, rest = bytearray(), body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            decoded += rest[:size]
            rest = rest[size + 2 :]
        body = bytes(decoded)
    return RawResponse(int(status_line.split(" ")[1]), headers, body)


def raw_request(method: str, path: str, headers: Mapping[str, str | bytes] | None = None, body: bytes = b"") -> bytes:
    """One HTTP/1.1 request as bytes, ``Connection: close``; header values may be raw bytes."""
    lines = [f"{method} {path} HTTP/1.1".encode("latin-1"), b"Host: 127.0.0.1", b"Connection: close"]
    for name, value in (headers or {}).items():
        lines.append(name.encode("latin-1") + b": " + (value if isinstance(value, bytes) else value.encode()))
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def port_of(gw: RunningGateway) -> int:
    return int(gw.url.rsplit(":", 1)[1])
