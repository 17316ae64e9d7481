"""The client-facing HTTP/1.1 listener: aiohttp's, with the edges a gateway exposed to anyone sanded off.

aiohttp answers what it cannot parse (a header over the limit, a control character in a
header, garbage instead of a request line) itself, before any handler runs: as ``text/plain``
pages that may quote the offending input, logged at ERROR with a traceback. It also has no bound
on how long a client may take to send its headers. A gateway on an open port sees all of that
from scanners and broken clients every day, so:

- every such rejection is a JSON-RPC error object with a ``reason`` (the same renderer as the
  pipeline's), never quoting the input, logged as one line at debug level;
- a request's headers must arrive within ``server.header_timeout`` of its first byte (or of the
  connection, for the first request); a slower connection is answered 408 and closed;
- ``server.keepalive_timeout`` bounds idle keep-alive connections; ``max_header_bytes`` and
  ``max_headers`` bound what one request's headers may hold.

What is counted (``ListenerStats``) is read by readiness and, later, by metrics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.compression_utils import MAX_SYNC_CHUNK_SIZE
from aiohttp.helpers import rfc822_formatted_time as http_date
from aiohttp.http import SERVER_SOFTWARE, HttpVersion10
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict, CIMultiDictProxy

from mcpgate import jsonrpc
from mcpgate.config.model import ServerConfig
from mcpgate.errors import GatewayError

log = logging.getLogger("mcpgate.listener")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

SERVER_NAME: Final = "mcpgate"
# Headers every answer to an MCP request carries, streamed or not: X-Request-ID, and on a
# rate-limited route how much is left. The pipeline fills it; the response-prepare hook adds it.
ANSWER_HEADERS: Final = web.RequestKey("answer_headers", dict)


@dataclass(slots=True)
class ListenerStats:
    """Connection-level rejections, by kind; plain counters, read by readiness and metrics."""

    header_timeouts: int = 0
    bad_requests: int = 0


class WholeResponse(web.Response):
    """An answer complete in memory (nearly every MCP answer), written with one call: head and body.

    aiohttp's ``Response`` gets there through about ten nested coroutines (prepare, start, prepare
    headers, hooks, write headers, write eof, the writer's buffering), which with its ``__init__``
    (text, charset and payload handling) came to 4% of a forwarded call's instructions. The client
    receives the same bytes either way (``tests/test_whole_response.py`` compares them): the status
    line, the handler's headers, ``Content-Length``, ``Date``, ``Server`` and ``Connection`` as
    aiohttp sets them, then what the prepare hooks add (``X-Request-ID``, rate-limit headers).
    Anything else (HEAD, a status without a body, compression, cookies, chunking, a payload object)
    takes aiohttp's path. Made with bytes or nothing, never text.
    """

    _zlib_executor_size = MAX_SYNC_CHUNK_SIZE  # what Response.__init__ would set, should anyone compress
    _zlib_executor = None

    def __init__(
        self,
        *,
        status: int = 200,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        real = CIMultiDict(headers) if headers else CIMultiDict()
        if content_type is not None:
            real[hdrs.CONTENT_TYPE] = content_type
        web.StreamResponse.__init__(self, status=status, _real_headers=real)
        self._body = body

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        body = self._body
        status = self.status
        if (
            self._eof_sent
            or self._payload_writer is not None
            or not (body is None or type(body) is bytes)
            or self._compression
            or self._chunked
            or self._cookies
            or request.method == "HEAD"
            or status < 200
            or status in (204, 304)
        ):
            return await super().prepare(request)
        writer = request._payload_writer
        self._req, self._payload_writer = request, writer
        keep_alive = self._keep_alive
        if keep_alive is None:
            keep_alive = self._keep_alive = request.keep_alive
        headers = self._headers
        length = len(body) if body else 0
        headers[hdrs.CONTENT_LENGTH] = str(length)
        if length:
            headers.setdefault(hdrs.CONTENT_TYPE, "application/octet-stream")
        if hdrs.DATE not in headers:
            headers[hdrs.DATE] = http_date()
        headers.setdefault(hdrs.SERVER, SERVER_SOFTWARE)
        version = request.version
        if hdrs.CONNECTION not in headers:
            if version == HttpVersion10:
                if keep_alive:
                    headers[hdrs.CONNECTION] = "keep-alive"
            elif not keep_alive:
                headers[hdrs.CONNECTION] = "close"
        await request._prepare_hook(self)
        lines = [f"HTTP/{version.major}.{version.minor} {status} {self._reason}"]
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        head = "\r\n".join(lines)
        breaks = len(lines) - 1
        if head.count("\n") != breaks or head.count("\r") != breaks:
            raise ValueError("a line break in a response header")  # aiohttp refuses them too
        data = (head + "\r\n\r\n").encode("utf-8")
        if body:
            data += body
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        transport.write(data)
        writer.output_size += len(data)
        self._eof_sent, self._body_length = True, writer.output_size
        self._req = self._payload_writer = None
        if request.protocol.writing_paused:  # a client slow to read: wait as aiohttp's writer would
            await writer.drain()
        return None


def render_error(error: GatewayError, request_id: jsonrpc.RequestId | None = None) -> web.Response:
    """The one place a ``GatewayError`` becomes an HTTP response, for the pipeline and the listener."""
    return WholeResponse(
        status=error.status,
        body=jsonrpc.dumps(error.to_jsonrpc(request_id)),
        content_type="application/json",
        headers=error.headers or None,
    )


def parse_failure(exc: BaseException | None) -> GatewayError:
    """What an HTTP parse failure means for the client, in words that never quote its input."""
    if isinstance(exc, LineTooLong) or (isinstance(exc, BadHttpMessage) and "Too many headers" in exc.message):
        return GatewayError("headers_too_large", "Request line or header fields too large")
    return GatewayError("bad_http_request", f"Malformed HTTP request ({type(exc).__name__ if exc else 'unknown'})")


_HTTP_EXCEPTION_REASONS: Final = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def http_exception_as_json(exc: web.HTTPException, method: str) -> web.Response:
    reason = _HTTP_EXCEPTION_REASONS.get(exc.status, "bad_http_request" if exc.status < 500 else "internal_error")
    allow = exc.headers.get("Allow")
    resp = render_error(GatewayError(reason, headers={"Allow": allow} if allow else None))
    if method == "CONNECT":
        resp.force_close()  # aiohttp has switched the connection to tunnel mode: it cannot carry on
    return resp


class GatewayProtocol(RequestHandler):
    """One client connection: aiohttp's request handler plus a header deadline and JSON errors.

    The deadline is a timestamp that ``GatewayServer`` sweeps, not a timer per request: arming
    and cancelling a timer for every request on a kept-alive connection was 1.6% of a forwarded
    call's instructions.
    """

    # Set by GatewayServer right after construction (RequestHandler's own kwargs are fixed).
    header_timeout: float = 10.0
    stats: ListenerStats
    # Loop time the awaited request head began: its first byte, or the connection for the first
    # request (a silent client is a slow one too). None while a request is being handled.
    header_started: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._between_requests = True
        self.header_started = self._loop.time()

    def data_received(self, data: bytes) -> None:
        if self._between_requests and self.header_started is None and data:
            # The first byte of the next request on a kept-alive connection starts its clock.
            self.header_started = self._loop.time()
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.header_started = None
        super().connection_lost(exc)

    def headers_received(self) -> None:
        """A whole request head was parsed (the request factory calls this)."""
        self._between_requests = False
        self.header_started = None

    def finish_response(self, request: Any, resp: web.StreamResponse, start_time: float | None) -> Any:
        if isinstance(resp, web.HTTPException):
            # The router's 404 and 405 (no route, wrong method, a trailing slash): the same JSON
            # errors as everything else. One type check per request, no catch-all route to resolve.
            resp = http_exception_as_json(resp, request.method)
        # The handler is done: bytes arriving from now on are the next request's (a plain method
        # handing back aiohttp's coroutine, rather than one more coroutine around it).
        self._between_requests = True
        return super().finish_response(request, resp, start_time)

    def headers_overdue(self, now: float) -> bool:
        started = self.header_started
        return started is not None and now - started >= self.header_timeout

    def _headers_timed_out(self) -> None:
        self.header_started = None
        transport = self.transport
        if not self._between_requests or transport is None or transport.is_closing():
            return
        self.stats.header_timeouts += 1
        log.debug("closed a connection whose request headers took over %gs", self.header_timeout)
        # No request object exists to answer through: write the 408 by hand, then close.
        body = jsonrpc.dumps(GatewayError("request_timeout", "Request headers not received in time").to_jsonrpc(None))
        head = (
            "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\nServer: {SERVER_NAME}\r\n\r\n"
        )
        transport.write(head.encode("ascii") + body)
        self.force_close()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's last resort, for requests no handler could take: a JSON error, one log line."""
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; the connection is closed instead")
        if status == 500 and not isinstance(exc, HttpProcessingError):
            # A bug of ours escaped a handler: this one deserves its traceback.
            log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
            error = GatewayError("internal_error")
        elif status == 504:
            error = GatewayError("request_timeout")
        else:
            self.stats.bad_requests += 1
            error = parse_failure(exc)
            log.debug("rejected a malformed request from %s: %s", request.remote, error.message)
        resp = render_error(error)
        resp.headers["Server"] = SERVER_NAME
        resp.force_close()
        return resp


