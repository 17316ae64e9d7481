"""Usage analytics (DESIGN section 10): every MCP request's audit event, kept for querying.

The recorder hands each batch of audit events to ``Analytics.offer``, which only appends them to a
bounded in-memory queue: nothing on a request's path waits for a database. Every
``flush_interval`` the queue is written in one batch; when it is full, further events are dropped
and counted (``mcpgate_analytics_events_total{outcome="dropped"}``, one log line per burst) rather
than held or waited for. Retention is enforced at start and every hour.

Questions (``queries``) are answered from what is written; a question first writes what is queued,
so that an answer includes every request that had ended when it was asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from mcpgate.analytics.queries import BadQuery, Question
from mcpgate.analytics.sink import Columns, Sink, SinkError, append, empty
from mcpgate.config.model import AnalyticsConfig, StoreConfig
from mcpgate.observability.audit import AuditEvent

log = logging.getLogger("mcpgate.analytics")

PRUNE_EVERY: Final = 3600.0
QUERY_TIMEOUT: Final = 10.0
MAX_BATCH: Final = 50_000  # events per write; a larger backlog is written in several

__all__ = ["QUERY_TIMEOUT", "Analytics", "BadQuery", "SinkError", "make_sink"]


def make_sink(config: AnalyticsConfig, store: StoreConfig | None) -> Sink:
    if config.backend == "postgres":
        from mcpgate.analytics.postgres import PostgresSink

        url = store.url if store is not None else None
        assert url is not None, "validated: postgres analytics keeps events in the store's database"
        return PostgresSink(url)
    from mcpgate.analytics.embedded import DuckDBSink

    return DuckDBSink(config.path)


class Analytics:
    """The queue, the writer and the questions, in front of one ``Sink``."""

    def __init__(
        self,
        config: AnalyticsConfig,
        sink: Sink,
        *,
        counts: dict[Any, float] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config, self.sink, self.clock = config, sink, clock
        self._pending: Columns = empty()  # the queue, as columns (``sink.append`` says why)
        self.queued = 0
        # written, dropped (queue full), failed (the database refused the batch); a metrics counter
        # when metrics are on, so that /metrics shows the same numbers as /admin/v1/status.
        self.counts: dict[Any, float] = counts if counts is not None else {}
        for outcome in ("written", "dropped", "failed"):
            self.counts.setdefault((outcome,), 0)
        self.state = "starting"
        self.last_error: str | None = None
        self._burst = 0  # dropped since the last write, for the one log line per burst
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    def count(self, outcome: str) -> int:
        return int(self.counts[(outcome,)])

    async def start(self) -> None:
        """Open the sink (``SinkError`` when it cannot be), prune, then write and prune in the background."""
        await self.sink.open()
        self.state = "ok"
        await self.prune()
        self._tasks = [
            asyncio.create_task(self._every(self.config.flush_interval, self.flush), name="analytics-flush"),
            asyncio.create_task(self._every(PRUNE_EVERY, self.prune), name="analytics-prune"),
        ]

    def offer(self, events: Sequence[AuditEvent]) -> None:
        """Called by the recorder, on the loop, for every batch of ended requests: queue or drop."""
        room = self.config.queue_size - self.queued
        if room >= len(events):
            append(self._pending, events)
            self.queued += len(events)
            return
        if room > 0:
            append(self._pending, events[:room])
            self.queued += room
        lost = len(events) - max(room, 0)
        self.counts[("dropped",)] += lost
        if self._burst == 0:
            log.warning(
                "analytics: the queue is full (%d events); dropping events until the next write",
                self.config.queue_size,
            )
        self._burst += lost

    async def _every(self, interval: float, work: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(interval)
            await work()

    async def flush(self) -> None:
        """Write what is queued, in batches of at most ``MAX_BATCH``. A failure loses what was left
        to write (counted as failed, said once until writes work again) and never stops the writer."""
        async with self._lock:
            # What is queued now, and no more: events that arrive while a batch is written wait for
            # the next flush, or a busy gateway would write a trickle of tiny batches back to back,
            # each paying a transaction and a sync (measured: 40% of a core at 900 requests/s).
            pending, count = self._pending, self.queued
            self._pending, self.queued = empty(), 0
            for start in range(0, count, MAX_BATCH):
                batch = pending if count <= MAX_BATCH else [column[start : start + MAX_BATCH] for column in pending]
                size = min(MAX_BATCH, count - start)
                try:
                    await self.sink.write(batch)
                except Exception as exc:  # a full disk, a database gone: requests go on
                    lost = count - start
                    self.counts[("failed",)] += lost
                    self._failing(f"cannot write {lost} events: {exc}")
                    return
                self.counts[("written",)] += size
                self._recovered()
            if self._burst:
                log.warning("analytics: %d events were dropped while the queue was full", self._burst)
                self._burst = 0

    async def prune(self) -> None:
        before = self.clock() - self.config.retention
        try:
            async with self._lock:
                removed = await self.sink.prune(before)
        except Exception as exc:
            self._failing(f"cannot delete old events: {exc}")
            return
        if removed:
            log.info("analytics: deleted %d events older than the retention", removed)

    def _failing(self, message: str) -> None:
        if self.state != "failing":
            log.error("analytics: %s", message)
        self.state, self.last_error = "failing", message

    def _recovered(self) -> None:
        if self.state == "failing":
            log.info("analytics: writing again")
        self.state, self.last_error = "ok", None

    async def ask(self, question: Question) -> dict[str, Any]:
        """The answer to one question, from every event recorded until now, within ``QUERY_TIMEOUT``
        in all (``SinkError`` otherwise). The write goes on if the question gives up on it."""
        deadline = time.monotonic() + QUERY_TIMEOUT
        try:
            await asyncio.wait_for(asyncio.shield(self.flush()), QUERY_TIMEOUT)
        except TimeoutError:
            raise SinkError(f"writing the queued events took longer than {QUERY_TIMEOUT:g}s") from None
        now = self.clock()
        results = []
        for statement in question.statements(now):
            left = deadline - time.monotonic()
            if left <= 0:
                raise SinkError(f"the question took longer than {QUERY_TIMEOUT:g}s")
            results.append(list(await self.sink.fetch(statement, left)))
        return question.answer(now, results)

    def status(self) -> dict[str, Any]:
        return {
            "backend": self.sink.backend,
            "state": self.state,
            "queued": self.queued,
            "written": self.count("written"),
            "dropped": self.count("dropped"),
            "failed": self.count("failed"),
            "last_error": self.last_error,
        }

    async def close(self) -> None:
        """Write what is left, then close: at shutdown, after the recorder's last batch."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.state != "starting":
            await self.flush()
        await self.sink.close()
