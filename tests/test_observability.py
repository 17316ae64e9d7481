"""Metrics, the audit log, the access line and request ids, end to end: known traffic through
both endpoints, then the exact numbers and fields it must have produced."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from mcpgate.auth.apikeys import hash_key
from mcpgate.config import load_config
from mcpgate.observability.audit import AuditEvent
from mcpgate.observability.metrics import OTHER, Metrics
from tests.conftest import free_port, wait_for_port
from tests.gateway_harness import (
    POST_HEADERS,
    modern_call,
    modern_headers,
    raw_upstream,
    read_messages,
    running_gateway,
)

pytestmark = pytest.mark.e2e

ENG = "mgk_observability-engineer-0123456789"
CON = "mgk_observability-contractor-0123456789"


def config_text(urls: dict[str, str], extra: str = "") -> str:
    return f"""
server: {{port: 0}}
upstreams:
  alpha: {{url: "{urls["alpha"]}"}}
  beta: {{url: "{urls["beta"]}", prefix: beta}}
  down: {{url: "http://127.0.0.1:{free_port()}/mcp"}}
auth:
  api_keys:
    - {{id: engineering, key_hash: "{hash_key(ENG)}", roles: [engineer]}}
    - {{id: contractors, key_hash: "{hash_key(CON)}"}}
