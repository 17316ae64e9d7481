"""The request pipeline: every MCP request runs the same ordered stages (DESIGN section 4), less
those the configuration in force leaves nothing to do (``stages_for``).

A stage is ``async def stage(ctx) -> None``: it fills the context or raises ``GatewayError``.
Only the last stage, ``forward``, produces the response. The order is the point:

1. transport checks come first because they are cheap and need nothing else;
2. parse before authenticate so that even a rejection can carry the request's id;
3. authenticate before anything that reveals state (sessions, which servers exist);
4. session before route: the session says which era and which upstream session applies;
5. route before authorize and rate limit, because policy and buckets are per upstream;
6. authorize before rate limit, so that forbidden calls don't spend a client's tokens;
7. rate limit last before forwarding: only calls that would really go out are counted;
8. forward streams the answer back;
9. record (metrics, audit) runs for every request, rejections included, in ``finally``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from aiohttp import web
from aiohttp.helpers import parse_content_type

from mcpgate import guard, held, jsonrpc, proxy, unified
from mcpgate.auth.identity import ANONYMOUS, Identity
from mcpgate.errors import GatewayError
from mcpgate.gateway import Gateway
from mcpgate.jsonrpc import Message
from mcpgate.listener import ANSWER_HEADERS, render_error
from mcpgate.observability.tracing import HEADER as REQUEST_ID_HEADER
from mcpgate.observability.tracing import REQUEST_ID, accept_or_make
from mcpgate.plan import Plan
from mcpgate.policy import Decision
from mcpgate.routing import Route
from mcpgate.sessions import Session, reopen_params
from mcpgate.unified import UNIFIED
from mcpgate.upstream.http import SESSION_HEADER, HttpUpstream

log = logging.getLogger("mcpgate.pipeline")

ALLOWED_METHODS: Final = ("POST", "GET", "DELETE")
LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "[::1]"})
READ_CHUNK: Final = 64 * 1024

Era = Literal["legacy", "modern"]


@dataclass(slots=True, eq=False)
class RequestContext:
    request: web.Request
    gateway: Gateway
    endpoint: str  # the upstream named in the path
    started: float = field(default_factory=time.monotonic)
    arrived: float = field(default_factory=time.time)
    correlation_id: str = ""  # X-Request-ID, the client's or made here
    body: bytes = b""
    message: Message | list[Message] | None = None
    era: Era = "legacy"
    identity: Identity = ANONYMOUS
    session: Session | None = None
    reopen_params: dict[str, Any] | None = None  # what a session opened by this initialize keeps
    upstream: HttpUpstream | None = None
    route: Route | None = None  # unified endpoint: where the call goes and under which name
    response: web.StreamResponse | None = None
    error: GatewayError | None = None
    decision: Decision | None = None  # the policy's, for the audit event
    shadowed: bool = False  # denied by a shadow-mode policy, and let through
    upstream_ms: float | None = None  # until the upstream's answer began
    ended: float = 0.0  # monotonic, when the pipeline was done with it (the recorder's)
    rate_limit: tuple[str, str] | None = None  # (allow, deny or unavailable; the rule), for the audit event
    refused: GatewayError | None = None  # found before the body was read; raised once its id is known

    @property
    def request_id(self) -> jsonrpc.RequestId | None:
        return self.message.id if isinstance(self.message, Message) else None

    @property
    def rpc_method(self) -> str | None:
        return self.message.method if isinstance(self.message, Message) else None

    @property
    def is_initialize(self) -> bool:
        return isinstance(self.message, Message) and self.message.method == "initialize"

    @property
    def client_key(self) -> str:
        """Whom per-client limits count against: the identity, or the address of an anonymous caller."""
        if self.identity.authenticated:
            return f"id:{self.identity.client_id}"
        return f"addr:{self.request.remote}"


Stage = Callable[[RequestContext], Awaitable[None]]


# -- 1. transport checks ---------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    """Without a configured list, only loopback origins pass: the DNS-rebinding defence."""
    if allowed:
        return "*" in allowed or origin.rstrip("/") in allowed
    scheme, _, rest = origin.partition("://")
    host = rest.split("/", 1)[0]
    host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return scheme in ("http", "https") and host in LOOPBACK_HOSTS


@functools.lru_cache(maxsize=64)
def media_type(content_type: str) -> str:
    """aiohttp's reading of a Content-Type header, once per distinct value: ``request.content_type``
    reads it again for every request, and copies its parameters each time."""
    return parse_content_type(content_type)[0]


@functools.lru_cache(maxsize=256)
def _accepts(accept: str, *media_types: str) -> bool:
    """Clients send the same few Accept values over and over: parse each once."""
    parts = {p.split(";", 1)[0].strip().lower() for p in accept.split(",")}
    if "*/*" in parts:
        return True
    return all(m in parts or f"{m.split('/')[0]}/*" in parts for m in media_types)


def supported_versions(ctx: RequestContext) -> list[str]:
    """What to offer a client whose version is unknown: entries of the ``server/discover`` it would
    get here (MCP-NOTES: a gateway speaking for an upstream lists what that upstream supports).
    On ``/servers/<name>/mcp`` that is the upstream's own list, as far as the gateway speaks it too;
    on ``/mcp``, and for an upstream not (yet) discovered, the gateway's own discover answer."""
    upstream = ctx.gateway.upstreams.get(ctx.endpoint) if ctx.endpoint != UNIFIED else None
    known = upstream.state.versions if upstream is not None else None
    both = [v for v in known if v in jsonrpc.SUPPORTED_VERSIONS] if known else []
    return both or list(jsonrpc.MODERN_VERSIONS)


