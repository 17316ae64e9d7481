"""The unified endpoint /mcp, end to end: two real SDK servers behind it, the official client in front.

alpha has no prefix and beta has ``prefix: beta``, and both have tools named ``add`` and
``whoami``: the merged lists show ``add`` (alpha's, by the catalogue) and ``beta__add`` (beta's,
by its prefix), and every listed item is callable where the list says.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import aiohttp
import mcp_types as types
import pytest
from mcp.shared.subscriptions import ToolsListChanged

from mcpgate.config.model import Glob, Heartbeat, RouteMatch, RoutingRule, ToolFilter, UpstreamConfig
from tests.conftest import NAMED_SERVER, free_port, start_demo_server, stop_process
from tests.gateway_harness import (
    LEGACY,
    POST_HEADERS,
    RunningGateway,
    initialize,
    make_config,
    modern_call,
    modern_headers,
    read_messages,
    rpc,
    running_gateway,
    sdk_client,
    session_headers,
)

pytestmark = pytest.mark.e2e

MODES = ["legacy", "2026-07-28", "auto"]
ALPHA_TOOLS = {"whoami", "add", "only_alpha", "steps", "dotted.name", "ask", "grow"}


def upstreams(urls: dict[str, str]) -> dict[str, str | UpstreamConfig]:
    return {
        "alpha": urls["alpha"],
        "beta": UpstreamConfig(name="beta", transport="streamable-http", url=urls["beta"], prefix="beta"),
    }


@asynccontextmanager
async def unified(urls: dict[str, str], *rules: RoutingRule) -> AsyncIterator[RunningGateway]:
    config = replace(make_config(upstreams(urls)), routing=tuple(rules))
    async with running_gateway(config) as gw:
        yield gw


def text(result: Any) -> str:
    return str(result.content[0].text)


@pytest.mark.parametrize("mode", MODES)
async def test_one_server_made_of_two(named_upstreams: dict[str, str], mode: str) -> None:
    async with unified(named_upstreams) as gw, sdk_client(gw.url + "/mcp", mode) as c:
        tools = {t.name for t in (await c.list_tools()).tools}
        assert tools == {
            "whoami", "add", "only_alpha", "steps", "dotted.name", "ask", "grow",
            "beta__whoami", "beta__add", "beta__only_beta", "beta__steps", "beta__dotted.name", "beta__ask",
            "beta__grow",
        }  # fmt: skip
        assert text(await c.call_tool("whoami", {})) == "alpha"
        assert text(await c.call_tool("beta__whoami", {})) == "beta"
        assert text(await c.call_tool("beta__add", {"a": 2, "b": 3})) == "beta:5"
        assert text(await c.call_tool("only_alpha", {})) == "only alpha"

        resources = {str(r.uri) for r in (await c.list_resources()).resources}
        assert resources == {"named://alpha/info", "named://beta/info", "named://shared"}
        assert (await c.read_resource("named://beta/info")).contents[0].text == "info from beta"  # type: ignore[union-attr]
        assert (await c.read_resource("named://shared")).contents[0].text == "shared from alpha"  # type: ignore[union-attr]
        templates = {t.uri_template for t in (await c.list_resource_templates()).resource_templates}
        assert templates == {"named://alpha/items/{item}", "named://beta/items/{item}"}
        item = await c.read_resource("named://beta/items/7")
        assert item.contents[0].text == "beta item 7"  # type: ignore[union-attr]

        prompts = {p.name for p in (await c.list_prompts()).prompts}
        assert prompts == {"greet", "beta__greet"}
        greeting = await c.get_prompt("beta__greet", {"who": "you"})
        assert greeting.messages[0].content.text == "beta greets you"  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", MODES)
async def test_progress_streams_through_the_unified_endpoint(named_upstreams: dict[str, str], mode: str) -> None:
    seen: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(message)

    async with unified(named_upstreams) as gw, sdk_client(gw.url + "/mcp", mode) as c:
        result = await c.call_tool("beta__steps", {"count": 3}, progress_callback=on_progress)
    assert text(result) == "beta done"
    assert seen == ["beta step 1", "beta step 2", "beta step 3"]


async def test_a_rule_takes_a_name_away(named_upstreams: dict[str, str]) -> None:
    to_beta = RoutingRule(0, RouteMatch(method=Glob.compile("tools/call"), tool=Glob.compile("whoami")), "beta")
    async with unified(named_upstreams, to_beta) as gw, sdk_client(gw.url + "/mcp", "auto") as c:
        assert text(await c.call_tool("whoami", {})) == "beta"  # the rule, before the catalogue
        tools = {t.name for t in (await c.list_tools()).tools}
        assert "whoami" not in tools  # alpha's whoami is no longer callable, so it is not listed
        assert "beta__whoami" in tools


async def test_a_catch_all_rule_leaves_one_upstream(named_upstreams: dict[str, str]) -> None:
    everything = RoutingRule(0, RouteMatch(method=Glob.compile("*")), "alpha")
    async with unified(named_upstreams, everything) as gw, sdk_client(gw.url + "/mcp", "legacy") as c:
        tools = {t.name for t in (await c.list_tools()).tools}
        assert tools == ALPHA_TOOLS


async def test_names_clients_reject_are_served_and_logged_once(
    named_upstreams: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    async with unified(named_upstreams) as gw, sdk_client(gw.url + "/mcp", "2026-07-28") as c:
        for _ in range(2):
            await c.list_tools()
        assert text(await c.call_tool("beta__dotted.name", {})) == "dotted"
    warnings = [r.getMessage() for r in caplog.records if "clients reject it" in r.getMessage()]
    assert len(warnings) == 2  # dotted.name and beta__dotted.name, each once
    assert any("'beta__dotted.name'" in w for w in warnings)


async def test_unknown_tool_names_the_tool(named_upstreams: dict[str, str]) -> None:
    async with unified(named_upstreams) as gw, aiohttp.ClientSession() as http:
        call = modern_call("tools/call", {"name": "nope", "arguments": {}}, id=4)
        async with http.post(gw.url + "/mcp", json=call, headers=modern_headers("tools/call", "nope")) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["id"] == 4
        assert body["error"]["code"] == -32602
        assert body["error"]["data"] == {"reason": "unknown_name", "tool": "nope"}
        sid = await initialize(http, gw.url + "/mcp")
        async with http.post(gw.url + "/mcp", json=rpc("nope/nope", {}), headers=session_headers(sid)) as resp:
            assert resp.status == 200  # a legacy client would take a 404 for "session gone"
            assert (await resp.json())["error"]["code"] == -32601


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_tools_filter_hides_tools_on_the_unified_endpoint_without_any_policy(
    named_upstreams: dict[str, str], mode: str
) -> None:
    """With no policy, the per-request check returns at once (``authorize``'s early exit); what an
    upstream's ``tools`` filter hides must then still be neither listed nor callable through /mcp."""
    hidden = ToolFilter(deny=(Glob.compile("only_*"), Glob.compile("add")))
    beta = UpstreamConfig(name="beta", transport="streamable-http", url=named_upstreams["beta"], tools=hidden)
    async with running_gateway(make_config({"beta": beta})) as gw:
        assert gw.gateway.policy is None
        async with sdk_client(gw.url + "/mcp", mode) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert "whoami" in names and "add" not in names and "only_beta" not in names
            assert text(await c.call_tool("whoami", {})) == "beta"
        async with aiohttp.ClientSession() as http:
            for name in ("add", "only_beta"):
                call = modern_call("tools/call", {"name": name, "arguments": {"a": 1, "b": 2}}, id=9)
                async with http.post(gw.url + "/mcp", json=call, headers=modern_headers("tools/call", name)) as resp:
                    body = await resp.json()
                assert body["id"] == 9
                assert body["error"]["data"] == {"reason": "unknown_name", "tool": name}, body


async def test_the_gateway_answers_the_handshake_itself(named_upstreams: dict[str, str]) -> None:
    async with unified(named_upstreams) as gw, aiohttp.ClientSession() as http:
        params = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        async with http.post(gw.url + "/mcp", json=rpc("initialize", params), headers=POST_HEADERS) as resp:
            assert resp.status == 200
            sid = resp.headers["Mcp-Session-Id"]
            result = (await resp.json())["result"]
        assert result["protocolVersion"] == LEGACY
        assert result["serverInfo"]["name"] == "mcpgate"
        assert {"tools", "resources", "prompts"} <= set(result["capabilities"])
        session = await gw.gateway.sessions.get(sid)
        assert session is not None and session.scope == "*"
        assert session.upstream_sessions == {}  # opened lazily, on first use
        async with http.post(gw.url + "/mcp", json=rpc("ping", {}), headers=session_headers(sid)) as resp:
            assert (await resp.json())["result"] == {}
        async with http.post(
            gw.url + "/mcp", json=modern_call("server/discover"), headers=modern_headers("server/discover")
        ) as resp:
            discover = (await resp.json())["result"]
        assert discover["supportedVersions"] == ["2026-07-28"]
        assert discover["resultType"] == "complete"
        # A per-server session is not a unified one, and the other way round.
        async with http.post(gw.endpoint("alpha"), json=rpc("tools/list"), headers=session_headers(sid)) as resp:
            assert resp.status == 404


async def test_an_upstream_that_is_down_drops_out_of_lists(named_upstreams: dict[str, str]) -> None:
    urls = {**named_upstreams, "beta": f"http://127.0.0.1:{free_port()}/mcp"}
    async with unified(urls) as gw, aiohttp.ClientSession() as http:
        async with http.post(
            gw.url + "/mcp", json=modern_call("tools/list"), headers=modern_headers("tools/list")
        ) as r:
            assert r.status == 200
            names = {t["name"] for t in (await r.json())["result"]["tools"]}
        assert names == ALPHA_TOOLS
        call = modern_call("tools/call", {"name": "beta__whoami", "arguments": {}})
        async with http.post(gw.url + "/mcp", json=call, headers=modern_headers("tools/call", "beta__whoami")) as r:
            assert r.status == 502
            assert (await r.json())["error"]["data"]["reason"] == "upstream_unreachable"


async def test_legacy_session_opens_upstream_sessions_lazily_and_delete_ends_them(
    named_upstreams: dict[str, str],
) -> None:
    async with unified(named_upstreams) as gw, aiohttp.ClientSession() as http:
        url = gw.url + "/mcp"
        sid = await initialize(http, url)
        call = rpc("tools/call", {"name": "beta__whoami", "arguments": {}})
        async with http.post(url, json=call, headers=session_headers(sid)) as resp:
            messages = await read_messages(resp)
        assert messages[-1]["result"]["content"][0]["text"] == "beta"
        session = await gw.gateway.sessions.get(sid)
        assert session is not None and list(session.upstream_sessions) == ["beta"]
        async with http.delete(url, headers=session_headers(sid)) as resp:
            assert resp.status == 200
        async with http.post(url, json=rpc("ping", {}), headers=session_headers(sid)) as resp:
            assert resp.status == 404


async def test_renamed_calls_carry_the_upstreams_own_name_in_mcp_name(named_upstreams: dict[str, str]) -> None:
    async with unified(named_upstreams) as gw, aiohttp.ClientSession() as http:
        call = modern_call("tools/call", {"name": "beta__add", "arguments": {"a": 1, "b": 1}})
        async with http.post(gw.url + "/mcp", json=call, headers=modern_headers("tools/call", "beta__add")) as r:
            assert r.status == 200, await r.text()  # the SDK server checks Mcp-Name against the body
            messages = await read_messages(r)
        assert messages[-1]["result"]["content"][0]["text"] == "beta:2"


async def test_servers_lists_what_is_behind_the_gateway(named_upstreams: dict[str, str]) -> None:
    ups = upstreams(named_upstreams)
    ups["alpha"] = UpstreamConfig(
        name="alpha", transport="streamable-http", url=named_upstreams["alpha"], description="The first one"
    )
    config = make_config(ups, public_url="https://mcp.example.com/")
    async with running_gateway(config) as gw, aiohttp.ClientSession() as http:
        async with http.get(gw.url + "/servers") as resp:
            assert resp.status == 200
            body = await resp.json()
    assert body["unified"] == "https://mcp.example.com/mcp"
    alpha, beta = body["servers"]
    assert alpha == {
        "name": "alpha",
        "description": "The first one",
        "transport": "streamable-http",
        "health": alpha["health"],
        "prefix": None,
        "endpoint": "https://mcp.example.com/servers/alpha/mcp",
        "alias": "https://mcp.example.com/mcp/alpha",
    }
    assert alpha["health"] in ("unknown", "healthy")
    assert (beta["name"], beta["prefix"], beta["description"]) == ("beta", "beta", None)
    assert "url" not in alpha  # upstream URLs (and what they may embed) stay private


@pytest.mark.parametrize("mode", MODES)
async def test_an_upstream_asks_the_client_through_the_gateway(named_upstreams: dict[str, str], mode: str) -> None:
    """Elicitation: a legacy request on the call's stream (its id tagged, the answer routed back by
    that id alone), or a 2026-07-28 input_required result passed through untouched."""
    asked: list[str] = []

    async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"value": f"yes-{len(asked)}"})

    async with unified(named_upstreams) as gw:
        async with sdk_client(gw.url + "/mcp", mode, elicitation_callback=elicit) as c:
            first = await c.call_tool("beta__ask", {"question": "proceed?"})
            second = await c.call_tool("ask", {"question": "again?"})
    assert (text(first), text(second)) == ("beta heard yes-1", "alpha heard yes-2")
    assert asked == ["proceed?", "again?"]