policy:
  default: deny
  rules:
    - {{roles: [engineer], decision: allow}}
    - {{clients: [contractors], servers: [alpha], tools: [whoami], decision: allow}}
{extra}"""


def call(name: str, arguments: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return modern_call("tools/call", {"name": name, "arguments": arguments or {}, **extra})


async def post(http: aiohttp.ClientSession, url: str, name: str, key: str | None, **headers: str) -> int:
    sent = {**modern_headers("tools/call", name), **headers}
    if key is not None:
        sent["X-API-Key"] = key
    async with http.post(url, json=call(name), headers=sent) as resp:
        await resp.read()
        return resp.status


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_known_traffic_gives_exact_counts(named_upstreams: dict[str, str], tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    extra = f"observability:\n  audit: {{enabled: true, path: '{audit}'}}\n"
    async with running_gateway(load_config(text=config_text(named_upstreams, extra), source="o.yml")) as gw:
        async with aiohttp.ClientSession() as http:
            alpha = gw.endpoint("alpha")
            assert [await post(http, alpha, "whoami", ENG) for _ in range(3)] == [200] * 3
            assert await post(http, gw.url + "/mcp", "beta__whoami", ENG) == 200
            assert [await post(http, alpha, "only_alpha", CON) for _ in range(2)] == [403] * 2
            assert await post(http, alpha, "whoami", None) == 401
            assert await post(http, alpha, "whoami", "mgk_wrong") == 401
            assert await post(http, gw.endpoint("down"), "whoami", ENG) == 502
            await gw.gateway.upstreams["alpha"].probe()
            async with http.get(gw.url + "/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain; version=")
                found = samples(await resp.text())
            async with http.get(gw.url + "/metrics", headers={"Accept": "application/openmetrics-text"}) as resp:
                assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
                assert (await resp.text()).rstrip().endswith("# EOF")
    assert value(found, "mcpgate_requests_total", server="alpha", method="tools/call", status="200") == 3
    assert value(found, "mcpgate_requests_total", server="beta", method="tools/call", status="200") == 1
    assert value(found, "mcpgate_requests_total", server="alpha", method="tools/call", status="403") == 2
    assert value(found, "mcpgate_requests_total", server="alpha", method="tools/call", status="401") == 2
    assert value(found, "mcpgate_tool_calls_total", server="alpha", tool="whoami", outcome="ok") == 3
    assert value(found, "mcpgate_tool_calls_total", server="beta", tool="whoami", outcome="ok") == 1
    assert value(found, "mcpgate_tool_calls_total", server="alpha", tool="only_alpha", outcome="denied") == 2
    assert value(found, "mcpgate_policy_denials_total", client="contractors", server="alpha", tool="only_alpha") == 2
    assert value(found, "mcpgate_auth_failures_total", reason="unauthenticated") == 1
    assert value(found, "mcpgate_auth_failures_total", reason="invalid_token") == 1
    assert value(found, "mcpgate_upstream_errors_total", server="down", kind="unreachable") == 1
    assert value(found, "mcpgate_request_duration_seconds_count", server="alpha", method="tools/call") == 7
    assert value(found, "mcpgate_upstream_request_duration_seconds_count", server="alpha", method="tools/call") == 3
    assert value(found, "mcpgate_upstream_up", server="alpha") == 1
    assert value(found, "mcpgate_build_info", version=__import__("mcpgate").__version__) == 1

    events = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(events) == 9
    first, denied, unauthenticated = events[0], events[4], events[6]
    assert first["client_id"] == "engineering" and first["auth"] == "api_key" and first["roles"] == ["engineer"]
    assert (first["server"], first["method"], first["item_kind"], first["item"]) == (
        "alpha",
        "tools/call",
        "tool",
        "whoami",
    )
    assert (first["decision"], first["rule"], first["status"]) == ("allow", "policy.rules[0]", 200)
    assert first["upstream_ms"] > 0 and first["duration_ms"] >= first["upstream_ms"]
    assert first["bytes_in"] > 0 and first["bytes_out"] > 0
    assert len(first["request_id"]) == 32 and first["time"].endswith("Z")
    assert "body" not in first
    assert (denied["decision"], denied["rule"], denied["status"]) == ("deny", "policy.default", 403)
    assert (denied["error_code"], denied["reason"]) == (-32066, "forbidden")
    assert events[3]["server"] == "beta" and events[3]["item"] == "whoami" and events[3]["endpoint"] == "/mcp"
    assert (unauthenticated["client_id"], unauthenticated["auth"], unauthenticated["status"]) == (
        "anonymous",
        "anonymous",
        401,
    )
    assert events[8]["reason"] == "upstream_unreachable"


async def test_request_ids_are_kept_or_made_returned_and_sent_upstream(tmp_path: Path) -> None:
    seen: list[str | None] = []

    async def upstream(request: web.Request) -> web.Response:
        seen.append(request.headers.get("X-Request-ID"))
        body = await request.json()
        return web.json_response({"jsonrpc": "2.0", "id": body.get("id"), "result": {"content": [], "isError": False}})

    async with raw_upstream(upstream) as (url, _):
        text = f"server: {{port: 0}}\nupstreams:\n  up: {{url: '{url}', heartbeat: {{interval: 1h}}}}\n"
        async with running_gateway(load_config(text=text, source="o.yml")) as gw, aiohttp.ClientSession() as http:
            seen.clear()
            headers = {**modern_headers("tools/call", "x"), "X-Request-ID": "trace-42.abc"}
            async with http.post(gw.endpoint("up"), json=call("x"), headers=headers) as resp:
                assert resp.headers["X-Request-ID"] == "trace-42.abc"
            headers["X-Request-ID"] = "not acceptable \u00e9" * 20
            async with http.post(gw.endpoint("up"), json=call("x"), headers=headers) as resp:
                made = resp.headers["X-Request-ID"]
            async with http.post(gw.url + "/mcp", json={"bad": 1}, headers=POST_HEADERS) as resp:
                assert resp.status == 400 and len(resp.headers["X-Request-ID"]) == 32  # rejections too
    assert len(made) == 32 and made != "trace-42.abc"
    assert [s for s in seen if s is not None][:2] == ["trace-42.abc", made]  # heartbeats carry none


async def test_audit_bodies_are_redacted_and_the_file_reopens_for_logrotate(
    named_upstreams: dict[str, str], tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    extra = f"observability:\n  audit: {{enabled: true, log_bodies: true, path: '{audit}'}}\n"
    async with running_gateway(load_config(text=config_text(named_upstreams, extra), source="o.yml")) as gw:
        async with aiohttp.ClientSession() as http:
            body = call("whoami", {"password": "hunter2-secret", "note": "fine"})
            sent = {**modern_headers("tools/call", "whoami"), "X-API-Key": ENG}
            async with http.post(gw.endpoint("alpha"), json=body, headers=sent) as resp:
                assert resp.status == 200
            audit.rename(tmp_path / "audit.jsonl.1")  # what logrotate does, then it signals
            assert gw.gateway.recorder is not None and gw.gateway.recorder.audit is not None
            gw.gateway.recorder.audit.reopen()
            async with http.post(gw.endpoint("alpha"), json=body, headers=sent) as resp:
                assert resp.status == 200
    rotated = json.loads((tmp_path / "audit.jsonl.1").read_text())
    assert "hunter2-secret" not in rotated["body"] and '"note":"fine"' in rotated["body"]
    assert len(audit.read_text().splitlines()) == 1
    assert oct(audit.stat().st_mode & 0o777) == oct(0o600)


async def test_the_access_line_says_what_happened(
    named_upstreams: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="mcpgate.access")
    async with running_gateway(load_config(text=config_text(named_upstreams), source="o.yml")) as gw:
        async with aiohttp.ClientSession() as http:
            assert await post(http, gw.endpoint("alpha"), "whoami", CON) == 200
            assert await post(http, gw.endpoint("alpha"), "only_alpha", CON) == 403
    lines = [r.getMessage() for r in caplog.records if r.name == "mcpgate.access"]
    assert lines[0].startswith("POST alpha tools/call whoami -> 200 ") and lines[0].endswith("ms contractors")
    assert lines[1].startswith("POST alpha tools/call only_alpha -> 403 ")


async def test_requests_ending_together_are_each_recorded_under_their_own_id(
    named_upstreams: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The recorder reads events in batches after the responses have gone out; each request must
    still get its own line, its own id and its own bytes, whatever order they finish in."""
    caplog.set_level("INFO", logger="mcpgate.access")
    audit = tmp_path / "audit.jsonl"
    extra = f"observability:\n  audit: {{enabled: true, path: '{audit}'}}\n"
    ids = [f"together-{n}" for n in range(24)]
    async with running_gateway(load_config(text=config_text(named_upstreams, extra), source="o.yml")) as gw:
        async with aiohttp.ClientSession() as http:
            statuses = await asyncio.gather(
                *(post(http, gw.endpoint("alpha"), "whoami", ENG, **{"X-Request-ID": rid}) for rid in ids)
            )
            assert statuses == [200] * len(ids)
            async with http.get(gw.url + "/metrics") as resp:
                found = samples(await resp.text())
    assert value(found, "mcpgate_requests_total", server="alpha", method="tools/call", status="200") == len(ids)
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    assert sorted(e["request_id"] for e in events) == sorted(ids)
    assert all(e["status"] == 200 and e["bytes_out"] > 0 and e["duration_ms"] > 0 for e in events)
    logged = [r for r in caplog.records if r.name == "mcpgate.access"]
    assert sorted(getattr(r, "request_id", None) for r in logged) == sorted(ids)


