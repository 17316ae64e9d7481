"""The running gateway's state: built once from a Config, shared by every request.

Kept apart from ``server.py`` (the aiohttp wiring) so that pipeline stages can depend on it
without depending on the web layer's startup code.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import aiohttp

from mcpgate import __version__, plan
from mcpgate.analytics import Analytics, SinkError, make_sink
from mcpgate.auth import Authenticator
from mcpgate.config.model import Config
from mcpgate.errors import GatewayError
from mcpgate.federation import LISTED_AS, Listed
from mcpgate.jsonrpc import LATEST_LEGACY
from mcpgate.limits import Limiter
from mcpgate.limits.rules import StoreUnavailable
from mcpgate.observability import otel
from mcpgate.observability.logging import Redactor
from mcpgate.observability.recorder import Recorder
from mcpgate.observability.shared import Shared
from mcpgate.plan import Plan
from mcpgate.policy import Policy
from mcpgate.routing import Catalogue, ListedKind, Router
from mcpgate.session_redis import RedisSessionStore
from mcpgate.sessions import MemorySessionStore, Session, SessionStore
from mcpgate.unified import UNIFIED
from mcpgate.upstream.bridge import Bridge
from mcpgate.upstream.channel import Channel
from mcpgate.upstream.http import SESSION_HEADER, HttpUpstream, UpstreamResponse
from mcpgate.workers import SHARED_DIR_ENV, worker_slot

if TYPE_CHECKING:
    from mcpgate.observability.otel import Tracing

log = logging.getLogger("mcpgate.gateway")

HELD_CLIENT_INFO: Final = {"name": "mcpgate", "version": __version__}
# What each list_changed notification makes stale in the routing catalogue.
LIST_CHANGED: Final[dict[str, tuple[ListedKind, ...]]] = {
    "notifications/tools/list_changed": ("tool",),
    "notifications/prompts/list_changed": ("prompt",),
    "notifications/resources/list_changed": ("resource", "template"),
}


def _analytics(config: Config, recorder: Recorder) -> Analytics:
    """The analytics writer, counting its outcomes in a metric when metrics are on."""
    assert config.analytics is not None
    counts = None
    if recorder.metrics is not None:
        counts = recorder.metrics.collector.counter(
            "mcpgate_analytics_events",
            "Audit events for analytics: written, dropped (the queue was full) or failed (not written)",
            ["outcome"],
        )
    return Analytics(config.analytics, make_sink(config.analytics, config.store), counts=counts)


class Unavailable(Exception):
    """A database the configuration names did not answer at start (exit 69: retry later)."""


class StartupError(Exception):
    """The configuration is valid but cannot run here (say, a backend this build lacks)."""


@dataclass(eq=False)
class Gateway:
    plan: Plan  # the running configuration, compiled; replaced whole by a reload (``reload``)
    sessions: SessionStore
    shadow_denials: int = 0  # requests a shadow-mode policy would have denied
    recorder: Recorder | None = None  # metrics, audit log, access lines
    started: float = 0.0  # when start began (epoch seconds), for /admin/v1/status
    shared_metrics: Shared | None = None  # under server.workers: this worker's numbers, for its peers
    tracing: Tracing | None = None  # OpenTelemetry, made at start when observability.tracing is on
    bridge_dir: str = ""  # where bridged (stdio, sse) upstreams get their private sockets
    socket_path: Callable[[], str] = lambda: ""  # the next of them (``socket_namer``)
    _bridge_dir_made: bool = False
    _retiring: set[asyncio.Task[None]] = field(default_factory=set)  # replaced parts, closed after a drain
    # What each upstream last listed, for the router's catalogue fallback; swapped whole when it changes.
    catalogue: Catalogue = field(default_factory=Catalogue)
    _listed: dict[str, dict[ListedKind, tuple[str, ...]]] = field(default_factory=dict)
    _held: dict[str, Session] = field(default_factory=dict)
    # 2026-07-28 listeners of each held session's GET stream, and the task that follows it.
    held_listeners: dict[str, set[asyncio.Queue[Any]]] = field(default_factory=dict)
    held_followers: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    # Upstream lists for the unified endpoint: (upstream, list method, scope) -> (expiry, answer).
    # The scope is "public", or the era and identity a private (or legacy) answer was given to.
    list_cache: dict[tuple[str, str, str], tuple[float, float, Listed]] = field(default_factory=dict)
    # The unified endpoint's merged lists, serialized, with what they were made from (``list_answer``).
    merged_lists: dict[tuple[str, bool], tuple[tuple[object, ...], bytes]] = field(default_factory=dict)
    _refreshing: dict[object, asyncio.Task[Any]] = field(default_factory=dict)
    # Exposed tool names already logged as ones clients reject: each is said once (bounded).
    warned_names: set[str] = field(default_factory=set)
    # Set when shutdown begins: long-lived streams end, new work is refused.
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    # Open upstream responses of long-lived streams (GET), closed at shutdown so they end at once.
    streams: set[UpstreamResponse] = field(default_factory=set)
    open_streams: dict[str, int] = field(default_factory=dict)  # long-lived streams per upstream, for metrics
    _sweeper: asyncio.Task[None] | None = None
    _session_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # Background clean-ups (upstream sessions of evicted gateway sessions), awaited at close.
    _chores: set[asyncio.Task[None]] = field(default_factory=set)

    # What the request path reads, from the plan in force.
    @property
    def config(self) -> Config:
        return self.plan.config

    @property
    def upstreams(self) -> Mapping[str, HttpUpstream]:
        return self.plan.upstreams

    @property
    def router(self) -> Router:
        return self.plan.router

    @property
    def auth(self) -> Authenticator | None:
        return self.plan.auth

    @property
    def policy(self) -> Policy | None:
        return self.plan.policy

    @property
    def limiter(self) -> Limiter | None:
        return self.plan.limiter

    @property
    def children(self) -> Mapping[str, tuple[Channel, Bridge]]:
        return self.plan.children

    @classmethod
    def from_config(cls, config: Config) -> Gateway:
        # The directory is created at start, not here: validate builds a Gateway too, and must
        # leave nothing behind.
        bridge_dir = os.path.join(tempfile.gettempdir(), f"mcpgate-{os.getpid()}-{secrets.token_hex(4)}")
        next_socket = socket_namer(bridge_dir)
        built = plan.build(config, next_socket, first_use)
        sessions = config.sessions
        store: SessionStore
        if sessions.backend == "redis":
            store = RedisSessionStore(
                plan.redis_url(sessions.redis_url),
                sessions.key_prefix,
                sessions.idle_timeout,
                max_sessions=sessions.max_sessions,
                max_per_client=sessions.max_per_client,
            )
        else:
            store = MemorySessionStore(
                sessions.idle_timeout, max_sessions=sessions.max_sessions, max_per_client=sessions.max_per_client
            )
        gateway = cls(built.plan, store, bridge_dir=bridge_dir, socket_path=next_socket)
        if config.observability.tracing.enabled and not otel.available():
            raise StartupError(otel.MISSING)
        gateway.recorder = Recorder(config.observability, [u.name for u in config.upstreams])
        if gateway.recorder.metrics is not None:
            gateway.recorder.metrics.watch(gateway.live_metrics)
        if config.analytics is not None:
            gateway.recorder.analytics = _analytics(config, gateway.recorder)
        return gateway

    def live_metrics(self) -> dict[str, list[tuple[tuple[str, ...], float]]]:
        """What the metrics read at scrape time: upstream health, open sessions and streams."""
        sessions: dict[str, int] = {}
        for scope, count in self.sessions.count_by_scope().items():
            name = "/mcp" if scope == UNIFIED else scope
            sessions[name] = sessions.get(name, 0) + count
        return {
            "mcpgate_upstream_up": [((n,), float(u.state.health == "healthy")) for n, u in self.upstreams.items()],
            "mcpgate_active_sessions": [((n,), float(c)) for n, c in sessions.items()],
            "mcpgate_active_streams": [((n,), float(c)) for n, c in self.open_streams.items() if c and n],
        }

    async def start(self) -> None:
        self.started = time.time()
        if self.config.observability.tracing.enabled:
            self.tracing = otel.Tracing(self.config.observability.tracing)
        if self.recorder is not None and self.recorder.audit is not None:
            try:
                self.recorder.audit.open()
            except OSError as exc:
                raise StartupError(f"observability.audit.path: cannot open it ({exc.strerror})") from None
            self.recorder.audit.start_flushing()
        slot, shared_dir = worker_slot(), os.environ.get(SHARED_DIR_ENV)
        if self.recorder is not None and self.recorder.metrics is not None and slot is not None and shared_dir:
            self.shared_metrics = Shared(self.recorder.metrics, shared_dir, slot)
            self.recorder.metrics.collector.peers = self.shared_metrics.peers
            self.shared_metrics.start()
        if self.recorder is not None and self.recorder.analytics is not None:
            try:
                await self.recorder.analytics.start()
            except SinkError as exc:
                raise (Unavailable if exc.retry else StartupError)(str(exc)) from None
        if self.auth is not None:
            await self.auth.start()
        if self.limiter is not None:
            try:
                await self.limiter.start()
            except StoreUnavailable as exc:
                raise StartupError(str(exc)) from None
        try:
            await self.sessions.check()
        except Exception as exc:
            where = Redactor().url(self.config.sessions.redis_url)
            raise StartupError(f"sessions: cannot reach redis at {where} ({type(exc).__name__}: {exc})") from None
        await self.start_parts(list(self.upstreams.values()), list(self.children.values()))
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="session-sweeper")

    async def start_parts(self, upstreams: list[HttpUpstream], children: list[tuple[Channel, Bridge]]) -> None:
        """Start upstreams and the channels behind bridged ones (at start, and for a reload's new ones)."""
        if children and not self._bridge_dir_made:
            try:
                os.mkdir(self.bridge_dir, 0o700)  # only this user may reach the children's sockets
                self._bridge_dir_made = True
            except OSError as exc:
                raise StartupError(
                    f"cannot create a private directory for stdio and sse upstreams in {tempfile.gettempdir()} "
                    f"({exc.strerror}); point TMPDIR at a writable directory"
                ) from None
        for process, bridge in children:
            if not process.config.lazy:
                await process.start()
            await bridge.start()
        for upstream in upstreams:
            await upstream.start()

    def after_reload(self, old: Plan) -> None:
        """What follows a plan swap here: forget what replaced or removed upstreams listed, end
        the sessions the gateway held with them, and count metrics under the new names."""
        gone = {name for name, upstream in old.upstreams.items() if self.upstreams.get(name) is not upstream}
        for name in gone:
            self._listed.pop(name, None)
            follower = self.held_followers.pop(name, None)
            if follower is not None:
                follower.cancel()
            held = self._held.pop(name, None)
            if held is not None:  # ended through the old upstream, still open until it is retired
                self.end_upstream_sessions_soon([held], old.upstreams)
        removed = sorted(set(old.upstreams) - set(self.upstreams))
        if removed:
            self._chore(self._end_sessions_of(removed, old.upstreams))
        for key in [key for key in self.list_cache if key[0] in gone]:
            del self.list_cache[key]
        self.merged_lists.clear()  # made by the old router: let nothing of the old plan stay alive
        self._rebuild_catalogue()
        if self.recorder is not None and self.recorder.metrics is not None:
            self.recorder.metrics.servers = frozenset(self.upstreams)

    def retire(self, work: Coroutine[Any, Any, None]) -> None:
        """Closing what a reload replaced, after its drain; cut short by ``close``."""
        task = asyncio.create_task(work, name="retire")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def begin_shutdown(self) -> None:
        """Step one of shutdown: open streams end now; in-flight calls get the grace period."""
        self.closing.set()
        for resp in list(self.streams):
            resp.close()
        self.streams.clear()

    def kill_children(self) -> None:
        """At once, for an immediate exit: SIGKILL every process the gateway started, drop the sockets."""
        for channel, bridge in self.children.values():
            for one in (channel, *bridge.session_channels()):
                one.kill()
        if self.bridge_dir:
            shutil.rmtree(self.bridge_dir, ignore_errors=True)

    async def close(self) -> None:
        for task in list(self._retiring):  # what a reload replaced: closed now, not after its drain
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        if self._chores:
            _, late = await asyncio.wait(self._chores, timeout=self.config.server.shutdown_timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for follower in self.held_followers.values():
            follower.cancel()
        await asyncio.gather(*self.held_followers.values(), return_exceptions=True)
        await self.end_held_sessions()
        for upstream in self.upstreams.values():
            await upstream.close()
        for process, bridge in self.children.values():
            await bridge.close()
            await process.close()
        if self.bridge_dir:
            shutil.rmtree(self.bridge_dir, ignore_errors=True)
        await self.sessions.close()
        if self.auth is not None:
            await self.auth.close()
        if self.limiter is not None:
            await self.limiter.close()
        if self.recorder is not None:
            self.recorder.drain()  # what the last turn of the loop recorded
            if self.shared_metrics is not None:
                await self.shared_metrics.close()  # the last numbers, for the workers still running
            if self.recorder.audit is not None:
                self.recorder.audit.close()
            if self.recorder.analytics is not None:
                await self.recorder.analytics.close()  # after the last drain: its events are written too
        if self.tracing is not None:
            self.tracing.close()

    def is_ready(self) -> bool:
        ready_when = self.config.server.ready_when
        states = {name: u.state.health == "healthy" for name, u in self.upstreams.items()}
        for name, (channel, _) in self.children.items():
            if not channel.started:  # lazy and not needed yet: nothing is wrong with it
                states[name] = True
        if ready_when == "any":
            return any(states.values()) or not states
        if ready_when == "all":
            return all(states.values())
        return all(states.get(name, False) for name in ready_when)

    @contextlib.contextmanager
    def counted_stream(self, name: str) -> Iterator[None]:
        """A long-lived stream open while inside, for mcpgate_active_streams."""
        self.open_streams[name] = self.open_streams.get(name, 0) + 1
        try:
            yield
        finally:
            self.open_streams[name] -= 1

    @contextlib.asynccontextmanager
    async def session_lock(self, session: Session) -> AsyncIterator[None]:
        """Serialise rare per-session work (re-opening upstream sessions), across every instance
        when the store is shared; inside, ``session`` holds the store's latest upstream session ids."""
        if session.owner == "mcpgate":  # a held session (outbound): this process's alone
            lock = self._session_locks.setdefault(session.id, asyncio.Lock())
            try:
                async with lock:
                    yield
            finally:
                if not lock.locked():
                    self._session_locks.pop(session.id, None)
            return
        async with self.sessions.lock(session.id):
            await self.sessions.reload(session)
            yield

    async def end_held_sessions(self) -> None:
        for held in self._held.values():
            await self.end_upstream_sessions(held)

    async def end_upstream_sessions(
        self, session: Session, upstreams: Mapping[str, HttpUpstream] | None = None
    ) -> None:
        """Best effort: tell each upstream its session is over (DELETE), ignoring failures."""
        for name, upstream_sid in session.upstream_sessions.items():
            upstream = (upstreams if upstreams is not None else self.upstreams).get(name)
            if upstream is None or upstream_sid is None:
                continue
            headers = upstream.headers_for(
                {"MCP-Protocol-Version": session.protocol_version}, accept="*/*", session_id=upstream_sid
            )
            try:
                async with asyncio.timeout(upstream.config.timeout):
                    resp = await upstream.session.delete(upstream.url, headers=headers, allow_redirects=False)
                    resp.release()
            except (TimeoutError, aiohttp.ClientError) as exc:
                log.debug("ending upstream session on %s failed: %s", name, type(exc).__name__)

    def held_session(self, upstream: str) -> Session:
        """The session the gateway holds with a legacy-only upstream for 2026-07-28 clients.

        Not in the store (no client owns it); it declares no client capabilities, so the
        upstream never asks stateless clients something they cannot answer.
        """
        held = self._held.get(upstream)
        if held is None:
            params = {"protocolVersion": LATEST_LEGACY, "capabilities": {}, "clientInfo": HELD_CLIENT_INFO}
            held = Session(f"held:{upstream}", owner="mcpgate", scope=upstream, protocol_version=LATEST_LEGACY,
                           init_params=params)  # fmt: skip
            self._held[upstream] = held
        return held

    def remember_list(self, upstream: str, method: str, names: list[str]) -> None:
        """Record what an upstream lists; the catalogue is rebuilt only when that changed."""
        known = self._listed.setdefault(upstream, {})
        kind = LISTED_AS[method]
        if known.get(kind) != (kept := tuple(names)):
            known[kind] = kept
            self._rebuild_catalogue()

    def forget_list(self, upstream: str, notification: str) -> None:
        """An upstream said its list changed: route by the new one, once asked for (``list_changed``)."""
        stale = LIST_CHANGED.get(notification, ())
        methods = {method for method, kind in LISTED_AS.items() if kind in stale}
        for key in [key for key in self.list_cache if key[0] == upstream and key[1] in methods]:
            del self.list_cache[key]
        known = self._listed.get(upstream)
        if known is None:
            return
        for kind in stale:
            known.pop(kind, None)
        self._rebuild_catalogue()

    def _rebuild_catalogue(self) -> None:
        self.catalogue = Catalogue.build(self._listed, [u.name for u in self.config.upstreams])

    def end_upstream_sessions_soon(
        self, sessions: list[Session], upstreams: Mapping[str, HttpUpstream] | None = None
    ) -> None:
        """End evicted sessions' upstream sessions without making the request that evicted them wait."""
        for session in sessions:
            self._chore(self.end_upstream_sessions(session, upstreams))

    async def _end_sessions_of(self, names: list[str], upstreams: Mapping[str, HttpUpstream]) -> None:
        """Removed upstreams: their endpoints' sessions end (a later request on one is a 404, as
        for any unknown session), and each upstream session learns it is over."""
        for name in names:
            try:
                ended = await self.sessions.remove_scope(name)
            except GatewayError as exc:  # a shared store that is down: idle expiry ends them later
                log.warning("cannot end the sessions of removed upstream %s: %s", name, exc.message)
                continue
            if ended:
                log.info("removed upstream %s: ended its %d session(s)", name, len(ended))
            for session in ended:
                await self.end_upstream_sessions(session, upstreams)

    def in_background(self, key: object, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` after the request that asked for it, once per ``key`` at a time; failures are logged."""
        if key in self._refreshing:
            work.close()
            return

        async def guarded() -> None:
            try:
                await work
            except (GatewayError, TimeoutError) as exc:
                log.info("background refresh %s failed: %s", key, getattr(exc, "message", "timed out"))
            finally:
                self._refreshing.pop(key, None)

        self._refreshing[key] = self._chore(guarded())

    def _chore(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)
        return task

    async def _sweep_loop(self) -> None:
        interval = max(1.0, min(60.0, self.config.sessions.idle_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            for session in await self.sessions.expire():
                log.debug("session expired after %.0fs idle", self.config.sessions.idle_timeout)
                await self.end_upstream_sessions(session)


def socket_namer(directory: str) -> Callable[[], str]:
    """Names for bridged upstreams' sockets, never reused: a reload adds to those already bound."""
    numbers = itertools.count()
    return lambda: os.path.join(directory, f"{next(numbers)}.sock")


async def first_use(channel: Channel, seconds: float) -> None:
    """What a bridged upstream's heartbeat waits for: its channel started (a lazy one only once a
    client needed it), and running; probing earlier would say "unhealthy" of what is only starting."""
    await channel.wait_started()
    await channel.wait_ready(seconds)


__all__ = ["SESSION_HEADER", "Gateway", "StartupError"]
