"""Measure what the gateway costs: the same MCP load, direct to a stub upstream and through mcpgate.

    python bench/run.py [--scenario call|list|stream|sessions] [--duration 5] [--concurrency 1,64]
                        [--mode legacy|modern] [--sse] [--endpoint server|unified] [--secured]
                        [--observed] [--limited] [--analytics] [--redis] [--workers N] [--sessions K] [--json]

Starts bench/stub_upstream.py and `python -m mcpgate start` on free loopback ports, measures
each (call, list: a closed-loop load of tools/call or tools/list; stream: progress-event delay
and streamed throughput; sessions: the gateway's memory per held legacy session), prints one
table, and always stops the children.
Exit status: 0 clean, 1 if any request failed, 2 if the stub or the gateway could not be set up.
See bench/README.md for how to read the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Measure this checkout, not whatever mcpgate happens to be installed: here and in the gateway child.
sys.path.insert(0, str(ROOT))

from mcpgate.sse import SSEParser  # noqa: E402

STUB = HERE / "stub_upstream.py"
LEGACY = "2025-11-25"
MODERN = "2026-07-28"
MODERN_META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
BASE_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10)
SCENARIOS = ("call", "list", "stream", "sessions")
NOTE = (
    "Compare the ratios, not the absolute numbers: load generator, stub and gateway share this machine's CPUs,\n"
    "so absolute req/s and latency move with whatever else runs. req/s ratio: gateway / direct (1.0 = free).\n"
    "p50 ratio: gateway / direct (1.0 = no added latency). Concurrency 1 p50 is the cleanest per-request cost.\n"
    "cpu µs/req: the target process's own CPU time per request (Linux), steadier than req/s on a busy machine.\n"
    "RSS MiB: the target process's resident memory (with its workers) right after that level's load (Linux)."
)
STREAM_NOTE = (
    "delay: from the upstream stamping a progress event to its arrival at the client, 100 events a call,\n"
    "one call at a time; added = gateway's median - direct's. MB/s: a 1 MB result streamed, one call at a\n"
    "time; ratio = gateway ÷ direct. Loopback on one machine: a shared, busy CPU shows in both."
)
SESSIONS_NOTE = (
    "KiB/session: the gateway's resident memory with the sessions open (each with its GET stream held),\n"
    "minus before, divided by the sessions open. Python rarely returns freed memory to the system, so\n"
    "the figure is what holding them costs at peak; run it with a few hundred and a few thousand to see it is linear."
)


class SetupError(Exception):
    """The stub or the gateway did not come up or answered wrongly: nothing was measured."""


@dataclass(frozen=True, slots=True)
class Result:
    concurrency: int
    target: str
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float | None  # None when no request succeeded
    p99_ms: float | None
    first_error: str | None = None
    cpu_us: float | None = None  # the target process's CPU time per request (Linux), which noise blurs less
    rss_mib: float | None = None  # the target process's resident memory right after the load (Linux)


# --- child processes ------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float | None:
    """User plus system CPU time a process and its live children have used so far, from /proc
    (None elsewhere); the children are the workers of a ``--workers`` gateway.

    Requests per second move with whatever else shares the machine; the CPU time the gateway
    spends per request barely does, so it tells two variants of the gateway apart far better."""
    if pid is None:
        return None
    total = _own_cpu(pid)
    if total is None:
        return None
    for child in _children(pid):
        total += _own_cpu(child) or 0.0
    return total


def rss_mib(pid: int | None) -> float | None:
    """Resident memory of a process and its live children in MiB, from /proc (None elsewhere).

    VmRSS is what the issue's memory targets speak of: what the process holds in RAM, shared
    library pages included, so it is comparable with what `ps` and container limits show."""
    if pid is None:
        return None
    total = _own_rss_kib(pid)
    if total is None:
        return None
    for child in _children(pid):
        total += _own_rss_kib(child) or 0
    return round(total / 1024, 1)


def _own_rss_kib(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])  # "VmRSS:    51234 kB"
    return None  # a zombie has no memory left to report


def _children(pid: int) -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit() and _parent(entry.name) == pid]


def _stat(pid: int | str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _own_cpu(pid: int) -> float | None:
    fields = _stat(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _parent(pid: str) -> int | None:
    fields = _stat(pid)
    return None if fields is None else int(fields[1])


def cpu_per_request(before: float | None, after: float | None, requests: int) -> float | None:
    if before is None or after is None or requests <= 0:
        return None
    return round((after - before) / requests * 1e6, 1)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Child:
    """A subprocess whose output goes to a temp file (an unread pipe could block it)."""

    def __init__(self, name: str, argv: Sequence[str]) -> None:
        self.name = name
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child
        pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": pythonpath}
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def output(self, limit: int = 4000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-limit:]

    def wait_listening(self, port: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SetupError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise SetupError(f"{self.name} did not listen on 127.0.0.1:{port} within {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


@contextlib.contextmanager
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in reversed(started):
            child.stop()


def start_stub(started: list[Child], sse: bool) -> str:
    """The stub's URL; its process is ``started[-1]``."""
    port = free_port()
    child = Child("stub upstream", [sys.executable, str(STUB), "--port", str(port), *(["--sse"] if sse else [])])
    started.append(child)
    child.wait_listening(port)
    return f"http://127.0.0.1:{port}/mcp"


BENCH_KEY = "mgk_bench-key-not-a-secret-0123456789"


def secured_sections() -> str:
    """An API key and a 20-rule policy whose allowing rule comes last: every rule is tried."""
    key_hash = "sha256:" + hashlib.sha256(BENCH_KEY.encode()).hexdigest()
    rules = [
        f'    - {{clients: [other-{n}], servers: [stub], tools: ["tool_{n}_*"], decision: allow}}' for n in range(10)
    ]
    rules += [f'    - {{roles: [role-{n}], methods: ["prompts/*"], decision: deny}}' for n in range(9)]
    rules.append('    - {clients: [bench], servers: [stub], tools: ["echo", "search_*"], decision: allow}')
    return (
        f'auth:\n  api_keys:\n    - {{id: bench, key_hash: "{key_hash}", roles: [load]}}\n'
        "policy:\n  default: deny\n  rules:\n" + "\n".join(rules) + "\n"
    )


