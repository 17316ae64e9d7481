"""Hot reload: a new configuration in force without dropping a connection (SIGHUP, ``mcpgate reload``).

The new file is loaded and validated like at start; on any problem the running configuration
stays and the problems are logged with their positions. Otherwise the next plan is built beside
the running one (``plan.build``, reusing every unchanged upstream, child process, authenticator
and bucket store), its new parts are started, and it is swapped in with one assignment. Requests
already past routing finish on the upstreams they were given; what the new plan no longer uses
is closed after ``server.shutdown_timeout``, the same grace a shutdown gives.

Some settings are the process's, not the plan's: the listening address, the number of workers,
the session store, observability. A change to one of those is logged as needing a restart and
otherwise ignored; the session store is the exception that refuses the reload (its sessions
would be lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from mcpgate import plan, systemd
from mcpgate.config.model import Config

if TYPE_CHECKING:
    from mcpgate.auth import Authenticator
    from mcpgate.gateway import Gateway
    from mcpgate.limits import Limiter
    from mcpgate.plan import Child
    from mcpgate.upstream.http import HttpUpstream

log = logging.getLogger("mcpgate.reload")

Loader = Callable[[], Config]


class ReloadRefused(Exception):
    """The new configuration cannot replace the running one; the message says why."""


PROCESS_SETTINGS: Final = ("host", "port", "workers", "header_timeout", "keepalive_timeout", "max_header_bytes",
                           "max_headers")  # fmt: skip


def restart_only(old: Config, new: Config) -> list[str]:
    """Settings a reload cannot change in a running process, by their section's name."""
    changed = [f"server.{name}" for name in PROCESS_SETTINGS if getattr(old.server, name) != getattr(new.server, name)]
    for section in ("observability", "store", "admin", "analytics"):
        if getattr(old, section) != getattr(new, section):
            changed.append(section)
    return changed


def in_force(old: Config, new: Config) -> Config:
    """``new`` with the process's own settings as they run, so that the plan never claims a value
    (a port, an observability switch) that only a restart would apply."""
    server = dataclasses.replace(new.server, **{name: getattr(old.server, name) for name in PROCESS_SETTINGS})
    return dataclasses.replace(
        new,
        server=server,
        observability=old.observability,
        store=old.store,
        admin=old.admin,
        analytics=old.analytics,
    )


async def reload(gateway: Gateway, load: Loader) -> bool:
    """Load, check, build, start, swap. True when the new configuration is in force."""
    systemd.notify("RELOADING=1", f"MONOTONIC_USEC={int(asyncio.get_running_loop().time() * 1e6)}")
    try:
        try:
            config = await asyncio.to_thread(load)
        except Exception as exc:  # every reason to keep the running configuration is logged
            # A ConfigError's issues, each with its FILE:LINE:COL, as validate prints them.
            for line in getattr(exc, "issues", None) or str(exc).splitlines() or [type(exc).__name__]:
                log.error("reload: %s", line)
            log.error("reload refused: the running configuration stays in force")
            return False
        try:
            await apply(gateway, config)
        except ReloadRefused as exc:
            log.error("reload refused: %s; the running configuration stays in force", exc)
            return False
        return True
    finally:
        systemd.notify("READY=1", f"STATUS=serving {len(gateway.config.upstreams)} upstream(s)")


async def apply(gateway: Gateway, config: Config) -> None:
    """Put ``config`` in force in ``gateway`` (raises ``ReloadRefused`` and changes nothing)."""
    old = gateway.plan
    if config.sessions != old.config.sessions:
        raise ReloadRefused("the sessions section changed; sessions would be lost, so that needs a restart")
    from mcpgate.gateway import first_use

    for name in restart_only(old.config, config):
        log.warning("reload: %s changed; that takes effect at the next restart", name)
    config = in_force(old.config, config)
    built = plan.build(config, gateway.socket_path, first_use, previous=old)
    new = built.plan
    try:
        if built.new_auth and new.auth is not None:
            await new.auth.start()
        if built.new_limiter and new.limiter is not None:
            await new.limiter.start()
        await gateway.start_parts(built.new_upstreams, built.new_children)
    except Exception as exc:
        await _close(built.new_upstreams, built.new_children, new.auth if built.new_auth else None,
                     new.limiter if built.new_limiter else None)  # fmt: skip
        raise ReloadRefused(f"its new parts could not start ({type(exc).__name__}: {exc})") from None
    gateway.plan = new  # the swap: one assignment, between two requests' steps
    gateway.after_reload(old)
    upstreams, children, auth, limiter = plan.retired(old, new)
    if upstreams or children or auth is not None or limiter is not None:
        gateway.retire(_later(config.server.shutdown_timeout, upstreams, children, auth, limiter))
    added = sorted(set(new.upstreams) - set(old.upstreams))
    removed = sorted(set(old.upstreams) - set(new.upstreams))
    changed = sorted(u.name for u in built.new_upstreams if u.name in old.upstreams)
    log.info(
        "reloaded %s: %d upstream(s)%s%s%s",
        config.source,
        len(new.upstreams),
        f", added {', '.join(added)}" if added else "",
        f", removed {', '.join(removed)}" if removed else "",
        f", changed {', '.join(changed)}" if changed else "",
    )


async def _later(
    grace: float,
    upstreams: list[HttpUpstream],
    children: list[Child],
    auth: Authenticator | None,
    limiter: Limiter | None,
) -> None:
    """Close what the old plan alone used, once in-flight requests had the shutdown grace."""
    try:
        await asyncio.sleep(grace)
    finally:
        await _close(upstreams, children, auth, limiter)


async def _close(
    upstreams: list[HttpUpstream], children: list[Child], auth: Authenticator | None, limiter: Limiter | None
) -> None:
    for upstream in upstreams:
        with contextlib.suppress(Exception):
            await upstream.close()
    for process, bridge in children:
        with contextlib.suppress(Exception):
            await bridge.close()
            await process.close()
    if auth is not None:
        with contextlib.suppress(Exception):
            await auth.close()
    if limiter is not None:
        with contextlib.suppress(Exception):
            await limiter.close()
