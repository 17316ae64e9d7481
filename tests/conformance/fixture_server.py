"""The upstream MCP server for mcpgate's conformance stage, built on the official ``mcp`` SDK.

The official conformance suite (``@modelcontextprotocol/conformance``) tests a server by calling
fixtures it expects to find by name: ``test_simple_text``, ``test://static-text``,
``test_prompt_with_arguments`` and so on. This server implements those fixtures, in both protocol
eras, so the suite can be run twice: once directly against this server, to learn what the SDK
itself passes, and once through mcpgate in front of it, to learn what the gateway loses. What
fails directly is the SDK's (or the suite's) limit; what fails only through the gateway is ours.

    python tests/conformance/fixture_server.py --port 9100      # http://127.0.0.1:9100/mcp
    python tests/conformance/fixture_server.py --transport stdio

Streamable HTTP binds 127.0.0.1 by default, where the SDK's DNS-rebinding protection is on
(the suite checks it). Sessions resume over an in-memory event store, so a tool may close its
SSE stream mid-call and the client picks the result up on reconnection (SEP-1699).
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import anyio
from mcp.server.caching import CacheHint
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    AudioContent,
    CallToolResult,
    ClientCapabilities,
    Completion,
    CompletionArgument,
    CompletionContext,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitationCapability,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequest,
    InputRequiredResult,
    JSONRPCMessage,
    ListRootsRequest,
    ListRootsResult,
    LoggingLevel,
    MissingRequiredClientCapabilityErrorData,
    PromptReference,
    ResourceTemplateReference,
    RootsCapability,
    SamplingCapability,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field

# --------------------------------------------------------------------------------------------
# Payloads the suite checks for by content type: a real (tiny) PNG and WAV, so a client that
# decodes them does not choke.
# --------------------------------------------------------------------------------------------


def _png_1x1_red() -> str:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    return base64.b64encode(png).decode()


def _wav_silence() -> str:
    rate, samples = 8000, 80
    data = b"\x00\x00" * samples
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return base64.b64encode(b"RIFF" + struct.pack("<I", len(body)) + body).decode()


PNG = _png_1x1_red()
WAV = _wav_silence()

# The JSON Schema 2020-12 keywords (SEP-1613, SEP-2106) a server must pass through untouched.
JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}

LOG_LEVELS: tuple[LoggingLevel, ...] = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


class InMemoryEventStore(EventStore):
    """Keeps every SSE event so a client that reconnects with Last-Event-ID gets the rest.

    The SDK ships only the interface. Without a store the server cannot close a stream mid-call
    (``ctx.close_sse_stream`` is a no-op), and the suite's polling scenario has nothing to test.
    """

    def __init__(self) -> None:
        self._events: list[tuple[EventId, StreamId, JSONRPCMessage | None]] = []
        self._ids = itertools.count(1)

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        event_id = str(next(self._ids))
        self._events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        position = next((i for i, (event_id, _, _) in enumerate(self._events) if event_id == last_event_id), None)
        if position is None:
            return None
        stream_id = self._events[position][1]
        for event_id, stream, message in self._events[position + 1 :]:
            if stream == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


@dataclass
class FixtureState:
    """What the legacy-era utilities (logging level, resource subscriptions) must remember."""

    log_level: LoggingLevel = "debug"
    subscriptions: set[str] = field(default_factory=set)
    dynamic_tools: int = 0
    dynamic_prompts: int = 0


def is_modern(ctx: Context[Any, Any]) -> bool:
    """2026-07-28 asks the client through InputRequiredResult; earlier eras ask mid-call."""
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def text(value: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=value)])


# --------------------------------------------------------------------------------------------
# Asking the client: one helper for both eras, so each interactive fixture is written once.
# --------------------------------------------------------------------------------------------

ResponseT = TypeVar("ResponseT", bound=BaseModel)


def elicit_request(message: str, schema: dict[str, Any]) -> ElicitRequest:
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def sampling_request(prompt: str, max_tokens: int) -> CreateMessageRequest:
    message = SamplingMessage(role="user", content=TextContent(type="text", text=prompt))
    return CreateMessageRequest(params=CreateMessageRequestParams(messages=[message], max_tokens=max_tokens))


def required_capability(request: InputRequest) -> ClientCapabilities:
    if isinstance(request, ElicitRequest):
        return ClientCapabilities(elicitation=ElicitationCapability())
    if isinstance(request, CreateMessageRequest):
        return ClientCapabilities(sampling=SamplingCapability())
    return ClientCapabilities(roots=RootsCapability())


def client_declared(ctx: Context[Any, Any], request: InputRequest) -> bool:
    capabilities = ctx.client_capabilities
    if capabilities is None:
        return False
    if isinstance(request, ElicitRequest):
        return capabilities.elicitation is not None
    if isinstance(request, CreateMessageRequest):
        return capabilities.sampling is not None
    return capabilities.roots is not None


def missing_capability(request: InputRequest) -> MCPError:
    """The -32021 error the spec requires instead of asking for what the client cannot answer."""
    data = MissingRequiredClientCapabilityErrorData(required_capabilities=required_capability(request))
    return MCPError(
        code=MISSING_REQUIRED_CLIENT_CAPABILITY,
        message=f"Client did not declare the capability {request.method} needs",
        data=data.model_dump(by_alias=True, mode="json", exclude_none=True),
    )


async def ask_now(ctx: Context[Any, Any], request: InputRequest, result_type: type[ResponseT]) -> ResponseT:
    """Legacy era: a server-to-client request on the call's own stream, awaited mid-call."""
    if not client_declared(ctx, request):
        raise missing_capability(request)
    related = ServerMessageMetadata(related_request_id=ctx.request_context.request_id)
    return await ctx.request_context.session.send_request(request, result_type, metadata=related)


