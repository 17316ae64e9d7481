"""The analytics questions (DESIGN section 10): their parameters, their SQL, their answers. No I/O.

Each question is read from the query string into a frozen value, or refused with every bad
parameter named (``BadQuery``, a 400). Its SQL is a fixed text: what a request chooses (a group,
a metric, a filter) picks among the texts below or becomes a bound parameter, never a piece of
SQL. The same text runs on DuckDB and on PostgreSQL: both number parameters ``$1``, know
``percentile_cont ... WITHIN GROUP`` and ``FILTER``, and interpolate percentiles the same way, so
both backends give the same answers to the same events.

Ties are broken by byte order (``COLLATE "C"``), which both engines have whatever the database's
locale, so that the same events give the same rows in the same order on either.

Every answer is bounded: a period of at most a year, at most ``MAX_ROWS`` groups (``truncated``
says when more existed), at most ``MAX_POINTS`` buckets in a series.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

TABLE: Final = "mcpgate_analytics_events"
MAX_PERIOD: Final = 366 * 86400.0
MAX_ROWS: Final = 1000
MAX_POINTS: Final = 1000
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SPAN = re.compile(r"^(\d{1,7})([smhdw])$")
ERROR: Final = "(status >= 400 OR reason IS NOT NULL)"  # refused by the gateway, or failed
# The gateway's refusals, as the dashboard lists them: policy denials, rate limits, bad credentials.
REJECTIONS: Final = ("forbidden", "rate_limited", "unauthenticated", "invalid_token", "insufficient_scope")
GROUPS: Final = {"client": ("client_id",), "server": ("server",), "tool": ("server", "item")}
METRICS: Final = ("requests", "errors", "p95_ms")
# Columns, in the order a batch is written; the audit event's fields, less the redacted body.
COLUMNS: Final = (
    ("ts", "DOUBLE PRECISION"),
    ("request_id", "VARCHAR"),
    ("client_id", "VARCHAR"),
    ("auth", "VARCHAR"),
    ("roles", "VARCHAR"),
    ("endpoint", "VARCHAR"),
    ("server", "VARCHAR"),
    ("http_method", "VARCHAR"),
    ("method", "VARCHAR"),
    ("item_kind", "VARCHAR"),
    ("item", "VARCHAR"),
    ("decision", "VARCHAR"),
    ("rule", "VARCHAR"),
    ("rate_limit", "VARCHAR"),
    ("rate_limit_rule", "VARCHAR"),
    ("status", "INTEGER"),
    ("error_code", "INTEGER"),
    ("reason", "VARCHAR"),
    ("duration_ms", "DOUBLE PRECISION"),
    ("upstream_ms", "DOUBLE PRECISION"),
    ("bytes_in", "BIGINT"),
    ("bytes_out", "BIGINT"),
)
INDEX: Final = f"{TABLE}_ts"
CREATE: Final = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ({', '.join(f'{name} {kind}' for name, kind in COLUMNS)})",
    f"CREATE INDEX IF NOT EXISTS {INDEX} ON {TABLE} (ts)",  # PostgreSQL's; DuckDB's zone maps do this
)
PRUNE: Final = f"DELETE FROM {TABLE} WHERE ts < $1"
_STATS: Final = (
    f"count(*), count(*) FILTER (WHERE {ERROR}), "
    "percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms), "
    "percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms), "
    "coalesce(sum(bytes_in), 0)::BIGINT, coalesce(sum(bytes_out), 0)::BIGINT"
)

_BY_TOOL: Final = 'server COLLATE "C" NULLS LAST, item COLLATE "C" NULLS LAST'

Statement = tuple[str, list[Any]]


class BadQuery(ValueError):
    """Every parameter that was wrong, each with what it must be (an admin API 400)."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['parameter']}: {e['detail']}" for e in errors))
        self.errors = errors


def span(text: str) -> float | None:
    """``30m``, ``24h``, ``7d``, ``2w`` (or ``90s``) as seconds; None for anything else."""
    match = _SPAN.match(text.strip())
    return None if match is None else float(int(match[1]) * _UNITS[match[2]])


