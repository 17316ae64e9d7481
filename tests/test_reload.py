"""Hot reload: a new configuration in force without a failed request, and a bad one refused with
the running one kept. In process (``reload.apply`` and ``reload.reload``), then a real
``mcpgate start`` reloaded by SIGHUP and by ``mcpgate reload``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mcpgate.config import load_config
from mcpgate.reload import ReloadRefused, apply
from mcpgate.reload import reload as reload_gateway
from tests.conftest import free_port, stop_process, wait_for_port
from tests.gateway_harness import POST_HEADERS, modern_call, modern_headers, rpc, running_gateway

pytestmark = pytest.mark.e2e


def text(urls: dict[str, str], names: tuple[str, ...] = ("alpha", "beta"), extra: str = "") -> str:
    lines = [f"  {name}: {{url: '{urls[name if name in urls else 'beta']}'}}" for name in names]
    return "server: {port: 0, shutdown_timeout: 1}\nupstreams:\n" + "\n".join(lines) + "\n" + extra


async def call(http: aiohttp.ClientSession, url: str, name: str = "whoami", **arguments: Any) -> tuple[int, str]:
    body = modern_call("tools/call", {"name": name, "arguments": arguments})
    async with http.post(url, json=body, headers=modern_headers("tools/call", name)) as resp:
        return resp.status, await resp.text()


async def test_a_reload_adds_removes_and_keeps_upstreams_and_changes_policy(named_upstreams: dict[str, str]) -> None:
    first = load_config(text=text(named_upstreams), source="a.yml")
    policy = "policy:\n  default: deny\n  rules:\n    - {servers: [gamma], decision: allow}\n"
    second = load_config(text=text(named_upstreams, ("alpha", "gamma"), policy), source="b.yml")
    async with running_gateway(first) as gw, aiohttp.ClientSession() as http:
        alpha = gw.gateway.upstreams["alpha"]
        assert (await call(http, gw.endpoint("beta")))[0] == 200
        await apply(gw.gateway, second)
        assert gw.gateway.upstreams["alpha"] is alpha  # unchanged: the same pool and heartbeat
        status, body = await call(http, gw.endpoint("gamma"))
        assert status == 200 and '"beta"' in body  # gamma is beta's server under a new name
        status, body = await call(http, gw.endpoint("beta"))
        assert status == 404 and json.loads(body)["error"]["data"]["reason"] == "server_not_found"
        status, body = await call(http, gw.endpoint("alpha"))
        assert status == 403 and json.loads(body)["error"]["data"]["rule"] == "policy.default"
        async with http.get(gw.url + "/servers") as resp:
            assert [s["name"] for s in (await resp.json())["servers"]] == ["gamma"]  # the new policy filters


async def test_a_call_in_flight_finishes_across_a_reload_that_removes_its_upstream(mcp_upstream_url: str) -> None:
    urls = {"demo": mcp_upstream_url, "beta": mcp_upstream_url}
    first = load_config(text=text(urls, ("demo",)), source="a.yml")
    second = load_config(text=text(urls, ("other",)), source="b.yml")
    async with running_gateway(first) as gw, aiohttp.ClientSession() as http:
        slow = asyncio.create_task(call(http, gw.endpoint("demo"), "sleep", seconds=0.6))
        await asyncio.sleep(0.2)
        await apply(gw.gateway, second)  # demo is gone from the plan; its pool closes after the drain
        status, body = await slow
        assert status == 200 and '"isError":false' in body
        assert (await call(http, gw.endpoint("demo"), "add", a=1, b=1))[0] == 404


async def test_reloads_under_load_fail_no_request(named_upstreams: dict[str, str]) -> None:
    configs = [
        load_config(text=text(named_upstreams, names), source=f"{i}.yml")
        for i, names in enumerate([("alpha", "beta"), ("alpha", "gamma"), ("alpha",), ("alpha", "beta")])
    ]
    async with running_gateway(configs[0]) as gw, aiohttp.ClientSession() as http:
        stop = asyncio.Event()
        outcomes: list[int] = []

        async def load() -> None:
            while not stop.is_set():
                outcomes.append((await call(http, gw.endpoint("alpha")))[0])

        workers = [asyncio.create_task(load()) for _ in range(8)]
        for config in configs[1:] * 2:
            await asyncio.sleep(0.15)
            await apply(gw.gateway, config)
        await asyncio.sleep(0.15)
        stop.set()
        await asyncio.gather(*workers)
    assert len(outcomes) > 50 and set(outcomes) == {200}


async def test_what_cannot_change_at_runtime_is_refused_or_deferred(
    named_upstreams: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    first = load_config(text=text(named_upstreams), source="a.yml")
    async with running_gateway(first) as gw:
        before = gw.gateway.plan
        with pytest.raises(ReloadRefused, match="sessions"):
            await apply(gw.gateway, load_config(text=text(named_upstreams) + "sessions: {idle_timeout: 1m}\n",
                                                source="b.yml"))  # fmt: skip
        assert gw.gateway.plan is before
        await apply(gw.gateway, load_config(text=text(named_upstreams).replace("port: 0", "port: 1"), source="c.yml"))
        assert "server.port changed; that takes effect at the next restart" in caplog.text
        assert gw.gateway.config.server.port == 0  # the plan says what runs, not what the file wants


async def test_a_configuration_that_does_not_load_keeps_the_running_one(
    named_upstreams: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    first = load_config(text=text(named_upstreams), source="a.yml")
    async with running_gateway(first) as gw:
        before = gw.gateway.plan

        def broken() -> Any:
            return load_config(text=text(named_upstreams) + "policy: {default: maybe}\n", source="bad.yml")

        assert await reload_gateway(gw.gateway, broken) is False
        assert gw.gateway.plan is before
    assert "bad.yml:5:" in caplog.text and "the running configuration stays in force" in caplog.text


# -- a real process ------------------------------------------------------------------------------


def test_sighup_and_mcpgate_reload_put_a_new_file_in_force_and_keep_the_old_on_errors(
    named_upstreams: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    path, pid_file, log = tmp_path / "gateway.yml", tmp_path / "mcpgate.pid", tmp_path / "gateway.log"

    def write(names: tuple[str, ...], extra: str = "") -> None:
        path.write_text(text(named_upstreams, names, extra).replace("port: 0", f"port: {port}"))

    def served() -> list[str]:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/servers", timeout=10) as resp:
            return [s["name"] for s in json.loads(resp.read())["servers"]]

    def until(expected: list[str]) -> None:
        deadline = time.monotonic() + 20
        while served() != expected:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)

    write(("alpha",))
    env = {k: v for k, v in os.environ.items() if k != "MISSING_VAR"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcpgate", "start", "-c", str(path), "--pid-file", str(pid_file)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        wait_for_port(port, proc)
        assert pid_file.read_text().strip() == str(proc.pid)
        write(("alpha", "beta"))
        proc.send_signal(signal.SIGHUP)
        until(["alpha", "beta"])
        for bad in ("upstreams: [", "upstreams:\n  x: {url: '${MISSING_VAR}'}\n"):  # broken YAML, unset variable
            path.write_text(bad)
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            assert served() == ["alpha", "beta"]
        path.unlink()  # the file is gone
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert served() == ["alpha", "beta"]
        write(("beta",))
        reload = [sys.executable, "-m", "mcpgate", "reload", "-c", str(path), "--pid-file", str(pid_file)]
        assert subprocess.run(reload, capture_output=True, timeout=60, env=env).returncode == 0
        until(["beta"])
        path.write_text("upstreams: {}\n")  # reload checks first, and does not signal
        refused = subprocess.run(reload, capture_output=True, timeout=60, env=env)
        assert refused.returncode == 1 and b"upstreams" in refused.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert not pid_file.exists()
    finally:
        stop_process(proc)
    logged = log.read_text()
    assert "upstreams.x.url: environment variable MISSING_VAR is not set" in logged
    assert "gateway.yml:0:0: (root): file not found" in logged and "YAML syntax error" in logged
    assert logged.count("the running configuration stays in force") == 3


def test_the_pid_file_is_checked_before_anything_is_signalled(tmp_path: Path) -> None:
    from mcpgate.pidfile import PidFileError, running_pid, written

    path = tmp_path / "mcpgate.pid"
    with pytest.raises(PidFileError, match="cannot read"):
        running_pid(str(path))
    path.write_text("not a pid\n")
    with pytest.raises(PidFileError, match="does not hold a process id"):
        running_pid(str(path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(f"{dead.pid}\n")
    with pytest.raises(PidFileError, match="stale"):
        running_pid(str(path))
    with written(str(path)):
        assert running_pid(str(path)) == os.getpid()
    assert not path.exists()


async def test_keys_limits_and_routes_change_and_open_streams_stay_open(named_upstreams: dict[str, str]) -> None:
    from mcpgate.auth.apikeys import hash_key

    old_key, new_key = "mgk_reload-old-key-0123456789", "mgk_reload-new-key-0123456789"

    def config(key: str, capacity: int, route_to: str) -> Any:
        extra = (
            f"auth:\n  api_keys:\n    - {{id: ci, key_hash: '{hash_key(key)}'}}\n"
            f"rate_limit:\n  default: {{capacity: {capacity}, refill_per_second: 0.001}}\n"
            f"routing:\n  - {{match: {{method: tools/call, tool: whoami}}, upstream: {route_to}}}\n"
        )
        return load_config(text=text(named_upstreams, extra=extra), source=f"{key[-4:]}{capacity}.yml")

    async def whoami(http: aiohttp.ClientSession, url: str, key: str) -> tuple[int, str]:
        body = modern_call("tools/call", {"name": "whoami", "arguments": {}})
        headers = {**modern_headers("tools/call", "whoami"), "X-API-Key": key}
        async with http.post(url, json=body, headers=headers) as resp:
            return resp.status, await resp.text()

    async with running_gateway(config(old_key, 3, "alpha")) as gw, aiohttp.ClientSession() as http:
        mcp = gw.url + "/mcp"
        status, body = await whoami(http, mcp, old_key)
        assert status == 200 and '"alpha"' in body
        legacy = {**POST_HEADERS, "X-API-Key": old_key}
        params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        async with http.post(gw.endpoint("alpha"), json=rpc("initialize", params), headers=legacy) as resp:
            legacy |= {"Mcp-Session-Id": resp.headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-11-25"}
        async with http.post(gw.endpoint("alpha"), json=rpc("notifications/initialized", id=None), headers=legacy):
            pass
        stream = await http.get(gw.endpoint("alpha"), headers={**legacy, "Accept": "text/event-stream"})
        assert stream.status == 200 and stream.content_type == "text/event-stream"
        await apply(gw.gateway, config(new_key, 5, "beta"))
        assert (await whoami(http, mcp, old_key))[0] == 401  # the old key is gone
        answers = [await whoami(http, mcp, new_key) for _ in range(6)]
        assert '"beta"' in answers[0][1]  # the new route
        # The bucket outlives the reload with the token it had left: a reload grants no fresh burst,
        # and the new capacity (5) caps it from now on. The refusal names the new limit.
        assert [s for s, _ in answers] == [200] + [429] * 5
        assert '"rule":"rate_limit.default"' in answers[-1][1]
        with pytest.raises(TimeoutError):  # a stream opened before the reload is still open: no end
            await asyncio.wait_for(stream.content.read(), timeout=0.5)
        assert not stream.content.at_eof()
        stream.close()


async def test_checks_a_reload_turns_on_apply_at_once_and_stop_when_it_turns_them_off(
    named_upstreams: dict[str, str],
) -> None:
    """A gateway without auth, rate limits or a tools filter skips those stages (``stages_for``);
    the plan a reload puts in force decides anew, both ways."""
    from mcpgate.auth.apikeys import hash_key

    key = "mgk_reload-stages-key-0123456789"
    bare = load_config(text=text(named_upstreams), source="bare.yml")
    lines = [
        "upstreams:",
        f"  alpha: {{url: '{named_upstreams['alpha']}', tools: {{deny: [add]}}}}",
        f"  beta: {{url: '{named_upstreams['beta']}'}}",
        f"auth:\n  api_keys:\n    - {{id: ci, key_hash: '{hash_key(key)}'}}",
        "rate_limit:\n  default: {capacity: 2, refill_per_second: 0.001}",
    ]
    guarded = load_config(text="server: {port: 0, shutdown_timeout: 1}\n" + "\n".join(lines) + "\n", source="g.yml")

    async def ask(http: aiohttp.ClientSession, url: str, name: str, key: str | None = None) -> int:
        body = modern_call("tools/call", {"name": name, "arguments": {"a": 1, "b": 2}})
        headers = modern_headers("tools/call", name) | ({"X-API-Key": key} if key else {})
        async with http.post(url, json=body, headers=headers) as resp:
            return resp.status

    async with running_gateway(bare) as gw, aiohttp.ClientSession() as http:
        alpha = gw.endpoint("alpha")
        assert [await ask(http, alpha, "add") for _ in range(3)] == [200, 200, 200]
        await apply(gw.gateway, guarded)
        assert await ask(http, alpha, "whoami") == 401  # authentication, at once
        assert await ask(http, alpha, "add", key) == 403  # the tools filter
        assert [await ask(http, alpha, "whoami", key) for _ in range(3)] == [200, 200, 429]  # the bucket
        await apply(gw.gateway, bare)
        assert [await ask(http, alpha, "add") for _ in range(3)] == [200, 200, 200]  # all off again