async def test_an_answer_to_no_relayed_request_is_refused(named_upstreams: dict[str, str]) -> None:
    async with unified(named_upstreams) as gw, aiohttp.ClientSession() as http:
        sid = await initialize(http, gw.url + "/mcp")
        for bogus in (1, "mcpgate/nowhere/1", "mcpgate/beta/not json", "other"):
            answer = {"jsonrpc": "2.0", "id": bogus, "result": {}}
            async with http.post(gw.url + "/mcp", json=answer, headers=session_headers(sid)) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["data"]["reason"] == "invalid_request"


@pytest.mark.parametrize("mode", MODES)
async def test_a_legacy_only_upstream_serves_clients_of_both_eras(
    named_upstreams: dict[str, str], everything_url: str, mode: str
) -> None:
    """The TypeScript reference server speaks only the legacy era: for a 2026-07-28 client the
    gateway holds that upstream's session itself, shared by such clients under ids of its own."""
    ev = UpstreamConfig(name="ev", transport="streamable-http", url=everything_url, prefix="ev")
    config = make_config({"alpha": named_upstreams["alpha"], "ev": ev})
    async with running_gateway(config) as gw, sdk_client(gw.url + "/mcp", mode) as c:
        tools = {t.name for t in (await c.list_tools()).tools}
        assert {"ev__echo", "whoami"} <= tools
        assert text(await c.call_tool("ev__echo", {"message": "hi"})) == "Echo: hi"
        assert text(await c.call_tool("whoami", {})) == "alpha"
        held = gw.gateway._held
        assert ("ev" in held) is (mode != "legacy")  # a legacy client's own session is used instead
        assert gw.gateway.upstreams["ev"].state.protocol == "legacy"


