"""Liveness and readiness, fed by the upstream heartbeats."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from mcpgate.config.model import Heartbeat, UpstreamConfig
from tests.conftest import free_port
from tests.gateway_harness import RunningGateway, make_config, running_gateway

pytestmark = pytest.mark.e2e

FAST = Heartbeat(interval=0.2, timeout=2.0, failures=1)


def upstream(name: str, url: str) -> UpstreamConfig:
    return UpstreamConfig(name=name, transport="streamable-http", url=url, heartbeat=FAST)


async def settled(gw: RunningGateway) -> None:
    """Wait (bounded) until every heartbeat has reported once."""
    async with asyncio.timeout(10):
        while any(u.state.health == "unknown" for u in gw.gateway.upstreams.values()):
            await asyncio.sleep(0.02)


async def test_liveness_answers_on_every_alias() -> None:
    dead = f"http://127.0.0.1:{free_port()}/mcp"
    async with running_gateway(make_config({"dead": upstream("dead", dead)})) as gw:
        async with aiohttp.ClientSession() as http:
            for path in ("/healthz", "/health", "/live"):
                async with http.get(gw.url + path) as resp:
                    assert resp.status == 200
                    assert (await resp.json())["status"] == "ok"


@pytest.mark.parametrize(
    ("ready_when", "status"),
    [("all", 503), ("any", 200), (("demo",), 200), (("dead",), 503)],
)
async def test_readiness_follows_ready_when(mcp_upstream_url: str, ready_when: object, status: int) -> None:
    dead = f"http://127.0.0.1:{free_port()}/mcp"
    config = make_config(
        {"demo": upstream("demo", mcp_upstream_url), "dead": upstream("dead", dead)}, ready_when=ready_when
    )
    async with running_gateway(config) as gw, aiohttp.ClientSession() as http:
        await settled(gw)
        for path in ("/readyz", "/ready"):
            async with http.get(gw.url + path) as resp:
                assert resp.status == status
                body = await resp.json()
        assert body["upstreams"]["demo"]["state"] == "healthy"
        assert body["upstreams"]["dead"]["state"] == "unhealthy"
        assert "connection refused" in body["upstreams"]["dead"]["last_error"]
        assert body["status"] == ("ready" if status == 200 else "not_ready")


async def test_readiness_drops_while_shutting_down(mcp_upstream_url: str) -> None:
    config = make_config({"demo": upstream("demo", mcp_upstream_url)})
    async with running_gateway(config) as gw, aiohttp.ClientSession() as http:
        await settled(gw)
        async with http.get(gw.url + "/readyz") as resp:
            assert resp.status == 200
        gw.gateway.begin_shutdown()
        async with http.get(gw.url + "/readyz") as resp:
            assert resp.status == 503
            assert (await resp.json())["status"] == "shutting_down"
