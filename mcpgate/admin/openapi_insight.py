"""The OpenAPI description of the status and analytics paths (``insight``), joined into ``openapi``'s.

Their parameters are written once here and their limits read from ``queries``, so that the
description says what the parser accepts; the answers' schemas follow ``queries``' ``answer``s.
"""

from __future__ import annotations

from typing import Any, Final

from mcpgate.admin.api import PREFIX
from mcpgate.analytics.queries import GROUPS, MAX_POINTS, MAX_ROWS, METRICS, REJECTIONS

_SPAN: Final = "^[0-9]{1,7}[smhdw]$"
_NUMBER: Final = {"type": "number"}
_COUNT: Final = {"type": "integer", "minimum": 0}
_MS: Final = {"type": ["number", "null"], "description": "Milliseconds; null without requests."}
_TEXT: Final = {"type": "string"}
_MAYBE: Final = {"type": ["string", "null"]}
_TIME: Final = {"type": "string", "format": "date-time"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": "#/components/schemas/" + name}


def _param(name: str, description: str, schema: dict[str, Any], where: str = "query") -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "description": description, "schema": schema}


PARAMETERS: Final = {
    "Period": _param(
        "period",
        "How far back: a number and a unit (s, m, h, d, w), such as 30m, 24h or 7d; a year (366d) at most.",
        {"type": "string", "pattern": _SPAN, "default": "24h"},
    ),
    "GroupBy": _param("group_by", "What to group by.", {"type": "string", "enum": list(GROUPS), "default": "client"}),
    "Bucket": _param(
        "bucket",
        f"The width of one point, like period; at most the period, and at most {MAX_POINTS} points in all. "
        "By default the smallest of 10s, 1m, 5m, 15m, 1h, 6h, 1d, 1w giving at most 120 points.",
        {"type": "string", "pattern": _SPAN},
    ),
    "Metric": _param("metric", "What each point counts.", {"type": "string", "enum": list(METRICS)}),
    "Server": _param("server", "Only this upstream's requests.", {"type": "string", "minLength": 1, "maxLength": 256}),
    "Tool": _param("tool", "Only calls of this tool.", {"type": "string", "minLength": 1, "maxLength": 256}),
    "ToolsLimit": _param("limit", "How many tools.", {"type": "integer", "minimum": 1, "maximum": MAX_ROWS}),
    "RejectionsLimit": _param("limit", "How many events.", {"type": "integer", "minimum": 1, "maximum": MAX_ROWS}),
    "Reason": _param("reason", "Only refusals of this reason.", {"type": "string", "enum": list(REJECTIONS)}),
    "ClientId": _param(
        "client_id", "The client, as authentication named it.", {"type": "string", "maxLength": 256}, "path"
    ),
}


def _object(description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "description": description, "required": list(properties), "properties": properties}


_STATS: Final = {
    "requests": _COUNT,
    "errors": {**_COUNT, "description": "Answered with an HTTP error, or refused by the gateway."},
    "p50_ms": _MS,
    "p95_ms": _MS,
    "bytes_in": _COUNT,
    "bytes_out": _COUNT,
}
_WINDOW: Final = {"period": _TEXT, "since": _TIME, "until": _TIME}


