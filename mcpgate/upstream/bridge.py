"""A message-level upstream (a stdio child) served as Streamable HTTP on a private Unix socket.

Why a bridge: everything the gateway does for an upstream (sessions, both endpoints, both eras,
list filtering, policy, heartbeats, the unified endpoint's routing and caching) is written, and
tested, against Streamable HTTP. Serving a stdio child as a Streamable HTTP server on a socket
only the gateway's user can open lets all of it apply unchanged, and keeps the HTTP upstreams'
byte-copy path free of any stdio concern. The hop is a local socket, and stdio servers are
seldom the fast ones.

The bridge speaks both eras to the gateway: the child is initialized once (legacy) and shared,
so a 2026-07-28 request is simply passed on without its ``_meta`` era keys and answered with a
``resultType``; a legacy ``initialize`` is answered from the child's own answer. Calls whose
caller wants progress, or that the child may ask something during, answer as an SSE stream,
event by event; the rest as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

from mcpgate import jsonrpc
from mcpgate.errors import GatewayError
from mcpgate.upstream.channel import Channel

log = logging.getLogger("mcpgate.upstream")

SESSION_HEADER: Final = "Mcp-Session-Id"
MAX_SESSIONS: Final = 20_000
MODERN_META: Final = "io.modelcontextprotocol/"
SSE_HEADERS: Final = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Passed through by the gateway for bridged upstreams, which say with them what became of the child.
FAILURE_STATUSES: Final = frozenset({502, 503, 504})


class Bridge:
    def __init__(
        self, process: Channel, socket_path: str, *, session_channel: Callable[[], Channel] | None = None
    ) -> None:
        """``process`` is the shared channel; with ``session_channel`` (``per_session``), each legacy
        session gets a channel of its own from it, ended with the session."""
        self.process = process
        self.socket_path = socket_path
        self._sessions: OrderedDict[str, bool] = OrderedDict()  # id -> whether its client answers requests
        self._session_channel = session_channel
        self._own: dict[str, Channel] = {}  # per_session: each session's own channel
        self._ending: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def session_processes(self) -> int:
        return len(self._own)

    def session_channels(self) -> list[Channel]:
        return list(self._own.values())

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/mcp", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1)
        await self._runner.setup()
        site = web.UnixSite(self._runner, self.socket_path)
        await site.start()
        os.chmod(self.socket_path, 0o600)

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
        for session in list(self._own):
            self._end(session)
        await asyncio.gather(*self._ending, return_exceptions=True)

    def _end(self, session: str) -> None:
        """Forget a session; its own channel (per_session) is closed in the background."""
        self._sessions.pop(session, None)
        channel = self._own.pop(session, None)
        if channel is not None:
            task = asyncio.create_task(channel.close())
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)

    def _channel(self, session: str | None) -> Channel:
        return self._own.get(session, self.process) if session is not None else self.process

    # -- HTTP ----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not self.process.started:  # lazy: the first client to need it starts it
            await self.process.start()
        try:
            if request.method == "POST":
                return await self._post(request)
            if request.method == "GET":
                return await self._stream(request)
            if request.method == "DELETE":
                self._end(request.headers.get(SESSION_HEADER, ""))
                return web.Response(status=200)
            return web.Response(status=405, headers={"Allow": "GET, POST, DELETE"})
        except GatewayError as exc:
            status = exc.status if exc.status in FAILURE_STATUSES else 502
            return web.json_response(exc.to_jsonrpc(None), status=status, dumps=_dumps)

    async def _post(self, request: web.Request) -> web.StreamResponse:
        try:
            decoded = jsonrpc.loads(await request.read())
        except ValueError:
            return web.json_response(GatewayError("parse_error").to_jsonrpc(None), status=400, dumps=_dumps)
        modern = jsonrpc.is_modern(request.headers.get("MCP-Protocol-Version"))
        session = request.headers.get(SESSION_HEADER)
        if not modern and session is not None and session not in self._sessions:
            return web.json_response(GatewayError("session_not_found").to_jsonrpc(None), status=404, dumps=_dumps)
        channel = self._channel(None if modern else session)
        if isinstance(decoded, list):
            answers = [
                a for m in decoded if isinstance(m, dict) and (a := await self._one(channel, m, modern)) is not None
            ]
            return web.json_response(answers, dumps=_dumps) if answers else web.Response(status=202)
        if not isinstance(decoded, dict):
            return web.json_response(GatewayError("invalid_request").to_jsonrpc(None), status=400, dumps=_dumps)
        method = decoded.get("method")
        if method == "initialize" and "id" in decoded:
            return await self._initialize(decoded)
        if method is None or "id" not in decoded:  # a response to the child, or a notification
            await self._one(channel, decoded, modern)
            return web.Response(status=202)
        params = decoded.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        wants_progress = isinstance(meta, dict) and "progressToken" in meta
        answers_requests = not modern and session is not None and self._sessions.get(session, False)
        if method == "server/discover" or not (wants_progress or answers_requests):
            answer = await self._one(channel, decoded, modern)
            return web.json_response(answer, dumps=_dumps)
        return await self._streamed_call(request, channel, decoded, modern)

    async def _initialize(self, message: dict[str, Any]) -> web.Response:
        if self._session_channel is None:
            await self.process.wait_ready(self.process.config.connect_timeout)
            channel = self.process
        else:
            channel = await self._new_channel()
        result = channel.initialize_result
        if result is None:
            raise GatewayError("upstream_unavailable", f"Upstream {self.process.name!r} is not running")
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        requested = params.get("protocolVersion")
        version = requested if requested in jsonrpc.LEGACY_VERSIONS else jsonrpc.LATEST_LEGACY
        capabilities = params.get("capabilities")
        session = secrets.token_hex(16)
        self._sessions[session] = isinstance(capabilities, dict) and bool(
            {"sampling", "elicitation", "roots"} & capabilities.keys()
        )
        if channel is not self.process:
            self._own[session] = channel
        while len(self._sessions) > MAX_SESSIONS:
            self._end(next(iter(self._sessions)))
        answer = {"jsonrpc": "2.0", "id": message["id"], "result": {**result, "protocolVersion": version}}
        return web.json_response(answer, headers={SESSION_HEADER: session}, dumps=_dumps)

    async def _new_channel(self) -> Channel:
        """per_session: a channel of the session's own, started and initialized, within the limit."""
        assert self._session_channel is not None
        limit = self.process.config.max_processes
        if len(self._own) >= limit:
            raise GatewayError(
                "upstream_unavailable",
                f"Upstream {self.process.name!r} already runs {limit} session processes (max_processes)",
            )
        channel = self._session_channel()
        await channel.start()
        try:
            await channel.wait_ready(self.process.config.connect_timeout)
        except BaseException:
            await channel.close()
            raise
        return channel

    async def _one(self, channel: Channel, message: dict[str, Any], modern: bool) -> dict[str, Any] | None:
        """One message to the child; the answer for a request (None for the rest)."""
        method = message.get("method")
        if method is None:
            await channel.respond(message)
            return None
        if "id" not in message:
            if method not in ("notifications/initialized", "notifications/cancelled"):
                await channel.notify(message)
            return None
        if method == "server/discover":
            return {"jsonrpc": "2.0", "id": message["id"], "result": await self._discover()}
        if method == "initialize":
            return {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32600, "message": "not in a batch"}}
        answer = await channel.request(_legacy(message) if modern else message)
        return _modern(answer, method) if modern else answer

    async def _discover(self) -> dict[str, Any]:
        """Answered from the child's initialize, after a ``ping`` proves it still answers: the
        gateway's heartbeat asks this, and must see a hung child as down."""
        ping = {"jsonrpc": "2.0", "id": "mcpgate-ping", "method": "ping"}
        await self.process.request(ping, seconds=self.process.config.heartbeat.timeout)
        result = self.process.initialize_result
        if result is None:
            raise GatewayError("upstream_unavailable", f"Upstream {self.process.name!r} is not running")
        return {
            "supportedVersions": list(jsonrpc.MODERN_VERSIONS),
            "capabilities": result.get("capabilities", {}),
            "instructions": result.get("instructions"),
            "resultType": "complete",
            "_meta": {"io.modelcontextprotocol/serverInfo": result.get("serverInfo", {})},
        }

    async def _streamed_call(
        self, request: web.Request, channel: Channel, message: dict[str, Any], modern: bool
    ) -> web.StreamResponse:
        """A call answered as SSE: the child's progress (and questions) as they come, then the answer."""
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        call = asyncio.create_task(channel.request(_legacy(message) if modern else message, listener=events.put_nowait))
        out = web.StreamResponse(status=200, headers=SSE_HEADERS)
        await out.prepare(request)
        try:
            while not call.done() or not events.empty():
                getter = asyncio.create_task(events.get())
                await asyncio.wait({call, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    await out.write(_event(getter.result()))
                else:
                    getter.cancel()
            try:
                answer = call.result()
            except GatewayError as exc:
                answer = exc.to_jsonrpc(message.get("id"))
            await out.write(_event(_modern(answer, message.get("method")) if modern else answer))
            await out.write_eof()
        finally:
            if not call.done():
                call.cancel()
                await asyncio.gather(call, return_exceptions=True)
        return out

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """The legacy GET stream: what the child says outside any call."""
        if request.headers.get(SESSION_HEADER) not in self._sessions:
            return web.Response(status=405 if SESSION_HEADER not in request.headers else 404)
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)

        def deliver(message: dict[str, Any]) -> None:
            with contextlib.suppress(asyncio.QueueFull):  # a reader that fell that far behind misses some
                events.put_nowait(message)

        unsubscribe = self._channel(request.headers.get(SESSION_HEADER)).subscribe(deliver)
        out = web.StreamResponse(status=200, headers=SSE_HEADERS)
        try:
            await out.prepare(request)
            closing = asyncio.create_task(self._closing.wait())
            try:
                while True:
                    getter = asyncio.create_task(events.get())
                    await asyncio.wait({getter, closing}, return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                        break
                    await out.write(_event(getter.result()))
            finally:
                closing.cancel()
        finally:
            unsubscribe()
        return out


def _legacy(message: dict[str, Any]) -> dict[str, Any]:
    """A 2026-07-28 request as the legacy child takes it: without the era's ``_meta`` keys."""
    params = message.get("params")
    if not isinstance(params, dict) or not isinstance(meta := params.get("_meta"), dict):
        return message
    kept = {k: v for k, v in meta.items() if not k.startswith(MODERN_META)}
    params = {k: v for k, v in params.items() if k != "_meta"} | ({"_meta": kept} if kept else {})
    return {**message, "params": params}


# 2026-07-28 results of these say how long they may be cached, and by whom.
CACHEABLE: Final = frozenset(
    {"tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read"}
)


def _modern(answer: dict[str, Any], method: object) -> dict[str, Any]:
    """A legacy answer as a 2026-07-28 client expects it. The child is shared by every client, so
    what it says is the same for all of them: ``public``, but not to be kept (``ttlMs`` 0)."""
    result = answer.get("result")
    if not isinstance(result, dict):
        return answer
    added: dict[str, Any] = {"resultType": "complete"}
    if method in CACHEABLE:
        added |= {"ttlMs": 0, "cacheScope": "public"}
    return {**answer, "result": {**added, **result}}


def _event(message: dict[str, Any]) -> bytes:
    return b"event: message\ndata: " + jsonrpc.dumps(message) + b"\n\n"


def _dumps(value: Any) -> str:
    return jsonrpc.dumps(value).decode()
