"""A fleet sharing one PostgreSQL store: a private Debian PostgreSQL per test, two gateways in front
of real MCP servers, changes through one instance live on the other, and outages of the database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from mcpgate.config import load_config
from mcpgate.store.backend import PostgresBackend
from mcpgate.store.runtime import Runtime
from tests.conftest import PostgresServer, free_port
from tests.gateway_harness import sdk_client
from tests.store_harness import admin_yaml, call, serving

pytestmark = pytest.mark.e2e

CLIENT_KEY = "client-key-0123456789abcdef"


def fleet_yaml(urls: dict[str, str], database: str, poll: str = "30s") -> str:
    # A long poll interval: a change that arrives sooner came by LISTEN/NOTIFY.
    store = f"backend: postgres, url: {json.dumps(database)}, poll_interval: {poll}"
    return (
        f"server: {{port: 0}}\nupstreams:\n  alpha: {{url: {json.dumps(urls['alpha'])}}}\n"
        f"auth: {{api_keys: [{{id: file-client, key: {CLIENT_KEY}}}]}}\n{admin_yaml(store)}"
    )


async def until(check: Callable[[], bool | Awaitable[bool]], what: str, limit: float = 20.0) -> None:
    """Wait for ``check`` (bounded, not timed: the bound only keeps a broken build from hanging)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


def text(result: object) -> str:
    return str(result.content[0].text)  # type: ignore[attr-defined]


