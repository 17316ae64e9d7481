"""The unified endpoint ``/mcp``: every upstream behind one MCP server (DESIGN section 5).

This is the imperative shell around ``routing`` (which upstream) and ``federation`` (what the
merged answers say). The gateway answers ``initialize``, ``server/discover``, ``ping`` and the
lists itself; every call goes to the upstream the router picks, renamed as that upstream knows
it, and its answer streams back through the same relay as the per-server endpoint's.

Legacy clients get a gateway session whose upstream sessions are opened lazily, on first use,
with the client's own ``initialize`` params; 2026-07-28 clients are stateless, except in front
of a legacy-only upstream, whose session the gateway holds for them (``outbound``).
"""

from __future__ import annotations

import asyncio
import logging
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from aiohttp import web

from mcpgate import federation, guard, held, jsonrpc, outbound
from mcpgate.errors import GatewayError
from mcpgate.federation import LIST_KEYS
from mcpgate.jsonrpc import Message
from mcpgate.listener import WholeResponse
from mcpgate.proxy import SSE_HEADERS, end_session, exchange, relay, write_quietly
from mcpgate.rewrite import Rewrite
from mcpgate.routing import CALL_KIND, CLIENT_SAFE_NAME, Route, addressed_item
from mcpgate.sessions import Session, new_session_id
from mcpgate.sse import SSEError, encode_event
from mcpgate.upstream.http import SESSION_HEADER, HttpUpstream

if TYPE_CHECKING:
    from mcpgate.pipeline import RequestContext

log = logging.getLogger("mcpgate.unified")

UNIFIED: Final = "*"  # the endpoint name and session scope of /mcp
# Methods the gateway answers itself, from what it knows or by asking every upstream.
ANSWERED: Final = frozenset(
    {"initialize", "ping", "server/discover", "logging/setLevel", "subscriptions/listen", *LIST_KEYS}
)
SUBSCRIPTION_ID: Final = "io.modelcontextprotocol/subscriptionId"
BATCH_CONCURRENCY: Final = 8
# What a listen filter may ask for, and the capability that says the gateway can honor it.
LISTEN_FLAGS: Final = {
    "toolsListChanged": ("tools", "listChanged"),
    "promptsListChanged": ("prompts", "listChanged"),
    "resourcesListChanged": ("resources", "listChanged"),
    "resourceSubscriptions": ("resources", "subscribe"),
}


# -- route: which upstream, or the gateway itself --------------------------------------------


async def route(ctx: RequestContext) -> None:
    """Pick the upstream for a call (``ctx.route``); leave it ``None`` when the gateway answers."""
    if ctx.request.method != "POST":
        if ctx.request.method == "GET" and ctx.session is None:
            # 2026-07-28 has no GET stream (subscriptions/listen replaces it): the spec says 405.
            raise GatewayError("method_not_allowed", "No GET stream in protocol 2026-07-28", headers=_ALLOW)
        return  # GET merges the upstreams' streams, DELETE ends the session: forward does both
    message = ctx.message
    if isinstance(message, list):
        return  # a 2025-03-26 batch: each of its messages is routed on its own (forward_batch)
    assert message is not None
    found = await route_message(ctx, message)
    if found is not None:
        ctx.upstream, ctx.route = found


async def route_message(ctx: RequestContext, message: Message) -> tuple[HttpUpstream, Route] | None:
    """Where one message goes; ``None`` when the gateway answers it itself."""
    gateway = ctx.gateway
    if message.kind == "response":
        # The client answers an upstream's request: the id says which upstream, and what it said.
        tagged = federation.untag_id(message.id)
        replied = None if tagged is None else gateway.upstreams.get(tagged[0])
        if replied is None or tagged is None:
            raise GatewayError("invalid_request", "This response answers no request the gateway relayed")
        return replied, Route(replied.name, "", "reply")
    if message.kind == "request" and ctx.era == "modern" and message.method in jsonrpc.REMOVED_IN_MODERN:
        raise GatewayError("method_not_found", f"Method not found in protocol 2026-07-28: {message.method}", status=404)
    if message.kind != "request" or message.method in ANSWERED:
        return None
    assert message.method is not None
    item = addressed_item(message.method, message.params)
    found = gateway.router.route(message.method, item, gateway.catalogue)
    if found is None and item is not None:
        # Perhaps an upstream gained it since its list was last seen: look once more, then decide.
        await outbound.refresh_catalogue(ctx, item[0])
        found = gateway.router.route(message.method, item, gateway.catalogue)
    if found is None:
        if item is None:
            raise GatewayError(
                "method_not_found",
                f"Method not found: {message.method[:64]!r}",
                status=404 if ctx.era == "modern" else 200,
            )
        kind, name = item
        raise GatewayError("unknown_name", f"Unknown {kind}: {name[:128]!r}", data={kind: name[:128]})
    upstream = gateway.upstreams.get(found.upstream)
    if upstream is None:
        raise GatewayError("upstream_unavailable", f"Upstream {found.upstream!r} is not served yet")
    return upstream, found


