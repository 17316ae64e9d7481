"""SSE parser and writer: the WHATWG rules, the shapes real MCP servers send, and any chunking."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpgate.sse import SSEError, SSEEvent, SSEParser, encode_comment, encode_event

SDK_MESSAGE = b'event: message\r\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\r\n\r\n'


def parse(stream: bytes, **kwargs: object) -> list[SSEEvent]:
    parser = SSEParser(**kwargs)  # type: ignore[arg-type]
    return parser.feed(stream) + parser.close()


def parse_in_pieces(pieces: list[bytes], **kwargs: object) -> list[SSEEvent]:
    parser = SSEParser(**kwargs)  # type: ignore[arg-type]
    events: list[SSEEvent] = []
    for piece in pieces:
        events += parser.feed(piece)
    return events + parser.close()


def bytewise(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


def reference_parse(stream: bytes, emit_empty: bool = False) -> list[SSEEvent]:
    """The spec's algorithm written the obvious way (text, whole stream): the oracle for the fast parser."""
    text = stream.decode("utf-8", "replace")
    text = text.removeprefix("\ufeff")
    lines = re.split(r"\r\n|\r|\n", text)[:-1]  # the last piece is unterminated: discarded at EOF
    events: list[SSEEvent] = []
    data, event, block_id, retry = "", "", None, None
    for line in lines:
        if not line:
            if data or (emit_empty and (block_id is not None or retry is not None)):
                events.append(SSEEvent(data.removesuffix("\n"), event or "message", block_id, retry))
            data, event, block_id, retry = "", "", None, None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data += value + "\n"
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            block_id = value
        elif name == "retry" and value and all("0" <= c <= "9" for c in value):
            retry = int(value)
    return events


# --- the shapes upstreams actually send -------------------------------------------------------


def test_sdk_crlf_message() -> None:
    assert parse(SDK_MESSAGE) == [SSEEvent(data='{"jsonrpc":"2.0","id":1,"result":{}}')]


def test_sdk_priming_event_has_an_empty_data_line_so_it_is_dispatched() -> None:
    # sse-starlette (the SDK's writer) sends `data: ` even when data is empty: a real event.
    parser = SSEParser()
    events = parser.feed(b"id: abc\r\ndata: \r\nretry: 1000\r\n\r\n" + SDK_MESSAGE)
    assert events[0] == SSEEvent(data="", id="abc", retry=1000)
    assert events[1].id is None
    assert parser.last_event_id == "abc"
    assert parser.retry == 1000


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_every_line_ending(eol: bytes) -> None:
    stream = eol.join([b"event: message", b"data: a", b"data: b", b"", b"data: c", b"", b""])
    assert parse(stream) == [SSEEvent(data="a\nb"), SSEEvent(data="c")]


def test_mixed_line_endings() -> None:
    assert parse(b"data: a\r\ndata: b\rdata: c\n\r\n") == [SSEEvent(data="a\nb\nc")]


@pytest.mark.parametrize("eol", [b"\r\n", b"\n", b"\r"])
def test_byte_by_byte(eol: bytes) -> None:
    stream = SDK_MESSAGE.replace(b"\r\n", eol) * 3
    assert (
        parse_in_pieces(bytewise(stream))
        == parse(stream)
        == [SSEEvent(data='{"jsonrpc":"2.0","id":1,"result":{}}')] * 3
    )


def test_crlf_split_across_chunks_is_one_line_ending() -> None:
    # If the LF opening the second chunk counted as a line of its own, the blank line would dispatch
    # "a" early and the next data line would start a second event.
    assert parse_in_pieces([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]) == [SSEEvent(data="a\nb")]


def test_crlf_split_survives_an_empty_chunk_in_between() -> None:
    assert parse_in_pieces([b"data: a\r", b"", b"\ndata: b\r\n\r\n"]) == [SSEEvent(data="a\nb")]


def test_cr_cr_is_two_line_endings() -> None:
    assert parse_in_pieces([b"data: a\r", b"\r", b"data: b\r\r"]) == [SSEEvent(data="a"), SSEEvent(data="b")]


# --- fields ---------------------------------------------------------------------------------


def test_multiline_data_and_empty_data_lines() -> None:
    assert parse(b"data: a\ndata:\ndata: b\ndata\n\n") == [SSEEvent(data="a\n\nb\n")]


def test_only_one_leading_space_is_stripped() -> None:
    assert parse(b"data:  two\ndata:none\n\n") == [SSEEvent(data=" two\nnone")]


def test_event_type() -> None:
    assert parse(b"event: ping\ndata: x\n\nevent:\ndata: y\n\n") == [
        SSEEvent(data="x", event="ping"),
        SSEEvent(data="y", event="message"),
    ]


