"""Legacy HTTP+SSE upstreams (protocol 2024-11-05): GET an event stream, POST messages to the
endpoint it names, read the answers on the stream (DESIGN section 6).

``SseUpstream`` is the ``Channel`` (sharing, id rewriting, reconnects: see ``channel``) over one
such connection. The ``endpoint`` event may be relative or absolute but must stay on the stream's
own origin: a server cannot send the gateway's messages, and its credential, somewhere else.
When the stream drops, calls in flight fail at once and the connection is opened again after
the back-off; each new connection is a new session, initialized again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from yarl import URL

from mcpgate import __version__, jsonrpc
from mcpgate.errors import GatewayError
from mcpgate.sse import SSEError, SSEParser
from mcpgate.upstream.channel import Channel

if TYPE_CHECKING:
    from mcpgate.config.model import UpstreamConfig

log = logging.getLogger("mcpgate.upstream")

MAX_EVENT: Final = 1024 * 1024


class SseUpstream(Channel):
    kind = "sse"

    def __init__(self, config: UpstreamConfig, **options: Any) -> None:
        if config.url is None:  # pragma: no cover - guaranteed by the config schema
            raise ValueError(f"upstream {config.name!r} has no url")
        super().__init__(config, **options)
        url = URL(config.url)
        self.url = url.with_user(None) if url.user is not None else url
        headers = {"User-Agent": f"mcpgate/{__version__}", "Accept-Encoding": "identity", **dict(config.headers)}
        if config.auth is not None:
            headers[config.auth.header] = config.auth.value
        elif url.user is not None:
            headers["Authorization"] = aiohttp.encode_basic_auth(url.user, url.password or "")
        self._headers = headers
        self.endpoint: URL | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stream: aiohttp.ClientResponse | None = None

    def details(self) -> dict[str, Any]:
        return {"endpoint": None if self.endpoint is None else self.endpoint.path}

    async def close(self) -> None:
        await super().close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run_once(self) -> str:
        if self._session is None:
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        self.endpoint = None
        try:
            resp = await self._session.get(
                self.url,
                headers={**self._headers, "Accept": "text/event-stream"},
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.config.connect_timeout),
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.last_error = f"cannot open the event stream: {type(exc).__name__}"
            return self.last_error
        if resp.status != 200 or resp.content_type != "text/event-stream":
            resp.release()
            self.last_error = f"the event stream answered HTTP {resp.status} ({resp.content_type[:64]})"
            return self.last_error
        self._stream = resp
        endpoint = asyncio.Event()
        reader = asyncio.create_task(self._read(resp, endpoint))
        try:
            named = asyncio.create_task(endpoint.wait())
            try:
                await asyncio.wait({reader, named}, timeout=self.config.connect_timeout, return_when="FIRST_COMPLETED")
            finally:
                named.cancel()
            if not endpoint.is_set():
                self.last_error = self.last_error or "the event stream named no endpoint"
                return self.last_error
            await self._initialize()
            self.state = "running"
            self.last_error = None
            self._ready.set()
            await reader
            self.last_error = self.last_error or "the event stream ended"
        except GatewayError as exc:
            self.last_error = f"initialize failed: {exc.message}"
        finally:
            self._ready.clear()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            resp.close()
            self._stream = None
            self._fail_calls(self._unavailable(f"lost its event stream ({self.last_error})"))
        return self.last_error or "ended"

    async def _read(self, resp: aiohttp.ClientResponse, endpoint: asyncio.Event) -> None:
        parser = SSEParser(max_event_size=MAX_EVENT)
        try:
            async for chunk in resp.content.iter_any():
                for event in parser.feed(chunk):
                    if event.event == "endpoint":
                        self._take_endpoint(event.data)
                        if self.endpoint is not None:
                            endpoint.set()
                    elif event.data:
                        try:
                            self._message(jsonrpc.loads(event.data))
                        except ValueError:
                            self._skip("sent an event that is not JSON")
        except SSEError as exc:
            self.last_error = f"sent an unusable event stream: {exc}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.last_error = f"the event stream broke: {type(exc).__name__}"

    def _take_endpoint(self, data: str) -> None:
        try:
            target = self.url.join(URL(data.strip()))
        except ValueError:
            target = None
        if target is None or (target.scheme, target.host, target.port) != (
            self.url.scheme,
            self.url.host,
            self.url.port,
        ):
            self.last_error = "the endpoint event names another origin (refused)"
            log.warning("upstream %s: %s", self.name, self.last_error)
            return
        self.endpoint = target

    async def _send(self, message: dict[str, Any]) -> None:
        endpoint, session = self.endpoint, self._session
        if endpoint is None or session is None or self._stream is None:
            raise self._unavailable("is not connected")
        headers = {**self._headers, "Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        try:
            async with asyncio.timeout(self.config.timeout):
                async with session.post(
                    endpoint, data=jsonrpc.dumps(message), headers=headers, allow_redirects=False
                ) as r:
                    if r.status >= 300:
                        raise GatewayError(
                            "upstream_bad_response",
                            f"Upstream {self.name!r} answered HTTP {r.status} to a message",
                            data={"upstream": self.name, "status": r.status},
                        )
        except TimeoutError:
            raise GatewayError("upstream_timeout", f"Upstream {self.name!r} did not take a message in time") from None
        except aiohttp.ClientError as exc:
            raise self._unavailable(f"did not take a message: {type(exc).__name__}") from None

    async def _shutdown(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()
