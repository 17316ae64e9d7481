"""The terminal stage: send the request upstream and stream the answer back.

Bytes are copied through untouched unless the gateway must change them (a session id it maps,
a list it filters): no JSON is parsed and no SSE is re-framed on the plain path, and an SSE
answer is written to the client chunk by chunk as it arrives, never buffered.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from aiohttp import web

from mcpgate import jsonrpc
from mcpgate.errors import GatewayError
from mcpgate.listener import WholeResponse
from mcpgate.rewrite import Rewrite, list_filter, rewrite_json, sse_rewriter
from mcpgate.sessions import Session, new_session_id
from mcpgate.sse import SSEError, SSEParser, encode_event
from mcpgate.upstream.http import POST_ACCEPT, SESSION_HEADER, STREAM_ACCEPT, HttpUpstream, UpstreamResponse

if TYPE_CHECKING:
    from multidict import CIMultiDict

    from mcpgate.pipeline import RequestContext

log = logging.getLogger("mcpgate.proxy")

# Upstream statuses a client may see as they are; any other means the upstream is broken or
# misconfigured (a 401 would even send the client into an OAuth flow against the gateway).
PASSED_STATUSES: Final = frozenset({200, 202, 204, 400, 404, 405, 406, 409, 413, 415, 422, 429})
# A stdio child's bridge says with these what became of the child (its JSON-RPC error tells the rest).
BRIDGE_STATUSES: Final = frozenset({502, 503, 504})
RESPONSE_HEADERS: Final = ("Content-Type", "Cache-Control", "Allow", "Retry-After", "MCP-Protocol-Version")
MAX_PASSED_HEADER: Final = 256
SSE_HEADERS: Final = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Answers up to this size are read whole and sent with a Content-Length; larger ones stream.
SMALL_BODY: Final = 256 * 1024
MAX_REWRITE_BODY: Final = 64 * 1024 * 1024
MAX_INITIALIZE_BODY: Final = 1024 * 1024


async def forward(ctx: RequestContext) -> None:
    assert ctx.upstream is not None
    if ctx.request.method == "DELETE" and ctx.session is not None:
        await end_session(ctx, ctx.session)
        return
    stream = ctx.request.method == "GET"
    resp = await exchange(ctx, ctx.upstream)
    try:
        if ctx.is_initialize and resp.status == 200:
            await answer_initialize(ctx, resp)
        else:
            await relay(ctx, resp, rewrite=list_filter(ctx), long_lived=stream)
    finally:
        resp.release()


async def exchange(
    ctx: RequestContext, upstream: HttpUpstream, *, body: bytes | None = None, mcp_name: str | None = None
) -> UpstreamResponse:
    """Send the client's request upstream; an upstream that forgot its session gets a new one, once."""
    sent_sid = ctx.session.upstream_sessions.get(upstream.name) if ctx.session else None
    resp = await send(ctx, upstream, body, mcp_name)
    if resp.status == 404 and sent_sid is not None and ctx.session is not None and not ctx.is_initialize:
        # The upstream forgot its session (restart, expiry): open a new one, retry once.
        resp.release()
        await reopen_upstream_session(ctx, ctx.session, upstream, stale=sent_sid)
        resp = await send(ctx, upstream, body, mcp_name)
    return resp


async def send(
    ctx: RequestContext, upstream: HttpUpstream, body: bytes | None = None, mcp_name: str | None = None
) -> UpstreamResponse:
    """``body`` and ``mcp_name`` replace the client's where the unified endpoint renamed the call."""
    method = ctx.request.method
    upstream_sid = ctx.session.upstream_sessions.get(upstream.name) if ctx.session else None
    accept = POST_ACCEPT if method == "POST" else STREAM_ACCEPT
    headers = upstream.headers_for(ctx.request.headers, accept=accept, session_id=upstream_sid)
    if mcp_name is not None and "Mcp-Name" in headers:
        headers["Mcp-Name"] = jsonrpc.encode_header_value(mcp_name)
    body = ctx.body if body is None else body
    tracing = ctx.gateway.tracing
    started = time.monotonic()
    try:
        if tracing is None:  # no context manager to enter and leave: most gateways trace nothing
            return await _send(upstream, method, headers, body)
        with tracing.client_span(upstream.name, method, headers):
            return await _send(upstream, method, headers, body)
    finally:
        ctx.upstream_ms = (time.monotonic() - started) * 1000


def _send(
    upstream: HttpUpstream, method: str, headers: CIMultiDict[str], body: bytes | None
) -> Awaitable[UpstreamResponse]:
    if method != "POST":
        return upstream.send(method, headers, None, stream=method == "GET")
    return upstream.send(method, headers, body)


