"""What every message-level upstream shares: a stdio child or a legacy HTTP+SSE server.

A ``Channel`` is one MCP connection that the gateway opens itself, initializes once and shares
among every client: request ids and progress tokens are rewritten so that many callers can have
calls in flight and each answer reaches its own; a request the server sends goes to the one
caller that can hear it, or is declined; notifications that belong to no call go to
subscribers. A supervisor keeps the connection up: when it ends, calls in flight fail at once,
and it is opened again after an exponential back-off with jitter.

Subclasses say how to open it (``_run_once``: connect, initialize, serve until it ends), how to
send (``_send``) and how to stop (``_shutdown``); they hand what the server says to
``_message``. ``upstream.bridge`` serves any channel to the gateway core as Streamable HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from mcpgate import __version__, jsonrpc
from mcpgate.errors import GatewayError

if TYPE_CHECKING:
    from mcpgate.config.model import UpstreamConfig

log = logging.getLogger("mcpgate.upstream")

BACKOFF_BASE: Final = 0.5
BACKOFF_CAP: Final = 30.0
STABLE_AFTER: Final = 30.0

State = Literal["starting", "running", "restarting", "stopped"]
Listener = Callable[[dict[str, Any]], None]


@dataclass(slots=True)
class _Call:
    future: asyncio.Future[dict[str, Any]]
    listener: Listener | None  # gets the call's progress (token restored) and the server's requests
    progress_token: object  # the client's own, or None


class Channel:
    kind = "channel"  # what /readyz calls it

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        capabilities: Mapping[str, Any] | None = None,
        rng: Callable[[], float] = random.random,
        restart: bool = True,
    ) -> None:
        """``restart=False`` opens it once (a probe): when it ends, waiting callers fail at once."""
        self.config = config
        self.name = config.name
        self.state: State = "stopped"
        self.restarts = 0
        self.skipped = 0  # messages that were not JSON-RPC, or too long
        self.last_error: str | None = None
        self.initialize_result: dict[str, Any] | None = None
        self._capabilities = dict(capabilities or {})
        self._rng = rng
        self._restart = restart
        self._ended = asyncio.Event()  # the supervisor gave up (restart=False) or was closed
        self._ids = itertools.count(1)
        self._calls: dict[int, _Call] = {}
        self._progress: dict[str, int] = {}  # the token the server sees -> our id of the call
        self._subscribers: set[Listener] = set()
        self._ready = asyncio.Event()
        self._started = asyncio.Event()
        self._closing = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None

    # -- what a subclass provides ----------------------------------------------------------------

    async def _run_once(self) -> str:
        """Open, initialize (``_initialize``), serve until it ends; say how it ended."""
        raise NotImplementedError

    async def _send(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    async def _shutdown(self) -> None:
        """End the current connection (or process) now."""
        raise NotImplementedError

    def kill(self) -> None:
        """For an immediate exit of the gateway: stop at once, without waiting (nothing to do here)."""

    def details(self) -> dict[str, Any]:
        """What /readyz adds for this kind of channel."""
        return {}

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._started.is_set()

    async def wait_started(self) -> None:
        await self._started.wait()

    async def start(self) -> None:
        """Start supervising; the first spawn happens in the background (``wait_ready`` waits for it)."""
        if self._supervisor is None:
            self._closing.clear()
            self._supervisor = asyncio.create_task(self._supervise(), name=f"{self.kind}-{self.name}")
            self._started.set()

    async def wait_ready(self, seconds: float) -> None:
        if self._ready.is_set():
            return
        ready, ended = asyncio.create_task(self._ready.wait()), asyncio.create_task(self._ended.wait())
        try:
            await asyncio.wait({ready, ended}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            ended.cancel()
        if not self._ready.is_set():
            raise self._unavailable("is not running" + (f" ({self.last_error})" if self.last_error else ""))

    async def close(self) -> None:
        self._closing.set()
        await self._shutdown()
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        self.state = "stopped"

    def status(self) -> dict[str, Any]:
        """For /readyz: the child as an operator needs to see it (the protocol is the child's own)."""
        version = (self.initialize_result or {}).get("protocolVersion")
        state = self.state if self.started else "idle"
        status: dict[str, Any] = {"transport": self.kind, "process": state, "restarts": self.restarts}
        status |= self.details()
        status["protocol"] = version if self.state == "running" else None
        if self.state != "running" and self.last_error is not None:
            status["last_error"] = self.last_error
        return status

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Notifications the child sends that belong to no call; returns the unsubscribe function."""
        self._subscribers.add(listener)
        return lambda: self._subscribers.discard(listener)

    # -- calls ----------------------------------------------------------------------------------

    async def request(
        self, message: Mapping[str, Any], *, seconds: float | None = None, listener: Listener | None = None
    ) -> dict[str, Any]:
        """Send a client's request; its answer comes back with the client's own id.

        ``seconds`` bounds the wait for the answer (default: the upstream's ``timeout``).
        """
        await self.wait_ready(self.config.connect_timeout)
        return await self._call(message, seconds=seconds, listener=listener)

    async def notify(self, message: Mapping[str, Any]) -> None:
        await self.wait_ready(self.config.connect_timeout)
        await self._send(dict(message))

    async def _call(
        self, message: Mapping[str, Any], *, seconds: float | None, listener: Listener | None
    ) -> dict[str, Any]:
        own_id = next(self._ids)
        sent = {**message, "id": own_id}
        params = message.get("params")
        token = None
        if isinstance(params, dict) and isinstance(meta := params.get("_meta"), dict) and "progressToken" in meta:
            token = meta["progressToken"]
            sent["params"] = {**params, "_meta": {**meta, "progressToken": f"mcpgate-{own_id}"}}
            self._progress[f"mcpgate-{own_id}"] = own_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._calls[own_id] = _Call(future, listener, token)
        try:
            await self._send(sent)
            async with asyncio.timeout(self.config.timeout if seconds is None else seconds):
                answer = await future
        except TimeoutError:
            await self._cancel(own_id, "timed out")
            raise GatewayError(
                "upstream_timeout", f"Upstream {self.name!r} did not answer in time", data={"upstream": self.name}
            ) from None
        except asyncio.CancelledError:
            await self._cancel(own_id, "the client went away")
            raise
        finally:
            self._calls.pop(own_id, None)
            self._progress.pop(f"mcpgate-{own_id}", None)
        return {**answer, "id": message.get("id")}

    async def _cancel(self, own_id: int, reason: str) -> None:
        """Tell the child to stop working on a call nobody waits for any more (best effort)."""
        note = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": own_id, "reason": reason},
        }
        with contextlib.suppress(GatewayError):
            await asyncio.shield(self._send(note))

    async def respond(self, message: Mapping[str, Any]) -> None:
        """A client's answer to a request the child sent (its id is the child's own)."""
        await self._send(dict(message))

    # -- what the server says ----------------------------------------------------------------------

    def _fail_calls(self, error: GatewayError) -> None:
        for call in self._calls.values():
            if not call.future.done():
                call.future.set_exception(error)

    def _message(self, decoded: object) -> None:
        """What the server said, decoded: one message or a batch of them."""
        for message in decoded if isinstance(decoded, list) else [decoded]:
            if isinstance(message, dict) and message.get("jsonrpc") == "2.0":
                self._dispatch(message)
            else:
                self._skip("sent JSON that is not a JSON-RPC 2.0 message")

    def _skip(self, what: str) -> None:
        self.skipped += 1
        if self.skipped <= 10 or self.skipped % 1000 == 0:  # a babbling child cannot flood the log
            log.warning("upstream %s %s (skipped; %d so far)", self.name, what, self.skipped)

    def _dispatch(self, message: dict[str, Any]) -> None:
        method, message_id = message.get("method"), message.get("id")
        if method is None:
            call = self._calls.get(message_id) if isinstance(message_id, int) else None
            if call is not None and not call.future.done():
                call.future.set_result(message)
            return
        if message_id is not None:
            self._child_request(message)
            return
        params = message.get("params")
        token = params.get("progressToken") if isinstance(params, dict) else None
        if method == "notifications/progress" and isinstance(token, str) and token in self._progress:
            call = self._calls.get(self._progress[token])
            if call is not None and call.listener is not None:
                assert isinstance(params, dict)
                call.listener({**message, "params": {**params, "progressToken": call.progress_token}})
            return
        for subscriber in list(self._subscribers):
            subscriber(message)

    def _child_request(self, message: dict[str, Any]) -> None:
        """The child asks its client something: the caller of the one call in flight that can
        hear it, if exactly one; anything else is declined rather than left unanswered."""
        listening = [call for call in self._calls.values() if call.listener is not None]
        if len(listening) == 1 and listening[0].listener is not None:
            listening[0].listener(message)
            return
        error = {"code": -32601, "message": "mcpgate: no single client can answer this request"}
        decline = {"jsonrpc": "2.0", "id": message["id"], "error": error}
        task = asyncio.get_running_loop().create_task(self._send(decline))
        task.add_done_callback(lambda t: t.exception())  # a child that is gone needs no answer

    # -- keeping it up ---------------------------------------------------------------------------

    async def _supervise(self) -> None:
        attempt = 0
        while not self._closing.is_set():
            started = time.monotonic()
            self.state = "starting" if self.restarts == 0 else "restarting"
            code = await self._run_once()
            if self._closing.is_set() or not self._restart:
                self.state = "stopped"
                self._ended.set()
                break
            attempt = 0 if time.monotonic() - started >= STABLE_AFTER else attempt + 1
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)) * (0.5 + self._rng())
            self.restarts += 1
            self.state = "restarting"
            log.warning("upstream %s ended (%s); opening it again in %.1fs", self.name, code, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()

    async def _initialize(self) -> None:
        params = {
            "protocolVersion": jsonrpc.LATEST_LEGACY,
            "capabilities": self._capabilities,
            "clientInfo": {"name": "mcpgate", "version": __version__},
        }
        answer = await self._call(
            {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params},
            seconds=self.config.connect_timeout,
            listener=None,
        )
        result = answer.get("result")
        if not isinstance(result, dict):
            error = answer.get("error")
            why = error.get("message") if isinstance(error, dict) else "no result"
            raise GatewayError("upstream_bad_response", f"Upstream {self.name!r} refused initialize: {why}")
        self.initialize_result = result
        await self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def _unavailable(self, what: str) -> GatewayError:
        return GatewayError("upstream_unavailable", f"Upstream {self.name!r} {what}", data={"upstream": self.name})