def answered(ctx: Context[Any, Any], key: str, result_type: type[ResponseT]) -> ResponseT | None:
    """Modern era: the answer to ``key`` if the client retried with it, validated to its type.

    A response of the wrong shape counts as no answer, so the question is asked again (the
    SEP-2322 advice) rather than the call failing or completing on garbage.
    """
    responses = ctx.input_responses or {}
    if key not in responses:
        return None
    response = responses[key]
    if isinstance(response, result_type):
        return response
    try:
        return result_type.model_validate(response.model_dump(by_alias=True, exclude_none=True))
    except ValueError:
        return None


def input_required(requests: dict[str, InputRequest], state: str | None = None) -> InputRequiredResult:
    return InputRequiredResult(input_requests=requests, request_state=state)


async def ask_once(
    ctx: Context[Any, Any], key: str, request: InputRequest, result_type: type[ResponseT]
) -> ResponseT | InputRequiredResult:
    """Ask one question in whichever way the era allows: the answer, or the round to return."""
    if not is_modern(ctx):
        return await ask_now(ctx, request, result_type)
    if not client_declared(ctx, request):
        raise missing_capability(request)
    response = answered(ctx, key, result_type)
    return response if response is not None else input_required({key: request})


async def elicited_text(
    ctx: Context[Any, Any], key: str, request: ElicitRequest, said: str
) -> CallToolResult | InputRequiredResult:
    """Ask once; then say what the user answered, after ``said``."""
    reply = await ask_once(ctx, key, request, ElicitResult)
    if isinstance(reply, InputRequiredResult):
        return reply
    return text(f"{said}: {describe_elicitation(reply)}")


def describe_elicitation(result: ElicitResult) -> str:
    return f"action={result.action}, content={json.dumps(result.content)}"


NAME_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def ask_name(message: str = "What is your name?") -> ElicitRequest:
    return elicit_request(message, NAME_SCHEMA)


def elicited(reply: ElicitResult, name: str) -> str:
    value = (reply.content or {}).get(name)
    return str(value) if value is not None else f"<{reply.action}>"