def client_headers(ctx: RequestContext, resp: UpstreamResponse) -> dict[str, str]:
    headers = {
        name: value
        for name in RESPONSE_HEADERS
        if (value := resp.headers.get(name)) is not None and passable_header(name, value)
    }
    if ctx.session is not None:
        headers[SESSION_HEADER] = ctx.session.id
    return headers


@functools.lru_cache(maxsize=256)  # upstreams send the same few values over and over
def passable_header(name: str, value: str) -> bool:
    """Whether an upstream's response header may reach the client as it is.

    The upstream is not trusted to be sane: a header is passed on only when it is short visible
    ASCII, and ``Retry-After`` only when it is what RFC 9110 allows (seconds or an HTTP date),
    so a broken upstream cannot send clients an 8,000-digit back-off.
    """
    if len(value) > MAX_PASSED_HEADER or not (value.isascii() and value.isprintable()):
        return False
    if name == "Retry-After":
        return (value.isdigit() and len(value) <= 9) or email.utils.parsedate_tz(value) is not None
    return True


def bad_status(upstream: HttpUpstream, resp: UpstreamResponse, why: str) -> GatewayError:
    return upstream.error("upstream_bad_response", why, status=resp.status, content_type=resp.content_type)


async def relay(ctx: RequestContext, resp: UpstreamResponse, *, rewrite: Rewrite | None, long_lived: bool) -> None:
    upstream = ctx.upstream
    assert upstream is not None
    status = resp.status
    if status not in PASSED_STATUSES and not (upstream.bridged and status in BRIDGE_STATUSES):
        raise bad_status(upstream, resp, f"answered with unexpected HTTP status {status}")
    if status in (202, 204) or resp.content_length == 0 or (status == 405 and ctx.request.method != "POST"):
        body = await read_upstream(upstream, resp, SMALL_BODY)
        ctx.response = WholeResponse(status=status, body=body or None, headers=client_headers(ctx, resp))
        return
    content_type = resp.content_type
    if content_type == "text/event-stream" and status == 200:
        await relay_stream(ctx, resp, rewrite=rewrite, long_lived=long_lived)
    elif content_type != "application/json":
        raise bad_status(upstream, resp, f"answered HTTP {status} with Content-Type {content_type[:64]!r}")
    elif rewrite is not None and status == 200:
        rewritten = rewrite_json(await read_upstream(upstream, resp, MAX_REWRITE_BODY), rewrite)
        if rewritten is None:
            raise bad_status(upstream, resp, "answered with invalid JSON")
        ctx.response = WholeResponse(status=status, body=rewritten, headers=client_headers(ctx, resp))
    elif resp.content_length is not None and resp.content_length <= SMALL_BODY:
        body = await read_upstream(upstream, resp, SMALL_BODY)
        ctx.response = WholeResponse(status=status, body=body, headers=client_headers(ctx, resp))
    else:
        await copy_stream(ctx, resp, status)


# What reading an upstream's answer body can raise; ``body_fault`` says what it means.
BODY_FAULTS: Final = (aiohttp.ClientError, asyncio.IncompleteReadError)


def body_fault(upstream: HttpUpstream, exc: aiohttp.ClientError | asyncio.IncompleteReadError) -> GatewayError:
    """Reading an answer body: a stall is a timeout (504), a break a bad response (502).

    Both readers of upstream bodies (``read_chunk`` for streams, ``read_upstream`` for whole
    answers, and through them the ``initialize`` handshake and rewritten lists) catch
    ``BODY_FAULTS`` and raise this, so a fault means the same wherever it hits. A plain
    ``try``, not a context manager: one ran for every forwarded answer, and one held by an idle
    stream costs memory for hours.
    """
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return upstream.error("upstream_timeout", "stopped sending")
    return upstream.error("upstream_bad_response", f"broke off its answer: {type(exc).__name__}")


async def read_chunk(upstream: HttpUpstream, resp: UpstreamResponse) -> bytes:
    """The next piece of a streamed answer, ``b""`` at its end."""
    try:
        return await resp.content.readany()
    except BODY_FAULTS as exc:
        raise body_fault(upstream, exc) from None


