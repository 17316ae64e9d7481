"""Sessions in a real redis-server: the store's rules with an injected clock, then two gateway
instances in front of a real MCP server serving each other's sessions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from mcpgate.config import load_config
from mcpgate.errors import GatewayError
from mcpgate.gateway import Gateway, StartupError
from mcpgate.session_redis import RedisSessionStore
from mcpgate.sessions import Session, new_session_id
from tests.conftest import RedisServer, free_port
from tests.gateway_harness import initialize, rpc, running_gateway, session_headers


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make(sid: str | None = None, client: str = "addr:127.0.0.1", scope: str = "demo") -> Session:
    return Session(
        id=sid or new_session_id(),
        owner="anonymous",
        scope=scope,
        protocol_version="2025-11-25",
        init_params={"protocolVersion": "2025-11-25"},
        upstream_sessions={"demo": "up-1"},
        client=client,
    )


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[tuple[RedisSessionStore, RedisSessionStore, Clock]]:
    """Two stores on one Redis, as two gateway instances would have, sharing a clock."""
    clock = Clock()  # fresh=0: every read goes to Redis, so the store's own rules show
    one = RedisSessionStore(redis_server.url, "t", 60, max_sessions=3, max_per_client=2, clock=clock, fresh=0)
    two = RedisSessionStore(redis_server.url, "t", 60, max_sessions=3, max_per_client=2, clock=clock, fresh=0)
    await one.check()
    try:
        yield one, two, clock
    finally:
        await one.close()
        await two.close()


async def test_a_session_written_by_one_instance_is_read_changed_and_ended_by_another(
    stores: tuple[RedisSessionStore, RedisSessionStore, Clock],
) -> None:
    one, two, _ = stores
    session = make()
    assert await one.create(session) == []
    got = await two.get(session.id)
    assert got is not None and got.to_json() == session.to_json()
    got.upstream_sessions["demo"] = "up-2"
    await two.save(got)
    await one.reload(session)
    assert session.upstream_sessions == {"demo": "up-2"}
    ended = await one.delete(session.id)
    assert ended is not None and ended.upstream_sessions == {"demo": "up-2"}
    assert await two.get(session.id) is None and await two.delete(session.id) is None  # ended once


async def test_idle_sessions_expire_once_across_instances_and_use_keeps_them(
    stores: tuple[RedisSessionStore, RedisSessionStore, Clock],
) -> None:
    one, two, clock = stores
    kept, dropped = make("kept", client="a"), make("dropped", client="b")
    await one.create(kept)
    await one.create(dropped)
    clock.now += 45
    assert await two.get("kept") is not None  # used: its idle timer starts again
    clock.now += 30
    expired = await asyncio.gather(one.expire(), two.expire())
    assert sorted(s.id for batch in expired for s in batch) == ["dropped"]  # one of them ends it
    assert await one.get("dropped") is None
    assert await one.expire() == []  # counts are as of a sweep: this one sees the other's removal
    assert (len(one), one.count_by_scope()) == (1, {"demo": 1})
    clock.now += 61
    assert await two.get("kept") is None  # too old to use, whoever asks


async def test_a_removed_upstreams_sessions_are_ended_once_across_instances(
    stores: tuple[RedisSessionStore, RedisSessionStore, Clock],
) -> None:
    one, two, _ = stores
    await one.create(make("a1", client="a", scope="alpha"))
    await one.create(make("b1", client="b", scope="beta"))
    await two.create(make("a2", client="c", scope="alpha"))
    ended = await asyncio.gather(one.remove_scope("alpha"), two.remove_scope("alpha"))
    assert sorted(s.id for batch in ended for s in batch) == ["a1", "a2"]  # each taken out once
    assert await two.get("a1") is None and await one.get("b1") is not None
    await one.expire()  # counts are as of a sweep: this one then sees the other's removals too
    assert one.count_by_scope() == {"beta": 1}


async def test_the_caps_hold_for_the_fleet(stores: tuple[RedisSessionStore, RedisSessionStore, Clock]) -> None:
    one, two, clock = stores
    await one.create(make("old", client="alice"))
    clock.now += 2
    await two.create(make("newer", client="alice"))
    clock.now += 2
    await one.get("old")  # now "newer" is alice's least recently used
    evicted = await two.create(make("newest", client="alice"))
    assert [s.id for s in evicted] == ["newer"] and two.evicted == 1
    await one.create(make("bob", client="bob"))
    with pytest.raises(GatewayError) as refused:  # three sessions in the fleet: the limit
        await two.create(make("carol", client="carol"))
    assert refused.value.reason.name == "session_limit" and refused.value.status == 503


async def test_a_read_session_is_served_from_memory_for_a_moment_then_read_again(redis_server: RedisServer) -> None:
    one = RedisSessionStore(redis_server.url, "f", 60, fresh=0.3)
    two = RedisSessionStore(redis_server.url, "f", 60, fresh=0.3)
    session = make()
    await one.create(session)
    first = await two.get(session.id)
    assert first is not None and await two.get(session.id) is first  # no round trip
    await one.delete(session.id)
    assert await two.get(session.id) is first  # another instance's delete is seen within `fresh`...
    with pytest.raises(GatewayError) as gone:
        await two.reload(first)  # ...but never by the re-open path, which reads Redis under the lock
    assert gone.value.reason.name == "session_not_found"
    await asyncio.sleep(0.35)
    assert await two.get(session.id) is None
    await one.close()
    await two.close()


async def test_the_lock_holds_across_instances(stores: tuple[RedisSessionStore, RedisSessionStore, Clock]) -> None:
    one, two, _ = stores
    inside: list[str] = []

    async def hold(store: RedisSessionStore, name: str) -> None:
        async with store.lock("s"):
            inside.append(f"{name} in")
            await asyncio.sleep(0.2)
            inside.append(f"{name} out")

    await asyncio.gather(hold(one, "a"), hold(two, "b"), hold(one, "c"))
    assert all(inside[i].split()[0] == inside[i + 1].split()[0] for i in range(0, len(inside), 2))
    assert not one._local_locks and not two._local_locks


async def test_redis_down_is_a_503_not_a_lost_session(redis_server: RedisServer) -> None:
    store = RedisSessionStore(redis_server.url, "t", 60)
    session = make()
    await store.create(session)
    redis_server.stop()
    with pytest.raises(GatewayError) as down:
        await store.get(session.id)
    assert down.value.reason.name == "session_store_unavailable" and down.value.status == 503
    assert await store.expire() == []  # the sweeper waits for Redis to return
    await store.close()


# -- two gateways --------------------------------------------------------------------------------


def shared_config(upstream_url: str, redis_url: str) -> str:
    return (
        f"server: {{port: 0}}\nupstreams:\n  demo: {{url: '{upstream_url}'}}\n"
        f"sessions: {{backend: redis, redis_url: '{redis_url}', key_prefix: e2e}}\n"
    )


async def test_a_session_opened_on_one_instance_is_served_by_the_other(
    mcp_upstream_url: str, redis_server: RedisServer
) -> None:
    text = shared_config(mcp_upstream_url, redis_server.url)
    async with running_gateway(load_config(text=text, source="a.yml")) as a:
        async with running_gateway(load_config(text=text, source="b.yml")) as b:
            async with aiohttp.ClientSession() as http:
                sid = await initialize(http, a.endpoint("demo"))
                body = rpc("tools/call", {"name": "add", "arguments": {"a": 2, "b": 3}}, id=4)
                async with http.post(b.endpoint("demo"), json=body, headers=session_headers(sid)) as resp:
                    assert resp.status == 200
                    assert '"id":4' in (text_b := await resp.text()) and '"isError":false' in text_b
                async with http.delete(b.endpoint("demo"), headers=session_headers(sid)) as resp:
                    assert resp.status == 200
                async with http.post(a.endpoint("demo"), json=body, headers=session_headers(sid)) as resp:
                    assert resp.status == 404  # ended for the whole fleet


async def test_concurrent_calls_on_two_instances_reopen_a_lost_upstream_session_once(
    mcp_upstream_url: str, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="mcpgate.proxy")
    text = shared_config(mcp_upstream_url, redis_server.url)
    async with running_gateway(load_config(text=text, source="a.yml")) as a:
        async with running_gateway(load_config(text=text, source="b.yml")) as b:
            async with aiohttp.ClientSession() as http:
                sid = await initialize(http, a.endpoint("demo"))
                session = await a.gateway.sessions.get(sid)
                assert session is not None
                old = session.upstream_sessions["demo"] or ""
                async with http.delete(mcp_upstream_url, headers={"Mcp-Session-Id": old}) as resp:
                    assert resp.status == 200  # the upstream forgets it behind the gateways' backs

                async def call(gw_url: str, i: int) -> int:
                    body = rpc("tools/call", {"name": "add", "arguments": {"a": i, "b": 0}}, id=100 + i)
                    async with http.post(gw_url, json=body, headers=session_headers(sid)) as resp:
                        await resp.read()
                        return resp.status

                statuses = await asyncio.gather(*(call((a if i % 2 else b).endpoint("demo"), i) for i in range(6)))
    assert statuses == [200] * 6
    reopened = [r for r in caplog.records if r.getMessage().startswith("re-opened the session")]
    assert len(reopened) == 1


async def test_an_unreachable_session_store_stops_the_gateway_from_starting(mcp_upstream_url: str) -> None:
    url = f"redis://user:s3cret-pass@127.0.0.1:{free_port()}/0"
    gateway = Gateway.from_config(load_config(text=shared_config(mcp_upstream_url, url), source="u.yml"))
    with pytest.raises(StartupError, match=r"sessions: cannot reach redis at redis://user:\*\*\*@") as caught:
        await gateway.start()
    await gateway.close()
    assert "s3cret" not in str(caught.value)
