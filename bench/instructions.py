"""Instructions per request: the one cost figure a busy, shared machine does not blur.

    python bench/instructions.py [--target gateway|direct|relay|httptools|aiohttp] [--scenario call|list]
                                 [--mode modern|legacy] [--endpoint server|unified] [--seconds 10]
                                 [--concurrency 4] [--source DIR] [--python PATH] [--metrics on|off] [--secured]

Timed runs (``bench/run.py``) move by a factor of two when a neighbour gets busy; counting the
instructions a process executes does not (repeat runs agree within about half a percent). So a
change on the hot path is judged here first, then confirmed in time with ``run.py``.

How: the stub starts as in ``run.py``; the target (the gateway, the stub itself with
``--target direct``, or one of ``floors.py``'s reference servers) starts under valgrind's
callgrind with instrumentation off; wrk warms it up (imports, caches, pools, the interpreter's
specialisation); instrumentation goes on for ``--seconds`` of wrk load and off again; the
instructions counted are divided by the requests wrk completed. valgrind makes the target about
50 times slower, so wrk's request count is small (a few thousand) but exact. ``--source DIR``
runs the mcpgate package found in DIR instead of this checkout's: an older worktree, or a copy
with one thing changed, to price that thing.

Needs ``valgrind`` (callgrind_control is part of it) and ``wrk``. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (bench/run.py: the stub, the MCP client, the wrk script)

FLOORS = ("relay", "httptools", "aiohttp")


def callgrind_control(pid: int, *flags: str) -> str:
    done = subprocess.run(["callgrind_control", *flags, str(pid)], capture_output=True, text=True, check=False)
    return done.stdout + done.stderr


def start_target(args: argparse.Namespace, stub_url: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """The process to count, under callgrind, and the URL to load it through."""
    port = run.free_port()
    if args.target == "direct":
        argv = [args.python, str(run.STUB), "--port", str(port)]
        url = f"http://127.0.0.1:{port}/mcp"
    elif args.target in FLOORS:  # bench/floors.py's reference servers, which check nothing
        argv = [args.python, str(HERE / "floors.py"), "--serve", args.target, "--port", str(port)]
        argv += ["--upstream", str(urlsplit(stub_url).port)]
        url = f"http://127.0.0.1:{port}/mcp"
    else:
        config = tmp / "gateway.yml"
        metrics = "true" if args.metrics == "on" else "false"
        config.write_text(
            f"upstreams:\n  stub:\n    url: {stub_url}\nobservability:\n  metrics: {{enabled: {metrics}}}\n"
            + (run.secured_sections() if args.secured else "")
        )
        argv = [args.python, "-m", "mcpgate", "start", "-c", str(config), "--port", str(port)]
        argv += ["--log-level", "warning"]
        url = f"http://127.0.0.1:{port}" + ("/mcp" if args.endpoint == "unified" else "/servers/stub/mcp")
    out = tmp / "callgrind.out"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    source = str(Path(args.source).resolve()) if args.source else str(run.ROOT)
    env = {**os.environ, "PYTHONPATH": source, "PYTHONUNBUFFERED": "1"}
    with (tmp / "target.log").open("wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([*valgrind, *argv], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    deadline = time.monotonic() + 120  # Python's start-up under valgrind takes a while
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise run.SetupError(f"the target exited:\n{(tmp / 'target.log').read_text(errors='replace')[-4000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, url, out
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise run.SetupError("the target did not listen within 120 s")


def total_instructions(out: Path) -> int:
    """The sum of every dump's ``totals:`` line: callgrind writes one file per dump, numbered, and one at exit."""
    total = 0
    for path in out.parent.glob(out.name + "*"):
        match = re.search(r"^totals: (\d+)", path.read_text(errors="replace"), re.MULTILINE)
        if match:
            total += int(match.group(1))
    return total


async def measure(args: argparse.Namespace) -> int:
    for tool in ("valgrind", "callgrind_control", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} not found (Debian: apt install valgrind wrk)", file=sys.stderr)
            return 2
    method = "tools/list" if args.scenario == "list" else "tools/call"
    with run.children() as started, tempfile.TemporaryDirectory(prefix="mcpgate-instr-") as name:
        tmp = Path(name)
        stub_url = run.start_stub(started, sse=False)
        proc, url, out = start_target(args, stub_url, tmp)
        try:
            client = run.Client(url, args.mode, run.credential("secured" if args.secured else "gateway"), method=method)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
                await client.setup(session)
                script = tmp / "load.lua"
                run.write_wrk_script(client, script)
                await run.wrk_once(client, args.concurrency, args.warmup, script)
                callgrind_control(proc.pid, "-i", "on")
                result = await run.wrk_once(client, args.concurrency, args.seconds, script)
                callgrind_control(proc.pid, "-i", "off")
                callgrind_control(proc.pid, "-d")
                await client.teardown(session)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        instructions = total_instructions(out)
        requests = result["requests"]
        if not requests or result["bad"] or result["socket"] or not instructions:
            print(f"nothing to count: {result}, {instructions} instructions", file=sys.stderr)
            return 1
        target = args.target + (" secured" if args.secured else "")
        what = f"{target} {args.mode} {method}" + (f" on {args.endpoint}" if args.target == "gateway" else "")
        print(f"{what}: {instructions / requests / 1000:.1f} k instructions per request ({requests} requests)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--target",
        choices=["gateway", "direct", *FLOORS],
        default="gateway",
        help="direct: the stub; relay, httptools, aiohttp: bench/floors.py's reference servers",
    )
    parser.add_argument("--scenario", choices=["call", "list"], default="call")
    parser.add_argument("--mode", choices=["legacy", "modern"], default="modern")
    parser.add_argument("--endpoint", choices=["server", "unified"], default="server")
    parser.add_argument("--metrics", choices=["on", "off"], default="on", help="the gateway's /metrics (on by default)")
    parser.add_argument(
        "--secured", action="store_true", help="an API key and a 20-rule policy, as run.py --secured sets up"
    )
    parser.add_argument("--seconds", type=int, default=10, help="counted seconds of load")
    parser.add_argument("--warmup", type=int, default=5, help="uncounted seconds of load first")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--source", help="a directory holding the mcpgate package to measure instead of this one")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter that runs the target (another Python version, with mcpgate's dependencies)",
    )
    args = parser.parse_args(argv)
    try:
        return asyncio.run(measure(args))
    except run.SetupError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