_ALLOW: Final = {"Allow": "POST, GET, DELETE"}


# -- forward: answer, or relay the routed call -------------------------------------------------


async def forward(ctx: RequestContext) -> None:
    if ctx.request.method == "GET" and ctx.session is not None:
        with ctx.gateway.counted_stream("/mcp"):
            await merged_stream(ctx, ctx.session)
        return
    if ctx.request.method == "DELETE":
        if ctx.session is None:  # a modern client has no session to end
            raise GatewayError("method_not_allowed", "No session to end", headers=_ALLOW)
        await end_session(ctx, ctx.session)
        return
    message = ctx.message
    if isinstance(message, list):
        await forward_batch(ctx, message)
        return
    assert isinstance(message, Message)
    if ctx.route is not None and message.kind == "response":
        await forward_reply(ctx, message)
    elif ctx.route is not None:
        await forward_call(ctx, message)
    elif message.kind != "request":
        await relay_notification(ctx, message)
    elif message.method == "subscriptions/listen":
        with ctx.gateway.counted_stream("/mcp"):
            await listen(ctx, message)
    elif message.method is not None and message.method in LIST_KEYS and message.params.get("cursor") is None:
        result = await list_answer(ctx, message.method)
        ctx.response = rpc_response(ctx, message.id, result)
    else:
        assert message.method is not None
        ctx.response = rpc_response(ctx, message.id, jsonrpc.dumps(await answer(ctx, message.method, message)))


async def forward_call(ctx: RequestContext, message: Message) -> None:
    upstream, target = ctx.upstream, ctx.route
    assert upstream is not None
    assert target is not None
    assert message.method is not None
    raw, name = renamed(message, target.name)
    session = await outbound.session_for(ctx, upstream)
    if ctx.session is None and session is not None:
        await held.forward_call(ctx, upstream, session, message, raw or message.raw)
        return
    if ctx.session is not None and session is None:
        await forward_stateless(ctx, upstream, message, raw or message.raw)
        return
    body = None if raw is None else jsonrpc.dumps(raw)  # None: the client's own bytes, untouched
    # An upstream may ask the client something mid-call (legacy): its request ids are tagged so the
    # answer finds its way back. Only parsed when the client said it answers such requests.
    session = ctx.session
    tag = None
    if session is not None and federation.answers_requests(session.init_params):
        tag = federation.tag_requests(upstream.name)
    resp = await exchange(ctx, upstream, body=body, mcp_name=name)
    try:
        await relay(ctx, resp, rewrite=tag, long_lived=False)
    finally:
        resp.release()


async def forward_stateless(ctx: RequestContext, upstream: HttpUpstream, message: Message, raw: dict[str, Any]) -> None:
    """A legacy client's call to an upstream that speaks only 2026-07-28: sent statelessly, with
    what the client's ``initialize`` said as the request's ``_meta``."""
    assert message.method is not None
    headers, body = outbound.stateless(ctx, upstream, message.method, raw)
    resp = await upstream.send("POST", headers, body)
    try:
        await relay(ctx, resp, rewrite=None, long_lived=False)
    finally:
        resp.release()


async def forward_reply(ctx: RequestContext, message: Message) -> None:
    upstream = ctx.upstream
    assert upstream is not None
    tagged = federation.untag_id(message.id)
    assert tagged is not None
    resp = await exchange(ctx, upstream, body=jsonrpc.dumps({**message.raw, "id": tagged[1]}))
    try:
        await relay(ctx, resp, rewrite=None, long_lived=False)
    finally:
        resp.release()