async def check_transport(ctx: RequestContext) -> None:
    request, server = ctx.request, ctx.gateway.config.server
    if request.method not in ALLOWED_METHODS:
        raise GatewayError("method_not_allowed", headers={"Allow": ", ".join(ALLOWED_METHODS)})
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(origin, server.allowed_origins):
        raise GatewayError("origin_not_allowed", "Origin not allowed")
    if ctx.gateway.closing.is_set():
        raise GatewayError("shutting_down", headers={"Connection": "close", "Retry-After": "1"})
    version = request.headers.get("MCP-Protocol-Version")
    if version is not None and version not in jsonrpc.SUPPORTED_VERSIONS:
        shown = jsonrpc.printable(version)
        refused = GatewayError(
            "unsupported_protocol_version",
            f"Unsupported protocol version: {shown}" if shown else "Unsupported protocol version",
            data={"supported": supported_versions(ctx), "requested": shown},
        )
        if request.method != "POST":
            raise refused
        ctx.refused = refused  # raised by parse, once the body says which request it answers
    ctx.era = "modern" if jsonrpc.is_modern(version) else "legacy"
    if request.method == "POST":
        content_type = request.headers.get("Content-Type")
        if content_type is None or media_type(content_type) != "application/json":
            raise GatewayError("unsupported_media_type")
        if not _accepts(request.headers.get("Accept", ""), "application/json", "text/event-stream"):
            raise GatewayError("not_acceptable", "Accept must list application/json and text/event-stream")
        if request.content.is_eof():  # the usual case: the whole body came with the headers
            ctx.body = arrived_body(request, server.max_body_bytes)
            return
        try:
            async with asyncio.timeout(server.body_timeout):
                ctx.body = await read_body(request, server.max_body_bytes)
        except TimeoutError:
            raise GatewayError(
                "request_timeout",
                f"Request body not received within {server.body_timeout:g}s",
                headers={"Connection": "close"},
            ) from None


def arrived_body(request: web.Request, limit: int) -> bytes:
    """A body that has arrived whole, taken as it lies, without a coroutine: 2% of a call's
    instructions went to awaiting one that had nothing to wait for."""
    body = request.content.read_nowait(-1)
    if len(body) > limit:
        raise body_too_large(limit)
    return body


async def read_body(request: web.Request, limit: int) -> bytes:
    """Read at most ``limit`` bytes, counting as they arrive: Content-Length may be absent or lie."""
    length = request.content_length
    if length is not None:
        if length > limit:
            raise body_too_large(limit)
        try:
            return await request.content.readexactly(length) if length else b""
        except asyncio.IncompleteReadError:
            raise GatewayError("invalid_request", "Request body is shorter than its Content-Length") from None
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def body_too_large(limit: int) -> GatewayError:
    return GatewayError("body_too_large", f"Request body exceeds {limit} bytes", data={"limit": limit})


# -- 2. parse --------------------------------------------------------------------------------


async def parse(ctx: RequestContext) -> None:
    if ctx.request.method != "POST":
        return
    ctx.message = message = jsonrpc.parse(ctx.body)
    if ctx.refused is not None:  # every error carries the request's id (SEP-2575)
        raise ctx.refused
    if isinstance(message, list):
        if ctx.era == "modern" or ctx.request.headers.get("MCP-Protocol-Version", jsonrpc.BATCH_VERSION) != (
            jsonrpc.BATCH_VERSION
        ):
            raise GatewayError("batch_not_supported")
        return
    meta_version = message.meta_protocol_version
    if ctx.era == "modern" or jsonrpc.is_modern(meta_version):
        check_modern_headers(ctx, message, meta_version)


