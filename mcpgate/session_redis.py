"""Sessions in Redis (``sessions.backend: redis``): any gateway instance or worker serves any session.

Keys, under ``<prefix>:session:``:

- ``s:<id>``: the session as JSON (``Session.to_json``), kept twice the idle timeout so that the
  sweeper still finds what to end upstream;
- ``idle``: every session id, scored by when it was last used: expiry and the ``max_sessions`` count;
- ``c:<client>``: the client's session ids, scored the same way: ``max_per_client`` evicts the lowest;
- ``scopes``: live sessions per endpoint, for the metrics;
- ``lock:<id>``: the cross-instance lock around re-opening an upstream session.

Whoever removes an id from ``idle`` (``ZREM`` answers 1 to one caller only) owns the removal, so
two instances expiring or deleting the same session end its upstream sessions once.

A session read from Redis is kept here for a second (``FRESH``), shared by this process's
requests as the memory store shares its objects, and its use is written back when it is read
again: idle timeouts are minutes, and a client's burst of calls then costs Redis nothing. What
another instance changes in that second is caught where it matters: an upstream session it
re-opened makes ours answer 404, and re-opening reloads the session under the lock first (and
finds it gone if it was deleted, which the client then learns).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mcpgate.errors import GatewayError
from mcpgate.redis_batch import Batch
from mcpgate.sessions import Session, SessionStore, session_limit

log = logging.getLogger("mcpgate.sessions")

TIMEOUT: Final = 1.0  # seconds for one Redis command
FRESH: Final = 1.0  # seconds a session read from Redis is served from this process's memory
MAX_FRESH: Final = 10_000
LOCK_TTL_MS: Final = 30_000  # a lock outlives a crashed holder by at most this
LOCK_POLL: Final = 0.05
# Deletes the lock only if it is still ours (it may have expired and been taken by another).
UNLOCK: Final = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def unavailable(exc: BaseException) -> GatewayError:
    log.error("session store: redis unavailable (%s: %s)", type(exc).__name__, exc)
    return GatewayError("session_store_unavailable", headers={"Retry-After": "1"})


class RedisSessionStore(SessionStore):
    def __init__(
        self,
        url: str,
        key_prefix: str,
        idle_timeout: float,
        *,
        max_sessions: int = 10_000,
        max_per_client: int = 1_000,
        clock: Callable[[], float] = time.time,
        fresh: float = FRESH,
    ) -> None:
        super().__init__(idle_timeout, max_sessions=max_sessions, max_per_client=max_per_client)
        self.url = url
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, health_check_interval=30
        )
        self.prefix = f"{key_prefix}:session:"
        self._clock = clock
        self._unlock: Any = self.client.register_script(UNLOCK)
        self._batch = Batch(self.client)
        self._recent: dict[str, tuple[float, Session]] = {}  # id -> (monotonic when read, session)
        self._fresh = fresh
        self._scopes: dict[str, int] = {}
        self._count = 0
        self._local_locks: dict[str, asyncio.Lock] = {}

    # -- keys ----------------------------------------------------------------------------------

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}s:{session_id}"

    def _client_key(self, client: str) -> str:
        return f"{self.prefix}c:{client}"

    @property
    def _idle(self) -> str:
        return f"{self.prefix}idle"

    @property
    def _scopes_key(self) -> str:
        return f"{self.prefix}scopes"

    def _ttl_ms(self) -> int:
        return int(self.idle_timeout * 2000) + 1000

    # -- the store -----------------------------------------------------------------------------

    async def check(self) -> None:
        """At start: Redis must answer (raises RedisError/OSError)."""
        await self.client.ping()
        await self._refresh_counts()

    def count_by_scope(self) -> dict[str, int]:
        """The fleet's live sessions per endpoint, as of the last sweep (every instance reports
        the same numbers: aggregate them with max, not sum)."""
        return dict(self._scopes)

    def __len__(self) -> int:
        return self._count

    async def admit(self) -> None:
        try:
            count = await self.client.zcard(self._idle)
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from None
        if count >= self.max_sessions:
            self.refused += 1
            raise session_limit()

    async def create(self, session: Session) -> list[Session]:
        await self.admit()
        evicted: list[Session] = []
        try:
            mine = self._client_key(session.client)
            while await self.client.zcard(mine) >= self.max_per_client:
                popped = await self.client.zpopmin(mine)
                if not popped:
                    break
                gone = await self._remove(_text(popped[0][0]))
                if gone is not None:
                    evicted.append(gone)
            now = self._clock()
            session.last_seen = now
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.set(self._key(session.id), session.to_json(), px=self._ttl_ms())
                pipe.zadd(self._idle, {session.id: now})
                pipe.zadd(mine, {session.id: now})
                pipe.pexpire(mine, self._ttl_ms())
                pipe.hincrby(self._scopes_key, session.scope, 1)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from None
        self.evicted += len(evicted)
        self._counted(session.scope, 1)  # until the next sweep reads the fleet's numbers
        return evicted

    def _counted(self, scope: str, change: int) -> None:
        self._count = max(0, self._count + change)
        self._scopes[scope] = max(0, self._scopes.get(scope, 0) + change)

    async def get(self, session_id: str) -> Session | None:
        recent = self._recent.get(session_id)
        if recent is not None and time.monotonic() - recent[0] < self._fresh:
            return recent[1]
        try:
            # Two commands, one round trip: concurrent requests' reads share a pipeline (``redis_batch``).
            text, last_seen = await asyncio.gather(
                self._batch.execute("GET", self._key(session_id)), self._batch.execute("ZSCORE", self._idle, session_id)
            )
            if text is None or last_seen is None:
                return None
            session = Session.from_json(text)
            now = self._clock()
            if now - float(last_seen) > self.idle_timeout:
                await self._remove(session_id)
                return None
            session.last_seen = now
            await asyncio.gather(
                self._batch.execute("ZADD", self._idle, "XX", now, session_id),
                self._batch.execute("ZADD", self._client_key(session.client), "XX", now, session_id),
                self._batch.execute("PEXPIRE", self._key(session_id), self._ttl_ms()),
            )
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from None
        self._keep(session)
        return session

    def _keep(self, session: Session) -> None:
        if len(self._recent) >= MAX_FRESH:
            self._recent.clear()  # a second's worth at most: cheaper to refetch than to sort
        self._recent[session.id] = (time.monotonic(), session)

    async def save(self, session: Session) -> None:
        try:
            await self.client.set(self._key(session.id), session.to_json(), px=self._ttl_ms(), xx=True)
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from None

    async def reload(self, session: Session) -> None:
        try:
            text = await self.client.get(self._key(session.id))
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from None
        if text is None:  # ended on another instance meanwhile
            self._recent.pop(session.id, None)
            raise GatewayError("session_not_found")
        session.upstream_sessions = Session.from_json(text).upstream_sessions

    async def delete(self, session_id: str) -> Session | None:
        try:
            return await self._remove(session_id)
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from None

    async def expire(self) -> list[Session]:
        cutoff = self._clock() - self.idle_timeout
        try:
            stale = await self.client.zrangebyscore(self._idle, "-inf", f"({cutoff}")
            gone = [s for s in [await self._remove(_text(sid)) for sid in stale] if s is not None]
            await self._refresh_counts()
        except (RedisError, OSError) as exc:
            log.warning("session store: cannot sweep expired sessions (%s: %s)", type(exc).__name__, exc)
            return []
        return gone

    async def remove_scope(self, scope: str) -> list[Session]:
        """Every instance may try at once: ``_remove`` lets one of them take each session out."""
        gone: list[Session] = []
        try:
            async for batch in self._idle_batches():
                texts = await self.client.mget([self._key(_text(sid)) for sid in batch])
                for sid, text in zip(batch, texts, strict=True):
                    if text is not None and Session.from_json(text).scope == scope:
                        session = await self._remove(_text(sid))
                        if session is not None:
                            gone.append(session)
            await self._refresh_counts()
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from None
        return gone

    async def _idle_batches(self, size: int = 500) -> AsyncIterator[list[Any]]:
        batch: list[Any] = []
        async for sid, _ in self.client.zscan_iter(self._idle):
            batch.append(sid)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    async def _remove(self, session_id: str) -> Session | None:
        """Removes the session if this caller is the one that takes it out of ``idle``."""
        self._recent.pop(session_id, None)
        if not await self.client.zrem(self._idle, session_id):
            return None
        text = await self.client.getdel(self._key(session_id))
        if text is None:
            return None
        session = Session.from_json(text)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zrem(self._client_key(session.client), session_id)
            pipe.hincrby(self._scopes_key, session.scope, -1)
            await pipe.execute()
        self._counted(session.scope, -1)
        return session

    async def _refresh_counts(self) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zcard(self._idle)
            pipe.hgetall(self._scopes_key)
            count, scopes = await pipe.execute()
        self._count = int(count)
        self._scopes = {_text(k): int(v) for k, v in scopes.items() if int(v) > 0}

    @contextlib.asynccontextmanager
    async def lock(self, session_id: str) -> AsyncIterator[None]:
        """Held by one request of one instance at a time: a local lock first (callers of this
        process queue without polling Redis), then a Redis lock with an owner token and a TTL."""
        local = self._local_locks.setdefault(session_id, asyncio.Lock())
        try:
            async with local:
                key, token = f"{self.prefix}lock:{session_id}", secrets.token_hex(8)
                try:
                    # Another instance holds it: poll (Redis has no wake-up for a key's deletion short of
                    # pub/sub, and re-opening an upstream session is rare and quick).
                    while not await self.client.set(key, token, nx=True, px=LOCK_TTL_MS):  # noqa: ASYNC110
                        await asyncio.sleep(LOCK_POLL)
                except (RedisError, OSError) as exc:
                    raise unavailable(exc) from None
                try:
                    yield
                finally:
                    with contextlib.suppress(RedisError, OSError):
                        await self._unlock(keys=[key], args=[token])
        finally:
            if not local.locked():
                self._local_locks.pop(session_id, None)

    async def close(self) -> None:
        await self._batch.close()
        await self.client.aclose()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
