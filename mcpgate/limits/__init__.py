"""Stage 7, ``rate_limit``: token buckets per client, rule, upstream and tool, in memory or Redis.

``rules`` says which bucket a request draws from (pure); ``memory`` and ``redis`` keep the
buckets. Every JSON-RPC request takes one token (notifications and the client's answers take
none); a 2025-03-26 batch takes one per request in it. A refused request gets 429 with
``Retry-After``; every answer on a limited route carries ``X-RateLimit-Limit``, ``-Remaining`` and
``-Reset`` (whole seconds until the bucket is full again).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

from mcpgate.config.model import Bucket, RateLimitConfig
from mcpgate.errors import GatewayError
from mcpgate.jsonrpc import Message
from mcpgate.limits.memory import MemoryBuckets
from mcpgate.limits.rules import Outcome, RateLimits, StoreUnavailable
from mcpgate.listener import ANSWER_HEADERS
from mcpgate.observability.logging import Redactor
from mcpgate.unified import UNIFIED

if TYPE_CHECKING:
    from mcpgate.pipeline import RequestContext


class Store(Protocol):
    async def take(self, key: str, bucket: Bucket) -> Outcome: ...

    async def close(self) -> None: ...


class Limiter:
    def __init__(self, config: RateLimitConfig, store: Store | None = None) -> None:
        self.config = config
        self.limits = RateLimits(config)
        if store is None:
            if config.backend == "redis":
                from mcpgate.limits.redis import RedisBuckets

                store = RedisBuckets(config.redis_url, config.key_prefix, config.on_backend_error)
            else:
                store = MemoryBuckets()
        self.store = store
        self._take_now = store.take_now if isinstance(store, MemoryBuckets) else None

    async def start(self) -> None:
        """A Redis store must answer now: a gateway that cannot enforce its limits does not start."""
        check = getattr(self.store, "check", None)
        if check is None:
            return
        try:
            await check()
        except Exception as exc:
            raise StoreUnavailable(
                f"rate_limit: cannot reach redis at {Redactor().url(self.config.redis_url)} "
                f"({type(exc).__name__}: {exc})"
            ) from None

    async def admit(self, ctx: RequestContext) -> None:
        """Takes a token for each request in the message, or raises ``rate_limited``."""
        message = ctx.message
        if type(message) is Message:  # the common case, without a loop
            if message.kind == "request" and message.method is not None:
                await self._admit_one(ctx, message, message.method)
            return
        for part in message if isinstance(message, list) else ():
            if part.kind == "request" and part.method is not None:
                await self._admit_one(ctx, part, part.method)

    async def _admit_one(self, ctx: RequestContext, message: Message, method: str) -> None:
        route, identity = ctx.route, ctx.identity
        server = route.upstream if route is not None else (None if ctx.endpoint == UNIFIED else ctx.endpoint)
        tool = None
        if method == "tools/call":
            tool = route.name if route is not None else message.name
        limit = self.limits.limit_for(ctx.client_key, identity.client_id, identity.roles, server, method, tool)
        if limit is None:
            return
        try:
            if self._take_now is not None:  # memory: no coroutine to make and await
                answer = self._take_now(limit.key, limit.bucket)
            else:
                answer = await self.store.take(limit.key, limit.bucket)
        except StoreUnavailable:
            ctx.rate_limit = ("unavailable", limit.where)
            if self.config.on_backend_error == "allow":
                return
            raise GatewayError("rate_limit_unavailable", headers={"Retry-After": "1"}) from None
        headers = answer.headers()
        ctx.request.setdefault(ANSWER_HEADERS, {}).update(headers)  # every answer says how much is left
        if answer.allowed:
            ctx.rate_limit = ("allow", limit.where)
            return
        ctx.rate_limit = ("deny", limit.where)
        retry_after = max(1, math.ceil(answer.retry_after))
        raise GatewayError(
            "rate_limited",
            f"Rate limit exceeded ({limit.where}); retry in {retry_after}s",
            data={"retryAfter": retry_after, "rule": limit.where},
            headers={"Retry-After": str(retry_after), **headers},
        )

    async def close(self) -> None:
        await self.store.close()