def check_request_meta(message: Message) -> None:
    """A 2026-07-28 request names its protocol version and client capabilities in ``params._meta``;
    without them it is invalid (-32602, 400), whoever would have answered it."""
    meta = message.params.get("_meta")
    if not isinstance(meta, dict):
        raise GatewayError("invalid_params", "params._meta is required in protocol 2026-07-28")
    if not isinstance(meta.get(jsonrpc.META_PROTOCOL_VERSION), str):
        raise GatewayError("invalid_params", f"params._meta needs {jsonrpc.META_PROTOCOL_VERSION}")
    if not isinstance(meta.get(jsonrpc.META_CLIENT_CAPABILITIES), dict):
        raise GatewayError("invalid_params", f"params._meta needs {jsonrpc.META_CLIENT_CAPABILITIES} (an object)")


def mismatch(what: str) -> GatewayError:
    return GatewayError("header_mismatch", what)


def check_modern_headers(ctx: RequestContext, message: Message, meta_version: str | None) -> None:
    """2026-07-28 requests repeat what they are in headers; a mismatch is a 400 (-32020)."""
    headers = ctx.request.headers
    ctx.era = "modern"
    version = headers.get("MCP-Protocol-Version")
    if version is None:
        raise mismatch("MCP-Protocol-Version header is required for 2026-07-28 requests")
    if meta_version is not None and meta_version != version:
        raise mismatch("MCP-Protocol-Version header does not match params._meta protocolVersion")
    if message.kind == "response":
        return
    method = headers.get("Mcp-Method")
    if method is None or jsonrpc.decode_header_value(method) != message.method:
        raise mismatch("Mcp-Method header is missing or does not match the body's method")
    if message.method in jsonrpc.NAMED_METHODS:
        name = headers.get("Mcp-Name")
        if name is None or jsonrpc.decode_header_value(name) != message.name:
            raise mismatch("Mcp-Name header is missing or does not match the body's name or uri")
    if message.kind == "request":
        check_request_meta(message)


# -- 3. authenticate -------------------------------------------------------------------------


async def authenticate(ctx: RequestContext) -> None:
    """Without an ``auth`` section every caller is ``anonymous``; with one, a credential is required."""
    auth = ctx.gateway.auth
    if auth is not None:
        ctx.identity = await auth.authenticate(ctx.request.headers, ctx.request.path)


# -- 4. session ------------------------------------------------------------------------------


async def resolve_session(ctx: RequestContext) -> None:
    if ctx.era == "modern":
        return
    if ctx.is_initialize:
        # Admission before anything is opened upstream: bounded params, room in the store.
        assert isinstance(ctx.message, Message)
        ctx.reopen_params = reopen_params(ctx.message.params)
        await ctx.gateway.sessions.admit()
        return
    session_id = ctx.request.headers.get(SESSION_HEADER)
    if session_id is None:
        raise GatewayError("session_required")
    session = await ctx.gateway.sessions.get(session_id)
    # A session of another identity, or of another endpoint, does not exist for this caller.
    if session is None or session.owner != ctx.identity.principal or session.scope != ctx.endpoint:
        raise GatewayError("session_not_found")
    ctx.session = session
    if isinstance(ctx.message, list) and session.protocol_version != jsonrpc.BATCH_VERSION:
        raise GatewayError("batch_not_supported")


# -- 5. route --------------------------------------------------------------------------------


async def route(ctx: RequestContext) -> None:
    if ctx.endpoint == UNIFIED:
        await unified.route(ctx)
        return
    upstream = ctx.gateway.upstreams.get(ctx.endpoint)
    if upstream is None:
        configured = ctx.gateway.config.upstream(ctx.endpoint)
        if configured is not None:
            raise GatewayError(
                "upstream_unavailable",
                f"Upstream {ctx.endpoint!r} uses the {configured.transport} transport, not served yet",
                data={"upstream": ctx.endpoint},
            )
        raise GatewayError("server_not_found", f"No MCP server named {ctx.endpoint[:64]!r}")
    ctx.upstream = upstream


# -- 6. authorize ----------------------------------------------------------------------------