def test_event_type_does_not_leak_into_the_next_event() -> None:
    assert parse(b"event: a\ndata: 1\n\ndata: 2\n\n")[1].event == "message"


def test_comments_and_unknown_fields_are_ignored() -> None:
    stream = b": keep-alive\n:\nfoo: bar\nDATA: shout\ndata: x\n: between\n\n"
    assert parse(stream) == [SSEEvent(data="x")]


def test_field_name_is_everything_up_to_the_first_colon() -> None:
    assert parse(b"data: a:b: c\n\n") == [SSEEvent(data="a:b: c")]


def test_id_persists_but_belongs_to_its_own_event() -> None:
    parser = SSEParser()
    events = parser.feed(b"id: 1\ndata: a\n\ndata: b\n\n")
    assert [e.id for e in events] == ["1", None]
    assert parser.last_event_id == "1"
    parser.feed(b"id\ndata: c\n\n")  # an empty id resets the stream's last event id
    assert parser.last_event_id == ""


def test_id_with_nul_is_ignored() -> None:
    parser = SSEParser()
    events = parser.feed(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")
    assert events[1].id is None
    assert parser.last_event_id == "1"


def test_id_without_data_updates_last_event_id_but_is_not_dispatched() -> None:
    parser = SSEParser()
    assert parser.feed(b"id: 7\n\n") == []
    assert parser.last_event_id == "7"


@pytest.mark.parametrize("value", [b"", b"12a", b"-1", b"  5", b"1.5", "\u0665".encode()])
def test_retry_must_be_ascii_digits(value: bytes) -> None:
    parser = SSEParser()
    [event] = parser.feed(b"retry: 100\ndata: a\n\nretry:" + value + b"\ndata: b\n\n")[1:]
    assert event.retry is None
    assert parser.retry == 100


def test_retry_without_stripped_space() -> None:
    assert parse(b"retry:2500\ndata: x\n\n") == [SSEEvent(data="x", retry=2500)]


def test_emit_empty_dispatches_blocks_with_id_or_retry() -> None:
    stream = b"id: p1\n\nretry: 50\n\nevent: x\n\n: comment\n\ndata: m\n\n"
    assert parse(stream, emit_empty=True) == [
        SSEEvent(data="", id="p1"),
        SSEEvent(data="", retry=50),
        SSEEvent(data="m"),
    ]
    assert parse(stream) == [SSEEvent(data="m")]


# --- stream boundaries and encoding ------------------------------------------------------------


def test_unterminated_event_is_discarded_at_close() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: complete\n\ndata: half\n") == [SSEEvent(data="complete")]
    assert parser.close() == []
    assert parser.feed(b"\n") == []  # the half event is really gone


def test_leading_bom_is_ignored_even_when_split() -> None:
    bom = b"\xef\xbb\xbf"
    assert parse_in_pieces([bom[:1], bom[1:2], bom[2:] + b"data: x\n\n"]) == [SSEEvent(data="x")]
    assert parse(bom + b"data: x\n\n") == [SSEEvent(data="x")]


def test_only_one_bom_and_only_at_the_start() -> None:
    bom = b"\xef\xbb\xbf"
    # A second BOM is part of the first line, whose field name is then not "data".
    assert parse(bom + bom + b"data: x\n\ndata: y\n\n") == [SSEEvent(data="y")]
    assert parse(b"data: " + bom + b"x\n\n") == [SSEEvent(data="\ufeffx")]


def test_short_stream_that_only_looks_like_a_bom_start() -> None:
    assert parse_in_pieces([b"\xef", b"\xbb\n"]) == []
    assert parse_in_pieces([b"d", b"ata: x\n\n"]) == [SSEEvent(data="x")]


def test_unicode_split_across_chunks() -> None:
    stream = "data: héllo → 🌍\n\n".encode()
    assert parse_in_pieces(bytewise(stream)) == [SSEEvent(data="héllo → 🌍")]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert parse(b"data: a\xffb\n\n") == [SSEEvent(data="a\ufffdb")]


# --- memory bound -----------------------------------------------------------------------------


def test_max_event_size_counts_data_across_lines() -> None:
    parser = SSEParser(max_event_size=10)
    parser.feed(b"data: 1234\n")
    with pytest.raises(SSEError):
        parser.feed(b"data: 567890\n")


def test_max_event_size_counts_an_unterminated_line() -> None:
    parser = SSEParser(max_event_size=16)
    parser.feed(b"data: 12345")  # the raw line is buffered, field name included: 11 bytes
    with pytest.raises(SSEError, match="max_event_size"):
        parser.feed(b"678901")


def test_max_event_size_is_per_event() -> None:
    parser = SSEParser(max_event_size=16)
    for _ in range(100):
        assert parser.feed(b"data: 0123456789\n\n") == [SSEEvent(data="0123456789")]


def test_max_event_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        SSEParser(max_event_size=0)


def test_sse_error_is_a_value_error() -> None:
    assert issubclass(SSEError, ValueError)


def test_long_line_fed_byte_by_byte_stays_fast() -> None:
    # Re-joining the unterminated line on every byte would be quadratic: ~1e10 steps here.
    parser = SSEParser()
    parser.feed(b"data: ")
    for _ in range(200_000):
        parser.feed(b"x")
    assert parser.feed(b"\n\n") == [SSEEvent(data="x" * 200_000)]


# --- writer -----------------------------------------------------------------------------------


def test_encode_event_shapes() -> None:
    assert encode_event("x") == b"data: x\n\n"
    assert encode_event("a\nb\r\nc\rd") == b"data: a\ndata: b\ndata: c\ndata: d\n\n"
    assert encode_event("", id="p1", retry=500) == b"id: p1\nretry: 500\ndata: \n\n"
    assert encode_event("{}", event="message") == b"event: message\ndata: {}\n\n"
    assert encode_event("é") == "data: é\n\n".encode()


@pytest.mark.parametrize(
    "kwargs",
    [{"event": "a\nb"}, {"event": "a\rb"}, {"id": "1\n"}, {"id": "1\x00"}, {"retry": -1}],
)
def test_encode_event_refuses_values_that_break_framing(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        encode_event("x", **kwargs)  # type: ignore[arg-type]


def test_encode_comment() -> None:
    assert encode_comment("keep-alive") == b": keep-alive\n\n"
    assert encode_comment() == b": \n\n"
    assert encode_comment("a\nb") == b": a\n: b\n\n"
    assert parse(encode_comment("x") + encode_event("y")) == [SSEEvent(data="y")]


# --- properties -----------------------------------------------------------------------------

_FIELD_LINES = st.sampled_from(
    [
        b"data: x",
        b"data:",
        b"data",
        b"data:  sp",
        b"event: e",
        b"event:",
        b"id: 1",
        b"id",
        b"id: a\x00b",
        b"retry: 10",
        b"retry: x",
        b": c",
        b":",
        b"junk",
        "data: é🌍".encode(),
        b"data: \xff\xe2\x82",
        b"",
    ]
)
_EOLS = st.sampled_from([b"\n", b"\r", b"\r\n"])
_STREAMS = st.builds(
    lambda bom, parts, tail: (b"\xef\xbb\xbf" if bom else b"") + b"".join(parts) + tail,
    st.booleans(),
    st.lists(st.tuples(_FIELD_LINES, _EOLS).map(lambda t: t[0] + t[1]), max_size=30),
    st.sampled_from([b"", b"data: unterminated", b"\r"]),
)


def _split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(stream)) for c in cuts})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


