"""The store's two databases behind one small interface: SQLite in a file, PostgreSQL for fleets.

Every change is one transaction that checks the object's revision (optimistic concurrency: the
ETag a client sent), bumps the store's single change counter, writes the row and its audit line,
and (PostgreSQL) notifies the other instances. Readers compare the counter with the revision they
last loaded, so one cheap query tells whether anything changed anywhere.

SQLite runs on one thread of its own (``sqlite3`` is blocking; one connection, one thread, in
WAL mode so that readers in other processes never wait). PostgreSQL goes through ``asyncpg``: a
small pool for queries and one connection that LISTENs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mcpgate.store.migrations import MIGRATIONS, Migration, Status, pending

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger("mcpgate.store")

CHANNEL: Final = "mcpgate_store"  # PostgreSQL NOTIFY channel; the payload is the new revision


class StoreError(Exception):
    """The store cannot be used. ``retry`` says whether waiting may help (a database starting up,
    a refused connection) or not (a wrong password, a file that cannot be created)."""

    def __init__(self, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


class Stale(Exception):
    """The object changed since the revision the client named (HTTP 412)."""

    def __init__(self, current: int) -> None:
        super().__init__(f"the object is at revision {current}")
        self.current = current


class Missing(Exception):
    """Deleting an object that is not there (HTTP 404)."""


@dataclass(frozen=True, slots=True)
class RawRow:
    kind: str
    name: str
    body: str  # JSON, credentials taken out
    sealed: str | None  # the credentials, encrypted
    revision: int
    updated_at: str
    updated_by: str


@dataclass(frozen=True, slots=True)
class Change:
    kind: str
    name: str
    body: str | None  # None deletes
    sealed: str | None
    expect: int | None  # the revision the client saw (0: must not exist yet); None: unconditional
    actor: str
    after: str | None  # redacted JSON, for the audit trail
    # The stored body as the audit trail may show it (the row read in the transaction is the truth).
    redact: Callable[[str], str] = lambda body: body

    def audit(self, before: str | None) -> tuple[str, str | None]:
        """The action this change is, given what was stored, and the before-image to record."""
        action = "delete" if self.body is None else ("replace" if before is not None else "create")
        return action, None if before is None else self.redact(before)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Backend:
    kind: str = ""

    async def connect(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def migrations(self) -> list[Status]:
        raise NotImplementedError

    async def migrate(self) -> list[Migration]:
        raise NotImplementedError

    async def revision(self) -> int:
        raise NotImplementedError

    async def rows(self) -> tuple[int, list[RawRow]]:
        raise NotImplementedError

    async def change(self, change: Change) -> int:
        raise NotImplementedError

    async def audit(self, limit: int) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def listen(self, notify: Callable[[], None]) -> bool:
        """Call ``notify`` when another instance changes something; False when this backend cannot
        tell (then polling alone finds changes)."""
        return False

    @property
    def listening(self) -> bool:
        """Whether ``listen`` holds a live connection now."""
        return False


def _status(applied: dict[int, str]) -> list[Status]:
    return [Status(m.version, m.name, applied.get(m.version)) for m in MIGRATIONS]


class SqliteBackend(Backend):
    kind = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None  # made by each connect, ended by close

    async def _run(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        db, thread = self._db, self._thread
        if db is None or thread is None:
            raise StoreError("the store is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(thread, work, db)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}", retry=True) from None

    async def connect(self) -> None:
        def open_db() -> sqlite3.Connection:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
            # Switching a new file to WAL takes a lock that SQLite does not wait for: workers opening
            # one file together find it taken, and try again. Once set, WAL stays with the file.
            deadline = time.monotonic() + 10.0
            while True:
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        db.close()
                        raise
                    time.sleep(0.02)
            return db

        try:
            self._thread = self._thread or ThreadPoolExecutor(max_workers=1, thread_name_prefix="mcpgate-sqlite")
            self._db = await asyncio.get_running_loop().run_in_executor(self._thread, open_db)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the store file {self.path}: {exc}") from None

    async def close(self) -> None:
        db, self._db = self._db, None
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(thread, db.close)
        thread.shutdown(wait=False)

    @staticmethod
    def _applied(db: sqlite3.Connection) -> dict[int, str]:
        db.execute(
            "CREATE TABLE IF NOT EXISTS mcpgate_schema (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "applied_at TEXT NOT NULL)"
        )
        return {int(v): str(at) for v, at in db.execute("SELECT version, applied_at FROM mcpgate_schema")}

    async def migrations(self) -> list[Status]:
        def work(db: sqlite3.Connection) -> dict[int, str]:  # only reads: a fresh file stays empty
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'mcpgate_schema'").fetchone() is None:
                return {}
            return {int(v): str(at) for v, at in db.execute("SELECT version, applied_at FROM mcpgate_schema")}

        return _status(await self._run(work))

    async def migrate(self) -> list[Migration]:
        def work(db: sqlite3.Connection) -> list[Migration]:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes
            try:
                todo = pending(set(self._applied(db)))
                for migration in todo:
                    for statement in migration.sqlite:
                        db.execute(statement)
                    db.execute(
                        "INSERT INTO mcpgate_schema (version, name, applied_at) VALUES (?, ?, ?)",
                        (migration.version, migration.name, now()),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return todo

        result: list[Migration] = await self._run(work)
        return result

    async def revision(self) -> int:
        return int(await self._run(lambda db: db.execute("SELECT revision FROM mcpgate_revision").fetchone()[0]))

    async def rows(self) -> tuple[int, list[RawRow]]:
        def work(db: sqlite3.Connection) -> tuple[int, list[RawRow]]:
            db.execute("BEGIN")  # one consistent snapshot: the counter and the rows it counts
            try:
                revision = int(db.execute("SELECT revision FROM mcpgate_revision").fetchone()[0])
                rows = [
                    RawRow(*row)
                    for row in db.execute(
                        "SELECT kind, name, body, sealed, revision, updated_at, updated_by FROM mcpgate_objects"
                    )
                ]
            finally:
                db.execute("COMMIT")
            return revision, rows

        result: tuple[int, list[RawRow]] = await self._run(work)
        return result

    async def change(self, change: Change) -> int:
        def work(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            try:
                found = db.execute(
                    "SELECT revision, body FROM mcpgate_objects WHERE kind = ? AND name = ?", (change.kind, change.name)
                ).fetchone()
                current = int(found[0]) if found else 0
                action, before = change.audit(found[1] if found else None)
                if change.expect is not None and change.expect != current:
                    raise Stale(current)
                if change.body is None and not found:
                    raise Missing(change.name)
                db.execute("UPDATE mcpgate_revision SET revision = revision + 1")
                revision = int(db.execute("SELECT revision FROM mcpgate_revision").fetchone()[0])
                at = now()
                if change.body is None:
                    db.execute("DELETE FROM mcpgate_objects WHERE kind = ? AND name = ?", (change.kind, change.name))
                else:
                    db.execute(
                        "INSERT INTO mcpgate_objects (kind, name, body, sealed, revision, updated_at, updated_by) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body, "
                        "sealed = excluded.sealed, revision = excluded.revision, updated_at = excluded.updated_at, "
                        "updated_by = excluded.updated_by",
                        (change.kind, change.name, change.body, change.sealed, revision, at, change.actor),
                    )
                db.execute(
                    "INSERT INTO mcpgate_admin_audit (at, actor, action, kind, name, revision, before, after) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (at, change.actor, action, change.kind, change.name, revision, before, change.after),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return revision

        result: int = await self._run(work)
        return result

    async def audit(self, limit: int) -> list[dict[str, Any]]:
        def work(db: sqlite3.Connection) -> list[dict[str, Any]]:
            cursor = db.execute(
                "SELECT id, at, actor, action, kind, name, revision, before, after FROM mcpgate_admin_audit "
                "ORDER BY id DESC LIMIT ?",
                (limit,),
            )
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor]

        result: list[dict[str, Any]] = await self._run(work)
        return result


def retryable(exc: BaseException) -> bool:
    """asyncpg's errors that mean "try again soon": the server is starting, full or not there yet,
    or the connection broke. The analytics sink asks the same question of the same database."""
    import asyncpg

    return isinstance(
        exc,
        OSError | TimeoutError | asyncpg.CannotConnectNowError | asyncpg.TooManyConnectionsError
        | asyncpg.ConnectionDoesNotExistError | asyncpg.InterfaceError,
    )  # fmt: skip


class PostgresBackend(Backend):
    kind = "postgres"

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None

    def _error(self, exc: BaseException) -> StoreError:
        # asyncpg's messages name the host and database, never the password.
        import asyncpg

        # Only a database that refuses us for good is final: a bad password, no such database.
        final = isinstance(exc, asyncpg.PostgresError) and not retryable(exc)
        return StoreError(f"PostgreSQL: {type(exc).__name__}: {exc}", retry=not final)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("the store is not open", retry=True)
        return self._pool

    async def connect(self) -> None:
        import asyncpg

        try:
            self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=4, timeout=10, command_timeout=10)
        except Exception as exc:
            raise self._error(exc) from None

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.close(), 5)
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), 5)

    async def _call(self, work: Callable[[asyncpg.Connection], Any]) -> Any:
        try:
            async with self.pool.acquire() as conn:
                return await work(conn)
        except (Stale, Missing, StoreError):
            raise
        except Exception as exc:  # asyncpg's errors have no common base short of this
            raise self._error(exc) from None

    @staticmethod
    async def _applied(conn: asyncpg.Connection) -> dict[int, str]:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS mcpgate_schema (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "applied_at TIMESTAMPTZ NOT NULL)"
        )
        rows = await conn.fetch("SELECT version, applied_at FROM mcpgate_schema")
        return {int(r["version"]): r["applied_at"].isoformat() for r in rows}

    async def migrations(self) -> list[Status]:
        async def work(conn: asyncpg.Connection) -> list[Status]:  # only reads: a read-only role may ask
            if await conn.fetchval("SELECT to_regclass('mcpgate_schema')") is None:
                return _status({})
            rows = await conn.fetch("SELECT version, applied_at FROM mcpgate_schema")
            return _status({int(r["version"]): r["applied_at"].isoformat() for r in rows})

        result: list[Status] = await self._call(work)
        return result

    async def migrate(self) -> list[Migration]:
        async def work(conn: asyncpg.Connection) -> list[Migration]:
            async with conn.transaction():
                # Instances starting together: the first applies, the others wait and find nothing to do.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('mcpgate_schema'))")
                todo = pending(set(await self._applied(conn)))
                for migration in todo:
                    for statement in migration.postgres:
                        await conn.execute(statement)
                    await conn.execute(
                        "INSERT INTO mcpgate_schema (version, name, applied_at) VALUES ($1, $2, now())",
                        migration.version,
                        migration.name,
                    )
                return todo

        result: list[Migration] = await self._call(work)
        return result

    async def revision(self) -> int:
        return int(await self._call(lambda conn: conn.fetchval("SELECT revision FROM mcpgate_revision")))

    async def rows(self) -> tuple[int, list[RawRow]]:
        async def work(conn: asyncpg.Connection) -> tuple[int, list[RawRow]]:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                revision = int(await conn.fetchval("SELECT revision FROM mcpgate_revision"))
                rows = await conn.fetch(
                    "SELECT kind, name, body, sealed, revision, updated_at, updated_by FROM mcpgate_objects"
                )
            return revision, [
                RawRow(
                    r["kind"],
                    r["name"],
                    r["body"],
                    r["sealed"],
                    int(r["revision"]),
                    _iso(r["updated_at"]),
                    r["updated_by"],
                )
                for r in rows
            ]

        result: tuple[int, list[RawRow]] = await self._call(work)
        return result

    async def change(self, change: Change) -> int:
        async def work(conn: asyncpg.Connection) -> int:
            async with conn.transaction():
                # The counter's row lock orders every change, fleet-wide.
                revision = int(
                    await conn.fetchval("UPDATE mcpgate_revision SET revision = revision + 1 RETURNING revision")
                )
                found = await conn.fetchrow(
                    "SELECT revision, body FROM mcpgate_objects WHERE kind = $1 AND name = $2", change.kind, change.name
                )
                current = int(found["revision"]) if found is not None else 0
                action, before = change.audit(found["body"] if found is not None else None)
                if change.expect is not None and change.expect != current:
                    raise Stale(current)
                if change.body is None and found is None:
                    raise Missing(change.name)
                if change.body is None:
                    await conn.execute(
                        "DELETE FROM mcpgate_objects WHERE kind = $1 AND name = $2", change.kind, change.name
                    )
                else:
                    await conn.execute(
                        "INSERT INTO mcpgate_objects (kind, name, body, sealed, revision, updated_at, updated_by) "
                        "VALUES ($1, $2, $3, $4, $5, now(), $6) ON CONFLICT (kind, name) DO UPDATE SET "
                        "body = excluded.body, sealed = excluded.sealed, revision = excluded.revision, "
                        "updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                        change.kind, change.name, change.body, change.sealed, revision, change.actor,
                    )  # fmt: skip
                await conn.execute(
                    "INSERT INTO mcpgate_admin_audit (at, actor, action, kind, name, revision, before, after) "
                    "VALUES (now(), $1, $2, $3, $4, $5, $6, $7)",
                    change.actor, action, change.kind, change.name, revision, before, change.after,
                )  # fmt: skip
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(revision))
                return revision

        result: int = await self._call(work)
        return result

    async def audit(self, limit: int) -> list[dict[str, Any]]:
        async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
            rows = await conn.fetch(
                "SELECT id, at, actor, action, kind, name, revision, before, after FROM mcpgate_admin_audit "
                "ORDER BY id DESC LIMIT $1",
                limit,
            )
            return [{**dict(r), "at": _iso(r["at"])} for r in rows]

        result: list[dict[str, Any]] = await self._call(work)
        return result

    async def listen(self, notify: Callable[[], None]) -> bool:
        """(Re)open the LISTEN connection; False when it cannot be opened now."""
        import asyncpg

        if self._listener is not None and not self._listener.is_closed():
            return True
        try:
            conn = await asyncpg.connect(self.url, timeout=10)
            await conn.add_listener(CHANNEL, lambda *_: notify())
            conn.add_termination_listener(lambda *_: notify())  # lost: look now, and listen again
        except Exception as exc:
            log.debug("store: cannot LISTEN (%s); polling meanwhile", type(exc).__name__)
            return False
        self._listener = conn
        return True

    @property
    def listening(self) -> bool:
        return self._listener is not None and not self._listener.is_closed()


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return str(value)


def backend_for(kind: str, path: str, url: str | None) -> Backend:
    if kind == "postgres":
        assert url is not None, "validation requires store.url with backend postgres"
        return PostgresBackend(url)
    return SqliteBackend(path)
