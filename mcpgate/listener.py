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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict, CIMultiDictProxy

from mcpgate import jsonrpc
from mcpgate.config.model import ServerConfig
from mcpgate.errors import GatewayError

log = logging.getLogger("mcpgate.listener")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

SERVER_NAME: Final = "mcpgate"


@dataclass(slots=True)
class ListenerStats:
    """Connection-level rejections, by kind; plain counters, read by readiness and metrics."""

    header_timeouts: int = 0
    bad_requests: int = 0


def render_error(error: GatewayError, request_id: jsonrpc.RequestId | None = None) -> web.Response:
    """The one place a ``GatewayError`` becomes an HTTP response, for the pipeline and the listener."""
    return web.Response(
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
    """One client connection: aiohttp's request handler plus a header deadline and JSON errors."""

    # Set by GatewayServer right after construction (RequestHandler's own kwargs are fixed).
    header_timeout: float = 10.0
    stats: ListenerStats

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # The first request's clock starts at the connection: a silent client is a slow one too.
        self._between_requests = True
        self._header_deadline: asyncio.TimerHandle | None = self._loop.call_later(
            self.header_timeout, self._headers_timed_out
        )

    def data_received(self, data: bytes) -> None:
        if self._between_requests and self._header_deadline is None and data:
            # The first byte of the next request on a kept-alive connection starts its clock.
            self._header_deadline = self._loop.call_later(self.header_timeout, self._headers_timed_out)
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def headers_received(self) -> None:
        """A whole request head was parsed (the request factory calls this)."""
        self._between_requests = False
        self._cancel_deadline()

    async def finish_response(self, request: Any, resp: web.StreamResponse, start_time: float | None) -> Any:
        if isinstance(resp, web.HTTPException):
            # The router's 404 and 405 (no route, wrong method, a trailing slash): the same JSON
            # errors as everything else. One type check per request, no catch-all route to resolve.
            resp = http_exception_as_json(resp, request.method)
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._between_requests = True

    def _cancel_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_timed_out(self) -> None:
        self._header_deadline = None
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
    """aiohttp's protocol factory, making :class:`GatewayProtocol` connections."""

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
