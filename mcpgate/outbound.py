"""The gateway as a client of its upstreams, on behalf of a client of the unified endpoint.

Lists fetched from every upstream (cached as they allow), settings fanned out, and the session
each request travels in: the client's own (legacy), the one the gateway holds with a legacy-only
upstream for 2026-07-28 clients, or none. ``unified.py`` decides what to ask; this asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final

from mcpgate import federation, jsonrpc
from mcpgate.errors import GatewayError
from mcpgate.federation import LIST_KEYS, Listed
from mcpgate.jsonrpc import Message
from mcpgate.proxy import open_upstream_session, read_chunk, read_response, reopen_upstream_session
from mcpgate.routing import LIST_KIND
from mcpgate.sessions import Session
from mcpgate.sse import SSEError, SSEEvent, SSEParser
from mcpgate.upstream.http import POST_ACCEPT, STREAM_ACCEPT, HttpUpstream, UpstreamResponse

if TYPE_CHECKING:
    from mcpgate.gateway import Gateway
    from mcpgate.pipeline import RequestContext

log = logging.getLogger("mcpgate.outbound")

MAX_PAGES: Final = 20  # upstream list pages drained into one answer
MAX_LIST_BODY: Final = 16 * 1024 * 1024
MAX_CACHED_LISTS: Final = 10_000
MODERN: Final = jsonrpc.MODERN_VERSIONS[0]
# The list cache's clock (tests move it).
clock = time.monotonic
# Ids of the gateway's own requests, unique within this process.
ids = itertools.count(1)


async def list_everywhere(ctx: RequestContext, method: str, *, fresh: bool = False) -> list[Listed]:
    """Every target upstream's list, in file order; one that fails is left out, not fatal.

    Lists served from the cache are taken without a task or an await: on a busy unified
    endpoint nearly every list is a cache hit, and gathering coroutines per hit cost more than
    the merge itself."""
    gateway = ctx.gateway
    kind = LIST_KIND[method]
    targets = [gateway.upstreams[n] for n in gateway.router.list_targets(kind) if n in gateway.upstreams]
    found: list[Listed | None] = [None] * len(targets) if fresh else [cached_list(ctx, u, method) for u in targets]
    missing = [i for i, listed in enumerate(found) if listed is None]
    if missing:
        get = fetch_list if fresh else refresh_list
        results = await asyncio.gather(*(get(ctx, targets[i], method) for i in missing), return_exceptions=True)
        for i, result in zip(missing, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, GatewayError | TimeoutError):
                    raise result
                why = getattr(result, "message", "timed out")
                log.warning("left %s out of %s: %s", targets[i].name, method, why)
                continue
            found[i] = result
    return [listed for listed in found if listed is not None]


def cached_list(ctx: RequestContext, upstream: HttpUpstream, method: str) -> Listed | None:
    """The cached list, if there is one to serve.

    An entry past its lifetime, but by less than that lifetime again, is still served while a
    refresh runs in the background: a busy gateway keeps its lists current without making any
    client wait for an upstream.
    """
    cache = ctx.gateway.list_cache
    now = clock()
    # What an upstream the heartbeat finds down once listed is not served: it is asked (and left out).
    for scope in ("public", private_scope(ctx)) if upstream.state.health != "unhealthy" else ():
        cached = cache.get(key := (upstream.name, method, scope))
        if cached is None:
            continue
        expires, ttl, listed = cached
        if now < expires:
            return listed
        if now < expires + ttl:
            ctx.gateway.in_background(key, refresh_list(ctx, upstream, method))
            return listed
    return None


def private_scope(ctx: RequestContext) -> str:
    # Private answers stay with the identity (and era: a legacy session's answer says nothing of
    # what the upstream would tell a stateless client) they were given to.
    return f"{ctx.era}:{ctx.identity.principal}"


async def refresh_list(ctx: RequestContext, upstream: HttpUpstream, method: str) -> Listed:
    """Ask the upstream for its list and cache the answer for as long as it allows."""
    listed = await fetch_list(ctx, upstream, method)
    ttl = upstream.config.list_cache_ttl if listed.ttl_ms is None else listed.ttl_ms / 1000
    if ttl > 0:
        # A 2026-07-28 answer says whether it may be shared; a legacy one stays with its identity.
        public = listed.ttl_ms is not None and not listed.private
        cache = ctx.gateway.list_cache
        cache[(upstream.name, method, "public" if public else private_scope(ctx))] = (
            clock() + ttl,
            ttl,
            listed,
        )
        while len(cache) > MAX_CACHED_LISTS:
            del cache[next(iter(cache))]  # the oldest entry
    return listed


async def fetch_list(ctx: RequestContext, upstream: HttpUpstream, method: str) -> Listed:
    """One upstream's list, drained across its pages (bounded), remembered for routing."""
    key = LIST_KEYS[method][0]
    items: list[dict[str, Any]] = []
    ttl: int | None = None
    private = False
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        params: dict[str, Any] = {} if cursor is None else {"cursor": cursor}
        result = await ask(ctx, upstream, method, params)
        page = result.get(key)
        if isinstance(page, list):
            items += [item for item in page if isinstance(item, dict)]
        if isinstance(result.get("ttlMs"), int):
            ttl = result["ttlMs"] if ttl is None else min(ttl, result["ttlMs"])
        private = private or result.get("cacheScope") == "private"
        cursor = result.get("nextCursor") if isinstance(result.get("nextCursor"), str) else None
        if cursor is None:
            break
    if method == "tools/list" and not upstream.config.tools.is_open:
        permits = upstream.config.tools.permits
        items = [t for t in items if permits(str(t.get("name", "")))]
    names = [n for item in items if (n := federation.item_name(method, item)) is not None]
    ctx.gateway.remember_list(upstream.name, method, names)
    return Listed(upstream.name, tuple(items), ttl, private)