async def test_concurrent_stateless_clients_share_the_held_session_without_mixing_answers(
    everything_url: str,
) -> None:
    ev = UpstreamConfig(name="ev", transport="streamable-http", url=everything_url)
    async with running_gateway(make_config({"ev": ev})) as gw, aiohttp.ClientSession() as http:

        async def call(i: int) -> str:
            body = modern_call("tools/call", {"name": "echo", "arguments": {"message": f"m{i}"}}, id=1)
            async with http.post(gw.url + "/mcp", json=body, headers=modern_headers("tools/call", "echo")) as r:
                assert r.status == 200, await r.text()
                (answer,) = [m for m in await read_messages(r) if "id" in m]
            assert answer["id"] == 1  # every client used id 1; each gets its own answer back
            return str(answer["result"]["content"][0]["text"])

        answers = await asyncio.gather(*(call(i) for i in range(20)))
    assert answers == [f"Echo: m{i}" for i in range(20)]


async def until(condition: Any, what: str) -> None:
    """Poll (bounded) for something the heartbeat or a restart brings about."""
    for _ in range(200):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def test_an_upstream_killed_mid_session_drops_out_and_comes_back(named_upstreams: dict[str, str]) -> None:
    port = free_port()
    gamma = UpstreamConfig(
        name="gamma",
        transport="streamable-http",
        url=f"http://127.0.0.1:{port}/mcp",
        prefix="gamma",
        timeout=5.0,
        heartbeat=Heartbeat(interval=0.2, timeout=1.0, failures=1),
    )
    proc = start_demo_server(port, NAMED_SERVER, "--name", "gamma")
    try:
        async with running_gateway(make_config({"alpha": named_upstreams["alpha"], "gamma": gamma})) as gw:
            async with aiohttp.ClientSession() as http:
                url = gw.url + "/mcp"
                sid = await initialize(http, url)

                async def tools() -> set[str]:
                    async with http.post(url, json=rpc("tools/list", {}), headers=session_headers(sid)) as r:
                        assert r.status == 200
                        return {t["name"] for t in (await read_messages(r))[-1]["result"]["tools"]}

                async def ready() -> bool:
                    async with http.get(gw.url + "/readyz") as r:
                        return r.status == 200

                async def call(name: str) -> dict[str, Any]:
                    body = rpc("tools/call", {"name": name, "arguments": {}}, id=9)
                    async with http.post(url, json=body, headers=session_headers(sid)) as r:
                        return {"status": r.status, "messages": await read_messages(r)}

                assert "gamma__whoami" in await tools()
                assert (await call("gamma__whoami"))["messages"][-1]["result"]["content"][0]["text"] == "gamma"
                stop_process(proc)
                down = await call("gamma__whoami")
                assert down["status"] == 502
                await until(lambda: _not(ready()), "readiness drops")
                assert await tools() == ALPHA_TOOLS  # gamma's (cached) items drop out; alpha's stay
                assert (await call("whoami"))["messages"][-1]["result"]["content"][0]["text"] == "alpha"

                proc = start_demo_server(port, NAMED_SERVER, "--name", "gamma")  # a new process: old sessions gone
                await until(ready, "readiness returns")
                assert "gamma__whoami" in await tools()
                back = await call("gamma__whoami")  # its session re-opened transparently
                assert back["messages"][-1]["result"]["content"][0]["text"] == "gamma"
    finally:
        stop_process(proc)


