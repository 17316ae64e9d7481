"""``WholeResponse`` writes head and body in one call: on the wire it must be aiohttp's ``Response``.

Each case serves the same answer twice from one aiohttp server, once as ``web.Response`` and once
as ``WholeResponse``, over a raw socket, and compares the bytes (the ``Date`` value aside). The
server runs the gateway's own prepare hook, so ``Server``, ``X-Request-ID`` and rate-limit
headers are part of what is compared.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.http import HttpVersion11

from mcpgate.listener import ANSWER_HEADERS, WholeResponse
from mcpgate.server import name_the_server

Make = Callable[..., web.Response]


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """An app whose handler answers what ``case`` holds, with the class named in the path."""
    case: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        if case.get("answer_headers") is not None:
            request[ANSWER_HEADERS] = dict(case["answer_headers"])
        make: Make = WholeResponse if request.match_info["kind"] == "whole" else web.Response
        response = make(status=case.get("status", 200), body=case.get("body"), headers=case.get("headers"))
        if case.get("force_close"):
            response.force_close()
        return response

    app = web.Application()
    app.router.add_route("*", "/{kind}", handler)
    app.on_response_prepare.append(name_the_server)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port, case
    finally:
        await runner.cleanup()


async def fetch(port: int, request: bytes, answers: int = 1, head_only: bool = False, closes: bool = False) -> bytes:
    """The server's ``answers`` answers, each read by its Content-Length; with ``closes``, then
    whatever else comes until the server closes the connection (nothing, it must be)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    chunks = []
    for _ in range(answers):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
        chunks += [head, b"" if head_only or length is None else await reader.readexactly(int(length[1]))]
    if closes:
        chunks.append(await asyncio.wait_for(reader.read(), 10))
    writer.close()
    return re.sub(rb"Date: [^\r]*\r\n", b"Date: -\r\n", b"".join(chunks))


def request_for(kind: str, method: str = "POST", version: str = "1.1", extra: str = "Connection: close\r\n") -> bytes:
    return f"{method} /{kind} HTTP/{version}\r\nHost: x\r\n{extra}Content-Length: 0\r\n\r\n".encode()


CASES: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "json answer": ({"body": b'{"ok":1}', "headers": {"Content-Type": "application/json"}}, {}),
    "session and request id": (
        {
            "body": b"{}",
            "headers": {"Content-Type": "application/json", "Mcp-Session-Id": "s1"},
            "answer_headers": {"X-Request-ID": "abc", "RateLimit-Remaining": "3"},
        },
        {},
    ),
    "no body, 202": ({"status": 202}, {}),
    "error status": ({"status": 404, "body": b'{"e":1}', "headers": {"Content-Type": "application/json"}}, {}),
    "no content type": ({"body": b"raw"}, {}),
    "unusual status": ({"status": 299, "body": b"x"}, {}),
    "kept alive": ({"body": b"{}"}, {"extra": ""}),
    "HTTP/1.0": ({"body": b"{}"}, {"version": "1.0", "extra": ""}),
    "HTTP/1.0 keep-alive": ({"body": b"{}"}, {"version": "1.0", "extra": "Connection: keep-alive\r\n"}),
    "forced close": ({"body": b"{}", "force_close": True}, {"extra": ""}),
    "HEAD": ({"body": b"{}"}, {"method": "HEAD"}),
    "204": ({"status": 204}, {}),
    "Connection header given": ({"body": b"{}", "headers": {"Connection": "close"}}, {"extra": ""}),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_same_bytes_as_aiohttp_response(server: tuple[int, dict[str, Any]], name: str) -> None:
    port, case = server
    answer, how = CASES[name]
    case.clear()
    case.update(answer)
    extra = how.get("extra", "Connection: close\r\n")
    closes = "close" in extra or (how.get("version") == "1.0" and "keep-alive" not in extra) or "force_close" in answer
    options: dict[str, Any] = {"head_only": how.get("method") == "HEAD", "closes": closes}
    expected = await fetch(port, request_for("plain", **how), **options)
    got = await fetch(port, request_for("whole", **how), **options)
    assert expected.startswith(b"HTTP/1.")
    assert got == expected


async def test_two_answers_on_one_connection(server: tuple[int, dict[str, Any]]) -> None:
    port, case = server
    case.update({"body": b'{"n":1}', "headers": {"Content-Type": "application/json"}})
    both = request_for("whole", extra="") + request_for("whole", extra="")
    got = await fetch(port, both, answers=2)
    assert got.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert got.count(b'{"n":1}') == 2


async def test_a_line_break_in_a_header_is_never_sent(server: tuple[int, dict[str, Any]]) -> None:
    port, case = server
    case.update({"body": b"{}", "headers": {"X-Evil": "a\r\nSet-Cookie: x=1"}})
    for kind in ("plain", "whole"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_for(kind))
        sent = await asyncio.wait_for(reader.read(), 10)  # the server gives up on the answer and closes
        writer.close()
        assert b"Set-Cookie" not in sent


async def test_client_gone_before_the_answer_is_written() -> None:
    """A closed transport is a ConnectionError, as aiohttp's writer raises, not a crash."""

    class Gone:
        transport = None
        keep_alive = True
        method = "POST"
        version = HttpVersion11
        _payload_writer = None

        async def _prepare_hook(self, response: web.StreamResponse) -> None:
            return None

    with pytest.raises(ConnectionError):
        await WholeResponse(body=b"{}").prepare(Gone())  # type: ignore[arg-type]
