"""What the admin listener tells about the running gateway: its status and the analytics questions.

``GET /admin/v1/status`` is what the dashboard shows at the top: each upstream's health and
latency (the heartbeat's last reading), open sessions, the store and the analytics writer. The
analytics paths (DESIGN section 10) read their parameters into a question (``queries``), ask it
with a time bound, and answer JSON; a bad parameter is a 400 naming each one, and analytics that
are not configured are a 404 that says how to turn them on.
"""

from __future__ import annotations

import time
from typing import Any, Final

from aiohttp import web

from mcpgate import __version__
from mcpgate.admin.api import RUNTIME, Problem, _json
from mcpgate.analytics import Analytics, BadQuery, SinkError
from mcpgate.analytics.queries import ClientUsage, Question, Rejections, Series, Tools, Usage
from mcpgate.unified import UNIFIED


def _analytics(request: web.Request) -> Analytics:
    gateway = request.app[RUNTIME].gateway
    recorder = gateway.recorder if gateway is not None else None
    if recorder is None or recorder.analytics is None:
        raise Problem(404, "analytics are not configured: add an analytics: section to the configuration")
    return recorder.analytics


async def _answer(request: web.Request, read: Any) -> web.Response:
    analytics = _analytics(request)
    try:
        question: Question = read()
    except BadQuery as exc:
        raise Problem(400, "bad query parameters", [dict(e) for e in exc.errors]) from None
    try:
        answer = await analytics.ask(question)
    except SinkError as exc:
        raise Problem(503, f"analytics cannot answer now: {exc}") from None
    return _json(answer, headers={"Cache-Control": "no-store"})


async def usage(request: web.Request) -> web.Response:
    return await _answer(request, lambda: Usage.parse(request.query))


async def client_usage(request: web.Request) -> web.Response:
    return await _answer(request, lambda: ClientUsage.parse(request.match_info["client_id"], request.query))


async def tools(request: web.Request) -> web.Response:
    return await _answer(request, lambda: Tools.parse(request.query))


async def timeseries(request: web.Request) -> web.Response:
    return await _answer(request, lambda: Series.parse(request.query))


async def rejections(request: web.Request) -> web.Response:
    return await _answer(request, lambda: Rejections.parse(request.query))


async def status(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    gateway = runtime.gateway
    started = gateway.started if gateway is not None else time.time()
    body: dict[str, Any] = {"version": __version__, "started": started, "uptime_s": round(time.time() - started, 1)}
    upstreams: list[dict[str, Any]] = []
    sessions: dict[str, int] = {}
    if gateway is not None:
        for config in gateway.config.upstreams:
            served = gateway.upstreams.get(config.name)
            state = served.state.as_dict() if served is not None else {"state": "not_served"}
            upstreams.append({"name": config.name, "transport": config.transport, **state})
        for scope, count in gateway.sessions.count_by_scope().items():
            name = "/mcp" if scope == UNIFIED else scope
            sessions[name] = sessions.get(name, 0) + count
    body["upstreams"] = upstreams
    body["sessions"] = {"total": sum(sessions.values()), "by_endpoint": sessions}
    body["store"] = runtime.status()
    recorder = gateway.recorder if gateway is not None else None
    body["analytics"] = recorder.analytics.status() if recorder is not None and recorder.analytics else None
    return _json(body, headers={"Cache-Control": "no-store"})


ROUTES: Final = (
    ("GET", "/status", status),
    ("GET", "/analytics/usage", usage),
    ("GET", "/analytics/usage/{client_id}", client_usage),
    ("GET", "/analytics/tools", tools),
    ("GET", "/analytics/timeseries", timeseries),
    ("GET", "/analytics/rejections", rejections),
)
