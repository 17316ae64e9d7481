"""stdio upstreams: a child process that speaks MCP as newline-delimited JSON-RPC (DESIGN section 6).

``StdioProcess`` is the ``Channel`` (sharing, id rewriting, restarts: see ``channel``) over one
child process:

- it spawns the command in a process group of its own (``npx`` starts ``node``: both must go),
  with only a small allowlist of the gateway's environment plus the upstream's ``env``, so that
  the gateway's own secrets do not leak into every server it runs;
- it reads stdout with its own framing: a line over 1 MiB is dropped (failing the call it
  answers, when its id can be read) and a line that is not JSON-RPC is logged and skipped;
  nothing the child writes can crash the gateway or stall other calls;
- stderr goes to the gateway's log under the upstream's name;
- when the child exits, calls in flight fail at once (not when it is reaped);
- ``close`` sends SIGTERM to the group, SIGKILL after a grace period, and reaps the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from typing import TYPE_CHECKING, Any, Final

from mcpgate import jsonrpc
from mcpgate.errors import GatewayError
from mcpgate.upstream.channel import Channel

if TYPE_CHECKING:
    from mcpgate.config.model import UpstreamConfig

log = logging.getLogger("mcpgate.upstream")
stderr_log = logging.getLogger("mcpgate.upstream.stderr")

MAX_MESSAGE: Final = 1024 * 1024
MAX_STDERR_LINE: Final = 4096
READ_CHUNK: Final = 64 * 1024
KILL_GRACE: Final = 5.0
# What a child inherits from the gateway's environment; the upstream's `env` adds the rest.
INHERITED_ENV: Final = ("HOME", "LANG", "LC_ALL", "LOGNAME", "PATH", "SHELL", "TERM", "TMPDIR", "TZ", "USER")
_ID_IN_HEAD: Final = re.compile(rb'"id"\s*:\s*(\d{1,18})\b')


class StdioProcess(Channel):
    kind = "stdio"

    def __init__(self, config: UpstreamConfig, *, kill_grace: float = KILL_GRACE, **options: Any) -> None:
        if not config.command:  # pragma: no cover - guaranteed by the config schema
            raise ValueError(f"upstream {config.name!r} has no command")
        super().__init__(config, **options)
        self.pid: int | None = None
        self._kill_grace = kill_grace
        self._proc: asyncio.subprocess.Process | None = None
        self._write_lock = asyncio.Lock()

    def details(self) -> dict[str, Any]:
        return {"pid": self.pid}

    def kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    async def _send(self, message: dict[str, Any]) -> None:
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

    def _line(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            decoded = jsonrpc.loads(raw)
        except ValueError:
            self._skip("wrote a line that is not JSON")
            return
        self._message(decoded)

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
                await self._shutdown()
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

    async def _shutdown(self) -> None:
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
