"""Graceful shutdown: open streams end at once, in-flight calls finish within the grace period."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest

from mcpgate.config.model import Config
from mcpgate.server import Server
from tests.conftest import free_port, stop_process, wait_for_port
from tests.gateway_harness import LEGACY, initialize, make_config, rpc, session_headers

pytestmark = pytest.mark.e2e


async def start_serving(config: Config, path: str = "/servers/demo/mcp") -> tuple[Server, asyncio.Task[int], str]:
    """The daemon's own serve loop, in this event loop; returns it once it listens."""
    server = Server(config)
    ready = asyncio.Event()
    serving = asyncio.create_task(server.serve(on_ready=lambda _: ready.set()))
    await ready.wait()
    host, port = server.bound[0]
    return server, serving, f"http://{host}:{port}{path}"


@pytest.mark.parametrize("path", ["/servers/demo/mcp", "/mcp"])
async def test_streams_end_at_once_and_calls_finish(mcp_upstream_url: str, path: str) -> None:
    config = make_config({"demo": mcp_upstream_url}, host="127.0.0.1", shutdown_timeout=20.0)
    server, serving, url = await start_serving(config, path)
    async with aiohttp.ClientSession() as http:
        sid = await initialize(http, url)
        stream = await http.get(
            url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": sid, "MCP-Protocol-Version": LEGACY}
        )
        assert stream.status == 200
        call = asyncio.create_task(
            http.post(
                url,
                json=rpc("tools/call", {"name": "sleep", "arguments": {"seconds": 1.0}}, id=3),
                headers=session_headers(sid),
            )
        )
        await asyncio.sleep(0.3)  # let the call reach the upstream before shutdown begins
        server.should_exit.set()
        async with asyncio.timeout(10):  # a guard against hanging, not a timing assertion
            rest = await stream.read()  # the GET stream ends without waiting for the grace period
        assert b'"result"' not in rest
        stream.release()
        resp = await call
        async with resp:
            assert resp.status == 200
            assert "slept 1.0s" in await resp.text()
        assert await serving == 0


def test_sigterm_exits_zero(tmp_path: Path, mcp_upstream_url: str) -> None:
    port = free_port()
    config = tmp_path / "mcpgate.yml"
    config.write_text(
        textwrap.dedent(f"""\
        server: {{port: {port}}}
        upstreams:
          demo: {{url: "{mcp_upstream_url}"}}
        """)
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcpgate", "start", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_for_port(port, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()
        assert b"listening on http://127.0.0.1:" in err
    finally:
        stop_process(proc)


async def test_grace_period_is_bounded(mcp_upstream_url: str) -> None:
    """A call that outlives server.shutdown_timeout is cut off; shutdown does not wait for it."""
    config = make_config({"demo": mcp_upstream_url}, host="127.0.0.1", shutdown_timeout=0.5)
    server, serving, url = await start_serving(config)
    async with aiohttp.ClientSession() as http:
        sid = await initialize(http, url)
        body = rpc("tools/call", {"name": "sleep", "arguments": {"seconds": 60}}, id=4)
        call = asyncio.create_task(http.post(url, json=body, headers=session_headers(sid)))
        await asyncio.sleep(0.3)
        server.should_exit.set()
        async with asyncio.timeout(15):  # a guard against hanging, not a timing assertion
            assert await serving == 0
            try:
                resp = await call
                text = await resp.text()
                resp.release()
            except aiohttp.ClientError:
                text = ""
        assert "slept" not in text