HUGE_BUCKET = "{capacity: 1000000000, refill_per_second: 1000000000}"  # checked on every call, never empty


def start_redis(started: list[Child], directory: Path) -> str:
    """A private redis-server for the redis and workers targets."""
    if shutil.which("redis-server") is None:
        raise SetupError("--redis and --workers need redis-server (Debian: apt install redis-server)")
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", ""]
    child = Child("redis-server", argv)
    started.append(child)
    child.wait_listening(port)
    return f"redis://127.0.0.1:{port}/0"


def variant_sections(variant: str, redis_url: str | None) -> str:
    """limited: memory buckets; redis: buckets and sessions in Redis; workers: sessions in Redis
    (what validate asks of several workers)."""
    if variant == "limited":
        return f"rate_limit:\n  default: {HUGE_BUCKET}\n"
    if variant == "redis":
        return (
            f"rate_limit:\n  backend: redis\n  redis_url: '{redis_url}'\n  default: {HUGE_BUCKET}\n"
            f"sessions: {{backend: redis, redis_url: '{redis_url}'}}\n"
        )
    if variant == "workers":
        return f"sessions: {{backend: redis, redis_url: '{redis_url}'}}\n"
    return ""


def observed_sections(config_dir: Path, on: bool) -> str:
    """Metrics and an audit log to a file (on), or neither (the baseline of an --observed run)."""
    if not on:
        return "observability:\n  metrics: {enabled: false}\n"
    audit = config_dir / "audit.jsonl"
    return f"observability:\n  metrics: {{enabled: true}}\n  audit: {{enabled: true, path: '{audit}'}}\n"


def start_gateway(
    started: list[Child],
    stub_url: str,
    config_dir: Path,
    endpoint: str = "server",
    variant: str = "gateway",
    observed: bool = False,
    redis_url: str | None = None,
    workers: int = 1,
    extra: str = "",
) -> str:
    """``variant``: gateway (plain), secured (an API key and a 20-rule policy) or observed (metrics and
    audit on). With ``observed``, the plain gateway runs with metrics off, so that the difference is theirs.
    ``extra``: more top-level config sections, appended as they are."""
    config = config_dir / f"mcpgate-bench-{variant}.yml"
    text = f"upstreams:\n  stub:\n    url: {stub_url}\n"
    if variant == "secured":
        text += secured_sections()
    if variant == "observed" or observed:
        text += observed_sections(config_dir, variant == "observed")
    if variant == "analytics":  # every request's event queued, and written to DuckDB once a second
        text += f"analytics: {{path: '{config_dir / 'analytics.duckdb'}'}}\n"
    text += variant_sections(variant, redis_url)
    config.write_text(text + extra)
    port = free_port()
    argv = [sys.executable, "-m", "mcpgate", "start", "-c", str(config), "--port", str(port), "--log-level", "warning"]
    if variant == "workers":
        argv += ["--workers", str(workers)]
    child = Child(variant, argv)
    started.append(child)
    child.wait_listening(port)
    # server: the per-server passthrough; unified: /mcp, where "echo" is routed by the catalogue.
    return f"http://127.0.0.1:{port}" + ("/mcp" if endpoint == "unified" else "/servers/stub/mcp")


# --- one MCP client ---------------------------------------------------------------------------


def _messages(body: bytes, content_type: str) -> list[Any]:
    if content_type == "text/event-stream":
        parser = SSEParser()
        return [json.loads(event.data) for event in parser.feed(body) if event.data]
    return [json.loads(body)]


