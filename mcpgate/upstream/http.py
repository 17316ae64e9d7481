"""Streamable HTTP upstreams: one pooled client per upstream, header hygiene, health probing.

Everything per-request here is precomputed at start: the base headers (canonical Accept, the
upstream's own credential, static headers), the timeouts, the pooled ``ClientSession``. The
request path only copies the allowlisted client headers on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Literal

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from mcpgate import __version__, jsonrpc
from mcpgate.config.model import UpstreamConfig
from mcpgate.errors import GatewayError
from mcpgate.observability.tracing import HEADER as REQUEST_ID_HEADER
from mcpgate.observability.tracing import REQUEST_ID
from mcpgate.sse import SSEParser
from mcpgate.upstream.pool import ConnectionPool, InvalidAnswer, PooledResponse, PoolError, describe

log = logging.getLogger("mcpgate.upstream")

# Client headers that may travel upstream (DESIGN section 4). Everything else stays at the
# boundary: above all the client's own credential (Authorization, X-API-Key, Cookie), which
# must never be passed through (the MCP spec forbids token passthrough).
FORWARDED_HEADERS: Final = frozenset(
    {"content-type", "mcp-protocol-version", "mcp-method", "mcp-name", "last-event-id", "traceparent", "tracestate"}
)
PARAM_HEADER_PREFIX: Final = "mcp-param-"
MAX_REMEMBERED_NAMES: Final = 512
SESSION_HEADER: Final = "Mcp-Session-Id"

POST_ACCEPT: Final = "application/json, text/event-stream"
STREAM_ACCEPT: Final = "text/event-stream"
LARGE_BODY: Final = 1024 * 1024

Health = Literal["unknown", "healthy", "unhealthy"]
# An upstream's answer: aiohttp's, or the lean pool's, which reads the same way.
UpstreamResponse = aiohttp.ClientResponse | PooledResponse


def upstream_client() -> str:
    """``MCPGATE_UPSTREAM_CLIENT=aiohttp`` sends every request through aiohttp's client: the
    lean pool's escape hatch, and how the test suite runs against both."""
    return os.environ.get("MCPGATE_UPSTREAM_CLIENT", "pool")


class UpstreamState:
    """What the heartbeat knows; read by /readyz, metrics and list-servers."""

    __slots__ = (
        "capabilities",
        "checked_at",
        "failures",
        "health",
        "last_error",
        "latency_ms",
        "protocol",
        "refuses_initialize",
        "versions",
    )

    def __init__(self) -> None:
        self.health: Health = "unknown"
        self.failures = 0
        self.last_error: str | None = None
        self.latency_ms: float | None = None
        self.checked_at: float | None = None
        self.protocol: str | None = None
        # From the upstream's server/discover answer; None while unknown (or legacy-only).
        self.capabilities: dict[str, Any] | None = None
        self.versions: tuple[str, ...] | None = None  # its supportedVersions, from the same answer
        # A 2026-07-28 server that refused a legacy initialize: legacy clients reach it statelessly.
        self.refuses_initialize = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.health,
            "consecutive_failures": self.failures,
            "last_error": self.last_error,
            "latency_ms": self.latency_ms,
            "checked_at": self.checked_at,
            "protocol": self.protocol,
        }


