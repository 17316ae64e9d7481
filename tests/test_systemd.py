"""systemd: the notify protocol as a real ``mcpgate start`` speaks it to a datagram socket, and
the unit file's shape."""

from __future__ import annotations

import configparser
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcpgate import systemd
from tests.conftest import ROOT, RedisServer, free_port, stop_process

pytestmark = pytest.mark.e2e

UNIT = ROOT / "examples" / "systemd" / "mcpgate.service"


class Listener:
    """What systemd would receive on NOTIFY_SOCKET."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.lines: list[str] = []

    def until(self, predicate: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while predicate not in self.lines:
            assert time.monotonic() < deadline, f"no {predicate!r} in {self.lines}"
            try:
                self.lines += self.sock.recv(4096).decode().split("\n")
            except TimeoutError:
                continue

    def collect(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.lines += self.sock.recv(4096).decode().split("\n")
            except TimeoutError:
                continue

    def close(self) -> None:
        self.sock.close()


def run(config: str, tmp_path: Path, listener: Listener) -> subprocess.Popen[bytes]:
    path = tmp_path / "gateway.yml"
    path.write_text(config)
    env = {**os.environ, "NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "200000"}
    return subprocess.Popen(
        [sys.executable, "-m", "mcpgate", "start", "-c", str(path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_start_says_ready_feeds_the_watchdog_and_says_stopping(mcp_upstream_url: str, tmp_path: Path) -> None:
    listener = Listener(tmp_path)
    port = free_port()
    proc = run(f"server: {{port: {port}}}\nupstreams:\n  demo: {{url: '{mcp_upstream_url}'}}\n", tmp_path, listener)
    try:
        listener.until("READY=1")
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # READY=1 came once it listens
        assert any(line.startswith("STATUS=serving 1 upstream(s) on 127.0.0.1:") for line in listener.lines)
        listener.until("WATCHDOG=1")
        listener.collect(1.0)
        assert listener.lines.count("WATCHDOG=1") >= 3  # every 100 ms, half of WATCHDOG_USEC
        proc.send_signal(signal.SIGHUP)  # a reload: RELOADING=1, then READY=1 again
        listener.until("RELOADING=1")
        assert any(line.startswith("MONOTONIC_USEC=") for line in listener.lines)
        assert listener.lines[listener.lines.index("RELOADING=1") :].count("READY=1") <= 1
        listener.lines.clear()
        listener.until("READY=1")
        proc.send_signal(signal.SIGTERM)
        listener.until("STOPPING=1")
        assert proc.wait(timeout=20) == 0
    finally:
        stop_process(proc)
        listener.close()


def test_with_workers_the_supervisor_speaks_for_them(
    mcp_upstream_url: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    listener = Listener(tmp_path)
    port = free_port()
    config = (
        f"server: {{port: {port}, workers: 2}}\nupstreams:\n  demo: {{url: '{mcp_upstream_url}'}}\n"
        f"sessions: {{backend: redis, redis_url: '{redis_server.url}'}}\n"
    )
    proc = run(config, tmp_path, listener)
    try:
        listener.until("READY=1")
        listener.collect(1.0)  # long enough for a worker that wrongly notified to have done so
        assert listener.lines.count("WATCHDOG=1") >= 3
        assert listener.lines.count("READY=1") == 1
        assert f"STATUS=serving on port {port} with 2 workers" in listener.lines
        proc.send_signal(signal.SIGTERM)
        listener.until("STOPPING=1")
        assert proc.wait(timeout=20) == 0
    finally:
        stop_process(proc)
        listener.close()


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # another process's watchdog
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 15.0


def test_the_unit_file_is_hardened_and_knows_the_exit_codes() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read(UNIT)
    service = unit["Service"]
    assert service["Type"] == "notify" and service["WatchdogSec"]
    assert service["ExecStart"].endswith("mcpgate start -c /etc/mcpgate/config.yml")
    assert "validate" in service["ExecStartPre"]
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert "78" in service["RestartPreventExitStatus"].split()
    for key, value in {
        "DynamicUser": "yes", "ProtectSystem": "strict", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
        "PrivateTmp": "yes", "ProtectHome": "yes",
    }.items():  # fmt: skip
        assert service[key] == value, key
    assert unit["Install"]["WantedBy"] == "multi-user.target"
