"""The unified endpoint's pure part: what the gateway says as one MCP server made of many.

Merging lists, uniting capabilities, negotiating the protocol version and shaping the answers
the gateway gives itself. No I/O: ``unified.py`` fetches, this decides. Every list is merged so
that what is listed is exactly what is callable: an item stays only when the router would send
its call back to the upstream that listed it, under the name the upstream knows it by.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mcpgate import __version__, jsonrpc
from mcpgate.routing import CALL_OF_KIND, LIST_KIND, Catalogue, Kind, ListedKind, Router

SERVER_INFO: Final = {"name": "mcpgate", "version": __version__}
INSTRUCTIONS: Final = "mcpgate: one MCP server made of several; tool and prompt names may carry a server prefix."

# The key under which each list method's result carries its items, and the field naming an item.
LIST_KEYS: Final[Mapping[str, tuple[str, str]]] = {
    "tools/list": ("tools", "name"),
    "prompts/list": ("prompts", "name"),
    "resources/list": ("resources", "uri"),
    "resources/templates/list": ("resourceTemplates", "uriTemplate"),
}
# Results that carry ttlMs and cacheScope in 2026-07-28.
CACHED_RESULTS: Final = frozenset({*LIST_KEYS, "resources/read"})
# What a list method lists, as the routing catalogue files it.
LISTED_AS: Final[Mapping[str, ListedKind]] = {**LIST_KIND, "resources/templates/list": "template"}
# Assumed for an upstream whose capabilities are not known yet (a legacy-only server the
# heartbeat cannot ask): everything the gateway can route, so nothing reachable is hidden.
ASSUMED_CAPABILITIES: Final[Mapping[str, Any]] = {
    "tools": {"listChanged": True},
    "prompts": {"listChanged": True},
    "resources": {"subscribe": True, "listChanged": True},
    "completions": {},
    "logging": {},
}
ROUTED_CAPABILITIES: Final = ("tools", "prompts", "resources", "completions", "logging")


@dataclass(frozen=True, slots=True)
class Listed:
    """One upstream's answer to a list request, drained across its pages."""

    upstream: str
    items: tuple[dict[str, Any], ...]
    ttl_ms: int | None = None
    private: bool = False


# Requests from an upstream to the client get an id of the gateway's: "mcpgate/<upstream>/<original id as JSON>".
# The id itself says where the client's answer goes, so no table is kept and any instance can route it.
_TAG: Final = "mcpgate/"
# Client capabilities under which upstreams may send requests to the client (legacy era).
ANSWERING_CAPABILITIES: Final = ("sampling", "elicitation", "roots")


def tag_id(upstream: str, request_id: object) -> str:
    return f"{_TAG}{upstream}/{jsonrpc.dumps(request_id).decode()}"


def untag_id(tagged: object) -> tuple[str, jsonrpc.RequestId] | None:
    """The upstream and original id a tagged id stands for; ``None`` if it is not one of ours."""
    if not isinstance(tagged, str) or not tagged.startswith(_TAG):
        return None
    upstream, _, raw = tagged[len(_TAG) :].partition("/")
    try:
        original = jsonrpc.loads(raw)
    except ValueError:
        return None
    return (upstream, original) if upstream and jsonrpc.is_valid_id(original) else None


def tag_requests(upstream: str) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """A rewrite for an upstream's stream: its requests to the client (and its cancellations of
    them) carry tagged ids; everything else passes untouched (``None``)."""

    def rewrite(message: dict[str, Any]) -> dict[str, Any] | None:
        if "method" not in message:
            return None
        if "id" in message:
            return {**message, "id": tag_id(upstream, message["id"])}
        params = message.get("params")
        if message["method"] == "notifications/cancelled" and isinstance(params, dict) and "requestId" in params:
            return {**message, "params": {**params, "requestId": tag_id(upstream, params["requestId"])}}
        return None

    return rewrite


