"""A whole gateway process's server (``Server.serve``) in the test's loop, store and admin API included."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDict

from mcpgate.auth.apikeys import hash_key
from mcpgate.config import load_config
from mcpgate.server import Server
from mcpgate.store.runtime import Runtime

ADMIN_KEY = "admin-" + secrets.token_hex(16)
ENCRYPTION_KEY = secrets.token_hex(32)
JSON = {"Content-Type": "application/json"}


def admin_yaml(store: str, *, key: bool = True, extra_admin: str = "") -> str:
    """The store and admin sections: ``store`` is the inside of the store mapping."""
    encryption = f", encryption_key: {ENCRYPTION_KEY}" if key else ""
    admin_key = f'{{id: ops, key_hash: "{hash_key(ADMIN_KEY)}"}}'
    return f"store: {{{store}{encryption}}}\nadmin: {{port: 0, api_keys: [{admin_key}]{extra_admin}}}\n"


@dataclass
class Serving:
    server: Server
    url: str
    admin: str  # the admin API's base: http://127.0.0.1:PORT/admin/v1

    @property
    def store(self) -> Runtime:
        assert self.server.store is not None
        return self.server.store


@asynccontextmanager
async def serving(text: str | None = None, *, path: Path | None = None, migrate: bool = True) -> AsyncIterator[Serving]:
    """Serve a configuration (text, or a file that SIGHUP reads again) until the block ends."""
    if path is not None:
        config = load_config(path)
        loader = lambda: load_config(path)  # noqa: E731
    else:
        config, loader = load_config(text=text, source="gw.yml"), None
    server = Server(config, loader, migrate=migrate)
    ready = asyncio.Event()
    task = asyncio.create_task(server.serve(on_ready=lambda _: ready.set()))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED, timeout=60)
    waiter.cancel()
    if task.done():
        task.result()  # raises what stopped the start
    host, port = server.bound[0]
    admin = f"http://127.0.0.1:{server.admin_bound[0][1]}/admin/v1" if server.admin_bound else ""
    try:
        yield Serving(server, f"http://{host}:{port}", admin)
    finally:
        server.should_exit.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 60)


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    *,
    key: str | None = ADMIN_KEY,
    headers: dict[str, str] | None = None,
) -> tuple[int, CIMultiDict[str], Any]:
    """One admin API request: (status, headers, parsed JSON or None)."""
    sent = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    data = None
    if body is not None:
        data = io.BytesIO(body if isinstance(body, bytes) else json.dumps(body).encode())
        sent.setdefault("Content-Type", "application/json")
    async with http.request(method, url, data=data, headers=sent) as resp:
        raw = await resp.read()
        parsed = json.loads(raw) if raw and "json" in (resp.content_type or "") else None
        return resp.status, CIMultiDict(resp.headers), parsed
