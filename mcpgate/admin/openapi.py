"""The admin API's OpenAPI 3.1 description, served at GET /admin/v1/openapi.json.

It is generated, not written by hand, because the bodies the API takes are pieces of the
configuration file (an upstream, a role mapping, policy and rate-limit rules): the configuration's
own JSON Schema is copied in, so the description cannot drift from what the server validates.
Only what the file has no schema for is spelled out here: the envelopes around stored objects
(who owns one, its revision), the problems, and the routes, which the test suite compares with
the ones ``build_admin_app`` registers.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Final

import mcpgate
from mcpgate.admin import openapi_insight
from mcpgate.admin.api import MAX_BODY, PREFIX
from mcpgate.config import load_schema
from mcpgate.store.objects import KINDS, REDACTED

_DEFS: Final = "#/$defs/"
_SCHEMAS: Final = "#/components/schemas/"
# The schema's messages for people are keywords of our own; OpenAPI tools expect extensions to say so.
_RENAMED: Final[dict[str, str]] = {"errorMessage": "x-error-message", "patternErrorMessage": "x-pattern-error-message"}
# Fragments nested in a section that the API takes on their own: component name -> path in $defs.
_NESTED: Final = {
    "RoleMapping": ("jwt", "properties", "role_mappings", "items"),
    "PolicyRule": ("policy", "properties", "rules", "items"),
    "RateLimitRule": ("rate_limit", "properties", "rules", "items"),
}

_SHOWN: Final = f'"{REDACTED}"'  # as it appears in JSON
_SECRETS: Final = (
    "Upstream credentials (auth.token, auth.value, and the values of headers and env) are write-only: answers "
    f"show {_SHOWN} instead, and sending {_SHOWN} back in a PUT keeps the stored value, so that "
    "a GET, edit, PUT round trip never needs the secret. They are stored encrypted under "
    "store.encryption_key; without it a body holding one is refused (400)."
)
_DESCRIPTION: Final = f"""\
Manages what mcpgate keeps in its runtime store: upstreams, client API keys, JWT role mappings, \
and policy and rate-limit rules. They join the configuration file's (which wins: names it defines \
are read-only here, 409), every change is validated against the whole effective configuration \
(400, each error with a JSON pointer into the body), written with an audit line, and in force at \
once on this instance and within seconds on the others.

Authenticate with `Authorization: Bearer <credential>`: an admin API key (admin.api_keys lists \
their SHA-256) or a JWT that auth.jwt accepts and that holds one of admin.roles. A valid client \
credential without an admin role gets 403. Only this description is public.

Every stored object has an ETag, the store revision of its last change. Send it back in \
`If-Match` to change or delete it only if nobody else did meanwhile (412 otherwise); \
`If-Match: "0"` creates only. Bodies are JSON objects of at most {MAX_BODY} bytes. Errors are \
RFC 9457 problems (application/problem+json).