async def _not(awaitable: Any) -> bool:
    return not await awaitable


async def test_the_merged_stream_relays_list_changed_and_the_new_tool_is_callable(
    named_upstreams: dict[str, str],
) -> None:
    """A legacy client's GET /mcp merges every upstream's stream; a tools/list_changed from one
    reaches the client, and the tool it announces is listed and routed (by the catalogue)."""
    seen: list[str] = []
    changed = asyncio.Event()

    async def on_message(message: Any) -> None:
        method = getattr(message, "method", None) or getattr(getattr(message, "root", None), "method", None)
        if isinstance(method, str):
            seen.append(method)
            if method.endswith("/list_changed"):
                changed.set()

    tool = f"grown_{free_port()}"  # the servers live for the whole test session: a fresh name each run
    async with unified(named_upstreams) as gw:
        async with sdk_client(gw.url + "/mcp", "legacy", message_handler=on_message) as c:
            # The SDK client opens its GET stream in the background; the upstream drops what its
            # stream-less session is told, so wait until the gateway follows both upstreams.
            await until(lambda: _true(len(gw.gateway.streams) == 2), "the merged stream is up")
            assert f"beta__{tool}" not in {t.name for t in (await c.list_tools()).tools}  # now cached
            assert text(await c.call_tool("beta__grow", {"tool": tool})) == f"beta added {tool}"
            await asyncio.wait_for(changed.wait(), 10)
            tools = {t.name for t in (await c.list_tools()).tools}
            assert f"beta__{tool}" in tools
            assert text(await c.call_tool(f"beta__{tool}", {})) == f"beta grew {tool}"
    assert "notifications/tools/list_changed" in seen


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize("ttl", [30.0, 0.0])
async def test_lists_are_cached_per_upstream_for_list_cache_ttl(named_upstreams: dict[str, str], ttl: float) -> None:
    """Legacy answers say nothing about caching: the gateway keeps them list_cache_ttl (per identity)."""
    beta = UpstreamConfig(
        name="beta", transport="streamable-http", url=named_upstreams["beta"], prefix="beta", list_cache_ttl=ttl
    )
    tool = f"cached_{free_port()}"
    async with running_gateway(make_config({"beta": beta})) as gw, aiohttp.ClientSession() as http:
        url = gw.url + "/mcp"
        sid = await initialize(http, url)  # no GET stream: no list_changed reaches the gateway

        async def tools() -> set[str]:
            async with http.post(url, json=rpc("tools/list", {}), headers=session_headers(sid)) as r:
                return {t["name"] for t in (await read_messages(r))[-1]["result"]["tools"]}

        assert "beta__grow" in await tools()
        call = rpc("tools/call", {"name": "beta__grow", "arguments": {"tool": tool}})
        async with http.post(url, json=call, headers=session_headers(sid)) as r:
            assert r.status == 200
        assert (f"beta__{tool}" in await tools()) is (ttl == 0)
        # A call by a name the cached list lacks still finds it: the gateway asks again first.
        call = rpc("tools/call", {"name": f"beta__{tool}", "arguments": {}}, id=5)
        async with http.post(url, json=call, headers=session_headers(sid)) as r:
            assert (await read_messages(r))[-1]["result"]["content"][0]["text"] == f"beta grew {tool}"
        # 2026-07-28 answers say ttlMs 0 (the SDK server's): never served from the cache.
        async with http.post(url, json=modern_call("tools/list"), headers=modern_headers("tools/list")) as r:
            assert f"beta__{tool}" in {t["name"] for t in (await r.json())["result"]["tools"]}


