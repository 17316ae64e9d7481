"""Analytics kept in PostgreSQL (``analytics.backend: postgres``), against a private Debian PostgreSQL
per test: the same answers as DuckDB for the same events, retention, two instances writing to one
database, a question stopped by its time bound on the server too, the errors start reports, and a
whole gateway answering /admin/v1/analytics from what went through it."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

import aiohttp
import asyncpg
import pytest

from mcpgate.analytics import Analytics, SinkError
from mcpgate.analytics.embedded import DuckDBSink
from mcpgate.analytics.postgres import PostgresSink
from mcpgate.analytics.queries import (
    GROUPS,
    METRICS,
    REJECTIONS,
    TABLE,
    ClientUsage,
    Question,
    Rejections,
    Series,
    Tools,
    Usage,
)
from mcpgate.config.model import AnalyticsConfig
from mcpgate.observability.audit import AuditEvent
from tests.conftest import PostgresServer, free_port
from tests.gateway_harness import sdk_client
from tests.store_harness import admin_yaml, call, serving

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z, a multiple of every bucket width used here
DAY = 86400.0
CLIENTS = ("alice", "bob", "carol", "dave", "erin")
TOOLS = {"alpha": ("add", "echo", "search"), "beta": ("echo", "fetch"), "gamma": ("render",)}
SPACING = 1301.7  # seconds between two events: 200 of them cover three days


def traffic() -> list[AuditEvent]:
    """200 varied events, the same every run: calls that worked and failed, lists, and the gateway's
    refusals of every kind, each at its own time (newest first), ``SPACING`` apart."""
    rng = random.Random(20270115)
    events = []
    for i in range(200):
        client = rng.choice(CLIENTS)
        upstream = rng.choice(tuple(TOOLS))
        server: str | None = upstream
        kind: str | None = "tool"
        item: str | None = rng.choice(TOOLS[upstream])
        method, status = "tools/call", 200
        reason: str | None = None
        rule: str | None = "policy.rules[0]"
        limited: str | None = None
        limit_rule: str | None = None
        roll = rng.random()
        if roll < 0.1:
            method, kind, item = "tools/list", None, None
        elif roll < 0.15:
            server, method, kind, item = None, "tools/list", None, None  # the gateway answered itself
        elif roll < 0.22:
            status, reason = 502, "upstream_error"  # an error, not a refusal
        elif roll < 0.25:
            status, reason, rule = 403, "forbidden", f"policy.rules[{rng.randrange(3)}]"
        elif roll < 0.28:
            status, reason, limited, limit_rule = 429, "rate_limited", "deny", "rate_limit.rules[1]"
        elif roll < 0.30:
            status, reason, client, rule = 401, rng.choice(REJECTIONS[2:]), "anonymous", None
        elif roll < 0.33:
            status = 500  # the upstream failed without the gateway naming it
        ms = round(rng.uniform(0.5, 900.0), 3)
        events.append(
            AuditEvent(
                time=NOW - 45.0 - i * SPACING,
                request_id=f"req-{i:03d}",
                client_id=client,
                auth="anonymous" if client == "anonymous" else "api_key",
                roles=("eng",) if i % 2 else ("eng", "ops"),
                endpoint="/mcp",
                server=server,
                http_method="POST",
                method=method,
                item_kind=kind,
                item=item,
                decision="deny" if reason == "forbidden" else "allow",
                rule=rule,
                rate_limit=limited,
                rate_limit_rule=limit_rule,
                status=status,
                error_code=-32000 if reason else None,
                reason=reason,
                duration_ms=ms,
                upstream_ms=None if reason else round(ms * 0.8, 3),
                bytes_in=100 + i,
                bytes_out=None if status == 429 else 250 + 3 * i,
            )
        )
    return events


def questions() -> Iterator[Question]:
    """Every kind of question, with every choice it offers."""
    for period in ("1h", "24h", "7d"):
        for group_by in GROUPS:
            yield Usage.parse({"period": period, "group_by": group_by})
    for client in (*CLIENTS, "anonymous", "nobody"):
        yield ClientUsage.parse(client, {"period": "7d"})
        yield ClientUsage.parse(client, {})
    for query in ({}, {"period": "7d"}, {"period": "7d", "limit": "2"}, {"period": "1h"}):
        yield Tools.parse(query)
    for metric in METRICS:
        for filters in ({}, {"server": "alpha"}, {"tool": "echo"}, {"server": "beta", "tool": "echo"}):
            yield Series.parse({"metric": metric, **filters})
            yield Series.parse({"metric": metric, "period": "7d", "bucket": "1h", **filters})
            yield Series.parse({"metric": metric, "period": "2h", "bucket": "10s", **filters})
    for query in ({}, {"period": "7d", "limit": "1000"}, {"period": "7d", "limit": "3"}):
        yield Rejections.parse(query)
    for reason in REJECTIONS:
        yield Rejections.parse({"period": "7d", "reason": reason})


def same(a: Any, b: Any, where: str = "", *, shown: float = 0.0) -> None:
    """Equal, floats within 1e-9 relative: the two databases interpolate a percentile with the same
    formula but not the same float operations, so its last bits may differ (18.7865 against
    18.786499999999997). An answer rounds it to the microsecond, which turns those bits into
    0.001 when the true value is a half-way one: ``shown`` is the difference allowed there."""
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, float) and isinstance(b, float), f"{where}: {a!r} != {b!r}"
        assert a == pytest.approx(b, rel=1e-9, abs=shown), f"{where}: {a!r} != {b!r}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for key in a:
            same(a[key], b[key], f"{where}.{key}", shown=shown)
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]", shown=shown)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


async def until(check: Callable[[], Awaitable[bool]], what: str, limit: float = 10.0) -> None:
    """Wait for ``check``, bounded (the bound only keeps a broken build from hanging)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def rows_in(sink: PostgresSink) -> int:
    return int((await sink.fetch((f"SELECT count(*) FROM {TABLE}", []), 5.0))[0][0])