class Client:
    """Speaks just enough MCP for the load: a session in the legacy era, the modern headers otherwise.

    Every request it sends is the same one (``method``; for tools/call, ``tool`` with ``arguments``),
    built once; ``progress_token`` asks for progress notifications."""

    def __init__(
        self,
        url: str,
        mode: str,
        credential: dict[str, str] | None = None,
        *,
        method: str = "tools/call",
        tool: str = "echo",
        arguments: dict[str, Any] | None = None,
        progress_token: str | None = None,
    ) -> None:
        self.url = url
        self.mode = mode
        self.method = method
        self.tool = tool
        self.arguments = {"text": "hi"} if arguments is None else arguments
        self.base = {**BASE_HEADERS, **(credential or {})}
        self.headers = dict(self.base)
        self._ids = itertools.count(1)
        params: dict[str, Any] = {"name": tool, "arguments": self.arguments} if method == "tools/call" else {}
        meta: dict[str, Any] = {} if progress_token is None else {"progressToken": progress_token}
        if mode == "modern":
            self.headers |= {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
            if method == "tools/call":
                self.headers["Mcp-Name"] = tool
            meta = {**MODERN_META, **meta}
        if meta:
            params["_meta"] = meta
        # Every call gets a fresh id (two in-flight requests must not share one); the rest is fixed.
        encoded = json.dumps(params, separators=(",", ":")).encode()
        self.tail = b',"method":"' + method.encode() + b'","params":' + encoded + b"}"
        # What a good answer's body holds: survives any re-serialization (spacing, key order); an error lacks it.
        self.marker = b'"echo"' if method == "tools/list" else b'"ok"'

    def call_body(self) -> bytes:
        return b'{"jsonrpc":"2.0","id":' + str(next(self._ids)).encode() + self.tail

    def accepts(self, answer: Any) -> bool:
        """Whether a parsed answer is the right result for the request this client sends."""
        try:
            result = answer["result"]
            if self.method == "tools/list":
                return any(tool["name"] == "echo" for tool in result["tools"])
            text = result["content"][0]["text"]
            expected = len(text) == self.arguments["bytes"] if self.tool == "stream" else text == "ok"
            return expected and result["isError"] is False
        except (KeyError, IndexError, TypeError):
            return False

    async def setup(self, session: aiohttp.ClientSession) -> None:
        """Open the MCP session (legacy) and check one real call, so a broken path fails loudly up front."""
        await self.open_session(session)
        async with session.post(self.url, data=self.call_body(), headers=self.headers) as resp:
            body = await resp.read()
            status, content_type = resp.status, resp.content_type
        try:
            [answer] = [m for m in _messages(body, content_type) if "id" in m]
            ok = self.accepts(answer)
        except (ValueError, TypeError):
            ok = False
        if status != 200 or not ok:
            raise SetupError(f"{self.method} at {self.url}: HTTP {status} {content_type} {body[:300]!r}")

    async def open_session(self, session: aiohttp.ClientSession) -> None:
        """initialize and notifications/initialized in the legacy era; nothing to open in the modern one."""
        if self.mode == "legacy":
            init = {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": LEGACY,
                    "capabilities": {},
                    "clientInfo": {"name": "mcpgate-bench", "version": "1.0"},
                },
            }
            async with session.post(self.url, json=init, headers=self.base) as resp:
                body = await resp.read()
                session_id = resp.headers.get("Mcp-Session-Id")
                if resp.status != 200 or not session_id:
                    raise SetupError(f"initialize at {self.url}: HTTP {resp.status} {body[:300]!r}")
            self.headers |= {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": LEGACY}
            note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            async with session.post(self.url, json=note, headers=self.headers) as resp:
                if resp.status != 202:
                    raise SetupError(f"notifications/initialized at {self.url}: HTTP {resp.status}")

    async def teardown(self, session: aiohttp.ClientSession) -> None:
        if "Mcp-Session-Id" in self.headers:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.delete(self.url, headers=self.headers):
                    pass


# --- the load -------------------------------------------------------------------------------


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.elapsed = 0.0
        self.cpu_us: float | None = None
        self.rss_mib: float | None = None
        self.errors = 0
        self.first_error: str | None = None

    def error(self, what: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = what


async def worker(session: aiohttp.ClientSession, client: Client, deadline: float, tally: Tally) -> None:
    # Closed loop: one request at a time per worker; one in flight at the deadline still completes.
    while (start := time.perf_counter()) < deadline:
        try:
            async with session.post(client.url, data=client.call_body(), headers=client.headers) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.error(f"{type(exc).__name__}: {exc}")
            continue
        if status == 200 and client.marker in body:
            tally.latencies.append(time.perf_counter() - start)
        else:
            tally.error(f"HTTP {status}: {body[:200]!r}")


async def run_level(client: Client, concurrency: int, duration: float, warmup: float, pid: int | None = None) -> Tally:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT) as session:
        await client.setup(session)
        try:
            if warmup > 0:
                await asyncio.gather(
                    *(worker(session, client, time.perf_counter() + warmup, Tally()) for _ in range(concurrency))
                )
            tally = Tally()
            cpu = cpu_seconds(pid)
            start = time.perf_counter()
            await asyncio.gather(*(worker(session, client, start + duration, tally) for _ in range(concurrency)))
            tally.elapsed = time.perf_counter() - start
            tally.cpu_us = cpu_per_request(cpu, cpu_seconds(pid), len(tally.latencies))
            tally.rss_mib = rss_mib(pid)
            return tally
        finally:
            await client.teardown(session)


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: an observed latency, never an interpolation between two."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(concurrency: int, target: str, tally: Tally) -> Result:
    ordered = sorted(tally.latencies)
    return Result(
        concurrency=concurrency,
        target=target,
        requests=len(ordered),
        errors=tally.errors,
        seconds=round(tally.elapsed, 3),
        rps=round(len(ordered) / tally.elapsed, 1),
        p50_ms=round(percentile(ordered, 50) * 1000, 3) if ordered else None,
        p99_ms=round(percentile(ordered, 99) * 1000, 3) if ordered else None,
        first_error=tally.first_error,
        cpu_us=tally.cpu_us,
        rss_mib=tally.rss_mib,
    )


# --- the same load from wrk (C, far faster than this Python client) ---------------------------

# One wrk thread, so the Lua counter alone keeps request ids unique. `bad` is a per-thread global
# that done() collects: an answer counts only if it is HTTP 200 and carries the client's marker
# ("ok" for tools/call, "echo" for tools/list).
WRK_SCRIPT = """
wrk.method = "POST"
%(headers)s
local tail = [==[%(tail)s]==]
local marker = [==[%(marker)s]==]
local counter = 0
bad = 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function request()
  counter = counter + 1
  return wrk.format(nil, nil, nil, '{"jsonrpc":"2.0","id":' .. counter .. tail)
end
function response(status, headers, body)
  if status ~= 200 or not string.find(body, marker, 1, true) then bad = bad + 1 end
end
function done(summary, latency, requests)
  local bad_total = 0
  for _, t in ipairs(threads) do bad_total = bad_total + t:get("bad") end
  local e = summary.errors
  io.write(string.format('MCPGATE_BENCH {"requests":%%d,"us":%%d,"p50_us":%%d,"p99_us":%%d,"bad":%%d,"socket":%%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), bad_total,
    e.connect + e.read + e.write + e.timeout))
end
"""


def write_wrk_script(client: Client, script: Path) -> None:
    """``WRK_SCRIPT`` for ``client``: its headers, its request's tail after the id, its marker."""
    headers = "\n".join(f"wrk.headers[ [==[{k}]==] ] = [==[{v}]==]" for k, v in client.headers.items())
    fields = {"headers": headers, "tail": client.tail.decode(), "marker": client.marker.decode()}
    script.write_text(WRK_SCRIPT % fields)


async def wrk_once(client: Client, concurrency: int, seconds: int, script: Path) -> dict[str, int]:
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), client.url]
    proc = await asyncio.to_thread(subprocess.run, argv, capture_output=True, timeout=seconds + 30, check=False)
    out = proc.stdout.decode(errors="replace")
    for line in out.splitlines():
        if line.startswith("MCPGATE_BENCH "):
            return dict(json.loads(line.removeprefix("MCPGATE_BENCH ")))
    raise SetupError(f"wrk failed ({proc.returncode}):\n{out}{proc.stderr.decode(errors='replace')}")


