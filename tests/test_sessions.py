"""The session store: expiry, ownership data, JSON round trip."""

from __future__ import annotations

from mcpgate.sessions import MemorySessionStore, Session, new_session_id


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(sid: str | None = None) -> Session:
    return Session(
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