@settings(max_examples=400, deadline=None)
@given(stream=_STREAMS, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=20), emit_empty=st.booleans())
def test_any_chunking_gives_the_same_events(stream: bytes, cuts: list[int], emit_empty: bool) -> None:
    expected = reference_parse(stream, emit_empty)
    assert parse(stream, emit_empty=emit_empty) == expected
    assert parse_in_pieces(_split(stream, cuts), emit_empty=emit_empty) == expected
    assert parse_in_pieces(bytewise(stream), emit_empty=emit_empty) == expected


@settings(max_examples=200, deadline=None)
@given(stream=st.binary(max_size=200), cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=10))
def test_arbitrary_bytes_match_the_reference(stream: bytes, cuts: list[int]) -> None:
    assert parse_in_pieces(_split(stream, cuts)) == reference_parse(stream)


_SAFE_TEXT = st.text(st.characters(blacklist_characters="\r\n\x00", blacklist_categories=["Cs"]), max_size=20)


@settings(max_examples=200, deadline=None)
@given(
    data=st.text(st.characters(blacklist_characters="\r", blacklist_categories=["Cs"]), max_size=40),
    event=st.one_of(st.none(), _SAFE_TEXT.filter(bool)),
    id=st.one_of(st.none(), _SAFE_TEXT),
    retry=st.one_of(st.none(), st.integers(min_value=0, max_value=10**9)),
)
def test_encode_then_parse_round_trips(data: str, event: str | None, id: str | None, retry: int | None) -> None:
    [parsed] = parse(encode_event(data, event=event, id=id, retry=retry))
    assert parsed == SSEEvent(data=data, event=event or "message", id=id, retry=retry)
