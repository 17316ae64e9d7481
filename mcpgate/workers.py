"""``server.workers: N``: N gateway processes on one port, and the supervisor that keeps them.

Each worker is a whole gateway (``server.run``) forked from the supervisor once the configuration
is loaded; all of them listen on the same address with ``SO_REUSEPORT``, so the kernel spreads
connections across them. Nothing is shared in memory, which is why ``validate`` insists on the
redis backends for sessions and rate limits; metrics are summed through small snapshot files
(``observability.metrics``). The supervisor:

- restarts a worker that dies, after a back-off that grows while workers keep dying young;
- stops everything with the exit code of a worker that could not start (78: the configuration
  cannot run, such as an unreachable Redis; 69: the address cannot be bound): restarting those
  would only fail again;
- on SIGTERM or SIGINT, passes it on and waits for every worker to drain (a second signal kills
  them at once); SIGHUP and SIGUSR1 (logrotate) are passed on as they come.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from mcpgate import systemd
from mcpgate.cli_output import reachable_host
from mcpgate.config.model import Config

log = logging.getLogger("mcpgate.workers")

SLOT_ENV: Final = "MCPGATE_WORKER_SLOT"  # which worker this process is: 0..N-1
SHARED_DIR_ENV: Final = "MCPGATE_WORKER_DIR"  # where the workers leave their metrics snapshots
FATAL: Final = (69, 78)  # exit codes that restarting would only repeat
YOUNG: Final = 10.0  # seconds: a worker that dies sooner counts towards the back-off
MAX_BACKOFF: Final = 30.0


@dataclass(slots=True)
class Slot:
    index: int
    pid: int = 0
    started: float = 0.0
    backoff: float = 0.5
    restart_at: float | None = None  # monotonic; set while the slot waits to be refilled
    restarts: int = 0


@dataclass(slots=True)
class Supervisor:
    config: Config
    loader: Callable[[], Config] | None = None  # for the workers' reloads (SIGHUP is passed on)
    migrate: bool = True  # the store's schema, at each worker's start (under the store's own lock)
    slots: list[Slot] = field(default_factory=list)
    shared_dir: str = ""
    stopping: bool = False
    _watchdog: float | None = None  # seconds between WATCHDOG=1, under a systemd watchdog
    signals: list[int] = field(default_factory=list)  # received, handled by the loop

    def run(self) -> int:
        count = self.config.server.workers
        self.shared_dir = tempfile.mkdtemp(prefix="mcpgate-workers-")
        self.slots = [Slot(i) for i in range(count)]
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD):
            signal.signal(sig, self._note)
        try:
            for slot in self.slots:
                self._spawn(slot)
            log.info("supervising %d workers (pid %d)", count, os.getpid())
            self._watchdog = systemd.watchdog_interval()
            return self._loop()
        finally:
            shutil.rmtree(self.shared_dir, ignore_errors=True)

    def _note(self, sig: int, frame: object) -> None:
        self.signals.append(sig)

    def _spawn(self, slot: Slot) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                code = _work(self.config, slot.index, self.shared_dir, self.loader, self.migrate)
            finally:
                os._exit(code)
        slot.pid, slot.started, slot.restart_at = pid, time.monotonic(), None

    def _loop(self) -> int:
        announced, fed = False, 0.0
        while True:
            if not announced and not self.stopping and self._listening():
                announced = True
                count = len(self.slots)
                systemd.notify("READY=1", f"STATUS=serving on port {self.config.server.port} with {count} workers")
            if self._watchdog is not None and time.monotonic() - fed >= self._watchdog:
                fed = time.monotonic()
                systemd.notify("WATCHDOG=1")
            while self.signals:
                sig = self.signals.pop(0)
                if sig in (signal.SIGTERM, signal.SIGINT):
                    if self.stopping:
                        log.warning("received %s again: killing the workers", signal.Signals(sig).name)
                        self._send(signal.SIGKILL)
                        return 1
                    log.info("received %s: stopping %d workers", signal.Signals(sig).name, len(self.slots))
                    systemd.notify("STOPPING=1", "STATUS=draining the workers")
                    self.stopping = True
                    self._send(signal.SIGTERM)
                elif sig in (signal.SIGHUP, signal.SIGUSR1):
                    self._send(sig)
            code = self._reap()
            if code is not None:
                return code
            if self.stopping and not any(slot.pid for slot in self.slots):
                log.info("all workers stopped")
                return 0
            now = time.monotonic()
            for slot in self.slots:
                if not self.stopping and slot.restart_at is not None and now >= slot.restart_at:
                    slot.restarts += 1
                    self._spawn(slot)
            time.sleep(0.05)

    def _listening(self) -> bool:
        """Ready for systemd once a worker accepts connections on the port."""
        host = reachable_host(self.config.server.host)
        try:
            with socket.create_connection((host, self.config.server.port), timeout=0.2):
                return True
        except OSError:
            return False

    def _reap(self) -> int | None:
        """Collects dead workers; a fatal exit stops everything and says with which code."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == 0:
                return None
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            slot.pid = 0
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                continue
            if code in FATAL:
                log.error("worker %d could not start (exit %d): stopping", slot.index, code)
                self.stopping = True
                self._send(signal.SIGTERM)
                self._wait_all(self.config.server.shutdown_timeout + 5)
                return code
            systemd.notify(f"STATUS=worker {slot.index} died; restarting it")
            young = time.monotonic() - slot.started < YOUNG
            slot.backoff = min(slot.backoff * 2, MAX_BACKOFF) if young else 0.5
            slot.restart_at = time.monotonic() + slot.backoff
            how = f"signal {-code}" if code < 0 else f"exit {code}"
            log.error("worker %d (pid %d) died (%s): restarting in %.1fs", slot.index, pid, how, slot.backoff)

    def _send(self, sig: int) -> None:
        for slot in self.slots:
            if slot.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, sig)

    def _wait_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(s.pid for s in self.slots) and time.monotonic() < deadline:
            self._reap_quietly()
            time.sleep(0.05)
        self._send(signal.SIGKILL)
        self._reap_quietly()

    def _reap_quietly(self) -> None:
        for slot in self.slots:
            if slot.pid:
                with contextlib.suppress(ChildProcessError):
                    pid, _ = os.waitpid(slot.pid, os.WNOHANG)
                    if pid:
                        slot.pid = 0


