"""Shared fixtures: real peers on loopback, started per test session and always cleaned up."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO_SERVER = ROOT / "examples" / "servers" / "demo_server.py"
NAMED_SERVER = ROOT / "tests" / "servers" / "named_server.py"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    """Block until something accepts on 127.0.0.1:port, or fail with the process's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def start_demo_server(port: int, script: Path = DEMO_SERVER, *args: str) -> subprocess.Popen[bytes]:
    # Output goes to a file, never an unread pipe: a chatty server would block on a full pipe.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, str(script), "--port", str(port), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_for_port(port, proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc


@pytest.fixture(scope="session")
def mcp_upstream_url() -> Iterator[str]:
    """A real MCP server (official SDK, Streamable HTTP, both eras) in its own process."""
    port = free_port()
    proc = start_demo_server(port)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def named_upstreams() -> Iterator[dict[str, str]]:
    """Two real MCP servers that say who they are (tests/servers/named_server.py): alpha and beta."""
    procs, urls = [], {}
    try:
        for name in ("alpha", "beta"):
            port = free_port()
            procs.append(start_demo_server(port, NAMED_SERVER, "--name", name))
            urls[name] = f"http://127.0.0.1:{port}/mcp"
        yield urls
    finally:
        for proc in procs:
            stop_process(proc)
