"""``start --pid-file``: where the running gateway's process id is written, for ``mcpgate reload``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


class PidFileError(Exception):
    """The pid file cannot be read or names no running process; the message says which."""


@contextlib.contextmanager
def written(path: str | None) -> Iterator[None]:
    """Write this process's id to ``path`` for as long as the block runs, then remove it (if it is
    still ours: a second gateway may have taken the file over)."""
    if path is None:
        yield
        return
    pid = str(os.getpid())
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{pid}")
    temporary.write_text(pid + "\n")
    temporary.replace(target)  # atomic: a reader never sees an empty file
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if target.read_text().strip() == pid:
                target.unlink()


def running_pid(path: str) -> int:
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise PidFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not text.isdigit() or int(text) <= 1:
        raise PidFileError(f"{path} does not hold a process id")
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise PidFileError(f"no process {pid} is running (stale {path})") from None
    except PermissionError:
        pass  # it runs, as another user: the signal will say whether we may
    return pid
