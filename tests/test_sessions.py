"""The session store: expiry, ownership data, JSON round trip."""

from __future__ import annotations

import pytest

from mcpgate.errors import GatewayError
from mcpgate.sessions import MAX_REOPEN_PARAMS, MemorySessionStore, Session, new_session_id, reopen_params


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(sid: str | None = None, client: str = "addr:127.0.0.1") -> Session:
    return Session(
        client=client,
        id=sid or new_session_id(),
        owner="anonymous",
        scope="demo",
        protocol_version="2025-11-25",
        init_params={"protocolVersion": "2025-11-25"},
        upstream_sessions={"demo": "up-1"},
    )


def test_ids_are_unique_128_bit_hex() -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and all(c in "0123456789abcdef" for c in i) for i in ids)


async def test_create_get_save_delete() -> None:
    store = MemorySessionStore(idle_timeout=60)
    session = make()
    await store.create(session)
    assert len(store) == 1
    got = await store.get(session.id)
    assert got is session
    got.upstream_sessions["demo"] = "up-2"
    await store.save(got)
    again = await store.get(session.id)
    assert again is not None
    assert again.upstream_sessions["demo"] == "up-2"
    assert await store.delete(session.id) is session
    assert await store.get(session.id) is None
    assert await store.delete(session.id) is None


async def test_removing_a_scope_ends_only_its_sessions() -> None:
    store = MemorySessionStore(idle_timeout=60)
    kept, gone = make(), make()
    gone.scope = "removed"
    await store.create(kept)
    await store.create(gone)
    assert await store.remove_scope("removed") == [gone]
    assert await store.get(gone.id) is None and await store.get(kept.id) is kept
    assert await store.remove_scope("removed") == []


async def test_idle_sessions_expire_and_use_keeps_them_alive() -> None:
    clock = Clock()
    store = MemorySessionStore(idle_timeout=60, clock=clock)
    kept, dropped = make("kept"), make("dropped")
    for s in (kept, dropped):
        s.last_seen = clock.now
        await store.create(s)
    clock.now += 50
    assert await store.get("kept") is not None  # touching restarts its idle timer
    clock.now += 20
    assert await store.get("dropped") is None  # expired on access
    clock.now += 100
    expired = await store.expire()
    assert [s.id for s in expired] == ["kept"]
    assert len(store) == 0


def test_json_round_trip() -> None:
    session = make()
    assert Session.from_json(session.to_json()) == session


async def test_a_full_store_refuses_new_sessions_and_counts_them() -> None:
    store = MemorySessionStore(idle_timeout=60, max_sessions=2)
    await store.create(make("a", client="x"))
    await store.create(make("b", client="y"))
    for attempt in (store.admit(), store.create(make("c", client="z"))):
        with pytest.raises(GatewayError) as refused:
            await attempt
        assert refused.value.reason.name == "session_limit"
        assert refused.value.status == 503 and refused.value.headers["Retry-After"]
    assert (len(store), store.refused) == (2, 2)
    await store.delete("a")
    await store.admit()  # room again


async def test_a_client_at_its_cap_loses_its_least_recently_used_session() -> None:
    clock = Clock()
    store = MemorySessionStore(idle_timeout=600, max_per_client=2, clock=clock)
    for sid in ("old", "used"):
        session = make(sid, client="alice")
        session.last_seen = clock.now
        await store.create(session)
        clock.now += 1
    assert await store.create(make("bob-1", client="bob")) == []  # another client is not affected
    clock.now += 1
    await store.get("old")  # now "used" is the least recently used of alice's
    evicted = await store.create(make("new", client="alice"))
    assert [s.id for s in evicted] == ["used"]
    assert store.evicted == 1
    assert await store.get("used") is None
    assert {s for s in ("old", "new", "bob-1") if await store.get(s)} == {"old", "new", "bob-1"}


async def test_expiry_and_deletion_keep_the_per_client_count_right() -> None:
    clock = Clock()
    store = MemorySessionStore(idle_timeout=10, max_per_client=1, clock=clock)
    first = make("first", client="alice")
    first.last_seen = clock.now
    await store.create(first)
    clock.now += 20
    assert [s.id for s in await store.expire()] == ["first"]
    assert await store.create(make("second", client="alice")) == []  # nothing left to evict
    await store.delete("second")
    assert await store.create(make("third", client="alice")) == []
    assert len(store) == 1


def test_reopen_params_keep_what_reopening_needs() -> None:
    params = {
        "protocolVersion": "2025-11-25",
        "capabilities": {"roots": {"listChanged": True}},
        "clientInfo": {"name": "c", "version": "1", "title": "C", "icons": [{"src": "data:" + "A" * 100_000}]},
        "extra": "x" * 100_000,
    }
    assert reopen_params(params) == {
        "protocolVersion": "2025-11-25",
        "capabilities": {"roots": {"listChanged": True}},
        "clientInfo": {"name": "c", "title": "C", "version": "1"},
    }
    assert reopen_params({}) == {}


def test_reopen_params_are_bounded() -> None:
    with pytest.raises(GatewayError) as too_big:
        reopen_params({"capabilities": {"experimental": {"pad": "x" * MAX_REOPEN_PARAMS}}})
    assert too_big.value.status == 400
    assert too_big.value.data == {"limit": MAX_REOPEN_PARAMS}
    assert "pad" not in too_big.value.message and "xxxx" not in too_big.value.message