async def test_subscriptions_listen_relays_every_upstreams_notifications(named_upstreams: dict[str, str]) -> None:
    """A 2026-07-28 client's listen stream on /mcp is made of each upstream's own: beta's
    tools/list_changed reaches it, and the new tool is listed and callable right away."""
    tool = f"heard_{free_port()}"
    async with unified(named_upstreams) as gw, sdk_client(gw.url + "/mcp", "2026-07-28") as c:
        async with c.listen(tools_list_changed=True) as subscription:
            assert subscription.honored.tools_list_changed
            await until(lambda: _true(len(gw.gateway.streams) == 2), "both upstreams' listen streams are up")
            assert text(await c.call_tool("beta__grow", {"tool": tool})) == f"beta added {tool}"
            async with asyncio.timeout(10):
                event = await anext(aiter(subscription))
            assert isinstance(event, ToolsListChanged)
            tools = {t.name for t in (await c.list_tools()).tools}
        assert f"beta__{tool}" in tools
        assert text(await c.call_tool(f"beta__{tool}", {})) == f"beta grew {tool}"


async def test_listen_ends_gracefully_at_shutdown(named_upstreams: dict[str, str]) -> None:
    async with unified(named_upstreams) as gw, aiohttp.ClientSession() as http:
        body = modern_call("subscriptions/listen", {"notifications": {"toolsListChanged": True}}, id=77)
        async with http.post(gw.url + "/mcp", json=body, headers=modern_headers("subscriptions/listen")) as resp:
            assert resp.status == 200
            first = await resp.content.readuntil(b"\n\n")
            ack = json.loads(first.decode().split("data: ", 1)[1])
            assert ack["method"] == "notifications/subscriptions/acknowledged"
            assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 77
            assert ack["params"]["notifications"] == {"toolsListChanged": True}
            await until(lambda: _true(len(gw.gateway.streams) == 2), "both upstreams' listen streams are up")
            gw.gateway.begin_shutdown()
            async with asyncio.timeout(10):  # a guard against hanging, not a timing assertion
                rest = await resp.read()
        end = json.loads(rest.decode().strip().split("data: ", 1)[1])
        assert end == {
            "jsonrpc": "2.0",
            "id": 77,
            "result": {"resultType": "complete", "_meta": {"io.modelcontextprotocol/subscriptionId": 77}},
        }


