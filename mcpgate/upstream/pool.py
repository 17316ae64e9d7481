"""The hot path's upstream client: HTTP/1.1 over a pool of keep-alive connections.

Forwarding an MCP POST is one request and one answer on a connection kept open for the next.
aiohttp's ``ClientSession`` does that and much more (redirects, cookies, proxies, tracing,
decompression chains), and measured side by side it was about half of the gateway's cost per
call. This client does only what forwarding needs: asyncio protocols, ``httptools`` (llhttp) to
parse answers, ``Content-Length``, chunked and read-until-close bodies, TLS, a connect timeout
and a per-read timeout, back-pressure on streamed answers, a bound on connections, and keep-alive
reuse only of a connection whose answer was complete and whose server allows it. A parked
connection that turns out stale (the server closed it meanwhile) is retried once, on a new
connection, and only when nothing at all came back on it.

Long-lived streams (a GET's SSE, ``subscriptions/listen``) come here too, through ``stream``: a
connection of their own, no slot, no read timeout once the head is in; held by the thousand,
they cost a fraction of what aiohttp's client objects did. aiohttp's client stays for everything
else (heartbeats, probes, JWKS): see ``HttpUpstream.send``. The answer object quacks like the
part of ``aiohttp.ClientResponse`` the relay reads, and its body errors are aiohttp's, so every
fault means the same either way.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import zlib
from typing import Final, cast

import aiohttp
import httptools
from multidict import CIMultiDict, CIMultiDictProxy

HIGH_WATER: Final = 256 * 1024  # buffered answer bytes past which reading from the upstream pauses
MAX_IDLE: Final = 64  # parked keep-alive connections per upstream
IDLE_TIMEOUT: Final = 30.0  # seconds a parked connection is kept (aiohttp's keepalive_timeout)
MAX_CONNECTIONS: Final = 1024  # open connections per upstream; callers beyond it wait their turn
MAX_HEAD: Final = 64 * 1024  # status line and headers of one answer


class PoolError(Exception):
    """A request that got no usable answer; ``received`` says whether any byte came back."""

    def __init__(self, message: str, *, received: bool = False) -> None:
        super().__init__(message)
        self.received = received


class UpstreamClosed(PoolError):
    """The connection ended before the answer's head was complete."""


class InvalidAnswer(PoolError):
    """What came back is not HTTP/1.x."""


class _Connection(asyncio.Protocol):
    """One upstream connection; parses one answer at a time into the current ``PooledResponse``."""

    # Slots: a GET stream holds one of these (and its response) for as long as its client listens.
    __slots__ = (
        "closed", "deadline", "fields", "head", "head_bytes", "loop", "parked_at", "parser", "pool", "received",
        "response", "transport", "writable",
    )  # fmt: skip

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: PooledResponse | None = None
        self.head: asyncio.Future[None] | None = None  # resolved when the answer's head is in
        self.fields: list[tuple[str, str]] = []  # the answer's headers so far, decoded as they come
        self.head_bytes = 0
        self.received = False  # any byte of the current answer
        self.closed = False
        self.parked_at = 0.0  # loop time it was parked, for the sweep
        self.deadline = 0.0  # loop time the head of the awaited answer is due by, for the timeout sweep
        self.writable: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio subclasses

    def data_received(self, data: bytes) -> None:
        if self.head is None and self.response is None:
            self.close()  # nothing was asked: a server talking out of turn is not reused
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(InvalidAnswer(f"invalid HTTP answer: {exc}", received=True))
            self.close()

    def eof_received(self) -> bool:
        return False  # closes the transport; connection_lost says what that means

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        response = self.response
        if response is not None and not response.complete and response.until_close and exc is None:
            response.finish()  # an answer without length ends where the connection does
            return
        self._fail(UpstreamClosed("server closed the connection", received=self.received))
        if self.writable is not None and not self.writable.done():
            self.writable.set_exception(ConnectionResetError("server closed the connection"))

    def pause_writing(self) -> None:
        if self.writable is None or self.writable.done():
            self.writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    # -- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > MAX_HEAD:
            raise httptools.HttpParserError(f"answer head larger than {MAX_HEAD} bytes")
        self.fields.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 1xx: informational, the real answer follows
            self.fields = []
            return
        if self.head is None or self.head.done():
            raise httptools.HttpParserError("an answer to no request")
        headers = CIMultiDict[str](self.fields)
        self.fields, self.head_bytes = [], 0
        self.response = PooledResponse(self, status, CIMultiDictProxy(headers))
        self.response.keep_alive = self.parser.should_keep_alive()
        self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response.feed(body)

    def on_message_complete(self) -> None:
        if self.response is not None:
            self.response.finish()

    # -- the pool's side -------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.received = False
        self.response = None
        self.head = self.loop.create_future()
        self.transport.write(data)
        if self.writable is not None and not self.writable.done():
            await self.writable  # a large body: wait until the kernel took it

    def _fail(self, error: PoolError) -> None:
        if self.head is not None and not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved: a caller that gave up must not leave it unobserved
        if self.response is not None and not self.response.complete:
            self.response.fail(error)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True