async def run_level_wrk(
    client: Client, concurrency: int, duration: float, warmup: float, target: str, pid: int | None = None
) -> Result:
    """wrk takes whole seconds: the duration is rounded up, and any warm-up lasts one second."""
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
        await client.setup(session)  # the session (legacy) and the check call, as for the Python client
        try:
            with tempfile.TemporaryDirectory(prefix="mcpgate-bench-") as tmp:
                script = Path(tmp) / "call.lua"
                write_wrk_script(client, script)
                if warmup > 0:
                    await wrk_once(client, concurrency, 1, script)
                cpu = cpu_seconds(pid)
                run = await wrk_once(client, concurrency, max(1, math.ceil(duration)), script)
                cpu_after = cpu_seconds(pid)
                rss = rss_mib(pid)
        finally:
            await client.teardown(session)
    ok = run["requests"] - run["bad"]
    errors = run["bad"] + run["socket"]
    return Result(
        concurrency=concurrency,
        target=target,
        requests=ok,
        errors=errors,
        seconds=round(run["us"] / 1e6, 3),
        rps=round(ok / (run["us"] / 1e6), 1),
        p50_ms=round(run["p50_us"] / 1000, 3) if ok else None,
        p99_ms=round(run["p99_us"] / 1000, 3) if ok else None,
        first_error=f"{errors} failed requests (wrk does not keep bodies)" if errors else None,
        cpu_us=cpu_per_request(cpu, cpu_after, run["requests"]),
        rss_mib=rss,
    )


def credential(target: str) -> dict[str, str] | None:
    return {"X-API-Key": BENCH_KEY} if target == "secured" else None


async def measure(
    targets: dict[str, str],
    mode: str,
    levels: Sequence[int],
    duration: float,
    warmup: float,
    tool: str = "aiohttp",
    pids: dict[str, int] | None = None,
    method: str = "tools/call",
) -> list[Result]:
    """Each level runs every target; with more than one gateway, the gateways run again in reverse
    order (A B B A) and their two runs are merged, so a machine whose speed drifts during the
    run does not favour whichever gateway went first. ``method``: tools/call (of echo) or tools/list."""
    results = []
    gateways = [t for t in targets if t != "direct"]
    order = [*targets, *reversed(gateways)] if len(gateways) > 1 else list(targets)
    for concurrency in levels:
        runs: dict[str, list[Result]] = {}
        for target in order:
            client = Client(targets[target], mode, credential(target), method=method)
            pid = (pids or {}).get(target)
            if tool == "wrk":
                result = await run_level_wrk(client, concurrency, duration, warmup, target, pid)
            else:
                tally = await run_level(client, concurrency, duration, warmup, pid)
                result = summarize(concurrency, target, tally)
            runs.setdefault(target, []).append(result)
        results += [merge(found) for found in runs.values()]
    return results


def merge(runs: Sequence[Result]) -> Result:
    """Several runs of one target at one level as one: totals, and the mean of the percentiles."""
    if len(runs) == 1:
        return runs[0]
    requests, seconds = sum(r.requests for r in runs), sum(r.seconds for r in runs)
    p50s, p99s = [r.p50_ms for r in runs if r.p50_ms is not None], [r.p99_ms for r in runs if r.p99_ms is not None]
    cpu = [(r.cpu_us, r.requests) for r in runs if r.cpu_us is not None]
    cpu_requests = sum(n for _, n in cpu)
    return Result(
        concurrency=runs[0].concurrency,
        target=runs[0].target,
        requests=requests,
        errors=sum(r.errors for r in runs),
        seconds=round(seconds, 3),
        rps=round(requests / seconds, 1) if seconds else 0.0,
        p50_ms=round(sum(p50s) / len(p50s), 3) if p50s else None,
        p99_ms=round(sum(p99s) / len(p99s), 3) if p99s else None,
        first_error=next((r.first_error for r in runs if r.first_error), None),
        cpu_us=round(sum(us * n for us, n in cpu) / cpu_requests, 1) if cpu_requests else None,
        # The larger reading: memory a gateway took under this load is memory it needs for it.
        rss_mib=max((r.rss_mib for r in runs if r.rss_mib is not None), default=None),
    )


# --- stream: how fast progress events and a large result get through ---------------------------

STREAM_LATENCY: dict[str, Any] = {"events": 100, "bytes": 2}  # many small events: their delay
STREAM_THROUGHPUT: dict[str, Any] = {"events": 0, "bytes": 1_000_000}  # one large result: its rate
STREAM_TOKEN = "mcpgate-bench"


@dataclass(frozen=True, slots=True)
class StreamResult:
    target: str
    calls: int  # latency calls answered in full
    events: int  # progress events timed
    median_delay_ms: float | None  # from the upstream's send time to the client's arrival time
    p99_delay_ms: float | None
    transfers: int  # large results read in full
    mb_per_s: float | None  # 10^6 bytes of SSE body per second, large results one after another
    errors: int
    added_median_ms: float | None = None  # a gateway's median delay minus direct's
    throughput_ratio: float | None = None  # a gateway's MB/s ÷ direct's
    first_error: str | None = None
    rss_mib: float | None = None


class StreamTally(Tally):
    def __init__(self) -> None:
        super().__init__()
        self.delays_ns: list[int] = []
        self.calls = 0
        self.bytes = 0


