"""stdio upstreams: one child process shared by many callers, restarted when it dies.

The real peer is the demo server (official SDK) run over stdio; ``tests/servers/stdio_peer.py``
does what no real server should (garbage, huge lines, ignoring SIGTERM).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mcpgate.config import load_config
from mcpgate.config.model import UpstreamConfig
from mcpgate.errors import GatewayError
from mcpgate.gateway import Gateway, StartupError
from mcpgate.upstream.stdio import StdioProcess
from tests.conftest import DEMO_SERVER
from tests.gateway_harness import (
    LEGACY,
    POST_HEADERS,
    initialize,
    modern_call,
    modern_headers,
    read_messages,
    rpc,
    running_gateway,
    sdk_client,
    session_headers,
    tool_call,
)

PEER = Path(__file__).resolve().parent / "servers" / "stdio_peer.py"
INIT_PARAMS = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}
DEMO = (sys.executable, str(DEMO_SERVER), "--transport", "stdio")


def config(*command: str, **options: Any) -> UpstreamConfig:
    options.setdefault("connect_timeout", 20.0)
    options.setdefault("timeout", 20.0)
    return UpstreamConfig(name="local", transport="stdio", command=command, **options)


@asynccontextmanager
async def running(upstream: UpstreamConfig, **options: Any) -> AsyncIterator[StdioProcess]:
    process = StdioProcess(upstream, rng=lambda: 0.0, **options)
    await process.start()
    try:
        yield process
    finally:
        await process.close()


def text(answer: dict[str, Any]) -> str:
    return str(answer["result"]["content"][0]["text"])


async def test_a_real_server_over_stdio_is_initialized_once_and_answers_with_the_callers_id() -> None:
    async with running(config(*DEMO)) as process:
        await process.wait_ready(20)
        assert process.initialize_result is not None
        assert process.initialize_result["serverInfo"]["name"] == "mcpgate-demo"
        answer = await process.request(tool_call("add", {"a": 2, "b": 3}, request_id="client-7"))
        assert answer["id"] == "client-7"
        assert text(answer) == "5"
        assert process.state == "running"


async def test_fifty_concurrent_callers_each_get_their_own_answer() -> None:
    async with running(config(*DEMO)) as process:
        # Every caller uses id 1, as independent clients do: the gateway's ids keep them apart.
        answers = await asyncio.gather(
            *(process.request(tool_call("echo", {"text": f"caller {n}"})) for n in range(50))
        )
    assert [text(a) for a in answers] == [f"caller {n}" for n in range(50)]
    assert {a["id"] for a in answers} == {1}


async def test_progress_reaches_the_caller_under_its_own_token() -> None:
    seen: list[dict[str, Any]] = []
    async with running(config(*DEMO)) as process:
        answers = await asyncio.gather(
            process.request(
                tool_call("countdown", {"steps": 3, "delay": 0.01}, progressToken="mine"), listener=seen.append
            ),
            process.request(tool_call("countdown", {"steps": 2, "delay": 0.01}, progressToken="mine")),
        )
    assert text(answers[0]) == "lift-off after 3 steps"
    assert [n["params"]["progressToken"] for n in seen] == ["mine"] * 3
    assert [n["params"]["progress"] for n in seen] == [1, 2, 3]


async def test_a_crash_mid_call_fails_the_call_at_once_and_the_server_comes_back() -> None:
    async with running(config(*DEMO)) as process:
        await process.wait_ready(20)
        slow = asyncio.create_task(process.request(tool_call("sleep", {"seconds": 60})))
        await asyncio.sleep(0.5)
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        with pytest.raises(GatewayError) as failed:
            await asyncio.wait_for(slow, 10)
        assert failed.value.reason.name == "upstream_unavailable"
        assert "exited" in failed.value.message
        answer = await process.request(tool_call("add", {"a": 1, "b": 1}))
        assert text(answer) == "2"
        assert process.restarts == 1


async def test_garbage_and_huge_lines_are_skipped_and_other_calls_go_on() -> None:
    async with running(config(sys.executable, str(PEER))) as process:
        answer = await process.request({"jsonrpc": "2.0", "id": 1, "method": "garbage"})
        assert answer["result"] == {"ok": True}
        with pytest.raises(GatewayError) as huge:
            await process.request({"jsonrpc": "2.0", "id": 2, "method": "huge"})
        assert huge.value.reason.name == "upstream_bad_response"
        answer = await process.request({"jsonrpc": "2.0", "id": 3, "method": "garbage"})
        assert answer["id"] == 3
        assert process.skipped >= 7  # three junk lines twice, and the huge one
        assert process.restarts == 0


async def test_a_server_that_exits_at_start_is_restarted_with_backoff_and_callers_get_an_error() -> None:
    upstream = config(sys.executable, "-c", "import sys; sys.exit(3)", connect_timeout=1.0)
    async with running(upstream) as process:
        with pytest.raises(GatewayError) as failed:
            await process.request(tool_call("add", {}))
        assert failed.value.reason.name == "upstream_unavailable"
        assert process.restarts >= 1
        assert process.state in ("starting", "restarting")
        assert process.last_error is not None and "3" in process.last_error


async def test_a_missing_command_says_so() -> None:
    async with running(config("/nonexistent/mcp-server", connect_timeout=0.5)) as process:
        with pytest.raises(GatewayError):
            await process.request(tool_call("add", {}))
        assert process.last_error is not None and "cannot start '/nonexistent/mcp-server'" in process.last_error


async def test_the_child_sees_only_a_small_environment_and_its_own_env() -> None:
    os.environ["MCPGATE_TEST_SECRET"] = "do-not-leak"
    try:
        async with running(config(sys.executable, str(PEER), env=(("ONLY_FOR_IT", "1"),))) as process:
            answer = await process.request({"jsonrpc": "2.0", "id": 1, "method": "env"})
    finally:
        del os.environ["MCPGATE_TEST_SECRET"]
    names = set(answer["result"]["names"])
    assert "ONLY_FOR_IT" in names
    assert "MCPGATE_TEST_SECRET" not in names
    assert names <= {"ONLY_FOR_IT", "HOME", "LANG", "LC_ALL", "LOGNAME", "PATH", "SHELL", "TERM", "TMPDIR", "TZ",
                     "USER", "LC_CTYPE", "PYTHONIOENCODING"}  # fmt: skip


async def test_stderr_goes_to_the_log_under_the_upstreams_name(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mcpgate.upstream.stderr")
    async with running(config(sys.executable, str(PEER))) as process:
        await process.request({"jsonrpc": "2.0", "id": 1, "method": "say", "params": {"text": "hello from stderr"}})
        for _ in range(50):
            if "hello from stderr" in caplog.text:
                break
            await asyncio.sleep(0.05)
    assert "local: hello from stderr" in caplog.text


async def test_a_childs_request_goes_to_the_one_caller_listening_or_is_declined() -> None:
    async with running(config(sys.executable, str(PEER))) as process:
        declined = await process.request({"jsonrpc": "2.0", "id": 1, "method": "ask"})
        assert declined["result"]["reply"]["error"]["code"] == -32601

        def answer(message: dict[str, Any]) -> None:
            reply = {"jsonrpc": "2.0", "id": message["id"], "result": {"content": "yes"}}
            asyncio.get_running_loop().create_task(process.respond(reply))

        answered = await process.request({"jsonrpc": "2.0", "id": 2, "method": "ask"}, listener=answer)
        assert answered["result"]["reply"] == {"jsonrpc": "2.0", "id": "from-child", "result": {"content": "yes"}}


async def test_close_kills_a_child_that_ignores_sigterm_and_reaps_it() -> None:
    process = StdioProcess(config(sys.executable, str(PEER), "--ignore-term"), kill_grace=0.5)
    await process.start()
    await process.wait_ready(20)
    child = process._proc
    assert child is not None
    await process.close()
    assert child.returncode == -signal.SIGKILL
    assert process.state == "stopped"
    with pytest.raises(ProcessLookupError):
        os.kill(child.pid, 0)  # reaped: not even a zombie is left


# -- through the gateway: both endpoints, both eras, the official client -------------------------


def gateway_config(extra: str = "") -> str:
    command = json.dumps([*DEMO])
    return f"server: {{port: 0}}\nupstreams:\n  local:\n    command: {command}\n    connect_timeout: 30s\n{extra}"


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28", "auto"])
async def test_a_stdio_server_is_used_through_both_endpoints_by_clients_of_both_eras(mode: str) -> None:
    config = load_config(text=gateway_config(), source="stdio.yml")
    async with running_gateway(config) as gw:
        await gw.gateway.children["local"][0].wait_ready(30)
        for url in (gw.endpoint("local"), gw.url + "/mcp"):
            async with sdk_client(url, mode) as client:
                assert {"add", "echo", "countdown"} <= {t.name for t in (await client.list_tools()).tools}
                result = await client.call_tool("add", {"a": 20, "b": 22})
                assert result.content[0].text == "42"  # type: ignore[union-attr]
                progress: list[float] = []

                async def on_progress(done: float, total: float | None, message: str | None) -> None:
                    progress.append(done)  # noqa: B023 - awaited within this iteration

                result = await client.call_tool("countdown", {"steps": 3, "delay": 0.01}, progress_callback=on_progress)
                assert result.content[0].text == "lift-off after 3 steps"  # type: ignore[union-attr]
                assert progress == [1, 2, 3]
                resources = await client.read_resource("demo://greeting")
                assert "Hello" in resources.contents[0].text  # type: ignore[union-attr]


async def test_readiness_follows_the_child_and_a_dead_child_is_an_error_not_a_hang() -> None:
    config = load_config(text=gateway_config(), source="stdio.yml")
    async with running_gateway(config) as gw, aiohttp.ClientSession() as http:
        process = gw.gateway.children["local"][0]
        await process.wait_ready(30)
        upstream = gw.gateway.upstreams["local"]
        await upstream.probe()
        async with http.get(gw.url + "/readyz") as resp:
            assert resp.status == 200
            state = (await resp.json())["upstreams"]["local"]
        assert state["state"] == "healthy"
        assert (state["transport"], state["process"], state["protocol"], state["restarts"]) == (
            "stdio",
            "running",
            "2025-11-25",  # the child's own, as list-servers --probe says it
            0,
        )
        url = gw.endpoint("local")
        headers = {**modern_headers("tools/call", "sleep")}
        call = asyncio.create_task(
            http.post(
                url, json=modern_call("tools/call", {"name": "sleep", "arguments": {"seconds": 60}}), headers=headers
            )
        )
        await asyncio.sleep(1.0)
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        resp = await asyncio.wait_for(call, 15)
        body = await resp.json()
        assert resp.status == 503
        assert body["error"]["data"]["reason"] == "upstream_unavailable"
        await process.wait_ready(30)  # back, after its back-off
        async with http.post(url, json=modern_call("tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}}),
                             headers=modern_headers("tools/call", "add")) as resp:  # fmt: skip
            assert resp.status == 200
            assert (await read_messages(resp))[-1]["result"]["content"][0]["text"] == "3"
        async with http.get(gw.url + "/readyz") as resp:
            assert (await resp.json())["upstreams"]["local"]["restarts"] == 1


async def test_validate_accepts_a_command_upstream_and_leaves_nothing_behind(tmp_path: Path) -> None:
    before = set(Path(tempfile.gettempdir()).glob("mcpgate-*"))
    config = load_config(text=gateway_config(), source="stdio.yml")
    Gateway.from_config(config)
    assert set(Path(tempfile.gettempdir()).glob("mcpgate-*")) == before


async def test_per_session_gives_each_session_its_own_process_ended_with_it() -> None:
    command = json.dumps([sys.executable, str(PEER)])
    text = (
        f"server: {{port: 0}}\nupstreams:\n  local:\n    command: {command}\n"
        "    per_session: true\n    max_processes: 2\n"
    )
    async with running_gateway(load_config(text=text, source="stdio.yml")) as gw, aiohttp.ClientSession() as http:
        url = gw.endpoint("local")
        sessions, pids = [], []
        for _ in range(2):
            sid = await initialize(http, url)
            sessions.append(sid)
            async with http.post(url, json=rpc("pid", id=2), headers=session_headers(sid)) as resp:
                pids.append((await read_messages(resp))[-1]["result"]["pid"])
        assert len(set(pids)) == 2
        shared = gw.gateway.children["local"][0]
        assert shared.pid not in pids
        # A third session is beyond max_processes: refused, not queued.
        async with http.post(url, json=rpc("initialize", INIT_PARAMS), headers=POST_HEADERS) as resp:
            assert resp.status == 503
            assert "max_processes" in (await resp.json())["error"]["message"]
        async with http.get(gw.url + "/readyz") as resp:
            assert (await resp.json())["upstreams"]["local"]["session_processes"] == 2
        async with http.delete(url, headers=session_headers(sessions[0])) as resp:
            assert resp.status < 300
        for _ in range(100):
            if not Path(f"/proc/{pids[0]}").exists():
                break
            await asyncio.sleep(0.05)
        assert not Path(f"/proc/{pids[0]}").exists(), "the session's process outlived it"
        assert Path(f"/proc/{pids[1]}").exists()


async def test_fifty_clients_through_the_gateway_each_get_their_own_answer() -> None:
    config = load_config(text=gateway_config(), source="stdio.yml")
    async with running_gateway(config) as gw, aiohttp.ClientSession() as http:
        await gw.gateway.children["local"][0].wait_ready(30)

        async def one(n: int, url: str) -> str:
            body = modern_call("tools/call", {"name": "echo", "arguments": {"text": f"client {n}"}}, id=7)
            async with http.post(url, json=body, headers=modern_headers("tools/call", "echo")) as resp:
                answer = (await read_messages(resp))[-1]
            assert answer["id"] == 7
            return str(answer["result"]["content"][0]["text"])

        urls = [gw.endpoint("local"), gw.url + "/mcp"]
        answers = await asyncio.gather(*(one(n, urls[n % 2]) for n in range(50)))
    assert answers == [f"client {n}" for n in range(50)]


async def test_a_lazy_server_starts_on_first_use_and_is_ready_until_then() -> None:
    async with running_gateway(load_config(text=gateway_config("    lazy: true\n"), source="s.yml")) as gw:
        channel = gw.gateway.children["local"][0]
        async with aiohttp.ClientSession() as http:
            async with http.get(gw.url + "/readyz") as resp:
                assert resp.status == 200
                state = (await resp.json())["upstreams"]["local"]
            assert (state["process"], state["pid"]) == ("idle", None)
            assert not channel.started
        async with sdk_client(gw.endpoint("local"), "auto") as client:
            result = await client.call_tool("add", {"a": 1, "b": 1})
            assert result.content[0].text == "2"  # type: ignore[union-attr]
        assert channel.started and channel.state == "running"


async def test_an_unwritable_tmpdir_is_a_clear_startup_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no" / "such" / "dir"))
    gateway = Gateway.from_config(load_config(text=gateway_config(), source="s.yml"))
    with pytest.raises(StartupError, match="point TMPDIR at a writable directory"):
        await gateway.start()
    await gateway.close()
