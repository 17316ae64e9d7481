"""systemd's notify protocol (``Type=notify``), with the standard library alone.

When systemd starts mcpgate it sets ``NOTIFY_SOCKET``: a Unix datagram socket to which the
service writes ``READY=1`` once it listens, ``STATUS=`` lines for ``systemctl status``,
``WATCHDOG=1`` at least every ``WATCHDOG_USEC`` (we send at half that) and ``STOPPING=1`` when a
shutdown begins. Without ``NOTIFY_SOCKET`` every call here does nothing, so the code is the same
under systemd, Docker or a terminal. A socket path starting with ``@`` is in the abstract namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Final

log = logging.getLogger("mcpgate.systemd")

SOCKET_ENV: Final = "NOTIFY_SOCKET"


def notify(*lines: str) -> bool:
    """Send ``lines`` as one datagram; False when not under systemd or when it cannot be sent."""
    address = os.environ.get(SOCKET_ENV)
    if not address or not lines:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
    except OSError as exc:
        log.debug("cannot notify systemd: %s", exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), when the watchdog is on
    for this process (``WATCHDOG_PID`` unset or ours)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec.isdigit() or int(usec) == 0 or (pid is not None and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


async def keep_watchdog_fed(interval: float) -> None:
    """In the event loop: a loop that stops answering stops feeding systemd, which restarts us."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def forget() -> None:
    """For a child process (a worker): the supervisor speaks to systemd, not its children."""
    for name in (SOCKET_ENV, "WATCHDOG_USEC", "WATCHDOG_PID"):
        with contextlib.suppress(KeyError):
            del os.environ[name]
