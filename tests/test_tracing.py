"""OpenTelemetry, with the SDK's in-memory exporter in place of OTLP: the client's trace is
continued, the upstream call is a child span, and the upstream sees that span as its parent."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mcpgate.config import load_config
from mcpgate.gateway import Gateway, StartupError
from mcpgate.observability import otel
from tests.gateway_harness import modern_call, modern_headers, raw_upstream, running_gateway

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


async def test_spans_continue_the_clients_trace_and_reach_the_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = InMemorySpanExporter()
    monkeypatch.setattr(otel, "default_exporter", lambda: exporter)
    seen: list[str | None] = []

    async def upstream(request: web.Request) -> web.Response:
        body: Any = await request.json()
        if body.get("method") == "tools/call":
            seen.append(request.headers.get("traceparent"))
        return web.json_response({"jsonrpc": "2.0", "id": body.get("id"), "result": {"content": [], "isError": False}})

    async with raw_upstream(upstream) as (url, _):
        text = (
            f"server: {{port: 0}}\nupstreams:\n  up: {{url: '{url}'}}\nobservability: {{tracing: {{enabled: true}}}}\n"
        )
        async with running_gateway(load_config(text=text, source="t.yml")) as gw, aiohttp.ClientSession() as http:
            headers = {**modern_headers("tools/call", "x"), "traceparent": f"00-{TRACE}-{PARENT}-01"}
            body = modern_call("tools/call", {"name": "x", "arguments": {}})
            async with http.post(gw.endpoint("up"), json=body, headers=headers) as resp:
                assert resp.status == 200
            assert gw.gateway.tracing is not None
            gw.gateway.tracing.provider.force_flush()
    spans = {span.kind.name: span for span in exporter.get_finished_spans()}
    server, client = spans["SERVER"], spans["CLIENT"]
    assert server.name == "MCP tools/call"
    assert format(server.context.trace_id, "032x") == TRACE
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT
    assert client.parent is not None and client.parent.span_id == server.context.span_id
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 200
    assert seen == [f"00-{TRACE}-{format(client.context.span_id, '016x')}-01"]


def test_tracing_without_the_extra_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otel, "available", lambda: False)
    text = "upstreams:\n  up: {url: 'http://127.0.0.1:9/mcp'}\nobservability: {tracing: {enabled: true}}\n"
    with pytest.raises(StartupError, match=r"pip install 'mcpgate\[otel\]'"):
        Gateway.from_config(load_config(text=text, source="t.yml"))
