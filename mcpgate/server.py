"""The aiohttp wiring: ``build_app(config)`` for routes and lifecycle, ``run(config)`` for the daemon.

Shutdown order (``Server.serve``), as an operator expects from Envoy or uvicorn:
1. stop accepting connections (the listening sites close);
2. end open streams at once (``Gateway.begin_shutdown`` in ``on_shutdown``), refuse new calls;
3. let in-flight calls finish, up to ``server.shutdown_timeout``;
4. cancel what is left;
5. close upstream pools and background tasks (``cleanup_ctx``, which runs only if startup did).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from aiohttp import web

from mcpgate import __version__, jsonrpc, pipeline, reload, systemd
from mcpgate.auth.identity import ANONYMOUS
from mcpgate.auth.oauth import WELL_KNOWN
from mcpgate.config.model import AdminConfig, Config
from mcpgate.errors import GatewayError
from mcpgate.gateway import Gateway, StartupError, Unavailable
from mcpgate.listener import ANSWER_HEADERS, SERVER_NAME, GatewayRunner, Handler, ListenerStats, render_error
from mcpgate.reload import Loader
from mcpgate.store.runtime import Runtime
from mcpgate.unified import UNIFIED
from mcpgate.workers import worker_slot

log = logging.getLogger("mcpgate.server")

GATEWAY: Final = web.AppKey("gateway", Gateway)
LISTENER_STATS: Final = web.AppKey("listener_stats", ListenerStats)
STORE: Final = web.AppKey("store", Runtime)
MCP_METHODS: Final = pipeline.ALLOWED_METHODS


async def mcp_handler(request: web.Request) -> web.StreamResponse:
    ctx = pipeline.RequestContext(request, request.app[GATEWAY], request.match_info["name"])
    return await pipeline.run(ctx)


async def unified_handler(request: web.Request) -> web.StreamResponse:
    return await pipeline.run(pipeline.RequestContext(request, request.app[GATEWAY], UNIFIED))


async def liveness(request: web.Request) -> web.Response:
    """200 while the event loop answers: nothing else is checked, by design."""
    return web.json_response({"status": "ok", "version": __version__})


async def readiness(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    ready = gateway.is_ready() and not gateway.closing.is_set()
    states: dict[str, Any] = {name: u.state.as_dict() for name, u in gateway.upstreams.items()}
    for name, (channel, bridge) in gateway.children.items():
        states[name] |= channel.status()
        if channel.config.per_session:
            states[name]["session_processes"] = bridge.session_processes
    for u in gateway.config.upstreams:
        states.setdefault(u.name, {"state": "not_served", "transport": u.transport})
    sessions = gateway.sessions
    listener = request.app[LISTENER_STATS]
    body = {
        "status": "ready" if ready else ("shutting_down" if gateway.closing.is_set() else "not_ready"),
        "ready_when": gateway.config.server.ready_when,
        "upstreams": states,
        "sessions": {
            "active": len(sessions),
            "max": sessions.max_sessions,
            "max_per_client": sessions.max_per_client,
            "evicted": sessions.evicted,
            "refused": sessions.refused,
        },
        "rejected": {"header_timeouts": listener.header_timeouts, "malformed": listener.bad_requests},
    }
    if gateway.auth is not None:
        body["auth"] = gateway.auth.status()
    if gateway.policy is not None and gateway.policy.shadow:
        body["policy"] = {"shadow": True, "would_deny": gateway.shadow_denials}
    store = request.app.get(STORE)
    if store is not None:  # an outage shows here, and does not make the gateway unready
        body["store"] = store.status()
    slot = worker_slot()
    if slot is not None:  # which of the server.workers processes answered
        body["worker"] = {"slot": slot, "pid": os.getpid()}
    return web.json_response(body, status=200 if ready else 503, dumps=lambda o: jsonrpc.dumps(o).decode())


async def protected_resource(request: web.Request) -> web.Response:
    """RFC 9728 metadata: where OAuth clients learn which authorization server issues tokens for us."""
    auth = request.app[GATEWAY].auth
    resource = auth.resource if auth is not None else None
    document = resource.document(request.match_info["tail"]) if resource is not None else None
    if document is None:
        return render_error(GatewayError("not_found"), None)
    # Public metadata, read by browser-based clients from other origins as well.
    headers = {"Access-Control-Allow-Origin": "*", "Cache-Control": "public, max-age=3600"}
    return web.json_response(document, headers=headers, dumps=lambda o: jsonrpc.dumps(o).decode())


async def name_the_server(request: web.Request, response: web.StreamResponse) -> None:
    # Instead of aiohttp's "Python/3.x aiohttp/3.x": versions help attackers, not operators.
    response.headers["Server"] = SERVER_NAME
    extra = request.get(ANSWER_HEADERS)
    if extra is not None:  # X-Request-ID; on a rate-limited route, how much is left
        response.headers.update(extra)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text, or OpenMetrics when the scraper asks for it (``Accept``)."""
    gateway = request.app[GATEWAY]
    recorder = gateway.recorder
    if recorder is None or recorder.metrics is None:  # pragma: no cover - the route exists only when enabled
        return render_error(GatewayError("not_found"), None)
    if gateway.auth is not None and gateway.config.observability.metrics.require_auth:
        try:
            await gateway.auth.authenticate(request.headers, request.path)
        except GatewayError as exc:
            return render_error(exc, None)
    body, content_type = recorder.metrics.render(request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type})