# --- the same answers as DuckDB --------------------------------------------------------------------


async def test_postgres_and_duckdb_give_the_same_answers(postgres: PostgresServer) -> None:
    events = traffic()
    config = AnalyticsConfig(queue_size=10_000)
    shared = Analytics(config, PostgresSink(postgres.url), clock=lambda: NOW)
    embedded = Analytics(config, DuckDBSink(":memory:"), clock=lambda: NOW)
    await shared.start()
    await embedded.start()
    try:
        for analytics in (shared, embedded):
            analytics.offer(events)
        await shared.flush()
        await embedded.flush()
        asked = 0
        for question in questions():
            name = type(question).__name__
            for sql, params in question.statements(NOW):  # the rows, in the same order
                rows = [await sink.fetch((sql, params), 10.0) for sink in (shared.sink, embedded.sink)]
                same([tuple(row) for row in rows[0]], [tuple(row) for row in rows[1]], f"{name} rows")
            same(await shared.ask(question), await embedded.ask(question), name, shown=0.0011)
            asked += 1
        assert asked == 71
        assert shared.count("written") == 200 and shared.status()["backend"] == "postgres"

        # And the answers are right, not only alike: counted here from the events themselves.
        week = [e for e in events if e.time >= NOW - 7 * DAY]
        day = [e for e in events if e.time >= NOW - DAY]
        assert len(week) == 200 and len(day) == 67  # 45 s + 66 * SPACING is the last within the day
        calls = [e for e in week if e.method == "tools/call" and e.item is not None]
        invocations = Counter((e.server, e.item) for e in calls)
        tools = (await shared.ask(Tools.parse({"period": "7d", "limit": "1000"})))["tools"]
        assert {(t["server"], t["tool"]): t["invocations"] for t in tools} == invocations
        assert [t["invocations"] for t in tools] == sorted(invocations.values(), reverse=True)
        for t in tools:
            mine = [e for e in calls if (e.server, e.item) == (t["server"], t["tool"])]
            failed = sum(1 for e in mine if e.status >= 400 or e.reason is not None)
            assert t["unique_clients"] == len({e.client_id for e in mine})
            assert t["error_rate"] == round(failed / len(mine), 4)
        by_client = (await shared.ask(Usage.parse({"group_by": "client"})))["groups"]
        assert {g["client"]: g["requests"] for g in by_client} == Counter(e.client_id for e in day)
        totals = (await shared.ask(ClientUsage.parse("alice", {"period": "7d"})))["totals"]
        alice = [e for e in week if e.client_id == "alice"]
        assert totals["requests"] == len(alice)
        assert totals["bytes_out"] == sum(e.bytes_out or 0 for e in alice)
        assert totals["errors"] == sum(1 for e in alice if e.status >= 400 or e.reason is not None)
        refused = (await shared.ask(Rejections.parse({"period": "7d", "limit": "1000"})))["rejections"]
        assert [r["request_id"] for r in refused] == [e.request_id for e in week if e.reason in REJECTIONS]
        hourly = await shared.ask(Series.parse({"period": "7d", "bucket": "1h"}))
        assert sum(p["value"] for p in hourly["points"]) == 200
    finally:
        await shared.close()
        await embedded.close()


