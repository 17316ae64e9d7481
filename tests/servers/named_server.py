"""A second kind of real MCP server for the unified endpoint's tests: it says who it is.

Two instances with different ``--name``s behind one gateway show which upstream answered a
call, where the demo server's identical twins could not. Built on the official SDK.

    python tests/servers/named_server.py --name alpha --port 9100
"""

from __future__ import annotations

import argparse
from typing import Annotated, Any

from mcp.server.mcpserver import Context, Elicit, MCPServer, Resolve
from mcp_types import Completion
from pydantic import BaseModel


class Answer(BaseModel):
    value: str


def ask_the_user(question: str) -> Elicit[Answer]:
    """A resolver: the SDK asks the client in whichever way the client's protocol era allows."""
    return Elicit(question, Answer)


def build(name: str) -> MCPServer:
    server = MCPServer(f"named-{name}")

    @server.tool()
    def whoami() -> str:
        """Say which server this is."""
        return name

    @server.tool()
    def add(a: int, b: int) -> str:
        """Add, and say who did it."""
        return f"{name}:{a + b}"

    @server.tool(name=f"only_{name}")
    def only() -> str:
        """A tool no other instance has."""
        return f"only {name}"

    @server.tool()
    async def ask(question: str, answer: Annotated[Answer, Resolve(ask_the_user)]) -> str:
        """Ask the client's user, then say what came back: a request mid-call in the legacy era,
        an input_required result in 2026-07-28."""
        return f"{name} heard {answer.value}"

    @server.tool()
    async def grow(tool: str, ctx: Context) -> str:
        """Add a tool named ``tool``, then say the list changed: to the session's GET stream (legacy)
        and to every subscriptions/listen stream (2026-07-28)."""

        def grown() -> str:
            return f"{name} grew {tool}"

        server.add_tool(grown, name=tool, description="Added at run time.")
        if ctx.protocol_version != "2026-07-28":
            await ctx.session.send_tool_list_changed()
        await ctx.notify_tools_changed()
        return f"{name} added {tool}"

    @server.tool(name="dotted.name")
    def dotted() -> str:
        """A name the spec allows and Claude and OpenAI clients refuse."""
        return "dotted"

    @server.tool()
    async def steps(count: int, ctx: Context) -> str:
        """Report progress, then answer."""
        for done in range(1, count + 1):
            await ctx.report_progress(done, count, f"{name} step {done}")
        return f"{name} done"

    @server.resource(f"named://{name}/info", mime_type="text/plain")
    def info() -> str:
        """This server's own resource."""
        return f"info from {name}"

    @server.resource("named://shared")
    def shared() -> str:
        """A URI every instance lists: the first in file order serves it."""
        return f"shared from {name}"

    @server.resource(f"named://{name}/items/{{item}}")
    def item(item: str) -> str:
        """A template of this server's."""
        return f"{name} item {item}"

    @server.prompt()
    def greet(who: str) -> str:
        """A prompt that says who answers."""
        return f"{name} greets {who}"

    @server.completion()
    async def complete(ref: Any, argument: Any, context: Any) -> Completion | None:
        """Completions that say which server made them, and for which prompt or template."""
        target = getattr(ref, "name", None) or getattr(ref, "uri", None)
        return Completion(values=[f"{name}:{target}:{argument.value}"])

    return server


def one_era(app: Any, *, modern: bool) -> Any:
    """An ASGI wrapper that refuses the other era's requests: 2026-07-28 ones, as servers that
    predate that era do, or legacy ones (initialize and sessions), as a 2026-07-28-only server does."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or ())
        is_modern = headers.get(b"mcp-protocol-version") == b"2026-07-28"
        if scope["type"] == "http" and is_modern is not modern:
            body = (
                b'{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"Bad Request: Server not initialized"}}'
            )
            start = {"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"application/json")]}
            await send(start)
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    era = parser.add_mutually_exclusive_group()
    era.add_argument("--legacy-only", action="store_true", help="refuse 2026-07-28 requests")
    era.add_argument("--modern-only", action="store_true", help="refuse legacy requests (initialize, sessions)")
    args = parser.parse_args()
    server = build(args.name)
    if not (args.legacy_only or args.modern_only):
        server.run("streamable-http", host=args.host, port=args.port)
        return
    import uvicorn

    app = one_era(server.streamable_http_app(host=args.host), modern=args.modern_only)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