async def servers(request: web.Request) -> web.Response:
    """The upstreams behind this gateway, for client UIs and scripts discovering what they can reach.

    With ``auth`` configured this needs a credential like any MCP request, and lists only the
    upstreams the caller's policy lets it reach: which servers exist is not for everyone to see.
    """
    gateway = request.app[GATEWAY]
    identity = ANONYMOUS
    if gateway.auth is not None:
        try:
            identity = await gateway.auth.authenticate(request.headers, request.path)
        except GatewayError as exc:
            return render_error(exc, None)
    policy = gateway.policy
    base = (gateway.config.server.public_url or "").rstrip("/")
    listed = []
    for u in gateway.config.upstreams:
        if policy is not None and not policy.shadow and not policy.judge(identity, u.name, None, None).allowed:
            continue
        served = gateway.upstreams.get(u.name)
        listed.append(
            {
                "name": u.name,
                "description": u.description,
                "transport": u.transport,
                "health": served.state.health if served is not None else "not_served",
                "prefix": u.prefix,
                "endpoint": f"{base}/servers/{u.name}/mcp",
                "alias": f"{base}/mcp/{u.name}",
            }
        )
    body = {"unified": f"{base}/mcp", "servers": listed}
    return web.json_response(body, dumps=lambda o: jsonrpc.dumps(o).decode())


def build_app(config: Config) -> web.Application:
    """The whole HTTP surface, from a validated config; nothing starts until the app runs."""
    app = web.Application(client_max_size=config.server.max_body_bytes + 1)
    gateway = Gateway.from_config(config)
    app[GATEWAY] = gateway

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await gateway.start()
        yield
        await gateway.close()

    async def on_shutdown(app: web.Application) -> None:
        gateway.begin_shutdown()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    for path in ("/servers/{name}/mcp", "/mcp/{name}"):
        for method in MCP_METHODS:
            app.router.add_route(method, path, mcp_handler)
    for method in MCP_METHODS:
        app.router.add_route(method, "/mcp", unified_handler)
    for path in ("/healthz", "/health", "/live"):
        app.router.add_get(path, liveness)
    for path in ("/readyz", "/ready"):
        app.router.add_get(path, readiness)
    app.router.add_get("/servers", servers)
    if config.observability.metrics.enabled:
        app.router.add_get(config.observability.metrics.path, metrics)
    app.router.add_get(WELL_KNOWN + "{tail:(/.*)?}", protected_resource)
    app.on_response_prepare.append(name_the_server)
    app[LISTENER_STATS] = ListenerStats()
    return app


def mcp_endpoint(request: web.BaseRequest) -> str | None:
    """The endpoint an MCP request names (an upstream, or ``UNIFIED``), read straight off its
    path; ``None`` leaves it to the router: other paths and methods, anything percent-encoded
    (the router decodes), and ``Expect`` (the router's expect handler answers 100-continue)."""
    if request.method not in MCP_METHODS or "Expect" in request.headers:
        return None
    path = request.raw_path.partition("?")[0]
    if path == "/mcp":
        return UNIFIED
    if path.startswith("/servers/") and path.endswith("/mcp"):
        name = path[9:-4]
    elif path.startswith("/mcp/"):
        name = path[5:]
    else:
        return None
    if not name or "/" in name or "%" in name or "{" in name or "}" in name:
        return None
    return name


