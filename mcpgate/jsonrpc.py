"""JSON-RPC 2.0 messages as MCP uses them: parsing, classification, ids. Pure, no I/O.

The gateway parses a client's body once, here, to learn what it must know (kind, method, id,
name) and otherwise forwards the original bytes untouched: re-serialising would cost time and
could change what the upstream sees.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from mcpgate.errors import GatewayError

LEGACY_VERSIONS: Final = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
MODERN_VERSIONS: Final = ("2026-07-28",)
SUPPORTED_VERSIONS: Final = LEGACY_VERSIONS + MODERN_VERSIONS
LATEST_LEGACY: Final = "2025-11-25"
# Without an MCP-Protocol-Version header, a legacy-era server must assume this one.
DEFAULT_NEGOTIATED_VERSION: Final = "2025-03-26"
# The only version whose sessions may send JSON-RPC batches.
BATCH_VERSION: Final = "2025-03-26"

# The legacy era's methods that 2026-07-28 removed: a modern client asking gets 404 / -32601.
REMOVED_IN_MODERN: Final = frozenset({"initialize", "ping", "logging/setLevel"})
# The _meta keys of the 2026-07-28 era (protocol version, client capabilities...).
MODERN_META_PREFIX: Final = "io.modelcontextprotocol/"
META_PROTOCOL_VERSION: Final = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_CAPABILITIES: Final = "io.modelcontextprotocol/clientCapabilities"

# Methods whose Mcp-Name header must equal a body parameter (2026-07-28).
NAMED_METHODS: Final = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}

Kind = Literal["request", "notification", "response"]
RequestId = str | int


@dataclass(slots=True)
class Message:
    """One JSON-RPC message; ``raw`` is the decoded object, kept for the rare rewrite."""

    raw: dict[str, Any]
    kind: Kind
    method: str | None
    id: RequestId | None
    params: dict[str, Any]  # {} when absent (a response has none); read by several stages, so kept

    @property
    def name(self) -> str | None:
        """The tool/prompt name or resource URI a call addresses, if any."""
        key = NAMED_METHODS.get(self.method or "")
        if key is None:
            return None
        value = self.params.get(key)
        return value if isinstance(value, str) else None

    @property
    def meta_protocol_version(self) -> str | None:
        meta = self.params.get("_meta")
        if isinstance(meta, dict):
            version = meta.get(META_PROTOCOL_VERSION)
            if isinstance(version, str):
                return version
        return None


def is_valid_id(value: object) -> bool:
    # bool is an int subclass in Python but never a valid JSON-RPC id; MCP forbids null ids.
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def classify(obj: object) -> Message:
    """Check one decoded JSON value against JSON-RPC 2.0 and tell what it is."""
    if not isinstance(obj, dict):
        raise GatewayError("invalid_request", "Invalid request: a JSON-RPC message must be an object")
    raw_id = obj.get("id")
    if obj.get("jsonrpc") != "2.0":
        raise GatewayError("invalid_request", 'Invalid request: "jsonrpc" must be "2.0"')
    method = obj.get("method")
    if method is not None:
        if not isinstance(method, str) or not method:
            raise GatewayError("invalid_request", 'Invalid request: "method" must be a non-empty string')
        params = obj.get("params")
        if params is None and "params" not in obj:
            params = {}
        elif not isinstance(params, dict):
            raise GatewayError("invalid_request", 'Invalid request: "params" must be an object')
        if "id" not in obj:
            return Message(obj, "notification", method, None, params)
        if not is_valid_id(raw_id):
            raise GatewayError("invalid_request", 'Invalid request: "id" must be a string or an integer')
        return Message(obj, "request", method, raw_id, params)
    if ("result" in obj) == ("error" in obj):
        raise GatewayError("invalid_request", 'Invalid request: needs "method", or exactly one of "result" and "error"')
    if not is_valid_id(raw_id) and not ("error" in obj and raw_id is None):
        raise GatewayError("invalid_request", 'Invalid request: a response needs a string or integer "id"')
    return Message(obj, "response", None, raw_id if is_valid_id(raw_id) else None, {})


_NOT_PLAIN_UTF8: Final = frozenset({b"\x00", b"\xef", b"\xfe", b"\xff"})
# orjson reads an integer outside 64 bits as a float; such a number has 19 digits or more.
_DIGITS_AS_ZEROS: Final = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_WIDE_INTEGER: Final = b"0" * 19
# orjson nests up to 1024 levels, json as deep as the stack allows (about 1000): a body that opens
# fewer arrays and objects than this cannot reach either limit, so both read it alike.
_FEW_OPENINGS: Final = 512
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def loads(data: bytes | str) -> Any:
    """``json.loads`` whose every failure is a ``ValueError``.

    Hostile nesting (a thousand ``[`` in a 2 KB body) makes the C decoder raise
    ``RecursionError``, which no caller expects from a parse; folding it in here means every
    place that decodes untrusted JSON, from clients or upstreams, treats it as the invalid
    input it is.

    Bytes go to ``orjson`` first, three to four times faster on an MCP request (4% of a forwarded
    call's instructions went to ``json``). It is stricter, never looser: whatever it refuses (a
    lone surrogate escape, ``NaN``, a BOM) goes on to ``json``, and so does a body that could hold
    an integer too wide for orjson to keep exact or nest deeper than ``json`` would, so the answer
    is always the one ``json`` gives.
    """
    if (
        type(data) is bytes
        and data.count(b"[") + data.count(b"{") < _FEW_OPENINGS
        and _WIDE_INTEGER not in data.translate(_DIGITS_AS_ZEROS)
    ):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # json says what it is, or finds it acceptable after all
    try:
        if isinstance(data, bytes) and data[:1] not in _NOT_PLAIN_UTF8 and data[1:2] != b"\x00":
            # Plain UTF-8 (no BOM, no UTF-16/32 zero bytes), as json.loads would detect it, minus
            # the detecting: the same text, decoded a third faster for a small body.
            data = data.decode("utf-8", "surrogatepass")
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def parse(body: bytes) -> Message | list[Message]:
    """Decode a POST body into one message or a non-empty batch of them."""
    try:
        obj = loads(body)
    except ValueError:  # UnicodeDecodeError included
        raise GatewayError("parse_error") from None
    if isinstance(obj, list):
        if not obj:
            raise GatewayError("invalid_request", "Invalid request: empty batch")
        return [classify(item) for item in obj]
    return classify(obj)


def decode_header_value(value: str) -> str:
    """Undo the ``=?base64?…?=`` form MCP uses for header values that are not header-safe."""
    if value.startswith("=?base64?") and value.endswith("?="):
        try:
            return base64.b64decode(value[9:-2], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return value
    return value


def encode_header_value(value: str) -> str:
    """A value as an MCP header: as it is when header-safe, else the ``=?base64?…?=`` form."""
    if value.isascii() and value.isprintable() and value == value.strip() and not value.startswith("=?"):
        return value
    return "=?base64?" + base64.b64encode(value.encode("utf-8", "surrogatepass")).decode("ascii") + "?="


def is_modern(version: str | None) -> bool:
    return version in MODERN_VERSIONS


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON; always encodable, so an error response can always be rendered.

    A client may send a string id or name holding a lone surrogate (``"\\ud800"`` is valid
    JSON); echoed back, it cannot be encoded as UTF-8. Escaping everything to ASCII keeps the
    output valid JSON that says exactly what the client sent. Nesting too deep to encode is a
    ``ValueError``, like in :func:`loads`.
    """
    if type(obj) is int:  # a request id, most often
        return str(obj).encode()
    try:
        return _ENCODER.encode(obj).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":")).encode("ascii")
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def printable(value: str, limit: int = 64) -> str | None:
    """``value`` if it is short visible ASCII, safe to repeat in an error message; else ``None``.

    Header values arrive as latin-1 or surrogate-escaped bytes; repeating them verbatim in an
    answer or a log line lets a client inject whatever it likes there.
    """
    if len(value) <= limit and value.isascii() and value.isprintable():
        return value
    return None