def iso(ts: float) -> str:
    """ISO 8601 in UTC, to the millisecond, as the audit log writes times."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Reader:
    """Reads a query string's parameters, collecting every error instead of stopping at the first."""

    def __init__(self, query: Mapping[str, str], known: Sequence[str]) -> None:
        self.query = query
        self.errors: list[dict[str, str]] = []
        for name in query:
            if name not in known:
                self.fail(name, f"unknown parameter (known: {', '.join(known)})")

    def fail(self, name: str, detail: str) -> None:
        self.errors.append({"parameter": name, "detail": detail})

    def span(self, name: str, default: str, most: float = MAX_PERIOD) -> tuple[float, str]:
        text = self.query.get(name, default)
        seconds = span(text)
        if seconds is None or seconds <= 0:
            self.fail(name, "must be a number and a unit, like 90s, 30m, 24h, 7d or 2w")
            return span(default) or 1.0, default
        if seconds > most:
            self.fail(name, "may be a year (366d) at most")
            return span(default) or 1.0, default
        return seconds, text.strip()

    def choice(self, name: str, default: str, choices: Sequence[str]) -> str:
        value = self.query.get(name, default)
        if value not in choices:
            self.fail(name, f"must be one of {', '.join(choices)}")
            return default
        return value

    def number(self, name: str, default: int, most: int) -> int:
        text = self.query.get(name)
        if text is None:
            return default
        if not text.isdigit() or not 1 <= int(text) <= most:
            self.fail(name, f"must be a whole number from 1 to {most}")
            return default
        return int(text)

    def text(self, name: str) -> str | None:
        value = self.query.get(name)
        if value is not None and not 1 <= len(value) <= 256:
            self.fail(name, "must be 1 to 256 characters")
            return None
        return value

    def done(self) -> None:
        if self.errors:
            raise BadQuery(self.errors)


class _Where:
    """A WHERE clause whose values are all bound parameters, numbered as they are added."""

    def __init__(self, since: float, until: float) -> None:
        self.params: list[Any] = [since, until]
        self.terms = ["ts >= $1", "ts < $2"]

    def equals(self, column: str, value: Any) -> None:
        self.params.append(value)
        self.terms.append(f"{column} = ${len(self.params)}")

    def term(self, sql: str) -> None:
        self.terms.append(sql)

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def __str__(self) -> str:
        return " AND ".join(self.terms)


def _ms(value: float | None) -> float | None:
    # The nudge: the engines' percentile_cont can differ in the last bits of a double, which
    # round() would turn into 0.001 apart whenever the fourth decimal is a 5 (durations have three).
    return None if value is None else round(float(value) + 1e-9, 3)


def _stats(row: Sequence[Any]) -> dict[str, Any]:
    """The six ``_STATS`` columns of a row, as an answer shows them."""
    requests, errors, p50, p95, bytes_in, bytes_out = row
    return {
        "requests": int(requests),
        "errors": int(errors),
        "p50_ms": _ms(p50),
        "p95_ms": _ms(p95),
        "bytes_in": int(bytes_in),
        "bytes_out": int(bytes_out),
    }


@dataclass(frozen=True, slots=True)
class Window:
    """The period a question covers: the last ``seconds`` before ``until``."""

    text: str
    seconds: float

    def bounds(self, now: float) -> tuple[float, float]:
        return now - self.seconds, now + 0.001  # an event of this very millisecond is in

    def shown(self, now: float) -> dict[str, Any]:
        return {"period": self.text, "since": iso(now - self.seconds), "until": iso(now)}


Fetch = Callable[[Statement], Any]  # runs a statement, gives its rows (awaited by the caller)


@dataclass(frozen=True, slots=True)
class Usage:
    """``GET /analytics/usage``: per client, server or tool, the requests and how they went, and the
    totals of the period (every request, or every tool call when grouped by tool)."""

    window: Window
    group_by: str

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Usage:
        read = _Reader(query, ("period", "group_by"))
        seconds, text = read.span("period", "24h")
        group_by = read.choice("group_by", "client", tuple(GROUPS))
        read.done()
        return cls(Window(text, seconds), group_by)

    def statements(self, now: float) -> list[Statement]:
        where = _Where(*self.window.bounds(now))
        if self.group_by == "tool":
            where.term("method = 'tools/call' AND item IS NOT NULL")
        columns = GROUPS[self.group_by]
        keys, order = ", ".join(columns), ", ".join(f'{column} COLLATE "C" NULLS LAST' for column in columns)
        limit = where.bind(MAX_ROWS + 1)
        sql = (
            f"SELECT {keys}, {_STATS} FROM {TABLE} WHERE {where} GROUP BY {keys} "
            f"ORDER BY count(*) DESC, {order} LIMIT {limit}"
        )
        return [(sql, where.params), (f"SELECT {_STATS} FROM {TABLE} WHERE {where}", where.params[:-1])]

    def answer(self, now: float, results: list[list[Sequence[Any]]]) -> dict[str, Any]:
        (rows, totals), width = results, len(GROUPS[self.group_by])
        groups = []
        for row in rows[:MAX_ROWS]:
            group: dict[str, Any] = {"client": row[0]} if self.group_by == "client" else {"server": row[0]}
            if self.group_by == "tool":
                group["tool"] = row[1]
            groups.append(group | _stats(row[width:]))
        truncated = len(rows) > MAX_ROWS
        return {
            **self.window.shown(now),
            "group_by": self.group_by,
            "totals": _stats(totals[0]),
            "groups": groups,
            "truncated": truncated,
        }


