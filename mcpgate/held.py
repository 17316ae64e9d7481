"""A 2026-07-28 client in front of a legacy-only upstream: the gateway holds the session.

The client is stateless; the upstream knows nothing but sessions. The gateway keeps one session
with such an upstream (``Gateway.held_session``) and sends every modern client's call through
it under an id of its own, then gives the answer the client's id back, in 2026-07-28 terms
(``federation.as_modern_answer``). On ``/mcp`` the router picks the upstream (``unified``);
on ``/servers/<name>/mcp`` the path does, and the gateway also answers what the upstream
cannot: ``server/discover``, and the methods the modern era removed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mcpgate import federation, jsonrpc, outbound
from mcpgate.errors import GatewayError
from mcpgate.jsonrpc import Message
from mcpgate.listener import WholeResponse
from mcpgate.proxy import relay
from mcpgate.rewrite import Rewrite, list_filter
from mcpgate.sessions import Session
from mcpgate.upstream.http import HttpUpstream

if TYPE_CHECKING:
    from mcpgate.pipeline import RequestContext


async def forward_call(
    ctx: RequestContext,
    upstream: HttpUpstream,
    session: Session,
    message: Message,
    raw: dict[str, Any],
    then: Rewrite | None = None,
) -> None:
    """Send one call in the held session and relay its answer to the modern client.

    That session is shared by every such client, so the call travels under an id of the
    gateway's; the modern ``_meta`` keys stay behind. ``raw`` is the message as the upstream
    must see it (renamed where need be); ``then`` rewrites the answer once it is the client's
    (a per-server list filter).
    """
    assert message.method is not None
    params = raw.get("params")
    params = dict(params) if isinstance(params, dict) else {}
    meta = params.pop("_meta", None)
    if isinstance(meta, dict):
        kept = {k: v for k, v in meta.items() if not k.startswith(jsonrpc.MODERN_META_PREFIX)}
        if kept:
            params["_meta"] = kept
    held_id = f"mcpgate-held-{next(outbound.ids)}"
    body = jsonrpc.dumps({**raw, "id": held_id, "params": params})
    resp = await outbound.post(ctx, upstream, session, message.method, body)
    rewrite = federation.as_modern_answer(held_id, message.id, message.method)
    try:
        await relay(ctx, resp, rewrite=rewrite if then is None else _chain(rewrite, then), long_lived=False)
    finally:
        resp.release()


def _chain(first: Rewrite, then: Rewrite) -> Rewrite:
    def rewrite(message: dict[str, Any]) -> dict[str, Any] | None:
        once = first(message)
        twice = then(message if once is None else once)
        return once if twice is None else twice

    return rewrite


async def wanted(ctx: RequestContext) -> bool:
    """Whether this request on a per-server endpoint needs the held session: a modern client's
    POST to an upstream that speaks only the legacy era (asked once, then known)."""
    upstream = ctx.upstream
    if ctx.era != "modern" or ctx.request.method != "POST" or upstream is None or upstream.bridged:
        return False  # a stdio child's bridge speaks both eras itself
    if upstream.state.protocol is not None:  # known (the heartbeat's): no coroutine to await
        return upstream.state.protocol == "legacy"
    return await outbound.legacy_only(upstream)


async def forward(ctx: RequestContext) -> None:
    """``/servers/<name>/mcp`` for a modern client of a legacy-only upstream."""
    upstream, message = ctx.upstream, ctx.message
    assert upstream is not None
    if not isinstance(message, Message):
        raise GatewayError("invalid_request", "Protocol 2026-07-28 has no batches")
    if message.kind != "request":
        # Nothing a stateless client notifies concerns a held session: its calls end when it
        # closes their streams, and it answers no server requests (input_required replaces them).
        ctx.response = WholeResponse(status=202)
        return
    method = message.method
    assert method is not None
    if method in jsonrpc.REMOVED_IN_MODERN:
        raise GatewayError("method_not_found", f"Method not found in protocol 2026-07-28: {method}", status=404)
    session = await outbound.session_for(ctx, upstream)
    if session is None:
        raise GatewayError("upstream_unavailable", f"Upstream {upstream.name!r} refused a session")
    if method == "server/discover":
        # What this endpoint can do: the gateway's versions (it bridges), the upstream's
        # capabilities (from the held session's handshake).
        result = federation.discover_result(federation.union_capabilities([upstream.state.capabilities]))
        body = jsonrpc.dumps({"jsonrpc": "2.0", "id": message.id, "result": result})
        ctx.response = WholeResponse(body=body, content_type="application/json")
        return
    if method == "subscriptions/listen":
        raise GatewayError(
            "method_not_found",
            f"subscriptions/listen to the legacy-only upstream {upstream.name!r} is served on /mcp",
            status=404,
        )
    await forward_call(ctx, upstream, session, message, message.raw, then=list_filter(ctx))
