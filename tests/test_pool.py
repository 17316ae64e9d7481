"""The lean upstream pool (``mcpgate/upstream/pool.py``) against servers that say exactly what a
test needs: raw sockets for the HTTP/1.1 corner cases, aiohttp for ordinary answers, and the same
answers read through aiohttp's client to compare byte for byte."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from mcpgate.upstream.pool import HIGH_WATER, ConnectionPool, InvalidAnswer, PoolError, UpstreamClosed

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
JSON = {"Content-Type": "application/json"}


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP server on loopback; yields its port and a list that counts accepted connections."""
    accepted: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


def pool_for(port: int, **options: float) -> ConnectionPool:
    return ConnectionPool(
        host="127.0.0.1",
        port=port,
        host_header=f"127.0.0.1:{port}",
        connect_timeout=options.get("connect_timeout", 5.0),
        read_timeout=options.get("read_timeout", 5.0),
        max_connections=int(options.get("max_connections", 8)),
    )


async def ask(pool: ConnectionPool, body: bytes = b"{}") -> tuple[int, bytes]:
    resp = await pool.request("POST", "/mcp", CIMultiDict(JSON), body)
    try:
        return resp.status, await resp.read()
    finally:
        resp.release()


async def test_keep_alive_reuses_one_connection_and_sends_what_it_was_given() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await read_request(reader)
            seen.append(head + body)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()

    async with raw_server(handler) as (port, accepted):
        pool = pool_for(port)
        for n in range(5):
            assert await ask(pool, b'{"n":%d}' % n) == (200, b"{}")
        await pool.close()
    assert len(accepted) == 1
    first = seen[0].decode()
    assert first.startswith("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:")
    assert "Content-Type: application/json\r\n" in first and first.endswith('\r\n\r\n{"n":0}')


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\n\r\nhello",  # no length: the body runs until the server closes
    ],
    ids=["connection-close", "http-1.0", "until-close"],
)
async def test_a_connection_the_server_will_not_keep_is_not_reused(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    async with raw_server(handler) as (port, accepted):
        pool = pool_for(port)
        assert await ask(pool) == (200, b"hello")
        assert await ask(pool) == (200, b"hello")
        await pool.close()
    assert len(accepted) == 2


async def test_chunked_answers_arrive_chunk_by_chunk_and_whole() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"6\r\nfirst\n\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"7\r\nsecond\n\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with raw_server(handler) as (port, _):
        pool = pool_for(port)
        resp = await pool.request("POST", "/mcp", CIMultiDict(JSON), b"{}")
        assert resp.content_type == "text/event-stream" and resp.content_length is None
        assert await resp.content.readany() == b"first\n"  # before the rest exists
        release.set()
        assert await resp.content.readany() == b"second\n"
        assert await resp.content.readany() == b""
        resp.release()
        await pool.close()


async def test_a_stale_parked_connection_is_retried_once_on_a_new_one() -> None:
    answered = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        await read_request(reader)
        answered += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        # and then close: the client still believes the connection is alive

    async with raw_server(handler) as (port, accepted):
        pool = pool_for(port)
        assert await ask(pool) == (200, b"ok")
        await asyncio.sleep(0.05)  # the close reaches the pool, or not yet: both must work
        assert await ask(pool) == (200, b"ok")
        await pool.close()
    assert answered == 2 and len(accepted) == 2


async def test_nothing_is_retried_once_the_server_said_something() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")  # half a head, then gone

    async with raw_server(handler) as (port, accepted):
        pool = pool_for(port)
        with pytest.raises(PoolError) as caught:
            await ask(pool)
        assert caught.value.received
        await pool.close()
    assert len(accepted) == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"this is not http\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 999999 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 70_000 + b"\r\n\r\n",  # a head past MAX_HEAD
    ],
    ids=["not-http", "bad-length", "bad-status", "huge-head"],
)
async def test_garbage_is_an_invalid_answer(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        await reader.read()

    async with raw_server(handler) as (port, _):
        pool = pool_for(port)
        with pytest.raises(InvalidAnswer):
            await ask(pool)
        await pool.close()


async def test_a_silent_server_times_out_and_a_stalled_body_too() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()

    async with raw_server(silent) as (port, _):
        pool = pool_for(port, read_timeout=0.2)
        with pytest.raises(TimeoutError):
            await ask(pool)
        await pool.close()

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await writer.drain()
        await reader.read()

    async with raw_server(stalls) as (port, _):
        pool = pool_for(port, read_timeout=0.2)
        resp = await pool.request("POST", "/mcp", CIMultiDict(JSON), b"{}")
        with pytest.raises(aiohttp.ServerTimeoutError):
            await resp.content.readexactly(10)
        resp.release()
        await pool.close()


async def test_the_timeout_sweep_expires_only_overdue_calls_and_stops_when_none_wait() -> None:
    """One sweep per pool holds every waiting call to read_timeout: the silent server's calls time
    out, one answered in time does not, a cancelled one stops waiting, and the sweep ends itself."""
    answered_after = 0.1

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        if b"X-Answer: yes" in head:
            await asyncio.sleep(answered_after)  # inside the bound, across a sweep or two
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
        await reader.read()

    async with raw_server(handler) as (port, _):
        pool = pool_for(port, read_timeout=0.4)
        silent = [asyncio.create_task(ask(pool)) for _ in range(3)]
        cancelled = asyncio.create_task(ask(pool))
        answered = pool.request("POST", "/mcp", CIMultiDict({**JSON, "X-Answer": "yes"}), b"{}")
        resp = await answered
        assert await resp.content.read() == b"{}"
        resp.release()
        cancelled.cancel()
        for task in silent:
            with pytest.raises(TimeoutError):
                await task
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert not pool.waiting
        async with asyncio.timeout(5):
            while pool.timeout_sweeper is not None:  # its next tick finds nothing waiting
                await asyncio.sleep(0.05)
        await pool.close()


async def test_a_body_cut_short_is_a_payload_error_and_never_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await writer.drain()

    async with raw_server(handler) as (port, accepted):
        pool = pool_for(port)
        resp = await pool.request("POST", "/mcp", CIMultiDict(JSON), b"{}")
        with pytest.raises((aiohttp.ClientPayloadError, asyncio.IncompleteReadError)):
            await resp.content.readexactly(10)
        resp.release()
        assert not pool.idle
        await pool.close()
    assert len(accepted) == 1


async def test_unreachable_and_refused() -> None:
    async with raw_server(read_request) as (port, _):  # type: ignore[arg-type]
        pass  # closed again: nothing listens there now
    pool = pool_for(port)
    with pytest.raises(OSError):
        await ask(pool)
    await pool.close()


async def test_a_line_break_in_a_header_is_refused_before_anything_is_sent() -> None:
    async with raw_server(read_request) as (port, accepted):  # type: ignore[arg-type]
        pool = pool_for(port)
        with pytest.raises(ValueError, match="line break"):
            await pool.request("POST", "/mcp", CIMultiDict({"X-Evil": "a\r\nInjected: 1"}), b"{}")
        await pool.close()
    assert accepted == []


async def test_a_slow_reader_pauses_the_upstream_instead_of_buffering_it_all() -> None:
    total = 8 * 1024 * 1024
    written = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        block = b"x" * 65536
        while written < total:
            writer.write(block)
            written += len(block)
            await writer.drain()

    async with raw_server(handler) as (port, _):
        pool = pool_for(port)
        resp = await pool.request("POST", "/mcp", CIMultiDict(JSON), b"{}")
        await asyncio.sleep(0.3)  # nobody reads: the server must be held back by the socket buffers
        assert written < total
        assert resp._buffered <= HIGH_WATER + 1024 * 1024
        received = 0
        while chunk := await resp.content.readany():
            received += len(chunk)
        assert received == total
        resp.release()
        await pool.close()


async def test_cancelling_a_call_closes_its_connection() -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # until the client goes
        closed.set()

    async with raw_server(handler) as (port, _):
        pool = pool_for(port)
        call = asyncio.ensure_future(ask(pool))
        await asyncio.sleep(0.1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        async with asyncio.timeout(5):
            await closed.wait()
        assert not pool.idle
        await pool.close()


async def test_the_bound_on_connections_makes_callers_wait_their_turn() -> None:
    inflight = peak = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal inflight, peak
        while True:
            await read_request(reader)
            inflight += 1
            peak = max(peak, inflight)
            await asyncio.sleep(0.02)
            inflight -= 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async with raw_server(handler) as (port, accepted):
        pool = pool_for(port, max_connections=3)
        results = await asyncio.gather(*(ask(pool) for _ in range(12)))
        assert results == [(200, b"ok")] * 12
        await pool.close()
    assert peak <= 3 and len(accepted) <= 3


async def test_the_same_answers_as_aiohttps_client_byte_for_byte() -> None:
    """Whatever an upstream says, both clients read the same status, type, length and bytes."""
    big = b'{"data":"' + b"y" * 300_000 + b'"}'

    async def route(request: web.Request) -> web.StreamResponse:
        kind = request.query.get("kind")
        if kind == "json":
            return web.Response(body=b'{"jsonrpc":"2.0","id":1,"result":{}}', content_type="application/json")
        if kind == "big":
            return web.Response(body=big, content_type="application/json")
        if kind == "gzip":
            return web.Response(
                body=gzip.compress(big), content_type="application/json", headers={"Content-Encoding": "gzip"}
            )
        if kind == "empty":
            return web.Response(status=202)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for n in range(50):
            await resp.write(b"event: message\r\ndata: %d\r\n\r\n" % n)
        return resp

    app = web.Application()
    app.router.add_post("/mcp", route)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    pool = pool_for(port)
    try:
        async with aiohttp.ClientSession(headers={"Accept-Encoding": "identity"}) as http:
            for kind in ("json", "big", "gzip", "empty", "sse"):
                ours = await pool.request("POST", f"/mcp?kind={kind}", CIMultiDict(JSON), b"{}")
                theirs = await http.post(f"http://127.0.0.1:{port}/mcp?kind={kind}", data=b"{}", headers=JSON)
                mine = (ours.status, ours.content_type, await ours.content.read())
                other = (theirs.status, theirs.content_type, await theirs.content.read())
                assert mine == other, kind
                if kind != "gzip":  # aiohttp keeps the compressed length; both read the same bytes
                    assert ours.content_length == theirs.content_length, kind
                ours.release()
                theirs.release()
    finally:
        await pool.close()
        await runner.cleanup()


async def test_a_closed_pool_refuses_new_connections() -> None:
    async with raw_server(read_request) as (port, _):  # type: ignore[arg-type]
        pool = pool_for(port)
        await pool.close()
        with pytest.raises(UpstreamClosed):
            await ask(pool)


async def test_parked_connections_are_closed_after_the_idle_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mcpgate.upstream.pool.IDLE_TIMEOUT", 0.1)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async with raw_server(handler) as (port, _):
        pool = pool_for(port)
        assert await ask(pool) == (200, b"ok")
        assert len(pool.idle) == 1
        connection = pool.idle[0]
        await asyncio.sleep(0.4)
        assert pool.idle == [] and connection.closed
        await pool.close()


async def test_a_caller_that_gives_up_waiting_for_a_slot_loses_no_slot() -> None:
    gate = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            await gate.wait()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async with raw_server(handler) as (port, _):
        pool = pool_for(port, max_connections=1)
        first = asyncio.ensure_future(ask(pool))
        await asyncio.sleep(0.05)
        waiting = asyncio.ensure_future(ask(pool))
        await asyncio.sleep(0.05)
        waiting.cancel()  # gives up while the only slot is taken
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.set()
        assert await first == (200, b"ok")
        assert await ask(pool) == (200, b"ok")  # the slot came back
        assert pool.free_slots == 1
        await pool.close()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, valid for a day, and its key: a private CA of one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mcpgate test upstream")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


async def test_tls_upstreams_are_verified_and_kept_alive(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    connections: list[object] = []

    async def echo(request: web.Request) -> web.Response:
        connections.append(request.transport)
        return web.Response(body=await request.read(), content_type="application/json")

    app = web.Application()
    app.router.add_post("/mcp", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_side).start()
    port = runner.addresses[0][1]
    trusting = ssl.create_default_context(cafile=str(cert))
    where = {"host": "127.0.0.1", "port": port, "host_header": f"127.0.0.1:{port}"}
    pool = ConnectionPool(**where, ssl_context=trusting, connect_timeout=5, read_timeout=5)
    untrusting = ConnectionPool(**where, ssl_context=ssl.create_default_context(), connect_timeout=5, read_timeout=5)
    try:
        assert await ask(pool, b'{"a":1}') == (200, b'{"a":1}')
        assert await ask(pool, b'{"a":2}') == (200, b'{"a":2}')
        assert len(set(map(id, connections))) == 1  # one TLS connection, kept alive
        with pytest.raises(ssl.SSLCertVerificationError):
            await ask(untrusting)
    finally:
        await pool.close()
        await untrusting.close()
        await runner.cleanup()
