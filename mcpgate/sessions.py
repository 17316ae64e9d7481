"""Gateway sessions (legacy protocol era) and the stores that keep them.

A client never sees an upstream's ``Mcp-Session-Id``: the gateway issues its own opaque id on
``initialize`` and remembers, per session, who owns it, what was negotiated, the client's
``initialize`` params (to re-open an upstream session that the upstream expired) and each
upstream's session id. The store is an interface so that a shared backend (redis) can let any
gateway instance serve any session; ``Session`` round-trips through JSON for that reason.

Sessions are created by unauthenticated ``initialize`` requests when no auth is configured, so
what one costs is bounded: only the part of the client's params that re-opening needs is kept,
capped at ``MAX_REOPEN_PARAMS`` bytes, and the store caps live sessions in total
(``max_sessions``: new ones are refused, 503) and per client (``max_per_client``: the client's
least recently used session is evicted to make room for its new one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from mcpgate import jsonrpc
from mcpgate.errors import GatewayError

# The most of a client's initialize params a session keeps (its JSON size, in bytes).
MAX_REOPEN_PARAMS: Final = 8 * 1024
_CLIENT_INFO_KEYS: Final = ("name", "title", "version")


def new_session_id() -> str:
    """128 random bits, hex: unguessable, and visible ASCII as the spec requires."""
    return secrets.token_hex(16)


@dataclass(slots=True)
class Session:
    id: str
    owner: str  # the identity (client id) it belongs to; another identity gets 404
    scope: str  # the endpoint it lives on: an upstream name for /servers/{name}/mcp, "*" for /mcp
    protocol_version: str
    init_params: dict[str, Any]
    upstream_sessions: dict[str, str | None] = field(default_factory=dict)
    # Whom the per-client cap counts this session against: the client id, or the remote address
    # of an anonymous caller.
    client: str = ""
    created: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Session:
        return cls(**json.loads(text))


def reopen_params(params: dict[str, Any]) -> dict[str, Any]:
    """What a session keeps of the client's ``initialize`` params: enough to re-open upstream.

    That is the protocol version, the capabilities and the client's name and version; the rest
    (icons, padding) was for the upstream's eyes only. A client whose capabilities alone exceed
    the bound gets a clear 400 before anything is opened upstream.
    """
    kept: dict[str, Any] = {key: params[key] for key in ("protocolVersion", "capabilities") if key in params}
    info = params.get("clientInfo")
    if isinstance(info, dict):
        kept["clientInfo"] = {k: v for k in _CLIENT_INFO_KEYS if isinstance(v := info.get(k), str)}
    size = len(jsonrpc.dumps(kept))
    if size > MAX_REOPEN_PARAMS:
        raise GatewayError(
            "invalid_request",
            f"initialize params are too large for a session: {size} bytes of capabilities and client info "
            f"(at most {MAX_REOPEN_PARAMS})",
            data={"limit": MAX_REOPEN_PARAMS},
        )
    return kept


def session_limit() -> GatewayError:
    return GatewayError("session_limit", headers={"Retry-After": "60"})


class SessionStore(ABC):
    """Where sessions live. Every method is a coroutine so that networked backends fit."""

    def __init__(self, idle_timeout: float, *, max_sessions: int = 10_000, max_per_client: int = 1_000) -> None:
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self.max_per_client = max_per_client
        # Counted for operators (readiness body, metrics): sessions evicted and refused at the caps.
        self.evicted = 0
        self.refused = 0
        self._locks: dict[str, asyncio.Lock] = {}

    async def check(self) -> None:  # noqa: B027 - a hook: only networked stores have anything to check
        """At start: a networked store must answer (raises when it does not)."""

    @contextlib.asynccontextmanager
    async def lock(self, session_id: str) -> AsyncIterator[None]:
        """Serialises rare per-session work (re-opening an upstream session). In one process, an
        asyncio lock; a shared store makes it hold across every instance."""
        lock = self._locks.setdefault(session_id, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked():
                self._locks.pop(session_id, None)

    async def reload(self, session: Session) -> None:  # noqa: B027 - a hook, as above
        """Under ``lock``: bring ``session``'s upstream session ids up to date with the store (another
        instance may have just re-opened one). In memory, every request holds the same object."""

    @abstractmethod
    def count_by_scope(self) -> dict[str, int]:
        """Live sessions per endpoint (its scope), for the metrics."""
        raise NotImplementedError

    @abstractmethod
    async def admit(self) -> None:
        """Raise the ``session_limit`` error when ``max_sessions`` is reached.

        Checked before an upstream session is opened for a new one; ``create`` checks again.
        """

    @abstractmethod
    async def create(self, session: Session) -> list[Session]:
        """Store a new session; returns the sessions evicted to keep its client within its cap.

        Raises the ``session_limit`` error when the store is full: the caller must then end the
        upstream session it opened for it.
        """

    @abstractmethod
    async def get(self, session_id: str) -> Session | None:
        """The live session, with its idle timer restarted; ``None`` if unknown or expired."""

    @abstractmethod
    async def save(self, session: Session) -> None:
        """Persist changes (a new upstream session id) of a session obtained from ``get``."""

    @abstractmethod
    async def delete(self, session_id: str) -> Session | None:
        """Remove and return the session, so the caller can end its upstream sessions."""

    @abstractmethod
    async def expire(self) -> list[Session]:
        """Remove and return sessions idle for longer than ``idle_timeout``."""

    @abstractmethod
    async def remove_scope(self, scope: str) -> list[Session]:
        """Remove and return the sessions of one endpoint (its upstream was removed)."""

    async def close(self) -> None:
        return None

    def __len__(self) -> int:
        return 0


class MemorySessionStore(SessionStore):
    """One process's sessions in a dict; expiry is checked on access and by a periodic sweep."""

    def __init__(
        self, idle_timeout: float, *, max_sessions: int = 10_000, max_per_client: int = 1_000, clock: Any = time.time
    ) -> None:
        super().__init__(idle_timeout, max_sessions=max_sessions, max_per_client=max_per_client)
        self._sessions: dict[str, Session] = {}
        self._by_client: dict[str, dict[str, Session]] = {}
        self._clock = clock

    def count_by_scope(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for session in self._sessions.values():
            counts[session.scope] = counts.get(session.scope, 0) + 1
        return counts

    async def admit(self) -> None:
        if len(self._sessions) >= self.max_sessions:
            self.refused += 1
            raise session_limit()

    async def create(self, session: Session) -> list[Session]:
        await self.admit()
        mine = self._by_client.setdefault(session.client, {})
        evicted: list[Session] = []
        while len(mine) >= self.max_per_client:
            # At most max_per_client to scan, and only when a client is at its cap.
            evicted.append(self._remove(min(mine.values(), key=lambda s: s.last_seen)))
        self.evicted += len(evicted)
        self._sessions[session.id] = mine[session.id] = session
        return evicted

    async def get(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen > self.idle_timeout:
            self._remove(session)
            return None
        session.last_seen = now
        return session

    async def save(self, session: Session) -> None:
        if session.id in self._sessions:
            self._sessions[session.id] = self._by_client[session.client][session.id] = session

    async def delete(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        return None if session is None else self._remove(session)

    async def expire(self) -> list[Session]:
        cutoff = self._clock() - self.idle_timeout
        return [self._remove(s) for s in list(self._sessions.values()) if s.last_seen < cutoff]

    async def remove_scope(self, scope: str) -> list[Session]:
        return [self._remove(s) for s in list(self._sessions.values()) if s.scope == scope]

    def _remove(self, session: Session) -> Session:
        del self._sessions[session.id]
        mine = self._by_client[session.client]
        del mine[session.id]
        if not mine:
            del self._by_client[session.client]
        return session

    def __len__(self) -> int:
        return len(self._sessions)