def sampled_text(reply: CreateMessageResult) -> str:
    return reply.content.text if isinstance(reply.content, TextContent) else f"<{reply.content.type}>"


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


def build() -> MCPServer:
    state = FixtureState()

    json_schema_tool = Tool.from_function(
        json_schema_2020_12_tool, name="json_schema_2020_12_tool", description="Tool with JSON Schema 2020-12 features"
    ).model_copy(update={"parameters": JSON_SCHEMA_2020_12})

    server = MCPServer(
        "mcpgate-conformance-fixture",
        version="1.0.0",
        instructions="Implements the fixtures the MCP conformance suite's server scenarios call.",
        tools=[json_schema_tool],
        # Tools and prompts change at run time (the list-changed triggers), so they go stale at once;
        # the resources are fixed.
        cache_hints={
            "tools/list": CacheHint(ttl_ms=0, scope="public"),
            "prompts/list": CacheHint(ttl_ms=0, scope="public"),
            "resources/list": CacheHint(ttl_ms=60_000, scope="public"),
            "resources/templates/list": CacheHint(ttl_ms=60_000, scope="public"),
            "resources/read": CacheHint(ttl_ms=60_000, scope="public"),
            "server/discover": CacheHint(ttl_ms=60_000, scope="public"),
        },
    )
    add_content_tools(server)
    add_notifying_tools(server, state)
    add_interactive_tools(server)
    add_input_required_tools(server)
    add_list_changed_triggers(server, state)
    add_task_extension_tools(server)
    add_resources(server)
    add_prompts(server)
    add_completions(server)
    add_legacy_utilities(server, state)
    return server


def json_schema_2020_12_tool() -> str:
    """Its input schema is replaced with :data:`JSON_SCHEMA_2020_12` at registration."""
    return "schema preserved"


# ---- tools: content types ------------------------------------------------------------------


def add_content_tools(server: MCPServer) -> None:
    @server.tool()
    def test_simple_text() -> CallToolResult:
        """Returns one text block."""
        return text("This is a simple text response for testing.")

    @server.tool()
    def test_image_content() -> CallToolResult:
        """Returns one PNG image block."""
        return CallToolResult(content=[ImageContent(type="image", data=PNG, mime_type="image/png")])

    @server.tool()
    def test_audio_content() -> CallToolResult:
        """Returns one WAV audio block."""
        return CallToolResult(content=[AudioContent(type="audio", data=WAV, mime_type="audio/wav")])

    @server.tool()
    def test_embedded_resource() -> CallToolResult:
        """Returns one embedded text resource."""
        resource = TextResourceContents(
            uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
        )
        return CallToolResult(content=[EmbeddedResource(type="resource", resource=resource)])

    @server.tool()
    def test_multiple_content_types() -> CallToolResult:
        """Returns text, image and embedded resource together."""
        resource = TextResourceContents(
            uri="test://mixed-content-resource", mime_type="application/json", text='{"test":"data","value":123}'
        )
        return CallToolResult(
            content=[
                TextContent(type="text", text="Multiple content types test:"),
                ImageContent(type="image", data=PNG, mime_type="image/png"),
                EmbeddedResource(type="resource", resource=resource),
            ]
        )

    @server.tool()
    def test_error_handling() -> CallToolResult:
        """Always fails, as a tool error result rather than a protocol error."""
        return CallToolResult(
            content=[TextContent(type="text", text="This tool intentionally returns an error for testing")],
            is_error=True,
        )

    @server.tool()
    def test_header_param(
        region: Annotated[str, Field(description="Echoed back", json_schema_extra={"x-mcp-header": "Region"})],
    ) -> str:
        """An argument mirrored in an ``Mcp-Param-Region`` header (SEP-2243): the SDK checks the two agree."""
        return f"region={region}"


# ---- tools: logging, progress, stream control ---------------------------------------------


