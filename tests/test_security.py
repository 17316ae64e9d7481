"""Authentication and policy end to end: real SDK upstreams, the official client, a local IdP.

API keys in every header form, JWTs signed with real RSA, EC and Ed25519 keys and verified
against a key set the gateway fetches over HTTP, and a policy that must hold on both endpoints:
a client never sees what it may not call, and cannot call it either.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from mcpgate.auth.apikeys import hash_key
from mcpgate.config import load_config
from tests.gateway_harness import (
    LEGACY,
    POST_HEADERS,
    RunningGateway,
    initialize,
    modern_call,
    modern_headers,
    raw_upstream,
    read_messages,
    rpc,
    running_gateway,
    sdk_client,
    session_headers,
)
from tests.idp import AUDIENCE, LocalIdP, hs256_with_public_key, local_idp, unsigned

pytestmark = pytest.mark.e2e

PUBLIC_URL = "https://gw.example.com"
ENG_KEY = "mgk_engineering-key-0123456789abcdef"
CONTRACTOR_KEY = "mgk_contractor-key-0123456789abcdef"
KEYS_YAML = f"""
  api_keys:
    - {{id: engineering, key_hash: "{hash_key(ENG_KEY)}", roles: [engineer]}}
    - {{id: contractors, key_hash: "{hash_key(CONTRACTOR_KEY).upper().replace("SHA256", "sha256")}"}}
"""
# contractors may use alpha's search-like tools only; engineers everything; admins (JWT role) too.
POLICY_YAML = """
policy:
  default: deny
  rules:
    - {roles: [admin, engineer], decision: allow}
    - {clients: [contractors], servers: [alpha], tools: ["whoami", "add"], decision: allow}
    - {clients: [contractors], servers: [alpha], resources: ["named://alpha/*"], decision: allow}
