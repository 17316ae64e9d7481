"""Which bucket a request draws from, and the token-bucket arithmetic. Pure: no clock, no I/O.

A bucket holds up to ``capacity`` tokens and gains ``refill_per_second``; each JSON-RPC request
takes one, and a request that finds less than one is refused until the bucket has refilled
enough. Rules are tried in order and the first that matches decides the bucket; a request no rule
matches draws from the ``default`` bucket of its client, and without a default it is not limited.

A rule matches when each condition it sets holds: ``clients`` (the client id), ``roles`` (any of
them), ``servers`` (the upstream), ``methods`` (globs) and ``tools`` (globs over the tool's name as
the upstream knows it; a rule with ``tools`` is about tools and matches only ``tools/call``). Its
buckets are one per (rule, client, upstream), and per tool too with ``per_tool``; with
``per_client: false`` every client shares the rule's bucket, which caps the upstream as a whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from mcpgate.config.model import Bucket, RateLimitConfig, RateLimitRule, any_match

MEMO_SIZE: Final = 16_384
MISSING: Final[Any] = object()
SEP: Final = "\x1f"  # cannot occur in a method or a configured name: keys stay unambiguous


class StoreUnavailable(Exception):
    """The bucket store (Redis) did not answer; the caller applies ``on_backend_error``."""


@dataclass(frozen=True, slots=True)
class Limit:
    where: str  # rate_limit.rules[N] or rate_limit.default, for the audit event and errors
    key: str  # the bucket's name, unique per rule and client/upstream/tool as the rule says
    bucket: Bucket


@dataclass(slots=True)  # not frozen: made once per request, and frozen costs twice as much to make
class Outcome:
    allowed: bool
    limit: int  # the bucket's capacity, for X-RateLimit-Limit
    remaining: int  # whole tokens left after this request
    retry_after: float  # seconds until one token is there again (0 when allowed)
    reset_after: float  # seconds until the bucket is full again

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_after)),
        }


def take(tokens: float, elapsed: float, bucket: Bucket, cost: float = 1.0) -> tuple[float, Outcome]:
    """A bucket that held ``tokens`` ``elapsed`` seconds ago, asked for ``cost``: what it holds now,
    and the answer. The Redis script does the same sums on the server's clock."""
    capacity, refill = bucket.capacity, bucket.refill_per_second
    if elapsed > 0:
        tokens += elapsed * refill
        if tokens > capacity:
            tokens = capacity
    allowed = tokens >= cost
    if allowed:
        tokens -= cost
    return tokens, outcome(allowed, tokens, bucket, cost)


def outcome(allowed: bool, tokens: float, bucket: Bucket, cost: float = 1.0) -> Outcome:
    refill = bucket.refill_per_second
    return Outcome(
        allowed,
        int(bucket.capacity),  # limit
        int(tokens) if tokens > 0 else 0,  # remaining
        0.0 if allowed else (cost - tokens) / refill,  # retry_after
        (bucket.capacity - tokens) / refill,  # reset_after
    )


class RateLimits:
    """The compiled ``rate_limit`` section: ``limit_for`` names the bucket of one request."""

    def __init__(self, config: RateLimitConfig) -> None:
        self.config = config
        self.rules = config.rules
        # Whole answers, bucket key included: a client repeats the same few requests.
        self._memo: dict[tuple[str, str, tuple[str, ...], str | None, str, str | None], Limit | None] = {}

    def limit_for(
        self, client_key: str, client_id: str, roles: tuple[str, ...], server: str | None, method: str, tool: str | None
    ) -> Limit | None:
        """``client_key`` names the caller's buckets (its identity, or its address when anonymous);
        ``client_id`` is what ``clients`` rules match. ``tool`` only for ``tools/call``."""
        memo_key = (client_key, client_id, roles, server, method, tool)
        found = self._memo.get(memo_key, MISSING)
        if found is not MISSING:
            return found  # type: ignore[no-any-return]
        limit = self._limit(client_key, client_id, roles, server, method, tool)
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        self._memo[memo_key] = limit
        return limit

    def _limit(
        self, client_key: str, client_id: str, roles: tuple[str, ...], server: str | None, method: str, tool: str | None
    ) -> Limit | None:
        index = self._first_match(client_id, roles, server, method, tool)
        if index is None:
            default = self.config.default
            return None if default is None else Limit("rate_limit.default", f"d{SEP}{client_key}", default)
        rule = self.rules[index]
        parts = [f"r{index}", client_key if rule.per_client else "*", server or "-"]
        if rule.per_tool:
            parts.append(tool or "-")
        return Limit(f"rate_limit.rules[{index}]", SEP.join(parts), rule.bucket)

    def _first_match(
        self, client_id: str, roles: tuple[str, ...], server: str | None, method: str, tool: str | None
    ) -> int | None:
        for rule in self.rules:
            if _matches(rule, client_id, roles, server, method, tool):
                return rule.index
        return None


def _matches(
    rule: RateLimitRule, client_id: str, roles: tuple[str, ...], server: str | None, method: str, tool: str | None
) -> bool:
    if rule.clients and client_id not in rule.clients:
        return False
    if rule.roles and not any(role in rule.roles for role in roles):
        return False
    if rule.servers and server not in rule.servers:
        return False
    if rule.methods and not any_match(rule.methods, method):
        return False
    return not rule.tools or (method == "tools/call" and tool is not None and any_match(rule.tools, tool))