{_SECRETS}"""


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _SCHEMAS + name}


def _rewritten(node: Any) -> Any:
    """A copy whose references point into components, and whose own keywords are extensions."""
    if isinstance(node, list):
        return [_rewritten(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema: dict[str, Any] = node
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "$ref":
            if not (isinstance(value, str) and value.startswith(_DEFS)):
                raise ValueError(f"the configuration schema has a $ref this cannot rewrite: {value!r}")
            out[key] = _SCHEMAS + value.removeprefix(_DEFS)
        else:
            out[_RENAMED.get(key, key)] = _rewritten(value)
    return out


def _refs(node: Any) -> set[str]:
    """The component names that ``node`` refers to."""
    if isinstance(node, list):
        return set().union(*map(_refs, node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = set().union(*map(_refs, node.values())) if node else set()
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(_SCHEMAS):
        found.add(ref.removeprefix(_SCHEMAS).split("/")[0])
    return found


def _config_schemas() -> dict[str, Any]:
    """Every $defs fragment as a component, the nested ones the API takes alone lifted out."""
    schema = load_schema()
    schemas: dict[str, Any] = {name: _rewritten(fragment) for name, fragment in schema["$defs"].items()}
    for name, (section, *path) in _NESTED.items():
        parent = schemas[section]
        for part in path[:-1]:
            parent = parent[part]
        schemas[name] = parent[path[-1]]
        parent[path[-1]] = _ref(name)  # one definition, referred to from its section
    return schemas


# --- the envelopes and answers the configuration schema does not describe ----------------------

_SOURCE: Final = {
    "type": "string",
    "enum": ["file", "store"],
    "description": "Where the object is defined: file objects are read-only here.",
}
_STORED: Final = {
    "revision": {"type": "integer", "minimum": 1, "description": "Store revision of its last change: its ETag."},
    "updated_at": {"type": "string", "format": "date-time", "description": "When it last changed (UTC)."},
    "updated_by": {"type": "string", "description": "Who changed it last, as the audit names them (key:ops)."},
}
_APPLIED: Final = {
    "applied": {
        "const": False,
        "description": "Present, false, when the change is stored but not in force on this instance: see problem.",
    },
    "problem": {
        "type": "string",
        "description": "Why this instance does not run the store's latest revision; it keeps the last good one.",
    },
}


def _object(description: str, properties: dict[str, Any], required: list[str], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "description": description, "required": required, "properties": properties, **extra}


def _list_of(key: str, item: str, description: str) -> dict[str, Any]:
    return _object(description, {key: {"type": "array", "items": _ref(item)}}, [key])


# The sections as shown: credentials (a Redis URL) redacted, so the configuration's patterns do not hold.
_SECTION_SHOWN: Final = {
    "type": ["object", "null"],
    "description": "The configuration file's section, read-only here and matched first; null without one.",
}
_EFFECTIVE_SHOWN: Final = {
    "type": ["object", "null"],
    "description": "The section in force (the file's with the store's rules after its own); null: none.",
}


def _list_schemas(
    stem: str, what: str, rule: str, settings: dict[str, Any], update_note: str
) -> dict[str, dict[str, Any]]:
    """The three shapes of one ordered list (policy, rate limits): the PUT body, the GET answer,
    and the answer to a change. ``settings``: what besides its rules the store may set."""
    rules = {"type": "array", "items": _ref(rule)}
    return {
        f"{stem}Update": _object(
            f"The store's {what}. {update_note}", {"rules": rules, **settings}, ["rules"], additionalProperties=False
        ),
        f"{stem}State": _object(
            f"The store's {what}, the file's section, and the section in force.",
            {
                "rules": rules,
                "revision": {"type": "integer", "minimum": 0, "description": "0 when nothing is stored."},
                "file": _SECTION_SHOWN,
                "effective": _EFFECTIVE_SHOWN,
                **settings,
            },
            ["rules", "revision", "file", "effective"],
        ),
        f"{stem}Changed": _object(
            f"The stored {what}.",
            {"revision": _STORED["revision"], "rules": rules, **settings, **_APPLIED},
            ["revision"],
        ),
    }


def _api_schemas(name_pattern: str) -> dict[str, Any]:
    return {
        "Problem": _object(
            "An error, as RFC 9457 problem details.",
            {
                "type": {"type": "string", "format": "uri-reference", "description": "Always about:blank."},
                "title": {"type": "string", "description": "The status's reason phrase."},
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": {"type": "string", "description": "What went wrong, in one sentence."},
                "errors": {
                    "type": "array",
                    "description": "Every validation error. pointer is a JSON pointer into the request body; "
                    "path a dotted path in the effective configuration, for an error the change causes elsewhere.",
                    "items": _object(
                        "One error.",
                        {
                            "pointer": {"type": "string", "format": "json-pointer"},
                            "path": {"type": "string"},
                            "detail": {"type": "string"},
                        },
                        ["detail"],
                    ),
                },
                "etag": {"type": "string", "description": "With 412 for a stale If-Match: the current ETag."},
            },
            ["type", "title", "status", "detail"],
        ),
        "UpstreamItem": _object(
            f"An upstream and where it is defined. {_SECRETS}",
            {"name": {"type": "string"}, "source": _SOURCE, **_STORED, "spec": _ref("upstream")},
            ["name", "source", "spec"],
        ),
        "UpstreamList": _list_of("upstreams", "UpstreamItem", "The file's upstreams, then the store's."),
        "UpstreamChanged": _object(
            "The upstream as stored, credentials redacted.",
            {"name": {"type": "string"}, "revision": _STORED["revision"], "spec": _ref("upstream"), **_APPLIED},
            ["name", "revision", "spec"],
        ),
        "ApiKeyItem": _object(
            "A client API key; its secret is never shown again after creation.",
            {
                "id": {"type": "string"},
                "roles": _ref("names"),
                "source": _SOURCE,
                **_STORED,
                "created_at": {"type": "string", "format": "date-time"},
            },
            ["id", "roles", "source"],
        ),
        "ApiKeyList": _list_of("api_keys", "ApiKeyItem", "The file's client keys, then the store's."),
        "NewApiKey": _object(
            "A key to generate: the server makes the secret.",
            {
                "id": {
                    "type": "string",
                    "pattern": name_pattern,
                    "description": "The client id; key-<8 hex digits> when omitted.",
                },
                "roles": _ref("names"),
            },
            [],
            additionalProperties=False,
        ),
        "CreatedKey": _object(
            "The new key. Its secret is shown this once (Cache-Control: no-store); only its SHA-256 is kept.",
            {
                "id": {"type": "string"},
                "roles": _ref("names"),
                "key": {"type": "string", "description": "The secret, for the client to send."},
                "revision": _STORED["revision"],
                **_APPLIED,
            },
            ["id", "roles", "key", "revision"],
        ),
        "RoleMappingItem": _object(
            "A role mapping and where it is defined; the file's have no id.",
            {"id": {"type": "string"}, "source": _SOURCE, **_STORED, "spec": _ref("RoleMapping")},
            ["source", "spec"],
        ),
        "RoleMappingList": _list_of("role_mappings", "RoleMappingItem", "The file's role mappings, then the store's."),
        "RoleMappingChanged": _object(
            "The role mapping as stored.",
            {"id": {"type": "string"}, "revision": _STORED["revision"], "spec": _ref("RoleMapping"), **_APPLIED},
            ["id", "revision", "spec"],
        ),
        **_list_schemas(
            "Policy",
            "policy rules",
            "PolicyRule",
            {"default": _ref("policy/properties/default"), "shadow": _ref("policy/properties/shadow")},
            "Evaluated after the file's rules. Without a policy section in the file this is the whole "
            "policy section (default: deny); with one, default and shadow are the file's (409).",
        ),
        **_list_schemas(
            "RateLimits",
            "rate-limit rules",
            "RateLimitRule",
            {"default": _ref("bucket")},
            "Matched after the file's rules. Without a rate_limit section in the file this is the whole "
            "section; with one, default is the file's (409).",
        ),
        "AuditEntry": _object(
            "One change made through this API.",
            {
                "id": {"type": "integer"},
                "at": {"type": "string", "format": "date-time"},
                "actor": {"type": "string", "description": "key:<admin id> or jwt:<client id>."},
                "action": {"type": "string", "enum": ["create", "replace", "delete"]},
                "kind": {"type": "string", "enum": list(KINDS)},
                "name": {"type": "string", "description": "The object's name; policy and rate_limits for the lists."},
                "revision": {"type": "integer", "minimum": 1, "description": "The store revision it made."},
                "before": {"type": ["object", "null"], "description": "The object before, credentials redacted."},
                "after": {"type": ["object", "null"], "description": "The object after, credentials redacted."},
            },
            ["id", "at", "actor", "action", "kind", "name", "revision", "before", "after"],
        ),
        "AuditLog": _list_of("entries", "AuditEntry", "The latest changes, newest first."),
        "EffectiveConfig": {
            "type": "object",
            "description": "The configuration in force: the file's document with the store's objects merged in, "
            "in the configuration file's shape (`mcpgate schema` prints its JSON Schema), except that every "
            f"credential, key hash, store URL and Redis URL reads {_SHOWN}.",
        },
    }


# --- paths -------------------------------------------------------------------------------------


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _problem_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": _ref("Problem")}}}


_ETAG: Final = {"ETag": {"$ref": "#/components/headers/ETag"}}


def _answer(description: str, schema: str | None = None, *, etag: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if etag:
        response["headers"] = dict(_ETAG)
    if schema is not None:
        response["content"] = _json(_ref(schema))
    return response


def _operation(
    operation_id: str,
    tag: str,
    summary: str,
    description: str,
    responses: dict[str, Any],
    *,
    body: str | None = None,
    if_match: bool = False,
    parameters: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    """One operation; every one but the description's own needs an admin (401, 403)."""
    problems: dict[str, Any] = {
        "401": {"$ref": "#/components/responses/Unauthorized"},
        "403": {"$ref": "#/components/responses/Forbidden"},
    }
    if body is not None:
        problems |= {
            "400": _problem_response("Not a JSON object, or invalid (every error with its pointer)."),
            "413": _problem_response(f"The body is larger than {MAX_BODY} bytes."),
            "415": _problem_response("The body is not sent as application/json."),
        }
    if if_match:
        problems["412"] = _problem_response(
            "If-Match names another revision (the problem's etag is the current one), or is not an ETag."
        )
    if body is not None or if_match:
        problems["503"] = {"$ref": "#/components/responses/StoreUnreachable"}
    merged = {**problems, **responses}  # the operation's own descriptions win
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "description": description,
    }
    params = [*parameters, *([{"$ref": "#/components/parameters/IfMatch"}] if if_match else [])]
    if params:
        operation["parameters"] = params
    if body is not None:
        operation["requestBody"] = {"required": True, "content": _json(_ref(body))}
    operation["responses"] = dict(sorted(merged.items()))
    return operation


