"""JSON-RPC parsing and classification: pure, no sockets."""

from __future__ import annotations

import base64
import json

import pytest

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