class HttpUpstream:
    """One Streamable HTTP upstream. ``start`` opens the pool; ``close`` releases it."""

    def __init__(self, config: UpstreamConfig, *, bridge_socket: str | None = None) -> None:
        """``bridge_socket``: the upstream is a stdio child that ``upstream.bridge`` serves on this Unix socket."""
        if config.url is None and bridge_socket is None:  # pragma: no cover - guaranteed by the config schema
            raise ValueError(f"upstream {config.name!r} has no url")
        self.config = config
        self.name = config.name
        self.bridge_socket = bridge_socket
        # Awaited before the first heartbeat: a stdio child still starting is not "unhealthy".
        self.first_probe_after: Callable[[], Awaitable[None]] | None = None
        url = URL("http://mcpgate-bridge/mcp" if bridge_socket is not None or config.url is None else config.url)
        # Credentials in the URL become a Basic header (unless `auth` says otherwise): aiohttp
        # refuses a URL with userinfo next to an Authorization header, and URLs end up in logs.
        self.url = url.with_user(None) if url.user is not None else url
        self.target = self.url.raw_path_qs or "/"  # the request line's, for the pool
        self.state = UpstreamState()
        self._session: aiohttp.ClientSession | None = None
        self._pool: ConnectionPool | None = None  # the hot path's client (``pool``), for POSTs
        self._heartbeat: asyncio.Task[None] | None = None
        base = CIMultiDict[str]({"Accept-Encoding": "identity", "User-Agent": f"mcpgate/{__version__}"})
        for key, value in config.headers:
            base[key] = value
        if config.auth is not None:
            base[config.auth.header] = config.auth.value
        elif url.user is not None:
            base["Authorization"] = aiohttp.encode_basic_auth(url.user, url.password or "")
        self._forwarded = FORWARDED_HEADERS | config.forward_headers
        self._relayed: dict[str, bool] = {}  # by the client's spelling of a header name: _learn
        self.exposes_all = config.tools.is_open  # no ``tools`` filter: no call needs checking
        self._base_headers = base
        # POST: the whole answer (headers, and then each SSE gap) must come within `timeout`.
        self.call_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.connect_timeout, sock_read=config.timeout
        )
        # GET streams idle for as long as the server has nothing to say.
        self.stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(f"upstream {self.name!r} is not started")
        return self._session

    @property
    def bridged(self) -> bool:
        return self.bridge_socket is not None

    async def start(self) -> None:
        connector: aiohttp.BaseConnector
        if self.bridge_socket is not None:
            connector = aiohttp.UnixConnector(self.bridge_socket, limit=0, keepalive_timeout=30)
        else:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=60)
        # No cookie jar: the pool is shared by every client, so an upstream's Set-Cookie for one
        # caller must never ride along on another's request (and jar bookkeeping costs per call).
        self._session = aiohttp.ClientSession(
            connector=connector, skip_auto_headers=("User-Agent",), cookie_jar=aiohttp.DummyCookieJar()
        )
        if upstream_client() != "aiohttp":
            self._pool = self._make_pool()
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name=f"heartbeat:{self.name}")

    def _make_pool(self) -> ConnectionPool | None:
        url = self.url  # a stdio child's bridge: http://mcpgate-bridge/mcp, over its Unix socket
        if url.scheme not in ("http", "https") or url.host is None or url.port is None:
            return None  # aiohttp's client serves what the pool does not know
        return ConnectionPool(
            host=url.host,
            port=url.port,
            host_header=(url.raw_host if url.is_default_port() else f"{url.raw_host}:{url.port}") or "",
            ssl_context=ssl.create_default_context() if url.scheme == "https" else None,
            unix_path=self.bridge_socket,
            connect_timeout=self.config.connect_timeout,
            read_timeout=self.config.timeout,
        )

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        if self._pool is not None:
            await self._pool.close()
        if self._session is not None:
            await self._session.close()

    def headers_for(
        self, client_headers: CIMultiDictProxy[str] | Mapping[str, str], *, accept: str, session_id: str | None
    ) -> CIMultiDict[str]:
        """Allowlisted client headers (the MCP ones, and ``forward_headers``) plus the upstream's own."""
        headers = self._base_headers.copy()
        relayed = self._relayed
        for key, value in client_headers.items():
            relay = relayed.get(key)
            if relay is None:
                relay = self._learn(key)
            if relay:
                if not value.isascii():
                    # MCP sends values that are not header-safe as =?base64?...?=; raw bytes
                    # beyond ASCII cannot be relayed faithfully, so they are refused, not mangled.
                    raise GatewayError(
                        "invalid_request", f"Header {key[:64]} must be ASCII (use the =?base64?...?= form)"
                    )
                headers[key] = value
        headers["Accept"] = accept
        if session_id is not None:
            headers[SESSION_HEADER] = session_id
        request_id = REQUEST_ID.get()
        if request_id is not None:
            headers[REQUEST_ID_HEADER] = request_id
        return headers

    def _learn(self, name: str) -> bool:
        """Whether a client header of this name goes upstream: allowlisted, and not one the
        operator sets (their value wins). Clients spell the same few names every time, so the
        answer is kept by spelling, for at most a few hundred of them."""
        lower = name.lower()
        relay = (lower in self._forwarded or lower.startswith(PARAM_HEADER_PREFIX)) and name not in self._base_headers
        if len(self._relayed) < MAX_REMEMBERED_NAMES:
            self._relayed[name] = relay
        return relay

    async def send(
        self, method: str, headers: CIMultiDict[str], body: bytes | None = None, *, stream: bool = False
    ) -> UpstreamResponse:
        """Send one request; network failures become gateway errors (502/504) here, once.

        Both go through the lean pool (a GET stream on a connection of its own, lighter to hold
        open by the thousand than aiohttp's client); everything goes through aiohttp's client when
        ``MCPGATE_UPSTREAM_CLIENT=aiohttp``, and what the pool does not speak.
        """
        if self._pool is not None:
            return await self._send_pooled(self._pool, method, headers, body, stream=stream)
        data: bytes | io.BytesIO | None = body
        if body is not None and len(body) > LARGE_BODY:
            data = io.BytesIO(body)  # aiohttp sends large bytes in one write, and warns about it
        try:
            if not stream:
                return await self.session.request(
                    method, self.url, data=data, headers=headers, timeout=self.call_timeout, allow_redirects=False
                )
            # A stream may idle forever once open, but its headers must come as promptly as any answer.
            async with asyncio.timeout(self.config.timeout):
                return await self.session.request(
                    method, self.url, data=data, headers=headers, timeout=self.stream_timeout, allow_redirects=False
                )
        except (aiohttp.ServerTimeoutError, TimeoutError):
            raise self.error("upstream_timeout", f"did not answer within {self.config.timeout:g}s") from None
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise self.error("upstream_unreachable", f"is unreachable: {describe_network_error(exc)}") from None
        except aiohttp.ClientError as exc:
            raise self.error("upstream_bad_response", f"sent an invalid response: {type(exc).__name__}") from None

    async def _send_pooled(
        self, pool: ConnectionPool, method: str, headers: CIMultiDict[str], body: bytes | None, *, stream: bool = False
    ) -> UpstreamResponse:
        try:
            if stream:
                return await pool.stream(method, self.target, headers, body)
            return await pool.request(method, self.target, headers, body)
        except TimeoutError:
            raise self.error("upstream_timeout", f"did not answer within {self.config.timeout:g}s") from None
        except InvalidAnswer as exc:
            raise self.error("upstream_bad_response", f"sent an invalid response: {exc}") from None
        except (PoolError, OSError) as exc:
            where = f"{pool.host}:{pool.port}" if pool.unix_path is None else "its socket"
            raise self.error("upstream_unreachable", f"is unreachable: {where}: {describe(exc)}") from None

    def check_exposed(self, tool: str) -> None:
        """Refuse a call of a tool this upstream's ``tools`` filter hides (403)."""
        tools = self.config.tools
        if not tools.is_open and not tools.permits(tool):
            raise GatewayError(
                "forbidden",
                f"Tool {tool[:64]!r} is not exposed by server {self.name!r}",
                data={"upstream": self.name, "tool": tool[:64]},
            )

    def error(self, reason: str, what: str, **data: Any) -> GatewayError:
        """A failure of this upstream, worded and tagged the same way everywhere."""
        return GatewayError(reason, f"Upstream {self.name!r} {what}", data={"upstream": self.name, **data})

    # -- health -------------------------------------------------------------------------------

    async def probe(self) -> None:
        """One heartbeat: a stateless ``server/discover``; any sane HTTP answer means alive.

        A legacy-only server rejects the modern request with a 4xx, which still proves that it
        is up and speaking HTTP; 5xx, auth failures and network errors count as failures.
        """
        hb = self.config.heartbeat
        body = jsonrpc.dumps(
            {
                "jsonrpc": "2.0",
                "id": "mcpgate-heartbeat",
                "method": "server/discover",
                "params": {
                    "_meta": {
                        jsonrpc.META_PROTOCOL_VERSION: "2026-07-28",
                        "io.modelcontextprotocol/clientCapabilities": {},
                    }
                },
            }
        )
        headers = self.headers_for(
            {"Content-Type": "application/json", "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "server/discover"},
            accept=POST_ACCEPT,
            session_id=None,
        )
        started = time.monotonic()
        error: str | None = None
        protocol: str | None = None
        try:
            async with asyncio.timeout(hb.timeout):
                async with self.session.post(self.url, data=body, headers=headers, allow_redirects=False) as resp:
                    answer = await resp.read()
                    if resp.status >= 500 or resp.status in (401, 403, 407):
                        error = f"HTTP {resp.status}"
                    else:
                        protocol = "2026-07-28" if resp.status == 200 else "legacy"
                        if resp.status == 200:
                            result = discovered(answer, resp.content_type)
                            self.state.capabilities = _dict_or_none(result.get("capabilities"))
                            versions = result.get("supportedVersions")
                            if isinstance(versions, list) and all(isinstance(v, str) for v in versions):
                                self.state.versions = tuple(versions)
        except TimeoutError:
            error = f"no answer within {hb.timeout:g}s"
        except aiohttp.ClientError as exc:
            error = describe_network_error(exc)
        self._record(error, protocol, (time.monotonic() - started) * 1000)

    def _record(self, error: str | None, protocol: str | None, latency_ms: float) -> None:
        state = self.state
        state.checked_at = time.time()
        if error is None:
            if state.health != "healthy":
                log.info("upstream %s is healthy", self.name)
            state.health, state.failures, state.last_error = "healthy", 0, None
            state.latency_ms, state.protocol = round(latency_ms, 2), protocol
            return
        state.failures += 1
        state.last_error = error
        threshold = self.config.heartbeat.failures
        if state.failures >= threshold or state.health == "unknown":
            if state.health != "unhealthy":
                log.warning("upstream %s is unhealthy: %s", self.name, error)
            state.health = "unhealthy"

    async def _heartbeat_loop(self) -> None:
        if self.first_probe_after is not None:
            with contextlib.suppress(GatewayError):
                await self.first_probe_after()
        while True:
            try:
                await self.probe()
            except Exception:  # a bug in probing must not kill the heartbeat
                log.exception("heartbeat of upstream %s failed", self.name)
            await asyncio.sleep(self.config.heartbeat.interval)


def discovered(body: bytes, content_type: str) -> dict[str, Any]:
    """The result of a ``server/discover`` answer (JSON, or SSE whose data is the answer); {} if none."""
    if content_type == "text/event-stream":
        events = SSEParser().feed(body + b"\n\n")
        body = events[-1].data.encode() if events else b""
    try:
        message = jsonrpc.loads(body)
    except ValueError:
        return {}
    result = message.get("result") if isinstance(message, dict) else None
    return result if isinstance(result, dict) else {}


def _dict_or_none(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def describe_network_error(exc: BaseException) -> str:
    """A short, secret-free description: never the URL's userinfo or the request headers."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, ConnectionRefusedError):
            reason = "connection refused"
        else:
            reason = (os_error.strerror or type(os_error).__name__).lower()
        return f"cannot connect to {exc.host}:{exc.port}: {reason}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection"
    return type(exc).__name__
