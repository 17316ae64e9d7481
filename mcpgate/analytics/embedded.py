"""The embedded backend: one DuckDB file (or ``:memory:``, which the unit tests use).

A batch reaches DuckDB as one JSON document of its columns, written by orjson to a file in a
private temporary folder and read by DuckDB's own JSON reader. Bound as parameters instead, every
value would be turned into a DuckDB value under the GIL, one by one: measured here beside a busy
event loop, 28-33 µs of CPU per event that way against 11-12 through JSON, and the GIL held for
most of it, which is time the gateway's loop waits.

DuckDB's calls block, so they run on threads: writes and pruning on one thread of their own, in
order; each query on a cursor of its own (DuckDB's cursors are connections to the same database,
safe to use from another thread), interrupted when it outlives its timeout. DuckDB locks the
file: a second process that opens it is refused, which start reports with the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import orjson

from mcpgate.analytics.queries import COLUMNS, CREATE, PRUNE, TABLE, Statement
from mcpgate.analytics.sink import Columns, SinkError

# A sidecar's share of the machine: DuckDB would take 80% of its memory and every core. One thread:
# the gateway's own loop needs the other cores more than a batch insert does.
SETTINGS: Final[dict[str, str | int]] = {"memory_limit": "256MB", "threads": 1}
_NAMES: Final = tuple(name for name, _ in COLUMNS)
_TYPES: Final = ", ".join(f"'{name}': '{kind}[]'" for name, kind in COLUMNS)
_INSERT: Final = (
    f"INSERT INTO {TABLE} SELECT {', '.join(f'unnest({name})' for name in _NAMES)} "
    f"FROM read_json($1, format = 'unstructured', columns = {{{_TYPES}}})"
)


class DuckDBSink:
    backend = "duckdb"

    def __init__(self, path: str) -> None:
        self.path = path
        self._connection: Any = None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="analytics-duckdb")
        self._folder: str | None = None  # private (0700), made at open: where each batch's file goes

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        import duckdb

        if self._connection is not None:  # opened already: keep that connection
            return
        if self.path != ":memory:":
            folder = os.path.dirname(os.path.abspath(self.path))
            if not os.path.isdir(folder):
                raise SinkError(f"analytics.path: the folder {folder} does not exist", retry=False)
        try:
            connection = duckdb.connect(self.path, config=dict(SETTINGS))
        except duckdb.IOException as exc:
            text = str(exc)
            if "lock" in text.lower():
                message = (
                    f"analytics.path {self.path} is held by another process: a DuckDB file is held by one "
                    "process; for several instances or workers use analytics.backend: postgres"
                )
            else:
                message = f"analytics.path {self.path}: {text}"
            raise SinkError(message, retry=False) from None
        except duckdb.Error as exc:
            raise SinkError(f"analytics.path {self.path}: {exc}", retry=False) from None
        # The table only: DuckDB skips row groups by their min/max ts on its own, and an index
        # (an ART) would cost every insert for nothing the queries here need.
        connection.execute(CREATE[0])
        if self.path != ":memory:":
            with contextlib.suppress(OSError):
                os.chmod(self.path, 0o600)  # it says who called what
        self._folder = tempfile.mkdtemp(prefix="mcpgate-analytics-")
        self._connection = connection

    async def _run(self, work: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._writer, work, *args)

    async def write(self, columns: Columns) -> None:
        await self._run(self._write, columns)

    def _write(self, columns: Columns) -> None:
        import duckdb

        try:
            payload = orjson.dumps(dict(zip(_NAMES, columns, strict=True)))
        except orjson.JSONEncodeError:  # a client's lone surrogate, which UTF-8 cannot hold
            payload = orjson.dumps(_escaped(columns))
        assert self._folder is not None, "opened"
        batch = os.path.join(self._folder, "batch.json")
        try:
            # Readable by this user only: it says who called what, like the database.
            fd = os.open(batch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(payload)
            self._connection.execute(_INSERT, [batch])
        except (OSError, duckdb.Error) as exc:
            raise SinkError(str(exc)) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(batch)

    async def prune(self, before: float) -> int:
        result: int = await self._run(self._prune, before)
        return result

    def _prune(self, before: float) -> int:
        row = self._connection.execute(PRUNE, [before]).fetchone()
        return int(row[0]) if row else 0

    async def fetch(self, statement: Statement, within: float) -> list[Sequence[Any]]:
        import duckdb

        cursor = self._connection.cursor()
        sql, params = statement
        work = asyncio.get_running_loop().run_in_executor(None, lambda: cursor.execute(sql, params).fetchall())
        try:
            rows: list[Sequence[Any]] = await asyncio.wait_for(asyncio.shield(work), within)
            return rows
        except (TimeoutError, asyncio.CancelledError) as exc:  # too slow, or no one waits any more
            cursor.interrupt()
            with contextlib.suppress(duckdb.Error):
                await work
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise SinkError(f"the query took longer than {within:g}s") from None
        except duckdb.Error as exc:
            raise SinkError(str(exc)) from None
        finally:
            cursor.close()

    async def close(self) -> None:
        if self._connection is not None:
            await self._run(self._connection.close)
            self._connection = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
        self._writer.shutdown(wait=False)


def _escaped(columns: Columns) -> dict[str, list[Any]]:
    """The columns with every string that UTF-8 cannot hold made safe (its lone surrogates replaced)."""

    def safe(value: Any) -> Any:
        return value.encode("utf-8", "replace").decode() if isinstance(value, str) else value

    return {name: [safe(value) for value in values] for name, values in zip(_NAMES, columns, strict=True)}
