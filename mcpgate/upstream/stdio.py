"""stdio upstreams: a child process that speaks MCP as newline-delimited JSON-RPC (DESIGN section 6).

``StdioProcess`` owns one child and shares it among every client:

- it spawns the command in a process group of its own (``npx`` starts ``node``: both must go),
  with only a small allowlist of the gateway's environment plus the upstream's ``env``, so that
  the gateway's own secrets do not leak into every server it runs;
- it initializes the child once, and rewrites request ids (and progress tokens) so that many
  clients' calls can be in flight at once and each answer reaches the right caller;
- it reads stdout with its own framing: a line over 1 MiB is dropped (failing the call it
  answers, when its id can be read) and a line that is not JSON-RPC is logged and skipped;
  nothing the child writes can crash the gateway or stall other calls;
- stderr goes to the gateway's log under the upstream's name;
- when the child exits, calls in flight fail at once, and it is started again after an
  exponential back-off with jitter (reset once a run lasted ``STABLE_AFTER`` seconds);
- ``close`` sends SIGTERM to the group, SIGKILL after a grace period, and reaps the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import re
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from mcpgate import __version__, jsonrpc
from mcpgate.errors import GatewayError

if TYPE_CHECKING:
    from mcpgate.config.model import UpstreamConfig

log = logging.getLogger("mcpgate.upstream")
stderr_log = logging.getLogger("mcpgate.upstream.stderr")

MAX_MESSAGE: Final = 1024 * 1024
MAX_STDERR_LINE: Final = 4096
READ_CHUNK: Final = 64 * 1024
BACKOFF_BASE: Final = 0.5
BACKOFF_CAP: Final = 30.0
STABLE_AFTER: Final = 30.0
KILL_GRACE: Final = 5.0
# What a child inherits from the gateway's environment; the upstream's `env` adds the rest.
INHERITED_ENV: Final = ("HOME", "LANG", "LC_ALL", "LOGNAME", "PATH", "SHELL", "TERM", "TMPDIR", "TZ", "USER")
_ID_IN_HEAD: Final = re.compile(rb'"id"\s*:\s*(\d{1,18})\b')

State = Literal["starting", "running", "restarting", "stopped"]
Listener = Callable[[dict[str, Any]], None]


@dataclass(slots=True)
class _Call:
    future: asyncio.Future[dict[str, Any]]
    listener: Listener | None  # gets the call's progress (token restored) and the child's requests
    progress_token: object  # the client's own, or None


class StdioProcess:
    def __init__(
        self,
        config: UpstreamConfig,
        *,
        capabilities: Mapping[str, Any] | None = None,
        rng: Callable[[], float] = random.random,
        kill_grace: float = KILL_GRACE,
        restart: bool = True,
    ) -> None:
        """``restart=False`` runs the child once (a probe): when it ends, waiting callers fail at once."""
        if not config.command:  # pragma: no cover - guaranteed by the config schema
            raise ValueError(f"upstream {config.name!r} has no command")
        self.config = config
        self.name = config.name
        self.state: State = "stopped"
        self.restarts = 0
        self.skipped = 0  # lines that were not JSON-RPC, or too long
        self.last_error: str | None = None
        self.pid: int | None = None
        self.initialize_result: dict[str, Any] | None = None
        self._capabilities = dict(capabilities or {})
        self._rng = rng
        self._kill_grace = kill_grace
        self._restart = restart
        self._ended = asyncio.Event()  # the supervisor gave up (restart=False) or was closed
        self._ids = itertools.count(1)
        self._calls: dict[int, _Call] = {}
        self._progress: dict[str, int] = {}  # the token the child sees -> our id of the call
        self._subscribers: set[Listener] = set()
        self._proc: asyncio.subprocess.Process | None = None
        self._write_lock = asyncio.Lock()
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start supervising; the first spawn happens in the background (``wait_ready`` waits for it)."""
        if self._supervisor is None:
            self._closing.clear()
            self._supervisor = asyncio.create_task(self._supervise(), name=f"stdio-{self.name}")

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
        await self._stop_child()
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        self.state = "stopped"

    def status(self) -> dict[str, Any]:
        """For /readyz: the child as an operator needs to see it (the protocol is the child's own)."""
        version = (self.initialize_result or {}).get("protocolVersion")
        status: dict[str, Any] = {"process": self.state, "pid": self.pid, "restarts": self.restarts}
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
        await self._write(dict(message))

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
            await self._write(sent)
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
            await asyncio.shield(self._write(note))

    async def respond(self, message: Mapping[str, Any]) -> None:
        """A client's answer to a request the child sent (its id is the child's own)."""
        await self._write(dict(message))

    async def _write(self, message: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            raise self._unavailable("is not running")
        async with self._write_lock:
            try:
                proc.stdin.write(jsonrpc.dumps(message) + b"\n")
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                raise self._unavailable("closed its input") from None

    # -- what the child says ---------------------------------------------------------------------

    async def _read_stdout(self, stream: asyncio.StreamReader) -> None:
        """Split stdout into lines without ever holding more than one bounded line."""
        line = bytearray()
        head: bytes | None = None  # the start of a line too long to keep, while it is skipped
        while chunk := await stream.read(READ_CHUNK):
            start = 0
            while True:
                end = chunk.find(b"\n", start)
                piece = chunk[start : end if end >= 0 else len(chunk)]
                if head is None and len(line) + len(piece) > MAX_MESSAGE:
                    head = bytes((line + piece)[:256])
                    line.clear()
                elif head is None:
                    line += piece
                if end < 0:
                    break
                if head is None:
                    self._line(bytes(line))
                else:
                    self._oversized(head)
                    head = None
                line.clear()
                start = end + 1
        # No answer can come any more: new calls wait for the next process, and what waits fails
        # now, not when the process is reaped.
        self._ready.clear()
        self._fail_calls(self._unavailable("closed its output (exited?)"))

    def _fail_calls(self, error: GatewayError) -> None:
        for call in self._calls.values():
            if not call.future.done():
                call.future.set_exception(error)

    def _line(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            decoded = jsonrpc.loads(raw)
        except ValueError:
            self._skip("wrote a line that is not JSON")
            return
        for message in decoded if isinstance(decoded, list) else [decoded]:
            if isinstance(message, dict) and message.get("jsonrpc") == "2.0":
                self._dispatch(message)
            else:
                self._skip("wrote JSON that is not a JSON-RPC 2.0 message")

    def _oversized(self, head: bytes) -> None:
        self._skip(f"wrote a message over {MAX_MESSAGE} bytes")
        found = _ID_IN_HEAD.search(head)
        call = self._calls.get(int(found.group(1))) if found else None
        if call is not None and not call.future.done():
            call.future.set_exception(
                GatewayError(
                    "upstream_bad_response", f"Upstream {self.name!r} answered with more than {MAX_MESSAGE} bytes"
                )
            )

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
        task = asyncio.get_running_loop().create_task(self._write(decline))
        task.add_done_callback(lambda t: t.exception())  # a child that is gone needs no answer

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line over the reader's limit: dropped by the reader
                continue
            if not raw:
                return
            text = raw.decode("utf-8", "replace").rstrip()[:MAX_STDERR_LINE]
            if text:
                stderr_log.info("%s: %s", self.name, text, extra={"upstream": self.name})

    # -- the child itself ------------------------------------------------------------------------

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
            log.warning("upstream %s exited (%s); starting it again in %.1fs", self.name, code, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()

    async def _run_once(self) -> str:
        """Spawn, initialize, serve until the child exits; say how it ended."""
        try:
            proc = await self._spawn()
        except OSError as exc:
            self.last_error = f"cannot start {self.config.command[0]!r}: {exc.strerror or exc}"
            return self.last_error
        assert proc.stdout is not None
        assert proc.stderr is not None
        readers = [
            asyncio.create_task(self._read_stdout(proc.stdout)),
            asyncio.create_task(self._read_stderr(proc.stderr)),
        ]
        try:
            await self._initialize()
            self.state = "running"
            self.last_error = None
            self._ready.set()
            await proc.wait()
        except GatewayError as exc:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):  # did it simply exit?
                    await proc.wait()
            if proc.returncode is not None:
                self.last_error = f"exited with status {proc.returncode} before answering initialize"
            else:
                self.last_error = f"initialize failed: {exc.message}"
                await self._stop_child()
        finally:
            self._ready.clear()
            await asyncio.gather(*readers, return_exceptions=True)
            self._fail_calls(self._unavailable(f"exited with status {proc.returncode}"))
        ended = f"status {proc.returncode}"
        if self.last_error is None:
            self.last_error = f"exited with {ended}"
        return ended

    async def _spawn(self) -> asyncio.subprocess.Process:
        env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
        env.update(self.config.env)
        proc = await asyncio.create_subprocess_exec(
            *self.config.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=self.config.cwd,
            start_new_session=True,  # its own process group: SIGTERM reaches what it starts too
            limit=MAX_STDERR_LINE * 4,
        )
        self._proc, self.pid = proc, proc.pid
        log.info("upstream %s started (pid %d)", self.name, proc.pid)
        return proc

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
        await self._write({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def _stop_child(self) -> None:
        """SIGTERM to the group, SIGKILL after the grace period; always reaped."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(self._kill_grace):
                await proc.wait()
        except TimeoutError:
            log.warning("upstream %s ignored SIGTERM for %gs: killing it", self.name, self._kill_grace)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    def _unavailable(self, what: str) -> GatewayError:
        return GatewayError("upstream_unavailable", f"Upstream {self.name!r} {what}", data={"upstream": self.name})
