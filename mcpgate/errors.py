"""Gateway errors as values: one table of reasons, each with a JSON-RPC code and an HTTP status.

Every rejection the gateway makes on an MCP path is one of these, raised by a pipeline stage and
rendered as a JSON-RPC error object in exactly one place (``listener.render_error``). The codes
are part of the public interface: clients and dashboards match on ``error.data.reason`` (stable,
machine-readable) and on ``error.code``. Gateway codes live in -32060..-32099, clear of the codes
the MCP specification uses (-32002, -32020..-32022, -32042) and of JSON-RPC's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Reason:
    name: str
    code: int
    status: int
    message: str


_REASONS = (
    # JSON-RPC and MCP-defined codes, used with their standard meaning.
    Reason("parse_error", -32700, 400, "Parse error: the body is not valid JSON"),
    Reason("invalid_request", -32600, 400, "Invalid request"),
    Reason("batch_not_supported", -32600, 400, "JSON-RPC batches are only allowed in protocol 2025-03-26"),
    Reason("method_not_allowed", -32600, 405, "HTTP method not allowed"),
    Reason("not_acceptable", -32600, 406, "Not acceptable"),
    Reason("unsupported_media_type", -32600, 415, "Content-Type must be application/json"),
    Reason("header_mismatch", -32020, 400, "MCP header does not match the request body"),
    Reason("unsupported_protocol_version", -32022, 400, "Unsupported protocol version"),
    Reason("bad_http_request", -32600, 400, "Malformed HTTP request"),
    Reason("headers_too_large", -32600, 431, "Request header fields too large"),
    Reason("internal_error", -32603, 500, "Internal gateway error"),
    Reason("method_not_found", -32601, 404, "Method not found"),
    Reason("invalid_params", -32602, 400, "Invalid params"),
    # A protocol answer, not a transport rejection: HTTP 200, like an MCP server's own.
    Reason("unknown_name", -32602, 200, "No upstream offers this tool, prompt or resource"),
    # Gateway codes.
    Reason("session_required", -32060, 400, "Mcp-Session-Id header is required"),
    Reason("session_not_found", -32061, 404, "Session not found or expired; initialize a new one"),
    Reason("server_not_found", -32062, 404, "No such MCP server behind this gateway"),
    Reason("origin_not_allowed", -32063, 403, "Origin not allowed"),
    Reason("body_too_large", -32064, 413, "Request body too large"),
    Reason("unauthenticated", -32065, 401, "Authentication required"),
    Reason("forbidden", -32066, 403, "Forbidden by policy"),
    Reason("rate_limited", -32067, 429, "Rate limit exceeded"),
    Reason("session_limit", -32068, 503, "The gateway holds as many sessions as it may; retry later"),
    Reason("request_timeout", -32069, 408, "The request was not received in time"),
    Reason("upstream_unreachable", -32070, 502, "Upstream server unreachable"),
    Reason("upstream_bad_response", -32071, 502, "Upstream server sent an invalid response"),
    Reason("upstream_timeout", -32072, 504, "Upstream server timed out"),
    Reason("upstream_unavailable", -32073, 503, "Upstream server unavailable"),
    Reason("shutting_down", -32074, 503, "Gateway is shutting down"),
    Reason("not_found", -32075, 404, "Nothing is served at this path"),
    Reason("invalid_token", -32076, 401, "The credential is invalid, expired or not accepted here"),
    Reason("insufficient_scope", -32077, 403, "The token lacks a scope this gateway requires"),
    Reason(
        "auth_unavailable", -32078, 503, "Tokens cannot be verified now: the identity provider's keys are unavailable"
    ),
    Reason("rate_limit_unavailable", -32079, 503, "Rate limits cannot be checked now; retry later"),
    Reason("session_store_unavailable", -32080, 503, "Sessions cannot be read now; retry later"),
)

REASONS: Mapping[str, Reason] = {r.name: r for r in _REASONS}


class GatewayError(Exception):
    """A rejection with a stable reason; ``message`` is for humans and must never hold secrets."""

    __slots__ = ("_status", "data", "headers", "message", "reason")

    def __init__(
        self,
        reason: str,
        message: str | None = None,
        *,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        self.reason = REASONS[reason]
        # Rarely, the era decides: a legacy client reads 404 as "session gone", a modern one as "no such method".
        self._status = status
        self.message = message or self.reason.message
        self.data = dict(data) if data else {}
        self.headers = dict(headers) if headers else {}
        super().__init__(self.message)

    @property
    def status(self) -> int:
        return self.reason.status if self._status is None else self._status

    @property
    def code(self) -> int:
        return self.reason.code

    def to_jsonrpc(self, request_id: str | int | None) -> dict[str, Any]:
        return {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {
                "code": self.reason.code,
                "message": self.message,
                "data": {"reason": self.reason.name, **self.data},
            },
        }