async def refresh_catalogue(ctx: RequestContext, kind: str) -> None:
    methods = {"tool": ("tools/list",), "prompt": ("prompts/list",)}.get(
        kind, ("resources/list", "resources/templates/list")
    )
    for method in methods:
        await list_everywhere(ctx, method, fresh=True)


async def fan_out(ctx: RequestContext, method: str, params: dict[str, Any], upstreams: Any) -> None:
    results = await asyncio.gather(*(ask(ctx, u, method, params) for u in upstreams), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, GatewayError | TimeoutError):
            raise result


async def ask(ctx: RequestContext, upstream: HttpUpstream, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """One request of the gateway's own to an upstream, in the client's era; its result or an error."""
    session = await session_for(ctx, upstream)
    if session is None:
        params = {**params, "_meta": modern_meta(ctx)}
    request_id = f"mcpgate-{next(ids)}"
    body = jsonrpc.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
    resp = await post(ctx, upstream, session, method, body)
    try:
        if resp.status != 200:
            raise upstream.error("upstream_bad_response", f"answered {method} with HTTP {resp.status}")
        message = await read_response(upstream, resp, request_id, limit=MAX_LIST_BODY)
    finally:
        resp.release()
    result = message.get("result") if message else None
    if not isinstance(result, dict):
        raise upstream.error("upstream_bad_response", f"answered {method} without a result")
    return result


async def send_whole(
    ctx: RequestContext, upstream: HttpUpstream, method: str, raw: dict[str, Any], *, expect: Any
) -> dict[str, Any] | None:
    """Send one of the client's messages as its session allows and read the answer to ``expect`` whole."""
    session = await session_for(ctx, upstream)
    if session is None and ctx.session is not None:  # a legacy client, an upstream that refuses sessions
        headers, body = stateless(ctx, upstream, method, raw)
        resp = await upstream.send("POST", headers, body)
    else:
        resp = await post(ctx, upstream, session, method, jsonrpc.dumps(raw))
    try:
        if expect is None:
            return None
        if resp.status != 200:
            raise upstream.error("upstream_bad_response", f"answered {method} with HTTP {resp.status}")
        return await read_response(upstream, resp, expect, limit=MAX_LIST_BODY)
    finally:
        resp.release()


@contextlib.asynccontextmanager
async def held_notifications(ctx: RequestContext, upstream: HttpUpstream) -> AsyncIterator[asyncio.Queue[Any]]:
    """A queue of the notifications on the GET stream of the session held with ``upstream``.

    The stream is followed while anyone listens (the first listener starts it, the last stops
    it); ``None`` in the queue means it ended for good (shutdown). A listener too slow to keep
    up loses notifications rather than holding up the others.
    """
    gateway = ctx.gateway
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=256)
    listeners = gateway.held_listeners.setdefault(upstream.name, set())
    listeners.add(queue)
    follower = gateway.held_followers.get(upstream.name)
    if follower is None or follower.done():
        gateway.held_followers[upstream.name] = asyncio.create_task(follow_held_stream(ctx, upstream, listeners))
    try:
        yield queue
    finally:
        listeners.discard(queue)
        if not listeners and (task := gateway.held_followers.pop(upstream.name, None)) is not None:
            task.cancel()