async def authorize(ctx: RequestContext) -> None:
    """The upstream's exposure filter and the policy, for every message a client sends.

    GET streams and DELETE need no decision of their own: they act on a session that the
    identity itself opened with an allowed ``initialize``. Lists are allowed here and filtered
    on the way back. On ``/mcp`` a batch's messages are judged one by one as they are routed;
    on a per-server endpoint a batch goes out whole, so one forbidden message refuses it all.
    Without a policy, an upstream that exposes every tool leaves nothing to decide.
    """
    message, upstream = ctx.message, ctx.upstream
    if message is None or (ctx.gateway.policy is None and (upstream is None or upstream.exposes_all)):
        return
    if ctx.endpoint == UNIFIED:
        if isinstance(message, Message):
            guard.check_unified(ctx, message, ctx.route)
        return
    for part in message if isinstance(message, list) else (message,):
        guard.check_message(ctx, part, ctx.endpoint)


# -- 7. rate limit ---------------------------------------------------------------------------


async def rate_limit(ctx: RequestContext) -> None:
    """After authorization, so a denied request spends no token; before the upstream sees it (``limits``)."""
    limiter = ctx.gateway.limiter
    if limiter is not None and ctx.message is not None:
        await limiter.admit(ctx)


# -- 8. forward ------------------------------------------------------------------------------


async def forward(ctx: RequestContext) -> None:
    """Per-server requests are relayed as bytes (``proxy``), or through the session the gateway
    holds when a modern client meets a legacy-only upstream (``held``); the unified endpoint's
    are answered or routed."""
    if ctx.endpoint == UNIFIED:
        await unified.forward(ctx)
    elif ctx.era == "modern" and await held.wanted(ctx):
        await held.forward(ctx)
    else:
        await proxy.forward(ctx)


# -- 9. record -------------------------------------------------------------------------------


def record(ctx: RequestContext) -> None:
    """The audit event, built once, for metrics, the audit log and the access line (``recorder``)."""
    recorder = ctx.gateway.recorder
    if recorder is not None and recorder.wanted:
        recorder.record(ctx)


# The order, and why, is this module's docstring; tests/test_pipeline.py pins it.
STAGES: Final[tuple[Stage, ...]] = (
    check_transport,
    parse,
    authenticate,
    resolve_session,
    route,
    authorize,
    rate_limit,
    forward,
)


def stages_for(plan: Plan) -> tuple[Stage, ...]:
    """``STAGES`` less those with nothing to do under ``plan``: ``authenticate`` without an ``auth``
    section (every caller is anonymous), ``authorize`` without a policy or any upstream's ``tools``
    filter, ``rate_limit`` without a ``rate_limit`` section. Each would only have returned, but
    creating and awaiting the three coroutines was 2.4% of a forwarded call's instructions. A
    reload or a runtime change makes a new plan, and so picks anew."""
    return _stages(plan.auth is not None, plan.checks_access, plan.limiter is not None)


@functools.cache  # eight combinations at most
def _stages(authenticates: bool, authorizes: bool, limits: bool) -> tuple[Stage, ...]:
    idle: dict[Stage, bool] = {authenticate: not authenticates, authorize: not authorizes, rate_limit: not limits}
    return tuple(stage for stage in STAGES if not idle.get(stage, False))


async def run(ctx: RequestContext, stages: tuple[Stage, ...] | None = None) -> web.StreamResponse:
    """``stages``: the plan's (``stages_for``) unless given."""
    if stages is None:
        stages = stages_for(ctx.gateway.plan)
    ctx.correlation_id = accept_or_make(ctx.request.headers.get(REQUEST_ID_HEADER))
    ctx.request[ANSWER_HEADERS] = {REQUEST_ID_HEADER: ctx.correlation_id}
    REQUEST_ID.set(ctx.correlation_id)  # upstream headers and log lines of this request carry it
    tracing = ctx.gateway.tracing
    if tracing is None:
        return await run_stages(ctx, stages)
    with tracing.server_span(ctx):
        return await run_stages(ctx, stages)


async def run_stages(ctx: RequestContext, stages: tuple[Stage, ...]) -> web.StreamResponse:
    try:
        for stage in stages:
            await stage(ctx)
    except GatewayError as exc:
        ctx.error = exc
        if ctx.response is not None and ctx.response.prepared:
            # Too late for a status code: the stream has started. The stage logged it.
            return ctx.response
        return render_error(exc, ctx.request_id)
    except Exception:
        log.exception("internal error handling %s %s", ctx.request.method, ctx.request.path)
        ctx.error = GatewayError("internal_error")
        if ctx.response is not None and ctx.response.prepared:
            return ctx.response
        return render_error(ctx.error, ctx.request_id)
    finally:
        record(ctx)
    assert ctx.response is not None, "the last stage must produce a response"
    return ctx.response
