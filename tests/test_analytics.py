"""Analytics without a gateway: the questions' parameters, their answers from DuckDB in memory (the
in-memory implementation of the sink), retention with an injected clock, the bounded queue, a
database that fails, the file lock, and the configuration's checks."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from mcpgate.analytics import Analytics, SinkError
from mcpgate.analytics.embedded import DuckDBSink
from mcpgate.analytics.queries import (
    COLUMNS,
    BadQuery,
    ClientUsage,
    Rejections,
    Series,
    Statement,
    Tools,
    Usage,
    iso,
    span,
)
from mcpgate.analytics.sink import Columns, append, empty
from mcpgate.config import ConfigError, load_config
from mcpgate.config.model import AnalyticsConfig
from mcpgate.observability.audit import AuditEvent
from mcpgate.reload import restart_only

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z, a multiple of every bucket width used here


def event(
    ago: float,
    client: str = "alice",
    server: str | None = "alpha",
    tool: str | None = "add",
    *,
    status: int = 200,
    reason: str | None = None,
    ms: float = 1.0,
    method: str | None = None,
    rule: str | None = None,
) -> AuditEvent:
    method = method or ("tools/call" if tool else "tools/list")
    return AuditEvent(
        NOW - ago, f"r{ago}", client, "api_key", ("eng", "ops"), "/mcp", server, "POST", method,
        "tool" if tool else None, tool, "deny" if reason == "forbidden" else "allow", rule, None, None,
        status, None, reason, ms, ms / 2, 100, 250,
    )  # fmt: skip


# Known traffic: alice calls add 3 times (1, 2, 3 ms) and echo once; bob calls add once, is denied
# echo once and rate limited once; carol lists tools; one event is older than a day.
TRAFFIC = [
    event(10, ms=1.0),
    event(20, ms=2.0),
    event(70, ms=3.0),
    event(30, tool="echo", server="beta", ms=4.0),
    event(40, "bob", ms=5.0),
    event(50, "bob", "beta", "echo", status=403, reason="forbidden", rule="policy.rules[2]"),
    event(60, "bob", None, None, status=429, reason="rate_limited", method="tools/list"),
    event(65, "carol", "alpha", None),
    event(2 * 86400, "old"),
]


@pytest.fixture
async def analytics() -> Any:
    store = Analytics(AnalyticsConfig(queue_size=1000), DuckDBSink(":memory:"), clock=lambda: NOW)
    await store.start()
    store.offer(TRAFFIC)
    yield store
    await store.close()


# --- parameters ----------------------------------------------------------------------------------


def test_spans_and_times() -> None:
    assert [span(t) for t in ("90s", "30m", "24h", "7d", "2w")] == [90, 1800, 86400, 7 * 86400, 14 * 86400]
    assert [span(t) for t in ("", "1", "h", "1.5h", "-1h", "1y", "12345678d")] == [None] * 7
    assert iso(NOW) == "2027-01-15T08:00:00.000Z"


@pytest.mark.parametrize(
    ("parse", "query", "bad"),
    [
        (Usage.parse, {"period": "1y"}, ["period"]),
        (Usage.parse, {"period": "400d"}, ["period"]),
        (Usage.parse, {"group_by": "method", "limit": "3"}, ["limit", "group_by"]),
        (Tools.parse, {"limit": "0"}, ["limit"]),
        (Tools.parse, {"limit": "1001"}, ["limit"]),
        (Tools.parse, {"limit": "ten"}, ["limit"]),
        (Series.parse, {"metric": "p99"}, ["metric"]),
        (Series.parse, {"period": "1h", "bucket": "2h"}, ["bucket"]),
        (Series.parse, {"period": "7d", "bucket": "1s"}, ["bucket"]),
        (Series.parse, {"server": ""}, ["server"]),
        (Series.parse, {"tool": "x" * 257}, ["tool"]),
        (Rejections.parse, {"reason": "upstream_error"}, ["reason"]),
        (lambda q: ClientUsage.parse("", q), {"period": "0m"}, ["period", "client_id"]),
    ],
)
def test_every_bad_parameter_is_named(parse: Any, query: dict[str, str], bad: list[str]) -> None:
    with pytest.raises(BadQuery) as caught:
        parse(query)
    assert [e["parameter"] for e in caught.value.errors] == bad
    assert all(e["detail"] for e in caught.value.errors)


def test_parameters_become_bound_values_never_sql() -> None:
    hostile = "alpha'; DROP TABLE mcpgate_analytics_events; --"
    for question in (
        Series.parse({"server": hostile, "tool": hostile}),
        ClientUsage.parse(hostile, {}),
    ):
        for sql, params in question.statements(NOW):
            assert hostile not in sql
            assert hostile in params


# --- answers -------------------------------------------------------------------------------------


async def test_usage_by_client_server_and_tool(analytics: Analytics) -> None:
    by_client = await analytics.ask(Usage.parse({}))
    assert by_client["until"] == iso(NOW) and by_client["since"] == iso(NOW - 86400)
    rows = {g["client"]: g for g in by_client["groups"]}
    assert list(rows) == ["alice", "bob", "carol"]  # most requests first; "old" is outside the day
    assert (rows["alice"]["requests"], rows["alice"]["errors"]) == (4, 0)
    assert (rows["bob"]["requests"], rows["bob"]["errors"]) == (3, 2)
    assert rows["alice"]["p50_ms"] == 2.5 and rows["alice"]["p95_ms"] == pytest.approx(3.85)
    assert (rows["alice"]["bytes_in"], rows["alice"]["bytes_out"]) == (400, 1000)
    totals = by_client["totals"]
    assert (totals["requests"], totals["errors"], totals["bytes_in"]) == (8, 2, 800)
    assert totals["p50_ms"] == 1.5 and totals["p95_ms"] == pytest.approx(4.65)
    servers = await analytics.ask(Usage.parse({"group_by": "server"}))
    by_server = {g["server"]: g["requests"] for g in servers["groups"]}
    assert by_server == {"alpha": 5, "beta": 2, None: 1}
    tools = await analytics.ask(Usage.parse({"group_by": "tool"}))
    assert tools["totals"]["requests"] == 6  # the tool calls
    by_tool = tools["groups"]
    assert [(g["server"], g["tool"], g["requests"], g["errors"]) for g in by_tool] == [
        ("alpha", "add", 4, 0),
        ("beta", "echo", 2, 1),
    ]
    week = await analytics.ask(Usage.parse({"period": "7d"}))
    assert {g["client"] for g in week["groups"]} == {"alice", "bob", "carol", "old"}


async def test_one_clients_usage(analytics: Analytics) -> None:
    bob = await analytics.ask(ClientUsage.parse("bob", {"period": "1h"}))
    assert bob["client"] == "bob"
    assert (bob["totals"]["requests"], bob["totals"]["errors"]) == (3, 2)
    assert [(s["server"], s["requests"]) for s in bob["servers"]] == [("alpha", 1), ("beta", 1), (None, 1)]
    assert [(t["server"], t["tool"], t["requests"]) for t in bob["tools"]] == [("alpha", "add", 1), ("beta", "echo", 1)]
    nobody = await analytics.ask(ClientUsage.parse("nobody", {}))
    assert nobody["totals"] == {
        "requests": 0, "errors": 0, "p50_ms": None, "p95_ms": None, "bytes_in": 0, "bytes_out": 0,
    }  # fmt: skip
    assert nobody["servers"] == nobody["tools"] == []


async def test_tool_popularity(analytics: Analytics) -> None:
    tools = (await analytics.ask(Tools.parse({})))["tools"]
    assert tools == [
        {"server": "alpha", "tool": "add", "invocations": 4, "unique_clients": 2, "p95_ms": 4.7, "error_rate": 0.0},
        {"server": "beta", "tool": "echo", "invocations": 2, "unique_clients": 2, "p95_ms": 3.85, "error_rate": 0.5},
    ]
    assert len((await analytics.ask(Tools.parse({"limit": "1"})))["tools"]) == 1


async def test_time_series_has_every_bucket_and_zeros_for_empty_ones(analytics: Analytics) -> None:
    series = await analytics.ask(Series.parse({"period": "5m", "bucket": "1m"}))
    assert series["bucket"] == "1m" and series["metric"] == "requests"
    assert series["since"] == iso(NOW - 300) and series["until"] == iso(NOW)
    late = await analytics.ask(Series.parse({"period": "5m", "bucket": "2m"}))
    assert late["since"] == iso(NOW - 360)  # the first bucket's start, before the period's
    assert [p["timestamp"] for p in series["points"]] == [iso(NOW - 60 * i) for i in range(5, -1, -1)]
    # 10-60 s ago: the minute before now; 65 and 70 s ago: the one before; nothing else.
    assert [p["value"] for p in series["points"]] == [0, 0, 0, 2, 6, 0]
    errors = await analytics.ask(Series.parse({"period": "5m", "bucket": "1m", "metric": "errors"}))
    assert [p["value"] for p in errors["points"]] == [0, 0, 0, 0, 2, 0]
    p95 = await analytics.ask(Series.parse({"period": "5m", "bucket": "1m", "metric": "p95_ms", "server": "alpha"}))
    assert p95["server"] == "alpha"
    assert [p["value"] for p in p95["points"]] == [0.0, 0.0, 0.0, 2.9, 4.7, 0.0]
    echo = await analytics.ask(Series.parse({"period": "5m", "bucket": "1m", "tool": "echo"}))
    assert [p["value"] for p in echo["points"]] == [0, 0, 0, 0, 2, 0]
    assert sum(p["value"] for p in (await analytics.ask(Series.parse({"period": "24h"})))["points"]) == 8
    default = Series.parse({"period": "24h"})
    assert default.bucket_text == "15m"  # the smallest width that keeps a day within 120 points


async def test_recent_rejections_newest_first(analytics: Analytics) -> None:
    shown = (await analytics.ask(Rejections.parse({})))["rejections"]
    assert [(r["client_id"], r["reason"], r["status"]) for r in shown] == [
        ("bob", "forbidden", 403),
        ("bob", "rate_limited", 429),
    ]
    assert shown[0]["item"] == "echo" and shown[0]["rule"] == "policy.rules[2]" and shown[0]["server"] == "beta"
    assert shown[0]["time"] == iso(NOW - 50)
    only = (await analytics.ask(Rejections.parse({"reason": "rate_limited"})))["rejections"]
    assert [r["reason"] for r in only] == ["rate_limited"]


def test_columns_follow_the_table() -> None:
    one = event(5, rule="policy.rules[0]")
    out = empty()
    append(out, [one, one])
    assert len(out) == len(COLUMNS)
    by_name = {name: values for (name, _), values in zip(COLUMNS, out, strict=True)}
    assert by_name["ts"] == [NOW - 5] * 2 and by_name["roles"] == ["eng,ops"] * 2
    assert by_name["item"] == ["add"] * 2 and by_name["rule"] == ["policy.rules[0]"] * 2
    assert by_name["bytes_out"] == [250] * 2


# --- retention, persistence ------------------------------------------------------------------------


async def test_retention_prunes_with_the_clock(tmp_path: Path) -> None:
    now = [NOW]
    path = str(tmp_path / "a.duckdb")
    config = AnalyticsConfig(path=path, retention=3600.0)
    analytics = Analytics(config, DuckDBSink(path), clock=lambda: now[0])
    await analytics.start()
    analytics.offer([event(10, "fresh"), event(1800, "halfway"), event(7200, "stale")])
    assert {g["client"] for g in (await analytics.ask(Usage.parse({"period": "1d"})))["groups"]} == {
        "fresh", "halfway", "stale",
    }  # fmt: skip
    await analytics.prune()
    assert {g["client"] for g in (await analytics.ask(Usage.parse({"period": "1d"})))["groups"]} == {"fresh", "halfway"}
    now[0] += 1801  # half an hour on: "halfway" is over an hour old
    await analytics.prune()
    assert {g["client"] for g in (await analytics.ask(Usage.parse({"period": "1d"})))["groups"]} == {"fresh"}
    await analytics.close()
    # Kept across a restart; and pruned at start, with the clock two hours on.
    now[0] += 7200
    again = Analytics(config, DuckDBSink(path), clock=lambda: now[0])
    await again.start()
    assert (await again.ask(Usage.parse({"period": "1d"})))["groups"] == []
    await again.close()


async def test_events_persist_across_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "a.duckdb")
    first = Analytics(AnalyticsConfig(path=path), DuckDBSink(path), clock=lambda: NOW)
    await first.start()
    first.offer(TRAFFIC)
    await first.close()  # writes what is queued
    assert first.count("written") == len(TRAFFIC)
    second = Analytics(AnalyticsConfig(path=path), DuckDBSink(path), clock=lambda: NOW)
    await second.start()
    assert sum(g["requests"] for g in (await second.ask(Usage.parse({"period": "7d"})))["groups"]) == len(TRAFFIC)
    await second.close()
    assert (tmp_path / "a.duckdb").stat().st_mode & 0o077 == 0  # it says who called what


# --- the queue under load, a failing database ----------------------------------------------------------


class Recording:
    """A sink that records what it is given, and can be told to fail (for the failure paths only)."""

    backend = "test"

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.failing = False

    async def open(self) -> None:
        pass

    async def write(self, columns: Columns) -> None:
        if self.failing:
            raise SinkError("disk full")
        self.batches.append(len(columns[0]))

    async def prune(self, before: float) -> int:
        return 0

    async def fetch(self, statement: Statement, timeout: float) -> list[Sequence[Any]]:
        return []

    async def close(self) -> None:
        pass


async def test_a_full_queue_drops_and_counts_without_waiting(caplog: pytest.LogCaptureFixture) -> None:
    sink = Recording()
    counts: dict[Any, float] = {}
    analytics = Analytics(AnalyticsConfig(queue_size=10, flush_interval=3600), sink, counts=counts)
    await analytics.start()
    caplog.set_level(logging.WARNING, "mcpgate.analytics")
    analytics.offer([event(1)] * 6)
    analytics.offer([event(1)] * 6)  # 4 fit
    for _ in range(100):
        analytics.offer([event(1)] * 50)  # a burst: all dropped, one log line
    assert analytics.queued == 10 and sink.batches == []  # offer never touched the database
    assert analytics.count("dropped") == counts[("dropped",)] == 2 + 5000
    assert [r.message for r in caplog.records].count(
        "analytics: the queue is full (10 events); dropping events until the next write"
    ) == 1
    await analytics.flush()
    assert sink.batches == [10] and analytics.count("written") == 10
    assert "analytics: 5002 events were dropped while the queue was full" in caplog.messages
    analytics.offer([event(1)] * 11)  # a new burst after the write: said again
    assert caplog.messages.count("analytics: the queue is full (10 events); dropping events until the next write") == 2
    assert analytics.status()["dropped"] == 5003 and analytics.status()["queued"] == 10
    await analytics.close()


async def test_a_failing_database_loses_batches_counted_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    sink = Recording()
    analytics = Analytics(AnalyticsConfig(flush_interval=3600), sink)
    await analytics.start()
    sink.failing = True
    caplog.set_level(logging.INFO, "mcpgate.analytics")
    for _ in range(3):
        analytics.offer([event(1)] * 4)
        await analytics.flush()
    status = analytics.status()
    assert (status["state"], status["failed"], status["written"], status["queued"]) == ("failing", 12, 0, 0)
    assert "disk full" in status["last_error"]
    assert sum("cannot write" in m for m in caplog.messages) == 1  # said once per outage
    sink.failing = False
    analytics.offer([event(1)] * 2)
    await analytics.flush()
    assert analytics.status()["state"] == "ok" and analytics.count("written") == 2
    assert "analytics: writing again" in caplog.messages
    await analytics.close()


async def test_the_writer_flushes_on_its_own(tmp_path: Path) -> None:
    sink = Recording()
    analytics = Analytics(AnalyticsConfig(flush_interval=0.05), sink)
    await analytics.start()
    analytics.offer([event(1)] * 3)
    for _ in range(200):  # bounded: 10 s at most
        if sink.batches:
            break
        await asyncio.sleep(0.05)
    assert sink.batches == [3]
    await analytics.close()


async def test_a_slow_query_is_interrupted() -> None:
    sink = DuckDBSink(":memory:")
    await sink.open()
    slow: Statement = ("SELECT count(*) FROM range(100000000000) a WHERE a.range % 7 = $1", [3])
    with pytest.raises(SinkError, match=r"longer than 0\.2s"):
        await asyncio.wait_for(sink.fetch(slow, 0.2), 30)
    assert await sink.fetch(("SELECT 42", []), 5) == [(42,)]  # the connection is still usable
    await sink.close()


async def test_a_file_held_by_another_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "held.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, sys
            con = duckdb.connect({str(path)!r})
            print("held", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with pytest.raises(SinkError) as caught:
            await DuckDBSink(str(path)).open()
        assert caught.value.retry is False
        assert "held by another process" in str(caught.value) and "backend: postgres" in str(caught.value)
    finally:
        holder.kill()
        holder.communicate()  # and close its pipes


async def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="does not exist") as caught:
        await DuckDBSink(str(tmp_path / "nowhere" / "a.duckdb")).open()
    assert caught.value.retry is False


# --- configuration ----------------------------------------------------------------------------------------

BASE = "upstreams: {a: {url: 'http://127.0.0.1:9/mcp'}}\n"


def test_the_section_and_its_defaults() -> None:
    config = load_config(text=BASE + "analytics: {retention: 7d, flush_interval: 250ms}\n")
    assert config.analytics == AnalyticsConfig(retention=7 * 86400.0, flush_interval=0.25)
    assert load_config(text=BASE + "analytics: {}\n").analytics == AnalyticsConfig()
    assert load_config(text=BASE).analytics is None
    days = load_config(text=BASE + "server: {shutdown_timeout: 1d2h}\n")
    assert days.server.shutdown_timeout == 26 * 3600.0


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("server: {workers: 2}\nsessions: {backend: redis}\nanalytics: {}\n", "analytics.backend", "held by one"),
        ("analytics: {backend: postgres}\n", "analytics.backend", "store.backend postgres"),
        ("analytics: {backend: postgres, path: a.duckdb}\n", "analytics.path", "only applies to backend duckdb"),
        ("analytics: {retention: 0s}\n", "analytics.retention", "greater than zero"),
        ("analytics: {queue_size: 0}\n", "analytics.queue_size", "1"),
        ("analytics: {backend: sqlite}\n", "analytics.backend", "duckdb"),
    ],
)
def test_what_validate_refuses(text: str, where: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(text=BASE + text)
    issues = str(caught.value)
    assert where in issues and words in issues, issues


def test_postgres_analytics_with_a_postgres_store_is_valid() -> None:
    text = BASE + "store: {backend: postgres, url: 'postgresql://u@db/m'}\nanalytics: {backend: postgres}\n"
    assert load_config(text=text).analytics == AnalyticsConfig(backend="postgres")


def test_duckdb_missing_is_a_validation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from mcpgate.config import messages

    monkeypatch.setattr(messages, "duckdb_installed", lambda: False)
    with pytest.raises(ConfigError) as caught:
        load_config(text=BASE + "analytics: {}\n")
    assert "pip install 'mcpgate[analytics]'" in str(caught.value)


def test_the_section_changes_at_restart_only() -> None:
    old = load_config(text=BASE + "analytics: {}\n")
    new = load_config(text=BASE + "analytics: {retention: 1d}\n")
    assert restart_only(old, new) == ["analytics"]


async def test_any_string_a_client_sends_is_kept_as_it_was(tmp_path: Path) -> None:
    """Tool names and client ids travel through a JSON batch file: quotes, newlines, NULs and
    non-BMP characters come back unchanged, a lone surrogate (which UTF-8 cannot hold) replaced."""
    path = str(tmp_path / "a.duckdb")
    analytics = Analytics(AnalyticsConfig(path=path), DuckDBSink(path), clock=lambda: NOW)
    await analytics.start()
    odd = ['say "hi"\n\\', "naïve 😀\x00", "", "'; DROP TABLE x; --"]
    analytics.offer([event(1, tool=name, method="tools/call") for name in odd])
    tools = {t["tool"]: t["invocations"] for t in (await analytics.ask(Tools.parse({})))["tools"]}
    assert tools == dict.fromkeys(odd, 1)
    analytics.offer([event(1, client="bad\ud800client")])
    clients = {g["client"] for g in (await analytics.ask(Usage.parse({})))["groups"]}
    assert "bad?client" in clients or "bad\ufffdclient" in clients
    assert analytics.count("failed") == 0
    sink = analytics.sink
    assert isinstance(sink, DuckDBSink) and sink._folder is not None
    folder = Path(sink._folder)
    assert folder.stat().st_mode & 0o777 == 0o700 and list(folder.iterdir()) == []  # private, emptied
    await analytics.close()
    assert not folder.exists()


async def test_a_large_backlog_is_written_in_several_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    import mcpgate.analytics

    monkeypatch.setattr(mcpgate.analytics, "MAX_BATCH", 4)
    sink = Recording()
    analytics = Analytics(AnalyticsConfig(flush_interval=3600), sink)
    await analytics.start()
    analytics.offer([event(i) for i in range(10)])
    await analytics.flush()
    assert sink.batches == [4, 4, 2] and analytics.count("written") == 10 and analytics.queued == 0
    await analytics.close()