async def forward_batch(ctx: RequestContext, messages: list[Message]) -> None:
    """A 2025-03-26 batch: every message handled on its own, concurrently; the answers in one array.

    Calls are sent upstream one message at a time and read whole (a batch answer is one JSON
    document, so nothing in it can stream); a failure becomes that message's error object.
    """
    if any(m.method == "initialize" for m in messages):
        raise GatewayError("invalid_request", "initialize cannot be part of a batch")
    # A 4 MiB batch holds thousands of calls: a few at a time, so one client cannot open
    # thousands of upstream connections at once.
    slots = asyncio.Semaphore(BATCH_CONCURRENCY)

    async def one(message: Message) -> dict[str, Any] | None:
        async with slots:
            return await batch_item(ctx, message)

    answers = await asyncio.gather(*(one(m) for m in messages))
    replies = [a for a in answers if a is not None]
    if not replies:
        ctx.response = WholeResponse(status=202, headers=_session_header(ctx))
        return
    ctx.response = WholeResponse(
        body=jsonrpc.dumps(replies), content_type="application/json", headers=_session_header(ctx)
    )


async def batch_item(ctx: RequestContext, message: Message) -> dict[str, Any] | None:
    try:
        found = await route_message(ctx, message)
        guard.check_unified(ctx, message, None if found is None else found[1])
        if found is None:
            if message.kind != "request":
                await notify_upstreams(ctx, message)
                return None
            assert message.method is not None
            return {"jsonrpc": "2.0", "id": message.id, "result": await answer(ctx, message.method, message)}
        upstream, target = found
        if message.kind == "response":
            tagged = federation.untag_id(message.id)
            assert tagged is not None
            await outbound.send_whole(ctx, upstream, "", {**message.raw, "id": tagged[1]}, expect=None)
            return None
        raw = renamed(message, target.name)[0] or message.raw
        return await outbound.send_whole(ctx, upstream, message.method or "", raw, expect=message.id)
    except GatewayError as exc:
        return exc.to_jsonrpc(message.id) if message.kind == "request" else None


def renamed(message: Message, name: str) -> tuple[dict[str, Any] | None, str | None]:
    """The message with the upstream's own name for the tool or prompt (``None`` when unchanged),
    and the name for the ``Mcp-Name`` header when that changed too. Resource URIs never change."""
    params = message.params
    if message.method == "completion/complete":
        ref = params.get("ref")
        if not isinstance(ref, dict) or ref.get("type") != "ref/prompt" or ref.get("name") == name:
            return None, None
        return {**message.raw, "params": {**params, "ref": {**ref, "name": name}}}, None
    if CALL_KIND.get(message.method or "") not in ("tool", "prompt") or params.get("name") == name:
        return None, None
    return {**message.raw, "params": {**params, "name": name}}, name


async def relay_notification(ctx: RequestContext, message: Message) -> None:
    await notify_upstreams(ctx, message)
    ctx.response = WholeResponse(status=202, headers=_session_header(ctx))


async def notify_upstreams(ctx: RequestContext, message: Message) -> None:
    """Notifications (``cancelled``, ``roots/list_changed``) reach every open upstream session."""
    session = ctx.session
    if session is not None and message.method != "notifications/initialized":
        targets = [u for name, u in ctx.gateway.upstreams.items() if name in session.upstream_sessions]
        await asyncio.gather(*(notify(ctx, session, u, message.raw) for u in targets), return_exceptions=True)


async def notify(ctx: RequestContext, session: Session, upstream: HttpUpstream, raw: dict[str, Any]) -> None:
    headers = outbound.upstream_headers(upstream, session, str(raw.get("method")))
    resp = await upstream.send("POST", headers, jsonrpc.dumps(raw))
    resp.release()


