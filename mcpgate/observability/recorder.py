"""Stage 9, ``record``: the audit event of a request, built once, and everything that reads it.

``event_of`` turns what the pipeline learned about a request into an ``AuditEvent``; the
``Recorder`` hands that one value to the metrics, the audit log and the access log line. When
none of them is on, the pipeline skips building the event at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from mcpgate.jsonrpc import Message
from mcpgate.observability.audit import AuditEvent, AuditLog, redacted_body
from mcpgate.observability.logging import Redactor
from mcpgate.observability.metrics import Metrics
from mcpgate.routing import addressed_item
from mcpgate.unified import UNIFIED

if TYPE_CHECKING:
    from mcpgate.config.model import ObservabilityConfig
    from mcpgate.pipeline import RequestContext

access_log = logging.getLogger("mcpgate.access")


class Recorder:
    def __init__(self, config: ObservabilityConfig, servers: Iterable[str]) -> None:
        metrics = config.metrics
        self.metrics = Metrics(servers, metrics.max_label_values) if metrics.enabled else None
        self.audit = AuditLog(config.audit.path) if config.audit.enabled else None
        self.log_bodies = config.audit.log_bodies
        self.redactor = Redactor(config.logging.redact)

    @property
    def wanted(self) -> bool:
        return self.metrics is not None or self.audit is not None or access_log.isEnabledFor(logging.INFO)

    def record(self, ctx: RequestContext) -> None:
        event = event_of(ctx, self.redactor if self.log_bodies else None)
        if self.metrics is not None:
            self.metrics.observe(event)
        if self.audit is not None:
            self.audit.write(event)
        if access_log.isEnabledFor(logging.INFO):
            log_access(event)


def event_of(ctx: RequestContext, body_redactor: Redactor | None = None) -> AuditEvent:
    message, error, identity, route = ctx.message, ctx.error, ctx.identity, ctx.route
    method = "batch" if isinstance(message, list) else (message.method if isinstance(message, Message) else None)
    item = addressed_item(method, message.params) if isinstance(message, Message) and method else None
    if item is not None and route is not None and route.name and item[0] != "resource":
        item = (item[0], route.name)  # as the upstream knows it, like the policy sees it
    server = route.upstream if route is not None else (None if ctx.endpoint == UNIFIED else ctx.endpoint)
    decision = ctx.decision
    verdict = None if decision is None else "allow" if decision.allowed else "shadow-deny" if ctx.shadowed else "deny"
    response = ctx.response
    status = error.status if error is not None and (response is None or not response.prepared) else 0
    if not status:
        status = response.status if response is not None else 500
    return AuditEvent(
        time=ctx.arrived,
        request_id=ctx.correlation_id,
        client_id=identity.client_id,
        auth=identity.kind,
        roles=identity.roles,
        endpoint="/mcp" if ctx.endpoint == UNIFIED else ctx.endpoint,
        server=server,
        http_method=ctx.request.method,
        method=method,
        item_kind=item[0] if item else None,
        item=item[1] if item else None,
        decision=verdict,
        rule=None if decision is None else decision.where,
        status=status,
        error_code=error.code if error is not None else None,
        reason=error.reason.name if error is not None else None,
        duration_ms=round((time.monotonic() - ctx.started) * 1000, 3),
        upstream_ms=None if ctx.upstream_ms is None else round(ctx.upstream_ms, 3),
        bytes_in=len(ctx.body),
        bytes_out=None if response is None else response.body_length or response.content_length,
        body=redacted_body(ctx.body, body_redactor) if body_redactor is not None else None,
    )


def log_access(event: AuditEvent) -> None:
    """One short line per request, for people watching a terminal (the audit log is for machines)."""
    what = " ".join(part for part in (event.method, event.item) if part) or "-"
    access_log.info(
        "%s %s %s -> %d %.1fms %s",
        event.http_method,
        event.endpoint,
        what,
        event.status,
        event.duration_ms,
        event.client_id,
        extra={"status": event.status, "reason": event.reason, "upstream": event.server},
    )