async def stream_worker(session: aiohttp.ClientSession, client: Client, deadline: float, tally: StreamTally) -> None:
    """Calls the stub's stream tool one call after another, reading each answer as it arrives.

    The arrival time is taken once per chunk, before parsing, so an event's delay is the way it
    travelled and not the time this client spent parsing the events that came with it."""
    expected = client.arguments["events"]
    while time.perf_counter() < deadline:
        progress, answered, received = 0, False, 0
        try:
            async with session.post(client.url, data=client.call_body(), headers=client.headers) as resp:
                if resp.status != 200 or resp.content_type != "text/event-stream":
                    body = await resp.read()
                    tally.error(f"HTTP {resp.status} {resp.content_type}: {body[:200]!r}")
                    continue
                parser = SSEParser()
                async for chunk in resp.content.iter_any():
                    arrived = time.time_ns()
                    received += len(chunk)
                    for event in parser.feed(chunk):
                        message = json.loads(event.data) if event.data else {}
                        if message.get("method") == "notifications/progress":
                            params = message["params"]
                            if params["progressToken"] != STREAM_TOKEN:
                                raise ValueError(f"progress for another token: {params['progressToken']!r}")
                            tally.delays_ns.append(arrived - int(params["message"]))
                            progress += 1
                        elif "id" in message:
                            answered = client.accepts(message)
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError, AttributeError) as exc:
            tally.error(f"{type(exc).__name__}: {exc}")
            continue
        tally.bytes += received
        if not answered:
            tally.error("the stream ended without the expected result")
        elif progress != expected:
            tally.error(f"{progress} of {expected} progress events arrived")
        else:
            tally.calls += 1


async def run_stream(client: Client, duration: float, warmup: float) -> StreamTally:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=REQUEST_TIMEOUT) as session:
        await client.setup(session)
        try:
            if warmup > 0:
                await stream_worker(session, client, time.perf_counter() + warmup, StreamTally())
            tally = StreamTally()
            start = time.perf_counter()
            await stream_worker(session, client, start + duration, tally)
            tally.elapsed = time.perf_counter() - start
            return tally
        finally:
            await client.teardown(session)


async def measure_stream(
    targets: dict[str, str], mode: str, duration: float, warmup: float, pids: dict[str, int] | None = None
) -> list[StreamResult]:
    """Per target, first the delay of progress events, then the rate of a large result; one call at
    a time, so that what is measured is the way through, not queueing."""
    results = []
    for target, url in targets.items():
        runs = []
        for arguments in (STREAM_LATENCY, STREAM_THROUGHPUT):
            client = Client(
                url, mode, credential(target), tool="stream", arguments=arguments, progress_token=STREAM_TOKEN
            )
            runs.append(await run_stream(client, duration, warmup))
        latency, throughput = runs
        delays = sorted(d / 1e6 for d in latency.delays_ns)
        results.append(
            StreamResult(
                target=target,
                calls=latency.calls,
                events=len(delays),
                median_delay_ms=round(percentile(delays, 50), 3) if delays else None,
                p99_delay_ms=round(percentile(delays, 99), 3) if delays else None,
                transfers=throughput.calls,
                mb_per_s=round(throughput.bytes / 1e6 / throughput.elapsed, 1) if throughput.calls else None,
                errors=latency.errors + throughput.errors,
                first_error=latency.first_error or throughput.first_error,
                rss_mib=rss_mib((pids or {}).get(target)),
            )
        )
    return compare_streams(results)


def compare_streams(results: Sequence[StreamResult]) -> list[StreamResult]:
    """Each gateway against direct: the delay it adds, the share of direct's throughput it keeps."""
    direct = next((r for r in results if r.target == "direct"), None)
    if direct is None:
        return list(results)
    out = []
    for r in results:
        if r.target != "direct":
            if r.median_delay_ms is not None and direct.median_delay_ms is not None:
                r = replace(r, added_median_ms=round(r.median_delay_ms - direct.median_delay_ms, 3))
            if r.mb_per_s is not None and direct.mb_per_s:
                r = replace(r, throughput_ratio=round(r.mb_per_s / direct.mb_per_s, 3))
        out.append(r)
    return out


# --- sessions: what a held legacy session costs the gateway in memory ---------------------------

# Sessions being opened at once: enough to open a thousand in seconds, few enough not to be a flood.
OPENING_CONCURRENCY = 32
WARMUP_SESSIONS = 8
# The descriptors a gateway needs besides two per held session (one to the client, one upstream).
SPARE_FILES = 256
STREAM_HEADERS_TIMEOUT = 10.0  # for a GET stream's answer to begin; the stream itself may idle forever


@dataclass(frozen=True, slots=True)
class SessionsResult:
    target: str
    sessions: int  # asked for
    opened: int  # open, each with its GET stream, when the memory was read
    rss_before_mib: float | None
    rss_after_mib: float | None
    kib_per_session: float | None  # (after - before) / opened
    errors: int
    first_error: str | None = None


def sessions_sections(count: int) -> str:
    """Room for ``count`` sessions from one client address, which the defaults would cap at 1,000."""
    room = count + WARMUP_SESSIONS + OPENING_CONCURRENCY
    return f"sessions: {{max_sessions: {max(10_000, room)}, max_per_client: {max(1_000, room)}}}\n"