def without_expect(message: Any) -> Any:
    """The request head minus an ``Expect`` other than ``100-continue``, which RFC 9110 lets us ignore.

    aiohttp would answer it with a 417 whose text repeats the header, and fail with a 500 on a
    value that is not UTF-8; no MCP client sends one, so it is simply dropped.
    """
    headers = CIMultiDict(message.headers)
    del headers["Expect"]
    raw = tuple((name, value) for name, value in message.raw_headers if name.lower() != b"expect")
    return message._replace(headers=CIMultiDictProxy(headers), raw_headers=raw)


class GatewayRequest(web.Request):
    """A request that the MCP fast path (``server.fast_handler``) may serve without the router.

    Only a routed request reaches the application's ``on_response_prepare`` hooks, through its
    match info; an unrouted one runs ``prepare_hooks``, the same hooks, set per application.
    """

    prepare_hooks: ClassVar[Sequence[Callable[[web.Request, web.StreamResponse], Awaitable[None]]]] = ()

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        if self._match_info is not None:
            await super()._prepare_hook(response)
            return
        for hook in self.prepare_hooks:
            await hook(self, response)


class GatewayServer(web.Server):
    """aiohttp's protocol factory, making :class:`GatewayProtocol` connections, and the sweep
    that holds them to their header deadline: every quarter of ``header_timeout`` (at most every
    second) while any connection is open, so a deadline is enforced that much late at most."""

    def __init__(
        self,
        *args: Any,
        header_timeout: float,
        stats: ListenerStats,
        request_class: type[web.Request] = web.Request,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.stats = stats
        self._sweep_every = min(1.0, header_timeout / 4)
        self._sweeper: asyncio.TimerHandle | None = None
        make_request = self.request_factory

        def request_factory(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
            if isinstance(protocol, GatewayProtocol):
                protocol.headers_received()
            expect = message.headers.get("Expect")
            if expect is not None and expect.lower() != "100-continue":
                message = without_expect(message)
            return make_request(message, payload, protocol, writer, task, _cls=request_class)  # type: ignore[call-arg]

        self.request_factory = request_factory

    def __call__(self) -> RequestHandler:
        protocol = GatewayProtocol(self, loop=self._loop, **self._kwargs)
        protocol.header_timeout = self.header_timeout
        protocol.stats = self.stats
        return protocol

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self._sweep_every, self._sweep)

    def _sweep(self) -> None:
        now = self._loop.time()
        overdue = [c for c in self._connections if isinstance(c, GatewayProtocol) and c.headers_overdue(now)]
        for connection in overdue:
            connection._headers_timed_out()
        self._sweeper = self._loop.call_later(self._sweep_every, self._sweep) if self._connections else None

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - aiohttp's signature
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await super().shutdown(timeout)


class GatewayRunner(web.AppRunner):
    """An ``AppRunner`` whose connections are :class:`GatewayProtocol` with the listener limits;
    ``handler``, when given, takes every request first and passes what it does not serve on to
    the application (``server.fast_handler``)."""

    def __init__(
        self,
        app: web.Application,
        server: ServerConfig,
        stats: ListenerStats,
        handler: Callable[[Handler], Handler] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            app,
            keepalive_timeout=server.keepalive_timeout,
            max_line_size=server.max_header_bytes,
            max_field_size=server.max_header_bytes,
            max_headers=server.max_headers,
            **kwargs,
        )
        self._header_timeout = server.header_timeout
        self._stats = stats
        self._handler = handler

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        # aiohttp's own request factory and settings; the protocol, the request class and, with a
        # fast path, the handler differ.
        routed = plain.request_handler
        hooks = tuple(self.app.on_response_prepare)
        request_class = type("AppRequest", (GatewayRequest,), {"prepare_hooks": hooks})
        return GatewayServer(
            routed if self._handler is None else self._handler(routed),
            request_factory=plain.request_factory,
            request_class=request_class,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            header_timeout=self._header_timeout,
            stats=self._stats,
            **plain._kwargs,
        )