def add_notifying_tools(server: MCPServer, state: FixtureState) -> None:
    async def log(ctx: Context[Any, Any], level: LoggingLevel, message: str) -> None:
        """Honour logging/setLevel in the legacy era; the SDK gates the 2026-07-28 era per request."""
        if LOG_LEVELS.index(level) >= LOG_LEVELS.index(state.log_level) or is_modern(ctx):
            await ctx.session.send_log_message(level, message, related_request_id=ctx.request_context.request_id)

    @server.tool()
    async def test_tool_with_logging(ctx: Context) -> str:
        """Sends three info log notifications, 50 ms apart, before answering."""
        await log(ctx, "info", "Tool execution started")
        await anyio.sleep(0.05)
        await log(ctx, "info", "Tool processing data")
        await anyio.sleep(0.05)
        await log(ctx, "info", "Tool execution completed")
        return "Tool with logging executed successfully"

    @server.tool()
    async def test_logging_tool(ctx: Context) -> str:
        """Logs once: in 2026-07-28 nothing may reach a client that did not ask for a log level."""
        await log(ctx, "info", "test_logging_tool ran")
        return "logged"

    @server.tool()
    async def test_tool_with_progress(ctx: Context) -> str:
        """Reports 0, 50 and 100 of 100, 50 ms apart (sent only when the call carries a progress token)."""
        for step, progress in enumerate((0, 50, 100)):
            if step:
                await anyio.sleep(0.05)
            await ctx.report_progress(progress, 100, f"{progress}% done")
        return "Tool with progress executed successfully"

    @server.tool()
    async def test_reconnection(ctx: Context) -> str:
        """Closes its SSE stream mid-call; the result waits in the event store for the reconnect."""
        await anyio.sleep(0.1)
        await ctx.close_sse_stream()
        await anyio.sleep(0.3)
        return "Reconnection test completed"


# ---- tools: sampling and elicitation, in either era -----------------------------------------

SEP1034_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
}

SEP1330_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "untitledSingle": {
            "type": "string",
            "description": "Untitled single-select",
            "enum": ["option1", "option2", "option3"],
        },
        "titledSingle": {
            "type": "string",
            "description": "Titled single-select",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "description": "Legacy titled enum",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "description": "Untitled multi-select",
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "description": "Titled multi-select",
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
}