async def test_parameters_bind_whatever_number_type_python_has(postgres: PostgresServer) -> None:
    """``LIMIT $n`` is a bigint, ``floor((ts - $1) / $n)`` a float8: whole seconds and whole-number
    clocks bind as well as fractions."""
    events = traffic()[:20]
    clock = lambda: 1_800_000_000  # noqa: E731 - an int, as time.time never is, but a test clock may be
    shared = Analytics(AnalyticsConfig(), PostgresSink(postgres.url), clock=clock)
    embedded = Analytics(AnalyticsConfig(), DuckDBSink(":memory:"), clock=clock)
    await shared.start()
    await embedded.start()
    try:
        for analytics in (shared, embedded):
            analytics.offer(events)
        for question in (
            Series(Series.parse({}).window, 900, "15m", "requests", None, None),  # an int bucket width
            Tools(Tools.parse({}).window, 3),
            Usage.parse({"group_by": "tool"}),
        ):
            same(await shared.ask(question), await embedded.ask(question), shown=0.0011)
    finally:
        await shared.close()
        await embedded.close()


# --- retention -------------------------------------------------------------------------------------


async def test_retention_deletes_older_events_and_keeps_newer_ones(postgres: PostgresServer) -> None:
    now = [NOW]
    sink = PostgresSink(postgres.url)
    analytics = Analytics(AnalyticsConfig(retention=DAY), sink, clock=lambda: now[0])
    await analytics.start()
    try:
        template = traffic()[0]
        ages = (10.0, 3600.0, DAY - 1800, DAY + 1, 2 * DAY, 40 * DAY)
        analytics.offer([replace(template, time=NOW - age, request_id=f"aged-{i}") for i, age in enumerate(ages)])
        await analytics.flush()
        assert await rows_in(sink) == 6
        await analytics.prune()
        assert await rows_in(sink) == 3
        kept = await sink.fetch((f"SELECT request_id FROM {TABLE} ORDER BY ts DESC", []), 5.0)
        assert [row[0] for row in kept] == ["aged-0", "aged-1", "aged-2"]
        now[0] += 3600  # an hour on: the event that was 23.5 hours old is now older than a day
        await analytics.prune()
        assert await rows_in(sink) == 2
        assert await sink.prune(now[0]) == 2  # the count is asyncpg's "DELETE 2"
        assert await sink.prune(now[0]) == 0
        assert analytics.state == "ok"
    finally:
        await analytics.close()


# --- two instances, one database -------------------------------------------------------------------


