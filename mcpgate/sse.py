"""Incremental Server-Sent Events parser and writer: pure, no I/O.

The gateway copies upstream SSE bytes through untouched whenever it can; this module is for the
messages it must rewrite (a list it filters, an id it maps), so it sits on the hot path of those.

Parsing follows the WHATWG ``EventSource`` rules (HTML Living Standard, "Parsing an event
stream"), with two deliberate differences, both opt-in or protective:

- ``emit_empty=True`` also dispatches a block that set ``id`` or ``retry`` but carried no
  ``data`` line. A browser drops such a block (only the last event id survives); a gateway that
  re-encodes a stream must see it to relay resumption ids and reconnection times.
- ``max_event_size`` bounds what one event may buffer, so a hostile or broken upstream cannot
  grow the gateway's memory without limit.

The parser works on bytes, not text: the line terminators (CR, LF) are ASCII and can never occur
inside a multi-byte UTF-8 sequence, so splitting bytes on them is exact and a character split
across chunks needs no special care; values are decoded once, when an event is dispatched.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "SSEError", "SSEEvent", "SSEParser", "encode_comment", "encode_event"]

DEFAULT_MAX_EVENT_SIZE = 8 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"


class SSEError(ValueError):
    """The stream cannot be parsed safely (an event exceeded ``max_event_size``)."""


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event.

    ``id`` and ``retry`` are what this event's own block set (``None`` when it set nothing), so
    that re-encoding an event reproduces what the server sent; the stream-wide values that the
    spec keeps across events are on the parser (``last_event_id``, ``retry``).
    """

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


def _decode(raw: bytes) -> str:
    # The spec decodes with replacement: a stray invalid byte costs a U+FFFD, never the stream.
    return raw.decode("utf-8", "replace")


class SSEParser:
    """Turns SSE bytes, chunked in any way, into :class:`SSEEvent` values.

    Feed every chunk to :meth:`feed` and call :meth:`close` at end of stream. After an
    :class:`SSEError` the stream is unusable: drop it (the parser's buffers have been freed).
    """

    __slots__ = (
        "_data",
        "_data_size",
        "_emit_empty",
        "_event",
        "_head",
        "_id",
        "_max",
        "_partial",
        "_partial_size",
        "_retry",
        "_skip_lf",
        "last_event_id",
        "retry",
    )

    def __init__(self, *, emit_empty: bool = False, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        if max_event_size <= 0:
            raise ValueError("max_event_size must be positive")
        self._emit_empty = emit_empty
        self._max = max_event_size
        #: The stream's last event id: persists across events, ``""`` once the server reset it,
        #: ``None`` until any ``id`` field arrived. Send it as ``Last-Event-ID`` to resume.
        self.last_event_id: str | None = None
        #: The stream's reconnection time in milliseconds, from the latest valid ``retry`` field.
        self.retry: int | None = None
        # Bytes seen so far while they could still be the start of a BOM; None once decided.
        self._head: bytes | None = b""
        # A chunk ended in CR: an LF opening the next chunk belongs to the same line terminator.
        self._skip_lf = False
        # The unterminated last line, kept as pieces so byte-by-byte feeding stays linear.
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._reset_event()

    def _reset_event(self) -> None:
        self._data: list[bytes] = []
        self._data_size = 0
        self._event: bytes = b""
        self._id: bytes | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume ``chunk`` and return the events it completed, in order."""
        if not chunk:
            return []
        if self._head is not None:
            chunk = self._head + chunk
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                self._head = chunk
                return []
            self._head = None
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            # CR ending this chunk already ends its line; remember to drop an LF that follows.
            self._skip_lf = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in chunk:
            if chunk:
                self._partial.append(chunk)
                self._partial_size += len(chunk)
                self._check_size()
            return []
        lines = chunk.split(b"\n")
        if self._partial:
            self._partial.append(lines[0])
            lines[0] = b"".join(self._partial)
            self._partial = []
            self._partial_size = 0
        tail = lines.pop()
        events: list[SSEEvent] = []
        for line in lines:
            if not line:
                event = self._dispatch()
                if event is not None:
                    events.append(event)
            else:
                self._field(line)
        if tail:
            self._partial.append(tail)
            self._partial_size = len(tail)
            self._check_size()
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: always ``[]``.

        Per the spec an event not terminated by a blank line is incomplete (the stream was cut
        mid-event) and is discarded, never dispatched half-read. ``last_event_id`` and ``retry``
        are kept: they are what a reconnection needs.
        """
        self._head = b""
        self._skip_lf = False
        self._partial = []
        self._partial_size = 0
        self._reset_event()
        return []

    def _field(self, line: bytes) -> None:
        # A comment line (":...") yields the empty field name, which matches nothing below.
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._data_size += len(value) + 1
            self._check_size()
        elif name == b"event":
            self._event = value
        elif name == b"id":
            if b"\0" not in value:
                self._id = value
                self.last_event_id = _decode(value)
        elif name == b"retry" and value.isdigit():  # bytes.isdigit() is ASCII-only, as the spec requires
            self._retry = self.retry = int(value)

    def _dispatch(self) -> SSEEvent | None:
        data, block_id, retry = self._data, self._id, self._retry
        event_type = self._event
        self._reset_event()
        if not data and not (self._emit_empty and (block_id is not None or retry is not None)):
            return None
        return SSEEvent(
            data=_decode(data[0]) if len(data) == 1 else _decode(b"\n".join(data)),
            event=_decode(event_type) if event_type else "message",
            id=None if block_id is None else _decode(block_id),
            retry=retry,
        )

    def _check_size(self) -> None:
        if self._data_size + self._partial_size > self._max:
            size = self._data_size + self._partial_size
            self.close()
            raise SSEError(f"SSE event exceeds max_event_size ({size} > {self._max} bytes)")


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def encode_event(data: str, *, event: str | None = None, id: str | None = None, retry: int | None = None) -> bytes:
    """Serialize one event with LF framing.

    Each line of ``data`` becomes its own ``data:`` line, so a reader gets ``data`` back with
    every CR, CRLF or LF as LF (SSE cannot carry a bare CR in data). ``event`` is written only
    when given, ``"message"`` included, so a re-encoded event keeps the shape it arrived in.
    Values that would break the framing raise :class:`ValueError` instead of corrupting the stream.
    """
    out = []
    if event is not None:
        if "\n" in event or "\r" in event:
            raise ValueError("SSE event type must not contain a line break")
        out.append(f"event: {event}\n")
    if id is not None:
        if "\n" in id or "\r" in id or "\0" in id:
            raise ValueError("SSE id must not contain a line break or NUL")
        out.append(f"id: {id}\n")
    if retry is not None:
        if retry < 0:
            raise ValueError("SSE retry must be a non-negative integer")
        out.append(f"retry: {retry:d}\n")
    if "\n" in data or "\r" in data:
        out.extend(f"data: {line}\n" for line in _lines(data))
    else:
        out.append(f"data: {data}\n")
    out.append("\n")
    return "".join(out).encode()


def encode_comment(text: str = "") -> bytes:
    """Serialize a comment: readers ignore it, so it keeps idle connections and proxies open."""
    return "".join(f": {line}\n" for line in _lines(text)).encode() + b"\n"