async def read_upstream(upstream: HttpUpstream, resp: UpstreamResponse, limit: int) -> bytes:
    """Read a whole (small) answer; a slow or broken body is the upstream's fault, said once here."""
    length = resp.content_length
    if length is not None and length > limit:
        raise upstream.error("upstream_bad_response", f"answered with more than {limit} bytes")
    if length is not None and "Content-Encoding" not in resp.headers:
        try:
            return await resp.content.readexactly(length)
        except BODY_FAULTS as exc:
            raise body_fault(upstream, exc) from None
    body = bytearray()
    while chunk := await read_chunk(upstream, resp):
        body += chunk
        if len(body) > limit:
            raise upstream.error("upstream_bad_response", f"answered with more than {limit} bytes")
    return bytes(body)


async def copy_stream(ctx: RequestContext, resp: UpstreamResponse, status: int) -> None:
    """A large JSON answer, copied through as it arrives."""
    out = web.StreamResponse(status=status, headers=client_headers(ctx, resp))
    if resp.content_length is not None and "Content-Encoding" not in resp.headers:  # not if decompressed
        out.content_length = resp.content_length
    await out.prepare(ctx.request)
    ctx.response = out
    ctx.error = await pump(ctx, resp, out, transform=None)
    await write_quietly(out, None)


async def relay_stream(
    ctx: RequestContext, resp: UpstreamResponse, *, rewrite: Rewrite | None, long_lived: bool
) -> None:
    out = web.StreamResponse(status=200, headers={**client_headers(ctx, resp), **SSE_HEADERS})
    await out.prepare(ctx.request)
    ctx.response = out
    transform = None if rewrite is None else sse_rewriter(rewrite)
    streams = ctx.gateway.streams
    if long_lived:
        streams.add(resp)
    try:
        with ctx.gateway.counted_stream(ctx.upstream.name if long_lived and ctx.upstream else ""):
            failure = await pump(ctx, resp, out, transform=transform)
    finally:
        streams.discard(resp)
    if failure is not None and not long_lived and ctx.request_id is not None:
        # The client is waiting for an answer that will never come: say why, in-stream.
        event = encode_event(jsonrpc.dumps(failure.to_jsonrpc(ctx.request_id)).decode(), event="message")
        await write_quietly(out, event)
    ctx.error = failure
    await write_quietly(out, None)


async def pump(
    ctx: RequestContext,
    resp: UpstreamResponse,
    out: web.StreamResponse,
    *,
    transform: Callable[[bytes], bytes] | None,
) -> GatewayError | None:
    """Copy until the upstream ends. Returns the upstream failure, if one cut the stream short."""
    upstream = ctx.upstream
    assert upstream is not None
    failure: GatewayError | None = None
    while True:
        try:
            chunk = await read_chunk(upstream, resp)
        except GatewayError as exc:
            # At shutdown the gateway itself cut the stream: that is no upstream failure.
            if exc.reason.name == "upstream_timeout" or not ctx.gateway.closing.is_set():
                failure = exc
            break
        if not chunk:
            break
        if transform is not None:
            try:
                chunk = transform(chunk)
            except SSEError as exc:
                failure = upstream.error("upstream_bad_response", f"sent an unusable event stream: {exc}")
                break
            if not chunk:
                continue
        try:
            await out.write(chunk)
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            log.debug("client went away mid-stream on %s", upstream.name)
            return None
    if failure is not None:
        log.warning("stream from upstream %s ended early: %s", upstream.name, failure.message)
    return failure


async def write_quietly(out: web.StreamResponse, data: bytes | None) -> None:
    try:
        if data is None:
            await out.write_eof()
        else:
            await out.write(data)
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        pass


# -- sessions ----------------------------------------------------------------------------------


async def read_response(
    upstream: HttpUpstream, resp: UpstreamResponse, request_id: jsonrpc.RequestId, *, limit: int
) -> dict[str, Any] | None:
    """The decoded response to a request of the gateway's own (JSON or SSE), within ``limit`` bytes."""
    return (await read_initialize_result(upstream, resp, request_id, limit=limit))[1]


async def read_initialize_result(
    upstream: HttpUpstream,
    resp: UpstreamResponse,
    request_id: jsonrpc.RequestId | None,
    *,
    limit: int = MAX_INITIALIZE_BODY,
) -> tuple[bytes, dict[str, Any] | None]:
    """The raw answer and the decoded response to ``request_id``.

    An SSE answer is read only until that response arrives: a server that keeps the stream
    open afterwards must not hold the handshake hostage.
    """
    if resp.content_type != "text/event-stream":
        body = await read_upstream(upstream, resp, limit)
        try:
            message = jsonrpc.loads(body)
        except ValueError:
            raise bad_status(upstream, resp, "answered with invalid JSON") from None
        return body, message if isinstance(message, dict) else None
    parser = SSEParser()
    raw = bytearray()
    while len(raw) <= limit:
        chunk = await read_chunk(upstream, resp)
        if not chunk:
            break
        raw += chunk
        for event in parser.feed(chunk):
            try:
                message = jsonrpc.loads(event.data)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("id") == request_id and "method" not in message:
                return bytes(raw), message
    raise bad_status(upstream, resp, "never answered the request")