def raise_open_files_limit() -> int | None:
    """Raise the soft limit on open files to the hard one (the children inherit it); the new soft
    limit, or None where there is none to raise."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        with contextlib.suppress(ValueError, OSError):  # an unlimited hard limit may exceed the kernel's
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def files_needed(sessions: int) -> int:
    """The gateway holds two sockets per session with a GET stream, the most of any process here."""
    return 2 * sessions + SPARE_FILES


async def open_stream(session: aiohttp.ClientSession, client: Client) -> aiohttp.ClientResponse:
    """A legacy session's GET stream, its answer begun and then left open: the caller closes it."""
    headers = {k: v for k, v in client.headers.items() if k != "Content-Type"} | {"Accept": "text/event-stream"}
    async with asyncio.timeout(STREAM_HEADERS_TIMEOUT):
        resp = await session.get(client.url, headers=headers, timeout=aiohttp.ClientTimeout(total=None))
    if resp.status != 200 or resp.content_type != "text/event-stream":
        resp.close()
        raise SetupError(f"GET stream at {client.url}: HTTP {resp.status} {resp.content_type}")
    return resp


class HeldSessions:
    """Legacy sessions, each with its GET stream held open, opened and closed a few at a time."""

    def __init__(self, session: aiohttp.ClientSession, url: str, tally: Tally) -> None:
        self.session = session
        self.url = url
        self.tally = tally
        self.held: list[tuple[Client, aiohttp.ClientResponse]] = []
        self.gate = asyncio.Semaphore(OPENING_CONCURRENCY)

    async def open(self, count: int) -> None:
        await asyncio.gather(*(self._open_one() for _ in range(count)))

    async def _open_one(self) -> None:
        async with self.gate:
            client = Client(self.url, "legacy")
            try:
                await client.open_session(self.session)
                self.held.append((client, await open_stream(self.session, client)))
            except (SetupError, aiohttp.ClientError, TimeoutError) as exc:
                self.tally.error(f"{type(exc).__name__}: {exc}")
                await client.teardown(self.session)

    async def close(self) -> None:
        """DELETE each session, which ends its stream at the stub and so in the gateway too."""
        held, self.held = self.held, []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30 + len(held) / 50):
                await asyncio.gather(*(self._close_one(client, resp) for client, resp in held))
        for _, resp in held:
            resp.close()  # any the timeout left open

    async def _close_one(self, client: Client, resp: aiohttp.ClientResponse) -> None:
        async with self.gate:
            await client.teardown(self.session)
            resp.close()


async def measure_sessions(url: str, pid: int | None, count: int, target: str = "gateway") -> SessionsResult:
    """The gateway's memory before and after ``count`` held sessions; a few sessions opened and
    closed first keep one-time costs (first connection, lazily built state) out of the figure."""
    tally = Tally()
    budget = 30 + count / 20  # seconds; a thousand sessions open in a few
    # No connection limit: every held stream keeps a connection of its own.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=REQUEST_TIMEOUT) as session:
        sessions = HeldSessions(session, url, tally)
        try:
            await sessions.open(WARMUP_SESSIONS)
            await sessions.close()
            before = rss_mib(pid)
            try:
                async with asyncio.timeout(budget):
                    await sessions.open(count)
            except TimeoutError:
                tally.error(f"only {len(sessions.held)} of {count} sessions opened within {budget:g}s")
            after = rss_mib(pid)
            opened = len(sessions.held)
        finally:
            await sessions.close()
    per_session = None
    if before is not None and after is not None and opened:
        per_session = round((after - before) * 1024 / opened, 1)
    return SessionsResult(
        target=target,
        sessions=count,
        opened=opened,
        rss_before_mib=before,
        rss_after_mib=after,
        kib_per_session=per_session,
        errors=tally.errors,
        first_error=tally.first_error,
    )


# --- report ---------------------------------------------------------------------------------


def ratios(results: Sequence[Result]) -> list[dict[str, Any]]:
    by_key = {(r.concurrency, r.target): r for r in results}
    out = []
    for (concurrency, target), gw in by_key.items():
        direct = by_key.get((concurrency, "direct"))
        if target == "direct" or direct is None or not (direct.rps and direct.p50_ms and gw.p50_ms):
            continue
        out.append(
            {
                "concurrency": concurrency,
                "target": target,
                "rps_ratio": round(gw.rps / direct.rps, 3),
                "p50_ratio": round(gw.p50_ms / direct.p50_ms, 3),
            }
        )
    return out


def environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


VARIANTS = (
    ("secured", "auth + policy"),
    ("observed", "metrics + audit"),
    ("limited", "rate limits (memory)"),
    ("analytics", "analytics (DuckDB)"),
    ("redis", "rate limits + sessions in Redis"),
    ("workers", "several workers"),
)


def header(settings: dict[str, Any]) -> str:
    # The default scenario says nothing, so that a plain run's header reads as it always has.
    hidden = ("environment", "concurrency", *(("scenario",) if settings.get("scenario") == "call" else ()))
    shown = {k: v for k, v in settings.items() if k not in hidden} | settings["environment"]
    return "mcpgate bench: " + " ".join(f"{k}={v}" for k, v in shown.items())