@pytest.mark.parametrize("mode", MODES)
async def test_completions_route_by_their_reference(named_upstreams: dict[str, str], mode: str) -> None:
    async with unified(named_upstreams) as gw, sdk_client(gw.url + "/mcp", mode) as c:
        prompt = await c.complete(
            types.PromptReference(type="ref/prompt", name="beta__greet"), {"name": "who", "value": "b"}
        )
        assert prompt.completion.values == ["beta:greet:b"]  # beta's own name for its prompt
        mine = await c.complete(types.PromptReference(type="ref/prompt", name="greet"), {"name": "who", "value": "a"})
        assert mine.completion.values == ["alpha:greet:a"]
        template = types.ResourceTemplateReference(type="ref/resource", uri="named://beta/items/{item}")
        by_uri = await c.complete(template, {"name": "item", "value": "7"})
        assert by_uri.completion.values == ["beta:named://beta/items/{item}:7"]


async def test_the_prefix_separator_is_configurable(named_upstreams: dict[str, str]) -> None:
    config = make_config(upstreams(named_upstreams), prefix_separator="-")
    async with running_gateway(config) as gw, sdk_client(gw.url + "/mcp", "auto") as c:
        tools = {t.name for t in (await c.list_tools()).tools}
        assert {"beta-whoami", "whoami"} <= tools
        assert "beta__whoami" not in tools
        assert text(await c.call_tool("beta-whoami", {})) == "beta"


async def test_a_2025_03_26_batch_is_answered_item_by_item(named_upstreams: dict[str, str]) -> None:
    async with unified(named_upstreams) as gw, aiohttp.ClientSession() as http:
        url = gw.url + "/mcp"
        sid = await initialize(http, url, version="2025-03-26")
        headers = session_headers(sid, version="2025-03-26")
        batch = [
            rpc("tools/call", {"name": "beta__whoami", "arguments": {}}, id=1),
            rpc("ping", {}, id=2),
            rpc("notifications/cancelled", {"requestId": 99}, id=None),
            rpc("tools/call", {"name": "nope", "arguments": {}}, id=3),
            rpc("tools/call", {"name": "whoami", "arguments": {}}, id="four"),
        ]
        async with http.post(url, json=batch, headers=headers) as resp:
            assert resp.status == 200
            answers = await resp.json()
        assert [a["id"] for a in answers] == [1, 2, 3, "four"]
        assert answers[0]["result"]["content"][0]["text"] == "beta"
        assert answers[1]["result"] == {}
        assert answers[2]["error"]["data"]["reason"] == "unknown_name"
        assert answers[3]["result"]["content"][0]["text"] == "alpha"
        only_notifications = [rpc("notifications/cancelled", {"requestId": 5}, id=None)]
        async with http.post(url, json=only_notifications, headers=headers) as resp:
            assert resp.status == 202
        # Later versions have no batches: refused, as on any endpoint.
        sid = await initialize(http, url)
        async with http.post(url, json=batch[:2], headers=session_headers(sid)) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["data"]["reason"] == "batch_not_supported"