def _shown(description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return _object(description, {**_WINDOW, **properties})


SCHEMAS: Final = {
    "Status": _object(
        "The gateway as it runs.",
        {
            "version": _TEXT,
            "started": {**_NUMBER, "description": "Epoch seconds."},
            "uptime_s": _NUMBER,
            "upstreams": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "transport", "state"],
                    "properties": {
                        "name": _TEXT,
                        "transport": _TEXT,
                        "state": {**_TEXT, "description": "healthy, unhealthy, unknown, or not_served."},
                        "consecutive_failures": _COUNT,
                        "last_error": _MAYBE,
                        "latency_ms": {"type": ["number", "null"], "description": "The last heartbeat's."},
                        "checked_at": {"type": ["number", "null"]},
                        "protocol": _MAYBE,
                    },
                },
            },
            "sessions": _object(
                "Open gateway sessions.",
                {"total": _COUNT, "by_endpoint": {"type": "object", "additionalProperties": _COUNT}},
            ),
            "store": {"type": "object"},
            "analytics": {
                "oneOf": [
                    _object(
                        "The analytics writer.",
                        {
                            "backend": _TEXT,
                            "state": {**_TEXT, "description": "ok, failing, or starting."},
                            "queued": _COUNT,
                            "written": _COUNT,
                            "dropped": {**_COUNT, "description": "Events lost because the queue was full."},
                            "failed": {**_COUNT, "description": "Events the database refused."},
                            "last_error": _MAYBE,
                        },
                    ),
                    {"type": "null", "description": "Analytics are not configured."},
                ]
            },
        },
    ),
    "Usage": _shown(
        f"One row per group, most requests first; at most {MAX_ROWS} (truncated says when there were more).",
        {
            "group_by": {"type": "string", "enum": list(GROUPS)},
            "totals": _object("The whole period (with group_by tool: every tool call).", dict(_STATS)),
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"client": _TEXT, "server": _MAYBE, "tool": _TEXT, **_STATS},
                },
            },
            "truncated": {"type": "boolean"},
        },
    ),
    "ClientUsage": _shown(
        "One client's totals, then per upstream and per tool.",
        {
            "client": _TEXT,
            "totals": _object("All the client's requests.", dict(_STATS)),
            "servers": {"type": "array", "items": {"type": "object", "properties": {"server": _MAYBE, **_STATS}}},
            "tools": {
                "type": "array",
                "items": {"type": "object", "properties": {"server": _MAYBE, "tool": _TEXT, **_STATS}},
            },
            "truncated": {"type": "boolean"},
        },
    ),
    "ToolPopularity": _shown(
        "Tools by invocations (tools/call), most called first.",
        {
            "tools": {
                "type": "array",
                "items": _object(
                    "One tool of one upstream.",
                    {
                        "server": _MAYBE,
                        "tool": _TEXT,
                        "invocations": _COUNT,
                        "unique_clients": _COUNT,
                        "p95_ms": _MS,
                        "error_rate": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                ),
            }
        },
    ),
    "TimeSeries": _shown(
        "Every bucket from the start of the period to now, aligned to the epoch; empty ones are 0.",
        {
            "metric": {"type": "string", "enum": list(METRICS)},
            "bucket": _TEXT,
            "points": {"type": "array", "items": _object("One bucket.", {"timestamp": _TIME, "value": _NUMBER})},
        },
    ),
    "Rejections": _shown(
        "Requests the gateway refused, newest first.",
        {
            "rejections": {
                "type": "array",
                "items": _object(
                    "One refused request.",
                    {
                        "time": _TIME,
                        "request_id": _TEXT,
                        "client_id": _TEXT,
                        "server": _MAYBE,
                        "method": _MAYBE,
                        "item": _MAYBE,
                        "status": _COUNT,
                        "reason": {"type": "string", "enum": list(REJECTIONS)},
                        "rule": {**_MAYBE, "description": "The policy rule, or the rate limit's."},
                    },
                ),
            }
        },
    ),
}


def paths(operation: Any, answer: Any, problem: Any) -> dict[str, Any]:
    """The paths, made with ``openapi``'s own builders (passed in: that module imports this one)."""

    def ask(operation_id: str, summary: str, description: str, schema: str, *params: str) -> dict[str, Any]:
        return {
            "get": operation(
                operation_id,
                "Analytics",
                summary,
                description,
                {
                    "200": answer("The answer.", schema),
                    "400": problem("A bad parameter; errors names each one."),
                    "404": problem("Analytics are not configured."),
                    "503": problem("The analytics database did not answer in time, or is unreachable."),
                },
                parameters=tuple({"$ref": "#/components/parameters/" + p} for p in params),
            )
        }

    analytics = f"{PREFIX}/analytics"
    return {
        f"{PREFIX}/status": {
            "get": operation(
                "getStatus",
                "Status",
                "The gateway's status",
                "Upstream health and latency, open sessions, the store and the analytics writer.",
                {"200": answer("The status.", "Status")},
            )
        },
        f"{analytics}/usage": ask(
            "getUsage", "Usage by group", "Requests, errors, latency and bytes per client, upstream or tool.",
            "Usage", "Period", "GroupBy",
        ),
        f"{analytics}/usage/{{client_id}}": {
            "parameters": [{"$ref": "#/components/parameters/ClientId"}],
            **ask(
                "getClientUsage", "One client's usage", "Its totals, and per upstream and per tool.",
                "ClientUsage", "Period",
            ),
        },
        f"{analytics}/tools": ask(
            "getToolPopularity", "Tool popularity", "Invocations, unique clients, p95 latency and error rate.",
            "ToolPopularity", "Period", "ToolsLimit",
        ),
        f"{analytics}/timeseries": ask(
            "getTimeSeries", "A metric over time", "Requests, errors or p95 latency per bucket.",
            "TimeSeries", "Period", "Bucket", "Metric", "Server", "Tool",
        ),
        f"{analytics}/rejections": ask(
            "getRejections", "Recent refusals", "Policy denials, rate-limit rejections and failed authentication.",
            "Rejections", "Period", "RejectionsLimit", "Reason",
        ),
    }  # fmt: skip
