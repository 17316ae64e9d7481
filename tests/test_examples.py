"""The fleet, multi-server, admin and analytics examples run as their comments say (tests/test_config.py loads
every example)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ROOT, RedisServer, free_port, stop_process, wait_for_port
from tests.gateway_harness import sdk_client

EXAMPLES = ROOT / "examples"


@pytest.mark.e2e
def test_the_fleet_example_runs_two_workers_on_redis(redis_server: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_server.url, "MCPGATE_PORT": str(port)}
    log = tmp_path / "fleet.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcpgate", "start", "-c", "examples/fleet.yml"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc)
        workers: set[int] = set()
        deadline = time.monotonic() + 60
        while len(workers) < 2:  # both workers up, and their stdio demo servers healthy
            assert time.monotonic() < deadline, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as resp:
                    workers.add(json.loads(resp.read())["worker"]["pid"])
            except OSError:  # 503 while a worker's demo server is still starting
                time.sleep(0.2)
    finally:
        stop_process(proc)
    assert proc.returncode == 0, log.read_text()


@pytest.mark.e2e
async def test_the_multi_server_example_namespaces_and_routes(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "multi.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcpgate", "start", "-c", "examples/multi-server.yml", "--port", str(port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc)
        async with sdk_client(f"http://127.0.0.1:{port}/mcp", "2026-07-28") as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert "demo__add" in names and "demo__echo" in names
            assert {n for n in names if n.startswith("math__")} == {"math__add"}  # math exposes add only
            for name in ("math__add", "demo__add", "add"):  # "add" is routed to math by the rule
                result = await client.call_tool(name, {"a": 2, "b": 3})
                assert result.content[0].text == "5", log.read_text()  # type: ignore[union-attr]
    finally:
        stop_process(proc)


@pytest.mark.e2e
async def test_the_admin_example_adds_an_upstream_and_a_key_at_run_time(tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    log = tmp_path / "admin.log"
    argv = [sys.executable, "-m", "mcpgate", "start", "-c", "examples/admin.yml", "--port", str(port)]
    argv += ["--set", f"admin.port={admin}", "--set", f"store.path={tmp_path / 'store.db'}"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(admin, proc)
        base = f"http://127.0.0.1:{admin}/admin/v1"
        headers = {"Authorization": "Bearer mga_demo-admin-key-for-the-example-only"}
        math = {
            "command": [sys.executable, "examples/servers/demo_server.py", "--transport", "stdio"],
            "prefix": "math",
        }
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.put(f"{base}/upstreams/math", json=math) as resp:
                assert resp.status == 201, await resp.text()
            async with http.post(f"{base}/api-keys", json={"id": "alice", "roles": ["demo"]}) as resp:
                assert resp.status == 201, await resp.text()
                key = (await resp.json())["key"]
        async with sdk_client(f"http://127.0.0.1:{port}/mcp", "auto", headers={"Authorization": f"Bearer {key}"}) as c:
            result = await c.call_tool("math__add", {"a": 2, "b": 3})
            assert result.content[0].text == "5", log.read_text()  # type: ignore[union-attr]
    finally:
        stop_process(proc)
    assert proc.returncode == 0, log.read_text()


@pytest.mark.e2e
async def test_the_analytics_example_counts_calls_and_denials(tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    log = tmp_path / "analytics.log"
    argv = [sys.executable, "-m", "mcpgate", "start", "-c", "examples/analytics.yml", "--port", str(port)]
    argv += ["--set", f"admin.port={admin}", "--set", f"store.path={tmp_path / 'store.db'}"]
    argv += ["--set", f"analytics.path={tmp_path / 'analytics.duckdb'}"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(admin, proc)
        wait_for_port(port, proc)
        alice = {"Authorization": "Bearer mgk_demo-key-for-the-quick-start-only"}
        bob = {"Authorization": "Bearer mgk_second-key-for-the-analytics-example"}
        async with sdk_client(f"http://127.0.0.1:{port}/mcp", "auto", headers=alice) as c:
            for a in range(3):
                assert (await c.call_tool("add", {"a": a, "b": 1})).content[0].text == str(a + 1)
        async with sdk_client(f"http://127.0.0.1:{port}/mcp", "auto", headers=bob) as c:
            assert (await c.call_tool("echo", {"text": "hi"})).content[0].text == "hi"
            with pytest.raises(Exception, match="forbidden"):
                await c.call_tool("add", {"a": 1, "b": 2})
        base = f"http://127.0.0.1:{admin}/admin/v1/analytics"
        headers = {"Authorization": "Bearer mga_demo-admin-key-for-the-example-only"}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.get(f"{base}/tools") as resp:
                tools = {(t["tool"], t["invocations"], t["unique_clients"]) for t in (await resp.json())["tools"]}
            async with http.get(f"{base}/rejections") as resp:
                refused = [(r["client_id"], r["item"], r["reason"]) for r in (await resp.json())["rejections"]]
            async with http.get(f"http://127.0.0.1:{admin}/admin/") as resp:
                assert resp.status == 200 and "text/html" in resp.headers["Content-Type"]
        assert tools == {("add", 4, 2), ("echo", 1, 1)}, log.read_text()
        assert refused == [("bob", "add", "forbidden")]
    finally:
        stop_process(proc)
    assert proc.returncode == 0, log.read_text()
