"""Buckets in Redis, shared by every gateway instance and worker: the limit holds for the fleet.

Each request runs one Lua script, atomically, on the Redis server's own clock (``TIME``), so
instances whose clocks disagree still agree on the buckets. The script is registered once and
run by its SHA (``EVALSHA``), loaded again when a restarted server answers NOSCRIPT; the calls of
one turn of the event loop share a pipeline (``redis_batch``). A key expires once its bucket
would be full again, so idle clients cost no memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from mcpgate.config.model import Bucket
from mcpgate.limits.rules import Outcome, StoreUnavailable, outcome
from mcpgate.redis_batch import Batch

log = logging.getLogger("mcpgate.limits")

# KEYS[1] the bucket; ARGV capacity, refill per second, cost. Returns {allowed, tokens left}, the
# tokens as a string: Redis turns a Lua number reply into an integer, dropping the fraction.
TAKE: Final = """
local capacity = tonumber(ARGV[1])
local refill = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = capacity
  at = now
end
local elapsed = now - at
if elapsed < 0 then elapsed = 0 end
tokens = math.min(capacity, tokens + elapsed * refill)
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / refill * 1000) + 1000)
return {allowed, tostring(tokens)}
"""
TIMEOUT: Final = 0.5  # seconds; a request waits no longer than this for a verdict
RETRY_AFTER_FAILURE: Final = 1.0  # seconds without trying Redis after it failed


class RedisBuckets:
    def __init__(self, url: str, key_prefix: str, on_error: str = "deny") -> None:
        self.url = url
        self.on_error = on_error
        self.prefix = f"{key_prefix}:rl:"
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, health_check_interval=30
        )
        self._script: Any = self.client.register_script(TAKE)
        self._batch = Batch(self.client)
        self._loading = asyncio.Lock()
        self._down_since: float | None = None  # monotonic; while set, Redis is retried once a second
        self._next_try = 0.0

    async def check(self) -> None:
        """At start: Redis must answer, or the gateway does not start (raises RedisError/OSError)."""
        await self.client.ping()
        await self._load()

    async def _load(self) -> None:
        """SCRIPT LOAD, by one caller while the others that met NOSCRIPT wait for it."""
        async with self._loading:
            if not (await self.client.script_exists(self._script.sha))[0]:
                await self.client.script_load(TAKE)

    async def take(self, key: str, bucket: Bucket) -> Outcome:
        now = time.monotonic()
        if self._down_since is not None and now < self._next_try:
            raise StoreUnavailable  # do not make every request wait for a Redis that is down
        command = (
            "EVALSHA",
            self._script.sha,
            1,
            self.prefix + key,
            repr(bucket.capacity),
            repr(bucket.refill_per_second),
            "1",
        )
        try:
            try:
                allowed, tokens = await self._batch.execute(*command)
            except NoScriptError:  # a restarted or flushed Redis: load it again, once for all callers
                await self._load()
                allowed, tokens = await self._batch.execute(*command)
        except (RedisError, OSError) as exc:
            self._failed(now, exc)
            raise StoreUnavailable from None
        if self._down_since is not None:
            log.warning("rate limits: redis is back after %.1fs", now - self._down_since)
            self._down_since = None
        return outcome(bool(allowed), float(tokens), bucket)

    def _failed(self, now: float, exc: BaseException) -> None:
        self._next_try = now + RETRY_AFTER_FAILURE
        if self._down_since is None:  # once per outage, not once per request
            self._down_since = now
            verdict = "refused (on_backend_error: deny)" if self.on_error == "deny" else "let through unlimited"
            log.error(
                "rate limits: redis unavailable (%s: %s); until it is back, requests are %s",
                type(exc).__name__,
                exc,
                verdict,
            )

    async def close(self) -> None:
        await self._batch.close()
        await self.client.aclose()