def _work(
    config: Config, index: int, shared_dir: str, loader: Callable[[], Config] | None = None, migrate: bool = True
) -> int:
    """One worker: a gateway of its own, which knows its slot (for /readyz and the metrics)."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)  # the worker's event loop installs its own
    # Its own process group: Ctrl-C in a terminal reaches the supervisor only, which passes one
    # SIGTERM on (a worker that got both would take the second as "exit now", skipping the drain).
    os.setpgid(0, 0)
    _exit_with_parent()
    systemd.forget()  # the supervisor is the one systemd listens to
    os.environ[SLOT_ENV], os.environ[SHARED_DIR_ENV] = str(index), shared_dir
    from mcpgate import server

    try:
        return server.run(config, loader, migrate=migrate)
    except server.StartupError as exc:
        log.error("worker %d: cannot start: %s", index, exc)
        return 78
    except server.Unavailable as exc:  # the store, or analytics' database
        log.error("worker %d: cannot start: %s", index, exc)
        return 69
    except OSError as exc:
        log.error("worker %d: cannot listen on %s:%s: %s", index, config.server.host, config.server.port, exc)
        return 69


def _exit_with_parent() -> None:
    """Linux: SIGTERM this worker when the supervisor dies, even by SIGKILL, so that no orphan
    keeps serving on the port; elsewhere, a supervisor killed that way leaves its workers."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() == 1:  # pragma: no cover - the supervisor died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def worker_slot() -> int | None:
    """This process's worker slot, when it runs under a supervisor."""
    value = os.environ.get(SLOT_ENV)
    return int(value) if value is not None and value.isdigit() else None


def supervise(config: Config, loader: Callable[[], Config] | None = None, *, migrate: bool = True) -> int:
    """Blocking entry point of ``mcpgate start`` with ``server.workers`` above 1."""
    return Supervisor(config, loader, migrate=migrate).run()