def test_the_audit_line_has_every_field_of_the_event() -> None:
    """``as_dict`` names the fields one by one (for speed): a field added to the event must not be
    left out of the line."""
    names = [f.name for f in dataclasses.fields(AuditEvent)]
    event = AuditEvent(**dict.fromkeys(names) | {"time": 1796185199.25, "roles": ("a",), "body": "{}"})
    line = json.loads(event.json_line())
    assert list(line) == names
    assert line["time"] == "2026-12-02T04:19:59.250Z" and line["roles"] == ["a"]
    assert "body" not in json.loads(dataclasses.replace(event, body=None).json_line())


def test_label_values_are_bounded_against_hostile_tool_names() -> None:
    metrics = Metrics(["alpha"], max_label_values=100)
    base: dict[str, Any] = {
        "time": 0.0, "request_id": "r", "auth": "api_key", "roles": (), "endpoint": "alpha", "server": "alpha",
        "http_method": "POST", "method": "tools/call", "item_kind": "tool", "decision": None, "rule": None,
        "rate_limit": None, "rate_limit_rule": None,
        "status": 200, "error_code": None, "reason": None, "duration_ms": 1.0, "upstream_ms": 0.5, "bytes_in": 10,
        "bytes_out": 10,
    }  # fmt: skip
    for n in range(5000):
        metrics.observe(AuditEvent(client_id=f"client-{n}", item=f"tool-{n}", **base))
    metrics.observe(AuditEvent(client_id="x", item="y", **{**base, "server": "ghost", "method": "evil/\u00e9"}))
    found = samples(metrics.render("")[0].decode())
    tools = {dict(labels)["tool"] for (name, labels) in found if name == "mcpgate_tool_calls_total"}
    assert len(tools) == 101 and OTHER in tools
    assert value(found, "mcpgate_tool_calls_total", server="alpha", tool=OTHER, outcome="ok") == 4900
    servers = {dict(labels)["server"] for (name, labels) in found if name == "mcpgate_requests_total"}
    methods = {dict(labels)["method"] for (name, labels) in found if name == "mcpgate_requests_total"}
    assert servers == {"alpha", "-"} and methods == {"tools/call", "other"}


