"""A one-shot health and capability probe of an upstream, for ``mcpgate list-servers --probe``.

Unlike the gateway's heartbeat (one cheap request, repeated), the probe speaks MCP the way a
dual-era client does: ``server/discover`` first, ``initialize`` when the server only knows the
legacy era, then the tool, resource and prompt lists. It answers "can the gateway actually use
this server, and what would it expose?" before anything is started.

It never raises for network or protocol trouble: every failure becomes ``healthy=False`` with a
short reason that names the step and never a credential (no URL, no headers).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import aiohttp

from mcpgate import __version__
from mcpgate.errors import GatewayError
from mcpgate.sse import SSEError, SSEParser

if TYPE_CHECKING:  # only for annotations: `health` imports this module and must start fast
    from mcpgate.config.model import UpstreamConfig
    from mcpgate.upstream.channel import Channel

__all__ = ["LEGACY_VERSION", "MODERN_VERSION", "ProbeResult", "probe_upstream"]

MODERN_VERSION: Final = "2026-07-28"
LEGACY_VERSION: Final = "2025-11-25"
MAX_PAGES: Final = 50
POST_ACCEPT: Final = "application/json, text/event-stream"
# What each count is made of, and the capability that says the server has it at all.
LISTS: Final = (("tools", "tools/list"), ("resources", "resources/list"), ("prompts", "prompts/list"))

Era = Literal["modern", "legacy"]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one probe found; counts are ``None`` when the server does not offer that list."""

    name: str
    healthy: bool
    protocol_version: str | None = None
    era: Era | None = None
    tools: int | None = None
    resources: int | None = None
    prompts: int | None = None
    latency_ms: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ProbeError(Exception):
    """A failed step; the message is shown to the operator as is, so it carries no secrets."""


@dataclass(slots=True)
class _Findings:
    """Filled in step by step, so a probe that fails half-way still reports what it learned."""

    protocol_version: str | None = None
    era: Era | None = None
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    latency_ms: float | None = None

    def result(self, name: str, error: str | None) -> ProbeResult:
        return ProbeResult(
            name=name,
            healthy=error is None,
            protocol_version=self.protocol_version,
            era=self.era,
            tools=self.counts.get("tools"),
            resources=self.counts.get("resources"),
            prompts=self.counts.get("prompts"),
            latency_ms=None if self.latency_ms is None else round(self.latency_ms, 1),
            error=error,
        )


async def probe_upstream(
    cfg: UpstreamConfig,
    *,
    timeout: float = 5.0,  # noqa: ASYNC109 - the one knob an operator sets for the whole probe
    session: aiohttp.ClientSession | None = None,
) -> ProbeResult:
    """Probe one upstream within ``timeout`` seconds in total; never raises for network trouble."""
    if cfg.transport != "streamable-http":
        return await _probe_channel(cfg, timeout)
    assert cfg.url is not None
    findings = _Findings()
    own_session = session is None
    client = session if session is not None else aiohttp.ClientSession()
    try:
        async with asyncio.timeout(timeout):
            await _probe_http(_Rpc(client, cfg), findings)
    except TimeoutError:
        return findings.result(cfg.name, f"timed out after {timeout:g}s")
    except ProbeError as exc:
        return findings.result(cfg.name, str(exc))
    except aiohttp.ClientError as exc:
        return findings.result(cfg.name, describe_client_error(exc))
    except ValueError:
        # aiohttp refuses some requests before sending them (credentials both in the URL and in
        # an Authorization header, a header value with a newline); its text may quote them.
        return findings.result(cfg.name, "request refused by the HTTP client: check the url, auth and headers")
    finally:
        if own_session:
            await client.close()
    return findings.result(cfg.name, None)


