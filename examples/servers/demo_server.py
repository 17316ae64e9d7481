"""A small but real MCP server, built on the official ``mcp`` SDK, to put behind mcpgate.

It speaks both protocol eras over Streamable HTTP (and stdio), and has what a gateway must carry:
plain tools, a tool that streams progress before its result, a tool that fails, a resource and a
prompt. The end-to-end tests and the README quick start use it as the upstream.

    python examples/servers/demo_server.py --port 9000            # http://127.0.0.1:9000/mcp
    python examples/servers/demo_server.py --transport stdio
"""

from __future__ import annotations

import argparse

import anyio
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("mcpgate-demo", instructions="A demo server for trying mcpgate.")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
async def countdown(steps: int, ctx: Context, delay: float = 0.05) -> str:
    """Count down, reporting progress after each step, then answer."""
    for done in range(1, steps + 1):
        await ctx.report_progress(done, steps, f"step {done} of {steps}")
        await anyio.sleep(delay)
    return f"lift-off after {steps} steps"


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleep, then answer: a slow upstream call for timeout and cancellation tests."""
    await anyio.sleep(seconds)
    return f"slept {seconds}s"


@server.tool()
def fail(message: str = "it failed") -> str:
    """Always raise: the error travels back as a tool error result."""
    raise ValueError(message)


@server.resource("demo://greeting", mime_type="text/plain")
def greeting() -> str:
    """A fixed greeting."""
    return "Hello from the mcpgate demo server"


@server.resource("demo://items/{item_id}")
def item(item_id: str) -> str:
    """One item, by id (a resource template)."""
    return f"item {item_id}"


@server.prompt()
def review(code: str) -> str:
    """Ask for a code review."""
    return f"Please review this code:\n\n{code}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["streamable-http", "sse", "stdio"], default="streamable-http")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    if args.transport == "stdio":
        server.run("stdio")
    else:
        server.run(args.transport, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