def _paths() -> dict[str, Any]:
    name = [{"$ref": "#/components/parameters/Name"}]
    key_id = [{"$ref": "#/components/parameters/Id"}]
    bad_name = {"400": _problem_response("The name is not a valid object name.")}
    write_invalid = "Not a JSON object, or the change would make the configuration invalid (errors point into it)."
    return {
        f"{PREFIX}/upstreams": {
            "get": _operation(
                "listUpstreams",
                "Upstreams",
                "List upstreams",
                f"The file's upstreams, then the store's. {_SECRETS}",
                {"200": _answer("The upstreams.", "UpstreamList")},
            ),
        },
        f"{PREFIX}/upstreams/{{name}}": {
            "parameters": name,
            "get": _operation(
                "getUpstream",
                "Upstreams",
                "Get an upstream",
                "One upstream, from the file or the store; only a stored one has an ETag.",
                {
                    **bad_name,
                    "200": _answer("The upstream; ETag set for a stored one.", "UpstreamItem", etag=True),
                    "404": _problem_response("No upstream of that name."),
                },
            ),
            "put": _operation(
                "putUpstream",
                "Upstreams",
                "Create or replace an upstream",
                f"The body is the upstream as the configuration file would define it. {_SECRETS}",
                {
                    "200": _answer("Replaced.", "UpstreamChanged", etag=True),
                    "201": _answer("Created.", "UpstreamChanged", etag=True),
                    "400": _problem_response(
                        f"{write_invalid} Also: a bad name, {_SHOWN} where nothing is stored to keep, or a "
                        "credential without store.encryption_key."
                    ),
                    "409": _problem_response("The configuration file defines this upstream."),
                },
                body="upstream",
                if_match=True,
            ),
            "delete": _operation(
                "deleteUpstream",
                "Upstreams",
                "Delete an upstream",
                "Removes a stored upstream; the file's cannot be deleted here.",
                {
                    **bad_name,
                    "204": _answer("Deleted."),
                    "404": _problem_response("No stored upstream of that name."),
                    "409": _problem_response(
                        "The file defines it, or the configuration would be invalid without it (routing names it)."
                    ),
                },
                if_match=True,
            ),
        },
        f"{PREFIX}/api-keys": {
            "get": _operation(
                "listApiKeys",
                "API keys",
                "List client API keys",
                "Ids and roles only: a key's secret is never shown after its creation.",
                {"200": _answer("The keys.", "ApiKeyList")},
            ),
            "post": _operation(
                "createApiKey",
                "API keys",
                "Generate a client API key",
                "The server generates the secret and answers it this once; the store keeps its SHA-256 only. "
                "Needs an auth section in the configuration file (409 otherwise).",
                {
                    "201": {
                        **_answer("Created.", "CreatedKey", etag=True),
                        "headers": {
                            **_ETAG,
                            "Location": {"description": "The key's URL.", "schema": {"type": "string"}},
                            "Cache-Control": {"description": "no-store.", "schema": {"type": "string"}},
                        },
                    },
                    "400": _problem_response("Not a JSON object, an unknown key, a bad id, or invalid roles."),
                    "409": _problem_response(
                        "The id exists (in the file or the store), or the file has no auth section."
                    ),
                },
                body="NewApiKey",
            ),
        },
        f"{PREFIX}/api-keys/{{id}}": {
            "parameters": key_id,
            "get": _operation(
                "getApiKey",
                "API keys",
                "Get a stored client API key",
                "A key in the store (the file's are listed, not served one by one).",
                {
                    **bad_name,
                    "200": _answer("The key.", "ApiKeyItem", etag=True),
                    "404": _problem_response("No stored key of that id."),
                },
            ),
            "delete": _operation(
                "deleteApiKey",
                "API keys",
                "Revoke a client API key",
                "Removes a stored key; clients using it are refused from then on.",
                {
                    **bad_name,
                    "204": _answer("Revoked."),
                    "404": _problem_response("No stored key of that id."),
                    "409": _problem_response("The file defines it, or the configuration would be invalid without it."),
                },
                if_match=True,
            ),
        },
        f"{PREFIX}/role-mappings": {
            "get": _operation(
                "listRoleMappings",
                "Role mappings",
                "List JWT role mappings",
                "The file's mappings (which have no id), then the store's.",
                {"200": _answer("The mappings.", "RoleMappingList")},
            ),
        },
        f"{PREFIX}/role-mappings/{{id}}": {
            "parameters": key_id,
            "get": _operation(
                "getRoleMapping",
                "Role mappings",
                "Get a stored role mapping",
                "A mapping in the store.",
                {
                    **bad_name,
                    "200": _answer("The mapping.", "RoleMappingItem", etag=True),
                    "404": _problem_response("No stored mapping of that id."),
                },
            ),
            "put": _operation(
                "putRoleMapping",
                "Role mappings",
                "Create or replace a role mapping",
                "Applied after the file's mappings. Needs auth.jwt in the configuration file (409 otherwise).",
                {
                    "200": _answer("Replaced.", "RoleMappingChanged", etag=True),
                    "201": _answer("Created.", "RoleMappingChanged", etag=True),
                    "400": _problem_response(f"A bad id. {write_invalid}"),
                    "409": _problem_response("The configuration file has no auth.jwt section."),
                },
                body="RoleMapping",
                if_match=True,
            ),
            "delete": _operation(
                "deleteRoleMapping",
                "Role mappings",
                "Delete a role mapping",
                "Removes a stored mapping.",
                {
                    **bad_name,
                    "204": _answer("Deleted."),
                    "404": _problem_response("No stored mapping of that id."),
                    "409": _problem_response("The configuration would be invalid without it."),
                },
                if_match=True,
            ),
        },
        **_ordered("policy", "Policy", "policy"),
        **_ordered("rate-limits", "Rate limits", "rate_limit"),
        f"{PREFIX}/config": {
            "get": _operation(
                "getEffectiveConfig",
                "Configuration",
                "Get the effective configuration",
                "The file and the store merged, as in force; its ETag is the store revision.",
                {"200": _answer("The configuration, credentials redacted.", "EffectiveConfig", etag=True)},
            ),
        },
        f"{PREFIX}/audit": {
            "get": _operation(
                "listAuditEntries",
                "Audit",
                "Read the admin audit trail",
                "Every change made through this API, newest first.",
                {
                    "200": _answer("The entries.", "AuditLog"),
                    "400": _problem_response("limit is not a number."),
                    "503": {"$ref": "#/components/responses/StoreUnreachable"},
                },
                parameters=({"$ref": "#/components/parameters/Limit"},),
            ),
        },
        f"{PREFIX}/openapi.json": {
            "get": {
                "operationId": "getOpenApiDocument",
                "tags": ["Meta"],
                "summary": "This description",
                "description": "The OpenAPI 3.1 document of this API; public.",
                "security": [],
                "responses": {"200": {"description": "This document.", "content": _json({"type": "object"})}},
            },
        },
    }