async def test_two_instances_writing_together_add_up(postgres: PostgresServer) -> None:
    a, b = (
        Analytics(AnalyticsConfig(flush_interval=0.05), PostgresSink(postgres.url), clock=lambda: NOW) for _ in "ab"
    )
    # Four starting at once: one creates the table under the advisory lock, the others find it.
    others = [PostgresSink(postgres.url) for _ in range(2)]
    await asyncio.gather(a.start(), b.start(), *(sink.open() for sink in others))
    for sink in others:
        await sink.close()
    try:
        template = traffic()[5]

        async def gateway(analytics: Analytics, name: str, count: int) -> None:
            for i in range(count):
                analytics.offer(
                    [replace(template, time=NOW - 1000 + i * 0.001, request_id=f"{name}-{i}", client_id=name)]
                )
                if i % 37 == 0:
                    await asyncio.sleep(0)  # let the other instance and the background writers run
            await analytics.flush()

        await asyncio.gather(gateway(a, "gw-a", 1500), gateway(b, "gw-b", 1100))
        assert (a.count("written"), b.count("written")) == (1500, 1100)
        assert a.count("failed") == b.count("failed") == 0
        for analytics in (a, b):
            usage = await analytics.ask(Usage.parse({"group_by": "client"}))
            assert {g["client"]: g["requests"] for g in usage["groups"]} == {"gw-a": 1500, "gw-b": 1100}
    finally:
        await asyncio.gather(a.close(), b.close())


# --- a question's time bound -----------------------------------------------------------------------


async def test_a_query_past_its_time_bound_is_stopped_in_the_server_too(postgres: PostgresServer) -> None:
    sink = PostgresSink(postgres.url)
    await sink.open()
    watcher = await asyncpg.connect(postgres.url)
    try:
        setting = "SELECT setting::int FROM pg_settings WHERE name = 'statement_timeout'"  # in ms, 0 for none
        assert 0 < (await sink.fetch((setting, []), 2.5))[0][0] <= 2500  # the bound, less the time spent setting up
        with pytest.raises(SinkError) as caught:
            await asyncio.wait_for(sink.fetch(("SELECT pg_sleep(60)", []), 0.5), 30)
        assert "longer than 0.5s" in str(caught.value)

        async def nothing_sleeps() -> bool:
            sleeping = await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT pg_sleep%' "
                "AND pid <> pg_backend_pid()"
            )
            return bool(sleeping == 0)

        await until(nothing_sleeps, "the server stopped pg_sleep(60)")
        # The connection it ran on is usable again, and the bound was for that query only.
        assert await sink.fetch(("SELECT 1", []), 5.0) == [(1,)]
        assert 2500 < (await sink.fetch((setting, []), 5.0))[0][0] <= 5000
        async with sink.pool.acquire() as conn:  # the bound was the transaction's, not the session's
            assert await conn.fetchval(setting) == 0
        with pytest.raises(SinkError) as refused:
            await sink.fetch((f"DELETE FROM {TABLE}", []), 5.0)  # questions only read
        assert "read-only transaction" in str(refused.value)
    finally:
        await watcher.close()
        await sink.close()


# --- what start reports ----------------------------------------------------------------------------

PASSWORD = "pw-Secret-4711"


