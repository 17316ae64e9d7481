"""``server.workers: 2``: a real ``mcpgate start`` with its supervisor and two worker processes on
one port, sessions and rate limits in a real redis-server, in front of a real MCP server.

Requests go through ``urllib``, which opens a new connection each time, so the kernel spreads
them across the workers as it would a load balancer's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RedisServer, free_port, stop_process, wait_for_port

pytestmark = pytest.mark.e2e

LEGACY = "2025-11-25"
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


class Gateway:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def post(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(
            self.url + "/servers/demo/mcp", data=json.dumps(body).encode(), headers={**JSON_HEADERS, **(headers or {})}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def worker(self) -> tuple[int, int]:
        """Which worker answered; one that is still probing its upstream answers 503, and says so too."""
        status, body = self.get("/readyz")
        assert status in (200, 503), body
        found = json.loads(body)["worker"]
        return found["slot"], found["pid"]

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        ready = 0
        while ready < 10:  # ten answers in a row, from whichever workers
            assert time.monotonic() < deadline, self.log.read_text()
            ready = ready + 1 if self.get("/readyz")[0] == 200 else 0
            time.sleep(0.02)

    def requests_total(self) -> float:
        _, body = self.get("/metrics")
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in body.decode().splitlines()
            if line.startswith("mcpgate_requests_total{") and 'method="tools/call"' in line
        )


def start(config: str, tmp_path: Path) -> Gateway:
    path, log = tmp_path / "workers.yml", tmp_path / "gateway.log"
    path.write_text(config)
    port = int(config.split("port: ", 1)[1].split(",", 1)[0])
    argv = [sys.executable, "-m", "mcpgate", "start", "-c", str(path)]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    wait_for_port(port, proc)
    return Gateway(proc, port, log)


def config_text(upstream: str, redis_url: str, capacity: int = 1000) -> str:
    port = free_port()
    return (
        f"server: {{port: {port}, workers: 2, shutdown_timeout: 5}}\n"
        f"upstreams:\n  demo: {{url: '{upstream}'}}\n"
        f"sessions: {{backend: redis, redis_url: '{redis_url}'}}\n"
        f"rate_limit:\n  backend: redis\n  redis_url: '{redis_url}'\n"
        f"  rules:\n    - {{methods: [tools/call], capacity: {capacity}, refill_per_second: 0.001}}\n"
    )


@pytest.fixture
def gateway(mcp_upstream_url: str, redis_server: RedisServer, tmp_path: Path) -> Iterator[Gateway]:
    gw = start(config_text(mcp_upstream_url, redis_server.url, capacity=8), tmp_path)
    try:
        gw.wait_ready()
        yield gw
    finally:
        stop_process(gw.proc)


def both_workers(gw: Gateway, tries: int = 200) -> dict[int, int]:
    seen: dict[int, int] = {}
    for _ in range(tries):
        slot, pid = gw.worker()
        seen[slot] = pid
        if len(seen) == 2:
            return seen
    raise AssertionError(f"only {seen} answered in {tries} connections")


def initialize(gw: Gateway) -> str:
    params = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    status, headers, body = gw.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params})
    assert status == 200, body
    sid = headers["Mcp-Session-Id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert gw.post(note, {"Mcp-Session-Id": sid, "MCP-Protocol-Version": LEGACY})[0] == 202
    return sid


def add(gw: Gateway, sid: str, n: int) -> int:
    body = {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {"name": "add", "arguments": {"a": n, "b": 1}}}
    status, _, answer = gw.post(body, {"Mcp-Session-Id": sid, "MCP-Protocol-Version": LEGACY})
    if status == 200:
        assert f'"id":{n}'.encode() in answer and b'"isError":false' in answer
    return status


def test_two_workers_share_the_port_the_sessions_the_limits_and_the_metrics(gateway: Gateway) -> None:
    pids = both_workers(gateway)
    assert len(set(pids.values())) == 2
    sid = initialize(gateway)  # one worker opens it; the calls land on both
    statuses = [add(gateway, sid, n) for n in range(12)]
    assert statuses == [200] * 8 + [429] * 4  # one budget of 8 for the two workers
    deadline = time.monotonic() + 10
    totals: list[float] = []
    while time.monotonic() < deadline:  # each worker shares its numbers once a second
        totals = [gateway.requests_total() for _ in range(8)]
        if set(totals) == {12.0}:
            break
        time.sleep(0.3)
    assert set(totals) == {12.0}, totals  # whichever worker is scraped, the fleet's sum


def test_a_dead_worker_is_replaced_and_its_counts_are_kept(gateway: Gateway) -> None:
    pids = both_workers(gateway)
    sid = initialize(gateway)
    assert [add(gateway, sid, n) for n in range(4)] == [200] * 4
    time.sleep(1.5)  # both snapshots written
    os.kill(pids[1], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            seen = both_workers(gateway, tries=20)
        except (AssertionError, OSError):
            time.sleep(0.2)
            continue
        if seen[1] != pids[1]:
            break
    assert seen[1] != pids[1] and seen[0] == pids[0]
    assert add(gateway, sid, 9) == 200  # the session lives in Redis, not in the dead worker
    time.sleep(1.5)
    assert {gateway.requests_total() for _ in range(6)} == {5.0}  # never backwards
    assert b"worker 1 (pid" in gateway.log.read_bytes() and b"died (signal 9)" in gateway.log.read_bytes()


def test_sigterm_drains_every_worker_and_exits_0(gateway: Gateway) -> None:
    pids = both_workers(gateway)
    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(timeout=20) == 0
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert b"all workers stopped" in gateway.log.read_bytes()


def test_workers_that_cannot_start_stop_the_supervisor_with_78(mcp_upstream_url: str, tmp_path: Path) -> None:
    text = config_text(mcp_upstream_url, f"redis://127.0.0.1:{free_port()}/0")
    path = tmp_path / "down.yml"
    path.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "mcpgate", "start", "-c", str(path)], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 78
    assert b"cannot reach redis" in done.stderr


def test_validate_refuses_workers_with_memory_backends(tmp_path: Path) -> None:
    path = tmp_path / "memory.yml"
    path.write_text(
        "server: {workers: 2}\nupstreams:\n  demo: {url: 'http://127.0.0.1:9/mcp'}\n"
        "rate_limit: {default: {capacity: 5, refill_per_second: 1}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "mcpgate", "validate", "-c", str(path)], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert b"workers > 1 needs sessions.backend: redis" in done.stderr
    assert b"workers > 1 needs rate_limit.backend: redis" in done.stderr


def test_every_worker_follows_the_store(mcp_upstream_url: str, redis_server: RedisServer, tmp_path: Path) -> None:
    """A change made through whichever worker's admin listener reaches the other by the shared file."""
    from mcpgate.auth.apikeys import hash_key

    admin = free_port()
    store = f"store: {{path: '{tmp_path / 'store.db'}', poll_interval: 200ms}}\n"
    config = config_text(mcp_upstream_url, redis_server.url) + store
    config += f"admin: {{port: {admin}, api_keys: [{{id: ops, key_hash: '{hash_key('admin-key-123456')}'}}]}}\n"
    gw = start(config, tmp_path)
    try:
        gw.wait_ready()
        request = urllib.request.Request(
            f"http://127.0.0.1:{admin}/admin/v1/upstreams/again",
            data=json.dumps({"url": mcp_upstream_url}).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer admin-key-123456"},
            method="PUT",
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 201
        followed: set[int] = set()
        deadline = time.monotonic() + 30
        while len(followed) < 2:  # both workers report the store revision and serve the new upstream
            assert time.monotonic() < deadline, gw.log.read_text()
            _, body = gw.get("/readyz")
            ready = json.loads(body)
            if ready["store"]["revision"] == 1 and "again" in ready["upstreams"]:
                followed.add(ready["worker"]["slot"])
    finally:
        stop_process(gw.proc)
    assert gw.proc.returncode == 0, gw.log.read_text()
