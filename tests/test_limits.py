"""Rate limits: the rule and bucket arithmetic with an injected clock, then real traffic through
both endpoints in front of real MCP servers, with buckets in memory and in a real redis-server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from mcpgate.auth.apikeys import hash_key
from mcpgate.config import load_config
from mcpgate.config.model import Bucket
from mcpgate.gateway import Gateway, StartupError
from mcpgate.limits.memory import MemoryBuckets
from mcpgate.limits.redis import RETRY_AFTER_FAILURE, RedisBuckets
from mcpgate.limits.rules import RateLimits, take
from tests.conftest import RedisServer, free_port
from tests.gateway_harness import POST_HEADERS, modern_call, modern_headers, raw_upstream, rpc, running_gateway

ENG = "mgk_limits-engineer-0123456789"
BOT = "mgk_limits-bot-0123456789abcdef"


def limits(text: str) -> RateLimits:
    config = load_config(text="upstreams:\n  alpha: {url: 'http://127.0.0.1:1/mcp'}\n" + text, source="l.yml")
    assert config.rate_limit is not None
    return RateLimits(config.rate_limit)


# -- rules and buckets, pure ----------------------------------------------------------------


def test_the_first_matching_rule_names_the_bucket_and_the_default_takes_the_rest() -> None:
    compiled = limits(
        "rate_limit:\n"
        "  default: {capacity: 100, refill_per_second: 10}\n"
        "  rules:\n"
        "    - {clients: [ci], capacity: 5, refill_per_second: 1}\n"
        "    - {roles: [bots], servers: [alpha], methods: ['tools/*'], capacity: 20, refill_per_second: 2}\n"
        "    - {servers: [alpha], tools: ['search_*'], per_tool: true, capacity: 3, refill_per_second: 1}\n"
        "    - {servers: [alpha], per_client: false, capacity: 50, refill_per_second: 50}\n"
    )
    ci = compiled.limit_for("id:ci", "ci", (), "alpha", "tools/call", "x")
    assert ci is not None and (ci.where, ci.bucket) == ("rate_limit.rules[0]", Bucket(5, 1))
    bot = compiled.limit_for("id:b", "b", ("bots",), "alpha", "tools/list", None)
    assert bot is not None and bot.where == "rate_limit.rules[1]"
    search = compiled.limit_for("id:u", "u", (), "alpha", "tools/call", "search_code")
    other_search = compiled.limit_for("id:u", "u", (), "alpha", "tools/call", "search_issues")
    assert search is not None and other_search is not None and search.key != other_search.key  # per tool
    # A rule with tools is about tools/call only: a list goes on to the shared upstream cap.
    shared_a = compiled.limit_for("id:u", "u", (), "alpha", "tools/list", None)
    shared_b = compiled.limit_for("addr:10.0.0.9", "anonymous", (), "alpha", "ping", None)
    assert shared_a is not None and shared_b is not None
    assert shared_a.where == "rate_limit.rules[3]" and shared_a.key == shared_b.key  # one bucket for everyone
    fallback = compiled.limit_for("id:u", "u", (), None, "initialize", None)
    assert fallback is not None and (fallback.where, fallback.bucket) == ("rate_limit.default", Bucket(100, 10))
    mine, theirs = (compiled.limit_for(f"id:{c}", c, (), None, "ping", None) for c in ("u", "v"))
    assert mine is not None and theirs is not None and mine.key != theirs.key  # a default bucket per client


def test_without_a_default_what_no_rule_matches_is_not_limited() -> None:
    compiled = limits("rate_limit:\n  rules:\n    - {clients: [ci], capacity: 5, refill_per_second: 1}\n")
    assert compiled.limit_for("id:u", "u", (), "alpha", "tools/call", "x") is None


def test_a_bucket_admits_its_capacity_then_one_per_refill() -> None:
    now = [1000.0]
    store = MemoryBuckets(clock=lambda: now[0])
    bucket = Bucket(capacity=3, refill_per_second=2)
    answers = [store.take_now("k", bucket) for _ in range(4)]
    assert [a.allowed for a in answers] == [True, True, True, False]
    assert [a.remaining for a in answers] == [2, 1, 0, 0]
    assert answers[3].retry_after == pytest.approx(0.5) and answers[3].reset_after == pytest.approx(1.5)
    assert answers[0].headers() == {"X-RateLimit-Limit": "3", "X-RateLimit-Remaining": "2", "X-RateLimit-Reset": "1"}
    now[0] += 0.25
    assert not store.take_now("k", bucket).allowed  # half a token
    now[0] += 0.25
    assert store.take_now("k", bucket).allowed
    now[0] += 3600
    assert [store.take_now("k", bucket).allowed for _ in range(4)] == [True, True, True, False]  # full, not more
    assert store.take_now("other", bucket).remaining == 2  # buckets are separate


def test_refill_never_runs_backwards_and_fractions_add_up() -> None:
    bucket = Bucket(capacity=1, refill_per_second=0.5)
    tokens, answer = take(0.0, -5.0, bucket)  # a clock that went back gives nothing
    assert (tokens, answer.allowed) == (0.0, False)
    tokens, answer = take(0.0, 1.0, bucket)
    assert not answer.allowed and answer.retry_after == pytest.approx(1.0)
    tokens, answer = take(tokens, 1.0, bucket)
    assert answer.allowed and tokens == pytest.approx(0.0)


def test_memory_buckets_stay_bounded_and_forget_full_ones_first() -> None:
    now = [0.0]
    store = MemoryBuckets(clock=lambda: now[0], max_buckets=100)
    slow, fast = Bucket(capacity=2, refill_per_second=0.001), Bucket(capacity=2, refill_per_second=100)
    for n in range(50):
        store.take_now(f"slow-{n}", slow)
    for n in range(50):
        store.take_now(f"fast-{n}", fast)
    now[0] += 1.0  # the fast buckets are full again: forgetting them loses nothing
    store.take_now("new", slow)
    assert len(store) == 51 and store.evicted == 0
    assert not [store.take_now("slow-0", slow).allowed, store.take_now("slow-0", slow).allowed][1]  # still drained
    for n in range(200):  # a crowd of addresses: the oldest go, the table stays bounded
        store.take_now(f"crowd-{n}", slow)
    assert len(store) <= 100 and store.evicted > 0


# -- through the gateway --------------------------------------------------------------------


def config_text(urls: dict[str, str], limits_section: str) -> str:
    return f"""
