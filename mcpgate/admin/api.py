"""The admin REST API's handlers (DESIGN section 9): JSON in, JSON out, errors as RFC 9457 problems.

Every write goes the same way: read the body (a JSON object, 1 MiB at most), check who is asking
(``access``), build the store's objects as they would be after the change, merge them with the
file and validate the whole (400 with every error as a JSON pointer into the body), write the
object with its audit line in one transaction (412 when ``If-Match`` names a stale revision), and
put the new plan in force here at once; other instances follow within seconds.

An object's ETag is the store revision of its last change (``"0"`` for one that does not exist).
Names the configuration file defines are read-only here (409): the file wins, visibly.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from mcpgate.admin import dashboard
from mcpgate.admin.access import AdminAccess, Denied
from mcpgate.auth.apikeys import generate_key, hash_key
from mcpgate.config.messages import Finding
from mcpgate.config.model import AdminConfig
from mcpgate.listener import SERVER_NAME
from mcpgate.store import NoKey
from mcpgate.store.backend import Missing, Stale, StoreError
from mcpgate.store.objects import (
    REDACTED,
    SINGLETON,
    Kind,
    Layout,
    Row,
    body_pointer,
    join_secrets,
    needs_from_file,
    owned_by_file,
    pointer,
    redacted,
    redacted_document,
    split_secrets,
    url_credentials,
)
from mcpgate.store.runtime import Invalid, Runtime

log = logging.getLogger("mcpgate.admin")

PREFIX: Final = "/admin/v1"
MAX_BODY: Final = 1024 * 1024
RUNTIME: Final = web.AppKey("runtime", Runtime)
ACCESS: Final = web.AppKey("access", AdminAccess)
ACTOR: Final = web.RequestKey("actor", str)  # who is asking, as the audit trail names them
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# The keys a policy or rate-limits body may have: the rest of those sections is the file's.
_LIST_KEYS: Final = {"policy": ("default", "rules", "shadow"), "rate_limits": ("default", "rules")}
_SECTION: Final = {"policy": "policy", "rate_limits": "rate_limit"}
_TITLES: Final = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 412: "Precondition Failed", 413: "Content Too Large", 415: "Unsupported Media Type",
    503: "Service Unavailable",
}  # fmt: skip


class Problem(Exception):
    """An error answer: status, one sentence, and for validation every error with its pointer."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, str]] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.detail, self.errors, self.extra = status, detail, errors, extra


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(body, indent=2, ensure_ascii=False).encode() + b"\n",
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _problem(problem: Problem) -> web.Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _TITLES.get(problem.status, "Error"),
        "status": problem.status,
        "detail": problem.detail,
    }
    if problem.errors:
        body["errors"] = problem.errors
    body.update(problem.extra)
    headers = {"WWW-Authenticate": 'Bearer realm="mcpgate-admin"'} if problem.status == 401 else None
    response = _json(body, problem.status, headers)
    response.content_type = "application/problem+json"
    return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every admin path: who is asking first, then the handler; every failure as a problem."""
    try:
        runtime = request.app[RUNTIME]
        gateway = runtime.gateway
        auth = gateway.auth if gateway is not None else None
        # The API's description and the dashboard's files are public: they hold no data.
        if request.path.startswith(PREFIX + "/") and request.path != f"{PREFIX}/openapi.json":
            request[ACTOR] = await request.app[ACCESS].actor(request.headers, auth)
        return await handler(request)
    except Denied as exc:
        return _problem(Problem(exc.status, str(exc)))
    except Problem as exc:
        return _problem(exc)
    except web.HTTPException as exc:
        if exc.status in (404, 405):
            return _problem(Problem(exc.status, "no such admin path" if exc.status == 404 else exc.reason))
        raise
    except StoreError as exc:
        log.error("admin: the store is unreachable: %s", exc)
        return _problem(Problem(503, f"the store is unreachable: {exc}"))


def _etag(revision: int) -> str:
    return f'"{revision}"'


def _if_match(request: web.Request) -> int | None:
    """The revision ``If-Match`` names; None when absent or ``*``."""
    value = request.headers.get("If-Match")
    if value is None or value.strip() == "*":
        return None
    tag = value.strip().removeprefix("W/")
    if not re.fullmatch(r'"\d+"', tag):
        raise Problem(412, 'If-Match must be an ETag this API gave, such as "12"')
    return int(tag.strip('"'))


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise Problem(415, "send the body as application/json")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise Problem(413, f"the body is larger than {MAX_BODY} bytes")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise Problem(413, f"the body is larger than {MAX_BODY} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(400, f"the body is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise Problem(400, "the body must be a JSON object", [{"pointer": "", "detail": "must be a JSON object"}])
    return body


def _name(request: web.Request, key: str = "name") -> str:
    name = request.match_info[key]
    if not _NAME.fullmatch(name):
        why = "names are 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit: they appear in URLs"
        raise Problem(400, why)
    return name


def _errors(kind: Kind, name: str, layout: Layout, findings: list[Finding]) -> list[dict[str, str]]:
    errors = []
    for finding in findings:
        where = body_pointer(kind, name, layout, finding.path)
        if where is not None:
            errors.append({"pointer": where, "detail": finding.message})
        else:  # caused by this change, but elsewhere in the effective configuration
            errors.append({"path": ".".join(map(str, finding.path)), "detail": finding.message})
    return errors


async def _commit(
    request: web.Request, kind: Kind, name: str, body: dict[str, Any] | None, expect: int | None
) -> tuple[int, bool]:
    runtime = request.app[RUNTIME]
    try:
        return await runtime.commit(kind, name, body, expect=expect, actor=request[ACTOR])
    except Invalid as exc:
        status = 409 if body is None else 400
        detail = "the change would make the configuration invalid"
        raise Problem(status, detail, _errors(kind, name, exc.layout, exc.findings)) from None
    except Stale as exc:
        raise Problem(412, "changed since the ETag you sent; GET it again", etag=_etag(exc.current)) from None
    except Missing:
        raise Problem(404, f"no {kind.replace('_', ' ')} {name!r} in the store") from None
    except NoKey as exc:
        errors = [{"pointer": p, "detail": "a credential, and store.encryption_key is not set"} for p in exc.args[0]]
        raise Problem(
            400, "the store keeps credentials only encrypted: set store.encryption_key to keep this one", errors
        ) from None


def _file_owned(runtime: Runtime, kind: Kind, name: str) -> None:
    why = owned_by_file(runtime.file.document or {}, kind, name)
    if why is not None:
        raise Problem(409, f"{why}; change it there")


def _envelope(row: Row) -> dict[str, Any]:
    return {
        "source": "store",
        "revision": row.revision,
        "updated_at": row.updated_at,
        "updated_by": row.updated_by,
    }


def _stored(runtime: Runtime, kind: Kind, name: str) -> Row:
    row = runtime.objects.get(kind, name)
    if row is None:
        raise Problem(404, f"no {kind.replace('_', ' ')} {name!r}")
    return row


def _changed(request: web.Request, revision: int, created: bool, shown: dict[str, Any]) -> web.Response:
    runtime = request.app[RUNTIME]
    if runtime.problem is not None:
        shown["applied"] = False
        shown["problem"] = runtime.problem
    return _json(shown, 201 if created else 200, {"ETag": _etag(revision)})


# --- upstreams ---------------------------------------------------------------------------------


async def list_upstreams(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    file = (runtime.file.document or {}).get("upstreams", {})
    items = [{"name": n, "source": "file", "spec": redacted("upstream", spec)} for n, spec in file.items()]
    items += [
        {"name": row.name, **_envelope(row), "spec": redacted("upstream", row.body)}
        for row in runtime.objects.of("upstream")
        if row.name not in file
    ]
    return _json({"upstreams": items})


async def get_upstream(request: web.Request) -> web.Response:
    runtime, name = request.app[RUNTIME], _name(request)
    file = (runtime.file.document or {}).get("upstreams", {})
    if name in file:
        return _json({"name": name, "source": "file", "spec": redacted("upstream", file[name])})
    row = _stored(runtime, "upstream", name)
    body = {"name": name, **_envelope(row), "spec": redacted("upstream", row.body)}
    return _json(body, headers={"ETag": _etag(row.revision)})


async def put_upstream(request: web.Request) -> web.Response:
    runtime, name = request.app[RUNTIME], _name(request)
    _file_owned(runtime, "upstream", name)
    body = await _body(request)
    if url_credentials(body.get("url")):
        detail = "credentials in the URL would be kept in clear: put them in auth or headers, which are sealed"
        raise Problem(400, "the URL holds credentials", [{"pointer": "/url", "detail": detail}])
    old = runtime.objects.get("upstream", name)
    if any(True for _ in _markers(body)):  # "<redacted>": keep what is stored
        body = join_secrets(body, split_secrets(old.body)[1] if old is not None else {})
        left = [pointer(path) for path in _markers(body)]
        if left:
            errors = [{"pointer": p, "detail": f"{REDACTED!r} keeps a stored value, and none is stored"} for p in left]
            raise Problem(400, "nothing stored to keep", errors)
    revision, created = await _commit(request, "upstream", name, body, _if_match(request))
    shown = {"name": name, "revision": revision, "spec": redacted("upstream", body)}
    return _changed(request, revision, created, shown)


def _markers(body: dict[str, Any]) -> list[tuple[str, ...]]:
    from mcpgate.store.objects import secret_paths

    found = []
    for path in secret_paths(body):
        node: Any = body
        for part in path:
            node = node[part]
        if node == REDACTED:
            found.append(path)
    return found


async def delete_upstream(request: web.Request) -> web.Response:
    runtime, name = request.app[RUNTIME], _name(request)
    _file_owned(runtime, "upstream", name)
    await _commit(request, "upstream", name, None, _if_match(request))
    return web.Response(status=204)


# --- API keys ----------------------------------------------------------------------------------


def _key_item(row: Row) -> dict[str, Any]:
    return {"id": row.name, "roles": list(row.body.get("roles", [])), **_envelope(row), "created_at": row.updated_at}


async def list_keys(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    auth = (runtime.file.document or {}).get("auth")
    file = auth.get("api_keys", []) if isinstance(auth, dict) else []
    items = [{"id": k["id"], "roles": k.get("roles", []), "source": "file"} for k in file]
    items += [_key_item(row) for row in runtime.objects.of("api_key")]
    return _json({"api_keys": items})


async def get_key(request: web.Request) -> web.Response:
    runtime, name = request.app[RUNTIME], _name(request, "id")
    auth = (runtime.file.document or {}).get("auth")
    for key in auth.get("api_keys", []) if isinstance(auth, dict) else []:
        if key.get("id") == name:
            return _json({"id": name, "roles": key.get("roles", []), "source": "file"})
    row = _stored(runtime, "api_key", name)
    return _json(_key_item(row), headers={"ETag": _etag(row.revision)})


async def create_key(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    body = await _body(request)
    unknown = sorted(set(body) - {"id", "roles"})
    if unknown:
        detail = "unknown key (the key itself is generated: give id and roles)"
        errors = [{"pointer": f"/{k}", "detail": detail} for k in unknown]
        raise Problem(400, "a key is made of an id and roles", errors)
    key_id = body.get("id")
    if key_id is None:
        import secrets

        key_id = "key-" + secrets.token_hex(4)
    if not isinstance(key_id, str) or not _NAME.fullmatch(key_id):
        raise Problem(400, "invalid id", [{"pointer": "/id", "detail": "1 to 64 letters, digits, '_', '.' or '-'"}])
    _file_owned(runtime, "api_key", key_id)
    needs = needs_from_file(runtime.file.document or {}, "api_key")
    if needs is not None:
        raise Problem(409, needs)
    key = generate_key()
    stored: dict[str, Any] = {"key_hash": hash_key(key)}
    if "roles" in body:
        stored["roles"] = body["roles"]
    try:
        revision, _ = await _commit(request, "api_key", key_id, stored, expect=0)
    except Problem as exc:
        if exc.status == 412:
            raise Problem(409, f"API key {key_id!r} exists; revoke it first, or choose another id") from None
        raise
    shown = {"id": key_id, "roles": stored.get("roles", []), "key": key, "revision": revision}
    response = _changed(request, revision, True, shown)
    response.headers["Location"] = f"{PREFIX}/api-keys/{key_id}"
    response.headers["Cache-Control"] = "no-store"  # the key is shown this once
    return response


async def delete_key(request: web.Request) -> web.Response:
    runtime, name = request.app[RUNTIME], _name(request, "id")
    _file_owned(runtime, "api_key", name)
    await _commit(request, "api_key", name, None, _if_match(request))
    return web.Response(status=204)


# --- role mappings -----------------------------------------------------------------------------


async def list_mappings(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    auth = (runtime.file.document or {}).get("auth")
    jwt = auth.get("jwt") if isinstance(auth, dict) else None
    file = jwt.get("role_mappings", []) if isinstance(jwt, dict) else []
    items = [{"source": "file", "spec": m} for m in file]
    items += [{"id": row.name, **_envelope(row), "spec": row.body} for row in runtime.objects.of("role_mapping")]
    return _json({"role_mappings": items})


async def get_mapping(request: web.Request) -> web.Response:
    runtime, name = request.app[RUNTIME], _name(request, "id")
    row = _stored(runtime, "role_mapping", name)
    return _json({"id": name, **_envelope(row), "spec": row.body}, headers={"ETag": _etag(row.revision)})


async def put_mapping(request: web.Request) -> web.Response:
    runtime, name = request.app[RUNTIME], _name(request, "id")
    body = await _body(request)
    needs = needs_from_file(runtime.file.document or {}, "role_mapping")
    if needs is not None:
        raise Problem(409, needs)
    revision, created = await _commit(request, "role_mapping", name, body, _if_match(request))
    return _changed(request, revision, created, {"id": name, "revision": revision, "spec": body})


async def delete_mapping(request: web.Request) -> web.Response:
    name = _name(request, "id")
    await _commit(request, "role_mapping", name, None, _if_match(request))
    return web.Response(status=204)


# --- policy and rate limits: one ordered list each ----------------------------------------------


def _ordered(kind: Kind) -> tuple[Handler, Handler, Handler]:
    section = _SECTION[kind]

    async def get(request: web.Request) -> web.Response:
        runtime = request.app[RUNTIME]
        row = runtime.objects.get(kind, SINGLETON[kind])
        file = redacted_document(runtime.file.document or {}).get(section)
        effective = redacted_document(runtime.config.document or {}).get(section)
        body: dict[str, Any] = {
            "rules": list(row.body.get("rules", [])) if row is not None else [],
            "revision": row.revision if row is not None else 0,
            "file": file if isinstance(file, dict) else None,  # read-only here
            "effective": effective,
        }
        if row is not None:
            body.update({k: row.body[k] for k in ("default", "shadow") if k in row.body})
        return _json(body, headers={"ETag": _etag(row.revision if row is not None else 0)})

    async def put(request: web.Request) -> web.Response:
        runtime = request.app[RUNTIME]
        body = await _body(request)
        allowed = _LIST_KEYS[kind]
        errors = [
            {"pointer": f"/{k}", "detail": f"unknown key (allowed: {', '.join(allowed)}; the rest is the file's)"}
            for k in sorted(set(body) - set(allowed))
        ]
        if "rules" not in body:
            errors.append({"pointer": "", "detail": "missing required key 'rules' (the whole ordered list)"})
        if errors:
            raise Problem(400, "the body is not a rule list", errors)
        file = (runtime.file.document or {}).get(section)
        owned = [k for k in ("default", "shadow") if k in body and isinstance(file, dict)]
        if owned:
            sets = " and ".join(owned)
            raise Problem(
                409, f"{section} is in the configuration file, which sets {sets}; store rules follow its rules"
            )
        expect = _if_match(request)
        revision, created = await _commit(request, kind, SINGLETON[kind], body, expect)
        return _changed(request, revision, created, {"revision": revision, **body})

    async def delete(request: web.Request) -> web.Response:
        """The store's list gone: the file's section alone again (or none)."""
        await _commit(request, kind, SINGLETON[kind], None, _if_match(request))
        return web.Response(status=204)

    return get, put, delete


# --- the whole ---------------------------------------------------------------------------------


async def effective_config(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    shown = redacted_document(runtime.config.document or {})
    return _json(shown, headers={"ETag": _etag(runtime.objects.revision)})


async def audit(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    text = request.query.get("limit", "100")
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise Problem(400, "limit must be a number from 1 to 1000")
    limit = int(text)
    entries = await runtime.store.backend.audit(limit)
    for entry in entries:
        for key in ("before", "after"):
            entry[key] = json.loads(entry[key]) if entry.get(key) else None
    return _json({"entries": entries})


async def openapi(request: web.Request) -> web.Response:
    from mcpgate.admin.openapi import document

    return _json(document())


async def _no_versions(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_NAME  # not aiohttp's versions, as on the MCP port


def build_admin_app(runtime: Runtime, config: AdminConfig) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app.on_response_prepare.append(_no_versions)
    app[RUNTIME] = runtime
    app[ACCESS] = AdminAccess(config)
    policy, rate_limits = _ordered("policy"), _ordered("rate_limits")
    routes: list[tuple[str, str, Handler]] = [
        ("GET", "/upstreams", list_upstreams),
        ("GET", "/upstreams/{name}", get_upstream),
        ("PUT", "/upstreams/{name}", put_upstream),
        ("DELETE", "/upstreams/{name}", delete_upstream),
        ("GET", "/api-keys", list_keys),
        ("POST", "/api-keys", create_key),
        ("GET", "/api-keys/{id}", get_key),
        ("DELETE", "/api-keys/{id}", delete_key),
        ("GET", "/role-mappings", list_mappings),
        ("GET", "/role-mappings/{id}", get_mapping),
        ("PUT", "/role-mappings/{id}", put_mapping),
        ("DELETE", "/role-mappings/{id}", delete_mapping),
        *(zip(("GET", "PUT", "DELETE"), ("/policy",) * 3, policy, strict=True)),
        *(zip(("GET", "PUT", "DELETE"), ("/rate-limits",) * 3, rate_limits, strict=True)),
        ("GET", "/config", effective_config),
        ("GET", "/audit", audit),
        ("GET", "/openapi.json", openapi),
    ]
    from mcpgate.admin import insight  # here: it reads this module's names

    routes += insight.ROUTES
    for method, path, handler in routes:
        app.router.add_route(method, PREFIX + path, handler)
    dashboard.add_routes(app)
    return app