def add_interactive_tools(server: MCPServer) -> None:
    @server.tool()
    async def test_sampling(prompt: str, ctx: Context) -> CallToolResult | InputRequiredResult:
        """Asks the client's LLM the prompt and reports its answer."""
        reply = await ask_once(ctx, "sampling", sampling_request(prompt, 100), CreateMessageResult)
        if isinstance(reply, InputRequiredResult):
            return reply
        return text(f"LLM response: {sampled_text(reply)}")

    @server.tool()
    async def test_elicitation(message: str, ctx: Context) -> CallToolResult | InputRequiredResult:
        """Asks the user for a username and email and reports what came back."""
        schema = {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        }
        return await elicited_text(ctx, "elicitation", elicit_request(message, schema), "User response")

    @server.tool()
    async def test_elicitation_sep1034_defaults(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Elicits a form whose every primitive field has a default (SEP-1034)."""
        request = elicit_request("Please review and update the form fields with defaults", SEP1034_SCHEMA)
        return await elicited_text(ctx, "defaults", request, "Elicitation completed")

    @server.tool()
    async def test_elicitation_sep1330_enums(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Elicits a form with all five enum shapes (SEP-1330)."""
        request = elicit_request("Please select options from the enum fields", SEP1330_SCHEMA)
        return await elicited_text(ctx, "enums", request, "Elicitation completed")

    @server.tool()
    async def test_streaming_elicitation(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Elicits once; in 2026-07-28 the question must ride the result, never a request on the stream."""
        request = elicit_request("Streaming elicitation: what is your name?", NAME_SCHEMA)
        return await elicited_text(ctx, "streaming_name", request, "Streaming elicitation completed")

    @server.tool()
    async def test_missing_capability(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Needs sampling; a client that did not declare it gets -32021 instead of a question."""
        reply = await ask_once(ctx, "sampling", sampling_request("Say hello", 20), CreateMessageResult)
        if isinstance(reply, InputRequiredResult):
            return reply
        return text("sampling answered")


# ---- tools: the 2026-07-28 multi-round-trip flow (SEP-2322) --------------------------------


def add_input_required_tools(server: MCPServer) -> None:
    @server.tool()
    async def test_input_required_result_elicitation(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Asks the user's name, then greets them."""
        reply = await ask_once(ctx, "user_name", ask_name(), ElicitResult)
        if isinstance(reply, InputRequiredResult):
            return reply
        return text(f"Hello, {elicited(reply, 'name')}!")

    @server.tool()
    async def test_input_required_result_sampling(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Asks the client's LLM a question, then reports the answer."""
        request = sampling_request("What is the capital of France?", 100)
        reply = await ask_once(ctx, "capital_question", request, CreateMessageResult)
        if isinstance(reply, InputRequiredResult):
            return reply
        return text(f"The model said: {sampled_text(reply)}")

    @server.tool()
    async def test_input_required_result_list_roots(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Asks for the client's roots, then lists them."""
        reply = await ask_once(ctx, "client_roots", ListRootsRequest(), ListRootsResult)
        if isinstance(reply, InputRequiredResult):
            return reply
        return text("Client roots: " + ", ".join(str(root.uri) for root in reply.roots))

    @server.tool()
    async def test_input_required_result_request_state(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Round-trips requestState (sealed by the SDK) and proves it came back intact."""
        reply = answered(ctx, "confirm", ElicitResult)
        if reply is None or ctx.request_state != "round-1":
            schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
            return input_required({"confirm": elicit_request("Please confirm", schema)}, "round-1")
        return text(f"state-ok: confirmed={elicited(reply, 'ok')}")

    @server.tool()
    async def test_input_required_result_multiple_inputs(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Asks three things at once (elicitation, sampling, roots) and needs all three back."""
        name = answered(ctx, "user_name", ElicitResult)
        greeting = answered(ctx, "greeting", CreateMessageResult)
        roots = answered(ctx, "client_roots", ListRootsResult)
        if name is None or greeting is None or roots is None or ctx.request_state != "multiple":
            requests: dict[str, InputRequest] = {
                "user_name": ask_name(),
                "greeting": sampling_request("Generate a greeting", 50),
                "client_roots": ListRootsRequest(),
            }
            return input_required(requests, "multiple")
        return text(
            f"name={elicited(name, 'name')}, greeting={sampled_text(greeting)}, roots={len(roots.roots)} root(s)"
        )

    @server.tool()
    async def test_input_required_result_multi_round(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Two rounds: the name, then a colour; the state says which round the client is on."""
        if ctx.request_state and ctx.request_state.startswith("round-2:"):
            color = answered(ctx, "step2", ElicitResult)
            name = ctx.request_state.removeprefix("round-2:")
            if color is not None:
                return text(f"{name} likes {elicited(color, 'color')}")
        else:
            step1 = answered(ctx, "step1", ElicitResult)
            if step1 is None or ctx.request_state != "round-1":
                return input_required({"step1": ask_name("Step 1: What is your name?")}, "round-1")
            name = elicited(step1, "name")
        schema = {"type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"]}
        step2 = elicit_request("Step 2: What is your favorite color?", schema)
        return input_required({"step2": step2}, f"round-2:{name}")

    @server.tool()
    async def test_input_required_result_tampered_state(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Needs requestState back; the SDK seals it (AES-GCM), so a tampered echo is rejected."""
        reply = answered(ctx, "confirm", ElicitResult)
        if reply is None or ctx.request_state != "untampered":
            schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
            return input_required({"confirm": elicit_request("Please confirm", schema)}, "untampered")
        return text("state verified")

    @server.tool()
    async def test_input_required_result_capabilities(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Asks only what the client declared it can answer."""
        candidates: dict[str, InputRequest] = {
            "user_name": ask_name(),
            "greeting": sampling_request("Generate a greeting", 50),
            "client_roots": ListRootsRequest(),
        }
        wanted = {key: request for key, request in candidates.items() if client_declared(ctx, request)}
        missing = {key: request for key, request in wanted.items() if key not in (ctx.input_responses or {})}
        if missing:
            return input_required(missing)
        if not wanted:
            return text("the client declared no capability to ask through")
        return text(f"answered: {', '.join(sorted(wanted))}")

    @server.prompt()
    async def test_input_required_result_prompt(ctx: Context) -> str | InputRequiredResult:
        """A prompt that asks for context first: InputRequiredResult is not only for tools."""
        schema = {"type": "object", "properties": {"context": {"type": "string"}}, "required": ["context"]}
        request = elicit_request("What context should the prompt use?", schema)
        reply = await ask_once(ctx, "user_context", request, ElicitResult)
        if isinstance(reply, InputRequiredResult):
            return reply
        return f"Prompt using context: {elicited(reply, 'context')}"


# ---- tools: list-changed triggers for subscriptions/listen (2026-07-28) and the GET stream --


def add_list_changed_triggers(server: MCPServer, state: FixtureState) -> None:
    @server.tool()
    async def test_trigger_tool_change(ctx: Context) -> str:
        """Adds a tool, then says the tool list changed."""
        state.dynamic_tools += 1
        name = f"test_dynamic_tool_{state.dynamic_tools}"

        def dynamic_tool() -> str:
            return name

        server.add_tool(dynamic_tool, name=name, description="Added at run time by test_trigger_tool_change.")
        await notify(ctx, ctx.notify_tools_changed, ctx.session.send_tool_list_changed)
        return f"added {name}"

    @server.tool()
    async def test_trigger_prompt_change(ctx: Context) -> str:
        """Adds a prompt, then says the prompt list changed."""
        state.dynamic_prompts += 1
        name = f"test_dynamic_prompt_{state.dynamic_prompts}"

        def dynamic_prompt() -> str:
            return name

        server.prompt(name=name, description="Added at run time by test_trigger_prompt_change.")(dynamic_prompt)
        await notify(ctx, ctx.notify_prompts_changed, ctx.session.send_prompt_list_changed)
        return f"added {name}"


async def notify(
    ctx: Context[Any, Any], modern: Callable[[], Awaitable[None]], legacy: Callable[[], Awaitable[None]]
) -> None:
    """2026-07-28 delivers list changes on subscriptions/listen streams; earlier eras on the session."""
    if is_modern(ctx):
        await modern()
    else:
        await legacy()


# ---- resources ----------------------------------------------------------------------------


def add_task_extension_tools(server: MCPServer) -> None:
    """The tasks extension's (SEP-2663) fixtures, as far as an SDK without that extension goes.

    SDK 2.3.0 has no tasks (no ``tasks/get``, no task results), so ``slow_compute`` answers at
    once and synchronously. That is what the extension's checks of a client that did not opt in
    expect; the checks that need a task fail, and expected-failures.yml says so. Without these
    tools those checks would pass directly by accident, on the SDK's "unknown tool" result.
    """

    @server.tool()
    def greet(name: str = "world") -> str:
        """Sync-only: never becomes a task."""
        return f"Hello, {name}!"

    @server.tool()
    def slow_compute(seconds: float = 0, label: str = "") -> str:
        """Would sleep ``seconds`` as a task; synchronous here, so it does not sleep at all."""
        return f"computed {label}".strip()

    @server.tool()
    def confirm_delete(filename: str) -> str:
        """Would ask for confirmation inside a task; here it only says what it would delete."""
        return f"would delete {filename}"


def add_resources(server: MCPServer) -> None:
    @server.resource("test://static-text", name="static-text", mime_type="text/plain")
    def static_text() -> str:
        """A fixed text resource."""
        return "This is the content of the static text resource."

    @server.resource("test://static-binary", name="static-binary", mime_type="image/png")
    def static_binary() -> bytes:
        """A fixed binary resource (a 1x1 PNG)."""
        return base64.b64decode(PNG)

    @server.resource("test://watched-resource", name="watched-resource", mime_type="text/plain")
    def watched_resource() -> str:
        """The resource the subscription scenarios subscribe to."""
        return "Watched resource content."

    @server.resource("test://template/{id}/data", name="template-data", mime_type="application/json")
    def template_data(id: str) -> str:
        """A resource template: the id is substituted into the data."""
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"}, separators=(",", ":"))


# ---- prompts ------------------------------------------------------------------------------


def add_prompts(server: MCPServer) -> None:
    @server.prompt()
    def test_simple_prompt() -> str:
        """A prompt without arguments."""
        return "This is a simple prompt for testing."

    @server.prompt()
    def test_prompt_with_arguments(
        arg1: Annotated[str, Field(description="First test argument")],
        arg2: Annotated[str, Field(description="Second test argument")],
    ) -> str:
        """A prompt with two required arguments."""
        return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"

    @server.prompt()
    def test_prompt_with_embedded_resource(
        resourceUri: Annotated[str, Field(description="URI of the resource to embed")],
    ) -> list[dict[str, Any]]:
        """A prompt that embeds a resource, then asks about it."""
        resource = TextResourceContents(
            uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
        )
        return [
            {"role": "user", "content": EmbeddedResource(type="resource", resource=resource)},
            {"role": "user", "content": TextContent(type="text", text="Please process the embedded resource above.")},
        ]

    @server.prompt()
    def test_prompt_with_image() -> list[dict[str, Any]]:
        """A prompt with an image, then a question about it."""
        return [
            {"role": "user", "content": ImageContent(type="image", data=PNG, mime_type="image/png")},
            {"role": "user", "content": TextContent(type="text", text="Please analyze the image above.")},
        ]


# ---- completions --------------------------------------------------------------------------

COMPLETIONS: dict[str, list[str]] = {
    "arg1": ["paris", "park", "party", "test", "testing"],
    "arg2": ["world", "wonder", "work"],
    "id": ["123", "124", "456"],
}


def add_completions(server: MCPServer) -> None:
    # MCPServer.completion() carries no annotations in SDK 2.3.0; the handler below is fully typed.
    @server.completion()  # type: ignore[no-untyped-call, untyped-decorator]
    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion:
        """Prefix matches for the prompt's and the template's arguments."""
        candidates = COMPLETIONS.get(argument.name, [])
        values = [value for value in candidates if value.startswith(argument.value)]
        return Completion(values=values, total=len(values), has_more=False)


# ---- legacy-era utilities the SDK's MCPServer does not register itself ---------------------


def add_legacy_utilities(server: MCPServer, state: FixtureState) -> None:
    """logging/setLevel and resources/(un)subscribe, on the low-level server under MCPServer.

    MCPServer has no decorator for either, so they are added as plain request handlers; the SDK
    then advertises the ``logging`` and ``resources.subscribe`` capabilities because a handler
    exists. Both methods are gone in 2026-07-28, where the SDK answers them with -32601.
    """
    lowlevel = server._lowlevel_server

    async def set_level(ctx: ServerRequestContext[Any], params: SetLevelRequestParams) -> EmptyResult:
        state.log_level = params.level
        return EmptyResult()

    async def subscribe(ctx: ServerRequestContext[Any], params: SubscribeRequestParams) -> EmptyResult:
        state.subscriptions.add(str(params.uri))
        return EmptyResult()

    async def unsubscribe(ctx: ServerRequestContext[Any], params: UnsubscribeRequestParams) -> EmptyResult:
        state.subscriptions.discard(str(params.uri))
        return EmptyResult()

    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--transport", choices=["streamable-http", "stdio"], default="streamable-http")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    server = build()
    if args.transport == "stdio":
        server.run("stdio")
        return
    server.run("streamable-http", host=args.host, port=args.port, event_store=InMemoryEventStore(), retry_interval=1000)


if __name__ == "__main__":
    main()
