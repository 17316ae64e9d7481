"""The README's quick start, run: its gateway command starts mcpgate in front of the demo server,
which it runs itself over stdio, and the official client uses it through both endpoints.

The install part (venv, pip) is what CI itself does before the tests; this runs the rest of the
very command the README shows, with only the port moved to a free one.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_for_port
from tests.gateway_harness import sdk_client
from tests.test_repository import quick_start_commands

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find the gateway's children")
async def test_the_quick_start_command_serves_the_demo_over_stdio() -> None:
    run = quick_start_commands()[0]
    start = shlex.split(run.rsplit("&&", 1)[1])
    assert start[:2] == ["mcpgate", "start"]
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    argv = [str(Path(sys.executable).parent / "mcpgate"), *start[1:], "--port", str(port)]
    gateway = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, gateway)  # type: ignore[arg-type]
        base = f"http://127.0.0.1:{port}"
        for url in (f"{base}/mcp", f"{base}/servers/demo/mcp"):
            async with sdk_client(url, "auto") as client:
                result = await client.call_tool("add", {"a": 40, "b": 2})
                assert result.content[0].text == "42"  # type: ignore[union-attr]
        demo = children_of(gateway.pid)
        assert demo, "the demo server should be the gateway's child"
    finally:
        gateway.send_signal(signal.SIGTERM)
        output, _ = gateway.communicate(timeout=30)
    assert gateway.returncode == 0, output.decode(errors="replace")
    assert not [pid for pid in demo if alive(pid)], "the demo server outlived the gateway"