@dataclass(frozen=True, slots=True)
class ClientUsage:
    """``GET /analytics/usage/{client_id}``: one client's totals, and per server and per tool."""

    window: Window
    client_id: str

    @classmethod
    def parse(cls, client_id: str, query: Mapping[str, str]) -> ClientUsage:
        read = _Reader(query, ("period",))
        seconds, text = read.span("period", "24h")
        if not 1 <= len(client_id) <= 256:
            read.fail("client_id", "must be 1 to 256 characters")
        read.done()
        return cls(Window(text, seconds), client_id)

    def statements(self, now: float) -> list[Statement]:
        where = _Where(*self.window.bounds(now))
        where.equals("client_id", self.client_id)
        tools = f"{where} AND method = 'tools/call' AND item IS NOT NULL"
        limit = MAX_ROWS + 1
        return [
            (f"SELECT {_STATS} FROM {TABLE} WHERE {where}", where.params),
            (
                f"SELECT server, {_STATS} FROM {TABLE} WHERE {where} GROUP BY server "
                f'ORDER BY count(*) DESC, server COLLATE "C" NULLS LAST LIMIT {limit}',
                where.params,
            ),
            (
                f"SELECT server, item, {_STATS} FROM {TABLE} WHERE {tools} GROUP BY server, item "
                f"ORDER BY count(*) DESC, {_BY_TOOL} LIMIT {limit}",
                where.params,
            ),
        ]

    def answer(self, now: float, results: list[list[Sequence[Any]]]) -> dict[str, Any]:
        totals, servers, tools = results
        return {
            **self.window.shown(now),
            "client": self.client_id,
            "totals": _stats(totals[0]),
            "servers": [{"server": row[0]} | _stats(row[1:]) for row in servers[:MAX_ROWS]],
            "tools": [{"server": row[0], "tool": row[1]} | _stats(row[2:]) for row in tools[:MAX_ROWS]],
            "truncated": len(servers) > MAX_ROWS or len(tools) > MAX_ROWS,
        }


@dataclass(frozen=True, slots=True)
class Tools:
    """``GET /analytics/tools``: the most called tools, with how many clients call them and how well."""

    window: Window
    limit: int

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Tools:
        read = _Reader(query, ("period", "limit"))
        seconds, text = read.span("period", "24h")
        limit = read.number("limit", 10, MAX_ROWS)
        read.done()
        return cls(Window(text, seconds), limit)

    def statements(self, now: float) -> list[Statement]:
        where = _Where(*self.window.bounds(now))
        where.term("method = 'tools/call' AND item IS NOT NULL")
        limit = where.bind(self.limit)
        sql = (
            "SELECT server, item, count(*), count(DISTINCT client_id), "
            f"percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms), count(*) FILTER (WHERE {ERROR}) "
            f"FROM {TABLE} WHERE {where} GROUP BY server, item ORDER BY count(*) DESC, {_BY_TOOL} LIMIT {limit}"
        )
        return [(sql, where.params)]

    def answer(self, now: float, results: list[list[Sequence[Any]]]) -> dict[str, Any]:
        tools = [
            {
                "server": server,
                "tool": tool,
                "invocations": int(calls),
                "unique_clients": int(clients),
                "p95_ms": _ms(p95),
                "error_rate": round(int(errors) / int(calls), 4),
            }
            for server, tool, calls, clients, p95, errors in results[0]
        ]
        return {**self.window.shown(now), "tools": tools}


_BUCKETS: Final = (10, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)