async def answer(ctx: RequestContext, method: str, message: Message) -> dict[str, Any]:
    """What the gateway says itself: the handshake, ``ping``, merged lists, fanned-out settings."""
    gateway = ctx.gateway
    if method == "initialize":
        version = federation.negotiate_legacy(message.params.get("protocolVersion"))
        session = Session(
            id=new_session_id(),
            owner=ctx.identity.principal,
            scope=UNIFIED,
            protocol_version=version,
            init_params=ctx.reopen_params or {},
            client=ctx.client_key,
        )
        evicted = await gateway.sessions.create(session)
        gateway.end_upstream_sessions_soon(evicted)
        ctx.session = session
        return federation.initialize_result(version, capabilities(ctx))
    if method == "server/discover":
        return federation.discover_result(capabilities(ctx))
    if method == "ping":
        return {}
    if method == "logging/setLevel":
        await outbound.fan_out(ctx, method, message.params, gateway.upstreams.values())
        return {}
    if message.params.get("cursor") is not None:
        raise GatewayError("invalid_params", "Invalid cursor: the unified endpoint answers lists in one page")
    result: dict[str, Any] = jsonrpc.loads(await list_answer(ctx, method))  # in a batch: rare
    return result


async def list_answer(ctx: RequestContext, method: str) -> bytes:
    """The merged list, serialized. The same upstream answers, merged by the same router and
    catalogue for every caller (no policy filters them), make the same bytes: those are kept, so
    that a list served from the cache costs no merge and no encoding."""
    gateway = ctx.gateway
    answers = await outbound.list_everywhere(ctx, method)
    permits = guard.item_filter(ctx)
    modern = ctx.era == "modern"
    made_from = (gateway.router, gateway.catalogue, *answers)
    if permits is None:
        kept = gateway.merged_lists.get((method, modern))
        if kept is not None and len(kept[0]) == len(made_from) and all(map(operator.is_, kept[0], made_from)):
            return kept[1]
    items = federation.merge_list(method, answers, gateway.router, gateway.catalogue, permits)
    if method == "tools/list":
        warn_about_unsafe_names(ctx, items)
    body = jsonrpc.dumps(federation.list_result(method, items, answers, modern=modern, private=permits is not None))
    if permits is None:
        gateway.merged_lists[(method, modern)] = (made_from, body)
    return body


def warn_about_unsafe_names(ctx: RequestContext, tools: list[dict[str, Any]]) -> None:
    """Say once per name when a tool is listed under a name Claude and OpenAI clients refuse."""
    warned = ctx.gateway.warned_names
    for tool in tools:
        name = tool["name"]
        if not CLIENT_SAFE_NAME.match(name) and name not in warned and len(warned) < 1000:
            warned.add(name)
            log.warning("tool %r does not match ^[a-zA-Z0-9_-]{1,64}$: Claude and OpenAI clients reject it", name[:80])


def capabilities(ctx: RequestContext) -> dict[str, Any]:
    return federation.union_capabilities(u.state.capabilities for u in ctx.gateway.upstreams.values())


def rpc_response(ctx: RequestContext, request_id: jsonrpc.RequestId | None, result: bytes) -> web.Response:
    """An answer around an already serialized result."""
    body = b'{"jsonrpc":"2.0","id":' + jsonrpc.dumps(request_id) + b',"result":' + result + b"}"
    return WholeResponse(body=body, content_type="application/json", headers=_session_header(ctx))


def _session_header(ctx: RequestContext) -> dict[str, str] | None:
    return {SESSION_HEADER: ctx.session.id} if ctx.session is not None else None


# -- subscriptions/listen: the 2026-07-28 notification stream -----------------------------------


async def listen(ctx: RequestContext, message: Message) -> None:
    """One ``subscriptions/listen`` stream for the client, made of each upstream's own.

    The gateway acknowledges what its upstreams together can honor, opens a listen stream to
    every upstream that speaks 2026-07-28 with the part of the filter that concerns it (resource
    URIs go where their reads would), and relays their notifications with the client's
    subscription id. At shutdown the stream ends gracefully, with the listen request's result.
    """
    requested = message.params.get("notifications")
    requested = requested if isinstance(requested, dict) else {}
    offered = capabilities(ctx)
    honored = {
        key: value
        for key, value in requested.items()
        if key in LISTEN_FLAGS and offered.get(LISTEN_FLAGS[key][0], {}).get(LISTEN_FLAGS[key][1])
    }
    sub_meta = {SUBSCRIPTION_ID: message.id}
    out = web.StreamResponse(headers=SSE_HEADERS)
    await out.prepare(ctx.request)
    ctx.response = out
    lock = asyncio.Lock()
    ack = {"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged"}
    await write_quietly(out, sse_message({**ack, "params": {"notifications": honored, "_meta": sub_meta}}))
    gateway = ctx.gateway
    follows = []
    for upstream in gateway.upstreams.values():
        wanted = listen_filter(ctx, upstream, honored)
        if await outbound.legacy_only(upstream):
            follows.append(follow_held(ctx, upstream, wanted, out, lock, message.id))
        else:
            follows.append(follow_listen(ctx, upstream, wanted, out, lock, message))
    await asyncio.gather(*follows)
    if gateway.closing.is_set():
        end = {"jsonrpc": "2.0", "id": message.id, "result": {"resultType": "complete", "_meta": sub_meta}}
        await write_quietly(out, sse_message(end))
    await write_quietly(out, None)