server: {{port: 0}}
upstreams:
  alpha: {{url: "{urls["alpha"]}"}}
  beta: {{url: "{urls["beta"]}", prefix: beta}}
auth:
  api_keys:
    - {{id: engineering, key_hash: "{hash_key(ENG)}", roles: [engineer]}}
    - {{id: bot, key_hash: "{hash_key(BOT)}", roles: [bots]}}
{limits_section}"""


async def call(
    http: aiohttp.ClientSession, url: str, name: str, key: str, request_id: int = 7
) -> tuple[int, dict[str, str], dict[str, Any]]:
    headers = {**modern_headers("tools/call", name), "X-API-Key": key}
    body = modern_call("tools/call", {"name": name, "arguments": {}}, id=request_id)
    async with http.post(url, json=body, headers=headers) as resp:
        text = await resp.text()
        answer = json.loads(text) if resp.content_type == "application/json" else {"sse": text}
        return resp.status, dict(resp.headers), answer


async def burst(http: aiohttp.ClientSession, url: str, name: str, key: str, n: int) -> list[int]:
    answers = await asyncio.gather(*(call(http, url, name, key, request_id=i) for i in range(n)))
    return [status for status, _, _ in answers]


async def test_a_burst_gets_exactly_the_capacity_through_and_the_rest_429(
    named_upstreams: dict[str, str], tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    section = (
        "rate_limit:\n  default: {capacity: 5, refill_per_second: 0.001}\n"
        f"observability:\n  audit: {{enabled: true, path: '{audit}'}}\n"
    )
    async with running_gateway(load_config(text=config_text(named_upstreams, section), source="l.yml")) as gw:
        async with aiohttp.ClientSession() as http:
            statuses = await burst(http, gw.endpoint("alpha"), "whoami", ENG, 20)
            assert sorted(statuses) == [200] * 5 + [429] * 15
            status, headers, answer = await call(http, gw.endpoint("alpha"), "whoami", ENG, request_id=99)
            # The engineering bucket is empty; the bot's own is full.
            assert (await call(http, gw.endpoint("alpha"), "whoami", BOT))[0] == 200
            async with http.get(gw.url + "/metrics") as resp:
                metrics = await resp.text()
    assert status == 429 and answer["id"] == 99
    assert answer["error"]["data"]["reason"] == "rate_limited" and answer["error"]["code"] == -32067
    assert answer["error"]["data"]["rule"] == "rate_limit.default" and answer["error"]["data"]["retryAfter"] >= 1
    assert int(headers["Retry-After"]) >= 1
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("5", "0")
    assert int(headers["X-RateLimit-Reset"]) > 0
    assert 'mcpgate_rate_limit_rejections_total{client="engineering",server="alpha"} 16.0' in metrics
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    outcomes = sorted((e["rate_limit"], e["status"]) for e in events if e["client_id"] == "engineering")
    assert outcomes == [("allow", 200)] * 5 + [("deny", 429)] * 16
    assert {e["rate_limit_rule"] for e in events} == {"rate_limit.default"}


async def test_answers_on_a_limited_route_say_what_is_left(named_upstreams: dict[str, str]) -> None:
    section = "rate_limit:\n  rules:\n    - {servers: [alpha], capacity: 3, refill_per_second: 0.001}\n"
    async with running_gateway(load_config(text=config_text(named_upstreams, section), source="l.yml")) as gw:
        async with aiohttp.ClientSession() as http:
            seen = [await call(http, gw.endpoint("alpha"), "whoami", ENG) for _ in range(3)]
            unlimited = await call(http, gw.endpoint("beta"), "whoami", ENG)
    assert [s for s, _, _ in seen] == [200, 200, 200]
    assert [h["X-RateLimit-Remaining"] for _, h, _ in seen] == ["2", "1", "0"]
    assert unlimited[0] == 200 and "X-RateLimit-Limit" not in unlimited[1]


async def test_the_unified_endpoint_limits_by_the_routed_upstream_and_tool(named_upstreams: dict[str, str]) -> None:
    section = (
        "rate_limit:\n  rules:\n"
        "    - {servers: [beta], tools: [whoami], per_tool: true, capacity: 2, refill_per_second: 0.001}\n"
    )
    async with running_gateway(load_config(text=config_text(named_upstreams, section), source="l.yml")) as gw:
        async with aiohttp.ClientSession() as http:
            mcp = gw.url + "/mcp"
            limited = [(await call(http, mcp, "beta__whoami", ENG))[0] for _ in range(3)]
            # The same tool on alpha, and beta through its own endpoint with the same name: the
            # same bucket on beta, since the rule names the upstream's tool, not the prefixed one.
            other = (await call(http, mcp, "whoami", ENG))[0]
            direct = (await call(http, gw.endpoint("beta"), "whoami", ENG))[0]
    assert limited == [200, 200, 429]
    assert (other, direct) == (200, 429)


async def test_a_denied_request_spends_no_token(named_upstreams: dict[str, str]) -> None:
    section = (
        "policy:\n  default: deny\n  rules:\n    - {clients: [engineering], tools: [whoami], decision: allow}\n"
        "rate_limit:\n  default: {capacity: 2, refill_per_second: 0.001}\n"
    )
    async with running_gateway(load_config(text=config_text(named_upstreams, section), source="l.yml")) as gw:
        async with aiohttp.ClientSession() as http:
            denied = [(await call(http, gw.endpoint("alpha"), "secret", ENG))[0] for _ in range(3)]
            allowed = [(await call(http, gw.endpoint("alpha"), "whoami", ENG))[0] for _ in range(3)]
    assert denied == [403] * 3 and allowed == [200, 200, 429]


async def test_a_2025_03_26_batch_takes_a_token_per_request_in_it() -> None:
    async def upstream(request: web.Request) -> web.Response:
        body = await request.json()
        if isinstance(body, list):
            return web.json_response([{"jsonrpc": "2.0", "id": m["id"], "result": {}} for m in body if "id" in m])
        if body.get("method") == "initialize":
            result = {"protocolVersion": "2025-03-26", "capabilities": {}, "serverInfo": {"name": "u"}}
            return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": result},
                                     headers={"Mcp-Session-Id": "up-1"})  # fmt: skip
        return web.json_response({"jsonrpc": "2.0", "id": body.get("id"), "result": {}})

    async with raw_upstream(upstream) as (url, _):
        text = (
            f"server: {{port: 0}}\nupstreams:\n  old: {{url: '{url}', heartbeat: {{interval: 1h}}}}\n"
            "rate_limit:\n  default: {capacity: 3, refill_per_second: 0.001}\n"
        )
        async with running_gateway(load_config(text=text, source="b.yml")) as gw, aiohttp.ClientSession() as http:
            headers = {**POST_HEADERS, "MCP-Protocol-Version": "2025-03-26"}
            init = rpc("initialize", {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t"}})
            async with http.post(gw.endpoint("old"), json=init, headers=headers) as resp:  # takes one
                headers["Mcp-Session-Id"] = resp.headers["Mcp-Session-Id"]
            note = rpc("notifications/initialized", id=None)  # takes none
            batch = [rpc("ping", id=1), rpc("ping", id=2), note]
            async with http.post(gw.endpoint("old"), json=batch, headers=headers) as resp:
                assert resp.status == 200 and resp.headers["X-RateLimit-Remaining"] == "0"
            async with http.post(gw.endpoint("old"), json=[rpc("ping", id=3)], headers=headers) as resp:
                assert resp.status == 429


# -- Redis ------------------------------------------------------------------------------------


async def test_redis_buckets_refill_over_time(redis_server: RedisServer) -> None:
    store = RedisBuckets(redis_server.url, "refill")
    bucket = Bucket(capacity=2, refill_per_second=5)  # a token every 200 ms, on Redis's clock
    try:
        await store.check()
        first = [await store.take("k", bucket) for _ in range(3)]
        assert [a.allowed for a in first] == [True, True, False]
        assert 0 < first[2].retry_after <= 0.2
        await asyncio.sleep(first[2].retry_after + 0.02)
        assert (await store.take("k", bucket)).allowed
        await asyncio.sleep(0.6)  # full again, not fuller
        assert [(await store.take("k", bucket)).allowed for _ in range(3)] == [True, True, False]
    finally:
        await store.close()


def redis_section(url: str, capacity: int = 5, on_error: str = "deny", prefix: str = "mcpgate") -> str:
    return (
        f"rate_limit:\n  backend: redis\n  redis_url: '{url}'\n  key_prefix: {prefix}\n"
        f"  on_backend_error: {on_error}\n  default: {{capacity: {capacity}, refill_per_second: 0.001}}\n"
    )


async def test_redis_buckets_are_exact_under_a_burst_and_shared_by_two_gateways(
    named_upstreams: dict[str, str], redis_server: RedisServer
) -> None:
    text = config_text(named_upstreams, redis_section(redis_server.url, capacity=8))
    async with running_gateway(load_config(text=text, source="a.yml")) as one:
        async with running_gateway(load_config(text=text, source="b.yml")) as two:
            async with aiohttp.ClientSession() as http:
                first, second = await asyncio.gather(
                    burst(http, one.endpoint("alpha"), "whoami", ENG, 10),
                    burst(http, two.endpoint("alpha"), "whoami", ENG, 10),
                )
    assert sorted(first + second) == [200] * 8 + [429] * 12  # one budget for the fleet


async def test_far_more_concurrent_requests_than_redis_connections_are_exact(redis_server: RedisServer) -> None:
    """redis-py's pool holds 100 connections; the calls of one turn of the loop share a pipeline,
    so a burst of 1000 neither runs out of connections nor miscounts."""
    store = RedisBuckets(redis_server.url, "burst")
    bucket = Bucket(capacity=250, refill_per_second=0.001)
    try:
        answers = await asyncio.gather(*(store.take(f"k{n % 2}", bucket) for n in range(1000)))
    finally:
        await store.close()
    assert sum(a.allowed for a in answers) == 500  # 250 from each of the two buckets
    assert sorted({a.remaining for a in answers if a.allowed}) == list(range(250))


async def test_key_prefixes_keep_two_deployments_apart(
    named_upstreams: dict[str, str], redis_server: RedisServer
) -> None:
    blue = config_text(named_upstreams, redis_section(redis_server.url, capacity=2, prefix="blue"))
    green = config_text(named_upstreams, redis_section(redis_server.url, capacity=2, prefix="green"))
    async with running_gateway(load_config(text=blue, source="b.yml")) as b:
        async with running_gateway(load_config(text=green, source="g.yml")) as g:
            async with aiohttp.ClientSession() as http:
                assert sorted(await burst(http, b.endpoint("alpha"), "whoami", ENG, 3)) == [200, 200, 429]
                assert sorted(await burst(http, g.endpoint("alpha"), "whoami", ENG, 3)) == [200, 200, 429]


@pytest.mark.parametrize("mode", ["deny", "allow"])
async def test_a_redis_outage_follows_on_backend_error_and_heals_itself(
    named_upstreams: dict[str, str], redis_server: RedisServer, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    text = config_text(named_upstreams, redis_section(redis_server.url, capacity=2, on_error=mode))
    async with running_gateway(load_config(text=text, source="o.yml")) as gw:
        async with aiohttp.ClientSession() as http:
            url = gw.endpoint("alpha")
            assert (await call(http, url, "whoami", ENG))[0] == 200
            redis_server.stop()
            during = [await call(http, url, "whoami", ENG) for _ in range(4)]
            redis_server.start()  # an empty Redis: the bucket starts full
            await asyncio.sleep(RETRY_AFTER_FAILURE + 0.2)
            after = await burst(http, url, "whoami", ENG, 3)
    if mode == "deny":
        assert [s for s, _, _ in during] == [503] * 4
        assert during[0][2]["error"]["data"]["reason"] == "rate_limit_unavailable"
        assert during[0][1]["Retry-After"] == "1"
    else:
        assert [s for s, _, _ in during] == [200] * 4  # let through, unlimited, while Redis is away
    assert sorted(after) == [200, 200, 429]
    outage_lines = [r for r in caplog.records if "redis unavailable" in r.getMessage()]
    assert len(outage_lines) == 1  # once per outage, not once per request
    assert any("redis is back" in r.getMessage() for r in caplog.records)


async def test_an_unreachable_redis_stops_the_gateway_from_starting(named_upstreams: dict[str, str]) -> None:
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    gateway = Gateway.from_config(load_config(text=config_text(named_upstreams, redis_section(url)), source="u.yml"))
    with pytest.raises(StartupError, match=r"rate_limit: cannot reach redis at redis://:\*\*\*@127\.0\.0\.1") as caught:
        await gateway.start()
    await gateway.close()
    assert "hunter2" not in str(caught.value)


async def test_redis_url_from_the_environment_wins(
    named_upstreams: dict[str, str], redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    text = config_text(named_upstreams, redis_section(f"redis://127.0.0.1:{free_port()}/0", capacity=1))
    async with running_gateway(load_config(text=text, source="e.yml")) as gw:
        async with aiohttp.ClientSession() as http:
            assert sorted(await burst(http, gw.endpoint("alpha"), "whoami", ENG, 2)) == [200, 429]