async def test_refusals_are_final_and_never_show_the_password(postgres: PostgresServer) -> None:
    admin = await asyncpg.connect(postgres.url)
    try:
        await admin.execute(f"CREATE ROLE analyst LOGIN PASSWORD '{PASSWORD}'")
        await admin.execute(f"CREATE ROLE reader LOGIN PASSWORD '{PASSWORD}'")
        await admin.execute("GRANT CREATE ON SCHEMA public TO analyst")  # reader may not create tables
        hba = postgres.data / "pg_hba.conf"
        hba.write_text("host all analyst,reader 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        await admin.execute("SELECT pg_reload_conf()")
    finally:
        await admin.close()
    base = f"127.0.0.1:{postgres.port}"

    async def attempt(url: str) -> SinkError | None:
        sink = PostgresSink(url)
        try:
            await asyncio.wait_for(sink.open(), 30)
        except SinkError as exc:
            return exc
        finally:
            await sink.close()
        return None

    async def refused(url: str) -> SinkError:
        error = await attempt(url)
        assert error is not None, f"{url} opened"
        return error

    async def password_checked() -> bool:  # until the server has read pg_hba.conf again
        return await attempt(f"postgresql://analyst:wrong-{PASSWORD}@{base}/mcpgate") is not None

    await until(password_checked, "the server reloaded pg_hba.conf")

    wrong = await refused(f"postgresql://analyst:wrong-{PASSWORD}@{base}/mcpgate")
    assert wrong.retry is False and "InvalidPasswordError" in str(wrong) and PASSWORD not in str(wrong)
    missing = await refused(f"postgresql://analyst:{PASSWORD}@{base}/no_such_database")
    assert missing.retry is False and "no_such_database" in str(missing) and PASSWORD not in str(missing)
    forbidden = await refused(f"postgresql://reader:{PASSWORD}@{base}/mcpgate")
    assert forbidden.retry is False and "InsufficientPrivilege" in str(forbidden) and PASSWORD not in str(forbidden)
    gone = await refused(f"postgresql://analyst:{PASSWORD}@127.0.0.1:{free_port()}/mcpgate")
    assert gone.retry is True and PASSWORD not in str(gone)
    malformed = await refused(f"postgresql://analyst:{PASSWORD}@{base}?sslmode=sometimes")
    assert malformed.retry is False and PASSWORD not in str(malformed)

    allowed = PostgresSink(f"postgresql://analyst:{PASSWORD}@{base}/mcpgate")
    await allowed.open()
    try:
        assert await rows_in(allowed) == 0
    finally:
        await allowed.close()


async def test_an_unopened_or_closed_sink_says_so() -> None:
    sink = PostgresSink("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(SinkError):
        await sink.write([[] for _ in range(22)])
    with pytest.raises(SinkError):
        await sink.fetch(("SELECT 1", []), 1.0)
    await sink.close()


# --- a whole gateway -------------------------------------------------------------------------------


@pytest.mark.e2e
async def test_a_gateway_answers_tool_usage_from_postgres(
    named_upstreams: dict[str, str], postgres: PostgresServer
) -> None:
    config = (
        f"server: {{port: 0}}\nupstreams:\n  alpha: {{url: {json.dumps(named_upstreams['alpha'])}}}\n"
        f"analytics: {{backend: postgres, flush_interval: 200ms}}\n"
        + admin_yaml(f"backend: postgres, url: {json.dumps(postgres.url)}")
    )
    async with serving(config) as gw, aiohttp.ClientSession() as http:
        async with sdk_client(f"{gw.url}/servers/alpha/mcp", "legacy") as client:
            for _ in range(3):
                await client.call_tool("whoami", {})
            for i in range(2):
                await client.call_tool("add", {"a": i, "b": 1})
            await client.call_tool("only_alpha", {})
        status, headers, body = await call(http, "GET", f"{gw.admin}/analytics/tools")
        assert status == 200, body
        assert headers["Cache-Control"] == "no-store"
        assert [(t["server"], t["tool"], t["invocations"], t["error_rate"]) for t in body["tools"]] == [
            ("alpha", "whoami", 3, 0.0),
            ("alpha", "add", 2, 0.0),
            ("alpha", "only_alpha", 1, 0.0),
        ]
        status, _, usage = await call(http, "GET", f"{gw.admin}/analytics/usage?group_by=tool&period=1h")
        assert status == 200, usage
        assert [(g["server"], g["tool"], g["requests"], g["errors"]) for g in usage["groups"]] == [
            ("alpha", "whoami", 3, 0),
            ("alpha", "add", 2, 0),
            ("alpha", "only_alpha", 1, 0),
        ]
        status, _, shown = await call(http, "GET", f"{gw.admin}/status")
        assert status == 200, shown
        assert shown["analytics"]["backend"] == "postgres" and shown["analytics"]["state"] == "ok"
    check = await asyncpg.connect(postgres.url)
    try:
        calls = await check.fetchval(f"SELECT count(*) FROM {TABLE} WHERE method = 'tools/call'")
        assert calls == 6
    finally:
        await check.close()
