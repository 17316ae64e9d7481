"""The running configuration, compiled: what every request reads, in one immutable value.

A ``Plan`` holds the configuration and what it compiles into: the upstreams (and the stdio or
SSE channels behind bridged ones), the router, the authenticator, the policy and the rate
limiter. The gateway serves from one plan at a time; a reload (``reload``) builds the next one
beside it and swaps it in with a single assignment, so a request sees either plan whole, never a
mix. Building reuses what did not change: an upstream whose configuration is the same keeps its
connection pool, heartbeat and child process; unchanged rate limits keep their buckets.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mcpgate.auth import Authenticator
from mcpgate.config.model import Config, RateLimitConfig
from mcpgate.limits import Limiter
from mcpgate.policy import Policy
from mcpgate.routing import Router
from mcpgate.upstream.bridge import Bridge
from mcpgate.upstream.channel import Channel
from mcpgate.upstream.http import HttpUpstream
from mcpgate.upstream.sse import SseUpstream
from mcpgate.upstream.stdio import StdioProcess

if TYPE_CHECKING:
    from collections.abc import Awaitable

Child = tuple[Channel, Bridge]


@dataclass(frozen=True, eq=False)
class Plan:
    config: Config
    upstreams: Mapping[str, HttpUpstream]
    router: Router
    auth: Authenticator | None = None  # None: no auth section, every caller is anonymous
    policy: Policy | None = None  # None: no policy section, everything is allowed
    limiter: Limiter | None = None  # None: no rate_limit section, nothing is limited
    # stdio and legacy HTTP+SSE upstreams: each channel, and the bridge that serves it to the rest
    # of the gateway as Streamable HTTP.
    children: Mapping[str, Child] = field(default_factory=dict)

    @functools.cached_property
    def checks_access(self) -> bool:
        """Whether a request can be refused for what it names: a policy, or an upstream's ``tools`` filter."""
        return self.policy is not None or not all(u.exposes_all for u in self.upstreams.values())


@dataclass(eq=False)
class Build:
    """A new plan, and what of it is new (to start before the swap; to close if it is abandoned)."""

    plan: Plan
    new_upstreams: list[HttpUpstream] = field(default_factory=list)
    new_children: list[Child] = field(default_factory=list)
    new_auth: bool = False
    new_limiter: bool = False


def redis_url(configured: str) -> str:
    """``REDIS_URL`` overrides the file (rate limits and sessions alike), as 12-factor
    deployments expect of a connection string."""
    return os.environ.get("REDIS_URL") or configured


def build(
    config: Config,
    socket_path: Callable[[], str],
    first_use: Callable[[Channel, float], Awaitable[None]],
    previous: Plan | None = None,
) -> Build:
    """Compile ``config``, reusing from ``previous`` every part whose configuration is unchanged."""
    upstreams: dict[str, HttpUpstream] = {}
    children: dict[str, Child] = {}
    fresh_upstreams: list[HttpUpstream] = []
    fresh_children: list[Child] = []
    for u in config.upstreams:
        old = previous.upstreams.get(u.name) if previous is not None else None
        if old is not None and old.config == u:
            upstreams[u.name] = old
            if previous is not None and u.name in previous.children:
                children[u.name] = previous.children[u.name]
            continue
        if u.transport == "streamable-http":
            upstreams[u.name] = upstream = HttpUpstream(u)
        else:  # stdio and legacy HTTP+SSE: a channel the gateway holds, bridged to the rest
            path = socket_path()
            channel = StdioProcess(u) if u.transport == "stdio" else SseUpstream(u)
            own = functools.partial(StdioProcess, u) if u.transport == "stdio" and u.per_session else None
            children[u.name] = child = (channel, Bridge(channel, path, session_channel=own))
            fresh_children.append(child)
            upstreams[u.name] = upstream = HttpUpstream(u, bridge_socket=path)
            upstream.first_probe_after = functools.partial(first_use, channel, u.connect_timeout)
        fresh_upstreams.append(upstream)
    result = Build(
        Plan(config, upstreams, Router.for_config(config), children=children),
        new_upstreams=fresh_upstreams,
        new_children=fresh_children,
    )
    auth, result.new_auth = _auth(config, previous)
    limiter, result.new_limiter = _limiter(config, previous)
    policy = Policy(config.policy) if config.policy is not None else None
    result.plan = dataclasses.replace(result.plan, auth=auth, policy=policy, limiter=limiter)
    return result


def _auth(config: Config, previous: Plan | None) -> tuple[Authenticator | None, bool]:
    if config.auth is None:
        return None, False
    if previous is not None and previous.auth is not None and _same_auth(config, previous.config):
        return previous.auth, False  # keeps its key set and verified-token cache
    upstreams = [u.name for u in config.upstreams]
    last = previous.auth if previous is not None else None
    return Authenticator(config.auth, config.server.public_url, upstreams, previous=last), True


def _same_auth(new: Config, old: Config) -> bool:
    return (
        new.auth == old.auth
        and new.server.public_url == old.server.public_url
        and [u.name for u in new.upstreams] == [u.name for u in old.upstreams]
    )


def _limiter(config: Config, previous: Plan | None) -> tuple[Limiter | None, bool]:
    if config.rate_limit is None:
        return None, False
    limits = dataclasses.replace(config.rate_limit, redis_url=redis_url(config.rate_limit.redis_url))
    old = previous.limiter if previous is not None else None
    if old is not None and old.config == limits:
        return old, False
    if old is not None and _same_store(old.config, limits):
        return Limiter(limits, store=old.store), False  # new rules, the same buckets
    return Limiter(limits), True


def _same_store(old: RateLimitConfig, new: RateLimitConfig) -> bool:
    if old.backend != new.backend:
        return False
    return old.backend == "memory" or (old.redis_url, old.key_prefix) == (new.redis_url, new.key_prefix)


def retired(old: Plan, new: Plan) -> tuple[list[HttpUpstream], list[Child], Authenticator | None, Limiter | None]:
    """What ``old`` has that ``new`` no longer uses: to close once in-flight requests are done."""
    kept_upstreams = {id(u) for u in new.upstreams.values()}
    kept_children = {id(c[0]) for c in new.children.values()}
    upstreams = [u for u in old.upstreams.values() if id(u) not in kept_upstreams]
    children = [c for c in old.children.values() if id(c[0]) not in kept_children]
    auth = old.auth if old.auth is not None and old.auth is not new.auth else None
    limiter = None
    if old.limiter is not None and (new.limiter is None or new.limiter.store is not old.limiter.store):
        limiter = old.limiter
    return upstreams, children, auth, limiter