"""


def config_text(urls: dict[str, str], auth: str, extra: str = "", public_url: str = PUBLIC_URL) -> str:
    return (
        f"server: {{port: 0, public_url: {json.dumps(public_url)}, max_header_bytes: 16384}}\n"
        f"upstreams:\n  alpha: {{url: {json.dumps(urls['alpha'])}}}\n"
        f"  beta: {{url: {json.dumps(urls['beta'])}, prefix: beta}}\n"
        f"auth:{auth}\n{extra}"
    )


@asynccontextmanager
async def gateway(text: str) -> AsyncIterator[RunningGateway]:
    async with running_gateway(load_config(text=text, source="test.yml")) as gw:
        yield gw


def jwt_yaml(idp: LocalIdP, **options: Any) -> str:
    spec = {"issuer": idp.issuer, "audience": AUDIENCE, "jwks_uri": idp.jwks_uri, "jwks_refetch_interval": 0}
    spec["algorithms"] = ["RS256", "ES256", "EdDSA"]
    spec["role_mappings"] = [{"claim": "groups", "value": "admins", "roles": ["admin"]}]
    spec.update(options)
    spec = {k: v for k, v in spec.items() if v is not None}
    return f"\n  jwt: {json.dumps(spec)}\n"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def text(result: Any) -> str:
    return str(result.content[0].text)


async def post(
    http: aiohttp.ClientSession, url: str, message: Any, headers: dict[str, str]
) -> tuple[int, dict[str, str], list[dict[str, Any]]]:
    async with http.post(url, json=message, headers={**POST_HEADERS, **headers}) as resp:
        body = await read_messages(resp) if resp.content_type in ("application/json", "text/event-stream") else []
        return resp.status, dict(resp.headers), body


INIT = rpc("initialize", {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}})


# -- API keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {ENG_KEY}"},
        {"Authorization": f"Api-Key {ENG_KEY}"},
        {"X-API-Key": ENG_KEY},
        {"Api-Key": ENG_KEY},
    ],
    ids=["bearer", "authorization-api-key", "x-api-key", "api-key"],
)
async def test_an_api_key_is_accepted_in_every_header_form(
    named_upstreams: dict[str, str], headers: dict[str, str]
) -> None:
    async with gateway(config_text(named_upstreams, KEYS_YAML)) as gw, aiohttp.ClientSession() as http:
        status, _, messages = await post(http, gw.url + "/mcp", INIT, headers)
        assert status == 200, messages
        assert messages[0]["result"]["protocolVersion"] == LEGACY
        # A configured hash in upper case works as well (contractors' is written so).
        status, _, _ = await post(http, gw.endpoint("alpha"), INIT, {"X-API-Key": CONTRACTOR_KEY})
        assert status == 200


async def test_without_a_credential_the_answer_is_401_with_a_challenge(named_upstreams: dict[str, str]) -> None:
    async with gateway(config_text(named_upstreams, KEYS_YAML)) as gw, aiohttp.ClientSession() as http:
        for url in (gw.url + "/mcp", gw.endpoint("alpha"), gw.url + "/mcp/alpha", gw.endpoint("nosuch")):
            status, headers, messages = await post(http, url, INIT, {})
            assert status == 401
            assert headers["WWW-Authenticate"] == 'Bearer realm="mcpgate"'
            assert messages[0]["id"] == 1
            assert messages[0]["error"]["data"]["reason"] == "unauthenticated"
        # Which servers exist is not for anonymous callers either.
        async with http.get(gw.url + "/servers") as resp:
            assert resp.status == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer mgk_wrong"},
        {"X-API-Key": "mgk_wrong"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Bearer {'x' * 9000}"},
        {"Authorization": f"Bearer {ENG_KEY}", "X-API-Key": CONTRACTOR_KEY},
    ],
    ids=["wrong-bearer", "wrong-x-api-key", "basic", "empty", "oversized", "two-credentials"],
)
async def test_a_bad_key_is_401_invalid_token_and_never_logged(
    named_upstreams: dict[str, str], headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with gateway(config_text(named_upstreams, KEYS_YAML)) as gw, aiohttp.ClientSession() as http:
        status, response_headers, messages = await post(http, gw.url + "/mcp", INIT, headers)
    assert status == 401
    assert response_headers["WWW-Authenticate"].startswith('Bearer realm="mcpgate", error="invalid_token"')
    assert messages[0]["error"]["data"]["reason"] == "invalid_token"
    shown = json.dumps(messages) + response_headers["WWW-Authenticate"] + caplog.text
    for secret in ("mgk_wrong", "dXNlcjpwYXNz", ENG_KEY, CONTRACTOR_KEY, "x" * 100):
        assert secret not in shown


async def test_gateway_header_moves_the_credential_to_a_header_of_its_own(named_upstreams: dict[str, str]) -> None:
    auth = KEYS_YAML + "  gateway_header: X-Gateway-Key\n"
    async with gateway(config_text(named_upstreams, auth)) as gw, aiohttp.ClientSession() as http:
        status, _, _ = await post(http, gw.url + "/mcp", INIT, {"X-Gateway-Key": ENG_KEY})
        assert status == 200
        status, _, _ = await post(http, gw.url + "/mcp", INIT, {"X-Gateway-Key": f"Bearer {ENG_KEY}"})
        assert status == 200
        # Authorization is left alone now: it is not where the gateway looks.
        status, _, messages = await post(http, gw.url + "/mcp", INIT, {"Authorization": f"Bearer {ENG_KEY}"})
        assert status == 401
        assert messages[0]["error"]["data"]["reason"] == "unauthenticated"


async def test_the_gateway_credential_never_reaches_the_upstream() -> None:
    seen: list[dict[str, str]] = []

    async def upstream(request: Any) -> Any:
        from aiohttp import web

        seen.append(dict(request.headers))
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}})

    async with raw_upstream(upstream) as (url, _):
        text_ = config_text({"alpha": url, "beta": url}, KEYS_YAML)
        async with gateway(text_) as gw, aiohttp.ClientSession() as http:
            for headers in ({"Authorization": f"Bearer {ENG_KEY}"}, {"X-API-Key": ENG_KEY}, {"Api-Key": ENG_KEY}):
                message = modern_call("tools/list")
                status, _, _ = await post(
                    http, gw.endpoint("alpha"), message, {**modern_headers("tools/list"), **headers}
                )
                assert status == 200
    assert len(seen) >= 3  # the three calls, and the heartbeat probes
    for headers in seen:
        lowered = {k.lower(): v for k, v in headers.items()}
        assert not {"authorization", "x-api-key", "api-key"} & lowered.keys()
        assert ENG_KEY not in json.dumps(headers)


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28", "auto"])
async def test_the_official_client_works_with_an_api_key_on_both_endpoints(
    named_upstreams: dict[str, str], mode: str
) -> None:
    async with gateway(config_text(named_upstreams, KEYS_YAML)) as gw:
        for url in (gw.url + "/mcp", gw.endpoint("beta")):
            async with sdk_client(url, mode, headers={"X-API-Key": ENG_KEY}) as client:
                tools = {t.name for t in (await client.list_tools()).tools}
                name = "beta__whoami" if url.endswith("/mcp") and "servers" not in url else "whoami"
                assert name in tools
                assert text(await client.call_tool(name, {})) == "beta"


async def test_a_session_belongs_to_the_identity_that_opened_it(named_upstreams: dict[str, str]) -> None:
    async with gateway(config_text(named_upstreams, KEYS_YAML)) as gw, aiohttp.ClientSession() as http:
        for url in (gw.url + "/mcp", gw.endpoint("alpha")):
            async with http.post(url, json=INIT, headers={**POST_HEADERS, "X-API-Key": ENG_KEY}) as resp:
                assert resp.status == 200
                sid = resp.headers["Mcp-Session-Id"]
            ping = rpc("ping", id=2)
            for key, expected in ((CONTRACTOR_KEY, 404), (ENG_KEY, 200)):
                headers = {**session_headers(sid), "X-API-Key": key}
                async with http.post(url, json=ping, headers=headers) as resp:
                    assert resp.status == expected, await resp.text()
                    if expected == 404:
                        assert (await resp.json())["error"]["data"]["reason"] == "session_not_found"


async def test_health_and_readiness_need_no_credential(named_upstreams: dict[str, str]) -> None:
    async with gateway(config_text(named_upstreams, KEYS_YAML)) as gw, aiohttp.ClientSession() as http:
        for path in ("/healthz", "/health", "/live", "/readyz", "/ready"):
            async with http.get(gw.url + path) as resp:
                assert resp.status in (200, 503)
                assert "error" not in await resp.json()
        async with http.get(gw.url + "/readyz") as resp:
            assert (await resp.json())["auth"] == {"api_keys": 2}


# -- JWT -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["rsa", "ec", "ed"])
@pytest.mark.parametrize("mode", ["legacy", "2026-07-28", "auto"])
async def test_tokens_signed_with_rsa_ec_and_ed25519_keys_work_with_the_official_client(
    named_upstreams: dict[str, str], key: str, mode: str
) -> None:
    async with local_idp() as idp:
        async with gateway(config_text(named_upstreams, jwt_yaml(idp))) as gw:
            async with sdk_client(gw.url + "/mcp", mode, headers=bearer(idp.token(key, sub="bob"))) as client:
                assert text(await client.call_tool("whoami", {})) == "alpha"
                assert text(await client.call_tool("beta__add", {"a": 1, "b": 2})) == "beta:3"


def bad_tokens(idp: LocalIdP) -> dict[str, str]:
    good = idp.token()
    header, payload, signature = good.split(".")
    return {
        "expired": idp.token(exp=1_000_000, iat=999_000),
        "not-yet-valid": idp.token(nbf=4_000_000_000),
        "wrong-issuer": idp.token(iss="https://evil.example.com/"),
        "wrong-audience": idp.token(aud="someone-else"),
        "no-exp": idp.token(exp=None),
        "no-aud": idp.token(aud=None),
        "alg-none": unsigned(idp),
        "hs256-with-public-key": hs256_with_public_key(idp),
        "unknown-kid": idp.token(headers={"kid": "who-knows"}),
        "tampered": f"{header}.{payload[:-4]}AAAA.{signature}",
        "malformed": "not.a.jwt",
        "wrong-key-for-kid": idp.token("rsa-next", headers={"kid": "rsa-1"}),
    }


BAD_TOKENS = list(bad_tokens(LocalIdP(url="http://x")).keys())


@pytest.mark.parametrize("case", BAD_TOKENS)
async def test_a_bad_token_is_401_invalid_token_with_the_metadata_url(
    named_upstreams: dict[str, str], case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with local_idp() as idp, gateway(config_text(named_upstreams, jwt_yaml(idp))) as gw:
        token = bad_tokens(idp)[case]
        async with aiohttp.ClientSession() as http:
            status, headers, messages = await post(http, gw.endpoint("alpha"), INIT, bearer(token))
    assert status == 401, messages
    assert messages[0]["error"]["data"]["reason"] == "invalid_token"
    challenge = headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="')
    assert challenge.endswith(
        f'resource_metadata="{PUBLIC_URL}/.well-known/oauth-protected-resource/servers/alpha/mcp"'
    )
    for part in token.split("."):
        if len(part) > 8:
            assert part not in caplog.text + json.dumps(messages) + challenge


async def test_an_unknown_kid_refetches_the_keys_once_per_interval(named_upstreams: dict[str, str]) -> None:
    async with local_idp() as idp:
        idp.published = ["rsa"]
        auth = jwt_yaml(idp, jwks_refetch_interval="1h")
        async with gateway(config_text(named_upstreams, auth)) as gw, aiohttp.ClientSession() as http:
            status, _, _ = await post(http, gw.url + "/mcp", INIT, bearer(idp.token()))
            assert status == 200
            fetched = idp.fetches["/jwks.json"]
            # The provider rotates in a new key: the first token signed with it fetches the set again.
            idp.published = ["rsa", "rsa-next"]
            status, _, _ = await post(http, gw.url + "/mcp", INIT, bearer(idp.token("rsa-next")))
            assert status == 200
            assert idp.fetches["/jwks.json"] == fetched + 1
            # Made-up kids cannot make the gateway hammer the provider: no fetch within the interval.
            for n in range(5):
                status, _, messages = await post(
                    http, gw.url + "/mcp", INIT, bearer(idp.token(headers={"kid": f"x{n}"}))
                )
                assert status == 401
                assert messages[0]["error"]["data"]["reason"] == "invalid_token"
            assert idp.fetches["/jwks.json"] == fetched + 1


async def test_with_the_provider_down_cached_keys_keep_working_and_no_keys_means_503(
    named_upstreams: dict[str, str],
) -> None:
    async with local_idp() as idp:
        idp.down = True
        async with gateway(config_text(named_upstreams, jwt_yaml(idp))) as gw, aiohttp.ClientSession() as http:
            status, headers, messages = await post(http, gw.url + "/mcp", INIT, bearer(idp.token()))
            assert status == 503
            assert messages[0]["error"]["data"]["reason"] == "auth_unavailable"
            assert "WWW-Authenticate" not in headers  # not the client's fault: no OAuth dance
            async with http.get(gw.url + "/readyz") as resp:
                assert (await resp.json())["auth"]["jwks"]["keys"] == 0
            idp.down = False
            status, _, _ = await post(http, gw.url + "/mcp", INIT, bearer(idp.token()))
            assert status == 200
            idp.down = True
            status, _, _ = await post(http, gw.url + "/mcp", INIT, bearer(idp.token("ec", sub="carol")))
            assert status == 200
            async with http.get(gw.url + "/readyz") as resp:
                assert (await resp.json())["auth"]["jwks"]["keys"] == 3


async def test_oidc_discovery_finds_the_key_set(named_upstreams: dict[str, str]) -> None:
    async with local_idp() as idp:
        auth = jwt_yaml(idp, jwks_uri=None, discovery=True)
        async with gateway(config_text(named_upstreams, auth)) as gw, aiohttp.ClientSession() as http:
            status, _, _ = await post(http, gw.url + "/mcp", INIT, bearer(idp.token()))
            assert status == 200
        assert idp.fetches["/.well-known/openid-configuration"] == 1
        assert idp.fetches["/jwks.json"] == 1


async def test_the_gateway_url_is_an_accepted_audience(named_upstreams: dict[str, str]) -> None:
    async with local_idp() as idp:
        auth = jwt_yaml(idp, audience=None)
        async with gateway(config_text(named_upstreams, auth)) as gw, aiohttp.ClientSession() as http:
            for audience in (PUBLIC_URL, f"{PUBLIC_URL}/mcp", [f"{PUBLIC_URL}/servers/beta/mcp", "other"]):
                status, _, _ = await post(http, gw.url + "/mcp", INIT, bearer(idp.token(aud=audience)))
                assert status == 200, audience
            status, _, _ = await post(http, gw.url + "/mcp", INIT, bearer(idp.token(aud="https://other.example.com")))
            assert status == 401


async def test_a_token_without_the_required_scope_is_403_insufficient_scope(named_upstreams: dict[str, str]) -> None:
    async with local_idp() as idp:
        auth = jwt_yaml(idp, scopes=["mcp:tools"])
        async with gateway(config_text(named_upstreams, auth)) as gw, aiohttp.ClientSession() as http:
            status, headers, messages = await post(http, gw.url + "/mcp", INIT, bearer(idp.token(scope="openid")))
            assert status == 403
            assert messages[0]["error"]["data"]["reason"] == "insufficient_scope"
            assert headers["WWW-Authenticate"] == (
                'Bearer error="insufficient_scope", error_description="The token lacks the scope \'mcp:tools\'", '
                f'scope="mcp:tools", resource_metadata="{PUBLIC_URL}/.well-known/oauth-protected-resource/mcp"'
            )
            for claims in ({"scope": "openid mcp:tools"}, {"scp": ["mcp:tools"]}):
                status, _, _ = await post(http, gw.url + "/mcp", INIT, bearer(idp.token(**claims)))
                assert status == 200
            status, headers, _ = await post(http, gw.url + "/mcp", INIT, {})
            assert status == 401
            assert headers["WWW-Authenticate"] == (
                f'Bearer scope="mcp:tools", resource_metadata="{PUBLIC_URL}/.well-known/oauth-protected-resource/mcp"'
            )


async def test_protected_resource_metadata_comes_from_the_public_url(named_upstreams: dict[str, str]) -> None:
    async with local_idp() as idp:
        auth = jwt_yaml(idp, scopes=["mcp:tools"])
        public = "https://gw.example.com/base"
        async with gateway(config_text(named_upstreams, auth, public_url=public)) as gw:
            async with aiohttp.ClientSession() as http:
                documents = {}
                for tail in ("", "/mcp", "/servers/alpha/mcp", "/mcp/beta", "/base/mcp"):
                    url = gw.url + "/.well-known/oauth-protected-resource" + tail
                    # A forged Host must change nothing: the metadata names the configured URL.
                    async with http.get(url, headers={"Host": "evil.example.com"}) as resp:
                        assert resp.status == 200, tail
                        documents[tail] = await resp.json()
                for tail in ("/nosuch", "/servers/gamma/mcp", "/mcpx"):
                    async with http.get(gw.url + "/.well-known/oauth-protected-resource" + tail) as resp:
                        assert resp.status == 404
    assert documents[""] == {
        "resource": public,
        "authorization_servers": [idp.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "mcpgate",
        "scopes_supported": ["mcp:tools"],
    }
    assert documents["/mcp"]["resource"] == documents["/base/mcp"]["resource"] == public + "/mcp"
    assert documents["/servers/alpha/mcp"]["resource"] == public + "/servers/alpha/mcp"
    assert documents["/mcp/beta"]["resource"] == public + "/mcp/beta"


async def test_without_jwt_there_is_no_metadata(named_upstreams: dict[str, str]) -> None:
    async with gateway(config_text(named_upstreams, KEYS_YAML)) as gw, aiohttp.ClientSession() as http:
        async with http.get(gw.url + "/.well-known/oauth-protected-resource/mcp") as resp:
            assert resp.status == 404


# -- policy ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_client_sees_and_calls_only_what_the_policy_allows_on_both_endpoints(
    named_upstreams: dict[str, str], mode: str
) -> None:
    async with gateway(config_text(named_upstreams, KEYS_YAML, POLICY_YAML)) as gw:
        async with sdk_client(gw.url + "/mcp", mode, headers={"X-API-Key": CONTRACTOR_KEY}) as client:
            assert {t.name for t in (await client.list_tools()).tools} == {"whoami", "add"}
            assert {str(r.uri) for r in (await client.list_resources()).resources} == {"named://alpha/info"}
            assert (await client.list_prompts()).prompts == []
            assert text(await client.call_tool("add", {"a": 1, "b": 1})) == "alpha:2"
            with pytest.raises(Exception) as denied:
                await client.call_tool("beta__whoami", {})
            assert "policy.default" in str(denied.value)
        async with sdk_client(gw.endpoint("alpha"), mode, headers={"X-API-Key": CONTRACTOR_KEY}) as client:
            assert {t.name for t in (await client.list_tools()).tools} == {"whoami", "add"}
            with pytest.raises(Exception) as denied:
                await client.call_tool("only_alpha", {})
            assert "policy.default" in str(denied.value)
        # Engineers get everything, through the same gateway.
        async with sdk_client(gw.url + "/mcp", mode, headers={"X-API-Key": ENG_KEY}) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"whoami", "only_alpha", "beta__whoami", "beta__only_beta"} <= tools


async def test_a_denied_call_is_403_naming_the_rule(named_upstreams: dict[str, str]) -> None:
    async with gateway(config_text(named_upstreams, KEYS_YAML, POLICY_YAML)) as gw, aiohttp.ClientSession() as http:
        key = {"X-API-Key": CONTRACTOR_KEY}
        call = modern_call("tools/call", {"name": "only_alpha", "arguments": {}}, id=7)
        for url in (gw.url + "/mcp", gw.endpoint("alpha")):
            status, _, messages = await post(http, url, call, {**modern_headers("tools/call", "only_alpha"), **key})
            assert status == 403
            error = messages[0]["error"]
            assert messages[0]["id"] == 7
            assert error["code"] == -32066
            assert error["data"] == {"reason": "forbidden", "rule": "policy.default"}
            assert "only_alpha" in error["message"]
        # A server it may not use at all: refused at the door, not merely listed empty.
        status, _, messages = await post(http, gw.endpoint("beta"), INIT, key)
        assert status == 403
        assert messages[0]["error"]["data"]["rule"] == "policy.default"
        async with http.get(gw.url + "/servers", headers=key) as resp:
            assert [s["name"] for s in (await resp.json())["servers"]] == ["alpha"]
        async with http.get(gw.url + "/servers", headers={"X-API-Key": ENG_KEY}) as resp:
            assert [s["name"] for s in (await resp.json())["servers"]] == ["alpha", "beta"]


async def test_jwt_roles_from_claims_open_what_the_policy_grants_them(named_upstreams: dict[str, str]) -> None:
    async with local_idp() as idp:
        text_ = config_text(named_upstreams, KEYS_YAML + jwt_yaml(idp).removeprefix("\n"), POLICY_YAML)
        async with gateway(text_) as gw:
            admin = bearer(idp.token(groups=["staff", "admins"]))
            async with sdk_client(gw.url + "/mcp", "auto", headers=admin) as client:
                assert text(await client.call_tool("beta__only_beta", {})) == "only beta"
            async with aiohttp.ClientSession() as http:
                status, _, messages = await post(http, gw.url + "/mcp", INIT, bearer(idp.token(groups=["staff"])))
                assert status == 403
                assert messages[0]["error"]["data"]["rule"] == "policy.default"


async def test_lists_are_filtered_in_json_and_in_sse_answers_and_in_batches() -> None:
    tools = [{"name": n, "inputSchema": {"type": "object"}} for n in ("whoami", "add", "drop_tables")]

    async def upstream(request: Any) -> Any:
        from aiohttp import web

        body = await request.json()
        if isinstance(body, list):
            answers = [{"jsonrpc": "2.0", "id": m["id"], "result": {"tools": tools}} for m in body if "id" in m]
            return web.json_response(answers)
        if body.get("method") == "initialize":
            result = {"protocolVersion": "2025-03-26", "capabilities": {"tools": {}}, "serverInfo": {"name": "u"}}
            return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": result},
                                     headers={"Mcp-Session-Id": "up-1"})  # fmt: skip
        answer = {"jsonrpc": "2.0", "id": body.get("id"), "result": {"tools": tools}}
        if body.get("params", {}).get("_meta", {}).get("sse"):
            payload = f"event: message\ndata: {json.dumps(answer)}\n\n"
            return web.Response(body=payload, content_type="text/event-stream")
        return web.json_response(answer)

    async with raw_upstream(upstream) as (url, _):
        text_ = config_text({"alpha": url, "beta": url}, KEYS_YAML, POLICY_YAML)
        async with gateway(text_) as gw, aiohttp.ClientSession() as http:
            key = {"X-API-Key": CONTRACTOR_KEY}
            for sse in (False, True):  # the upstream answers in SSE when the request's _meta says so
                message = modern_call("tools/list")
                message["params"]["_meta"]["sse"] = sse
                status, _, messages = await post(
                    http, gw.endpoint("alpha"), message, {**modern_headers("tools/list"), **key}
                )
                assert status == 200
                assert [t["name"] for t in messages[-1]["result"]["tools"]] == ["whoami", "add"]
            # A 2025-03-26 batch: every list in it filtered; a forbidden call refuses the batch.
            old = {**POST_HEADERS, **key, "MCP-Protocol-Version": "2025-03-26"}
            async with http.post(
                gw.endpoint("alpha"),
                json=INIT | {"params": {**INIT["params"], "protocolVersion": "2025-03-26"}},
                headers=old,
            ) as resp:
                sid = resp.headers["Mcp-Session-Id"]
            old["Mcp-Session-Id"] = sid
            batch = [rpc("tools/list", id=1), rpc("tools/list", id="1")]
            async with http.post(gw.endpoint("alpha"), json=batch, headers=old) as resp:
                answers = await resp.json()
            assert [[t["name"] for t in a["result"]["tools"]] for a in answers] == [["whoami", "add"]] * 2
            batch = [rpc("tools/list", id=1), rpc("tools/call", {"name": "drop_tables"}, id=2)]
            async with http.post(gw.endpoint("alpha"), json=batch, headers=old) as resp:
                assert resp.status == 403


async def test_shadow_mode_logs_and_counts_but_lets_through(
    named_upstreams: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    shadow = POLICY_YAML.replace("  default: deny\n", "  default: deny\n  shadow: true\n")
    async with gateway(config_text(named_upstreams, KEYS_YAML, shadow)) as gw:
        async with sdk_client(gw.url + "/mcp", "2026-07-28", headers={"X-API-Key": CONTRACTOR_KEY}) as client:
            assert "beta__whoami" in {t.name for t in (await client.list_tools()).tools}
            assert text(await client.call_tool("beta__whoami", {})) == "beta"
        assert gw.gateway.shadow_denials == 1
        assert "would be denied by policy.default" in caplog.text
        async with aiohttp.ClientSession() as http, http.get(gw.url + "/readyz") as resp:
            assert (await resp.json())["policy"] == {"shadow": True, "would_deny": 1}


async def test_unified_batches_are_judged_message_by_message(named_upstreams: dict[str, str]) -> None:
    async with gateway(config_text(named_upstreams, KEYS_YAML, POLICY_YAML)) as gw, aiohttp.ClientSession() as http:
        key = {"X-API-Key": CONTRACTOR_KEY}
        init = INIT | {"params": {**INIT["params"], "protocolVersion": "2025-03-26"}}
        async with http.post(gw.url + "/mcp", json=init, headers={**POST_HEADERS, **key}) as resp:
            sid = resp.headers["Mcp-Session-Id"]
        headers = {**session_headers(sid, "2025-03-26"), **key}
        batch = [
            rpc("tools/call", {"name": "whoami", "arguments": {}}, id=1),
            rpc("tools/call", {"name": "beta__whoami"}, id=2),
        ]
        async with http.post(gw.url + "/mcp", json=batch, headers=headers) as resp:
            answers = {a["id"]: a for a in await resp.json()}
        assert answers[1]["result"]["content"][0]["text"] == "alpha"
        assert answers[2]["error"]["data"] == {"reason": "forbidden", "rule": "policy.default"}


async def test_an_engineer_reaches_every_server(named_upstreams: dict[str, str]) -> None:
    text_ = config_text(named_upstreams, KEYS_YAML, POLICY_YAML)
    async with gateway(text_) as gw, aiohttp.ClientSession(headers={"X-API-Key": ENG_KEY}) as http:
        for name in ("alpha", "beta"):
            assert await initialize(http, gw.endpoint(name))