def listen_filter(ctx: RequestContext, upstream: HttpUpstream, honored: dict[str, Any]) -> dict[str, Any]:
    """The part of the client's filter for one upstream: the flags, and the URIs it serves."""
    wanted = {key: value for key, value in honored.items() if key != "resourceSubscriptions"}
    uris = honored.get("resourceSubscriptions")
    if isinstance(uris, list):
        gateway = ctx.gateway
        mine = [
            uri
            for uri in uris
            if isinstance(uri, str)
            and (found := gateway.router.route("resources/read", ("resource", uri), gateway.catalogue)) is not None
            and found.upstream == upstream.name
        ]
        if mine:
            wanted["resourceSubscriptions"] = mine
    return wanted


async def follow_listen(
    ctx: RequestContext,
    upstream: HttpUpstream,
    wanted: dict[str, Any],
    out: web.StreamResponse,
    lock: asyncio.Lock,
    message: Message,
) -> None:
    """Relay one upstream's listen stream until it, the client or the gateway ends it."""
    if not wanted:
        return
    gateway = ctx.gateway
    own_id = f"mcpgate-listen-{next(outbound.ids)}"
    params = {"notifications": wanted, "_meta": message.params.get("_meta", {})}
    body = jsonrpc.dumps({"jsonrpc": "2.0", "id": own_id, "method": "subscriptions/listen", "params": params})
    headers = outbound.upstream_headers(upstream, None, "subscriptions/listen")
    try:
        async with outbound.open_stream(gateway, upstream, "POST", headers, body) as resp:
            if not outbound.is_event_stream(resp):
                log.warning("%s refused subscriptions/listen (HTTP %s)", upstream.name, resp.status)
                return
            async for event in outbound.events(upstream, resp):
                relayed = relayed_notification(event.data, upstream.name, gateway, message.id)
                if relayed is not None:
                    async with lock:
                        await out.write(sse_message(relayed))
    except (GatewayError, SSEError) as exc:
        log.debug("listen stream from %s ended: %s", upstream.name, exc)
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        return  # the client went away


# Which listen flag lets each list_changed notification through.
LISTEN_FLAG_OF: Final = {
    "notifications/tools/list_changed": "toolsListChanged",
    "notifications/prompts/list_changed": "promptsListChanged",
    "notifications/resources/list_changed": "resourcesListChanged",
}


async def follow_held(
    ctx: RequestContext,
    upstream: HttpUpstream,
    wanted: dict[str, Any],
    out: web.StreamResponse,
    lock: asyncio.Lock,
    sub_id: object,
) -> None:
    """A legacy-only upstream's notifications for a 2026-07-28 listener, from the stream of the
    session the gateway holds with it (one stream, shared by every listener: the upstream
    allows one per session)."""
    flags = {flag for flag, on in wanted.items() if on is True}
    if not flags & set(LISTEN_FLAG_OF.values()):
        return  # resource subscriptions of legacy servers need resources/subscribe: not relayed
    async with outbound.held_notifications(ctx, upstream) as queue:
        while (notification := await queue.get()) is not None:
            if LISTEN_FLAG_OF.get(notification.get("method", "")) in flags:
                relayed = relayed_notification(jsonrpc.dumps(notification).decode(), upstream.name, ctx.gateway, sub_id)
                if relayed is not None:
                    try:
                        async with lock:
                            await out.write(sse_message(relayed))
                    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                        return