def fast_handler(app: web.Application) -> Callable[[Handler], Handler]:
    """MCP requests go straight to the pipeline, as the routes would send them, without the
    router, the match info and the signal machinery (about 7% of a forwarded call's instructions);
    everything else goes to the application."""
    gateway = app[GATEWAY]

    def wrap(routed: Handler) -> Handler:
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            endpoint = mcp_endpoint(request)
            if endpoint is None:
                return await routed(request)
            return await pipeline.run(pipeline.RequestContext(request, gateway, endpoint))  # type: ignore[arg-type]

        return handle

    return wrap


def make_runner(app: web.Application, config: Config) -> GatewayRunner:
    # access_log=None: per-request access logging halves throughput; `record` covers it.
    # handler_cancellation=True: a client that goes away cancels its upstream call.
    return GatewayRunner(
        app,
        config.server,
        app[LISTENER_STATS],
        fast_handler(app),
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=config.server.shutdown_timeout,
    )


class Server:
    """Runs one gateway process: listen, wait for a signal, shut down in order."""

    def __init__(self, config: Config, loader: Loader | None = None, *, migrate: bool = True) -> None:
        self.config = config
        self.loader = loader  # how to read the configuration again, for a reload (None: from stdin)
        self.migrate = migrate  # apply the store's schema migrations at start (start --no-migrate: check only)
        self.store: Runtime | None = None
        self.admin_bound: list[tuple[str, int]] = []
        self._reloading: asyncio.Task[None] | None = None
        self._reload_again = False
        self.should_exit = asyncio.Event()
        self.force_exit = False
        self.bound: list[tuple[str, int]] = []
        self.gateway: Gateway | None = None

    async def serve(self, on_ready: Callable[[Server], None] | None = None) -> int:
        config = self.config
        if config.store is not None:
            self.store = await open_store(config, migrate=self.migrate)
            config = self.store.config  # the file's, with the store's objects
        try:
            app = build_app(config)
        except BaseException:
            if self.store is not None:
                await self.store.close()
            raise
        self.gateway = app[GATEWAY]
        if self.store is not None:
            app[STORE] = self.store
        runner = make_runner(app, config)
        await runner.setup()
        admin: web.AppRunner | None = None
        watchdog: asyncio.Task[None] | None = None
        try:
            # Workers share the port: the kernel spreads connections across them (``workers``).
            shared = config.server.workers > 1
            site = web.TCPSite(runner, config.server.host, config.server.port, reuse_address=True, reuse_port=shared)
            await site.start()
            self.bound = [addr[:2] for addr in runner.addresses]
            slot = worker_slot()
            who = "" if slot is None else f" worker {slot} (pid {os.getpid()})"
            for host, port in self.bound:
                log.info("mcpgate %s%s listening on http://%s:%s", __version__, who, _fmt_host(host), port)
            if self.store is not None:
                self.store.start(self.gateway)
                if config.admin is not None:
                    admin = await self._serve_admin(config.admin, shared)
            self._warn_about_exposure()
            if on_ready is not None:
                on_ready(self)
            where = ", ".join(f"{_fmt_host(host)}:{port}" for host, port in self.bound)
            systemd.notify("READY=1", f"STATUS=serving {len(config.upstreams)} upstream(s) on {where}")
            interval = systemd.watchdog_interval()
            watchdog = asyncio.create_task(systemd.keep_watchdog_fed(interval)) if interval else None
            await self.should_exit.wait()
            log.info("shutting down (grace period %gs)", config.server.shutdown_timeout)
            systemd.notify("STOPPING=1", f"STATUS=draining for up to {config.server.shutdown_timeout:g}s")
        finally:
            if admin is not None:
                await admin.cleanup()
            await runner.cleanup()
            if self.store is not None:
                await self.store.close()
            if watchdog is not None:  # fed until the drain is over: a long drain is not a hang
                watchdog.cancel()
        log.info("stopped")
        return 0

    async def _serve_admin(self, config: AdminConfig, shared: bool) -> web.AppRunner:
        """The admin API on its own listener (every worker binds it, like the MCP port)."""
        from mcpgate.admin import build_admin_app

        assert self.store is not None
        runner = web.AppRunner(build_admin_app(self.store, config), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, config.host, config.port, reuse_address=True, reuse_port=shared)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise AdminBindError(config.host, config.port, exc) from None
        self.admin_bound = [addr[:2] for addr in runner.addresses]
        for host, port in self.admin_bound:
            log.info("admin API listening on http://%s:%s/admin/v1/", _fmt_host(host), port)
        return runner

    def handle_signal(self, sig: int) -> None:
        if self.should_exit.is_set():
            # A second signal means "now": like uvicorn, do not wait out the grace period.
            log.warning("received %s again: exiting immediately", signal.Signals(sig).name)
            if self.gateway is not None:
                self.gateway.kill_children()  # exiting now must not leave servers we started behind
            os._exit(1)
        log.info("received %s", signal.Signals(sig).name)
        self.should_exit.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_signal, sig)
        loop.add_signal_handler(signal.SIGUSR1, self.reopen_logs)  # logrotate: a fresh audit file
        loop.add_signal_handler(signal.SIGHUP, self.handle_reload)  # the same, and the config again

    def handle_reload(self) -> None:
        self.reopen_logs()
        if self.gateway is None or self.should_exit.is_set():
            return
        if self.loader is None:
            log.error("reload: the configuration came from standard input; restart to change it")
            return
        if self._reloading is not None and not self._reloading.done():
            self._reload_again = True  # one more after this one: the file may have changed meanwhile
            return
        self._reloading = asyncio.get_running_loop().create_task(self._reload(), name="reload")

    async def _reload(self) -> None:
        gateway, loader = self.gateway, self.loader
        if gateway is None or loader is None:  # pragma: no cover - handle_reload checked both
            return
        while True:
            self._reload_again = False
            log.info("reloading the configuration")
            if self.store is not None:  # the file again, with the store's objects merged in
                await self.store.reload_file(loader)
            else:
                await reload.reload(gateway, loader)
            if not self._reload_again:
                return

    def reopen_logs(self) -> None:
        recorder = self.gateway.recorder if self.gateway is not None else None
        if recorder is not None and recorder.audit is not None:
            try:
                recorder.audit.reopen()
            except OSError as exc:
                log.error("cannot reopen the audit log: %s", exc.strerror)

    def _warn_about_exposure(self) -> None:
        config = self.config
        where = f"{config.server.host}:{config.server.port}"
        if config.auth is None:
            log.warning("no authentication configured: anyone who can reach %s can use every upstream", where)
            return
        for key in config.auth.api_keys:
            if key.key is not None:
                log.warning(
                    "auth.api_keys %s: the key is in the configuration in plain text; use key_hash "
                    "(mcpgate hash-key prints it) outside development",
                    key.id,
                )
        if config.policy is not None and config.policy.shadow:
            log.warning("policy.shadow is on: denials are logged, not enforced")