def test_no_secret_reaches_any_line_a_running_gateway_prints(tmp_path: Path, named_upstreams: dict[str, str]) -> None:
    """Debug logs, JSON format, audit with bodies to stdout: every line grepped for every secret it was given."""
    secrets = {
        "plain": "mgk_plain-key-value-0123456789",
        "upstream": "upstream-bearer-s3cret-token",
        "body": "hunter2-password-in-a-body",
        "wrong": "mgk_wrong-key-someone-tried",
    }
    config = tmp_path / "g.yml"
    config.write_text(
        f"""
upstreams:
  alpha: {{url: "{named_upstreams["alpha"]}?api_key={secrets["upstream"]}",
          auth: {{type: bearer, token: "{secrets["upstream"]}"}}}}
auth:
  api_keys: [{{id: dev, key: "{secrets["plain"]}"}}]
observability:
  audit: {{enabled: true, log_bodies: true}}
  logging: {{level: debug, format: json}}
"""
    )
    port = free_port()
    argv = [str(Path(sys.executable).parent / "mcpgate"), "start", "-c", str(config), "--port", str(port)]
    gateway = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    try:
        wait_for_port(port, gateway)  # type: ignore[arg-type]

        async def traffic() -> None:
            url = f"http://127.0.0.1:{port}/servers/alpha/mcp"
            async with aiohttp.ClientSession() as http:
                for key in (secrets["plain"], secrets["wrong"]):
                    headers = {**modern_headers("tools/call", "whoami"), "Authorization": f"Bearer {key}"}
                    body = call("whoami", {"password": secrets["body"]})
                    async with http.post(url, json=body, headers=headers) as resp:
                        await read_messages(resp)

        asyncio.run(traffic())
    finally:
        gateway.send_signal(signal.SIGTERM)
        out, err = gateway.communicate(timeout=30)
    printed = (out + err).decode(errors="replace")
    assert '"method":"tools/call"' in printed  # the audit lines are there, and were grepped
    for name, secret in secrets.items():
        assert secret not in printed, f"the {name} secret was printed"


def test_histograms_count_each_duration_in_its_bucket_cumulatively() -> None:
    metrics = Metrics(["alpha"], max_label_values=10)
    base: dict[str, Any] = {
        "time": 0.0, "request_id": "r", "client_id": "c", "auth": "anonymous", "roles": (), "endpoint": "alpha",
        "server": "alpha", "http_method": "POST", "method": "ping", "item_kind": None, "item": None,
        "decision": None, "rule": None,
        "rate_limit": None, "rate_limit_rule": None, "status": 200, "error_code": None, "reason": None,
        "upstream_ms": None,
        "bytes_in": 1, "bytes_out": 1,
    }  # fmt: skip
    for ms in (0.4, 3.0, 400_000.0):
        metrics.observe(AuditEvent(duration_ms=ms, **base))
    found = samples(metrics.render("")[0].decode())
    bucket = "mcpgate_request_duration_seconds_bucket"
    assert value(found, bucket, server="alpha", method="ping", le="0.0005") == 1
    assert value(found, bucket, server="alpha", method="ping", le="0.0025") == 1
    assert value(found, bucket, server="alpha", method="ping", le="0.005") == 2
    assert value(found, bucket, server="alpha", method="ping", le="300") == 2
    assert value(found, bucket, server="alpha", method="ping", le="+Inf") == 3
    assert value(found, "mcpgate_request_duration_seconds_count", server="alpha", method="ping") == 3
    assert value(found, "mcpgate_request_duration_seconds_sum", server="alpha", method="ping") == pytest.approx(
        400.0034
    )