async def follow_held_stream(ctx: RequestContext, upstream: HttpUpstream, listeners: set[asyncio.Queue[Any]]) -> None:
    gateway = ctx.gateway
    delay = 0.5
    try:
        while not gateway.closing.is_set() and listeners:
            session = gateway.held_session(upstream.name)
            try:
                await ensure_upstream_session(ctx, session, upstream)
                async with open_stream(gateway, upstream, "GET", stream_headers(upstream, session)) as resp:
                    if resp.status == 404:  # the upstream forgot the held session: open another
                        stale = session.upstream_sessions.get(upstream.name)
                        await reopen_upstream_session(ctx, session, upstream, stale=stale)
                    elif is_event_stream(resp):
                        async for event in events(upstream, resp):
                            broadcast(event.data, listeners)
                        delay = 0.5
            except (GatewayError, SSEError) as exc:
                log.debug("held stream of %s ended: %s", upstream.name, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
    finally:
        for queue in list(listeners):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)


def broadcast(data: str, listeners: set[asyncio.Queue[Any]]) -> None:
    try:
        message = jsonrpc.loads(data) if data else None
    except ValueError:
        return
    if isinstance(message, dict) and "method" in message and "id" not in message:
        for queue in list(listeners):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(message)


# -- long-lived upstream streams ----------------------------------------------------------------


def stream_headers(upstream: HttpUpstream, session: Session) -> Any:
    """Headers for the GET stream of an upstream session."""
    return upstream.headers_for(
        {"MCP-Protocol-Version": session.protocol_version},
        accept=STREAM_ACCEPT,
        session_id=session.upstream_sessions.get(upstream.name),
    )


@contextlib.asynccontextmanager
async def open_stream(
    gateway: Gateway, upstream: HttpUpstream, method: str, headers: Any, body: bytes | None = None
) -> AsyncIterator[UpstreamResponse]:
    """A long-lived upstream stream: registered so that shutdown ends it at once, released after."""
    resp = await upstream.send(method, headers, body, stream=True)
    gateway.streams.add(resp)
    try:
        yield resp
    finally:
        gateway.streams.discard(resp)
        resp.release()


def is_event_stream(resp: UpstreamResponse) -> bool:
    return resp.status == 200 and resp.content_type == "text/event-stream"


async def events(upstream: HttpUpstream, resp: UpstreamResponse) -> AsyncIterator[SSEEvent]:
    """The events of an upstream stream as they arrive; a stall or break is a ``GatewayError``."""
    parser = SSEParser()
    while chunk := await read_chunk(upstream, resp):
        for event in parser.feed(chunk):
            yield event