async def test_a_stale_list_is_served_while_it_is_refreshed_in_the_background(
    named_upstreams: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr("mcpgate.outbound.clock", lambda: now[0])
    beta = UpstreamConfig(
        name="beta", transport="streamable-http", url=named_upstreams["beta"], prefix="beta", list_cache_ttl=10
    )
    tool = f"later_{free_port()}"
    async with running_gateway(make_config({"beta": beta})) as gw, aiohttp.ClientSession() as http:
        url = gw.url + "/mcp"
        sid = await initialize(http, url)

        async def tools() -> set[str]:
            async with http.post(url, json=rpc("tools/list", {}), headers=session_headers(sid)) as r:
                return {t["name"] for t in (await read_messages(r))[-1]["result"]["tools"]}

        await tools()  # cached for 10 s of the fake clock
        call = rpc("tools/call", {"name": "beta__grow", "arguments": {"tool": tool}})
        async with http.post(url, json=call, headers=session_headers(sid)) as r:
            assert r.status == 200
        now[0] += 15  # past its lifetime, within it again: served as it was, refreshed meanwhile
        assert f"beta__{tool}" not in await tools()
        await until(lambda: _true(not gw.gateway._refreshing), "the background refresh finishes")
        assert f"beta__{tool}" in await tools()  # fresh again, without waiting on the upstream
        now[0] += 100  # long past: asked for on the spot
        assert f"beta__{tool}" in await tools()


async def test_a_listener_hears_a_legacy_only_upstream_through_the_held_session() -> None:
    port = free_port()
    proc = start_demo_server(port, NAMED_SERVER, "--name", "old", "--legacy-only")
    tool = f"relayed_{port}"
    try:
        old = UpstreamConfig(name="old", transport="streamable-http", url=f"http://127.0.0.1:{port}/mcp", prefix="old")
        async with running_gateway(make_config({"old": old})) as gw, sdk_client(gw.url + "/mcp", "2026-07-28") as c:
            async with c.listen(tools_list_changed=True) as subscription:
                await until(lambda: _true(len(gw.gateway.streams) == 1), "the held session's stream is followed")
                assert gw.gateway.upstreams["old"].state.protocol == "legacy"
                assert text(await c.call_tool("old__grow", {"tool": tool})) == f"old added {tool}"
                async with asyncio.timeout(10):
                    event = await anext(aiter(subscription))
                assert isinstance(event, ToolsListChanged)
                assert f"old__{tool}" in {t.name for t in (await c.list_tools()).tools}
            await until(lambda: _true(not gw.gateway.held_followers), "the last listener stops the follower")
    finally:
        stop_process(proc)


async def test_a_legacy_only_upstream_gets_its_own_names_through_the_held_session() -> None:
    port = free_port()
    proc = start_demo_server(port, NAMED_SERVER, "--name", "old", "--legacy-only")
    try:
        old = UpstreamConfig(name="old", transport="streamable-http", url=f"http://127.0.0.1:{port}/mcp", prefix="old")
        async with running_gateway(make_config({"old": old})) as gw:
            async with sdk_client(gw.url + "/mcp", "2026-07-28") as c:
                ref = types.PromptReference(type="ref/prompt", name="old__greet")
                assert (await c.complete(ref, {"name": "who", "value": "x"})).completion.values == ["old:greet:x"]
                prompt = await c.get_prompt("old__greet", {"who": "you"})
                assert prompt.messages[0].content.text == "old greets you"  # type: ignore[union-attr]
            async with aiohttp.ClientSession() as http:  # a _meta that is not an object is no internal error
                body = rpc("tools/call", {"name": "old__whoami", "arguments": {}, "_meta": 5}, id=3)
                async with http.post(
                    gw.url + "/mcp", json=body, headers=modern_headers("tools/call", "old__whoami")
                ) as r:
                    assert r.status in (200, 400), await r.text()
                    assert (await read_messages(r))[-1]["id"] == 3
    finally:
        stop_process(proc)


async def test_a_modern_client_uses_a_legacy_only_upstream_through_its_own_endpoint_too() -> None:
    """/servers/<name>/mcp of a legacy-only upstream, for a 2026-07-28 client: the gateway answers
    server/discover itself (it bridges), and sends everything else through the session it holds,
    answered in 2026-07-28 terms (caching fields included) and filtered like any per-server list."""
    port = free_port()
    proc = start_demo_server(port, NAMED_SERVER, "--name", "old", "--legacy-only")
    try:
        tools = ToolFilter(deny=(Glob.compile("only_*"),))
        old = UpstreamConfig(name="old", transport="streamable-http", url=f"http://127.0.0.1:{port}/mcp", tools=tools)
        async with running_gateway(make_config({"old": old})) as gw:
            url = gw.endpoint("old")
            async with sdk_client(url, "2026-07-28") as c:
                names = {t.name for t in (await c.list_tools()).tools}
                assert {"whoami", "add"} <= names and "only_old" not in names
                assert (await c.call_tool("whoami", {})).content[0].text == "old"  # type: ignore[union-attr]
                read = await c.read_resource("named://old/info")
                assert "old" in read.contents[0].text  # type: ignore[union-attr]
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    url, json=modern_call("server/discover"), headers=modern_headers("server/discover")
                ) as r:
                    discovered = (await read_messages(r))[-1]["result"]
                assert discovered["supportedVersions"] == ["2026-07-28"]
                assert "tools" in discovered["capabilities"]
                read_call = modern_call("resources/read", {"uri": "named://old/info"}, id=4)
                async with http.post(
                    url, json=read_call, headers=modern_headers("resources/read", "named://old/info")
                ) as r:
                    answer = (await read_messages(r))[-1]
                assert answer["id"] == 4
                assert answer["result"]["ttlMs"] == 0 and answer["result"]["cacheScope"] == "private"
                async with http.post(url, json=modern_call("ping", id=5), headers=modern_headers("ping")) as r:
                    assert r.status == 404 and (await r.json())["error"]["code"] == -32601
                listen = modern_call("subscriptions/listen", {"notifications": {}}, id=6)
                async with http.post(url, json=listen, headers=modern_headers("subscriptions/listen")) as r:
                    assert r.status == 404 and "/mcp" in (await r.json())["error"]["message"]
    finally:
        stop_process(proc)