def _ordered(segment: str, tag: str, section: str) -> dict[str, Any]:
    """The two ordered lists (policy, rate limits): one object each, read and replaced whole."""
    word = tag.lower()
    stem = "".join(part.title() for part in segment.split("-"))
    return {
        f"{PREFIX}/{segment}": {
            "get": _operation(
                f"get{stem}",
                tag,
                f"Get the {word} rules",
                f"The store's {word} rules, the file's, and the {section} section in force. "
                'The ETag is "0" while nothing is stored.',
                {"200": _answer("The rules.", f"{stem}State", etag=True)},
            ),
            "put": _operation(
                f"put{stem}",
                tag,
                f"Replace the {word} rules",
                f"Replaces the store's {word} rules whole; they come after the file's, so that with first "
                "match wins the file keeps the last word on what it decides.",
                {
                    "200": _answer("Stored.", f"{stem}Changed", etag=True),
                    "201": _answer("Stored, the first list.", f"{stem}Changed", etag=True),
                    "400": _problem_response(
                        "Not a JSON object, unknown keys, or the change would make the configuration invalid "
                        "(errors point into the body)."
                    ),
                    "409": _problem_response(f"The file has a {section} section and the body sets what it owns."),
                },
                body=f"{stem}Update",
                if_match=True,
            ),
            "delete": _operation(
                f"delete{stem}",
                tag,
                f"Remove the stored {word} rules",
                f"The store's {word} list goes; the file's {section} section (or none) is what remains.",
                {
                    "204": _answer("Removed."),
                    "404": _problem_response("Nothing is stored."),
                    "409": _problem_response("The configuration would be invalid without them."),
                },
                if_match=True,
            ),
        },
    }