class PooledResponse:
    """An upstream answer, read as it arrives; what ``proxy`` needs of an ``aiohttp.ClientResponse``."""

    __slots__ = (
        "_buffer", "_buffered", "_connection", "_error", "_inflate", "_paused", "_released", "_waiter", "complete",
        "content_length", "content_type", "headers", "keep_alive", "read_timeout", "reason", "slotted", "status",
        "until_close",
    )  # fmt: skip

    def __init__(self, connection: _Connection, status: int, headers: CIMultiDictProxy[str]) -> None:
        self._connection: _Connection | None = connection
        self.status = status
        self.reason = ""
        self.headers = headers
        content_type = headers.get("Content-Type", "application/octet-stream")
        self.content_type = content_type.partition(";")[0].strip().lower()
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        length = headers.get("Content-Length")
        self.content_length = int(length) if length is not None and length.isdigit() and not chunked else None
        # No length and not chunked: the body runs until the server closes (HTTP/1.1 allows it).
        self.until_close = self.content_length is None and not chunked and status not in (204, 304)
        self.read_timeout: float | None = connection.pool.read_timeout
        self.slotted = True  # holds one of the pool's slots until released (a stream does not)
        self.complete = False
        self.keep_alive = False
        # A list, not a deque: the body is always taken whole, and an empty deque weighs 600 bytes,
        # held by every open stream for as long as its client listens.
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._released = False
        encoding = headers.get("Content-Encoding", "identity").strip().lower()
        # The gateway asks for identity; a server that compresses anyway is decoded here, since
        # the relay passes no Content-Encoding on to the client.
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS) if (
            encoding in ("gzip", "deflate")
        ) else None  # fmt: skip
        if self._inflate is not None:
            self.content_length = None

    @property
    def content(self) -> PooledResponse:
        return self  # the body readers live on the response itself

    # -- fed by the connection -------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._inflate is not None:
            try:
                data = self._inflate.decompress(data)
            except zlib.error:
                self.fail(InvalidAnswer("invalid compressed body", received=True))
                return
        if data:
            self._buffer.append(data)
            self._buffered += len(data)
            if self._buffered > HIGH_WATER and not self._paused and self._connection is not None:
                self._paused = True
                self._connection.pause_reading()
            self._wake()

    def finish(self) -> None:
        self.complete = True
        if self._inflate is not None and (rest := self._inflate.flush()):
            self._buffer.append(rest)
            self._buffered += len(rest)
        self._wake()

    def fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- read by the relay -----------------------------------------------------------------------

    def _check(self) -> None:
        if self._error is not None and not self._buffer:
            raise aiohttp.ClientPayloadError(str(self._error))

    async def _wait(self) -> None:
        self._check()
        assert self._connection is not None
        self._waiter = self._connection.loop.create_future()
        try:
            async with asyncio.timeout(self.read_timeout):
                await self._waiter
        except TimeoutError:
            raise aiohttp.ServerTimeoutError(f"no data within {self.read_timeout or 0:g}s") from None
        finally:
            self._waiter = None
        self._check()

    def _take(self) -> bytes:
        data = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        if self._paused and self._connection is not None:
            self._paused = False
            self._connection.resume_reading()
        return data

    async def readany(self) -> bytes:
        """What has arrived (waiting for something), ``b""`` once the answer is complete."""
        while not self._buffer:
            if self.complete:
                return b""
            await self._wait()
        return self._take()

    async def read(self) -> bytes:
        chunks = []
        while chunk := await self.readany():
            chunks.append(chunk)
        return b"".join(chunks)

    async def readexactly(self, n: int) -> bytes:
        if self._buffered == n and len(self._buffer) == 1:  # the usual case: it came in one piece
            return self._take()
        data = bytearray()
        while len(data) < n:
            chunk = await self.readany()
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(data), n)
            data += chunk
        if len(data) > n:
            raise aiohttp.ClientPayloadError(f"answer longer than its Content-Length ({n})")
        return bytes(data)

    # -- done --------------------------------------------------------------------------------

    def release(self) -> None:
        """Done with the answer: its connection goes back to the pool when it can be reused."""
        if self._released:
            return
        self._released = True
        connection, self._connection = self._connection, None
        if connection is None:
            return
        pool = connection.pool
        if self.complete and self.keep_alive and self._error is None and not connection.closed:
            pool.park(connection)
        else:
            connection.close()
        if self.slotted:
            pool.give_back_slot()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self.release()


