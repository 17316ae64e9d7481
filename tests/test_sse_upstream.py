"""Legacy HTTP+SSE upstreams (2024-11-05): the official SDK server run with transport="sse",
through both endpoints and both eras, and what no real server should do."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from mcpgate.config import load_config
from mcpgate.config.model import UpstreamConfig
from mcpgate.errors import GatewayError
from mcpgate.upstream.probe import probe_upstream
from mcpgate.upstream.sse import SseUpstream
from tests.conftest import DEMO_SERVER, free_port, start_demo_server, stop_process
from tests.gateway_harness import modern_call, modern_headers, read_messages, running_gateway, sdk_client, tool_call

pytestmark = pytest.mark.e2e


@pytest.fixture
def sse_server() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = start_demo_server(port, DEMO_SERVER, "--transport", "sse")
    try:
        yield port, proc
    finally:
        stop_process(proc)


def config(url: str, **options: Any) -> UpstreamConfig:
    options.setdefault("connect_timeout", 10.0)
    options.setdefault("timeout", 20.0)
    return UpstreamConfig(name="old", transport="sse", url=url, **options)


@asynccontextmanager
async def connected(upstream: UpstreamConfig) -> AsyncIterator[SseUpstream]:
    channel = SseUpstream(upstream, rng=lambda: 0.0)
    await channel.start()
    try:
        yield channel
    finally:
        await channel.close()


async def test_calls_go_out_by_post_and_come_back_on_the_stream(sse_server: tuple[int, Any]) -> None:
    port, _ = sse_server
    async with connected(config(f"http://127.0.0.1:{port}/sse")) as channel:
        await channel.wait_ready(10)
        assert channel.endpoint is not None and channel.endpoint.path == "/messages/"
        answers = await asyncio.gather(*(channel.request(tool_call("echo", {"text": f"n{n}"})) for n in range(20)))
        assert [a["result"]["content"][0]["text"] for a in answers] == [f"n{n}" for n in range(20)]
        seen: list[dict[str, Any]] = []
        answer = await channel.request(
            tool_call("countdown", {"steps": 2, "delay": 0.01}, progressToken="t"), listener=seen.append
        )
        assert answer["result"]["content"][0]["text"] == "lift-off after 2 steps"
        assert [n["params"]["progressToken"] for n in seen] == ["t", "t"]


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28", "auto"])
async def test_an_sse_server_is_used_through_both_endpoints_by_clients_of_both_eras(
    sse_server: tuple[int, Any], mode: str
) -> None:
    port, _ = sse_server
    text = f"server: {{port: 0}}\nupstreams:\n  old: {{url: 'http://127.0.0.1:{port}/sse', transport: sse}}\n"
    async with running_gateway(load_config(text=text, source="sse.yml")) as gw:
        await gw.gateway.children["old"][0].wait_ready(10)
        for url in (gw.endpoint("old"), gw.url + "/mcp"):
            async with sdk_client(url, mode) as client:
                assert {"add", "echo"} <= {t.name for t in (await client.list_tools()).tools}
                result = await client.call_tool("add", {"a": 1, "b": 2})
                assert result.content[0].text == "3"  # type: ignore[union-attr]


async def test_a_dropped_stream_fails_calls_at_once_and_reconnects() -> None:
    port = free_port()
    proc = start_demo_server(port, DEMO_SERVER, "--transport", "sse")
    try:
        async with connected(config(f"http://127.0.0.1:{port}/sse")) as channel:
            await channel.wait_ready(10)
            slow = asyncio.create_task(channel.request(tool_call("sleep", {"seconds": 60})))
            await asyncio.sleep(0.5)
            stop_process(proc)
            with pytest.raises(GatewayError) as failed:
                await asyncio.wait_for(slow, 10)
            assert failed.value.reason.name == "upstream_unavailable"
            proc = start_demo_server(port, DEMO_SERVER, "--transport", "sse")
            await channel.wait_ready(20)
            answer = await channel.request(tool_call("add", {"a": 2, "b": 2}))
            assert answer["result"]["content"][0]["text"] == "4"
            assert channel.restarts >= 1
    finally:
        stop_process(proc)


async def test_an_endpoint_on_another_origin_is_refused() -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        await out.write(b"event: endpoint\ndata: http://evil.example.com/messages?session_id=1\n\n")
        await asyncio.sleep(30)
        return out

    app = web.Application()
    app.router.add_get("/sse", stream)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/sse"
        async with connected(config(url, connect_timeout=1.0)) as channel:
            with pytest.raises(GatewayError):
                await channel.wait_ready(2)
            assert channel.endpoint is None
            assert channel.last_error == "the endpoint event names another origin (refused)"
    finally:
        await runner.cleanup()


async def test_probe_and_readiness_agree_about_an_sse_upstream(sse_server: tuple[int, Any]) -> None:
    port, _ = sse_server
    url = f"http://127.0.0.1:{port}/sse"
    result = await probe_upstream(config(url), timeout=15)
    assert result.healthy, result.error
    assert (result.era, result.tools) == ("legacy", 5)
    text = f"server: {{port: 0}}\nupstreams:\n  old: {{url: '{url}', transport: sse}}\n"
    async with running_gateway(load_config(text=text, source="sse.yml")) as gw, aiohttp.ClientSession() as http:
        await gw.gateway.children["old"][0].wait_ready(10)
        await gw.gateway.upstreams["old"].probe()
        async with http.get(gw.url + "/readyz") as resp:
            state = (await resp.json())["upstreams"]["old"]
        assert (state["state"], state["transport"], state["process"]) == ("healthy", "sse", "running")
        assert state["protocol"] == result.protocol_version
        body = modern_call("tools/call", {"name": "add", "arguments": {"a": 3, "b": 4}})
        async with http.post(gw.endpoint("old"), json=body, headers=modern_headers("tools/call", "add")) as resp:
            assert json.dumps((await read_messages(resp))[-1]).count('"7"') == 1