def _components(name_pattern: str) -> dict[str, Any]:
    return {
        "parameters": {
            "Name": {
                "name": "name",
                "in": "path",
                "required": True,
                "description": "The upstream's name; it appears in URLs.",
                "schema": {"type": "string", "pattern": name_pattern},
            },
            "Id": {
                "name": "id",
                "in": "path",
                "required": True,
                "description": "The object's id.",
                "schema": {"type": "string", "pattern": name_pattern},
            },
            "IfMatch": {
                "name": "If-Match",
                "in": "header",
                "required": False,
                "description": 'An ETag this API gave ("12"): the change happens only if the object is still at '
                'that revision. "0": only if it does not exist yet. Absent or *: unconditionally.',
                "schema": {"type": "string"},
            },
            "Limit": {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": "How many entries, newest first; clamped to 1 to 1000.",
                "schema": {"type": "integer", "default": 100},
            },
        },
        "headers": {
            "ETag": {
                "description": "The store revision of the object's last change, quoted.",
                "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
            },
        },
        "responses": {
            "Unauthorized": {
                **_problem_response("No credential, or one that is not valid here."),
                "headers": {
                    "WWW-Authenticate": {
                        "description": 'Bearer realm="mcpgate-admin".',
                        "schema": {"type": "string"},
                    }
                },
            },
            "Forbidden": _problem_response("A valid credential without an admin role."),
            "StoreUnreachable": _problem_response("The store is unreachable; nothing was changed."),
        },
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An admin API key (admin.api_keys holds their SHA-256; `mcpgate hash-key` prints it), "
                "or a JWT that auth.jwt accepts and that holds one of admin.roles after role mappings. "
                "A key may also be sent as X-API-Key.",
            }
        },
    }


