"""The store's pure parts (sealing, merging, pointers, redaction), its configuration, and the SQLite
backend's transactions, without a gateway."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from mcpgate.config import ConfigError, load_config
from mcpgate.config.model import StoreConfig
from mcpgate.store import NoKey, Store
from mcpgate.store.backend import Missing, Stale, StoreError
from mcpgate.store.cipher import Cipher, SealError, parse_key
from mcpgate.store.migrations import LATEST
from mcpgate.store.objects import (
    REDACTED,
    Objects,
    Row,
    body_pointer,
    join_secrets,
    merge,
    redacted_document,
    split_secrets,
)

KEY = secrets.token_bytes(32)


# -- sealing -------------------------------------------------------------------------------------


def test_a_key_is_64_hex_digits_or_32_bytes_of_base64() -> None:
    assert parse_key(KEY.hex()) == KEY
    assert parse_key(base64.b64encode(KEY).decode()) == KEY
    assert parse_key(base64.urlsafe_b64encode(KEY).decode().rstrip("=")) == KEY
    for bad in ("", "abc", KEY.hex()[:-2], base64.b64encode(KEY[:16]).decode(), "not base64 at all!"):
        assert parse_key(bad) is None


def test_a_sealed_value_opens_only_with_its_key_and_on_its_row() -> None:
    cipher = Cipher(KEY)
    sealed = cipher.seal(b"token", "upstream/github")
    assert sealed.startswith("v1:") and "token" not in sealed
    assert cipher.seal(b"token", "upstream/github") != sealed  # a fresh nonce every time
    assert cipher.open(sealed, "upstream/github") == b"token"
    with pytest.raises(SealError):
        cipher.open(sealed, "upstream/other")  # copied onto another row
    with pytest.raises(SealError):
        Cipher(secrets.token_bytes(32)).open(sealed, "upstream/github")
    with pytest.raises(SealError):
        cipher.open(sealed[:-4] + "AAAA", "upstream/github")
    with pytest.raises(SealError):
        cipher.open("v0:xyz", "upstream/github")


# -- merging -------------------------------------------------------------------------------------

FILE: dict[str, Any] = {
    "upstreams": {"a": {"url": "http://127.0.0.1:1/mcp"}},
    "auth": {"api_keys": [{"id": "file", "key": "k" * 20}], "jwt": {"issuer": "x", "jwks_uri": "http://x/j"}},
    "policy": {"default": "deny", "rules": [{"decision": "allow", "clients": ["file"]}]},
}


def objects(*rows: tuple[str, str, dict[str, Any]]) -> Objects:
    return Objects(len(rows), {(k, n): Row(k, n, b, i + 1) for i, (k, n, b) in enumerate(rows)})  # type: ignore[misc]


def test_store_objects_join_the_file_after_its_own_and_never_replace_them() -> None:
    stored = objects(
        ("upstream", "a", {"url": "http://evil/mcp"}),
        ("upstream", "b", {"url": "http://127.0.0.1:2/mcp"}),
        ("api_key", "file", {"key_hash": "sha256:" + "0" * 64}),
        ("api_key", "ci", {"key_hash": "sha256:" + "1" * 64, "roles": ["eng"]}),
        ("role_mapping", "sre", {"claim": "groups", "value": "sre", "roles": ["admin"]}),
        ("policy", "policy", {"rules": [{"decision": "deny", "tools": ["rm_*"]}]}),
        ("rate_limits", "rate_limits", {"rules": [{"capacity": 1, "refill_per_second": 1}]}),
    )
    merged = merge(FILE, stored)
    data = merged.data
    assert data["upstreams"] == {"a": {"url": "http://127.0.0.1:1/mcp"}, "b": {"url": "http://127.0.0.1:2/mcp"}}
    assert [k["id"] for k in data["auth"]["api_keys"]] == ["file", "ci"]
    assert data["auth"]["jwt"]["role_mappings"] == [{"claim": "groups", "value": "sre", "roles": ["admin"]}]
    assert [r["decision"] for r in data["policy"]["rules"]] == ["allow", "deny"] and data["policy"]["default"] == "deny"
    assert data["rate_limit"] == {"rules": [{"capacity": 1, "refill_per_second": 1}]}  # no file section: the store's
    assert len(merged.shadowed) == 2 and all("the file defines" in line for line in merged.shadowed)
    assert FILE["upstreams"] == {"a": {"url": "http://127.0.0.1:1/mcp"}}  # the file's document is untouched
    layout = merged.layout
    assert body_pointer("upstream", "b", layout, ("upstreams", "b", "tools", "allow")) == "/tools/allow"
    assert body_pointer("upstream", "b", layout, ("upstreams", "a", "url")) is None
    assert body_pointer("api_key", "ci", layout, ("auth", "api_keys", 1, "roles", 0)) == "/roles/0"
    assert body_pointer("api_key", "ci", layout, ("auth", "api_keys", 0, "roles")) is None
    assert body_pointer("role_mapping", "sre", layout, ("auth", "jwt", "role_mappings", 0, "claim")) == "/claim"
    assert body_pointer("policy", "policy", layout, ("policy", "rules", 1, "tools", 0)) == "/rules/0/tools/0"
    assert body_pointer("policy", "policy", layout, ("policy", "rules", 0, "clients")) is None  # the file's rule
    assert body_pointer("rate_limits", "rate_limits", layout, ("rate_limit", "rules", 0)) == "/rules/0"


def test_keys_and_mappings_without_the_files_sections_are_left_out() -> None:
    stored = objects(("api_key", "ci", {"key_hash": "sha256:" + "1" * 64}), ("role_mapping", "x", {"claim": "c"}))
    merged = merge({"upstreams": {}}, stored)
    assert "auth" not in merged.data
    assert any("no auth section" in line for line in merged.shadowed)
    assert any("no auth.jwt section" in line for line in merged.shadowed)


def test_credentials_split_from_the_body_and_join_it_again() -> None:
    body = {
        "url": "http://x/mcp",
        "auth": {"type": "header", "header": "X-Key", "value": "v-secret"},
        "headers": {"X-Tenant": "t-secret"},
        "timeout": "5s",
    }
    public, hidden = split_secrets(body)
    assert public["auth"] == {"type": "header", "header": "X-Key", "value": REDACTED}
    assert public["headers"] == {"X-Tenant": REDACTED} and public["timeout"] == "5s"
    assert hidden == {"/auth/value": "v-secret", "/headers/X-Tenant": "t-secret"}
    assert join_secrets(public, hidden) == body
    # A new value replaces, a marker keeps, a marker with nothing stored stays a marker.
    sent = {**public, "headers": {"X-Tenant": "new", "X-Other": REDACTED}}
    joined = join_secrets(sent, hidden)
    assert joined["headers"] == {"X-Tenant": "new", "X-Other": REDACTED} and joined["auth"]["value"] == "v-secret"


def test_the_effective_configuration_shows_no_credential() -> None:
    document = {
        **FILE,
        "upstreams": {
            "a": {"url": "http://x/mcp", "auth": {"type": "bearer", "token": "tok-secret"}},
            "b": {"url": "https://user:url-secret@x/mcp"},
        },
        "store": {"backend": "postgres", "url": "postgresql://u:pw-secret@db/x", "encryption_key": "k-secret"},
        "sessions": {"backend": "redis", "redis_url": "redis://:redis-secret@r/0"},
        "admin": {"api_keys": [{"id": "ops", "key_hash": "sha256:" + "2" * 64}]},
    }
    shown = json.dumps(redacted_document(document))
    for secret in ("tok-secret", "url-secret", "pw-secret", "k-secret", "redis-secret", "k" * 20, "2" * 64):
        assert secret not in shown
    assert '"id": "ops"' in shown


# -- configuration -------------------------------------------------------------------------------


def problems(text: str) -> list[str]:
    try:
        load_config(text=text, source="c.yml")
    except ConfigError as exc:
        return [f"{i.path}: {i.message}" for i in exc.issues]
    return []


HASH = "sha256:" + "a" * 64


def test_with_a_store_upstreams_may_all_come_from_it() -> None:
    assert problems("store: {}\n") == []
    assert problems(f"admin: {{api_keys: [{{id: ops, key_hash: '{HASH}'}}]}}\n") == []
    assert problems("upstreams: {}\n") == ["upstreams: must not be empty"]
    config = load_config(text=f"admin: {{api_keys: [{{id: ops, key_hash: '{HASH}'}}]}}\n")
    assert config.store == StoreConfig() and config.admin is not None and config.admin.port == 8081
    assert "auth: {}" and problems("store: {}\nauth: {}\n") == []  # keys may all come from the store


ADMIN_A = f"{{id: a, key_hash: '{HASH}'}}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("store: {backend: postgres}\n", "store: backend postgres needs 'url'"),
        ("store: {url: 'postgresql://db/x'}\n", "store.url: 'url' only applies to backend postgres"),
        ("store: {backend: postgres, url: 'postgresql://db/x', path: x.db}\n", "store.path: 'path' only applies"),
        ("store: {url: 'mysql://db/x', backend: postgres}\n", "store.url: must be a postgresql:// (or postgres://)"),
        ("store: {encryption_key: 'too-short'}\n", "store.encryption_key: must be 32 bytes as 64 hex digits"),
        ("admin: {}\n", "admin: needs 'api_keys', or auth.jwt and 'roles'"),
        (f"server: {{port: 9000}}\nadmin: {{port: 9000, api_keys: [{ADMIN_A}]}}\n", "admin.port: is server.port"),
        (f"admin: {{api_keys: [{ADMIN_A}, {ADMIN_A}]}}\n", "admin.api_keys[1].id: duplicate id 'a'"),
        ("admin: {api_keys: [{id: a, key: plain}]}\n", "admin.api_keys[0]: missing required key 'key_hash'"),
    ],
)
def test_store_and_admin_sections_are_checked(text: str, expected: str) -> None:
    assert any(found.startswith(expected) for found in problems(text)), problems(text)


def test_the_encryption_key_is_never_quoted() -> None:
    found = problems("store: {encryption_key: 'my-secret-key-value'}\n")
    assert found and not any("my-secret-key-value" in p for p in found)


# -- the SQLite backend --------------------------------------------------------------------------


async def open_store(path: Path, key: bytes | None = KEY) -> Store:
    store = Store(StoreConfig(path=str(path), encryption_key=key.hex() if key else None))
    await store.open(migrate=True)
    return store


async def test_migrations_apply_once_and_report_their_state(tmp_path: Path) -> None:
    store = Store(StoreConfig(path=str(tmp_path / "s.db")))
    with pytest.raises(StoreError, match="mcpgate migrate up"):
        await store.open(migrate=False)
    await store.open(migrate=True)
    assert [s.applied_at is not None for s in await store.backend.migrations()] == [True] * LATEST
    assert await store.backend.migrate() == []  # nothing left to do
    await store.close()
    again = Store(StoreConfig(path=str(tmp_path / "s.db")))
    await again.open(migrate=False)  # current now: no migration needed
    await again.close()


async def test_writes_check_the_revision_and_keep_credentials_sealed(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "s.db")
    try:
        body = {"url": "http://x/mcp", "auth": {"type": "bearer", "token": "tok-secret"}}
        first = await store.write("upstream", "x", body, expect=0, actor="key:ops")
        with pytest.raises(Stale) as stale:
            await store.write("upstream", "x", body, expect=0, actor="key:ops")  # exists by now
        assert stale.value.current == first
        second = await store.write("upstream", "x", {**body, "timeout": 5}, expect=first, actor="key:ops")
        assert second == first + 1
        with pytest.raises(Missing):
            await store.write("upstream", "nope", None, expect=None, actor="key:ops")
        loaded = await store.load()
        row = loaded.get("upstream", "x")
        assert row is not None and row.body["auth"]["token"] == "tok-secret" and row.revision == second
        assert row.updated_by == "key:ops"
        trail = await store.backend.audit(10)
        assert [(e["action"], e["revision"]) for e in trail] == [("replace", second), ("create", first)]
        assert "tok-secret" not in json.dumps(trail)
    finally:
        await store.close()
    assert b"tok-secret" not in b"".join(p.read_bytes() for p in tmp_path.iterdir())
    # Another key cannot open what this one sealed; no key at all cannot even try.
    for other in (secrets.token_bytes(32), None):
        stranger = await open_store(tmp_path / "s.db", other)
        try:
            with pytest.raises(StoreError, match="upstream 'x'"):
                await stranger.load()
        finally:
            await stranger.close()


async def test_without_a_key_credentials_are_refused_and_the_rest_kept(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "s.db", None)
    try:
        with pytest.raises(NoKey):
            await store.write("upstream", "x", {"url": "http://x/mcp", "headers": {"A": "b"}}, expect=None, actor="t")
        await store.write("upstream", "x", {"url": "http://x/mcp"}, expect=None, actor="t")
        assert (await store.load()).get("upstream", "x") is not None
    finally:
        await store.close()


async def test_an_unusable_store_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    store = Store(StoreConfig(path=str(tmp_path / "dir.db")))
    with pytest.raises(StoreError, match=r"dir\.db") as error:
        await store.open(migrate=True, patience=0)
    assert not error.value.retry


async def test_a_store_file_another_process_is_writing_is_waited_for(tmp_path: Path) -> None:
    """Workers open one new file together: turning it to WAL finds the other's lock, and waits."""
    import sqlite3

    path = tmp_path / "s.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE elsewhere (a)")
    asyncio.get_running_loop().call_later(0.3, other.execute, "COMMIT")
    store = Store(StoreConfig(path=str(path)))
    try:
        await store.open(migrate=True, patience=0)
        assert [s.applied_at is not None for s in await store.backend.migrations()] == [True] * LATEST
    finally:
        await store.close()
        other.close()