class ConnectionPool:
    """Keep-alive connections to one upstream (TCP, TLS or a Unix socket), most recent first."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        host_header: str,
        ssl_context: ssl.SSLContext | None = None,
        unix_path: str | None = None,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.host, self.port, self.host_header = host, port, host_header
        self.ssl_context, self.unix_path = ssl_context, unix_path
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        # A plain count and a queue of waiters, not asyncio.Semaphore: the common case (a slot is
        # free) must cost no await, twice per call.
        self.free_slots = max_connections
        self.slot_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.idle: list[_Connection] = []
        self.sweeper: asyncio.TimerHandle | None = None
        # Connections awaiting the head of an answer, held to read_timeout by one sweep per pool
        # (every quarter of it, at most every second) instead of a timer armed and cancelled per
        # call: that was 1.2% of a forwarded call's instructions. A timeout fires that much late at most.
        self.waiting: set[_Connection] = set()
        self.timeout_sweeper: asyncio.TimerHandle | None = None
        self.timeout_every = min(1.0, read_timeout / 4)
        self.closed = False

    async def request(self, method: str, target: str, headers: CIMultiDict[str], body: bytes | None) -> PooledResponse:
        """Send one request and wait for the head of its answer (within ``read_timeout``)."""
        data = self.encode(method, target, headers, body)
        if self.free_slots > 0:
            self.free_slots -= 1
        else:
            await self._wait_for_slot()
        try:
            connection = self._parked()
            if connection is not None:
                try:
                    return await self._exchange(connection, data)
                except PoolError as exc:
                    if exc.received:
                        raise
                    # Stale: the server closed it while parked and heard nothing. Once more, anew.
            return await self._exchange(await self._connect(), data)
        except BaseException:
            self.give_back_slot()
            raise

    async def stream(
        self, method: str, target: str, headers: CIMultiDict[str], body: bytes | None = None
    ) -> PooledResponse:
        """Open a long-lived stream (a GET's SSE, a ``subscriptions/listen``): its head within
        ``read_timeout``, then a body that may idle for hours. Streams take no slot (they are as
        many as the clients holding them, and must not crowd out calls) and a connection of their
        own, closed when they end."""
        connection = await self._connect()
        response = await self._exchange(connection, self.encode(method, target, headers, body))
        response.read_timeout = None
        response.slotted = False
        response.keep_alive = False
        return response

    async def _wait_for_slot(self) -> None:
        waiter = self.loop.create_future()
        self.slot_waiters.append(waiter)
        try:
            await waiter  # handed over by give_back_slot, already counted
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give_back_slot()  # handed over just as this caller gave up: pass it on
            else:
                self.slot_waiters.remove(waiter)
            raise

    def give_back_slot(self) -> None:
        while self.slot_waiters:
            waiter = self.slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free_slots += 1

    def encode(self, method: str, target: str, headers: CIMultiDict[str], body: bytes | None) -> bytes:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}"]
        lines.extend([f"{name}: {value}" for name, value in headers.items()])
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        text = "\r\n".join(lines)
        breaks = len(lines) - 1  # one count over the whole head, not four checks per header
        if text.count("\n") != breaks or text.count("\r") != breaks:
            broken = next((name for name, value in headers.items() if any(c in name + value for c in "\r\n")), "Host")
            raise ValueError(f"header {broken[:64]!r} holds a line break")
        head = (text + "\r\n\r\n").encode("latin-1")
        return head + body if body else head

    async def _exchange(self, connection: _Connection, data: bytes) -> PooledResponse:
        try:
            await connection.send(data)
            head = connection.head
            assert head is not None
            connection.deadline = self.loop.time() + self.read_timeout
            self.waiting.add(connection)
            if self.timeout_sweeper is None:
                self.timeout_sweeper = self.loop.call_later(self.timeout_every, self._expire_overdue)
            try:
                await head
            finally:
                self.waiting.discard(connection)
        except ConnectionResetError:
            connection.close()
            raise UpstreamClosed("server closed the connection", received=connection.received) from None
        except BaseException:
            connection.close()  # mid-answer: the connection cannot carry another request
            raise
        response = connection.response
        assert response is not None
        return response

    def _parked(self) -> _Connection | None:
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:
                return connection
        return None

    async def _connect(self) -> _Connection:
        if self.closed:
            raise UpstreamClosed("the gateway is shutting down")
        async with asyncio.timeout(self.connect_timeout):
            if self.unix_path is not None:
                _, connection = await self.loop.create_unix_connection(lambda: _Connection(self), self.unix_path)
            else:
                _, connection = await self.loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.host if self.ssl_context is not None else None,
                )
        return connection

    def park(self, connection: _Connection) -> None:
        connection.head = None
        connection.response = None
        if self.closed or len(self.idle) >= MAX_IDLE:
            connection.close()
            return
        connection.parked_at = self.loop.time()
        self.idle.append(connection)
        if self.sweeper is None:
            self.sweeper = self.loop.call_later(IDLE_TIMEOUT, self._sweep)

    def _sweep(self) -> None:
        """Close what has been parked for IDLE_TIMEOUT: one timer per pool, not one per call."""
        self.sweeper = None
        deadline = self.loop.time() - IDLE_TIMEOUT
        for connection in [c for c in self.idle if c.parked_at <= deadline]:
            connection.close()
        self.idle = [c for c in self.idle if not c.closed]
        if self.idle:
            self.sweeper = self.loop.call_later(IDLE_TIMEOUT / 2, self._sweep)

    def _expire_overdue(self) -> None:
        now = self.loop.time()
        for connection in [c for c in self.waiting if c.deadline <= now]:
            if connection.head is not None and not connection.head.done():
                connection.head.set_exception(TimeoutError(f"no answer within {self.read_timeout:g}s"))
        # Ends itself once nothing waits (close() leaves it: calls in flight keep their bound).
        self.timeout_sweeper = self.loop.call_later(self.timeout_every, self._expire_overdue) if self.waiting else None

    def forget(self, connection: _Connection) -> None:
        if connection in self.idle:
            self.idle.remove(connection)

    async def close(self) -> None:
        self.closed = True
        if self.sweeper is not None:
            self.sweeper.cancel()
        for connection in list(self.idle):
            connection.close()
        self.idle.clear()


def describe(exc: BaseException) -> str:
    """Secret-free words for a failed connection attempt or exchange."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, PoolError):
        return str(exc)
    if isinstance(exc, OSError):
        return (exc.strerror or type(exc).__name__).lower()
    return type(exc).__name__
