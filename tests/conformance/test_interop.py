"""The interop matrix: official clients x real upstreams x both gateway endpoints, one test per cell.

Clients: the official Python SDK (``mcp.Client`` in each mode) and the official TypeScript SDK as
the MCP Inspector's CLI drives it, in each era. Upstreams: the Python SDK server over Streamable
HTTP, stdio and legacy HTTP+SSE; the TypeScript reference server (legacy era only) over
Streamable HTTP and stdio. Every cell lists tools, calls a tool, calls a tool that reports
progress, reads a resource and gets a prompt. ``run.py`` runs this file and publishes the grid in
docs/compatibility.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mcpgate.config.model import Transport, UpstreamConfig
from tests import node
from tests.conftest import DEMO_SERVER, everything_command, free_port, start_demo_server, stop_process
from tests.gateway_harness import make_config, running_gateway, sdk_client

pytestmark = pytest.mark.e2e

CLIENTS = {
    "python-legacy": "Python SDK, `mode=legacy`",
    "python-2026-07-28": "Python SDK, `mode=2026-07-28`",
    "python-auto": "Python SDK, `mode=auto`",
    "inspector-legacy": "TypeScript SDK (Inspector CLI), `--protocol-era legacy`",
    "inspector-modern": "TypeScript SDK (Inspector CLI), `--protocol-era modern`",
}
UPSTREAMS = {
    "python-http": "Python SDK, Streamable HTTP",
    "python-stdio": "Python SDK, stdio",
    "python-sse": "Python SDK, HTTP+SSE (2024-11-05)",
    "everything-http": "server-everything, Streamable HTTP",
    "everything-stdio": "server-everything, stdio",
}
ENDPOINTS = {"per-server": "`/servers/<name>/mcp`", "unified": "`/mcp`"}


@dataclass(frozen=True)
class Script:
    """What a cell asks an upstream, and a piece of text each answer must contain."""

    tool: tuple[str, dict[str, Any], str]
    progress: tuple[str, dict[str, Any], int, str]  # ... and how many progress events come first
    resource: tuple[str, str]
    prompt: tuple[str, dict[str, str], str]


PYTHON_SDK = Script(
    tool=("echo", {"text": "interop"}, "interop"),
    progress=("countdown", {"steps": 3, "delay": 0.01}, 3, "lift-off after 3 steps"),
    resource=("demo://greeting", "Hello from the mcpgate demo server"),
    prompt=("review", {"code": "x = 1"}, "x = 1"),
)
EVERYTHING = Script(
    tool=("echo", {"message": "interop"}, "Echo: interop"),
    progress=("trigger-long-running-operation", {"duration": 0.3, "steps": 3}, 3, "completed"),
    resource=("demo://resource/static/document/features.md", "#"),
    prompt=("args-prompt", {"city": "Paris"}, "Paris"),
)


@pytest.fixture(scope="module")
def sse_upstream_url() -> Iterator[str]:
    port = free_port()
    proc = start_demo_server(port, DEMO_SERVER, "--transport", "sse")
    try:
        yield f"http://127.0.0.1:{port}/sse"
    finally:
        stop_process(proc)


def upstream(kind: str, request: pytest.FixtureRequest) -> tuple[UpstreamConfig, Script]:
    def config(transport: Transport, **where: Any) -> UpstreamConfig:
        return UpstreamConfig(name="up", transport=transport, timeout=30.0, connect_timeout=30.0, **where)

    if kind == "python-http":
        return config("streamable-http", url=request.getfixturevalue("mcp_upstream_url")), PYTHON_SDK
    if kind == "python-stdio":
        return config("stdio", command=(sys.executable, str(DEMO_SERVER), "--transport", "stdio")), PYTHON_SDK
    if kind == "python-sse":
        return config("sse", url=request.getfixturevalue("sse_upstream_url")), PYTHON_SDK
    if kind == "everything-http":
        return config("streamable-http", url=request.getfixturevalue("everything_url")), EVERYTHING
    return config("stdio", command=(*everything_command(), "stdio")), EVERYTHING


async def python_cell(url: str, mode: str, script: Script) -> None:
    async with sdk_client(url, mode) as client:
        assert script.tool[0] in {t.name for t in (await client.list_tools()).tools}

        name, arguments, text = script.tool
        result = await client.call_tool(name, arguments)
        assert not result.is_error and text in result.content[0].text

        seen: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        name, arguments, events, text = script.progress
        result = await client.call_tool(name, arguments, progress_callback=on_progress)
        assert not result.is_error and text in result.content[0].text
        assert len(seen) == events and seen == sorted(seen)

        uri, text = script.resource
        assert text in (await client.read_resource(uri)).contents[0].text

        name, prompt_args, text = script.prompt
        assert text in (await client.get_prompt(name, prompt_args)).messages[0].content.text


async def inspector(url: str, era: str, home: Path, *args: str) -> dict[str, Any]:
    """One Inspector CLI call; its JSON result. HOME is the test's, so nothing lands in ~."""
    binary = node.node()
    assert binary is not None
    argv = [str(binary), str(node.entry("@modelcontextprotocol/inspector")), "--cli", url, "--transport", "http",
            "--protocol-era", era, "--format", "json", "--connect-timeout", "20000", *args]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "HOME": str(home)}
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, f"inspector {args}: exit {proc.returncode}: {err.decode()[-2000:]}"
    answer = json.loads(out)
    return dict(answer["result"])


async def inspector_cell(url: str, era: str, script: Script, home: Path) -> None:
    tools = await inspector(url, era, home, "--method", "tools/list")
    assert script.tool[0] in {t["name"] for t in tools["tools"]}

    name, arguments, text = script.tool
    result = await inspector(url, era, home, "--method", "tools/call", "--tool-name", name,
                             "--tool-args-json", json.dumps(arguments))  # fmt: skip
    assert not result.get("isError") and text in result["content"][0]["text"]

    name, arguments, _, text = script.progress
    progress = ("--tool-metadata", "progressToken=interop")
    result = await inspector(url, era, home, "--method", "tools/call", "--tool-name", name,
                             "--tool-args-json", json.dumps(arguments), *progress)  # fmt: skip
    assert not result.get("isError") and text in result["content"][0]["text"]

    uri, text = script.resource
    result = await inspector(url, era, home, "--method", "resources/read", "--uri", uri)
    assert text in result["contents"][0]["text"]

    name, prompt_args, text = script.prompt
    pairs = [f"{key}={value}" for key, value in prompt_args.items()]
    result = await inspector(url, era, home, "--method", "prompts/get", "--prompt-name", name, "--prompt-args", *pairs)
    assert text in result["messages"][0]["content"]["text"]


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize("kind", list(UPSTREAMS))
@pytest.mark.parametrize("client", list(CLIENTS))
async def test_cell(client: str, kind: str, endpoint: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    config, script = upstream(kind, request)
    if client.startswith("inspector") and node.ensure_packages() is not None:
        pytest.fail(f"the Inspector is not installed: {node.ensure_packages()}")
    async with running_gateway(make_config({"up": config})) as gw:
        for channel, _ in gw.gateway.children.values():
            await channel.wait_ready(30)
        url = gw.endpoint("up") if endpoint == "per-server" else gw.url + "/mcp"
        if client.startswith("python-"):
            await python_cell(url, client.removeprefix("python-"), script)
        else:
            await inspector_cell(url, client.removeprefix("inspector-"), script, tmp_path)
