"""``migrate``: the store's schema migrations, listed (``status``) or applied (``up``).

``start`` applies missing migrations itself, so most operators never run this. It exists for the
others: fleets that migrate once from a deploy job and start every instance with ``--no-migrate``
(so that a new version never changes a shared schema on its own), and CI that gates a rollout on
``migrate status`` (exit 1 while anything is pending). It reads the same configuration, flags and
variables as ``start``, so that it migrates the store ``start`` would open.

``status`` only looks: it connects without the version check ``Store.open`` makes, and never
creates a SQLite file that is not there yet. A store that does not answer is exit 69, like
``start``'s: waiting may cure it, and a script can tell it from a schema that is behind.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click

from mcpgate.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    configure_cli_logging,
    exit_with,
    json_option,
    load_or_exit,
    log_flags,
    overrides_for,
    set_option,
    shared_options,
)
from mcpgate.cli_output import emit_json, render_table

if TYPE_CHECKING:
    from mcpgate.config.model import StoreConfig
    from mcpgate.store.migrations import Migration, Status

log = logging.getLogger("mcpgate.store")
T = TypeVar("T")
ACTIONS: Final = ("status", "up")


@click.command(short_help="List or apply the store's schema migrations")
@click.argument("action", type=click.Choice(ACTIONS), default="status", required=False)
@json_option("the migrations")
@set_option
@shared_options
def migrate(
    config_path: str | None,
    log_level: str | None,
    log_format: str | None,
    set_values: tuple[str, ...],
    as_json: bool,
    action: str,
) -> None:
    """List the store's schema migrations (status, the default) or apply the missing ones (up).

    The store is the configuration's store section (implied by admin). status prints one line
    per migration, its version, when it was applied (or pending) and its name, and exits 1 while
    any is pending, so that CI can gate on it. up applies the pending ones, under a lock that
    makes instances migrating together safe, and prints what it applied. Both exit 69 when the
    store cannot be reached; up first waits for it up to MCPGATE_STORE_STARTUP_TIMEOUT seconds
    (default 30), as start does.

    \b
    Examples:
      mcpgate migrate -c mcpgate.yml
      mcpgate migrate up -c mcpgate.yml
      MCPGATE__STORE__URL="$DATABASE_URL" mcpgate migrate up -c fleet.yml --json
    """
    from mcpgate.store import describe

    configure_cli_logging(log_level, log_format)
    overrides = overrides_for(set_values, log_flags(log_level, log_format))
    config = load_or_exit(
        config_path, overrides.values, code=EXIT_FAILURE, check_support=False, origins=overrides.origins
    )
    configure_cli_logging(log_level, log_format, config)
    if config.store is None:
        exit_with(
            EXIT_FAILURE,
            f"mcpgate migrate: {config.source} has no store section (nor admin, which implies one): "
            "there is no store to migrate",
        )
    where = describe(config.store)
    if action == "up":
        migrate_up(config.store, where, as_json)
    show_status(config.store, where, as_json)


def show_status(store: StoreConfig, where: str, as_json: bool) -> None:
    from mcpgate.store.migrations import MIGRATIONS, Status

    if store.backend == "sqlite" and not Path(store.path).exists():
        # Looking must not create an empty database where an operator may have mistyped a path.
        statuses = [Status(m.version, m.name, None) for m in MIGRATIONS]
    else:
        statuses = run_or_exit(where, statuses_of(store))
    pending = [s for s in statuses if s.applied_at is None]
    current = max((s.version for s in statuses if s.applied_at is not None), default=0)
    if as_json:
        emit_json(
            {
                "store": where,
                "version": current,
                "latest": max((s.version for s in statuses), default=0),
                "pending": len(pending),
                "migrations": [{"version": s.version, "name": s.name, "applied_at": s.applied_at} for s in statuses],
            }
        )
    else:
        rows = [[str(s.version), s.applied_at or "pending", s.name] for s in statuses]
        click.echo(render_table(("VERSION", "APPLIED", "NAME"), rows))
        if pending:
            click.echo(f"store {where}: {len(pending)} migration(s) pending: run 'mcpgate migrate up'", err=True)
        else:
            click.echo(f"store {where}: up to date (schema version {current})", err=True)
    sys.exit(EXIT_FAILURE if pending else EXIT_OK)


async def statuses_of(config: StoreConfig) -> list[Status]:
    """Every migration and whether it was applied, without the check that ``Store.open`` makes
    (it refuses a schema that is behind, which is what this is asked to show)."""
    from mcpgate.store import Store

    store = Store(config)
    try:
        await store.connect(patience=0.0)
        return await store.backend.migrations()
    finally:
        await store.close()


def migrate_up(store: StoreConfig, where: str, as_json: bool) -> None:
    from mcpgate.store.migrations import LATEST

    applied = run_or_exit(where, apply_pending(store, startup_patience()))
    if as_json:
        emit_json(
            {"store": where, "version": LATEST, "applied": [{"version": m.version, "name": m.name} for m in applied]}
        )
    elif applied:
        for migration in applied:
            click.echo(f"applied {migration.version}: {migration.name}")
        click.echo(f"store {where}: now at schema version {LATEST}", err=True)
    else:
        click.echo(f"up to date: store {where} is at schema version {LATEST}")
    sys.exit(EXIT_OK)


async def apply_pending(config: StoreConfig, patience: float) -> list[Migration]:
    """What this run applied; the backend holds a lock meanwhile, so that instances migrating
    together apply each step once."""
    from mcpgate.store import Store

    store = Store(config)
    try:
        await store.connect(patience=patience)
        return await store.backend.migrate()
    finally:
        await store.close()


def startup_patience() -> float:
    from mcpgate.store import startup_patience as configured

    try:
        return configured()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def run_or_exit(where: str, work: Coroutine[Any, Any, T]) -> T:
    """``work`` run to its end, or exit 69 with why the store could not be used."""
    from mcpgate.store import StoreError

    try:
        return asyncio.run(work)
    except StoreError as exc:
        exit_with(EXIT_UNAVAILABLE, f"mcpgate migrate: store {where}: {exc}")
