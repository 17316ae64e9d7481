"""Keeps a running gateway's plan in step with the store: at start, on every change, and on SIGHUP.

The effective configuration is always the file's validated document with the store's objects
merged in (``objects.merge``), validated again as a whole and compiled into a plan that is swapped
in like a reload's (``reload.apply``): in-flight requests finish on the plan they started with.

Changes are found by comparing the store's change counter with the revision in force: after each
admin write here at once, otherwise when PostgreSQL notifies, or at every ``poll_interval``. The
store being unreachable never stops traffic: the last good plan keeps serving, the outage is logged
once (and once again when it ends) and shown in ``/readyz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mcpgate import reload
from mcpgate.config.load import validate_data
from mcpgate.config.messages import Finding
from mcpgate.config.model import Config
from mcpgate.store import Store, StoreError, describe
from mcpgate.store.backend import now
from mcpgate.store.objects import Kind, Layout, Merged, Objects, merge

if TYPE_CHECKING:
    from mcpgate.gateway import Gateway

log = logging.getLogger("mcpgate.store")


class StoreConflict(Exception):
    """The store's objects do not fit the configuration file (at start: a startup error)."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        lines = [f"{'.'.join(map(str, f.path)) or '(root)'}: {f.message}" for f in findings]
        super().__init__("the store's objects do not fit the configuration file:\n  " + "\n  ".join(lines))


class Invalid(Exception):
    """An admin change that would make the effective configuration invalid (HTTP 400)."""

    def __init__(self, findings: list[Finding], layout: Layout) -> None:
        super().__init__("; ".join(f.message for f in findings))
        self.findings, self.layout = findings, layout


