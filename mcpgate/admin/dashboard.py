"""The dashboard at ``/admin/``: three files shipped in the package, served as they are.

The page holds no data and needs no credential: everything it shows it reads from
``/admin/v1/*`` with the admin credential, which it keeps in ``sessionStorage`` (from its login
form, or from a ``#token=`` fragment that never leaves the browser). So the files are public,
and their headers allow nothing else: scripts and styles from this origin only, no framing, no
referrer, no sniffing.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from aiohttp import web

FILES: Final = {
    "index.html": "text/html",
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files("mcpgate.admin").joinpath("static", name).read_bytes()


def add_routes(app: web.Application) -> None:
    """``/admin`` and ``/admin/`` give the page; ``/admin/<file>`` its script and style."""
    bodies = {name: _read(name) for name in FILES}  # read once: they are part of the installed package

    async def page(request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("file") or "index.html"
        if name not in FILES:
            raise web.HTTPNotFound()
        return web.Response(body=bodies[name], content_type=FILES[name], charset="utf-8", headers=HEADERS)

    async def to_page(request: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect("/admin/")

    app.router.add_get("/admin", to_page)
    app.router.add_get("/admin/", page)
    app.router.add_get("/admin/{file:[a-z]+\\.(?:html|js|css)}", page)