def idle_line(idle_rss: dict[str, float | None]) -> str:
    shown = ", ".join(f"{target} {mib(value)}" for target, value in idle_rss.items())
    return f"  idle RSS MiB (after start-up, before any load): {shown}"


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render_table(
    results: Sequence[Result], settings: dict[str, Any], idle_rss: dict[str, float | None] | None = None
) -> str:
    by_level = {(r["concurrency"], r["target"]): r for r in ratios(results)}
    lines = [
        header(settings),
        "",
        f"{'conc':>5} {'target':<8} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7} {'req/s ratio':>12} "
        f"{'p50 ratio':>10} {'cpu µs/req':>11} {'RSS MiB':>8}",
    ]
    for r in results:
        ratio = by_level.get((r.concurrency, r.target))
        rps_ratio = f"{ratio['rps_ratio']:.2f}" if ratio else ""
        p50_ratio = f"{ratio['p50_ratio']:.2f}" if ratio else ""
        p50 = "-" if r.p50_ms is None else f"{r.p50_ms:.3f}"
        p99 = "-" if r.p99_ms is None else f"{r.p99_ms:.3f}"
        cpu = "-" if r.cpu_us is None else f"{r.cpu_us:.1f}"
        lines.append(
            f"{r.concurrency:>5} {r.target:<8} {r.rps:>10.1f} {p50:>9} {p99:>9} {r.errors:>7} "
            f"{rps_ratio:>12} {p50_ratio:>10} {cpu:>11} {mib(r.rss_mib):>8}"
        )
    lines += [f"  first error ({r.target}, c={r.concurrency}): {r.first_error}" for r in results if r.first_error]
    if idle_rss:
        lines.append(idle_line(idle_rss))
    measured = {(r.concurrency, r.target): r for r in results}
    for level in sorted({r.concurrency for r in results}):
        plain = by_level.get((level, "gateway"))
        plain_cpu = measured[(level, "gateway")].cpu_us if (level, "gateway") in measured else None
        for target, what in VARIANTS:
            other = by_level.get((level, target))
            if plain and other:
                cost = 1 - other["rps_ratio"] / plain["rps_ratio"]
                line = f"  c={level}: {what} cost {cost:.1%} of the gateway's req/s ratio ({target} ÷ gateway)"
                other_cpu = measured[(level, target)].cpu_us
                if plain_cpu and other_cpu:
                    line += f", {other_cpu / plain_cpu - 1:+.1%} CPU per request"
                lines.append(line)
    return "\n".join([*lines, "", NOTE])


