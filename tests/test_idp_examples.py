"""The example configurations for Okta, Auth0, Keycloak, Entra ID and Google, against tokens
shaped like each provider's: the identity and roles each example derives, and what its policy
then allows. Keys are real (tests/idp.py); the key set is served by a fake fetch, so the
examples' issuers are used exactly as written.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from mcpgate.auth.jwks import FetchError, JwksCache
from mcpgate.auth.jwt import JwtVerifier
from mcpgate.auth.oauth import ProtectedResource
from mcpgate.config import load_config
from mcpgate.policy import Policy
from tests.idp import KEYS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "auth"

# Per provider: the claims its tokens carry (besides iss, exp), the client id and roles the example
# must derive, and a call its policy must allow.
TOKENS: dict[str, tuple[dict[str, Any], str, tuple[str, ...]]] = {
    "okta": (
        {
            "aud": "api://default",
            "sub": "alice@acme.com",
            "scp": ["openid", "mcp:tools"],
            "groups": ["Everyone", "mcp-admins"],
        },
        "alice@acme.com",
        ("admin",),
    ),
    "auth0": (
        {
            "aud": ["https://mcp.example.com", "https://acme.eu.auth0.com/userinfo"],
            "sub": "auth0|64f0c0ffee",
            "permissions": ["mcp:admin"],
            "https://mcp.example.com/roles": ["engineer"],
        },
        "auth0|64f0c0ffee",
        ("admin", "engineer"),
    ),
    "keycloak": (
        {
            "aud": ["mcpgate", "account"],
            "preferred_username": "alice",
            "realm_access": {"roles": ["offline_access", "mcp-admin"]},
            "resource_access": {"mcpgate": {"roles": ["reader"]}},
        },
        "alice",
        ("admin", "reader"),
    ),
    "entra-id": (
        {
            "aud": "11111111-1111-1111-1111-111111111111",
            "oid": "22222222-2222-2222-2222-222222222222",
            "scp": "User.Read MCP.Access",
            "roles": ["MCP.User"],
        },
        "22222222-2222-2222-2222-222222222222",
        ("user",),
    ),
    "google": (
        {"aud": "1234-abc.apps.googleusercontent.com", "email": "ops@example.com", "hd": "example.com", "sub": "1089"},
        "ops@example.com",
        ("staff", "admin"),
    ),
}


def load_example(name: str) -> Any:
    path = EXAMPLES / f"{name}.yml"
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text()))
    return load_config(path, env={name: f"example-{name.lower()}" for name in names})


def test_every_example_is_covered() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.yml")) == sorted(TOKENS)


@pytest.mark.parametrize("provider", sorted(TOKENS))
async def test_a_provider_shaped_token_gives_the_identity_and_roles_the_example_promises(provider: str) -> None:
    config = load_example(provider)
    assert config.auth is not None and config.auth.jwt is not None and config.policy is not None
    settings = config.auth.jwt
    fetched: list[str] = []

    async def fetch(url: str) -> bytes:
        fetched.append(url)
        if url.endswith("/.well-known/openid-configuration"):
            return json.dumps({"issuer": settings.issuer, "jwks_uri": "https://keys.example/jwks"}).encode()
        if url == "https://keys.example/jwks":
            return json.dumps({"keys": [KEYS["rsa"].jwk()]}).encode()
        raise FetchError(f"unexpected fetch of {url}")

    resource = ProtectedResource.build(config.server.public_url, settings, [u.name for u in config.upstreams])
    verifier = JwtVerifier(settings, (*settings.audience, *resource.audiences()), JwksCache(settings, fetch))
    claims, client_id, roles = TOKENS[provider]
    now = int(time.time())
    token = jwt.encode(
        {"iss": settings.issuer, "iat": now, "exp": now + 600, **claims},
        KEYS["rsa"].private,
        algorithm="RS256",
        headers={"kid": KEYS["rsa"].kid},
    )
    identity = await verifier.verify(token)
    assert (identity.client_id, identity.roles) == (client_id, roles)
    assert fetched[0] == settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
    # And the example's policy lets that identity call a tool of the demo upstream.
    decision = Policy(config.policy).judge(identity, "demo", "tools/call", ("tool", "echo"))
    assert decision.allowed, decision.where
