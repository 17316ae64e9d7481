"""The embedded backend: one DuckDB file (or ``:memory:``, which the unit tests use).

DuckDB's calls block, so they run on threads: writes and pruning on one thread of their own, in
order; each query on a cursor of its own (DuckDB's cursors are connections to the same database,
safe to use from another thread), interrupted when it outlives its timeout. DuckDB locks the
file: a second process that opens it is refused, which start reports with the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from mcpgate.analytics.queries import COLUMNS, CREATE, PRUNE, TABLE, Statement
from mcpgate.analytics.sink import Columns, SinkError

# A sidecar's share of the machine: DuckDB would take 80% of its memory and every core. One thread:
# the gateway's own loop needs the other cores more than a batch insert does.
SETTINGS: Final[dict[str, str | int]] = {"memory_limit": "256MB", "threads": 1}
_INSERT: Final = (
    f"INSERT INTO {TABLE} SELECT * FROM (SELECT "
    + ", ".join(f"unnest(${i}::{kind}[])" for i, (_, kind) in enumerate(COLUMNS, 1))
    + ")"
)


class DuckDBSink:
    backend = "duckdb"

    def __init__(self, path: str) -> None:
        self.path = path
        self._connection: Any = None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="analytics-duckdb")

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        import duckdb

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
        self._connection = connection

    async def _run(self, work: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._writer, work, *args)

    async def write(self, columns: Columns) -> None:
        await self._run(self._write, columns)

    def _write(self, columns: Columns) -> None:
        import duckdb

        try:
            self._connection.execute(_INSERT, columns)
        except duckdb.Error as exc:
            raise SinkError(str(exc)) from None

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
        self._writer.shutdown(wait=False)