async def answer_initialize(ctx: RequestContext, resp: UpstreamResponse) -> None:
    upstream = ctx.upstream
    assert upstream is not None
    assert isinstance(ctx.message, jsonrpc.Message)
    body, message = await read_initialize_result(upstream, resp, ctx.request_id)
    result = message.get("result") if message else None
    if isinstance(result, dict):
        requested = ctx.message.params.get("protocolVersion")
        version = result.get("protocolVersion", requested)
        session = Session(
            id=new_session_id(),
            owner=ctx.identity.principal,
            scope=ctx.endpoint,
            protocol_version=str(version or jsonrpc.DEFAULT_NEGOTIATED_VERSION),
            init_params=ctx.reopen_params or {},
            upstream_sessions={upstream.name: resp.headers.get(SESSION_HEADER)},
            client=ctx.client_key,
        )
        try:
            evicted = await ctx.gateway.sessions.create(session)
        except GatewayError:
            # Full after all (concurrent initializes): the upstream session just opened is an orphan.
            ctx.gateway.end_upstream_sessions_soon([session])
            raise
        if evicted:
            log.info("client at its session limit: evicted %d least recently used session(s)", len(evicted))
            ctx.gateway.end_upstream_sessions_soon(evicted)
        ctx.session = session  # client_headers then names it in the answer
    ctx.response = WholeResponse(status=200, body=body, headers=client_headers(ctx, resp))


async def reopen_upstream_session(
    ctx: RequestContext, session: Session, upstream: HttpUpstream, *, stale: str | None
) -> None:
    """Replay the client's ``initialize`` to an upstream that lost our session, transparently.

    Concurrent calls of one session all see the 404: the first re-opens, the others find the
    session id already changed from the ``stale`` one they sent, and just retry with the new one.
    """
    async with ctx.gateway.session_lock(session):
        if session.upstream_sessions.get(upstream.name) != stale:
            return
        await _reinitialize(ctx, session, upstream, lost=True)


async def open_upstream_session(ctx: RequestContext, session: Session, upstream: HttpUpstream) -> None:
    """A unified session's first use of an upstream: open its session with the client's own params."""
    async with ctx.gateway.session_lock(session):
        if upstream.name not in session.upstream_sessions:  # another call may have just opened it
            await _reinitialize(ctx, session, upstream, lost=False)


async def _reinitialize(ctx: RequestContext, session: Session, upstream: HttpUpstream, *, lost: bool) -> None:
    request_id = f"mcpgate-reinit-{new_session_id()[:8]}"
    body = jsonrpc.dumps({"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": session.init_params})
    headers = upstream.headers_for({"Content-Type": "application/json"}, accept=POST_ACCEPT, session_id=None)
    resp = await upstream.send("POST", headers, body)
    try:
        if resp.status != 200:
            raise bad_status(upstream, resp, f"refused to re-open its session (HTTP {resp.status})")
        _, message = await read_initialize_result(upstream, resp, request_id)
        result = message.get("result") if message is not None else None
        if not isinstance(result, dict):
            raise bad_status(upstream, resp, "refused to re-open its session")
        if upstream.state.capabilities is None and isinstance(result.get("capabilities"), dict):
            # A legacy-only upstream's capabilities, which its heartbeat (server/discover) cannot learn.
            upstream.state.capabilities = result["capabilities"]
        new_sid = resp.headers.get(SESSION_HEADER)
    finally:
        resp.release()
    notify_headers = upstream.headers_for(
        {"Content-Type": "application/json", "MCP-Protocol-Version": session.protocol_version},
        accept=POST_ACCEPT,
        session_id=new_sid,
    )
    notify = await upstream.send(
        "POST", notify_headers, jsonrpc.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
    )
    notify.release()
    session.upstream_sessions[upstream.name] = new_sid
    await ctx.gateway.sessions.save(session)
    if lost:
        log.info("re-opened the session of upstream %s after it answered 404", upstream.name)
    else:
        log.debug("opened a session with upstream %s for a unified session", upstream.name)


async def end_session(ctx: RequestContext, session: Session) -> None:
    await ctx.gateway.sessions.delete(session.id)
    await ctx.gateway.end_upstream_sessions(session)
    ctx.response = WholeResponse(status=200)
