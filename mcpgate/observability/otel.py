"""OpenTelemetry spans, when ``observability.tracing`` asks for them (the ``otel`` extra).

A server span per MCP request, continuing the client's W3C ``traceparent`` when it sends one,
and a client span per upstream call, whose context goes upstream as the new ``traceparent``.
The exporter is OTLP over HTTP, configured by the standard ``OTEL_*`` variables. Nothing here is
imported unless tracing is on: the SDK is an optional dependency and costs start-up time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcpgate.config.model import TracingConfig
    from mcpgate.pipeline import RequestContext

MISSING = "observability.tracing needs OpenTelemetry: pip install 'mcpgate[otel]'"


def available() -> bool:
    try:
        import opentelemetry.sdk.trace  # noqa: F401
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: F401
    except ImportError:
        return False
    return True


def default_exporter() -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


class Tracing:
    def __init__(self, config: TracingConfig) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
        self.provider.add_span_processor(BatchSpanProcessor(default_exporter()))
        self.tracer = self.provider.get_tracer("mcpgate")
        self.propagator = TraceContextTextMapPropagator()

    def close(self) -> None:
        self.provider.shutdown()

    @contextlib.contextmanager
    def server_span(self, ctx: RequestContext) -> Iterator[None]:
        """Around the whole pipeline; named and labelled once the request is known."""
        from opentelemetry import trace

        parent = self.propagator.extract(dict(ctx.request.headers))
        with self.tracer.start_as_current_span("MCP", context=parent, kind=trace.SpanKind.SERVER) as span:
            try:
                yield
            finally:
                method = ctx.rpc_method or ctx.request.method
                span.update_name(f"MCP {method}")
                span.set_attribute("mcp.method.name", method)
                span.set_attribute("mcpgate.endpoint", ctx.endpoint)
                span.set_attribute("mcpgate.client_id", ctx.identity.client_id)
                span.set_attribute("mcpgate.request_id", ctx.correlation_id)
                status = ctx.error.status if ctx.error else (ctx.response.status if ctx.response else 500)
                span.set_attribute("http.response.status_code", status)
                if ctx.error is not None:
                    span.set_attribute("error.type", ctx.error.reason.name)
                    if status >= 500:
                        span.set_status(trace.Status(trace.StatusCode.ERROR, ctx.error.reason.name))

    @contextlib.contextmanager
    def client_span(self, upstream: str, method: str, headers: MutableMapping[str, str]) -> Iterator[None]:
        """Around one upstream call; its context replaces the client's ``traceparent`` upstream."""
        from opentelemetry import trace

        with self.tracer.start_as_current_span(f"MCP {method} {upstream}", kind=trace.SpanKind.CLIENT) as span:
            span.set_attribute("mcpgate.upstream", upstream)
            self.propagator.inject(headers)
            yield
