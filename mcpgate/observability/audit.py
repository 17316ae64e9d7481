"""The audit event: the one record of a request, built once after its response (stage 9).

Metrics, the audit log and the access log line all read this value; none re-derives what
another already knows (STYLE: "the audit event is the one record of a request"), and a later
analytics sink can consume it as it is. ``AuditLog`` writes events as JSON lines to standard
output or to a file that is reopened on SIGHUP or SIGUSR1, for logrotate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any, Final

import orjson

from mcpgate import jsonrpc
from mcpgate.observability.logging import Redactor

log = logging.getLogger("mcpgate.audit")

MAX_LOGGED_BODY: Final = 64 * 1024


@dataclass(slots=True)
class AuditEvent:
    """Treat it as immutable once built. Not ``frozen``: a frozen dataclass's ``__init__`` sets
    each of these fields through ``object.__setattr__``, four times the cost, once per request."""

    time: float  # when the request arrived (epoch seconds)
    request_id: str
    client_id: str
    auth: str  # anonymous, api_key or jwt
    roles: tuple[str, ...]
    endpoint: str  # "/mcp", or the upstream named in the path
    server: str | None  # the upstream it went to; None when the gateway answered
    http_method: str
    method: str | None  # the JSON-RPC method ("batch" for a 2025-03-26 batch)
    item_kind: str | None  # tool, prompt or resource
    item: str | None  # its name or URI, as the upstream knows it
    decision: str | None  # allow, deny, or shadow-deny; None without a policy
    rule: str | None  # policy.rules[N] or policy.default
    rate_limit: str | None  # allow, deny, or unavailable (the store was down); None when no limit applied
    rate_limit_rule: str | None  # rate_limit.rules[N] or rate_limit.default
    status: int
    error_code: int | None
    reason: str | None  # the gateway's error reason, if it rejected the request
    duration_ms: float
    upstream_ms: float | None  # until the upstream's answer began
    bytes_in: int
    bytes_out: int | None
    body: str | None = None  # the request body, redacted, with audit.log_bodies only

    def json_line(self) -> bytes:
        """The event as one line of JSON, encoded by orjson (a tenth of the json module's time; this
        runs once per request). A string orjson refuses (a client's lone surrogate) falls back to
        the json module's ASCII escapes."""
        data = self.as_dict()
        try:
            return orjson.dumps(data, option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError:
            return (_ENCODE(data) + "\n").encode("ascii")

    def as_dict(self) -> dict[str, Any]:
        """The event as JSON-ready data, written out field by field: half the time of zipping the
        field names with their values, and a tenth of ``dataclasses.asdict``, which deep-copies."""
        data = {
            "time": _timestamp(self.time),
            "request_id": self.request_id,
            "client_id": self.client_id,
            "auth": self.auth,
            "roles": self.roles,
            "endpoint": self.endpoint,
            "server": self.server,
            "http_method": self.http_method,
            "method": self.method,
            "item_kind": self.item_kind,
            "item": self.item,
            "decision": self.decision,
            "rule": self.rule,
            "rate_limit": self.rate_limit,
            "rate_limit_rule": self.rate_limit_rule,
            "status": self.status,
            "error_code": self.error_code,
            "reason": self.reason,
            "duration_ms": self.duration_ms,
            "upstream_ms": self.upstream_ms,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }
        if self.body is not None:
            data["body"] = self.body
        return data


_ENCODE: Final = json.JSONEncoder(separators=(",", ":")).encode
_SECONDS: dict[int, str] = {}


def _timestamp(when: float) -> str:
    """ISO 8601 UTC with milliseconds; the seconds part is formatted once per second."""
    whole = int(when)
    second = _SECONDS.get(whole)
    if second is None:
        if len(_SECONDS) > 4:
            _SECONDS.clear()
        second = _SECONDS[whole] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{second}.{int((when - whole) * 1000):03d}Z"


def redacted_body(body: bytes, redactor: Redactor) -> str | None:
    """The request body for the audit log: JSON with secret-looking keys masked, bounded."""
    if not body:
        return None
    if len(body) > MAX_LOGGED_BODY:
        return f"<{len(body)} bytes, not logged>"
    try:
        decoded = jsonrpc.loads(body)
    except ValueError:
        return "<not JSON>"
    return jsonrpc.dumps(redactor.value(decoded)).decode()


FLUSH_INTERVAL: Final = 1.0


class AuditLog:
    """JSON lines, one per event; a file is reopened on ``reopen()`` (SIGHUP, SIGUSR1).

    Writes are buffered and flushed every second (and at close): a write system call per
    request would cost more than the rest of the audit together.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._file: IO[bytes] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self.written = 0
        self.failed = 0

    def open(self) -> None:
        if self.path is not None:
            self._file = open(self.path, "ab", buffering=64 * 1024)  # noqa: SIM115 - kept open
            os.chmod(self.path, 0o600)  # it says who called what

    def start_flushing(self) -> None:
        """In the running loop: flush what was written, every ``FLUSH_INTERVAL`` seconds."""
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop(), name="audit-flush")

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            self.flush()

    def flush(self) -> None:
        out = self._file if self._file is not None else sys.stdout.buffer
        try:
            out.flush()
        except (OSError, ValueError):
            self._lost()

    def reopen(self) -> None:
        """After logrotate moved the file away: write to a fresh one at the same path."""
        if self.path is None:
            return
        old = self._file
        if old is not None:
            with contextlib.suppress(OSError, ValueError):
                old.flush()
        self.open()
        if old is not None:
            with contextlib.suppress(OSError):
                old.close()
        log.info("audit log reopened: %s", self.path)

    def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        self.flush()
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def write_all(self, events: Sequence[AuditEvent]) -> None:
        """One write for a batch of events (``Recorder.drain``)."""
        data = b"".join([event.json_line() for event in events])
        out = self._file if self._file is not None else sys.stdout.buffer
        try:
            out.write(data)
            self.written += len(events)
        except (OSError, ValueError):  # a full disk must not fail requests; it is counted and said once
            self._lost(len(events))

    def _lost(self, records: int = 1) -> None:
        before, self.failed = self.failed, self.failed + records
        if before == 0 or before // 10_000 != self.failed // 10_000:
            log.error("cannot write the audit log (%d records lost so far)", self.failed)
