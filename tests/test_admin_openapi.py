"""The admin API's OpenAPI document: valid OpenAPI 3.1, true to the routes, usable to validate bodies.

Pure: the document is built in process, and the app is built around a stand-in runtime that no
handler here gets to use beyond the access check; nothing listens, no store is opened.
"""

from __future__ import annotations

# First, so that jsonschema is imported the way mcpgate imports it (without the slow IRI grammar).
import mcpgate.config  # isort: split

import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from mcpgate.admin import api
from mcpgate.admin.api import PREFIX
from mcpgate.admin.openapi import document
from mcpgate.config.model import AdminConfig

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
BASE = "https://mcpgate.invalid/admin/v1/openapi.json"  # only names the document for the registry


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document()


def _app() -> web.Application:
    # build_admin_app only stores the runtime; the guard reads runtime.gateway, nothing else here.
    return api.build_admin_app(SimpleNamespace(gateway=None), AdminConfig())  # type: ignore[arg-type]


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def _walk(node: Any, where: str = "") -> Iterator[tuple[str, str, Any]]:
    """Every (pointer, key, value) in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield where, key, value
            yield from _walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{where}/{index}")


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref}: not a local reference"
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve (no {part!r})"
        node = node[part]
    return node


def _validator(doc: dict[str, Any], component: str) -> Draft202012Validator:
    registry: Registry[Any] = Registry().with_resource(
        BASE, Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    return Draft202012Validator(
        {"$ref": f"{BASE}#/components/schemas/{component}"},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def test_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["version"] == mcpgate.__version__
    assert doc["jsonSchemaDialect"] == "https://json-schema.org/draft/2020-12/schema"
    validate(doc, cls=OpenAPIV31SpecValidator)


def test_every_registered_route_is_documented_and_nothing_else(doc: dict[str, Any]) -> None:
    routes = {
        (route.method, route.resource.canonical)
        for route in _app().router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {(method, path) for method, path, _ in _operations(doc)}
    assert len(routes) > 10  # the app was really built
    api = {(method, path) for method, path in routes if path.startswith(PREFIX + "/")}
    assert documented == api
    # The rest is the dashboard's page and files: public, no data, not part of the API.
    assert routes - api == {("GET", "/admin"), ("GET", "/admin/"), ("GET", "/admin/{file}")}


def test_operation_ids_are_unique(doc: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in _operations(doc)]
    assert len(ids) == len(set(ids))


def test_parameters_and_bodies_follow_what_the_handlers_read(doc: dict[str, Any]) -> None:
    """If-Match is documented where a handler reads it, a request body where one reads a body."""
    for route in _app().router.routes():
        if route.method == "HEAD" or route.resource is None or not route.resource.canonical.startswith(PREFIX):
            continue
        source = inspect.getsource(route.handler)
        operation = doc["paths"][route.resource.canonical][route.method.lower()]
        params = {p.get("$ref", "").rsplit("/", 1)[-1] for p in operation.get("parameters", [])}
        where = f"{route.method} {route.resource.canonical}"
        assert ("IfMatch" in params) == ("_if_match(request)" in source), where
        assert ("requestBody" in operation) == ("await _body(request)" in source), where
        if "requestBody" in operation:
            assert {"400", "413", "415"} <= set(operation["responses"]), where
        if "IfMatch" in params:
            assert "412" in operation["responses"], where
        assert ("Limit" in params) == ('request.query.get("limit"' in source), where
        if route.method == "DELETE":
            assert "204" in operation["responses"], where


def test_path_names_use_the_api_name_pattern(doc: dict[str, Any]) -> None:
    parameters = doc["components"]["parameters"]
    assert parameters["Name"]["schema"]["pattern"] == api._NAME.pattern
    assert parameters["Id"]["schema"]["pattern"] == api._NAME.pattern
    for path, item in doc["paths"].items():
        declared = {_resolve(doc, p["$ref"])["name"] for p in item.get("parameters", [])}
        assert declared == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}, path


def test_only_the_description_is_public(doc: dict[str, Any]) -> None:
    assert doc["security"] == [{"bearer": []}]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for method, path, operation in _operations(doc):
        if path == f"{api.PREFIX}/openapi.json":
            assert operation["security"] == []
        else:
            assert "security" not in operation, f"{method} {path}"
            assert {"401", "403"} <= set(operation["responses"]), f"{method} {path}"


def test_every_problem_is_a_problem_document(doc: dict[str, Any]) -> None:
    for method, path, operation in _operations(doc):
        for status, response in operation["responses"].items():
            if "$ref" in response:
                response = _resolve(doc, response["$ref"])
            content = response.get("content", {})
            if int(status) >= 400:
                assert list(content) == ["application/problem+json"], f"{method} {path} {status}"
                assert content["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
            else:
                assert "application/problem+json" not in content


def test_every_ref_resolves_and_none_is_left_in_defs(doc: dict[str, Any]) -> None:
    refs = [(where, value) for where, key, value in _walk(doc) if key == "$ref"]
    assert len(refs) > 50
    for where, ref in refs:
        assert "$defs" not in ref, where
        _resolve(doc, ref)
    keys = {key for _, key, _ in _walk(doc)}
    assert not keys & {"$defs", "$schema", "errorMessage", "patternErrorMessage"}
    assert "x-error-message" in keys  # renamed, not lost


def test_components_are_draft_2020_12_schemas(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert {"upstream", "RoleMapping", "PolicyRule", "RateLimitRule", "bucket", "Problem", "CreatedKey"} <= set(schemas)
    for name, schema in schemas.items():
        Draft202012Validator.check_schema(schema)
        assert isinstance(schema, dict) and schema, name


def test_config_fragments_are_the_schema_s_own(doc: dict[str, Any]) -> None:
    """Copied from the configuration schema (refs rewritten), not written again by hand."""
    source = mcpgate.config.load_schema()["$defs"]
    copied = doc["components"]["schemas"]
    as_config = json.dumps(copied["bucket"]).replace("#/components/schemas/", "#/$defs/")
    assert json.loads(as_config) == source["bucket"]
    rule = json.dumps(copied["PolicyRule"]).replace("#/components/schemas/", "#/$defs/")
    assert json.loads(rule) == source["policy"]["properties"]["rules"]["items"]
    assert copied["policy"]["properties"]["rules"]["items"] == {"$ref": "#/components/schemas/PolicyRule"}


def _example_upstreams() -> list[dict[str, Any]]:
    config = mcpgate.config.load_config(ROOT / "examples" / "demo.yml")
    assert config.document is not None
    return list(config.document["upstreams"].values())


@pytest.mark.parametrize(
    "body",
    [
        *_example_upstreams(),
        {"url": "http://127.0.0.1:9/mcp", "timeout": "5s"},
        {"url": "https://mcp.example.com/mcp", "auth": {"type": "bearer", "token": "<redacted>"}},
        {"command": ["python", "server.py"], "env": {"TOKEN": "<redacted>"}, "per_session": True},
    ],
)
def test_upstream_bodies_validate(doc: dict[str, Any], body: dict[str, Any]) -> None:
    _validator(doc, "upstream").validate(body)


@pytest.mark.parametrize(
    "body",
    [
        {"url": "http://127.0.0.1:9/mcp", "timeouts": "5s"},  # unknown key
        {"url": "http://127.0.0.1:9/mcp", "command": ["x"]},  # both kinds
        {"url": "ftp://example.com/mcp"},
        {"url": "http://127.0.0.1:9/mcp", "timeout": "0s"},
        {"url": "https://mcp.example.com/mcp", "auth": {"type": "bearer"}},
    ],
)
def test_invalid_upstream_bodies_do_not(doc: dict[str, Any], body: dict[str, Any]) -> None:
    assert not _validator(doc, "upstream").is_valid(body)


@pytest.mark.parametrize(
    ("component", "good", "bad"),
    [
        ("RoleMapping", {"claim": "groups", "value": "ops", "roles": ["admin"]}, {"claim": "groups", "value": "x"}),
        (
            "PolicyUpdate",
            {"rules": [{"tools": ["search*"], "decision": "allow"}], "default": "deny", "shadow": True},
            {"rules": [{"decision": "maybe"}]},
        ),
        ("PolicyUpdate", {"rules": []}, {"rules": [], "default": "perhaps"}),
        (
            "RateLimitsUpdate",
            {"rules": [{"capacity": 10, "refill_per_second": 1}], "default": {"capacity": 5, "refill_per_second": 2}},
            {"rules": [], "backend": "redis"},
        ),
        ("NewApiKey", {"id": "ci-bot", "roles": ["ci"]}, {"id": "-bad", "key": "mine"}),
        ("NewApiKey", {}, {"roles": "admin"}),
    ],
)
def test_request_bodies(doc: dict[str, Any], component: str, good: dict[str, Any], bad: dict[str, Any]) -> None:
    validator = _validator(doc, component)
    validator.validate(good)
    assert not validator.is_valid(bad)


async def test_served_publicly_and_problems_match_the_schema(doc: dict[str, Any]) -> None:
    """The guard lets the description through without a credential, and nothing else."""
    app = _app()
    served = await api.guard(make_mocked_request("GET", f"{api.PREFIX}/openapi.json", app=app), api.openapi)
    assert isinstance(served, web.Response) and served.status == 200 and served.text is not None
    assert json.loads(served.text) == doc
    refused = await api.guard(make_mocked_request("GET", f"{api.PREFIX}/upstreams", app=app), api.list_upstreams)
    assert isinstance(refused, web.Response) and refused.status == 401 and refused.text is not None
    assert refused.content_type == "application/problem+json"
    _validator(doc, "Problem").validate(json.loads(refused.text))


def test_callers_get_their_own_copy() -> None:
    first = document()
    first["paths"].clear()
    first["components"]["schemas"]["upstream"]["properties"].clear()
    again = document()
    assert again["paths"] and again["components"]["schemas"]["upstream"]["properties"]