@dataclass(eq=False)
class Runtime:
    store: Store
    file: Config  # the configuration file's, alone
    config: Config  # in force: the file's with the store's objects
    merged: Merged
    gateway: Gateway | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one plan change at a time
    reachable: bool = True
    problem: str | None = None  # the outage, or the store revision that could not be applied
    since: str | None = None
    changes_applied: int = 0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _watcher: asyncio.Task[None] | None = None
    _warned: set[str] = field(default_factory=set)

    @classmethod
    async def open(cls, file: Config, *, migrate: bool = True) -> Runtime:
        """The store opened and its objects merged with ``file``; raises ``StoreError`` or
        ``StoreConflict``."""
        assert file.store is not None
        store = Store(file.store)
        await store.open(migrate=migrate)
        try:
            objects = await store.load()
            config, merged, findings = effective(file, objects)
            if config is None:
                raise StoreConflict(findings)
        except BaseException:
            await store.close()
            raise
        runtime = cls(store, file, config, merged)
        runtime._log_shadowed()
        log.info("store %s: revision %d, %d object(s)", describe(file.store), objects.revision, len(objects.rows))
        return runtime

    @property
    def objects(self) -> Objects:
        return self.store.objects

    def start(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._watcher = asyncio.create_task(self._watch(), name="store-watch")

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.store.close()

    def status(self) -> dict[str, Any]:
        """For /readyz: where the store is, what revision is in force, and any trouble."""
        backend = self.store.backend
        status: dict[str, Any] = {
            "backend": backend.kind,
            "state": "unreachable" if not self.reachable else ("ok" if self.problem is None else "error"),
            "revision": self.objects.revision,
            "objects": len(self.objects.rows),
        }
        if backend.kind == "postgres":
            status["listening"] = bool(getattr(backend, "listening", False))
        if self.problem is not None:
            status["error"] = self.problem
            status["since"] = self.since
        return status

    def poke(self) -> None:
        """Look at the store now (a NOTIFY arrived, or the LISTEN connection was lost)."""
        self._wake.set()

    async def _watch(self) -> None:
        interval = self.file.store.poll_interval if self.file.store is not None else 2.0
        while True:
            was_listening = self.store.backend.listening
            listening = await self.store.backend.listen(self.poke)
            if listening and not was_listening:
                # A change committed before LISTEN began was notified to no one here: look now.
                self._wake.set()
            # Listening, polling is only a safety net; without it, polling is how changes arrive.
            wait = max(interval * 5, 10.0) if listening else interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            try:
                await self.refresh()
            except Exception:  # the watch must outlive any surprise: the next round tries again
                log.exception("store: checking for changes failed")

    async def refresh(self, *, force: bool = False) -> bool:
        """Apply the store's newest objects when they changed; False when it could not."""
        async with self.lock:
            try:
                if not force and await self.store.backend.revision() == self.objects.revision:
                    self._reachable_again()
                    return True
                objects = await self.store.load()
            except StoreError as exc:
                self._unreachable(str(exc))
                return False
            self._reachable_again()
            return await self._apply(self.file, objects)

    async def commit(
        self, kind: Kind, name: str, body: dict[str, Any] | None, *, expect: int | None, actor: str
    ) -> tuple[int, bool]:
        """One admin change: validated against the file and the store as they are now, written,
        and put in force here. (new store revision, whether the object was created). Raises
        ``Invalid``, ``Stale``, ``Missing``, ``NoKey`` and ``StoreError``."""
        async with self.lock:
            objects = await self.store.load()
            created = body is not None and objects.get(kind, name) is None
            config, merged, findings = effective(self.file, objects.with_change(kind, name, body))
            if config is None:
                raise Invalid(findings, merged.layout)
            revision = await self.store.write(kind, name, body, expect=expect, actor=actor)
            self._reachable_again()
            log.info(
                "admin: %s %s %s %r (store revision %d)",
                actor, "created" if created else "deleted" if body is None else "replaced", kind, name, revision,
            )  # fmt: skip
            try:
                objects = await self.store.load()
            except StoreError as exc:
                self._unreachable(str(exc))
                return revision, created
            await self._apply(self.file, objects)
            return revision, created

    async def reload_file(self, load: Callable[[], Config]) -> bool:
        """SIGHUP: the file read again, merged with the store's objects as they are now."""
        async with self.lock:
            try:
                file = await asyncio.to_thread(load)
            except Exception as exc:
                for line in getattr(exc, "issues", None) or str(exc).splitlines() or [type(exc).__name__]:
                    log.error("reload: %s", line)
                log.error("reload refused: the running configuration stays in force")
                return False
            if file.store != self.file.store:
                log.warning("reload: store changed; that takes effect at the next restart")
                file = _with_store(file, self.file)
            return await self._apply(file, self.objects)

    async def _apply(self, file: Config, objects: Objects) -> bool:
        config, merged, findings = effective(file, objects)
        if config is None:
            message = StoreConflict(findings).args[0]
            if message not in self._warned:
                log.error("store revision %d not applied: %s", objects.revision, message)
                self._warned = {message}
            self._set_problem(f"revision {objects.revision} not applied: see the log")
            return False
        gateway = self.gateway
        if gateway is not None:
            try:
                await reload.apply(gateway, config)
            except reload.ReloadRefused as exc:
                log.error("store revision %d not applied: %s", objects.revision, exc)
                self._set_problem(f"revision {objects.revision} not applied: {exc}")
                return False
            except Exception as exc:  # the running plan stays; the next change tries again
                log.exception("store revision %d not applied", objects.revision)
                self._set_problem(f"revision {objects.revision} not applied: {type(exc).__name__}")
                return False
        self.file, self.config, self.merged = file, config, merged
        if self.reachable:
            self.problem = self.since = None
        self._warned.clear()
        self.changes_applied += 1
        self._log_shadowed()
        return True

    def _log_shadowed(self) -> None:
        for line in self.merged.shadowed:
            if line not in self._warned:
                log.warning("%s; left out", line)
                self._warned.add(line)

    def _set_problem(self, problem: str) -> None:
        if self.problem is None:
            self.since = now()
        self.problem = problem

    def _unreachable(self, why: str) -> None:
        if self.reachable:
            log.error("store unreachable: %s; the last good configuration keeps serving", why)
            self.reachable = False
            self.since = now()
        self.problem = why

    def _reachable_again(self) -> None:
        if not self.reachable:
            log.info("store reachable again")
            self.reachable = True
            self.problem = self.since = None


def effective(file: Config, objects: Objects) -> tuple[Config | None, Merged, list[Finding]]:
    """The file's configuration with ``objects`` merged in, validated as a whole."""
    assert file.document is not None, "a configuration loaded from a file keeps its document"
    merged = merge(file.document, objects)
    config, findings = validate_data(merged.data, file.source)
    return config, merged, findings


def _with_store(file: Config, running: Config) -> Config:
    import dataclasses

    return dataclasses.replace(file, store=running.store, admin=running.admin)