def render_stream(results: Sequence[StreamResult], settings: dict[str, Any], idle_rss: dict[str, float | None]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [
        header(settings),
        "",
        f"{'target':<8} {'events':>7} {'median delay ms':>16} {'p99 delay ms':>13} {'added ms':>9} "
        f"{'MB/s':>8} {'ratio':>6} {'errors':>7} {'RSS MiB':>8}",
    ]
    for r in results:
        rate = "-" if r.mb_per_s is None else f"{r.mb_per_s:.1f}"
        ratio = "" if r.throughput_ratio is None else f"{r.throughput_ratio:.2f}"
        added = "" if r.added_median_ms is None else f"{r.added_median_ms:+.3f}"
        lines.append(
            f"{r.target:<8} {r.events:>7} {ms(r.median_delay_ms):>16} {ms(r.p99_delay_ms):>13} {added:>9} "
            f"{rate:>8} {ratio:>6} {r.errors:>7} {mib(r.rss_mib):>8}"
        )
    lines += [f"  first error ({r.target}): {r.first_error}" for r in results if r.first_error]
    return "\n".join([*lines, idle_line(idle_rss), "", STREAM_NOTE])


def render_sessions(result: SessionsResult, settings: dict[str, Any], idle_rss: dict[str, float | None]) -> str:
    per = "-" if result.kib_per_session is None else f"{result.kib_per_session:.1f}"
    lines = [
        header(settings),
        "",
        f"{'target':<8} {'sessions':>9} {'open':>6} {'RSS before MiB':>15} {'RSS after MiB':>14} "
        f"{'KiB/session':>12} {'errors':>7}",
        f"{result.target:<8} {result.sessions:>9} {result.opened:>6} {mib(result.rss_before_mib):>15} "
        f"{mib(result.rss_after_mib):>14} {per:>12} {result.errors:>7}",
    ]
    if result.first_error:
        lines.append(f"  first error: {result.first_error}")
    return "\n".join([*lines, idle_line(idle_rss), "", SESSIONS_NOTE])


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure mcpgate's overhead: the same MCP load direct to a stub upstream and through the gateway.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="call",
        help="call: tools/call load; list: tools/list load; stream: progress-event delay and streamed "
        "throughput; sessions: the gateway's memory per held legacy session with its GET stream",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per concurrency and target")
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds of unmeasured load first [default: 20%% of duration, ≤1s]"
    )
    parser.add_argument("--concurrency", default="1,64", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--mode", choices=["legacy", "modern"], default="legacy", help="MCP protocol era")
    parser.add_argument("--sse", action="store_true", help="the stub answers tools/call as text/event-stream")
    parser.add_argument(
        "--endpoint",
        choices=["server", "unified"],
        default="server",
        help="gateway endpoint: /servers/stub/mcp (passthrough) or /mcp (the unified endpoint)",
    )
    parser.add_argument(
        "--secured",
        action="store_true",
        help="also measure a gateway with an API key and a 20-rule policy (target 'secured')",
    )
    parser.add_argument(
        "--observed",
        action="store_true",
        help="also measure a gateway with metrics and an audit log on (target 'observed'; 'gateway' then runs without)",
    )
    parser.add_argument(
        "--limited", action="store_true", help="also measure a gateway with memory rate limits (target 'limited')"
    )
    parser.add_argument(
        "--analytics",
        action="store_true",
        help="also measure a gateway keeping every request in a DuckDB analytics file (target 'analytics')",
    )
    parser.add_argument(
        "--redis",
        action="store_true",
        help="also measure rate limits and sessions in a private redis-server (target 'redis')",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="also measure N worker processes, sessions in a private redis-server (target 'workers')",
    )
    parser.add_argument(
        "--sessions", type=int, default=1000, metavar="K", help="--scenario sessions: how many sessions to hold open"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--no-gateway", action="store_true", help="direct only: the load generator's own ceiling")
    parser.add_argument(
        "--tool", choices=["aiohttp", "wrk"], default="aiohttp", help="load generator (wrk: whole seconds only)"
    )
    args = parser.parse_args(argv)
    try:
        args.levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        parser.error("--concurrency takes comma-separated integers, e.g. 1,64")
    if not args.levels or min(args.levels) < 1:
        parser.error("--concurrency needs at least one level, each ≥ 1")
    if args.duration <= 0:
        parser.error("--duration must be positive")
    if args.tool == "wrk" and shutil.which("wrk") is None:
        parser.error("--tool wrk: no wrk binary on PATH (Debian/Ubuntu: apt install wrk)")
    if args.tool == "wrk" and args.scenario in ("stream", "sessions"):
        parser.error(f"--scenario {args.scenario} reads streams as they arrive: only --tool aiohttp does")
    if args.scenario == "sessions":
        if args.sessions < 1:
            parser.error("--sessions must be at least 1")
        if args.mode != "legacy" or args.endpoint != "server":
            parser.error("--scenario sessions holds legacy sessions on /servers/stub/mcp: no --mode or --endpoint")
        if args.no_gateway or args.secured or args.observed or args.limited or args.analytics or args.redis:
            parser.error("--scenario sessions measures the plain gateway only")
        if args.workers > 1:
            parser.error("--scenario sessions measures the plain gateway only")
    if args.warmup is None:
        args.warmup = min(1.0, args.duration / 5)
    return args


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C: inside asyncio.Runner that cancels the
    # load cleanly, outside it raises KeyboardInterrupt; either way the children are stopped.
    signal.raise_signal(signal.SIGINT)


def _new_loop() -> asyncio.AbstractEventLoop:
    # The load generator is Python too: the faster loop raises the ceiling it imposes on both targets.
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def start_targets(
    args: argparse.Namespace, started: list[Child], directory: Path
) -> tuple[dict[str, str], dict[str, int]]:
    """The stub and every gateway the flags ask for: their URLs and process ids, by target name."""
    stub_url = start_stub(started, args.sse)
    targets = {"direct": stub_url}
    pids = {"direct": started[-1].proc.pid}
    if args.no_gateway:
        return targets, pids
    extra = sessions_sections(args.sessions) if args.scenario == "sessions" else ""
    targets["gateway"] = start_gateway(started, stub_url, directory, args.endpoint, observed=args.observed, extra=extra)
    pids["gateway"] = started[-1].proc.pid
    if args.secured:
        targets["secured"] = start_gateway(started, stub_url, directory, args.endpoint, "secured")
        pids["secured"] = started[-1].proc.pid
    if args.observed:
        targets["observed"] = start_gateway(started, stub_url, directory, args.endpoint, "observed")
        pids["observed"] = started[-1].proc.pid
    if args.limited:
        targets["limited"] = start_gateway(started, stub_url, directory, args.endpoint, "limited")
        pids["limited"] = started[-1].proc.pid
    if args.analytics:
        targets["analytics"] = start_gateway(started, stub_url, directory, args.endpoint, "analytics")
        pids["analytics"] = started[-1].proc.pid
    redis_url = start_redis(started, directory) if args.redis or args.workers > 1 else None
    if args.redis:
        targets["redis"] = start_gateway(started, stub_url, directory, args.endpoint, "redis", redis_url=redis_url)
        pids["redis"] = started[-1].proc.pid
    if args.workers > 1:
        workers = args.workers
        targets["workers"] = start_gateway(
            started, stub_url, directory, args.endpoint, "workers", redis_url=redis_url, workers=workers
        )
        pids["workers"] = started[-1].proc.pid
    return targets, pids


async def run_scenario(
    args: argparse.Namespace, targets: dict[str, str], pids: dict[str, int]
) -> list[Result] | list[StreamResult] | SessionsResult:
    if args.scenario == "stream":
        return await measure_stream(targets, args.mode, args.duration, args.warmup, pids)
    if args.scenario == "sessions":
        return await measure_sessions(targets["gateway"], pids["gateway"], args.sessions)
    method = "tools/list" if args.scenario == "list" else "tools/call"
    return await measure(targets, args.mode, args.levels, args.duration, args.warmup, args.tool, pids, method)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    signal.signal(signal.SIGTERM, _interrupt)
    open_files = raise_open_files_limit()  # before any child starts: they inherit it
    if args.scenario == "sessions" and open_files is not None and open_files < files_needed(args.sessions):
        most = (open_files - SPARE_FILES) // 2
        print(f"bench setup failed: {open_files} open files allowed, at most --sessions {most} fit", file=sys.stderr)
        return 2
    env = environment()  # before the load, which would raise the load average it reports
    try:
        with tempfile.TemporaryDirectory(prefix="mcpgate-bench-") as config_dir, children() as started:
            targets, pids = start_targets(args, started, Path(config_dir))
            idle_rss = {target: rss_mib(pid) for target, pid in pids.items()}
            with asyncio.Runner(loop_factory=_new_loop) as runner:
                outcome = runner.run(run_scenario(args, targets, pids))
    except SetupError as exc:
        print(f"bench setup failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; children stopped", file=sys.stderr)
        return 130
    settings = {
        "scenario": args.scenario,
        "mode": args.mode,
        "tool": args.tool,
        "sse": args.sse,
        "endpoint": args.endpoint,
        "secured": args.secured,
        "observed": args.observed,
        "limited": args.limited,
        "analytics": args.analytics,
        "redis": args.redis,
        "workers": args.workers,
        "duration": args.duration,
        "warmup": args.warmup,
        "concurrency": args.levels,
        "environment": env,
    }
    if args.scenario == "sessions":
        settings["sessions"] = args.sessions
    if isinstance(outcome, SessionsResult):
        report: dict[str, Any] = {"sessions": asdict(outcome)}
        text = render_sessions(outcome, settings, idle_rss)
        failed = outcome.errors > 0
    elif args.scenario == "stream":
        streams = [r for r in outcome if isinstance(r, StreamResult)]
        report = {"stream": [asdict(r) for r in streams]}
        text = render_stream(streams, settings, idle_rss)
        failed = any(r.errors for r in streams)
    else:
        results = [r for r in outcome if isinstance(r, Result)]
        report = {"results": [asdict(r) for r in results], "ratios": ratios(results)}
        text = render_table(results, settings, idle_rss)
        failed = any(r.errors for r in results)
    if args.json:
        print(json.dumps({**settings, **report, "idle_rss_mib": idle_rss}, indent=2))
    else:
        print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
