"""What a proxy in Python can reach on this machine, next to mcpgate: the floors under the targets.

    python bench/floors.py [--duration 4] [--concurrency 1,64] [--rounds 2]

The performance targets are ratios to a direct run, so what they ask depends on the machine:
on a VM where each loopback hop costs tens of microseconds, even a proxy that does nothing
adds that much. This runs, on the same stub and with the same wrk load as ``run.py --tool wrk``
(2026-07-28 ``tools/call``, which needs no session, so the reference servers need none either):

- ``direct``: the stub itself;
- ``relay``: a TCP relay (uvloop protocols, one upstream connection per client connection,
  bytes copied both ways): no HTTP at all, the floor of any proxy written in Python;
- ``httptools``: an HTTP/1.1 server on asyncio protocols parsing requests with httptools, that
  forwards each one through mcpgate's upstream pool and answers with the upstream's status,
  Content-Type and body. It checks nothing: the floor of a lean server in front of the pool;
- ``aiohttp``: the same forwarding behind aiohttp's low-level ``web.Server``: the floor of the
  server mcpgate is built on;
- ``gateway``: mcpgate's per-server endpoint, every check made.

Rounds interleave the targets (direct first each time) so that a machine whose speed drifts
does not favour one. It prints req/s, p50 and, for each proxy, the ratio to direct and the
latency it adds at the median. Loopback only; needs wrk. The reference servers are also
started on their own by ``--serve KIND --port P --upstream PORT`` (``instructions.py`` counts
them that way).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (bench/run.py: the stub, the MCP client, the wrk script, child processes)

KINDS = ("relay", "httptools", "aiohttp")
# What the reference servers pass upstream: what the stub needs to answer (the gateway sends these too).
PASSED = frozenset({"content-type", "accept", "mcp-protocol-version", "mcp-method", "mcp-name", "mcp-session-id"})


# --- the reference servers ------------------------------------------------------------------


class RelayUp(asyncio.Protocol):
    def __init__(self, down: RelayDown) -> None:
        self.down = down
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.down.transport is not None
        self.down.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.down.transport is not None:
            self.down.transport.close()


class RelayDown(asyncio.Protocol):
    """A client connection; what it sends before its upstream connection is open waits in ``early``
    (uvloop may deliver data even when reading is paused in ``connection_made``)."""

    upstream_port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport | None = transport  # type: ignore[assignment]
        self.up: RelayUp | None = None
        self.early: list[bytes] = []
        self.opening = asyncio.get_running_loop().create_task(self.open())

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, self.up = await loop.create_connection(lambda: RelayUp(self), "127.0.0.1", self.upstream_port)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        assert self.up.transport is not None
        self.up.transport.write(b"".join(self.early))
        self.early = []

    def data_received(self, data: bytes) -> None:
        up = self.up.transport if self.up is not None else None
        if up is None:
            self.early.append(data)
        else:
            up.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.up is not None and self.up.transport is not None:
            self.up.transport.close()


async def forward(pool: Any, headers: list[tuple[str, str]], body: bytes) -> tuple[int, str, bytes]:
    from multidict import CIMultiDict

    resp = await pool.request("POST", "/mcp", CIMultiDict(headers), body)
    try:
        data = await resp.read()
    finally:
        resp.release()
    return resp.status, resp.headers.get("Content-Type", "application/json"), data


class Lean(asyncio.Protocol):
    """HTTP/1.1 keep-alive, one request at a time (wrk does not pipeline), a body by Content-Length."""

    pool: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        import httptools

        self.transport: asyncio.Transport | None = transport  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception:  # a reference server: whatever it cannot parse ends the connection
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1")
        if key.lower() in PASSED:
            self.headers.append((key, value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        headers, body = self.headers, b"".join(self.body)
        self.headers, self.body = [], []
        asyncio.get_running_loop().create_task(self.answer(headers, body))

    async def answer(self, headers: list[tuple[str, str]], body: bytes) -> None:
        status, content_type, data = await forward(self.pool, headers, body)
        if self.transport is not None:
            head = f"HTTP/1.1 {status} OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(data)}\r\n\r\n"
            self.transport.write(head.encode("latin-1") + data)


async def serve(kind: str, port: int, upstream: int) -> None:
    from aiohttp import web

    from mcpgate.upstream.pool import ConnectionPool

    loop = asyncio.get_running_loop()
    if kind == "relay":
        RelayDown.upstream_port = upstream
        server = await loop.create_server(RelayDown, "127.0.0.1", port)
    else:
        pool = ConnectionPool(
            host="127.0.0.1", port=upstream, host_header=f"127.0.0.1:{upstream}", connect_timeout=5, read_timeout=30
        )
        if kind == "httptools":
            Lean.pool = pool
            server = await loop.create_server(Lean, "127.0.0.1", port)
        else:

            async def handle(request: web.BaseRequest) -> web.Response:
                headers = [(k, v) for k, v in request.headers.items() if k.lower() in PASSED]
                status, content_type, data = await forward(pool, headers, await request.read())
                return web.Response(status=status, body=data, headers={"Content-Type": content_type})

            server = await loop.create_server(web.Server(handle, access_log=None), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def serve_forever(kind: str, port: int, upstream: int) -> None:
    try:
        import uvloop

        uvloop.run(serve(kind, port, upstream))  # as the gateway runs, when uvloop is installed
    except ImportError:
        asyncio.run(serve(kind, port, upstream))


def start_reference(started: list[run.Child], kind: str, upstream_port: int) -> str:
    port = run.free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve", kind, "--port", str(port)]
    child = run.Child(kind, [*argv, "--upstream", str(upstream_port)])
    started.append(child)
    child.wait_listening(port)
    return f"http://127.0.0.1:{port}/mcp"


# --- the comparison -------------------------------------------------------------------------


async def one_run(url: str, concurrency: int, seconds: int, tmp: Path) -> dict[str, int]:
    client = run.Client(url, "modern")
    async with aiohttp.ClientSession(timeout=run.REQUEST_TIMEOUT) as session:
        await client.setup(session)  # one checked call
        script = tmp / "load.lua"
        run.write_wrk_script(client, script)
        await run.wrk_once(client, concurrency, 1, script)  # warm-up
        return await run.wrk_once(client, concurrency, seconds, script)


async def compare(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        print("wrk not found (Debian: apt install wrk)", file=sys.stderr)
        return 2
    levels = [int(c) for c in args.concurrency.split(",")]
    seconds = max(1, math.ceil(args.duration))
    rows: dict[tuple[int, str], list[dict[str, int]]] = {}
    with run.children() as started, tempfile.TemporaryDirectory(prefix="mcpgate-floors-") as name:
        tmp = Path(name)
        stub_url = run.start_stub(started, sse=False)
        stub_port = urlsplit(stub_url).port
        assert stub_port is not None
        targets = {"direct": stub_url}
        for kind in KINDS:
            targets[kind] = start_reference(started, kind, stub_port)
        targets["gateway"] = run.start_gateway(started, stub_url, tmp)
        for _ in range(args.rounds):
            for concurrency in levels:
                for target, url in targets.items():
                    result = await one_run(url, concurrency, seconds, tmp)
                    if result["bad"] or result["socket"]:
                        print(f"{target} failed {result['bad'] + result['socket']} requests", file=sys.stderr)
                        return 1
                    rows.setdefault((concurrency, target), []).append(result)
    print(f"{'conc':>4}  {'target':<10} {'req/s':>9} {'p50 ms':>8} {'ratio':>6} {'added p50 ms':>13}")
    for concurrency in levels:
        direct = summary(rows[(concurrency, "direct")])
        for target in targets:
            rps, p50 = summary(rows[(concurrency, target)])
            ratio = f"{rps / direct[0]:.2f}" if target != "direct" else ""
            added = f"{p50 - direct[1]:.3f}" if target != "direct" else ""
            print(f"{concurrency:>4}  {target:<10} {rps:>9.0f} {p50:>8.3f} {ratio:>6} {added:>13}")
    print(
        "\nratio: req/s through the target / req/s direct, each round's runs summed; added p50: the target's\n"
        "median latency minus direct's (the mean over rounds). relay, httptools and aiohttp check nothing."
    )
    return 0


def summary(results: list[dict[str, int]]) -> tuple[float, float]:
    """req/s over all rounds, and the mean p50 in milliseconds."""
    requests = sum(r["requests"] for r in results)
    seconds = sum(r["us"] for r in results) / 1e6
    return requests / seconds, sum(r["p50_us"] for r in results) / len(results) / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=4.0, help="measured seconds per target, level and round")
    parser.add_argument("--concurrency", default="1,64", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve", choices=KINDS, help="run one reference server instead (with --port, --upstream)")
    parser.add_argument("--port", type=int)
    parser.add_argument("--upstream", type=int, help="the stub's port, for --serve")
    args = parser.parse_args(argv)
    if args.serve:
        if not args.port or not args.upstream:
            parser.error("--serve needs --port and --upstream")
        serve_forever(args.serve, args.port, args.upstream)
        return 0
    try:
        return asyncio.run(compare(args))
    except run.SetupError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
