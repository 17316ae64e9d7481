"""The README's quick start, run: its gateway command starts mcpgate in front of the demo server,
which it runs itself over stdio, and the official client uses it through both endpoints.

The install part (venv, pip) is what CI itself does before the tests; this runs the rest of the
very command the README shows, with only the port moved to a free one.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

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
        # The README's Python client, as the file it says it is, against this gateway.
        readme = (ROOT / "README.md").read_text()
        client = readme.split("```python\n", 1)[1].split("```", 1)[0].replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        ran = subprocess.run([sys.executable, "-c", client], capture_output=True, timeout=60, check=False)
        assert ran.returncode == 0 and ran.stdout.strip() == b"5", ran.stderr.decode(errors="replace")
    finally:
        gateway.send_signal(signal.SIGTERM)
        output, _ = gateway.communicate(timeout=30)
    assert gateway.returncode == 0, output.decode(errors="replace")
    assert not [pid for pid in demo if alive(pid)], "the demo server outlived the gateway"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find the gateway's children")
def test_a_second_signal_exits_at_once_and_takes_the_children_along(tmp_path: Path) -> None:
    """The child ignores SIGTERM, so the graceful shutdown waits on it; a second SIGTERM must not
    leave it (or the private socket directory) behind."""
    peer = ROOT / "tests" / "servers" / "stdio_peer.py"
    config = tmp_path / "g.yml"
    command = [sys.executable, str(peer), "--ignore-term", "--linger"]
    config.write_text(f"upstreams:\n  local: {{command: {command!r}}}\n".replace("'", '"'))
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    argv = [str(Path(sys.executable).parent / "mcpgate"), "start", "-c", str(config), "--port", str(port)]
    gateway = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, gateway)  # type: ignore[arg-type]
        # Signalled only once the child runs (it answered initialize, so it ignores SIGTERM by now).
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz") as resp:
                    body = json.load(resp)
            except urllib.error.HTTPError as not_ready:  # 503 until the heartbeat says healthy
                body = json.load(not_ready)
            if body["upstreams"]["local"]["process"] == "running":
                break
            time.sleep(0.05)
        children = children_of(gateway.pid)
        assert children, "the stdio server should be the gateway's child"
        gateway.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the graceful shutdown is now waiting for the child to go
        gateway.send_signal(signal.SIGTERM)
        output, _ = gateway.communicate(timeout=30)
    finally:
        if gateway.poll() is None:
            gateway.kill()
    assert gateway.returncode == 1, output.decode(errors="replace")
    for _ in range(100):
        if not [pid for pid in children if alive(pid)]:
            break
        time.sleep(0.05)
    assert not [pid for pid in children if alive(pid)], "the stdio server outlived the gateway"
    assert not list(tmp_path.glob("mcpgate-*")), "the private socket directory was left behind"


def readme_block_with(marker: str) -> str:
    readme = (ROOT / "README.md").read_text()
    return next(block for block in re.findall(r"```sh\n(.*?)```", readme, re.DOTALL) if marker in block)


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "activate").exists(), reason="no .venv in the checkout to activate")
def test_the_secured_demo_starts_as_the_readme_says_from_a_terminal_without_the_venv() -> None:
    """The README starts it from "another terminal", where the venv is not active: the demo server,
    started with the `python` on PATH, must still be the venv's (the README activates it)."""
    block = readme_block_with("demo-secured.yml")
    line = next(line for line in block.splitlines() if "demo-secured.yml" in line and not line.startswith("#"))
    command = line.split("(", 1)[1].rsplit(")", 1)[0]  # what the README backgrounds
    port = free_port()
    bare_path = os.pathsep.join(p for p in ("/usr/local/bin", "/usr/bin", "/bin") if Path(p).is_dir())
    gateway = subprocess.Popen(
        ["bash", "-c", f"exec bash -c '{command} --port {port}'"],
        cwd=ROOT,
        env={"PATH": bare_path, "HOME": os.environ.get("HOME", "/tmp")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    key = re.search(r"X-API-Key: (mgk_[\w-]+)", block)
    assert key is not None
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}

    def post(method: str, params: dict[str, object], name: str | None = None, with_key: bool = True) -> tuple[int, Any]:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": meta}}).encode()
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2026-07-28",
            "Mcp-Method": method,
            **({"Mcp-Name": name} if name else {}),
            **({"X-API-Key": key[1]} if with_key else {}),
        }
        request = urllib.request.Request(f"http://127.0.0.1:{port}/mcp", data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    try:
        wait_for_port(port, gateway)  # type: ignore[arg-type]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # ready once the demo server, started with that python, answers
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
                    if json.loads(resp.read())["status"] == "ready":
                        break
            except urllib.error.HTTPError:
                pass
            time.sleep(0.5)
        assert post("tools/list", {}, with_key=False)[0] == 401
        status, listed = post("tools/list", {})
        assert status == 200 and sorted(t["name"] for t in listed["result"]["tools"]) == ["add", "echo"], listed
        status, refused = post("tools/call", {"name": "sleep", "arguments": {"seconds": 0}}, name="sleep")
        assert status == 403 and refused["error"]["data"]["rule"] == "policy.default", refused
    finally:
        os.killpg(gateway.pid, signal.SIGTERM)
        output, _ = gateway.communicate(timeout=30)
    assert b"ModuleNotFoundError" not in output, output.decode(errors="replace")
