"""Prometheus metrics, in a registry of the gateway's own, fed from the audit event.

Every label value is bounded: servers are the configured upstream names (anything else is
``-``), methods the MCP method names (anything else is ``other``), and tool and client names
are kept up to ``observability.metrics.max_label_values`` distinct values, after which they are
counted as ``__other__``, so no client can make the series count grow without end. Children of
labelled metrics are cached: a request costs a few dictionary lookups and additions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import exposition as text_exposition
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.openmetrics import exposition as openmetrics_exposition

from mcpgate import __version__
from mcpgate.observability.audit import AuditEvent
from mcpgate.policy import MCP_METHODS

OTHER: Final = "__other__"
NO_SERVER: Final = "-"
BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
KNOWN_METHODS: Final = frozenset({*MCP_METHODS, "batch", "GET", "DELETE", "notifications/progress"})
AUTH_REASONS: Final = frozenset({"unauthenticated", "invalid_token", "insufficient_scope", "auth_unavailable"})
TEXT: Final = text_exposition.CONTENT_TYPE_LATEST
OPENMETRICS: Final = openmetrics_exposition.CONTENT_TYPE_LATEST


class BoundedLabel:
    """Values as they come, until ``limit`` distinct ones were seen; later ones become __other__."""

    __slots__ = ("_limit", "_seen")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(value)
        return value


class _Live:
    """Values read at scrape time from the running gateway: upstreams up, sessions, streams."""

    def __init__(self, read: Callable[[], Mapping[str, Iterable[tuple[tuple[str, ...], float]]]]) -> None:
        self._read = read

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[GaugeMetricFamily]:
        values = self._read()
        families = [
            ("mcpgate_upstream_up", "1 when the upstream's heartbeat says healthy", ["server"]),
            ("mcpgate_active_sessions", "Gateway sessions open, by endpoint", ["server"]),
            ("mcpgate_active_streams", "Long-lived streams (GET, listen) open, by upstream", ["server"]),
        ]
        out = []
        for name, documentation, labels in families:
            family = GaugeMetricFamily(name, documentation, labels=labels)
            for label_values, value in values.get(name, ()):
                family.add_metric(list(label_values), value)
            out.append(family)
        return out


class Metrics:
    def __init__(self, servers: Iterable[str], max_label_values: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._servers = frozenset(servers)
        self._tool = BoundedLabel(max_label_values)
        self._client = BoundedLabel(max_label_values)
        r = self.registry
        self.requests = Counter("mcpgate_requests", "MCP requests answered", ["server", "method", "status"], registry=r)
        self.duration = Histogram(
            "mcpgate_request_duration_seconds", "Time to answer", ["server", "method"], buckets=BUCKETS, registry=r
        )
        self.upstream_duration = Histogram(
            "mcpgate_upstream_request_duration_seconds",
            "Time until the upstream's answer began",
            ["server", "method"],
            buckets=BUCKETS,
            registry=r,
        )
        self.tool_calls = Counter(
            "mcpgate_tool_calls", "tools/call requests", ["server", "tool", "outcome"], registry=r
        )
        self.rate_limited = Counter(
            "mcpgate_rate_limit_rejections", "Requests refused by a rate limit", ["client", "server"], registry=r
        )
        self.policy_denials = Counter(
            "mcpgate_policy_denials", "Requests the policy denied", ["client", "server", "tool"], registry=r
        )
        self.auth_failures = Counter(
            "mcpgate_auth_failures", "Requests that failed authentication", ["reason"], registry=r
        )
        self.upstream_errors = Counter(
            "mcpgate_upstream_errors", "Upstream failures, by kind", ["server", "kind"], registry=r
        )
        Gauge("mcpgate_build_info", "The running version", ["version"], registry=r).labels(__version__).set(1)
        self._children: dict[tuple[Any, ...], Any] = {}

    def watch(self, read: Callable[[], Mapping[str, Iterable[tuple[tuple[str, ...], float]]]]) -> None:
        self.registry.register(_Live(read))

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, event: AuditEvent) -> None:
        server = event.server if event.server in self._servers else NO_SERVER
        method = (
            event.method if event.method in KNOWN_METHODS else (event.http_method if event.method is None else "other")
        )
        self._child(self.requests, server, method, str(event.status)).inc()
        self._child(self.duration, server, method).observe(event.duration_ms / 1000)
        if event.upstream_ms is not None:
            self._child(self.upstream_duration, server, method).observe(event.upstream_ms / 1000)
        reason = event.reason
        if event.method == "tools/call":
            outcome = (
                "ok" if reason is None and event.status < 400 else ("denied" if reason == "forbidden" else "error")
            )
            self._child(self.tool_calls, server, self._tool(event.item or ""), outcome).inc()
        if reason == "forbidden" or event.decision == "shadow-deny":
            self._child(self.policy_denials, self._client(event.client_id), server, self._tool(event.item or "")).inc()
        if reason is None or reason == "forbidden":
            return
        if reason == "rate_limited":
            self._child(self.rate_limited, self._client(event.client_id), server).inc()
        elif reason in AUTH_REASONS:
            self._child(self.auth_failures, reason).inc()
        elif reason.startswith("upstream_"):
            self._child(self.upstream_errors, server, reason.removeprefix("upstream_")).inc()

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition the scraper asked for: OpenMetrics if it says so, else Prometheus text."""
        if "application/openmetrics-text" in accept:
            return openmetrics_exposition.generate_latest(self.registry), OPENMETRICS  # type: ignore[no-untyped-call]
        return text_exposition.generate_latest(self.registry), TEXT