@dataclass(frozen=True, slots=True)
class Series:
    """``GET /analytics/timeseries``: one metric per bucket, every bucket present (0 when empty).

    Buckets are aligned to the epoch, not to the moment of asking, so that a dashboard refreshing
    every few seconds sees the same buckets fill rather than a new set each time.
    """

    window: Window
    bucket: float
    bucket_text: str
    metric: str
    server: str | None
    tool: str | None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Series:
        read = _Reader(query, ("period", "bucket", "metric", "server", "tool"))
        before = len(read.errors)
        seconds, text = read.span("period", "24h")
        default = next((b for b in _BUCKETS if seconds / b <= 120), _BUCKETS[-1])
        bucket, bucket_text = read.span("bucket", _bucket_text(default), most=seconds)
        if len(read.errors) == before and math.ceil(seconds / bucket) + 1 > MAX_POINTS:
            read.fail("bucket", f"gives more than {MAX_POINTS} points over {text}: choose a larger bucket")
        metric = read.choice("metric", "requests", METRICS)
        server, tool = read.text("server"), read.text("tool")
        read.done()
        return cls(Window(text, seconds), bucket, bucket_text, metric, server, tool)

    def start(self, now: float) -> float:
        return math.floor((now - self.window.seconds) / self.bucket) * self.bucket

    def statements(self, now: float) -> list[Statement]:
        start = self.start(now)
        where = _Where(start, now + 0.001)
        if self.server is not None:
            where.equals("server", self.server)
        if self.tool is not None:
            where.equals("item", self.tool)
            where.term("method = 'tools/call'")
        width = where.bind(self.bucket)
        value = {
            "requests": "count(*)",
            "errors": f"count(*) FILTER (WHERE {ERROR})",
            "p95_ms": "percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms)",
        }[self.metric]
        sql = f"SELECT floor((ts - $1) / {width})::BIGINT, {value} FROM {TABLE} WHERE {where} GROUP BY 1"
        return [(sql, where.params)]

    def answer(self, now: float, results: list[list[Sequence[Any]]]) -> dict[str, Any]:
        start = self.start(now)
        count = math.floor((now - start) / self.bucket) + 1
        values = {int(index): value for index, value in results[0]}
        points = []
        for index in range(count):
            value = values.get(index)
            shown = (_ms(value) or 0.0) if self.metric == "p95_ms" else int(value or 0)
            points.append({"timestamp": iso(start + index * self.bucket), "value": shown})
        filters = {key: value for key, value in (("server", self.server), ("tool", self.tool)) if value is not None}
        return {
            **self.window.shown(now),
            "since": iso(start),  # the first bucket's start: a little before the period's
            "metric": self.metric,
            "bucket": self.bucket_text,
            **filters,
            "points": points,
        }


def _bucket_text(seconds: float) -> str:
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{int(seconds)}s"


@dataclass(frozen=True, slots=True)
class Rejections:
    """``GET /analytics/rejections``: the latest requests the gateway refused (policy, rate limit,
    credentials), newest first, for the dashboard's "recent denials"."""

    window: Window
    limit: int
    reason: str | None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Rejections:
        read = _Reader(query, ("period", "limit", "reason"))
        seconds, text = read.span("period", "24h")
        limit = read.number("limit", 20, MAX_ROWS)
        reason = query.get("reason")
        if reason is not None and reason not in REJECTIONS:
            read.fail("reason", f"must be one of {', '.join(REJECTIONS)}")
        read.done()
        return cls(Window(text, seconds), limit, reason)

    def statements(self, now: float) -> list[Statement]:
        where = _Where(*self.window.bounds(now))
        if self.reason is not None:
            where.equals("reason", self.reason)
        else:
            where.term(f"reason IN ({', '.join(where.bind(r) for r in REJECTIONS)})")
        limit = where.bind(self.limit)
        sql = (
            "SELECT ts, request_id, client_id, server, method, item, status, reason, rule, rate_limit_rule "
            f'FROM {TABLE} WHERE {where} ORDER BY ts DESC, request_id COLLATE "C" LIMIT {limit}'
        )
        return [(sql, where.params)]

    def answer(self, now: float, results: list[list[Sequence[Any]]]) -> dict[str, Any]:
        names = ("request_id", "client_id", "server", "method", "item", "status", "reason")
        events = []
        for ts, *rest in results[0]:
            event = {"time": iso(ts)} | dict(zip(names, rest[:7], strict=True))
            event["rule"] = rest[8] if event["reason"] == "rate_limited" else rest[7]  # the limit's, or the policy's
            events.append(event)
        return {**self.window.shown(now), "rejections": events}


Question = Usage | ClientUsage | Tools | Series | Rejections