def _fmt_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class StoreUnavailable(Unavailable):
    """The configured store did not answer within the start's patience (exit 69: retry later)."""


class AdminBindError(OSError):
    def __init__(self, host: str, port: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.host, self.port, self.cause = host, port, cause


async def open_store(config: Config, *, migrate: bool) -> Runtime:
    """The store runtime for ``config``, or the reason start cannot go on."""
    from mcpgate.store import StoreError, describe
    from mcpgate.store.runtime import Runtime, StoreConflict

    assert config.store is not None
    try:
        return await Runtime.open(config, migrate=migrate)
    except (StoreConflict, ValueError) as exc:  # ValueError: MCPGATE_STORE_STARTUP_TIMEOUT
        raise StartupError(str(exc)) from None
    except StoreError as exc:
        if exc.retry:
            raise StoreUnavailable(f"store {describe(config.store)} unreachable: {exc}") from None
        raise StartupError(f"store {describe(config.store)}: {exc}") from None


def run(config: Config, loader: Loader | None = None, *, migrate: bool = True) -> int:
    """Blocking entry point for ``mcpgate start``; returns the process exit code. ``loader``
    reads the configuration again on SIGHUP; ``migrate`` False only checks the store's schema."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - platforms without uvloop run on asyncio's loop
        pass
    server = Server(config, loader, migrate=migrate)

    async def main() -> int:
        server.install_signal_handlers()
        return await server.serve()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


__all__ = [
    "GATEWAY", "AdminBindError", "Server", "StartupError", "StoreUnavailable", "Unavailable",
    "build_app", "make_runner", "run",
]  # fmt: skip