async def _probe_channel(cfg: UpstreamConfig, seconds: float) -> ProbeResult:
    """Start the command (stdio) or open the stream (sse) as the gateway would, ask what it
    offers, and stop again."""
    from mcpgate.upstream.sse import SseUpstream
    from mcpgate.upstream.stdio import StdioProcess

    findings = _Findings()
    process: Channel
    if cfg.transport == "stdio":
        process = StdioProcess(cfg, kill_grace=1.0, restart=False)
    else:
        process = SseUpstream(cfg, restart=False)
    started = time.monotonic()
    await process.start()
    try:
        async with asyncio.timeout(seconds):
            try:
                await process.wait_ready(seconds)
            except GatewayError:
                raise ProbeError(process.last_error or "did not start") from None
            findings.latency_ms = (time.monotonic() - started) * 1000
            handshake = process.initialize_result or {}
            version = handshake.get("protocolVersion")
            findings.era, findings.protocol_version = "legacy", version if isinstance(version, str) else None
            await _count_lists(_StdioRpc(process), handshake, findings)
    except TimeoutError:
        return findings.result(cfg.name, process.last_error or f"timed out after {seconds:g}s")
    except ProbeError as exc:
        return findings.result(cfg.name, str(exc))
    finally:
        await process.close()
    return findings.result(cfg.name, None)


class _StdioRpc:
    """Requests to a stdio child or an sse upstream, for the probe's list counting."""

    def __init__(self, process: Channel) -> None:
        self.process = process

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = await self.process.request({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        except GatewayError as exc:
            raise ProbeError(f"{method}: {exc.message}") from None
        result = answer.get("result")
        if not isinstance(result, dict):
            raise ProbeError(f"{method}: {describe_rpc_error(answer.get('error'))}")
        return result


async def _probe_http(rpc: _Rpc, findings: _Findings) -> None:
    started = time.monotonic()
    status, discovered = await rpc.discover()
    if discovered is not None:
        findings.latency_ms = (time.monotonic() - started) * 1000
        findings.era, findings.protocol_version = "modern", MODERN_VERSION
        await _count_lists(rpc, discovered, findings)
        return
    started = time.monotonic()
    try:
        initialized = await rpc.initialize()
    except ProbeError as exc:
        raise ProbeError(f"{exc} (server/discover: {status})") from None
    findings.latency_ms = (time.monotonic() - started) * 1000
    findings.era, findings.protocol_version = "legacy", rpc.protocol_version
    try:
        await rpc.notify("notifications/initialized")
        await _count_lists(rpc, initialized, findings)
    finally:
        await rpc.end_session()


async def _count_lists(rpc: _Rpc | _StdioRpc, handshake: Mapping[str, Any], findings: _Findings) -> None:
    capabilities = handshake.get("capabilities")
    if not isinstance(capabilities, Mapping):
        capabilities = {}
    for key, method in LISTS:
        if key in capabilities:
            findings.counts[key] = await _count(rpc, method, key)


async def _count(rpc: _Rpc | _StdioRpc, method: str, key: str) -> int:
    """Items across all pages; stops after ``MAX_PAGES`` so a looping cursor cannot hang a probe."""
    total, cursor = 0, None
    for _ in range(MAX_PAGES):
        result = await rpc.request(method, {} if cursor is None else {"cursor": cursor})
        items = result.get(key)
        if not isinstance(items, list):
            raise ProbeError(f"{method}: result has no {key!r} list")
        total += len(items)
        cursor = result.get("nextCursor")
        if not isinstance(cursor, str) or not cursor:
            break
    return total


class _Rpc:
    """JSON-RPC over Streamable HTTP for one probe, in whichever era the handshake settled."""

    def __init__(self, session: aiohttp.ClientSession, cfg: UpstreamConfig) -> None:
        assert cfg.url is not None
        self.session = session
        self.url = cfg.url
        base = {"User-Agent": f"mcpgate-probe/{__version__}", **dict(cfg.headers)}
        if cfg.auth is not None:
            base[cfg.auth.header] = cfg.auth.value
        self.base_headers = base
        self.era: Era = "modern"
        self.protocol_version = MODERN_VERSION
        self.session_id: str | None = None
        self._next_id = 0

    def headers(self, method: str) -> dict[str, str]:
        headers = {**self.base_headers, "Accept": POST_ACCEPT, "Content-Type": "application/json"}
        if self.era == "modern":
            headers["Mcp-Method"] = method
        if self.era == "modern" or method != "initialize":  # legacy: the header follows the handshake
            headers["MCP-Protocol-Version"] = self.protocol_version
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        return headers

    def params(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.era == "modern":
            return {
                **params,
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
                    "io.modelcontextprotocol/clientCapabilities": {},
                },
            }
        return params

    async def discover(self) -> tuple[str, dict[str, Any] | None]:
        """The modern handshake: its result, or ``None`` and why the server is not modern."""
        status, result = await self._post("server/discover", {}, expect_error=True)
        return status, result

    async def initialize(self) -> dict[str, Any]:
        self.era, self.protocol_version = "legacy", LEGACY_VERSION
        params = {
            "protocolVersion": LEGACY_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "mcpgate-probe", "version": __version__},
        }
        _, result = await self._post("initialize", params, keep_session=True)
        assert result is not None
        version = result.get("protocolVersion")
        if isinstance(version, str) and version:
            self.protocol_version = version
        return result

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        _, result = await self._post(method, params)
        assert result is not None
        return result

    async def notify(self, method: str) -> None:
        body = {"jsonrpc": "2.0", "method": method}
        async with self.session.post(self.url, json=body, headers=self.headers(method), allow_redirects=False) as resp:
            await resp.read()
            if resp.status >= 300:
                raise ProbeError(f"{method}: {http_status(resp)}")

    async def end_session(self) -> None:
        """Best effort: a server that keeps the session until it expires is no probe failure."""
        if self.session_id is None:
            return
        try:
            async with self.session.delete(
                self.url,
                headers=self.headers("DELETE"),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=2),
            ) as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            pass

    async def _post(
        self, method: str, params: dict[str, Any], *, expect_error: bool = False, keep_session: bool = False
    ) -> tuple[str, dict[str, Any] | None]:
        """POST one request; with ``expect_error`` a non-answer is returned, not raised."""
        self._next_id += 1
        request_id = self._next_id
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": self.params(params)}
        async with self.session.post(self.url, json=body, headers=self.headers(method), allow_redirects=False) as resp:
            if resp.status != 200:
                await resp.read()
                if expect_error:
                    return http_status(resp), None
                raise ProbeError(f"{method}: {http_status(resp)}")
            if keep_session:
                self.session_id = resp.headers.get("Mcp-Session-Id")
            message = await read_response(resp, request_id, method)
        error = message.get("error")
        result = message.get("result")
        if error is not None or not isinstance(result, dict):
            reason = describe_rpc_error(error) if error is not None else "response has no result"
            if expect_error:
                return reason, None
            raise ProbeError(f"{method}: {reason}")
        return "200", result