async def session_for(ctx: RequestContext, upstream: HttpUpstream) -> Session | None:
    """The session a request to ``upstream`` travels in, opened if need be.

    A legacy client's own; for a 2026-07-28 client in front of a legacy-only upstream, the
    session the gateway holds with that upstream itself; none when both sides are stateless.
    """
    session = ctx.session
    if session is None and await legacy_only(upstream):
        session = ctx.gateway.held_session(upstream.name)
    if session is None or upstream.state.refuses_initialize:
        return None
    try:
        await ensure_upstream_session(ctx, session, upstream)
    except GatewayError as exc:
        status = exc.data.get("status")
        if not (isinstance(status, int) and 400 <= status < 500 and upstream.state.protocol == MODERN):
            raise
        # It speaks 2026-07-28 and refuses sessions: legacy clients reach it statelessly from now on.
        log.info("upstream %s refuses initialize (HTTP %s): legacy clients reach it statelessly", upstream.name, status)
        upstream.state.refuses_initialize = True
        return None
    return session


def stateless(ctx: RequestContext, upstream: HttpUpstream, method: str, raw: dict[str, Any]) -> tuple[Any, bytes]:
    """Headers and body of a legacy client's message sent statelessly (2026-07-28): its
    ``initialize`` as ``_meta``, and ``Mcp-Name`` for the methods that need one."""
    params = raw.get("params")
    params = dict(params) if isinstance(params, dict) else {}
    meta = params.get("_meta")
    params["_meta"] = {**(meta if isinstance(meta, dict) else {}), **modern_meta(ctx)}
    key = jsonrpc.NAMED_METHODS.get(method)
    name = params.get(key) if key is not None else None
    headers = upstream_headers(upstream, None, method, name if isinstance(name, str) else None)
    return headers, jsonrpc.dumps({**raw, "params": params})


def modern_meta(ctx: RequestContext) -> dict[str, Any]:
    """The ``_meta`` a stateless request carries: the client's own, or, for a legacy client, what
    its ``initialize`` said (protocol version, capabilities, client info) in 2026-07-28 terms."""
    if ctx.session is None:
        meta = ctx.message.params.get("_meta") if isinstance(ctx.message, Message) else None
        return meta if isinstance(meta, dict) else {}
    params = ctx.session.init_params
    return {
        jsonrpc.META_PROTOCOL_VERSION: MODERN,
        "io.modelcontextprotocol/clientCapabilities": params.get("capabilities", {}),
        "io.modelcontextprotocol/clientInfo": params.get("clientInfo", {}),
    }


async def legacy_only(upstream: HttpUpstream) -> bool:
    """Whether the upstream refuses stateless requests (the heartbeat found out; asked now if not yet)."""
    if upstream.state.protocol is None:
        await upstream.probe()
    return upstream.state.protocol == "legacy"


async def post(
    ctx: RequestContext, upstream: HttpUpstream, session: Session | None, method: str, body: bytes
) -> UpstreamResponse:
    """POST a message of the gateway's making; an upstream that forgot the session gets a new one, once."""
    sent_sid = session.upstream_sessions.get(upstream.name) if session is not None else None
    resp = await upstream.send("POST", upstream_headers(upstream, session, method), body)
    if resp.status == 404 and sent_sid is not None and session is not None:
        resp.release()
        await reopen_upstream_session(ctx, session, upstream, stale=sent_sid)
        resp = await upstream.send("POST", upstream_headers(upstream, session, method), body)
    return resp


def upstream_headers(upstream: HttpUpstream, session: Session | None, method: str, name: str | None = None) -> Any:
    """Headers of a message of the gateway's making: in a session, or stateless (``name``: ``Mcp-Name``)."""
    if session is not None:
        client = {"Content-Type": "application/json", "MCP-Protocol-Version": session.protocol_version}
        return upstream.headers_for(client, accept=POST_ACCEPT, session_id=session.upstream_sessions.get(upstream.name))
    client = {"Content-Type": "application/json", "MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if name is not None:
        client["Mcp-Name"] = jsonrpc.encode_header_value(name)
    return upstream.headers_for(client, accept=POST_ACCEPT, session_id=None)


async def ensure_upstream_session(ctx: RequestContext, session: Session, upstream: HttpUpstream) -> None:
    """Open the upstream's session on first use, with the client's own initialize params."""
    if upstream.name not in session.upstream_sessions:
        await open_upstream_session(ctx, session, upstream)
