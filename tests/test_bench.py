"""The benchmark harness: a broken stub or a load generator that miscounts would measure nothing true."""

from __future__ import annotations

import asyncio
import contextlib
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
LINUX_PROC = Path("/proc/self/status").exists()


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
            assert [t["name"] for t in (await answer(resp))["result"]["tools"]] == ["echo", "stream"]
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


async def sse_messages(resp: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    assert resp.status == 200 and resp.content_type == "text/event-stream"
    return [json.loads(event.data) for event in SSEParser().feed(await resp.read())]


async def test_stub_stream_tool_sends_stamped_progress_then_the_result(stub_url: str) -> None:
    params = {"name": "stream", "arguments": {"events": 3, "bytes": 10}, "_meta": {"progressToken": "t"}}
    async with aiohttp.ClientSession() as http:
        init = call("initialize", {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t"}})
        async with http.post(stub_url, json=init, headers=POST) as resp:
            headers = {**POST, "Mcp-Session-Id": resp.headers["Mcp-Session-Id"], "MCP-Protocol-Version": LEGACY}
        async with http.post(stub_url, json=call("tools/call", params, id=7), headers=headers) as resp:
            *progress, answer = await sse_messages(resp)
        assert [m["method"] for m in progress] == ["notifications/progress"] * 3
        assert [(m["params"]["progress"], m["params"]["total"]) for m in progress] == [(1, 3), (2, 3), (3, 3)]
        assert {m["params"]["progressToken"] for m in progress} == {"t"}
        assert all(m["params"]["message"].isdigit() for m in progress)  # time.time_ns() when it was sent
        assert answer["id"] == 7
        assert answer["result"] == {"content": [{"type": "text", "text": "x" * 10}], "isError": False}

        # No progress token, no progress: what the spec asks of a server.
        quiet = {"name": "stream", "arguments": {"events": 3, "bytes": 1}}
        async with http.post(stub_url, json=call("tools/call", quiet, id=8), headers=headers) as resp:
            assert [m.get("id") for m in await sse_messages(resp)] == [8]

        modern = {**POST, "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "stream"}
        body = call("tools/call", {**params, "_meta": {**META, "progressToken": 5}}, id=9)
        async with http.post(stub_url, json=body, headers=modern) as resp:
            *progress, answer = await sse_messages(resp)
        assert {m["params"]["progressToken"] for m in progress} == {5}
        assert answer["result"]["resultType"] == "complete"


async def test_stub_holds_a_sessions_get_stream_until_the_session_ends(stub_url: str) -> None:
    stream_headers = {"Accept": "text/event-stream", "MCP-Protocol-Version": LEGACY}
    async with aiohttp.ClientSession() as http:
        async with http.get(stub_url, headers={**stream_headers, "Mcp-Session-Id": "nope"}) as resp:
            assert resp.status == 405
        init = call("initialize", {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t"}})
        async with http.post(stub_url, json=init, headers=POST) as resp:
            session_id = resp.headers["Mcp-Session-Id"]
        async with http.get(stub_url, headers={**stream_headers, "Mcp-Session-Id": session_id}) as stream:
            assert stream.status == 200 and stream.content_type == "text/event-stream"
            with pytest.raises(TimeoutError):  # held open, saying nothing
                async with asyncio.timeout(0.2):
                    await stream.content.readany()
            async with http.delete(stub_url, headers={"Mcp-Session-Id": session_id}) as resp:
                assert resp.status == 200
            async with asyncio.timeout(5):
                assert await stream.read() == b""  # the session ended, and its stream with it


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


@pytest.mark.parametrize("mode", ["legacy", "modern"])
async def test_list_load_against_the_stub(stub_url: str, mode: str) -> None:
    client = bench.Client(stub_url, mode, method="tools/list")
    assert b'"method":"tools/list"' in client.call_body()
    if mode == "modern":
        assert client.headers["Mcp-Method"] == "tools/list" and "Mcp-Name" not in client.headers
    tally = await bench.run_level(client, concurrency=2, duration=0.1, warmup=0)
    result = bench.summarize(2, "direct", tally)
    assert result.errors == 0
    assert result.requests > 0


@pytest.mark.parametrize("mode", ["legacy", "modern"])
async def test_stream_runs_against_the_stub(stub_url: str, mode: str) -> None:
    for arguments in (bench.STREAM_LATENCY, bench.STREAM_THROUGHPUT):
        client = bench.Client(stub_url, mode, tool="stream", arguments=arguments, progress_token=bench.STREAM_TOKEN)
        tally = await bench.run_stream(client, duration=0.1, warmup=0)
        assert tally.errors == 0, tally.first_error
        assert tally.calls > 0
        assert len(tally.delays_ns) == tally.calls * arguments["events"]
        assert tally.bytes >= tally.calls * arguments["bytes"]


async def test_held_sessions_are_opened_and_all_closed_against_the_stub() -> None:
    app = stub.make_app()
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        result = await bench.measure_sessions(str(server.make_url("/mcp")), os.getpid(), count=20)
    finally:
        await server.close()
    assert result.errors == 0, result.first_error
    assert result.opened == 20
    assert app[stub.SESSIONS] == set() and app[stub.STREAMS_ENDED] == {}  # every session DELETEd


@pytest.mark.skipif(shutil.which("wrk") is None, reason="no wrk binary (apt install wrk)")
async def test_wrk_list_load_against_the_stub() -> None:
    server = TestServer(stub.make_app(), host="127.0.0.1")
    await server.start_server()
    try:
        client = bench.Client(str(server.make_url("/mcp")), "legacy", method="tools/list")
        result = await bench.run_level_wrk(client, concurrency=2, duration=1, warmup=0, target="direct")
    finally:
        await server.close()
    assert result.errors == 0
    assert result.requests > 0


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


@pytest.mark.skipif(not LINUX_PROC, reason="resident memory per process is read from Linux's /proc")
def test_rss_is_read_per_process_and_the_larger_reading_kept_when_merged() -> None:
    rss = bench.rss_mib(os.getpid())
    assert rss is not None and rss > 0
    assert bench.rss_mib(2**22 + 7) is None  # no such process
    assert bench.rss_mib(None) is None
    runs = [
        bench.Result(64, "gateway", 300, 0, 1.0, rps=300.0, p50_ms=1.0, p99_ms=2.0, rss_mib=70.5),
        bench.Result(64, "gateway", 100, 0, 1.0, rps=100.0, p50_ms=1.0, p99_ms=2.0, rss_mib=72.0),
    ]
    assert bench.merge(runs).rss_mib == 72.0


def test_stream_results_are_compared_with_direct() -> None:
    direct = bench.StreamResult("direct", 10, 1000, 0.5, 1.0, 10, mb_per_s=200.0, errors=0)
    gateway = bench.StreamResult("gateway", 10, 1000, 0.75, 2.0, 10, mb_per_s=150.0, errors=0)
    compared = bench.compare_streams([direct, gateway])
    assert compared[0] == direct
    assert (compared[1].added_median_ms, compared[1].throughput_ratio) == (0.25, 0.75)


def test_tables_show_memory_and_each_scenarios_figures() -> None:
    settings = {"scenario": "call", "mode": "legacy", "environment": {"cpus": 2}, "concurrency": [1]}
    idle = {"direct": 40.0, "gateway": 70.0}
    rows = [
        bench.Result(1, "direct", 100, 0, 1.0, rps=100.0, p50_ms=1.0, p99_ms=2.0, rss_mib=41.0),
        bench.Result(1, "gateway", 50, 0, 1.0, rps=50.0, p50_ms=2.0, p99_ms=4.0, rss_mib=None),
    ]
    table = bench.render_table(rows, settings, idle).splitlines()
    assert table[0].startswith("mcpgate bench: mode=legacy")  # the default scenario is not named
    assert table[2].split()[-2:] == ["RSS", "MiB"]
    assert table[3].split()[-1] == "41.0" and table[4].split()[-1] == "-"
    assert "idle RSS MiB (after start-up, before any load): direct 40.0, gateway 70.0" in table[5]

    streams = bench.compare_streams(
        [
            bench.StreamResult("direct", 10, 1000, 0.5, 1.0, 10, mb_per_s=200.0, errors=0),
            bench.StreamResult("gateway", 10, 1000, 0.75, 2.0, 10, mb_per_s=150.0, errors=0),
        ]
    )
    text = bench.render_stream(streams, {**settings, "scenario": "stream"}, idle)
    assert "scenario=stream" in text.splitlines()[0]
    assert text.splitlines()[4].split()[:7] == ["gateway", "1000", "0.750", "2.000", "+0.250", "150.0", "0.75"]

    held = bench.SessionsResult("gateway", 100, 100, 70.0, 72.5, 25.6, errors=0)
    text = bench.render_sessions(held, {**settings, "scenario": "sessions"}, idle)
    assert text.splitlines()[3].split() == ["gateway", "100", "100", "70.0", "72.5", "25.6", "0"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--scenario", "sessions", "--mode", "modern"],
        ["--scenario", "sessions", "--endpoint", "unified"],
        ["--scenario", "sessions", "--secured"],
        ["--scenario", "sessions", "--sessions", "0"],
        ["--scenario", "stream", "--tool", "wrk"],
    ],
)
def test_scenarios_refuse_flags_they_cannot_honour(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(argv)
    assert exc.value.code == 2


def run_bench(*args: str) -> dict[str, Any]:
    """One whole bench run, as short as it goes, for its JSON report."""
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
    assert_memory(report)


def assert_memory(report: dict[str, Any]) -> None:
    """Resident memory after each level's load and when idle: read on Linux, null elsewhere."""
    targets = {r["target"] for r in report["results"]}
    assert set(report["idle_rss_mib"]) == targets
    if LINUX_PROC:
        assert all(r["rss_mib"] is not None and r["rss_mib"] > 0 for r in report["results"])
        assert all(mib is not None and mib > 0 for mib in report["idle_rss_mib"].values())
    else:
        assert all(r["rss_mib"] is None for r in report["results"])


@pytest.mark.skipif(not _gateway_cli_works(), reason="`python -m mcpgate start --help` does not work yet")
@pytest.mark.parametrize("mode", ["legacy", "modern"])
def test_bench_list_scenario_on_the_unified_endpoint_end_to_end(mode: str) -> None:
    report = run_bench("--scenario", "list", "--endpoint", "unified", "--mode", mode)
    assert report["scenario"] == "list"
    assert [r["target"] for r in report["results"]] == ["direct", "gateway"]
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in report["results"])
    [ratio] = report["ratios"]
    assert ratio["target"] == "gateway" and ratio["rps_ratio"] > 0 and ratio["p50_ratio"] > 0
    assert_memory(report)


@pytest.mark.skipif(not _gateway_cli_works(), reason="`python -m mcpgate start --help` does not work yet")
@pytest.mark.parametrize("mode", ["legacy", "modern"])
def test_bench_stream_scenario_end_to_end(mode: str) -> None:
    report = run_bench("--scenario", "stream", "--mode", mode)
    direct, gateway = report["stream"]
    assert (direct["target"], gateway["target"]) == ("direct", "gateway")
    for row in (direct, gateway):
        assert row["errors"] == 0, row["first_error"]
        assert row["calls"] > 0 and row["events"] == 100 * row["calls"]  # every progress event came through
        assert row["median_delay_ms"] is not None and row["p99_delay_ms"] is not None
        assert row["transfers"] > 0 and row["mb_per_s"] > 0
    assert gateway["added_median_ms"] is not None and gateway["throughput_ratio"] > 0
    assert set(report["idle_rss_mib"]) == {"direct", "gateway"}
    if LINUX_PROC:
        assert gateway["rss_mib"] > 0


@pytest.mark.skipif(not _gateway_cli_works(), reason="`python -m mcpgate start --help` does not work yet")
@pytest.mark.skipif(not LINUX_PROC, reason="resident memory per process is read from Linux's /proc")
def test_bench_sessions_scenario_end_to_end() -> None:
    report = run_bench("--scenario", "sessions", "--sessions", "200")
    held = report["sessions"]
    assert held["errors"] == 0, held["first_error"]
    assert (held["target"], held["sessions"], held["opened"]) == ("gateway", 200, 200)
    assert held["rss_after_mib"] > held["rss_before_mib"] > 0
    assert held["kib_per_session"] > 0
    assert report["idle_rss_mib"]["gateway"] > 0


@pytest.mark.skipif(not _gateway_cli_works(), reason="`python -m mcpgate start --help` does not work yet")
def test_bench_measures_rate_limits_redis_and_workers() -> None:
    if shutil.which("redis-server") is None:
        require_or_skip("redis-server is not installed (Debian: apt-get install redis-server)")
    report = run_bench("--limited", "--redis", "--workers", "2")
    assert [r["target"] for r in report["results"]] == ["direct", "gateway", "limited", "redis", "workers"]
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in report["results"])
    assert {r["target"] for r in report["ratios"]} == {"gateway", "limited", "redis", "workers"}


instructions = load("instructions")


def run_script(script: str, *args: str) -> str:
    """A bench script run as a user runs it; its output, once it has exited 0."""
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, timeout=300, check=False, cwd=BENCH.parent
    )
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    return out


def test_instruction_totals_are_summed_over_every_dump_and_summary_lines_ignored(tmp_path: Path) -> None:
    out = tmp_path / "callgrind.out"
    # The dump callgrind_control asks for (its summary line comes first, and says 0), and the file written at exit.
    (tmp_path / "callgrind.out.1").write_text("events: Ir\nsummary: 0\nfn=x\n1 5\ntotals: 4000000\n")
    out.write_text("events: Ir\nsummary: 0\ntotals: 250\n")
    (tmp_path / "unrelated.txt").write_text("totals: 999999\n")
    assert instructions.total_instructions(out) == 4_000_250


@pytest.mark.skipif(
    shutil.which("valgrind") is None or shutil.which("wrk") is None,
    reason="counting instructions needs valgrind and wrk (apt install valgrind wrk)",
)
def test_instructions_are_counted_for_the_stub_end_to_end() -> None:
    out = run_script("instructions.py", "--target", "direct", "--seconds", "1", "--warmup", "1")
    line = out.strip().splitlines()[-1]
    assert line.startswith("direct modern tools/call: ") and line.endswith(" requests)"), line
    per_request = float(line.split(": ")[1].split(" k ")[0])
    # An aiohttp handler answering from prepared bytes: tens to hundreds of thousands, never none.
    assert 20 < per_request < 5000, line


floors = load("floors")


@pytest.mark.skipif(shutil.which("wrk") is None, reason="no wrk binary (apt install wrk)")
@pytest.mark.skipif(not _gateway_cli_works(), reason="`python -m mcpgate start --help` does not work yet")
def test_floors_compare_every_reference_server_and_the_gateway_with_direct() -> None:
    out = run_script("floors.py", "--duration", "1", "--rounds", "1", "--concurrency", "1")
    rows = {line.split()[1]: line.split()[2:] for line in out.splitlines() if line.strip().startswith("1 ")}
    assert set(rows) == {"direct", "relay", "httptools", "aiohttp", "gateway"}
    direct_rps, direct_p50 = map(float, rows["direct"])  # no ratio to itself
    for target in ("relay", "httptools", "aiohttp", "gateway"):
        rps, p50, ratio, added = map(float, rows[target])
        assert rps > 0 and p50 > 0, (target, out)
        assert ratio == pytest.approx(rps / direct_rps, abs=0.01), (target, out)
        assert added == pytest.approx(p50 - direct_p50, abs=0.002), (target, out)


@pytest.mark.parametrize("kind", ["relay", "httptools", "aiohttp"])
async def test_each_reference_server_forwards_what_the_stub_answers(kind: str) -> None:
    """The floors are only floors if they really forward: the stub's answer, byte for byte,
    for two requests on one connection."""
    server = TestServer(stub.make_app(sse=False), host="127.0.0.1")
    await server.start_server()
    port = bench.free_port()
    task = asyncio.create_task(floors.serve(kind, port, server.port))
    try:
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.02)
        headers = {**POST, "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
        params = {"name": "echo", "arguments": {"text": "hi"}, "_meta": META}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            for n in (1, 2):
                body = call("tools/call", params, id=n)
                async with http.post(f"http://127.0.0.1:{port}/mcp", json=body, headers=headers) as resp:
                    assert resp.status == 200
                    answer = await resp.json()
                assert answer["id"] == n
                assert answer["result"]["content"] == CALL_RESULT["content"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await server.close()
