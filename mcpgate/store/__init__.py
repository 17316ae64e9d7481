"""The runtime store: upstreams, keys, role mappings and rules added through the admin API.

``Store`` is the database side (``backend``), with credentials sealed on the way in and opened on
the way out (``cipher``); ``objects`` says how stored objects join the file; ``runtime`` keeps a
running gateway's plan in step with the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any, Final

from mcpgate.config.model import StoreConfig
from mcpgate.store.backend import Backend, Change, StoreError, backend_for
from mcpgate.store.cipher import Cipher, SealError, parse_key
from mcpgate.store.migrations import LATEST
from mcpgate.store.objects import KINDS, REDACTED, Kind, Objects, Row, redacted, split_secrets

log = logging.getLogger("mcpgate.store")

# How long start waits for a database that refuses connections or is starting up.
STARTUP_PATIENCE_ENV: Final = "MCPGATE_STORE_STARTUP_TIMEOUT"
STARTUP_PATIENCE: Final = 30.0


def startup_patience() -> float:
    """``MCPGATE_STORE_STARTUP_TIMEOUT`` in seconds; raises ``ValueError`` naming a bad value."""
    text = os.environ.get(STARTUP_PATIENCE_ENV) or str(STARTUP_PATIENCE)
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ValueError(f"{STARTUP_PATIENCE_ENV} must be a number of seconds, not {text!r}")
    return seconds


class NoKey(Exception):
    """A credential to keep, and no ``store.encryption_key`` to keep it with."""


def describe(config: StoreConfig) -> str:
    """Where the store is, for logs: the file, or the database's host and name (no password)."""
    if config.backend == "sqlite":
        return f"sqlite {config.path}"
    from urllib.parse import urlsplit

    parts = urlsplit(config.url or "")
    return f"postgres {parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"


class Store:
    def __init__(self, config: StoreConfig, backend: Backend | None = None) -> None:
        self.config = config
        self.backend = backend or backend_for(config.backend, config.path, config.url)
        key = parse_key(config.encryption_key) if config.encryption_key else None
        self.cipher = Cipher(key) if key is not None else None
        self.objects = Objects()

    async def connect(self, patience: float | None = None) -> None:
        """Connect, waiting up to ``patience`` seconds (``MCPGATE_STORE_STARTUP_TIMEOUT``, 30) for a
        database that refuses connections or is starting up. Raises ``StoreError``."""
        patience = startup_patience() if patience is None else patience
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + patience, 0.25
        while True:
            try:
                await self.backend.connect()
                return
            except StoreError as exc:
                if not exc.retry or loop.time() + delay > deadline:
                    raise
                log.warning("store %s not reachable yet (%s); retrying in %.1fs", describe(self.config), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def open(self, *, migrate: bool, patience: float | None = None) -> None:
        """Connect, then migrate the schema or check that it is current. Raises ``StoreError``."""
        await self.connect(patience)
        try:
            if migrate:
                for migration in await self.backend.migrate():
                    log.info("store: applied migration %d (%s)", migration.version, migration.name)
            else:
                applied = [s for s in await self.backend.migrations() if s.applied_at is not None]
                version = max((s.version for s in applied), default=0)
                if version < LATEST:
                    raise StoreError(
                        f"the store's schema is at version {version}, this mcpgate needs {LATEST}: run "
                        "'mcpgate migrate up' (or start without --no-migrate)"
                    )
        except BaseException:
            await self.backend.close()
            raise

    async def close(self) -> None:
        await self.backend.close()

    async def load(self) -> Objects:
        """Everything stored, credentials opened; raises ``StoreError`` (unreachable, or a sealed
        value that does not open with this key)."""
        revision, raw = await self.backend.rows()
        rows: dict[tuple[Kind, str], Row] = {}
        for r in raw:
            if r.kind not in KINDS:
                continue  # written by a newer mcpgate: not ours to interpret
            kind: Kind = r.kind
            body = json.loads(r.body)
            if r.sealed is not None:
                if self.cipher is None:
                    raise StoreError(
                        f"{r.kind} {r.name!r} has credentials in the store, and store.encryption_key is not set"
                    )
                try:
                    secrets = json.loads(self.cipher.open(r.sealed, f"{r.kind}/{r.name}"))
                except SealError as exc:
                    raise StoreError(f"the credentials of {r.kind} {r.name!r}: {exc}") from None
                from mcpgate.store.objects import join_secrets

                body = join_secrets(body, secrets)
            rows[(kind, r.name)] = Row(kind, r.name, body, r.revision, r.updated_at, r.updated_by)
        self.objects = Objects(revision, rows)
        return self.objects

    async def write(self, kind: Kind, name: str, body: dict[str, Any] | None, *, expect: int | None, actor: str) -> int:
        """Create, replace or delete one object in one transaction with its audit line; the new
        store revision. Raises ``NoKey``, ``Stale``, ``Missing`` and ``StoreError``."""
        sealed = None
        stored = body
        if body is not None and kind == "upstream":
            stored, secrets = split_secrets(body)
            if secrets:
                if self.cipher is None:
                    raise NoKey(sorted(secrets))
                sealed = self.cipher.seal(json.dumps(secrets).encode(), f"{kind}/{name}")
        change = Change(
            kind,
            name,
            None if stored is None else json.dumps(stored, separators=(",", ":")),
            sealed,
            expect,
            actor,
            None if body is None else json.dumps(redacted(kind, body)),
            lambda before: json.dumps(redacted(kind, json.loads(before))),
        )
        return await self.backend.change(change)


__all__ = ["REDACTED", "NoKey", "Store", "StoreError", "describe"]