async def read_response(resp: aiohttp.ClientResponse, request_id: int, method: str) -> dict[str, Any]:
    """The JSON-RPC response to ``request_id``, from a JSON body or from an SSE stream.

    An SSE stream may carry notifications (progress, logs) and even server requests before the
    answer; those are skipped.
    """
    content_type = resp.content_type
    if content_type == "application/json":
        message = _loads(await resp.read(), method)
        if isinstance(message, dict) and message.get("id") == request_id:
            return message
        raise ProbeError(f"{method}: response does not answer the request")
    if content_type == "text/event-stream":
        parser = SSEParser()
        try:
            async for chunk in resp.content.iter_any():
                for event in parser.feed(chunk):
                    message = _loads(event.data.encode(), method) if event.data else None
                    if isinstance(message, dict) and message.get("id") == request_id and "method" not in message:
                        return message
        except SSEError:
            raise ProbeError(f"{method}: oversized SSE event") from None
        raise ProbeError(f"{method}: stream ended before the response")
    raise ProbeError(f"{method}: unexpected content type {content_type or 'none'!r}")


def _loads(raw: bytes, method: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise ProbeError(f"{method}: bad JSON in response") from None


def http_status(resp: aiohttp.ClientResponse) -> str:
    return f"HTTP {resp.status} {resp.reason}" if resp.reason else f"HTTP {resp.status}"


def describe_rpc_error(error: Any) -> str:
    if isinstance(error, Mapping):
        code, message = error.get("code"), str(error.get("message", ""))[:200]
        return f"error {code}: {message}" if message else f"error {code}"
    return "malformed error"


def describe_client_error(exc: aiohttp.ClientError) -> str:
    """A short reason from the exception's type and errno, never its text (which can hold the URL)."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "cannot resolve host"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _describe_os_error(exc.os_error)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection"
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "incomplete response body"
    if isinstance(exc, aiohttp.InvalidURL):
        return "invalid URL"
    if isinstance(exc, aiohttp.ClientOSError):
        return _describe_os_error(exc)
    return type(exc).__name__


def _describe_os_error(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return "connection refused"
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno).lower()  # "no route to host", "network is unreachable"
    return f"connection failed ({type(exc).__name__})"
