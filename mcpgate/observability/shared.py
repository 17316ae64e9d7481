"""Metrics summed across ``server.workers``: each worker's numbers, in a file its peers read.

A scrape reaches one worker, chosen by the kernel; that worker answers with its own counters
plus every other worker's latest snapshot. Each worker writes its snapshot (counters, histograms,
open streams) to ``<dir>/metrics-<slot>.json`` once a second and when it stops, by an atomic
rename, so a reader never sees half a file. A worker restarted in the same slot starts from its
predecessor's snapshot, so the summed counters never go backwards (which Prometheus would read
as a reset). The directory is the supervisor's, private to this run.

Gauges read from a shared store (sessions in Redis) and upstream health are the answering
worker's own: every worker sees the same fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any, Final

import orjson

if TYPE_CHECKING:
    from mcpgate.observability.metrics import Labels, Metrics

log = logging.getLogger("mcpgate.metrics")

INTERVAL: Final = 1.0
SUMMED_LIVE: Final = "mcpgate_active_streams"  # the one live gauge that is per worker


class Snapshot:
    """One worker's numbers, as read from its file."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.counters: dict[str, list[tuple[Labels, float]]] = {
            name: [(tuple(labels), value) for labels, value in rows] for name, rows in data.get("counters", {}).items()
        }
        self.histograms: dict[str, list[tuple[Labels, list[float]]]] = {
            name: [(tuple(labels), counts) for labels, counts in rows]
            for name, rows in data.get("histograms", {}).items()
        }
        self.streams: list[tuple[Labels, float]] = [(tuple(labels), value) for labels, value in data.get("streams", [])]


class Shared:
    def __init__(self, metrics: Metrics, directory: str, slot: int) -> None:
        self.metrics = metrics
        self.directory = directory
        self.slot = slot
        self.path = os.path.join(directory, f"metrics-{slot}.json")
        self._task: asyncio.Task[None] | None = None

    def resume(self) -> None:
        """Continue from the snapshot a previous worker in this slot left, if any."""
        own = _read(self.path)
        if own is None:
            return
        collector = self.metrics.collector
        for name, rows in own.counters.items():
            if name in collector.counters:
                values = collector.counters[name][2]
                for labels, value in rows:
                    values[labels] = values.get(labels, 0) + value
        for name, series in own.histograms.items():
            if name in collector.histograms:
                histogram = collector.histograms[name][2]
                for labels, counts in series:
                    mine = histogram.setdefault(labels, [0.0] * len(counts))
                    for i, count in enumerate(counts):
                        mine[i] += count

    def start(self) -> None:
        self.resume()
        self._task = asyncio.create_task(self._loop(), name="metrics-snapshot")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL)
            self.write()

    def write(self) -> None:
        collector = self.metrics.collector
        live = collector.live() if collector.live is not None else {}
        data = {
            "counters": {name: list(values.items()) for name, (_, _, values) in collector.counters.items()},
            "histograms": {name: list(values.items()) for name, (_, _, values) in collector.histograms.items()},
            "streams": list(live.get(SUMMED_LIVE, ())),
        }
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(temporary, "wb") as out:
                out.write(orjson.dumps(data))
            os.replace(temporary, self.path)
        except OSError as exc:
            log.warning("cannot write this worker's metrics snapshot: %s", exc.strerror)

    def peers(self) -> list[Snapshot]:
        """Every other worker's latest numbers."""
        found = []
        with contextlib.suppress(OSError):
            for name in os.listdir(self.directory):
                if name.startswith("metrics-") and name.endswith(".json") and name != os.path.basename(self.path):
                    snapshot = _read(os.path.join(self.directory, name))
                    if snapshot is not None:
                        found.append(snapshot)
        return found

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.write()


def _read(path: str) -> Snapshot | None:
    try:
        with open(path, "rb") as source:
            return Snapshot(orjson.loads(source.read()))
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError, TypeError, ValueError) as exc:
        log.warning("ignoring an unreadable metrics snapshot %s: %s", os.path.basename(path), exc)
        return None