async def test_hostile_input_on_the_unified_endpoint(
    named_upstreams: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    async with unified(named_upstreams) as gw, aiohttp.ClientSession() as http:
        url = gw.url + "/mcp"
        for params, reason in (
            ({"name": 7, "arguments": {}}, "unknown_name"),
            ({"name": "x" * 70_000, "arguments": {}}, "unknown_name"),
            ({"arguments": {}}, "unknown_name"),
        ):
            name = params.get("name")
            headers = modern_headers("tools/call", name if isinstance(name, str) and len(name) < 100 else None)
            async with http.post(url, json=modern_call("tools/call", params), headers=headers) as r:
                body = await r.json()
                assert r.status in (200, 400), body
                assert body["error"]["data"]["reason"] in (reason, "header_mismatch"), body
                assert len(await r.read()) < 2_000  # a huge name is not echoed back whole
        ref = {"type": "ref/prompt", "name": ["not", "a", "name"]}
        body = modern_call("completion/complete", {"ref": ref, "argument": {"name": "a", "value": "b"}})
        async with http.post(url, json=body, headers=modern_headers("completion/complete")) as r:
            assert r.status in (200, 404)
            assert "error" in await r.json()
        # A batch of many calls is answered in full, a few at a time.
        sid = await initialize(http, url, version="2025-03-26")
        batch = [rpc("tools/call", {"name": "whoami", "arguments": {}}, id=i) for i in range(200)]
        async with http.post(url, json=batch, headers=session_headers(sid, version="2025-03-26")) as r:
            answers = await r.json()
        assert [a["id"] for a in answers] == list(range(200))
        assert all(a["result"]["content"][0]["text"] == "alpha" for a in answers)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_legacy_client_reaches_an_upstream_that_speaks_only_2026_07_28(
    named_upstreams: dict[str, str],
) -> None:
    port = free_port()
    proc = start_demo_server(port, NAMED_SERVER, "--name", "new", "--modern-only")
    try:
        new = UpstreamConfig(name="new", transport="streamable-http", url=f"http://127.0.0.1:{port}/mcp", prefix="new")
        config = make_config({"alpha": named_upstreams["alpha"], "new": new})
        async with running_gateway(config) as gw, sdk_client(gw.url + "/mcp", "legacy") as c:
            tools = {t.name for t in (await c.list_tools()).tools}
            assert {"new__whoami", "whoami"} <= tools
            assert text(await c.call_tool("new__whoami", {})) == "new"
            assert text(await c.call_tool("whoami", {})) == "alpha"  # alpha keeps its session
            info = await c.read_resource("named://new/info")
            assert info.contents[0].text == "info from new"  # type: ignore[union-attr]
            prompt = await c.get_prompt("new__greet", {"who": "you"})
            assert prompt.messages[0].content.text == "new greets you"  # type: ignore[union-attr]
            assert gw.gateway.upstreams["new"].state.refuses_initialize
        async with running_gateway(config) as gw, aiohttp.ClientSession() as http:
            sid = await initialize(http, gw.url + "/mcp", version="2025-03-26")
            batch = [
                rpc("tools/call", {"name": n, "arguments": {}}, id=i) for i, n in enumerate(["new__whoami", "whoami"])
            ]
            async with http.post(gw.url + "/mcp", json=batch, headers=session_headers(sid, "2025-03-26")) as r:
                answers = await r.json()
            assert [a["result"]["content"][0]["text"] for a in answers] == ["new", "alpha"]
    finally:
        stop_process(proc)
