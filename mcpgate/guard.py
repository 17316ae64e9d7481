"""What the authorize stage enforces, shared by both endpoints: exposure filters and policy.

``check`` judges one message (the pipeline's ``authorize`` stage calls it for a request, the
unified endpoint for each message of a batch); ``list_keeper`` and ``item_filter`` say which
listed items a client may see, so that what is listed is exactly what is callable. Shadow
mode (``policy.shadow``) logs and counts what would be denied, and lets it through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from mcpgate.jsonrpc import Message, printable
from mcpgate.routing import Kind, Route, addressed_item

if TYPE_CHECKING:
    from mcpgate.pipeline import RequestContext

log = logging.getLogger("mcpgate.policy")

Keep = Callable[[str], bool]
ItemFilter = Callable[[str, Kind, str], bool]


def check(ctx: RequestContext, message: Message, server: str | None, item: tuple[Kind, str] | None) -> None:
    """Raise ``forbidden`` unless this identity may send ``message`` to ``server`` (None: the gateway itself)."""
    gateway = ctx.gateway
    if server is not None and item is not None and item[0] == "tool" and message.method == "tools/call":
        upstream = gateway.upstreams.get(server)
        if upstream is not None:
            upstream.check_exposed(item[1])
    policy = gateway.policy
    if policy is None:
        return
    decision = policy.judge(ctx.identity, server, message.method, item)
    ctx.decision = decision
    if decision.allowed:
        return
    what = describe(message.method, server, item)
    if policy.shadow:
        ctx.shadowed = True
        gateway.shadow_denials += 1
        log.warning(
            "policy (shadow): %s by client %s would be denied by %s",
            what,
            printable(ctx.identity.client_id) or "?",
            decision.where,
            extra={"client_id": ctx.identity.client_id, "rule": decision.where, "upstream": server},
        )
        return
    raise policy.denial(decision, what)


def check_message(ctx: RequestContext, message: Message, server: str) -> None:
    """A message on a per-server endpoint, judged as it is."""
    if message.kind != "response":  # answers to the upstream's own requests need no decision
        check(ctx, message, server, addressed_item(message.method or "", message.params))


def check_unified(ctx: RequestContext, message: Message, route: Route | None) -> None:
    """A message on ``/mcp``: judged against the upstream it routes to, under that upstream's name
    for the item (``route`` None: the gateway answers it itself)."""
    if message.kind == "response":
        return
    item = addressed_item(message.method or "", message.params)
    if route is None:
        check(ctx, message, None, item)
    else:
        check(ctx, message, route.upstream, None if item is None else (item[0], route.name))


def describe(method: str | None, server: str | None, item: tuple[Kind, str] | None) -> str:
    shown = printable(method or "", 64) or "this request"
    if item is not None:
        shown += f" of {item[0]} {printable(item[1], 128) or '?'!r}"
    if server is not None:
        shown += f" on {server!r}"
    return shown


def list_keeper(ctx: RequestContext, server: str, kind: Kind) -> Keep | None:
    """Which items of a ``kind`` list from ``server`` this client may see; None when it may see all."""
    upstream = ctx.gateway.upstreams.get(server)
    exposed = upstream.config.tools if upstream is not None and kind == "tool" else None
    exposes = None if exposed is None or exposed.is_open else exposed.permits
    policy, identity = ctx.gateway.policy, ctx.identity
    blanket = True if policy is None else policy.blanket(identity, server, kind)
    if blanket is False:
        return _nothing
    if blanket is True:
        return exposes
    assert policy is not None

    def keep(name: str) -> bool:
        return (exposes is None or exposes(name)) and policy.permits(identity, server, kind, name)

    return keep


def item_filter(ctx: RequestContext) -> ItemFilter | None:
    """For merged lists on ``/mcp``: whether the caller may use an upstream's item (None: no policy)."""
    policy, identity = ctx.gateway.policy, ctx.identity
    if policy is None or policy.shadow:
        return None

    def permits(server: str, kind: Kind, name: str) -> bool:
        return policy.permits(identity, server, kind, name)

    return permits


def _nothing(name: str) -> bool:
    return False


__all__ = ["ItemFilter", "Keep", "check", "item_filter", "list_keeper"]
