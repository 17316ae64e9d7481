"""Rewriting relayed answers: only where the gateway must change what it relays.

The plain path copies bytes. A rewrite is a function of one decoded JSON-RPC message that
returns the changed message, or None to keep it as it was; it is applied to a JSON body (each
message of a batch answer too) or to an SSE stream, event by event. Whatever must be rewritten
and cannot be read fails closed: a filter that meets garbage does not pass the garbage on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mcpgate import guard, jsonrpc
from mcpgate.federation import LIST_KEYS
from mcpgate.routing import LIST_KIND
from mcpgate.sse import SSEError, SSEEvent, SSEParser, encode_event

if TYPE_CHECKING:
    from mcpgate.pipeline import RequestContext

Rewrite = Callable[[dict[str, Any]], dict[str, Any] | None]


def list_filter(ctx: RequestContext) -> Rewrite | None:
    """Lists through a per-server endpoint show only what this client may call there.

    The upstream's ``tools`` exposure filter and the policy both apply; None (bytes pass
    untouched) when neither would remove anything from any list this request asks for.
    """
    upstream, message = ctx.upstream, ctx.message
    if upstream is None or message is None:
        return None
    keepers: dict[tuple[bool, object], tuple[str, guard.Keep]] = {}
    for request in message if isinstance(message, list) else (message,):
        kind = LIST_KIND.get(request.method or "") if request.kind == "request" else None
        if kind is not None and (keep := guard.list_keeper(ctx, upstream.name, kind)) is not None:
            keepers[_id_key(request.id)] = (request.method or "", keep)
    if not keepers:
        return None

    def rewrite(answer: dict[str, Any]) -> dict[str, Any] | None:
        found = keepers.get(_id_key(answer.get("id")))
        result = answer.get("result")
        if found is None or not isinstance(result, dict):
            return None
        method, keep = found
        key, name_key = LIST_KEYS[method]
        items = result.get(key)
        if not isinstance(items, list):
            return None
        kept = [i for i in items if isinstance(i, dict) and isinstance(n := i.get(name_key), str) and keep(n)]
        return {**answer, "result": {**result, key: kept}}

    return rewrite


def _id_key(request_id: object) -> tuple[bool, object]:
    # 1 and "1" are different ids, and so are 1 and true (equal as dict keys in Python).
    return isinstance(request_id, str), request_id if not isinstance(request_id, bool) else repr(request_id)


def rewrite_message(decoded: object, rewrite: Rewrite) -> object | None:
    """A decoded message or batch answer, rewritten; None when nothing changed."""
    if isinstance(decoded, dict):
        return rewrite(decoded)
    if isinstance(decoded, list):
        changed = [rewrite(m) if isinstance(m, dict) else None for m in decoded]
        if any(c is not None for c in changed):
            return [c if c is not None else m for c, m in zip(changed, decoded, strict=True)]
    return None


def rewrite_json(body: bytes, rewrite: Rewrite) -> bytes | None:
    """The rewritten body; ``None`` when it is not JSON (never pass unfiltered what must be filtered)."""
    try:
        changed = rewrite_message(jsonrpc.loads(body), rewrite)
        return body if changed is None else jsonrpc.dumps(changed)
    except ValueError:
        return None


def sse_rewriter(rewrite: Rewrite) -> Callable[[bytes], bytes]:
    parser = SSEParser(emit_empty=True)

    def transform(chunk: bytes) -> bytes:
        return b"".join(rewrite_event(event, rewrite) for event in parser.feed(chunk))

    return transform


def rewrite_event(event: SSEEvent, rewrite: Rewrite) -> bytes:
    """One event of a stream that must be rewritten; one that cannot be read ends the stream.

    Relaying an unreadable event untouched would pass unfiltered what must be filtered (a
    client's parser may read what ours refused), so the stream fails closed instead.
    """
    data = event.data
    if data:
        try:
            changed = rewrite_message(jsonrpc.loads(data), rewrite)
            if changed is not None:
                data = jsonrpc.dumps(changed).decode()
        except ValueError:
            raise SSEError("an event is not a readable JSON-RPC message") from None
    return encode_event(data, event=event.event, id=event.id, retry=event.retry)


__all__ = ["Rewrite", "list_filter", "rewrite_event", "rewrite_json", "sse_rewriter"]
