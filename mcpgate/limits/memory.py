"""Buckets in this process's memory: exact, no I/O, gone at restart, not shared with other instances."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from mcpgate.config.model import Bucket
from mcpgate.limits.rules import Outcome, take

log = logging.getLogger("mcpgate.limits")

MAX_BUCKETS: Final = 100_000


class MemoryBuckets:
    """``key -> [tokens, when]``. Bounded: an anonymous caller's bucket is named by its address,
    so a crowd of addresses could otherwise grow the table without end. Past ``max_buckets``,
    buckets that have refilled to full are dropped (an absent bucket is a full one, so that loses
    nothing); if that is not enough, the oldest are, and that is logged."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_buckets: int = MAX_BUCKETS) -> None:
        self._clock = clock
        self._max = max_buckets
        self._buckets: dict[str, list[float]] = {}
        self._params: dict[str, Bucket] = {}
        self.evicted = 0

    async def take(self, key: str, bucket: Bucket) -> Outcome:
        return self.take_now(key, bucket)

    def take_now(self, key: str, bucket: Bucket) -> Outcome:
        now = self._clock()
        state = self._buckets.get(key)
        if state is None:
            if len(self._buckets) >= self._max:
                self._sweep(now)
            state = self._buckets[key] = [bucket.capacity, now]
            self._params[key] = bucket
        tokens, answer = take(state[0], now - state[1], bucket)
        state[0], state[1] = tokens, now
        return answer

    def __len__(self) -> int:
        return len(self._buckets)

    def _sweep(self, now: float) -> None:
        for key, (tokens, when) in list(self._buckets.items()):
            params = self._params[key]
            if tokens + (now - when) * params.refill_per_second >= params.capacity:
                del self._buckets[key], self._params[key]
        excess = len(self._buckets) - self._max * 9 // 10
        if excess > 0:  # still full of partly drained buckets: forget the oldest
            for key in list(self._buckets)[:excess]:
                del self._buckets[key], self._params[key]
            self.evicted += excess
            log.warning("rate limits: %d buckets in memory (the limit); forgot the %d oldest", self._max, excess)

    async def close(self) -> None:
        """Nothing to release; the Redis store has a connection pool."""
