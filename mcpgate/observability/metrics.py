"""Prometheus metrics, in a registry of the gateway's own, fed from the audit event.

Every label value is bounded: servers are the configured upstream names (anything else is
``-``), methods the MCP method names (anything else is ``other``), and tool and client names
are kept up to ``observability.metrics.max_label_values`` distinct values, after which they are
counted as ``__other__``, so no client can make the series count grow without end. Children of
labelled metrics are cached: a request costs a few dictionary lookups and additions.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_exposition
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.openmetrics import exposition as openmetrics_exposition

from mcpgate import __version__
from mcpgate.observability.audit import AuditEvent
from mcpgate.observability.shared import SUMMED_LIVE, Snapshot
from mcpgate.policy import MCP_METHODS

Labels = tuple[str | int, ...]  # label values; an int (a status) is made a string at scrape time
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


class _Collector:
    """Counters and histograms as plain dicts of ints, turned into metric families at scrape time.

    prometheus_client's own metric objects take a lock on every increment; the gateway updates
    them from one event loop, once per request, so plain integers do, at a fraction of the cost.
    """

    def __init__(self, live: Callable[[], Mapping[str, Iterable[tuple[tuple[str, ...], float]]]] | None) -> None:
        self.counters: dict[str, tuple[str, list[str], dict[Labels, float]]] = {}
        self.histograms: dict[str, tuple[str, list[str], dict[Labels, list[float]]]] = {}
        self.live = live
        self.peers: Callable[[], list[Snapshot]] | None = None  # other workers' numbers (``shared``)

    def counter(self, name: str, documentation: str, labels: list[str]) -> dict[Labels, float]:
        values: dict[Labels, float] = {}
        self.counters[name] = (documentation, labels, values)
        return values

    def histogram(self, name: str, documentation: str, labels: list[str]) -> dict[Labels, list[float]]:
        values: dict[Labels, list[float]] = {}  # bucket counts (not cumulative), then the sum
        self.histograms[name] = (documentation, labels, values)
        return values

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        peers = self.peers() if self.peers is not None else []
        for name, (documentation, labels, values) in self.counters.items():
            counter = CounterMetricFamily(name, documentation, labels=labels)
            for label_values, total in _summed(values, [p.counters.get(name, []) for p in peers]).items():
                counter.add_metric([str(value) for value in label_values], total)
            yield counter
        for name, (documentation, labels, series) in self.histograms.items():
            histogram = HistogramMetricFamily(name, documentation, labels=labels)
            for label_values, counts in _summed_series(series, [p.histograms.get(name, []) for p in peers]).items():
                running, buckets = 0.0, []
                for bound, count in zip(BOUNDS, counts, strict=False):
                    running += count
                    buckets.append((bound, running))
                histogram.add_metric([str(value) for value in label_values], buckets, counts[-1])
            yield histogram
        live: dict[str, Any] = dict(self.live()) if self.live is not None else {}
        if peers:
            streams = _summed(dict(live.get(SUMMED_LIVE, ())), [p.streams for p in peers])
            live[SUMMED_LIVE] = list(streams.items())
        for name, documentation, labels in LIVE:
            family = GaugeMetricFamily(name, documentation, labels=labels)
            for label_values, value in live.get(name, ()):
                family.add_metric([str(value) for value in label_values], value)
            yield family
        info = GaugeMetricFamily("mcpgate_build_info", "The running version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info


LIVE: Final = (
    ("mcpgate_upstream_up", "1 when the upstream's heartbeat says healthy", ["server"]),
    ("mcpgate_active_sessions", "Gateway sessions open, by endpoint", ["server"]),
    ("mcpgate_active_streams", "Long-lived streams (GET, listen) open, by upstream", ["server"]),
)
BOUNDS: Final = (*(str(b) for b in BUCKETS), "+Inf")


def _summed(mine: Mapping[Labels, float], others: list[list[tuple[Labels, float]]]) -> dict[Labels, float]:
    if not others:
        return dict(mine)
    total = dict(mine)
    for rows in others:
        for labels, value in rows:
            total[labels] = total.get(labels, 0) + value
    return total


def _summed_series(
    mine: Mapping[Labels, list[float]], others: list[list[tuple[Labels, list[float]]]]
) -> dict[Labels, list[float]]:
    if not others:
        return dict(mine)
    total = {labels: list(counts) for labels, counts in mine.items()}
    for rows in others:
        for labels, counts in rows:
            into = total.setdefault(labels, [0.0] * len(counts))
            for i, count in enumerate(counts):
                into[i] += count
    return total


class Metrics:
    def __init__(self, servers: Iterable[str], max_label_values: int) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.servers = frozenset(servers)  # label values; a reload replaces the set
        self._tool = BoundedLabel(max_label_values)
        self._client = BoundedLabel(max_label_values)
        self.collector = self._collector = c = _Collector(None)
        self.registry.register(c)
        self.requests = c.counter("mcpgate_requests", "MCP requests answered", ["server", "method", "status"])
        self.duration = c.histogram("mcpgate_request_duration_seconds", "Time to answer", ["server", "method"])
        self.upstream_duration = c.histogram(
            "mcpgate_upstream_request_duration_seconds", "Time until the upstream's answer began", ["server", "method"]
        )
        self.tool_calls = c.counter("mcpgate_tool_calls", "tools/call requests", ["server", "tool", "outcome"])
        self.rate_limited = c.counter(
            "mcpgate_rate_limit_rejections", "Requests refused by a rate limit", ["client", "server"]
        )
        self.policy_denials = c.counter(
            "mcpgate_policy_denials", "Requests the policy denied", ["client", "server", "tool"]
        )
        self.auth_failures = c.counter("mcpgate_auth_failures", "Requests that failed authentication", ["reason"])
        self.upstream_errors = c.counter("mcpgate_upstream_errors", "Upstream failures, by kind", ["server", "kind"])

    def watch(self, read: Callable[[], Mapping[str, Iterable[tuple[tuple[str, ...], float]]]]) -> None:
        """Values read from the running gateway at scrape time: upstreams up, sessions, streams."""
        self._collector.live = read

    def observe(self, event: AuditEvent) -> None:
        server = event.server if event.server in self.servers else NO_SERVER
        method = event.method
        if method not in KNOWN_METHODS:
            method = event.http_method if method is None else "other"
        requests, key = self.requests, (server, method, event.status)  # the status becomes a string when scraped
        requests[key] = requests.get(key, 0) + 1
        labels = (server, method)
        _observe(self.duration, labels, event.duration_ms / 1000)
        if event.upstream_ms is not None:
            _observe(self.upstream_duration, labels, event.upstream_ms / 1000)
        reason = event.reason
        if method == "tools/call":
            outcome = (
                "ok" if reason is None and event.status < 400 else ("denied" if reason == "forbidden" else "error")
            )
            _add(self.tool_calls, (server, self._tool(event.item or ""), outcome))
        if reason == "forbidden" or event.decision == "shadow-deny":
            _add(self.policy_denials, (self._client(event.client_id), server, self._tool(event.item or "")))
        if reason is None or reason == "forbidden":
            return
        if reason == "rate_limited":
            _add(self.rate_limited, (self._client(event.client_id), server))
        elif reason in AUTH_REASONS:
            _add(self.auth_failures, (reason,))
        elif reason.startswith("upstream_"):
            _add(self.upstream_errors, (server, reason.removeprefix("upstream_")))

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition the scraper asked for: OpenMetrics if it says so, else Prometheus text."""
        if "application/openmetrics-text" in accept:
            return openmetrics_exposition.generate_latest(self.registry), OPENMETRICS  # type: ignore[no-untyped-call]
        return text_exposition.generate_latest(self.registry), TEXT


def _add(counter: dict[Labels, float], key: Labels) -> None:
    counter[key] = counter.get(key, 0) + 1


def _observe(histogram: dict[Labels, list[float]], key: Labels, seconds: float) -> None:
    counts = histogram.get(key)
    if counts is None:
        counts = histogram[key] = [0.0] * (len(BUCKETS) + 2)  # the buckets, +Inf, and the sum
    counts[bisect.bisect_left(BUCKETS, seconds)] += 1
    counts[-1] += seconds
