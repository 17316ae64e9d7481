"""Analytics end to end: a real gateway with a DuckDB file, real MCP servers behind it, known
traffic from several clients (calls, a policy denial, a rate limit, a bad key, the official SDK in
both eras), and exact numbers from every analytics path of the admin API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mcpgate.admin.openapi import document
from tests.gateway_harness import modern_call, modern_headers, sdk_client
from tests.store_harness import admin_yaml, call, serving
from tests.test_admin_openapi import _validator

pytestmark = pytest.mark.e2e

KEYS = {"alice": "alice-key-0123456789abcdef", "bob": "bob-key-0123456789abcdef", "carol": "carol-key-0123456789ab"}
ROLES = {"alice": "eng", "bob": "guest", "carol": "eng"}


def gateway_yaml(urls: dict[str, str], tmp: Path, analytics: str | None = "{}") -> str:
    keys = ", ".join(f"{{id: {name}, key: {key}, roles: [{ROLES[name]}]}}" for name, key in KEYS.items())
    text = (
        "server: {port: 0}\n"
        f"upstreams:\n  alpha: {{url: {json.dumps(urls['alpha'])}}}\n"
        f"  beta: {{url: {json.dumps(urls['beta'])}, prefix: beta}}\n"
        f"auth: {{api_keys: [{keys}]}}\n"
        "policy: {default: allow, rules: [{roles: [guest], tools: [add], decision: deny}]}\n"
        "rate_limit: {default: {capacity: 1000, refill_per_second: 100}, "
        "rules: [{clients: [carol], capacity: 2, refill_per_second: 0.001}]}\n"
        "observability: {metrics: {enabled: true}}\n" + admin_yaml(f"path: {json.dumps(str(tmp / 'store.db'))}")
    )
    if analytics is not None:
        settings = json.loads(analytics) if analytics != "{}" else {}
        settings.setdefault("path", str(tmp / "analytics.duckdb"))
        text += f"analytics: {json.dumps(settings)}\n"
    return text


async def tool_call(http: aiohttp.ClientSession, url: str, client: str | None, tool: str, **args: Any) -> int:
    """One stateless 2026-07-28 tools/call; its HTTP status (a JSON-RPC error is read as its own)."""
    headers = modern_headers("tools/call", tool)
    headers["Authorization"] = f"Bearer {KEYS[client] if client else 'not-a-key-0000000000000'}"
    async with http.post(url, json=modern_call("tools/call", {"name": tool, "arguments": args}), headers=headers) as r:
        await r.read()
        return r.status


async def drive(http: aiohttp.ClientSession, base: str) -> None:
    """Known traffic: 11 requests, 3 of them refused (a denial, a rate limit, a bad key)."""
    alpha, beta = f"{base}/servers/alpha/mcp", f"{base}/servers/beta/mcp"
    for a in range(3):
        assert await tool_call(http, alpha, "alice", "add", a=a, b=1) == 200
    assert await tool_call(http, beta, "alice", "whoami") == 200
    for _ in range(2):
        assert await tool_call(http, alpha, "bob", "whoami") == 200
    assert await tool_call(http, alpha, "bob", "add", a=1, b=2) == 403  # the policy
    assert [await tool_call(http, alpha, "carol", "whoami") for _ in range(3)] == [200, 200, 429]
    assert await tool_call(http, alpha, None, "whoami") == 401


async def test_every_analytics_path_gives_the_driven_numbers(named_upstreams: dict[str, str], tmp_path: Path) -> None:
    async with serving(gateway_yaml(named_upstreams, tmp_path)) as gw, aiohttp.ClientSession() as http:
        await drive(http, gw.url)
        a = f"{gw.admin}/analytics"

        status, headers, tools = await call(http, "GET", f"{a}/tools?period=1h")
        assert status == 200 and headers["Cache-Control"] == "no-store"
        fields = ("server", "tool", "invocations", "unique_clients", "error_rate")
        assert [tuple(t[f] for f in fields) for t in tools["tools"]] == [
            ("alpha", "whoami", 6, 3, 0.3333),
            ("alpha", "add", 4, 2, 0.25),
            ("beta", "whoami", 1, 1, 0.0),
        ]  # fmt: skip
        assert all(t["p95_ms"] > 0 for t in tools["tools"])

        _, _, usage = await call(http, "GET", f"{a}/usage?period=1h&group_by=client")
        by_client = {g["client"]: (g["requests"], g["errors"]) for g in usage["groups"]}
        assert by_client == {"alice": (4, 0), "bob": (3, 1), "carol": (3, 1), "anonymous": (1, 1)}
        for group in usage["groups"]:
            assert group["bytes_in"] > 0 and group["p50_ms"] <= group["p95_ms"]
        _, _, by_server = await call(http, "GET", f"{a}/usage?group_by=server")
        assert {g["server"]: g["requests"] for g in by_server["groups"]} == {"alpha": 10, "beta": 1}
        _, _, by_tool = await call(http, "GET", f"{a}/usage?group_by=tool")
        assert {(g["server"], g["tool"]): g["errors"] for g in by_tool["groups"]} == {
            ("alpha", "whoami"): 2, ("alpha", "add"): 1, ("beta", "whoami"): 0,
        }  # fmt: skip

        _, _, bob = await call(http, "GET", f"{a}/usage/bob?period=1h")
        assert (bob["totals"]["requests"], bob["totals"]["errors"]) == (3, 1)
        assert [(t["tool"], t["requests"], t["errors"]) for t in bob["tools"]] == [("whoami", 2, 0), ("add", 1, 1)]

        _, _, series = await call(http, "GET", f"{a}/timeseries?period=1h&bucket=5m")
        assert len(series["points"]) == 13 and sum(p["value"] for p in series["points"]) == 11
        _, _, errors = await call(http, "GET", f"{a}/timeseries?period=1h&metric=errors")
        assert sum(p["value"] for p in errors["points"]) == 3
        _, _, add = await call(http, "GET", f"{a}/timeseries?period=1h&server=alpha&tool=add")
        assert sum(p["value"] for p in add["points"]) == 4
        _, _, p95 = await call(http, "GET", f"{a}/timeseries?period=1h&metric=p95_ms")
        assert any(p["value"] > 0 for p in p95["points"])

        _, _, refused = await call(http, "GET", f"{a}/rejections")
        shown = [(r["client_id"], r["reason"], r["status"]) for r in refused["rejections"]]
        assert shown == [("anonymous", "invalid_token", 401), ("carol", "rate_limited", 429), ("bob", "forbidden", 403)]
        assert refused["rejections"][2]["rule"] == "policy.rules[0]" and refused["rejections"][2]["item"] == "add"
        assert refused["rejections"][1]["rule"] == "rate_limit.rules[0]"

        _, _, state = await call(http, "GET", f"{gw.admin}/status")
        assert [(u["name"], u["state"]) for u in state["upstreams"]] == [("alpha", "healthy"), ("beta", "healthy")]
        assert state["analytics"]["backend"] == "duckdb" and state["analytics"]["written"] == 11
        assert state["analytics"]["dropped"] == 0 and state["analytics"]["state"] == "ok"
        assert usage["totals"]["requests"] == 11 and usage["totals"]["errors"] == 3

        # Every answer is what the OpenAPI document says it is.
        doc = document()
        answers = {
            "Usage": [usage, by_server, by_tool], "ClientUsage": [bob], "ToolPopularity": [tools],
            "TimeSeries": [series, errors, add, p95], "Rejections": [refused], "Status": [state],
        }  # fmt: skip
        for component, bodies in answers.items():
            for body in bodies:
                _validator(doc, component).validate(body)


async def test_the_official_client_in_both_eras_is_counted(named_upstreams: dict[str, str], tmp_path: Path) -> None:
    async with serving(gateway_yaml(named_upstreams, tmp_path)) as gw, aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {KEYS['alice']}"}
        for mode in ("legacy", "2026-07-28"):
            async with sdk_client(f"{gw.url}/mcp", mode, headers=auth) as client:
                # beta's tools carry its prefix on the unified endpoint; analytics name them as beta knows them
                prefixed = [name for name in await _names(client) if name.endswith("whoami") and name != "whoami"]
                assert len(prefixed) == 1 and prefixed[0].startswith("beta")
                for _ in range(2):
                    await client.call_tool(prefixed[0], {})
            async with sdk_client(f"{gw.url}/servers/alpha/mcp", mode, headers=auth) as client:
                await client.call_tool("whoami", {})
        _, _, tools = await call(http, "GET", f"{gw.admin}/analytics/tools")
        counted = {(t["server"], t["tool"]): t["invocations"] for t in tools["tools"]}
        assert counted == {("beta", "whoami"): 4, ("alpha", "whoami"): 2}
        _, _, usage = await call(http, "GET", f"{gw.admin}/analytics/usage")
        assert [g["client"] for g in usage["groups"]] == ["alice"]
        assert usage["groups"][0]["requests"] > 6  # the protocol's own requests too (initialize, lists)
        _, _, state = await call(http, "GET", f"{gw.admin}/status")
        assert state["sessions"]["total"] == 0  # every SDK session was ended


async def _names(client: Any) -> list[str]:
    return [tool.name for tool in (await client.list_tools()).tools]


async def test_bad_parameters_no_credential_and_analytics_off(named_upstreams: dict[str, str], tmp_path: Path) -> None:
    async with serving(gateway_yaml(named_upstreams, tmp_path)) as gw, aiohttp.ClientSession() as http:
        a = f"{gw.admin}/analytics"
        status, headers, body = await call(http, "GET", f"{a}/timeseries?period=7d&bucket=1s&metric=p99&x=1")
        assert status == 400 and headers["Content-Type"].startswith("application/problem+json")
        assert [e["parameter"] for e in body["errors"]] == ["x", "bucket", "metric"]
        status, _, body = await call(http, "GET", f"{a}/usage?group_by=method&period=forever")
        assert status == 400 and [e["parameter"] for e in body["errors"]] == ["period", "group_by"]
        assert (await call(http, "GET", f"{a}/tools?limit=5000"))[0] == 400
        for path in ("usage", "usage/alice", "tools", "timeseries", "rejections"):
            status, headers, body = await call(http, "GET", f"{a}/{path}", key=None)
            assert status == 401 and "Bearer" in headers["WWW-Authenticate"], path
            assert (await call(http, "GET", f"{a}/{path}", key=KEYS["alice"]))[0] == 403, path  # a client, not an admin
        assert (await call(http, "GET", f"{gw.admin}/status", key=None))[0] == 401
    async with serving(gateway_yaml(named_upstreams, tmp_path, analytics=None)) as gw, aiohttp.ClientSession() as http:
        status, _, body = await call(http, "GET", f"{gw.admin}/analytics/usage")
        assert status == 404 and "analytics: section" in body["detail"]
        _, _, state = await call(http, "GET", f"{gw.admin}/status")
        assert state["analytics"] is None and len(state["upstreams"]) == 2


async def test_events_survive_a_restart(named_upstreams: dict[str, str], tmp_path: Path) -> None:
    text = gateway_yaml(named_upstreams, tmp_path)
    async with serving(text) as gw, aiohttp.ClientSession() as http:
        await drive(http, gw.url)
    assert (tmp_path / "analytics.duckdb").exists()
    async with serving(text) as gw, aiohttp.ClientSession() as http:
        _, _, usage = await call(http, "GET", f"{gw.admin}/analytics/usage?group_by=server")
        assert {g["server"]: g["requests"] for g in usage["groups"]} == {"alpha": 10, "beta": 1}


async def test_a_full_queue_drops_and_counts_while_every_request_is_answered(
    named_upstreams: dict[str, str], tmp_path: Path
) -> None:
    settings = json.dumps({"queue_size": 2, "flush_interval": "1h"})
    async with serving(gateway_yaml(named_upstreams, tmp_path, settings)) as gw, aiohttp.ClientSession() as http:
        url = f"{gw.url}/servers/alpha/mcp"
        assert [await tool_call(http, url, "alice", "whoami") for _ in range(7)] == [200] * 7
        _, _, state = await call(http, "GET", f"{gw.admin}/status")
        assert (state["analytics"]["queued"], state["analytics"]["dropped"]) == (2, 5)
        _, _, tools = await call(http, "GET", f"{gw.admin}/analytics/tools")  # a question writes the queue first
        assert tools["tools"][0]["invocations"] == 2
        async with http.get(f"{gw.url}/metrics") as resp:
            metrics = await resp.text()
        assert 'mcpgate_analytics_events_total{outcome="dropped"} 5.0' in metrics
        assert 'mcpgate_analytics_events_total{outcome="written"} 2.0' in metrics


async def test_the_command_line_asks_the_same_questions(named_upstreams: dict[str, str], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mcpgate import cli
    from tests.store_harness import ADMIN_KEY

    def admin(*args: str) -> Any:
        env = {"MCPGATE_ADMIN_KEY": ADMIN_KEY, "MCPGATE_ADMIN_URL": None, "MCPGATE_CONFIG": None}
        return CliRunner().invoke(cli.main, ["admin", "--url", base, *args], env=env, catch_exceptions=False)

    async with serving(gateway_yaml(named_upstreams, tmp_path)) as gw, aiohttp.ClientSession() as http:
        await drive(http, gw.url)
        base = gw.admin.removesuffix("/admin/v1")
        # urllib blocks: the CLI runs on a thread while this loop serves it
        tools = await asyncio.to_thread(admin, "analytics", "tools", "--period", "1h")
        assert tools.exit_code == 0, tools.output
        lines = tools.output.splitlines()
        assert lines[0].split() == ["SERVER", "TOOL", "CALLS", "CLIENTS", "P95", "MS", "ERRORS"]
        assert [line.split()[:4] for line in lines[1:]] == [
            ["alpha", "whoami", "6", "3"], ["alpha", "add", "4", "2"], ["beta", "whoami", "1", "1"],
        ]  # fmt: skip
        usage = await asyncio.to_thread(admin, "analytics", "usage", "--group-by", "client")
        rows = {line.split()[0]: line.split()[1:3] for line in usage.output.splitlines()[1:]}
        assert rows["bob"] == ["3", "1"] and rows["TOTAL"] == ["11", "3"]
        bob = await asyncio.to_thread(admin, "analytics", "client", "bob")
        assert bob.exit_code == 0 and bob.output.splitlines()[1].split()[:2] == ["3", "1"]
        series = await asyncio.to_thread(admin, "analytics", "timeseries", "--period", "1h", "--bucket", "5m")
        assert sum(int(line.split()[1]) for line in series.output.splitlines()[1:]) == 11
        refused = await asyncio.to_thread(admin, "analytics", "rejections", "--reason", "forbidden")
        assert [line.split()[1] for line in refused.output.splitlines()[1:]] == ["bob"]
        state = await asyncio.to_thread(admin, "status")
        assert "analytics: duckdb, ok; 11 written, 0 dropped, 0 failed" in state.output
        as_json = await asyncio.to_thread(admin, "--json", "analytics", "tools")
        assert json.loads(as_json.output)["tools"][0]["invocations"] == 6
        bad = await asyncio.to_thread(admin, "analytics", "usage", "--period", "forever")
        assert bad.exit_code == 1
        assert "--period: must be a number and a unit" in bad.output
