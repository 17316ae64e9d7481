"""The store's schema, as numbered migrations: each applied once, in order, and recorded.

A migration is never edited once released; a change is a new one. Both backends run the same
steps in their own dialect. ``mcpgate migrate up`` applies what is missing (``start`` does too,
unless ``--no-migrate``), under a lock so that instances starting together apply each step once;
``mcpgate migrate status`` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


MIGRATIONS: Final = (
    Migration(
        1,
        "objects, the change counter and the admin audit trail",
        sqlite=(
            """CREATE TABLE mcpgate_objects (
                kind TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL, sealed TEXT,
                revision INTEGER NOT NULL, updated_at TEXT NOT NULL, updated_by TEXT NOT NULL,
                PRIMARY KEY (kind, name))""",
            "CREATE TABLE mcpgate_revision (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL)",
            "INSERT INTO mcpgate_revision (id, revision) VALUES (1, 0)",
            """CREATE TABLE mcpgate_admin_audit (
                id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, actor TEXT NOT NULL,
                action TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, revision INTEGER NOT NULL,
                before TEXT, after TEXT)""",
        ),
        postgres=(
            """CREATE TABLE mcpgate_objects (
                kind TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL, sealed TEXT,
                revision BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL, updated_by TEXT NOT NULL,
                PRIMARY KEY (kind, name))""",
            "CREATE TABLE mcpgate_revision (id INTEGER PRIMARY KEY CHECK (id = 1), revision BIGINT NOT NULL)",
            "INSERT INTO mcpgate_revision (id, revision) VALUES (1, 0)",
            """CREATE TABLE mcpgate_admin_audit (
                id BIGSERIAL PRIMARY KEY, at TIMESTAMPTZ NOT NULL, actor TEXT NOT NULL,
                action TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, revision BIGINT NOT NULL,
                before TEXT, after TEXT)""",
        ),
    ),
)
LATEST: Final = MIGRATIONS[-1].version


@dataclass(frozen=True, slots=True)
class Status:
    version: int
    name: str
    applied_at: str | None  # None: not applied yet


def pending(applied: set[int]) -> list[Migration]:
    return [m for m in MIGRATIONS if m.version not in applied]