def relayed_notification(data: str, upstream: str, gateway: Any, sub_id: object) -> dict[str, Any] | None:
    """An upstream's listen notification as the client's stream carries it; ``None`` for the rest."""
    try:
        message = jsonrpc.loads(data) if data else None
    except ValueError:
        return None
    if not isinstance(message, dict) or "id" in message:
        return None  # not a message, or the upstream's end of its stream
    method = message.get("method")
    if not isinstance(method, str) or method == "notifications/subscriptions/acknowledged":
        return None  # the upstream's own acknowledgement: the client had the gateway's
    if method.endswith("/list_changed"):
        gateway.forget_list(upstream, method)
    params = message.get("params")
    params = params if isinstance(params, dict) else {}
    meta = params.get("_meta")
    meta = meta if isinstance(meta, dict) else {}
    return {**message, "params": {**params, "_meta": {**meta, SUBSCRIPTION_ID: sub_id}}}


def sse_message(message: dict[str, Any]) -> bytes:
    return encode_event(jsonrpc.dumps(message).decode(), event="message")


# -- the merged server-to-client stream (legacy GET) --------------------------------------------


async def merged_stream(ctx: RequestContext, session: Session) -> None:
    """One SSE stream for the client made of every upstream's GET stream, event by event.

    Each upstream's session is opened now if it was not (the client wants to hear from all of
    them); upstreams without a GET stream (405) are left out. Requests from upstreams carry
    tagged ids like those on call streams; event ids are dropped, since one upstream's ids mean
    nothing to another (this stream cannot be resumed). It lasts until the client goes away or
    the gateway shuts down.
    """
    gateway = ctx.gateway
    upstreams = [u for u in gateway.upstreams.values() if not u.state.refuses_initialize]  # no session, no stream
    opened = await asyncio.gather(
        *(outbound.ensure_upstream_session(ctx, session, u) for u in upstreams), return_exceptions=True
    )
    live = [u for u, outcome in zip(upstreams, opened, strict=True) if not isinstance(outcome, BaseException)]
    out = web.StreamResponse(headers={**SSE_HEADERS, SESSION_HEADER: session.id})
    await out.prepare(ctx.request)
    ctx.response = out
    lock = asyncio.Lock()
    tag = federation.tag_requests if federation.answers_requests(session.init_params) else None
    await asyncio.gather(*(follow(ctx, session, u, out, lock, tag) for u in live))
    await write_quietly(out, None)


async def follow(
    ctx: RequestContext,
    session: Session,
    upstream: HttpUpstream,
    out: web.StreamResponse,
    lock: asyncio.Lock,
    tag: Callable[[str], Rewrite] | None,
) -> None:
    """Copy one upstream's GET stream into the merged one, reconnecting (with back-off) when it ends."""
    gateway = ctx.gateway
    rewrite = tag(upstream.name) if tag is not None else None
    delay = 0.5
    while not gateway.closing.is_set():
        try:
            async with outbound.open_stream(
                gateway, upstream, "GET", outbound.stream_headers(upstream, session)
            ) as resp:
                if not outbound.is_event_stream(resp):
                    return  # 405: this upstream has nothing to say outside calls; 404: its session is gone
                async for event in outbound.events(upstream, resp):
                    if event.data:
                        data = rewrite_event_data(event.data, rewrite, upstream.name, gateway)
                        async with lock:
                            await out.write(encode_event(data, event="message"))
                    delay = 0.5
        except GatewayError as exc:
            log.debug("stream from %s ended: %s", upstream.name, exc.message)
        except SSEError as exc:
            log.warning("stream from %s is unusable: %s", upstream.name, exc)
            return
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            return  # the client went away
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


def rewrite_event_data(data: str, rewrite: Rewrite | None, upstream: str, gateway: Any) -> str:
    """Tag requests; and a ``list_changed`` notification makes the gateway forget that upstream's list."""
    try:
        message = jsonrpc.loads(data)
    except ValueError:
        return data
    if not isinstance(message, dict):
        return data
    method = message.get("method")
    if isinstance(method, str) and method.endswith("/list_changed"):
        gateway.forget_list(upstream, method)
    changed = rewrite(message) if rewrite is not None else None
    return data if changed is None else jsonrpc.dumps(changed).decode()