@functools.cache
def _document() -> dict[str, Any]:
    name_pattern = load_schema()["properties"]["upstreams"]["propertyNames"]["pattern"]
    api = _api_schemas(name_pattern)
    paths = _paths() | openapi_insight.paths(_operation, _answer, _problem_response)
    api |= openapi_insight.SCHEMAS
    config = _config_schemas()
    # Only the configuration's fragments the API refers to, with all they refer to in turn.
    needed: set[str] = set()
    todo = _refs(paths) | _refs(api)
    while todo:
        name = todo.pop()
        if name in config and name not in needed:
            needed.add(name)
            todo |= _refs(config[name])
    components = _components(name_pattern)
    components["parameters"] |= openapi_insight.PARAMETERS
    components["schemas"] = {**api, **{name: schema for name, schema in config.items() if name in needed}}
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {"title": "mcpgate admin API", "version": mcpgate.__version__, "description": _DESCRIPTION},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": [
            {"name": "Upstreams", "description": "The MCP servers behind the gateway."},
            {"name": "API keys", "description": "Client credentials."},
            {"name": "Role mappings", "description": "Roles granted from JWT claims."},
            {"name": "Policy", "description": "Who may call what."},
            {"name": "Rate limits", "description": "Token buckets."},
            {"name": "Configuration", "description": "The whole, as in force."},
            {"name": "Audit", "description": "Who changed what through this API."},
            {"name": "Status", "description": "The gateway as it runs."},
            {"name": "Analytics", "description": "Who used which tool, how often, how fast (analytics section)."},
            {"name": "Meta", "description": "This description."},
        ],
        "paths": paths,
        "components": components,
    }


def document() -> dict[str, Any]:
    """The description, the caller's own copy: built once, and nothing can change the shared one."""
    return copy.deepcopy(_document())