def as_modern_answer(
    gateway_id: str, client_id: object, method: str
) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """A rewrite for a legacy upstream's answer to a 2026-07-28 client: the client's own id back,
    and what that era requires of a result: a ``resultType`` (a legacy result is always complete)
    and, on lists and ``resources/read``, caching guidance. The upstream gave none, so: cache
    nothing, share nothing (``ttlMs`` 0, ``private``)."""
    cached = method in CACHED_RESULTS

    def rewrite(message: dict[str, Any]) -> dict[str, Any] | None:
        if message.get("id") != gateway_id or "method" in message:
            return None
        result = message.get("result")
        if not isinstance(result, dict):
            return {**message, "id": client_id}
        result = {"resultType": "complete", **result}
        if cached:
            result = {"ttlMs": 0, "cacheScope": "private", **result}
        return {**message, "id": client_id, "result": result}

    return rewrite


def answers_requests(init_params: Mapping[str, Any]) -> bool:
    """Whether a legacy client said it can answer requests from servers (so upstreams may send some)."""
    capabilities = init_params.get("capabilities")
    return isinstance(capabilities, dict) and any(key in capabilities for key in ANSWERING_CAPABILITIES)


def union_capabilities(known: Iterable[Mapping[str, Any] | None]) -> dict[str, Any]:
    """The gateway's capabilities: those of its upstreams, merged; ``None`` stands for unknown."""
    merged: dict[str, Any] = {}
    for capabilities in known:
        source = ASSUMED_CAPABILITIES if capabilities is None else capabilities
        for key in ROUTED_CAPABILITIES:
            value = source.get(key)
            if isinstance(value, dict):
                slot = merged.setdefault(key, {})
                # A flag any upstream offers, the gateway offers (it relays or answers it).
                slot.update({flag: True for flag, on in value.items() if on is True})
    return merged


def negotiate_legacy(requested: object) -> str:
    """The client's version when the gateway speaks it, else the newest legacy one (the spec's rule)."""
    if isinstance(requested, str) and requested in jsonrpc.LEGACY_VERSIONS:
        return requested
    return jsonrpc.LATEST_LEGACY


def initialize_result(version: str, capabilities: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "protocolVersion": version,
        "capabilities": dict(capabilities),
        "serverInfo": dict(SERVER_INFO),
        "instructions": INSTRUCTIONS,
    }


def discover_result(capabilities: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "supportedVersions": list(jsonrpc.MODERN_VERSIONS),
        "capabilities": dict(capabilities),
        "instructions": INSTRUCTIONS,
        "resultType": "complete",
        "ttlMs": 0,
        "cacheScope": "public",
        "_meta": {"io.modelcontextprotocol/serverInfo": dict(SERVER_INFO)},
    }


def item_name(method: str, item: object) -> str | None:
    key = LIST_KEYS[method][1]
    value = item.get(key) if isinstance(item, dict) else None
    return value if isinstance(value, str) else None


def merge_list(
    method: str,
    answers: Sequence[Listed],
    router: Router,
    catalogue: Catalogue,
    permits: Callable[[str, Kind, str], bool] | None = None,
) -> list[dict[str, Any]]:
    """The items of every answer, renamed as clients see them, each only if its call routes back
    and ``permits`` (the caller's policy: upstream, kind, the upstream's own name) allows that call."""
    kind = LIST_KIND[method]
    merged: list[dict[str, Any]] = []
    seen: set[str] = set()
    for answer in answers:
        for item in answer.items:
            name = item_name(method, item)
            if name is None:
                continue
            exposed = router.exposed_name(answer.upstream, kind, name)
            if exposed in seen or (permits is not None and not permits(answer.upstream, kind, name)):
                continue
            if method != "resources/templates/list":
                route = router.route(CALL_OF_KIND[kind], (kind, exposed), catalogue)
                if route is None or route.upstream != answer.upstream or route.name != name:
                    continue
            seen.add(exposed)
            key = LIST_KEYS[method][1]
            merged.append(item if exposed == name else {**item, key: exposed})
    return merged


def list_result(
    method: str, items: list[dict[str, Any]], answers: Sequence[Listed], modern: bool, private: bool = False
) -> dict[str, Any]:
    """The merged answer; 2026-07-28 results also say how long they may be cached, and by whom
    (``private``: filtered for this caller, so never to be shared with another)."""
    result: dict[str, Any] = {LIST_KEYS[method][0]: items}
    if modern:
        ttls = [a.ttl_ms for a in answers if a.ttl_ms is not None]
        result["resultType"] = "complete"
        result["ttlMs"] = min(ttls) if ttls else 0
        result["cacheScope"] = "private" if private or any(a.private for a in answers) else "public"
    return result
