"""The admin REST API end to end: a real gateway with a SQLite store, real MCP servers behind it,
the official client at the MCP endpoints, raw HTTP at the admin listener."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mcp.shared.exceptions import MCPError

from tests.gateway_harness import POST_HEADERS, rpc, sdk_client
from tests.idp import AUDIENCE, local_idp
from tests.store_harness import ADMIN_KEY, ENCRYPTION_KEY, admin_yaml, call, serving

pytestmark = pytest.mark.e2e

CLIENT_KEY = "client-key-0123456789abcdef"
SECRET_TOKEN = "upstream-token-" + "7" * 20
SECRET_HEADER = "header-secret-" + "9" * 20


def gateway_yaml(urls: dict[str, str], db: Path, *, key: bool = True, auth: str | None = None, extra: str = "") -> str:
    auth = auth if auth is not None else f"{{api_keys: [{{id: file-client, key: {CLIENT_KEY}, roles: [eng]}}]}}"
    return (
        f"server: {{port: 0}}\nupstreams:\n  alpha: {{url: {json.dumps(urls['alpha'])}}}\n"
        f"auth: {auth}\n{admin_yaml(f'path: {json.dumps(str(db))}', key=key)}{extra}"
    )


def beta(urls: dict[str, str], **more: Any) -> dict[str, Any]:
    return {"url": urls["beta"], "prefix": "beta", **more}


def text(result: Any) -> str:
    return str(result.content[0].text)


async def mcp_status(http: aiohttp.ClientSession, url: str, key: str) -> int:
    body = rpc(
        "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    )
    async with http.post(url, json=body, headers={**POST_HEADERS, "Authorization": f"Bearer {key}"}) as resp:
        await resp.read()
        return resp.status


async def test_an_upstream_put_through_the_api_serves_both_eras_and_goes_away_when_deleted(
    named_upstreams: dict[str, str], tmp_path: Path
) -> None:
    async with serving(gateway_yaml(named_upstreams, tmp_path / "s.db")) as gw, aiohttp.ClientSession() as http:
        status, headers, body = await call(http, "PUT", f"{gw.admin}/upstreams/beta", beta(named_upstreams))
        assert status == 201, body
        assert headers["ETag"] == f'"{body["revision"]}"'
        auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
        for mode in ("legacy", "2026-07-28"):
            async with sdk_client(f"{gw.url}/servers/beta/mcp", mode, headers=auth) as client:
                assert text(await client.call_tool("whoami", {})) == "beta"
            async with sdk_client(f"{gw.url}/mcp", mode, headers=auth) as client:
                assert text(await client.call_tool("beta__add", {"a": 1, "b": 2})) == "beta:3"
        status, _, listed = await call(http, "GET", f"{gw.admin}/upstreams")
        assert [(u["name"], u["source"]) for u in listed["upstreams"]] == [("alpha", "file"), ("beta", "store")]

        status, _, _ = await call(http, "DELETE", f"{gw.admin}/upstreams/beta")
        assert status == 204
        assert await mcp_status(http, f"{gw.url}/servers/beta/mcp", CLIENT_KEY) == 404
        assert await mcp_status(http, f"{gw.url}/servers/alpha/mcp", CLIENT_KEY) == 200


async def test_a_key_created_through_the_api_opens_the_mcp_endpoint_until_it_is_revoked(
    named_upstreams: dict[str, str], tmp_path: Path
) -> None:
    async with serving(gateway_yaml(named_upstreams, tmp_path / "s.db")) as gw, aiohttp.ClientSession() as http:
        status, headers, created = await call(http, "POST", f"{gw.admin}/api-keys", {"id": "ci", "roles": ["eng"]})
        assert status == 201, created
        assert headers["Location"].endswith("/admin/v1/api-keys/ci")
        assert headers["Cache-Control"] == "no-store"
        key = created["key"]
        async with sdk_client(f"{gw.url}/mcp", "auto", headers={"Authorization": f"Bearer {key}"}) as client:
            assert text(await client.call_tool("whoami", {})) == "alpha"
        status, _, shown = await call(http, "GET", f"{gw.admin}/api-keys/ci")
        assert status == 200
        assert key not in json.dumps(shown) and "key_hash" not in shown
        _, _, listed = await call(http, "GET", f"{gw.admin}/api-keys")
        assert {(k["id"], k["source"]) for k in listed["api_keys"]} == {("file-client", "file"), ("ci", "store")}

        status, _, _ = await call(http, "DELETE", f"{gw.admin}/api-keys/ci")
        assert status == 204
        assert await mcp_status(http, f"{gw.url}/mcp", key) == 401
        assert await mcp_status(http, f"{gw.url}/mcp", CLIENT_KEY) == 200


async def test_every_admin_error_status(named_upstreams: dict[str, str], tmp_path: Path) -> None:
    async with serving(gateway_yaml(named_upstreams, tmp_path / "s.db")) as gw, aiohttp.ClientSession() as http:
        url = f"{gw.admin}/upstreams/beta"
        # 401: no credential, a wrong one; 403: a valid client key that is not an admin's.
        status, headers, body = await call(http, "GET", url, key=None)
        assert (status, body["status"]) == (401, 401)
        assert headers["Content-Type"].startswith("application/problem+json")
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert (await call(http, "GET", url, key="not-a-key"))[0] == 401
        assert (await call(http, "GET", url, key=CLIENT_KEY))[0] == 403
        # 400: every schema error at once, each as a JSON pointer into the body.
        bad = {"url": "ftp://x", "timeout": "soon", "tools": {"allow": "x"}, "nope": 1}
        status, _, body = await call(http, "PUT", url, bad)
        assert status == 400
        pointers = {e.get("pointer") for e in body["errors"]}
        assert {"/url", "/timeout", "/tools/allow", "/nope"} <= pointers, body
        assert (await call(http, "PUT", url, b"{not json"))[0] == 400
        assert (await call(http, "PUT", url, [1, 2]))[0] == 400
        # A cross-reference: a rule naming an upstream nobody defines, pointed at inside the body.
        status, _, body = await call(
            http, "PUT", f"{gw.admin}/policy", {"rules": [{"decision": "deny", "servers": ["nobody"]}]}
        )
        assert status == 400 and body["errors"][0]["pointer"] == "/rules/0/servers/0", body
        # 415, 413
        # Credentials in a URL would be kept in clear: refused, pointing at them.
        status, _, body = await call(http, "PUT", url, {"url": "https://user:pw@example.com/mcp"})
        assert status == 400 and [e["pointer"] for e in body["errors"]] == ["/url"]
        assert ":pw@" not in json.dumps(body)
        status, _, _ = await call(http, "PUT", url, b"url: x", headers={"Content-Type": "text/yaml"})
        assert status == 415
        assert (await call(http, "PUT", url, b'{"a": "' + b"x" * (1024 * 1024 + 10) + b'"}'))[0] == 413
        # 404: nothing stored by that name, no such path.
        assert (await call(http, "GET", url))[0] == 404
        assert (await call(http, "DELETE", url))[0] == 404
        assert (await call(http, "GET", f"{gw.admin}/nothing-here"))[0] == 404
        assert (await call(http, "GET", f"{gw.admin}/upstreams/bad%20name"))[0] == 400
        # 409: names the file owns are read-only here.
        status, _, body = await call(http, "PUT", f"{gw.admin}/upstreams/alpha", {"url": named_upstreams["alpha"]})
        assert status == 409 and "configuration file" in body["detail"]
        assert (await call(http, "DELETE", f"{gw.admin}/upstreams/alpha"))[0] == 409
        assert (await call(http, "POST", f"{gw.admin}/api-keys", {"id": "file-client"}))[0] == 409
        # 412: a stale If-Match on the ordered lists (and on objects).
        status, headers, body = await call(http, "GET", f"{gw.admin}/policy")
        assert status == 200 and headers["ETag"] == '"0"'
        rules = {"rules": [{"decision": "allow", "roles": ["eng"]}]}
        status, headers, _ = await call(http, "PUT", f"{gw.admin}/policy", rules, headers={"If-Match": '"0"'})
        assert status == 201
        etag = headers["ETag"]
        status, headers, body = await call(http, "PUT", f"{gw.admin}/policy", rules, headers={"If-Match": '"0"'})
        assert status == 412 and body["etag"] == etag
        status, _, _ = await call(http, "PUT", f"{gw.admin}/policy", rules, headers={"If-Match": etag})
        assert status == 200
        # 405
        assert (await call(http, "PATCH", f"{gw.admin}/policy", {}))[0] == 405
        # Nothing above changed what serves: alpha still answers.
        assert await mcp_status(http, f"{gw.url}/servers/alpha/mcp", CLIENT_KEY) == 200


async def test_policy_and_rate_limit_rules_from_the_store_take_effect_after_the_files(
    named_upstreams: dict[str, str], tmp_path: Path
) -> None:
    extra = "policy: {default: allow, rules: [{decision: allow, tools: [whoami]}]}\n"
    async with (
        serving(gateway_yaml(named_upstreams, tmp_path / "s.db", extra=extra)) as gw,
        aiohttp.ClientSession() as http,
    ):
        deny = {"rules": [{"decision": "deny", "tools": ["whoami", "add"]}]}
        status, _, body = await call(http, "PUT", f"{gw.admin}/policy", deny)
        assert status == 201, body
        # The file's default is the file's: the store may not change it.
        status, _, body = await call(http, "PUT", f"{gw.admin}/policy", {**deny, "default": "deny"})
        assert status == 409
        limits = {"rules": [{"tools": ["echo"], "capacity": 1, "refill_per_second": 0.001}]}
        assert (await call(http, "PUT", f"{gw.admin}/rate-limits", limits))[0] == 201
        # Removed again, then back: DELETE leaves the file's section alone.
        assert (await call(http, "DELETE", f"{gw.admin}/rate-limits"))[0] == 204
        assert gw.store.config.rate_limit is None
        assert (await call(http, "DELETE", f"{gw.admin}/rate-limits"))[0] == 404
        assert (await call(http, "PUT", f"{gw.admin}/rate-limits", {"default": {"capacity": 1}}))[0] == 400
        assert (await call(http, "PUT", f"{gw.admin}/rate-limits", limits))[0] == 201
        _, _, shown = await call(http, "GET", f"{gw.admin}/policy")
        assert [r["decision"] for r in shown["effective"]["rules"]] == ["allow", "deny"]
        auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
        async with sdk_client(f"{gw.url}/servers/alpha/mcp", "legacy", headers=auth) as client:
            assert text(await client.call_tool("whoami", {})) == "alpha"  # the file's rule comes first
            with pytest.raises(MCPError, match=r"forbidden by policy\.rules\[1\]"):
                await client.call_tool("add", {"a": 1, "b": 2})


async def test_admin_by_jwt_needs_an_admin_role(named_upstreams: dict[str, str], tmp_path: Path) -> None:
    async with local_idp() as idp:
        jwt = {"issuer": idp.issuer, "audience": AUDIENCE, "jwks_uri": idp.jwks_uri, "algorithms": ["RS256"]}
        jwt["role_mappings"] = [{"claim": "groups", "value": "platform", "roles": ["admin"]}]
        text_ = gateway_yaml(named_upstreams, tmp_path / "s.db", auth=f"{{jwt: {json.dumps(jwt)}}}")
        text_ = text_.replace("server: {port: 0}", 'server: {port: 0, public_url: "http://127.0.0.1"}')
        async with serving(text_) as gw, aiohttp.ClientSession() as http:
            admin_token = idp.token(sub="carol", groups=["platform"])
            status, _, body = await call(
                http, "PUT", f"{gw.admin}/upstreams/beta", beta(named_upstreams), key=admin_token
            )
            assert status == 201, body
            assert (await call(http, "GET", f"{gw.admin}/upstreams", key=idp.token(sub="dave")))[0] == 403
            assert (await call(http, "GET", f"{gw.admin}/upstreams", key=idp.token(exp=1000, iat=900)))[0] == 401
            # A role mapping from the store: dave's group becomes admin too.
            mapping = {"claim": "groups", "value": "sre", "roles": ["admin"]}
            assert (await call(http, "PUT", f"{gw.admin}/role-mappings/sre", mapping, key=admin_token))[0] == 201
            status, _, _ = await call(http, "GET", f"{gw.admin}/upstreams", key=idp.token(sub="dave", groups=["sre"]))
            assert status == 200
            _, _, trail = await call(http, "GET", f"{gw.admin}/audit", key=admin_token)
            assert [(e["actor"], e["action"], e["kind"]) for e in trail["entries"]] == [
                ("jwt:carol", "create", "role_mapping"),
                ("jwt:carol", "create", "upstream"),
            ]


async def test_no_secret_in_the_database_the_answers_or_the_logs(
    named_upstreams: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    db = tmp_path / "s.db"
    secret = beta(named_upstreams, auth={"type": "bearer", "token": SECRET_TOKEN}, headers={"X-Tenant": SECRET_HEADER})
    answers = []
    async with serving(gateway_yaml(named_upstreams, db)) as gw, aiohttp.ClientSession() as http:
        answers.append(await call(http, "PUT", f"{gw.admin}/upstreams/beta", secret))
        _, _, created = await call(http, "POST", f"{gw.admin}/api-keys", {"id": "ci"})
        key = created["key"]
        for path in ("upstreams", "upstreams/beta", "api-keys", "api-keys/ci", "config", "audit"):
            answers.append(await call(http, "GET", f"{gw.admin}/{path}"))
        # "<redacted>" sent back keeps the stored credential.
        shown = answers[2][2]["spec"]
        assert shown["auth"]["token"] == "<redacted>"
        shown["timeout"] = "20s"
        answers.append(await call(http, "PUT", f"{gw.admin}/upstreams/beta", shown))
        assert answers[-1][0] == 200
        upstream = gw.store.config.upstream("beta")
        assert upstream is not None and upstream.auth is not None and upstream.auth.value == f"Bearer {SECRET_TOKEN}"
        assert upstream.timeout == 20.0
        readiness = await (await http.get(f"{gw.url}/readyz")).text()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("s.db"))
    everything = json.dumps([a[2] for a in answers]) + caplog.text + readiness
    for value in (SECRET_TOKEN, SECRET_HEADER, key, ENCRYPTION_KEY, ADMIN_KEY):
        assert value.encode() not in stored
        assert value not in everything
    with sqlite3.connect(db) as conn:
        sealed = conn.execute("SELECT sealed FROM mcpgate_objects WHERE kind = 'upstream'").fetchone()[0]
    assert sealed.startswith("v1:")


async def test_without_an_encryption_key_the_store_refuses_credentials(
    named_upstreams: dict[str, str], tmp_path: Path
) -> None:
    async with (
        serving(gateway_yaml(named_upstreams, tmp_path / "s.db", key=False)) as gw,
        aiohttp.ClientSession() as http,
    ):
        secret = beta(named_upstreams, auth={"type": "bearer", "token": SECRET_TOKEN})
        status, _, body = await call(http, "PUT", f"{gw.admin}/upstreams/beta", secret)
        assert status == 400
        assert "encryption_key" in body["detail"] and body["errors"][0]["pointer"] == "/auth/token"
        assert (await call(http, "PUT", f"{gw.admin}/upstreams/beta", beta(named_upstreams)))[0] == 201


async def test_the_store_survives_a_restart(named_upstreams: dict[str, str], tmp_path: Path) -> None:
    config = gateway_yaml(named_upstreams, tmp_path / "s.db")
    async with serving(config) as gw, aiohttp.ClientSession() as http:
        secret = beta(named_upstreams, auth={"type": "bearer", "token": SECRET_TOKEN})
        assert (await call(http, "PUT", f"{gw.admin}/upstreams/beta", secret))[0] == 201
        key = (await call(http, "POST", f"{gw.admin}/api-keys", {"roles": ["eng"]}))[2]["key"]
    async with serving(config) as gw, aiohttp.ClientSession() as http:
        async with sdk_client(f"{gw.url}/mcp", "auto", headers={"Authorization": f"Bearer {key}"}) as client:
            assert text(await client.call_tool("beta__add", {"a": 2, "b": 2})) == "beta:4"
        upstream = gw.store.config.upstream("beta")
        assert upstream is not None and upstream.auth is not None and SECRET_TOKEN in upstream.auth.value


async def test_a_file_name_added_later_wins_over_the_stores(
    named_upstreams: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gw.yml"
    path.write_text(gateway_yaml(named_upstreams, tmp_path / "s.db"))
    async with serving(path=path) as gw, aiohttp.ClientSession() as http:
        assert (await call(http, "PUT", f"{gw.admin}/upstreams/beta", beta(named_upstreams)))[0] == 201
        # The file now defines beta itself (pointing at alpha's server): on SIGHUP the file's wins.
        text_ = path.read_text().replace(
            "upstreams:\n", f"upstreams:\n  beta: {{url: {json.dumps(named_upstreams['alpha'])}}}\n"
        )
        path.write_text(text_)
        gw.server.handle_reload()
        for _ in range(100):
            if gw.store.file.upstream("beta") is not None:
                break
            await asyncio.sleep(0.05)
        assert "store upstream 'beta': the file defines one of that name" in caplog.text
        async with sdk_client(
            f"{gw.url}/servers/beta/mcp", "legacy", headers={"Authorization": f"Bearer {CLIENT_KEY}"}
        ) as c:
            assert text(await c.call_tool("whoami", {})) == "alpha"
        status, _, _ = await call(http, "PUT", f"{gw.admin}/upstreams/beta", beta(named_upstreams))
        assert status == 409


async def test_keys_need_the_files_auth_section(named_upstreams: dict[str, str], tmp_path: Path) -> None:
    text_ = gateway_yaml(named_upstreams, tmp_path / "s.db").replace(
        f"auth: {{api_keys: [{{id: file-client, key: {CLIENT_KEY}, roles: [eng]}}]}}\n", ""
    )
    async with serving(text_) as gw, aiohttp.ClientSession() as http:
        status, _, body = await call(http, "POST", f"{gw.admin}/api-keys", {"id": "ci"})
        assert status == 409 and "no auth section" in body["detail"]
        assert (await call(http, "PUT", f"{gw.admin}/role-mappings/x", {"claim": "a", "value": "b", "roles": []}))[
            0
        ] == 409


async def test_no_request_fails_while_upstreams_come_and_go_under_load(
    named_upstreams: dict[str, str], tmp_path: Path
) -> None:
    async with serving(gateway_yaml(named_upstreams, tmp_path / "s.db")) as gw, aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
        stop = asyncio.Event()
        calls = [0]

        async def load(path: str, mode: str, tool: str) -> None:
            async with sdk_client(gw.url + path, mode, headers=auth) as client:
                while not stop.is_set():
                    assert text(await client.call_tool(tool, {"a": 1, "b": 2})) == "alpha:3"
                    calls[0] += 1

        clients = [
            asyncio.create_task(load(path, mode, "add"))
            for path in ("/servers/alpha/mcp", "/mcp")
            for mode in ("legacy", "2026-07-28")
        ]
        for i in range(8):
            spec = beta(named_upstreams, timeout=f"{10 + i}s")
            assert (await call(http, "PUT", f"{gw.admin}/upstreams/beta", spec))[0] in (200, 201)
            await asyncio.sleep(0.05)
            if i % 2:
                assert (await call(http, "DELETE", f"{gw.admin}/upstreams/beta"))[0] == 204
        stop.set()
        await asyncio.gather(*clients)  # any failed call fails the test here
        assert calls[0] >= len(clients)
        assert gw.store.changes_applied >= 12


async def test_a_removed_upstreams_sessions_end_cleanly(named_upstreams: dict[str, str], tmp_path: Path) -> None:
    async with serving(gateway_yaml(named_upstreams, tmp_path / "s.db")) as gw, aiohttp.ClientSession() as http:
        assert (await call(http, "PUT", f"{gw.admin}/upstreams/beta", beta(named_upstreams)))[0] == 201
        headers = {**POST_HEADERS, "Authorization": f"Bearer {CLIENT_KEY}", "MCP-Protocol-Version": "2025-11-25"}
        init = rpc(
            "initialize",
            {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
        )
        url = f"{gw.url}/servers/beta/mcp"
        async with http.post(url, json=init, headers=headers) as resp:
            assert resp.status == 200
            session = resp.headers["Mcp-Session-Id"]
        assert (await call(http, "DELETE", f"{gw.admin}/upstreams/beta"))[0] == 204
        call_ = rpc("tools/call", {"name": "whoami", "arguments": {}}, id=2)
        async with http.post(url, json=call_, headers={**headers, "Mcp-Session-Id": session}) as resp:
            body = await resp.json()
        assert resp.status == 404
        assert body["error"]["data"]["reason"] in ("session_not_found", "server_not_found")
        gateway = gw.server.gateway
        assert gateway is not None
        for _ in range(100):  # ended in the background, right after the swap
            if len(gateway.sessions) == 0:
                break
            await asyncio.sleep(0.02)
        assert len(gateway.sessions) == 0
