"""JSON-RPC parsing and classification: pure, no sockets."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpgate import jsonrpc
from mcpgate.errors import REASONS, GatewayError


def reason_of(body: bytes) -> str:
    with pytest.raises(GatewayError) as info:
        jsonrpc.parse(body)
    return info.value.reason.name


def test_request_notification_response() -> None:
    request = jsonrpc.parse(b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add"}}')
    assert isinstance(request, jsonrpc.Message)
    assert (request.kind, request.method, request.id, request.name) == ("request", "tools/call", 7, "add")

    note = jsonrpc.parse(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
    assert isinstance(note, jsonrpc.Message)
    assert (note.kind, note.id) == ("notification", None)

    response = jsonrpc.parse(b'{"jsonrpc":"2.0","id":"a","result":{}}')
    assert isinstance(response, jsonrpc.Message)
    assert (response.kind, response.id, response.method) == ("response", "a", None)

    error = jsonrpc.parse(b'{"jsonrpc":"2.0","id":null,"error":{"code":-1,"message":"x"}}')
    assert isinstance(error, jsonrpc.Message)
    assert error.kind == "response"


def test_names_of_named_methods() -> None:
    read = jsonrpc.parse(b'{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"kb://a"}}')
    assert isinstance(read, jsonrpc.Message)
    assert read.name == "kb://a"
    listing = jsonrpc.parse(b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}')
    assert isinstance(listing, jsonrpc.Message)
    assert listing.name is None
    assert listing.params == {}


def test_meta_protocol_version() -> None:
    msg = jsonrpc.parse(
        b'{"jsonrpc":"2.0","id":1,"method":"tools/list",'
        b'"params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}'
    )
    assert isinstance(msg, jsonrpc.Message)
    assert msg.meta_protocol_version == "2026-07-28"


def test_batch() -> None:
    batch = jsonrpc.parse(b'[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"b"}]')
    assert isinstance(batch, list)
    assert [m.kind for m in batch] == ["request", "notification"]


@pytest.mark.parametrize("body", [b"{", b"", b"\xff\xfe", b"nul", b'{"a":1}x'])
def test_malformed_json(body: bytes) -> None:
    assert reason_of(body) == "parse_error"


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"42",
        b'"x"',
        b'{"id":1,"method":"x"}',
        b'{"jsonrpc":"1.0","id":1,"method":"x"}',
        b'{"jsonrpc":"2.0","id":1}',
        b'{"jsonrpc":"2.0","id":1,"result":{},"error":{}}',
        b'{"jsonrpc":"2.0","id":true,"method":"x"}',
        b'{"jsonrpc":"2.0","id":1.5,"method":"x"}',
        b'{"jsonrpc":"2.0","id":null,"method":"x"}',
        b'{"jsonrpc":"2.0","id":1,"method":""}',
        b'{"jsonrpc":"2.0","id":1,"method":5}',
        b'{"jsonrpc":"2.0","id":1,"method":"x","params":[1,2]}',
        b'{"jsonrpc":"2.0","result":{}}',
        b'[{"jsonrpc":"2.0","id":1,"method":"a"}, 3]',
    ],
)
def test_not_jsonrpc(body: bytes) -> None:
    assert reason_of(body) == "invalid_request"


def test_header_value_decoding() -> None:
    encoded = "=?base64?" + base64.b64encode("résumé tool".encode()).decode() + "?="
    assert jsonrpc.decode_header_value(encoded) == "résumé tool"
    assert jsonrpc.decode_header_value("plain") == "plain"
    assert jsonrpc.decode_header_value("=?base64?!!!?=") == "=?base64?!!!?="


def test_error_table_is_stable_and_clear_of_spec_codes() -> None:
    spec_taken = {-32002, -32042}
    for reason in REASONS.values():
        assert reason.code not in spec_taken
        if -32099 <= reason.code <= -32000 and reason.code not in (-32020, -32022):
            assert -32099 <= reason.code <= -32060, reason
    error = GatewayError("rate_limited", data={"retry_after": 2})
    rendered = error.to_jsonrpc(9)
    assert rendered == {
        "jsonrpc": "2.0",
        "id": 9,
        "error": {
            "code": -32067,
            "message": "Rate limit exceeded",
            "data": {"reason": "rate_limited", "retry_after": 2},
        },
    }
    assert error.status == 429


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 5_000 + b"1" + b"}" * 5_000])
def test_nesting_too_deep_is_a_parse_error(body: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        jsonrpc.parse(body)
    assert caught.value.reason.name == "parse_error"
    with pytest.raises(ValueError):
        jsonrpc.loads(body)


def test_dumps_always_renders_valid_json() -> None:
    lone = {"id": "\ud800", "text": "caf\u00e9"}
    out = jsonrpc.dumps(lone)
    assert out.isascii() and json.loads(out) == lone
    assert jsonrpc.dumps({"text": "caf\u00e9"}) == '{"text":"caf\u00e9"}'.encode()  # UTF-8, not escaped
    deep: object = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError):
        jsonrpc.dumps(deep)


@pytest.mark.parametrize(
    ("value", "shown"),
    [("2025-11-25", "2025-11-25"), ("2026-07-28\udcff", None), ("a\nb", None), ("x" * 65, None), ("\u00e9", None)],
)
def test_printable(value: str, shown: str | None) -> None:
    assert jsonrpc.printable(value) == shown


# -- loads: orjson first, json's answer always --------------------------------------------------

JSON_TEXTS = [
    b'{"a":1,"a":2}',  # duplicate keys: the last wins in both
    b'{"id":"\\ud800"}',  # a lone surrogate escape: valid JSON, refused by orjson
    b'{"s":"\xed\xa0\x80"}',  # a surrogate as UTF-8 bytes: read as one by surrogatepass
    b'{"n":123456789012345678901234567890}',  # wider than 64 bits: orjson would make it a float
    b'{"n":-9223372036854775809}',  # just below int64: 19 digits, a float in orjson
    b'{"n":18446744073709551615}',
    b'{"x":NaN,"y":-Infinity}',  # not JSON, but json reads it, and so it always did here
    b'{"f":1e400,"g":1e-400,"h":2.2250738585072011e-308,"k":-0,"m":0.1}',
    b'\xef\xbb\xbf{"bom":true}',
    b'{"t":"\\u00e9\\n\\u0000","u":[1,2.5,null,true,false,{}]}',
    b"[" * 600 + b"]" * 600,  # more openings than orjson is asked to read
    b' {"a" : [ ] } ',
]


@pytest.mark.parametrize("text", JSON_TEXTS, ids=range(len(JSON_TEXTS)))
def test_loads_answers_as_json_does(text: bytes) -> None:
    expected = json.loads(text)  # json detects the encoding of bytes itself
    got = jsonrpc.loads(text)
    assert repr(got) == repr(expected)  # repr: NaN != NaN, and 1 == 1.0 would hide a float
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"{",
        b'{"a":1,}',
        b"\xff",
        b"[" * 1010 + b"]" * 1010,  # deeper than json reads, not than orjson would
        b"[" * 100_000,
        b'{"a":' * 2000 + b"1" + b"}" * 2000,
    ],
)
def test_loads_refuses_what_json_refuses_as_value_error(text: bytes) -> None:
    with pytest.raises(ValueError):
        jsonrpc.loads(text)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_loads_matches_json_on_any_document(value: object) -> None:
    text = json.dumps(value).encode()  # ASCII escapes, lone surrogates included
    assert repr(jsonrpc.loads(text)) == repr(json.loads(text))
    raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    assert repr(jsonrpc.loads(raw)) == repr(json.loads(raw.decode("utf-8", "surrogatepass")))