async def test_a_change_made_before_an_instance_listens_still_reaches_it(
    named_upstreams: dict[str, str], postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its NOTIFY went to no one: the instance looks once LISTEN begins, not a poll interval later."""
    listening = asyncio.Event()
    slow_start = asyncio.Event()
    real_listen = PostgresBackend.listen

    async def late_listen(self: PostgresBackend, notify: Callable[[], None]) -> bool:
        await slow_start.wait()  # until the change below is committed
        started = await real_listen(self, notify)
        listening.set()
        return started

    monkeypatch.setattr(PostgresBackend, "listen", late_listen)
    config = fleet_yaml(named_upstreams, postgres.url)  # polling every 30s, listening: every 150s
    async with serving(config) as a, serving(config) as b, aiohttp.ClientSession() as http:
        upstream = {"url": named_upstreams["beta"], "prefix": "beta"}
        status, _, body = await call(http, "PUT", f"{a.admin}/upstreams/beta", upstream)
        assert status == 201, body
        assert b.store.config.upstream("beta") is None
        slow_start.set()
        await asyncio.wait_for(listening.wait(), 20)
        await until(lambda: b.store.config.upstream("beta") is not None, "instance b serves beta")


async def test_a_change_through_one_instance_is_live_on_the_other(
    named_upstreams: dict[str, str], postgres: PostgresServer
) -> None:
    config = fleet_yaml(named_upstreams, postgres.url)
    async with serving(config) as a, serving(config) as b, aiohttp.ClientSession() as http:
        upstream = {"url": named_upstreams["beta"], "prefix": "beta", "auth": {"type": "bearer", "token": "t0ken-xyz"}}
        status, _, body = await call(http, "PUT", f"{a.admin}/upstreams/beta", upstream)
        assert status == 201, body
        await until(lambda: b.store.config.upstream("beta") is not None, "instance b serves beta")
        status, _, created = await call(http, "POST", f"{a.admin}/api-keys", {"id": "ci"})
        assert status == 201
        await until(lambda: b.store.objects.get("api_key", "ci") is not None, "instance b knows key ci")
        async with sdk_client(f"{b.url}/mcp", "auto", headers={"Authorization": f"Bearer {created['key']}"}) as c:
            assert text(await c.call_tool("beta__add", {"a": 20, "b": 1})) == "beta:21"
        # And back: a deletion through b reaches a.
        assert (await call(http, "DELETE", f"{b.admin}/upstreams/beta"))[0] == 204
        await until(lambda: a.store.config.upstream("beta") is None, "instance a dropped beta")
        assert b.store.store.backend.kind == "postgres"
        ready = await (await http.get(f"{a.url}/readyz")).json()
        assert ready["store"]["backend"] == "postgres" and ready["store"]["listening"] is True
        assert ready["store"]["revision"] == 3
        # Optimistic concurrency holds across instances: a's ETag is stale once b has written.
        rules = {"rules": [{"decision": "allow"}]}
        _, headers, _ = await call(http, "GET", f"{a.admin}/policy")
        assert (await call(http, "PUT", f"{b.admin}/policy", rules, headers={"If-Match": headers["ETag"]}))[0] == 201
        assert (await call(http, "PUT", f"{a.admin}/policy", rules, headers={"If-Match": headers["ETag"]}))[0] == 412


async def test_an_outage_of_the_database_never_stops_traffic(
    named_upstreams: dict[str, str], postgres: PostgresServer
) -> None:
    async with serving(fleet_yaml(named_upstreams, postgres.url, poll="200ms")) as gw, aiohttp.ClientSession() as http:
        assert (await call(http, "PUT", f"{gw.admin}/upstreams/beta", {"url": named_upstreams["beta"]}))[0] == 201
        auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
        async with sdk_client(f"{gw.url}/servers/beta/mcp", "legacy", headers=auth) as client:
            await asyncio.to_thread(postgres.stop)

            async def unreachable() -> bool:
                ready = await (await http.get(f"{gw.url}/readyz")).json()
                return bool(ready["status"] == "ready" and ready["store"]["state"] == "unreachable")

            await until(unreachable, "/readyz shows the outage, and stays ready")
            for _ in range(5):  # the last good plan keeps serving, the store upstream included
                assert text(await client.call_tool("whoami", {})) == "beta"
            status, _, body = await call(http, "PUT", f"{gw.admin}/upstreams/gamma", {"url": named_upstreams["alpha"]})
            assert status == 503 and "unreachable" in body["detail"]
            await asyncio.to_thread(postgres.start)

            async def recovered() -> bool:
                ready = await (await http.get(f"{gw.url}/readyz")).json()
                return bool(ready["store"]["state"] == "ok")

            await until(recovered, "the store is reachable again")
            assert (await call(http, "PUT", f"{gw.admin}/upstreams/gamma", {"url": named_upstreams["alpha"]}))[0] == 201
            assert text(await client.call_tool("whoami", {})) == "beta"


async def test_instances_starting_together_migrate_once(postgres: PostgresServer, tmp_path: Path) -> None:
    text_ = f"upstreams: {{}}\nstore: {{backend: postgres, url: {json.dumps(postgres.url)}}}\n"
    config = load_config(text=text_, source="gw.yml")
    runtimes = await asyncio.gather(*(Runtime.open(config) for _ in range(4)))
    try:
        statuses = await runtimes[0].store.backend.migrations()
        assert statuses and all(s.applied_at is not None for s in statuses)
    finally:
        for runtime in runtimes:
            await runtime.close()


def start(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcpgate", "start", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_start_gives_up_on_a_database_that_never_answers_with_69(tmp_path: Path) -> None:
    url = f"postgresql://mcpgate:pw-secret-123@127.0.0.1:{free_port()}/mcpgate"
    config = tmp_path / "gw.yml"
    config.write_text(f"upstreams: {{}}\nstore: {{backend: postgres, url: {json.dumps(url)}}}\n")
    done = start(config, env={"MCPGATE_STORE_STARTUP_TIMEOUT": "1"})
    assert done.returncode == 69, done.stderr
    assert "unreachable" in done.stderr and "retrying" in done.stderr
    assert "pw-secret-123" not in done.stderr + done.stdout


def test_start_refuses_a_database_that_does_not_exist_with_78(postgres: PostgresServer, tmp_path: Path) -> None:
    url = postgres.url.rsplit("/", 1)[0] + "/no_such_database"
    config = tmp_path / "gw.yml"
    config.write_text(f"upstreams: {{}}\nstore: {{backend: postgres, url: {json.dumps(url)}}}\n")
    done = start(config, env={"MCPGATE_STORE_STARTUP_TIMEOUT": "5"})
    assert done.returncode == 78, done.stderr
    assert "no_such_database" in done.stderr


def test_start_no_migrate_refuses_a_fresh_store(tmp_path: Path) -> None:
    config = tmp_path / "gw.yml"
    config.write_text(f"upstreams: {{}}\nstore: {{path: {json.dumps(str(tmp_path / 's.db'))}}}\n")
    done = start(config, "--no-migrate")
    assert done.returncode == 78, done.stderr
    assert "mcpgate migrate up" in done.stderr
