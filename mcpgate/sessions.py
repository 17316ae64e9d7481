"""Gateway sessions (legacy protocol era) and the stores that keep them.

A client never sees an upstream's ``Mcp-Session-Id``: the gateway issues its own opaque id on
``initialize`` and remembers, per session, who owns it, what was negotiated, the client's
``initialize`` params (to re-open an upstream session that the upstream expired) and each
upstream's session id. The store is an interface so that a shared backend (redis) can let any
gateway instance serve any session; ``Session`` round-trips through JSON for that reason.
"""

from __future__ import annotations

import json
import secrets
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any


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
    created: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Session:
        return cls(**json.loads(text))


class SessionStore(ABC):
    """Where sessions live. Every method is a coroutine so that networked backends fit."""

    def __init__(self, idle_timeout: float) -> None:
        self.idle_timeout = idle_timeout

    @abstractmethod
    async def create(self, session: Session) -> None: ...

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

    async def close(self) -> None:
        return None

    def __len__(self) -> int:
        return 0


class MemorySessionStore(SessionStore):
    """One process's sessions in a dict; expiry is checked on access and by a periodic sweep."""

    def __init__(self, idle_timeout: float, clock: Any = time.time) -> None:
        super().__init__(idle_timeout)
        self._sessions: dict[str, Session] = {}
        self._clock = clock

    async def create(self, session: Session) -> None:
        self._sessions[session.id] = session

    async def get(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen > self.idle_timeout:
            del self._sessions[session_id]
            return None
        session.last_seen = now
        return session

    async def save(self, session: Session) -> None:
        if session.id in self._sessions:
            self._sessions[session.id] = session

    async def delete(self, session_id: str) -> Session | None:
        return self._sessions.pop(session_id, None)

    async def expire(self) -> list[Session]:
        cutoff = self._clock() - self.idle_timeout
        gone = [s for s in self._sessions.values() if s.last_seen < cutoff]
        for session in gone:
            del self._sessions[session.id]
        return gone

    def __len__(self) -> int:
        return len(self._sessions)
