"""The benchmark harness: a broken stub or a load generator that miscounts would measure nothing true."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from mcpgate.sse import SSEParser
from tests.conftest import require_or_skip

BENCH = Path(__file__).resolve().parent.parent / "bench"
LEGACY = "2025-11-25"
MODERN = "2026-07-28"
POST = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
CALL_RESULT = {"content": [{"type": "text", "text": "ok"}], "isError": False}


def load(name: str) -> ModuleType:
    """bench/ is a folder of scripts, not a package: import them by path."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


stub = load("stub_upstream")
bench = load("run")


def call(method: str, params: dict[str, Any] | None = None, id: int | str | None = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params or {}}
    if id is not None:
        message["id"] = id
    return message


@pytest.fixture(params=[False, True], ids=["json", "sse"])
async def stub_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    server = TestServer(stub.make_app(sse=request.param), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/mcp"))
    finally:
        await server.close()


async def answer(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    body = await resp.read()
    if resp.content_type == "text/event-stream":
        assert body.startswith(b"event: message\r\ndata: ") and body.endswith(b"\r\n\r\n")
        [event] = SSEParser().feed(body)
        return dict(json.loads(event.data))
    assert resp.content_type == "application/json"
    return dict(json.loads(body))


async def test_stub_legacy_session(stub_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        init = call("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t"}})
        async with http.post(stub_url, json=init, headers=POST) as resp:
            assert resp.status == 200
            session_id = resp.headers["Mcp-Session-Id"]
            result = (await answer(resp))["result"]
        assert result["protocolVersion"] == "2025-06-18"
        assert result["capabilities"] == {"tools": {}}
        assert result["serverInfo"]["name"]

        headers = {**POST, "Mcp-Session-Id": session_id, "MCP-Protocol-Version": LEGACY}
        async with http.post(stub_url, json=call("notifications/initialized", id=None), headers=headers) as resp:
            assert resp.status == 202
            assert await resp.read() == b""
        async with http.post(stub_url, json=call("tools/list", id=2), headers=headers) as resp:
            assert [t["name"] for t in (await answer(resp))["result"]["tools"]] == ["echo"]
        async with http.post(stub_url, json=call("tools/call", {"name": "echo"}, id=3), headers=headers) as resp:
            assert resp.status == 200
            assert await answer(resp) == {"jsonrpc": "2.0", "id": 3, "result": CALL_RESULT}

        # A client (or gateway) that loses the session id must see errors, not successes.
        async with http.post(stub_url, json=call("tools/call", {"name": "echo"}), headers=POST) as resp:
            assert resp.status == 400
        bad = {**headers, "Mcp-Session-Id": "nope"}
        async with http.post(stub_url, json=call("tools/call", {"name": "echo"}), headers=bad) as resp:
            assert resp.status == 404
        async with http.delete(stub_url, headers=headers) as resp:
            assert resp.status == 200
        async with http.post(stub_url, json=call("tools/call", {"name": "echo"}), headers=headers) as resp:
            assert resp.status == 404


async def test_stub_modern_requests(stub_url: str) -> None:
    headers = {**POST, "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
    async with aiohttp.ClientSession() as http:
        body = call("tools/call", {"name": "echo", "arguments": {}, "_meta": META}, id="a")
        async with http.post(stub_url, json=body, headers=headers) as resp:
            assert resp.status == 200
            assert await answer(resp) == {
                "jsonrpc": "2.0",
                "id": "a",
                "result": {**CALL_RESULT, "resultType": "complete"},
            }

        wrong_name = {**headers, "Mcp-Name": "other"}
        async with http.post(stub_url, json=body, headers=wrong_name) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == -32020

        discover = {**headers, "Mcp-Method": "server/discover"}
        del discover["Mcp-Name"]
        async with http.post(stub_url, json=call("server/discover", {"_meta": META}), headers=discover) as resp:
            assert (await resp.json())["result"]["supportedVersions"] == [MODERN]


async def test_load_counts_failures_as_errors(stub_url: str) -> None:
    client = bench.Client(stub_url, "legacy")  # never set up: no session id, every call is a 400
    tally = bench.Tally()
    async with aiohttp.ClientSession() as http:
        await bench.worker(http, client, time.perf_counter() + 0.05, tally)
    assert tally.errors > 0
    assert tally.latencies == []
    assert tally.first_error.startswith("HTTP 400")


@pytest.mark.parametrize("mode", ["legacy", "modern"])
async def test_one_load_level_against_the_stub(stub_url: str, mode: str) -> None:
    tally = await bench.run_level(bench.Client(stub_url, mode), concurrency=2, duration=0.1, warmup=0)
    result = bench.summarize(2, "direct", tally)
    assert result.errors == 0
    assert result.requests > 0
    assert 0 < result.p50_ms <= result.p99_ms


@pytest.mark.skipif(shutil.which("wrk") is None, reason="no wrk binary (apt install wrk)")
async def test_wrk_load_against_the_stub() -> None:
    server = TestServer(stub.make_app(sse=True), host="127.0.0.1")
    await server.start_server()
    try:
        client = bench.Client(str(server.make_url("/mcp")), "modern")
        result = await bench.run_level_wrk(client, concurrency=2, duration=1, warmup=0, target="direct")
    finally:
        await server.close()
    assert result.errors == 0
    assert result.requests > 0
    assert 0 < result.p50_ms <= result.p99_ms


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert bench.percentile(values, 50) == 50.0
    assert bench.percentile(values, 99) == 99.0
    assert bench.percentile([7.0], 99) == 7.0


def test_ratios_are_gateway_over_direct() -> None:
    direct = bench.Result(1, "direct", 100, 0, 1.0, rps=1000.0, p50_ms=1.0, p99_ms=2.0)
    gateway = bench.Result(1, "gateway", 50, 0, 1.0, rps=500.0, p50_ms=2.5, p99_ms=4.0)
    assert bench.ratios([direct, gateway]) == [
        {"concurrency": 1, "target": "gateway", "rps_ratio": 0.5, "p50_ratio": 2.5}
    ]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="CPU time per process is read from Linux's /proc")
def test_cpu_time_is_read_per_process_and_weighted_by_requests_when_merged() -> None:
    before = bench.cpu_seconds(os.getpid())
    assert before is not None
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # burn a little CPU, which /proc counts in clock ticks
        pass
    after = bench.cpu_seconds(os.getpid())
    assert after is not None and after >= before
    assert bench.cpu_seconds(2**22 + 7) is None  # no such process
    assert bench.cpu_per_request(1.0, 1.5, 1000) == 500.0
    assert bench.cpu_per_request(None, 1.5, 1000) is None and bench.cpu_per_request(1.0, 1.5, 0) is None
    runs = [
        bench.Result(64, "gateway", 300, 0, 1.0, rps=300.0, p50_ms=1.0, p99_ms=2.0, cpu_us=100.0),
        bench.Result(64, "gateway", 100, 0, 1.0, rps=100.0, p50_ms=1.0, p99_ms=2.0, cpu_us=200.0),
    ]
    assert bench.merge(runs).cpu_us == 125.0


def run_bench(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--duration", "0.5", "--concurrency", "1", "--json", *args],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return dict(json.loads(proc.stdout))


def test_bench_direct_only_end_to_end() -> None:
    report = run_bench("--no-gateway")
    [row] = report["results"]
    assert row["target"] == "direct"
    assert row["errors"] == 0
    assert row["requests"] > 0


def _gateway_cli_works() -> bool:
    try:
        probe = subprocess.run(
            [sys.executable, "-m", "mcpgate", "start", "--help"],
            capture_output=True,
            timeout=30,
            check=False,
            cwd=BENCH.parent,
        )
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not _gateway_cli_works(), reason="`python -m mcpgate start --help` does not work yet")
@pytest.mark.parametrize("mode", ["legacy", "modern"])
def test_bench_through_the_gateway_end_to_end(mode: str) -> None:
    report = run_bench("--mode", mode)
    assert [r["target"] for r in report["results"]] == ["direct", "gateway"]
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in report["results"])
    assert report["ratios"][0]["concurrency"] == 1
    if Path("/proc/self/stat").exists():  # each process's own CPU time, measured around its run
        assert all(r["cpu_us"] is not None and r["cpu_us"] >= 0 for r in report["results"])


@pytest.mark.skipif(not _gateway_cli_works(), reason="`python -m mcpgate start --help` does not work yet")
def test_bench_measures_rate_limits_redis_and_workers() -> None:
    if shutil.which("redis-server") is None:
        require_or_skip("redis-server is not installed (Debian: apt-get install redis-server)")
    report = run_bench("--limited", "--redis", "--workers", "2")
    assert [r["target"] for r in report["results"]] == ["direct", "gateway", "limited", "redis", "workers"]
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in report["results"])
    assert {r["target"] for r in report["ratios"]} == {"gateway", "limited", "redis", "workers"}
