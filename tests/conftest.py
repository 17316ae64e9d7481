"""Shared fixtures: real peers on loopback, started per test session and always cleaned up."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import node

ROOT = Path(__file__).resolve().parent.parent
DEMO_SERVER = ROOT / "examples" / "servers" / "demo_server.py"
NAMED_SERVER = ROOT / "tests" / "servers" / "named_server.py"
LOOPBACK_PRELOAD = ROOT / "tests" / "servers" / "loopback.cjs"
# The TypeScript reference server: legacy era only, a real legacy-only upstream (tests/node.py).
EVERYTHING = "@modelcontextprotocol/server-everything"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    """Block until something accepts on 127.0.0.1:port, or fail with the process's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def start_demo_server(port: int, script: Path = DEMO_SERVER, *args: str) -> subprocess.Popen[bytes]:
    # Output goes to a file, never an unread pipe: a chatty server would block on a full pipe.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, str(script), "--port", str(port), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_for_port(port, proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc


@pytest.fixture(scope="session")
def mcp_upstream_url() -> Iterator[str]:
    """A real MCP server (official SDK, Streamable HTTP, both eras) in its own process."""
    port = free_port()
    proc = start_demo_server(port)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def named_upstreams() -> Iterator[dict[str, str]]:
    """Two real MCP servers that say who they are (tests/servers/named_server.py): alpha and beta."""
    procs, urls = [], {}
    try:
        for name in ("alpha", "beta"):
            port = free_port()
            procs.append(start_demo_server(port, NAMED_SERVER, "--name", name))
            urls[name] = f"http://127.0.0.1:{port}/mcp"
        yield urls
    finally:
        for proc in procs:
            stop_process(proc)


def require_or_skip(why: str) -> None:
    """Without a service binary the test skips, except in CI (MCPGATE_TEST_REQUIRE_SERVICES=1)."""
    if os.environ.get("MCPGATE_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{why} (MCPGATE_TEST_REQUIRE_SERVICES=1: .ci/run should have installed it)")
    pytest.skip(why)


def everything_command() -> list[str]:
    """How to start server-everything, installing the pinned packages on first use."""
    binary = node.node()
    if binary is None:
        require_or_skip("Node.js is not available: the TypeScript reference server cannot run")
    assert binary is not None
    why = node.ensure_packages()
    if why is not None:
        require_or_skip(why)
    return [str(binary), "--require", str(LOOPBACK_PRELOAD), str(node.entry(EVERYTHING))]


@pytest.fixture(scope="session")
def everything_url() -> Iterator[str]:
    """server-everything (TypeScript, legacy era only) over Streamable HTTP, on loopback."""
    command = everything_command()
    port = free_port()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [*command, "streamableHttp"], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PORT": str(port)}
        )
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop_process(proc)


class RedisServer:
    """Debian's redis-server on a free loopback port, in a temp dir, with nothing saved to disk.
    ``stop``/``start`` again on the same port simulate an outage and the server's return."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--save", "", "--appendonly", "no", "--protected-mode", "yes",
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        require_or_skip("redis-server is not installed (Debian: apt-get install redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def postgres_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl: PATH first, else Debian's newest /usr/lib/postgresql/*/bin.
    Symlinks are resolved, so createdb comes from the same build (Debian's /usr/bin/createdb is a wrapper
    that wants a cluster configured under /etc/postgresql)."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []

    def version(bindir: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in bindir.parent.name.split(".") if part.isdigit())

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for bindir in candidates:
        if all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "createdb")):
            return bindir
    return None


class PostgresServer:
    """Debian's PostgreSQL on a free loopback port, in a fresh temp dir, trusting every local connection,
    with fsync off and a database ``mcpgate``; the superuser is ``postgres`` (``url`` connects as it).
    ``stop`` (a fast shutdown) and ``start`` again, same data and port, simulate an outage and the return.
    initdb and pg_ctl refuse to run as root, so under root they run as the ``postgres`` user."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.directory = Path(tempfile.mkdtemp(prefix="mcpgate-pg-"))  # not tmp_path: root-only (0700) parents
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/mcpgate"
        self.running = False
        self._created = False
        # PG* variables from the environment (PGHOST, PGPORT, PGOPTIONS...) must not redirect the tools.
        self._env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        self._owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self._owner = pwd.getpwnam("postgres")
            os.chown(self.directory, self._owner.pw_uid, self._owner.pw_gid)

    def _run(self, *argv: str, as_owner: bool = True, timeout: float = 60) -> None:
        owner = self._owner if as_owner else None
        # pg_ctl starts the postmaster with its output in self.log, never in this pipe: run() cannot hang on it.
        done = subprocess.run(
            [str(self.bindir / argv[0]), *argv[1:]],
            cwd=self.directory,
            env=self._env,
            capture_output=True,
            timeout=timeout,
            check=False,
            user=owner.pw_uid if owner else None,
            group=owner.pw_gid if owner else None,
            extra_groups=[] if owner else None,
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise RuntimeError(f"{argv[0]} exited with {done.returncode}:\n{output}\n{log}")

    def start(self) -> None:
        if not self.data.exists():
            initdb = [
                "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C",
                "--no-sync",
            ]  # fmt: skip
            self._run(*initdb)
            with (self.data / "postgresql.conf").open("a") as conf:
                conf.write(
                    f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{self.directory}'\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                )
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30")
        self.running = True
        if not self._created:
            # createdb is only a client: it may run as root.
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "mcpgate", as_owner=False)
            self._created = True

    def stop(self) -> None:
        if self.running:
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "30")
            self.running = False

    def cleanup(self) -> None:
        """Stop whatever runs on the data dir (a half-done start included), then remove the temp dir."""
        try:
            if (self.data / "postmaster.pid").exists():
                try:
                    self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "30")
                except (RuntimeError, subprocess.TimeoutExpired):
                    self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30")
            self.running = False
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    bindir = postgres_bindir()
    if bindir is None:
        require_or_skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    assert bindir is not None
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
