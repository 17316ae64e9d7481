"""What needs no rewrite is relayed byte for byte: JSON as is, SSE with its own framing."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from tests.gateway_harness import make_config, modern_call, modern_headers, raw_upstream, running_gateway

pytestmark = pytest.mark.e2e

ODD_JSON = b'{ "jsonrpc" : "2.0",\n  "id":1, "result": {"z": 1, "a": [2, 3], "s": "caf\\u00e9"} }'
CRLF_SSE = (
    b"id: 7\r\nretry: 500\r\ndata: \r\n\r\n"
    b': a comment\r\nevent: message\r\ndata: {"jsonrpc":"2.0",\r\ndata: "method":"notifications/progress"}\r\n\r\n'
)
LF_SSE = b'event: message\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\n\n'


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(ODD_JSON, "application/json"), (CRLF_SSE, "text/event-stream"), (LF_SSE, "text/event-stream")],
)
async def test_bytes_are_relayed_unchanged(body: bytes, content_type: str) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type)

    async with raw_upstream(handler) as (url, _), running_gateway(make_config({"u": url})) as gw:
        async with aiohttp.ClientSession() as http:
            req = modern_call("tools/list")
            async with http.post(gw.endpoint("u"), json=req, headers=modern_headers("tools/list")) as resp:
                assert resp.status == 200
                assert resp.content_type == content_type
                assert await resp.read() == body
