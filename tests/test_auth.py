"""Client authentication: credentials, API keys, identities, the JWKS cache, JWT verification, OAuth metadata.

Everything here runs without a network: the identity provider is a dict behind an injected ``fetch``,
clocks are injected, and the signing keys are real ones made with ``cryptography``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, tzinfo
from textwrap import dedent
from typing import Any, Self

import jwt
import jwt.api_jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from multidict import CIMultiDict, CIMultiDictProxy

from mcpgate.auth import ANONYMOUS, Authenticator, Identity
from mcpgate.auth.apikeys import HASH_PREFIX, KEY_PREFIX, ApiKeys, generate_key, hash_key
from mcpgate.auth.credentials import MAX_CREDENTIAL, Credential, find_credential
from mcpgate.auth.identity import claim, claim_values, mapped_roles, token_scopes
from mcpgate.auth.jwks import DISCOVERY_PATH, FetchError, JwksCache, SigningKey, parse_jwks
from mcpgate.auth.jwt import CACHE_SECONDS, JwtVerifier
from mcpgate.auth.oauth import WELL_KNOWN, ProtectedResource, api_key_challenge, quoted
from mcpgate.config import load_config
from mcpgate.config.model import ApiKey, AuthConfig, JwtConfig, RoleMapping
from mcpgate.errors import GatewayError

# --- keys and helpers shared by the whole module ------------------------------------------------------------------

# RSA key generation is slow: one key for the whole module.
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC_KEY_2 = ec.generate_private_key(ec.SECP256R1())
EC384_KEY = ec.generate_private_key(ec.SECP384R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()

ISSUER = "https://idp.example.com"
JWKS_URI = "https://idp.example.com/jwks"
AUDIENCE = "https://gw.example.com/mcp"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def public_jwk(private: PrivateKey, kid: str | None = None, **extra: Any) -> dict[str, Any]:
    """The public JWK of ``private``, as an identity provider publishes it."""
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    if kid is not None:
        jwk["kid"] = kid
    jwk.update(extra)
    return dict(jwk)


RSA_JWK = public_jwk(RSA_KEY, "rsa-1")
EC_JWK = public_jwk(EC_KEY, "ec-1")
EC384_JWK = public_jwk(EC384_KEY, "ec384-1")
ED_JWK = public_jwk(ED_KEY, "ed-1")
ALL_JWKS = {"keys": [RSA_JWK, EC_JWK, EC384_JWK, ED_JWK]}


def jwks_bytes(*jwks: Mapping[str, Any]) -> bytes:
    return json.dumps({"keys": list(jwks)}).encode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_now(**overrides: Any) -> dict[str, Any]:
    """Valid claims for the default verifier, issued now and valid for an hour."""
    now = int(time.time())
    claims: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 3600}
    claims.update(overrides)
    return claims


def make_token(
    claims: Mapping[str, Any] | None = None,
    *,
    key: PrivateKey = RSA_KEY,
    alg: str = "RS256",
    kid: str | None = "rsa-1",
    drop: Iterable[str] = (),
) -> str:
    payload = dict(claims_now() if claims is None else claims)
    for name in drop:
        del payload[name]
    headers = {} if kid is None else {"kid": kid}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def forge(header: Mapping[str, Any], payload: Mapping[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A JWT put together by hand, for the attacks PyJWT refuses to help with."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


class FakeIdp:
    """An identity provider made of a dict: URL to document. Counts fetches; can be made to fail or to wait."""

    def __init__(self, documents: Mapping[str, Any] | None = None) -> None:
        self.documents: dict[str, Any] = dict(documents or {JWKS_URI: ALL_JWKS})
        self.calls: list[str] = []
        self.failing = False
        self.gate: asyncio.Event | None = None

    async def fetch(self, url: str) -> bytes:
        self.calls.append(url)
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise FetchError(f"{url} answered HTTP 503")
        if url not in self.documents:
            raise FetchError(f"{url} answered HTTP 404")
        document = self.documents[url]
        return document if isinstance(document, bytes) else json.dumps(document).encode()


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingCache(JwksCache):
    """A JwksCache that counts key lookups, i.e. signature checks about to happen."""

    lookups = 0

    async def key_for(self, kid: str | None, alg: str) -> SigningKey:
        self.lookups += 1
        return await super().key_for(kid, alg)


async def settle() -> None:
    """Let background tasks (a JWKS refetch started with create_task) run to completion."""
    for _ in range(5):
        await asyncio.sleep(0)


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    """Request headers as aiohttp hands them over: case-insensitive, possibly repeated."""
    return CIMultiDictProxy(CIMultiDict(pairs))


def reason_of(exc: pytest.ExceptionInfo[GatewayError]) -> str:
    return exc.value.reason.name


# --- credentials.find_credential ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ((("Authorization", "Bearer abc"),), Credential("bearer", "abc")),
        ((("Authorization", "bearer abc"),), Credential("bearer", "abc")),
        ((("Authorization", "BEARER abc"),), Credential("bearer", "abc")),
        ((("Authorization", "  Bearer   abc  "),), Credential("bearer", "abc")),
        ((("Authorization", "Api-Key k1"),), Credential("api-key", "k1")),
        ((("Authorization", "api-key k1"),), Credential("api-key", "k1")),
        ((("Authorization", "ApiKey k1"),), Credential("api-key", "k1")),
        ((("Authorization", "APIKEY k1"),), Credential("api-key", "k1")),
        ((("X-API-Key", "k1"),), Credential("api-key", "k1")),
        ((("x-api-key", " k1 "),), Credential("api-key", "k1")),
        ((("Api-Key", "k1"),), Credential("api-key", "k1")),
        ((("API-KEY", "k1"),), Credential("api-key", "k1")),
    ],
)
def test_credential_is_found_in_the_usual_headers(pairs: tuple[tuple[str, str], ...], expected: Credential) -> None:
    assert find_credential(headers(*pairs)) == expected


def test_plain_dict_headers_work_too() -> None:
    assert find_credential({"Authorization": "Bearer abc"}) == Credential("bearer", "abc")
    assert find_credential({"X-API-Key": "k1"}) == Credential("api-key", "k1")


def test_no_credential_is_none() -> None:
    assert find_credential(headers()) is None
    assert find_credential(headers(("Content-Type", "application/json"), ("Cookie", "a=b"))) is None


@pytest.mark.parametrize(
    "value",
    [
        "Basic dXNlcjpwYXNz",
        "Digest username=x",
        "abc",
        "Token abc",
        "",
        "   ",
        "Bearer",
        "Bearer   ",
        "Api-Key",
        "ApiKey ",
    ],
)
def test_malformed_authorization_is_invalid_token(value: str) -> None:
    with pytest.raises(GatewayError) as caught:
        find_credential(headers(("Authorization", value)))
    assert reason_of(caught) == "invalid_token"
    assert caught.value.status == 401


@pytest.mark.parametrize("name", ["X-API-Key", "Api-Key"])
@pytest.mark.parametrize("value", ["", "   "])
def test_empty_key_header_is_invalid_token(name: str, value: str) -> None:
    with pytest.raises(GatewayError) as caught:
        find_credential(headers((name, value)))
    assert reason_of(caught) == "invalid_token"


def test_unsupported_scheme_message_does_not_repeat_the_value() -> None:
    with pytest.raises(GatewayError) as caught:
        find_credential(headers(("Authorization", "Basic c2VjcmV0LXBhc3N3b3Jk")))
    assert "c2VjcmV0LXBhc3N3b3Jk" not in caught.value.message
    assert "Bearer" in caught.value.message


@pytest.mark.parametrize(
    "pairs",
    [
        (("Authorization", "Bearer " + "x" * (MAX_CREDENTIAL + 1)),),
        (("Authorization", "Api-Key " + "x" * (MAX_CREDENTIAL + 1)),),
        (("X-API-Key", "x" * (MAX_CREDENTIAL + 1)),),
        (("Api-Key", "x" * (MAX_CREDENTIAL + 1)),),
    ],
)
def test_oversized_credential_is_invalid_token(pairs: tuple[tuple[str, str], ...]) -> None:
    with pytest.raises(GatewayError) as caught:
        find_credential(headers(*pairs))
    assert reason_of(caught) == "invalid_token"
    assert "x" * 100 not in caught.value.message


def test_credential_of_exactly_the_maximum_length_is_accepted() -> None:
    value = "x" * MAX_CREDENTIAL
    assert find_credential(headers(("Authorization", f"Bearer {value}"))) == Credential("bearer", value)


@pytest.mark.parametrize(
    "pairs",
    [
        (("Authorization", "Bearer first-secret"), ("X-API-Key", "second-secret")),
        (("Authorization", "Api-Key first-secret"), ("Api-Key", "second-secret")),
        (("X-API-Key", "first-secret"), ("Api-Key", "second-secret")),
        (("Authorization", "Bearer first-secret"), ("X-API-Key", "first-secret"), ("Api-Key", "second-secret")),
    ],
)
def test_two_different_credentials_are_refused(pairs: tuple[tuple[str, str], ...]) -> None:
    with pytest.raises(GatewayError) as caught:
        find_credential(headers(*pairs))
    assert reason_of(caught) == "invalid_token"
    assert "secret" not in caught.value.message


def test_the_same_credential_twice_is_fine() -> None:
    assert find_credential(headers(("Authorization", "Bearer same"), ("X-API-Key", "same"))) == Credential(
        "bearer", "same"
    )
    assert find_credential(headers(("X-API-Key", "same"), ("Api-Key", " same "))) == Credential("api-key", "same")
    assert find_credential(
        headers(("Authorization", "Api-Key same"), ("X-API-Key", "same"), ("Api-Key", "same"))
    ) == Credential("api-key", "same")


@pytest.mark.parametrize("name", ["Authorization", "X-API-Key"])
def test_a_repeated_header_with_another_credential_is_refused(name: str) -> None:
    prefix = "Bearer " if name == "Authorization" else ""
    with pytest.raises(GatewayError) as caught:
        find_credential(headers((name, prefix + "one"), (name, prefix + "two")))
    assert reason_of(caught) == "invalid_token"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Bearer abc", Credential("bearer", "abc")),
        ("bearer a.b.c", Credential("bearer", "a.b.c")),
        ("Api-Key k1", Credential("api-key", "k1")),
        ("ApiKey k1", Credential("api-key", "k1")),
        ("k1", Credential("bearer", "k1")),
        ("  k1  ", Credential("bearer", "k1")),
        ("a.b.c", Credential("bearer", "a.b.c")),
    ],
)
def test_custom_gateway_header_accepts_a_scheme_or_a_bare_value(value: str, expected: Credential) -> None:
    assert find_credential(headers(("X-Gateway-Key", value)), "X-Gateway-Key") == expected
    # Header names are case-insensitive, in the request and in the configuration.
    assert find_credential(headers(("x-gateway-key", value)), "X-GATEWAY-KEY") == expected


def test_custom_gateway_header_is_the_only_one_read() -> None:
    ignored = (("Authorization", "Basic dXNlcjpwYXNz"), ("X-API-Key", "other"), ("Api-Key", "third"))
    assert find_credential(headers(*ignored), "X-Gateway-Key") is None
    assert find_credential(headers(*ignored, ("X-Gateway-Key", "mine")), "X-Gateway-Key") == Credential(
        "bearer", "mine"
    )


@pytest.mark.parametrize(
    "value", ["Basic dXNlcjpwYXNz", "two words", "", "  ", "Bearer", "Api-Key", "x" * (MAX_CREDENTIAL + 1)]
)
def test_custom_gateway_header_rejects_malformed_values(value: str) -> None:
    with pytest.raises(GatewayError) as caught:
        find_credential(headers(("X-Gateway-Key", value)), "X-Gateway-Key")
    assert reason_of(caught) == "invalid_token"


def test_gateway_header_authorization_in_any_case_is_the_default_behaviour() -> None:
    # "authorization" names the default header: the key headers are read as well, bare values are not allowed.
    assert find_credential(headers(("X-API-Key", "k1")), "authorization") == Credential("api-key", "k1")
    with pytest.raises(GatewayError):
        find_credential(headers(("Authorization", "bare")), "AUTHORIZATION")


def test_credential_repr_never_shows_the_secret() -> None:
    credential = Credential("bearer", "s3cr3t-value")
    assert "s3cr3t-value" not in repr(credential)
    assert "s3cr3t-value" not in str(credential)
    assert "s3cr3t-value" not in f"{credential!r} {[credential]} {(credential,)}"
    assert repr(credential) == "Credential(scheme='bearer', value='***')"


@pytest.mark.parametrize(
    ("credential", "expected"),
    [
        (Credential("bearer", "aaa.bbb.ccc"), True),
        (Credential("bearer", make_token()), True),
        (Credential("bearer", "aaa.bbb"), False),
        (Credential("bearer", "a.b.c.d"), False),
        (Credential("bearer", "opaque"), False),
        (Credential("api-key", "aaa.bbb.ccc"), False),
    ],
)
def test_looks_like_jwt(credential: Credential, expected: bool) -> None:
    assert credential.looks_like_jwt is expected


# --- apikeys ------------------------------------------------------------------------------------------------------


def test_hash_key_format() -> None:
    hashed = hash_key("s3cret")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", hashed)
    assert hashed == HASH_PREFIX + hashlib.sha256(b"s3cret").hexdigest()
    assert hash_key("s3cret") == hashed
    assert hash_key("s3cret2") != hashed
    assert hash_key("clé") == HASH_PREFIX + hashlib.sha256("clé".encode()).hexdigest()


def test_generate_key_is_long_prefixed_and_unique() -> None:
    keys = {generate_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith(KEY_PREFIX)
        assert len(key) >= len(KEY_PREFIX) + 43  # 32 random bytes in base64url
        assert re.fullmatch(r"mgk_[A-Za-z0-9_-]+", key)


def test_generated_key_round_trips_through_its_hash() -> None:
    key = generate_key()
    keys = ApiKeys([ApiKey("ci", key_hash=hash_key(key), roles=("ci",))])
    assert keys.identify(key) == Identity("ci", ("ci",), "api_key")


def test_identify_with_key_hash_and_plain_key_entries() -> None:
    keys = ApiKeys(
        [
            ApiKey("ci", key_hash=hash_key("ci-key"), roles=("ci", "deploy")),
            ApiKey("dev", key="dev-key"),
            ApiKey("ops", key_hash=hash_key("ops-key"), roles=("ops",)),
        ]
    )
    assert keys
    ci = keys.identify("ci-key")
    assert ci == Identity("ci", ("ci", "deploy"), "api_key")
    assert ci is not None and ci.kind == "api_key" and ci.authenticated and ci.roles == ("ci", "deploy")
    assert keys.identify("dev-key") == Identity("dev", (), "api_key")
    assert keys.identify("ops-key") == Identity("ops", ("ops",), "api_key")


@pytest.mark.parametrize(
    "presented", ["wrong", "", "ci-key ", " ci-key", "CI-KEY", "ci-ke", "ci-key\x00", "dev-key2", hash_key("ci-key")]
)
def test_identify_wrong_key_is_none(presented: str) -> None:
    keys = ApiKeys([ApiKey("ci", key_hash=hash_key("ci-key")), ApiKey("dev", key="dev-key")])
    assert keys.identify(presented) is None


def test_no_keys_is_falsy_and_identifies_nobody() -> None:
    keys = ApiKeys([])
    assert not keys
    assert keys.identify("anything") is None


def test_upper_case_hash_in_the_config_works() -> None:
    digest = hashlib.sha256(b"ci-key").hexdigest().upper()
    config = load_config(
        text=dedent(
            f"""\
            upstreams:
              a:
                url: http://127.0.0.1:9000/mcp
            auth:
              api_keys:
                - id: ci
                  key_hash: sha256:{digest}
                  roles: [ci]
                - id: dev
                  key: dev-key
            """
        ),
        source="c.yml",
        env={},
    )
    assert config.auth is not None
    assert config.auth.api_keys[0].key_hash == hash_key("ci-key")
    keys = ApiKeys(config.auth.api_keys)
    assert keys.identify("ci-key") == Identity("ci", ("ci",), "api_key")
    assert keys.identify("dev-key") == Identity("dev", (), "api_key")
    # Even without the configuration's lower-casing, an upper-case digest is the same bytes.
    assert ApiKeys([ApiKey("ci", key_hash="sha256:" + digest)]).identify("ci-key") == Identity("ci", (), "api_key")


@pytest.mark.parametrize("presented", ["\udcff", "k\udc80ey", "\udc80" * 10, "clé", "\x00", "🔑"])
def test_identify_survives_surrogate_escaped_and_odd_strings(presented: str) -> None:
    """aiohttp hands undecodable header bytes over as surrogate escapes (U+DC80..U+DCFF)."""
    keys = ApiKeys([ApiKey("ci", key="ci-key")])
    assert keys.identify(presented) is None


def test_identify_matches_a_non_ascii_key() -> None:
    keys = ApiKeys([ApiKey("fr", key="clé-secrète"), ApiKey("emoji", key_hash=hash_key("🔑🔑"))])
    assert keys.identify("clé-secrète") == Identity("fr", (), "api_key")
    assert keys.identify("🔑🔑") == Identity("emoji", (), "api_key")


@pytest.mark.parametrize("presented", ["\ud800", "key\udbff"])
def test_identify_survives_any_lone_surrogate(presented: str) -> None:
    keys = ApiKeys([ApiKey("ci", key="ci-key")])
    assert keys.identify(presented) is None


def test_api_key_repr_hides_the_key() -> None:
    assert "ci-key" not in repr(ApiKey("ci", key="ci-key"))
    assert hash_key("ci-key") not in repr(ApiKey("ci", key_hash=hash_key("ci-key")))


# --- identity -----------------------------------------------------------------------------------------------------

AUTH0_ROLES = "https://example.com/roles"


@pytest.mark.parametrize(
    ("claims", "path", "expected"),
    [
        ({"sub": "alice"}, "sub", "alice"),
        ({"realm_access": {"roles": ["a", "b"]}}, "realm_access.roles", ["a", "b"]),
        ({"a": {"b": {"c": 3}}}, "a.b.c", 3),
        ({"a": {"b": {"c": 3}}}, "a.b", {"c": 3}),
        ({AUTH0_ROLES: ["admin"]}, AUTH0_ROLES, ["admin"]),
        ({"a.b": "flat", "a": {"b": "nested"}}, "a.b", "flat"),
        ({"a": {"b": "nested"}}, "a.b", "nested"),
        ({"a": "scalar"}, "a.b", None),
        ({"a": ["b"]}, "a.b", None),
        ({"a": {"c": 1}}, "a.b", None),
        ({}, "sub", None),
        ({"sub": None}, "sub", None),
        ({"resource_access": {"mcp-gw": {"roles": ["x"]}}}, "resource_access.mcp-gw.roles", ["x"]),
    ],
)
def test_claim(claims: dict[str, Any], path: str, expected: Any) -> None:
    assert claim(claims, path) == expected


@pytest.mark.parametrize(
    ("claims", "path", "expected"),
    [
        ({"groups": "admins"}, "groups", ("admins",)),
        ({"groups": "two words"}, "groups", ("two words",)),
        ({"groups": ["a", "b"]}, "groups", ("a", "b")),
        ({"groups": ["a", 1, True, None, 1.5, {"x": 1}, ["y"]]}, "groups", ("a", "1")),
        ({"groups": []}, "groups", ()),
        ({"level": 3}, "level", ("3",)),
        ({"level": 1.5}, "level", ("1.5",)),
        ({"email_verified": True}, "email_verified", ("true",)),
        ({"email_verified": False}, "email_verified", ("false",)),
        ({"x": None}, "x", ()),
        ({"x": {"y": 1}}, "x", ()),
        ({}, "missing", ()),
        ({"scope": "read write  admin"}, "scope", ("read", "write", "admin")),
        ({"scp": "read write"}, "scp", ("read", "write")),
        ({"scp": ["read", "write"]}, "scp", ("read", "write")),
        ({"scope": ""}, "scope", ()),
        ({"ext": {"scope": "a b"}}, "ext.scope", ("a", "b")),
        ({"description": "a b"}, "description", ("a b",)),
        ({AUTH0_ROLES: ["admin", "dev"]}, AUTH0_ROLES, ("admin", "dev")),
    ],
)
def test_claim_values(claims: dict[str, Any], path: str, expected: tuple[str, ...]) -> None:
    assert claim_values(claims, path) == expected


MAPPINGS = (
    RoleMapping("groups", "admins", ("admin", "ops")),
    RoleMapping("groups", "devs", ("dev", "admin")),
    RoleMapping("realm_access.roles", "reader", ("read",)),
    RoleMapping(AUTH0_ROLES, "billing", ("billing",)),
    RoleMapping("email_verified", "true", ("verified",)),
    RoleMapping("groups", "nobody", ("never",)),
)


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({}, ()),
        ({"groups": ["devs", "admins"]}, ("admin", "ops", "dev")),
        ({"groups": "devs"}, ("dev", "admin")),
        ({"groups": ["admins", "admins"]}, ("admin", "ops")),
        ({"realm_access": {"roles": ["reader", "other"]}}, ("read",)),
        ({AUTH0_ROLES: ["billing"], "email_verified": True}, ("billing", "verified")),
        ({"email_verified": False}, ()),
        ({"email_verified": "true"}, ("verified",)),
        ({"groups": "admins devs"}, ()),  # not a scope claim: one value, not split
    ],
)
def test_mapped_roles_in_mapping_order_each_once(claims: dict[str, Any], expected: tuple[str, ...]) -> None:
    assert mapped_roles(claims, MAPPINGS) == expected


def test_mapped_roles_without_mappings() -> None:
    assert mapped_roles({"groups": ["admins"]}, ()) == ()


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({}, frozenset()),
        ({"scope": "openid mcp:tools"}, {"openid", "mcp:tools"}),
        ({"scp": ["mcp:tools", "mcp:read"]}, {"mcp:tools", "mcp:read"}),
        ({"scp": "a b"}, {"a", "b"}),
        ({"scope": "a b", "scp": ["c"]}, {"a", "b", "c"}),
        ({"scope": ["a", "b"]}, {"a", "b"}),
        ({"scope": 3}, {"3"}),
        ({"scope": None}, frozenset()),
    ],
)
def test_token_scopes(claims: dict[str, Any], expected: set[str]) -> None:
    assert token_scopes(claims) == frozenset(expected)


def test_identity_principal_depends_on_the_kind() -> None:
    key = Identity("ci", kind="api_key")
    token = Identity("ci", kind="jwt")
    assert key.principal == "api_key:ci"
    assert token.principal == "jwt:ci"
    assert key.principal != token.principal
    assert key != token


def test_anonymous_identity() -> None:
    assert Identity("anonymous") == ANONYMOUS
    assert not ANONYMOUS.authenticated
    assert ANONYMOUS.kind == "anonymous"
    assert ANONYMOUS.principal == "anonymous:anonymous"
    assert ANONYMOUS.roles == () and ANONYMOUS.scopes == frozenset()
    assert Identity("x", kind="jwt").authenticated and Identity("x", kind="api_key").authenticated


def test_identity_claims_are_not_compared_hashed_or_shown() -> None:
    a = Identity("alice", ("r",), "jwt", {"secret_claim": "s3cr3t"})
    b = Identity("alice", ("r",), "jwt", {"other": 1})
    assert a == b
    assert hash(a) == hash(b)
    assert "s3cr3t" not in repr(a)


# --- jwks.parse_jwks and SigningKey -------------------------------------------------------------------------------


def test_parse_jwks_keeps_rsa_ec_and_okp_signing_keys() -> None:
    keys = parse_jwks(json.dumps(ALL_JWKS).encode())
    assert [(k.kid, k.kty, k.curve, k.alg) for k in keys] == [
        ("rsa-1", "RSA", None, None),
        ("ec-1", "EC", "P-256", None),
        ("ec384-1", "EC", "P-384", None),
        ("ed-1", "OKP", "Ed25519", None),
    ]
    assert isinstance(keys[0].key, rsa.RSAPublicKey)
    assert isinstance(keys[1].key, ec.EllipticCurvePublicKey)
    assert isinstance(keys[3].key, ed25519.Ed25519PublicKey)


@pytest.mark.parametrize(
    "jwk",
    [
        public_jwk(RSA_KEY, "a", use="sig"),
        public_jwk(RSA_KEY, "a", alg="RS256"),
        public_jwk(RSA_KEY, "a", alg="PS512"),
        public_jwk(RSA_KEY, "a", key_ops=["verify"]),
        public_jwk(RSA_KEY, "a", key_ops=["verify", "sign"]),
        public_jwk(EC_KEY, "a", alg="ES256", use="sig"),
        public_jwk(ED_KEY, "a", alg="EdDSA"),
        public_jwk(EC_KEY),  # no kid at all
        public_jwk(EC_KEY, "a", x5t="ignored", extra={"nested": True}),
    ],
)
def test_parse_jwks_keeps_usable_variants(jwk: dict[str, Any]) -> None:
    (key,) = parse_jwks(jwks_bytes(jwk))
    assert key.kid == jwk.get("kid")
    assert key.alg == jwk.get("alg")


def test_a_key_with_a_non_string_kid_is_dropped() -> None:
    assert parse_jwks(jwks_bytes(dict(public_jwk(EC_KEY), kid=7))) == ()


@pytest.mark.parametrize(
    "jwk",
    [
        pytest.param({"kty": "oct", "k": b64url(b"shared secret"), "kid": "h"}, id="oct"),
        pytest.param({"kty": "oct", "k": b64url(b"shared secret"), "kid": "h", "alg": "HS256"}, id="oct-hs256"),
        pytest.param(public_jwk(RSA_KEY, "a", use="enc"), id="use-enc"),
        pytest.param(public_jwk(RSA_KEY, "a", use=None), id="use-null"),
        pytest.param(public_jwk(EC_KEY, "a", use="enc"), id="ec-use-enc"),
        pytest.param(dict(ECAlgorithm.to_jwk(EC_KEY, as_dict=True), kid="p"), id="ec-private"),
        pytest.param(dict(OKPAlgorithm.to_jwk(ED_KEY, as_dict=True), kid="p"), id="okp-private"),
        pytest.param(public_jwk(RSA_KEY, "a", d="AQAB"), id="rsa-with-d"),
        pytest.param(public_jwk(RSA_KEY, "a", key_ops=["encrypt"]), id="key-ops-encrypt"),
        pytest.param(public_jwk(RSA_KEY, "a", key_ops=["sign"]), id="key-ops-sign"),
        pytest.param(public_jwk(RSA_KEY, "a", key_ops=[]), id="key-ops-empty"),
        pytest.param(public_jwk(RSA_KEY, "a", alg="HS256"), id="rsa-alg-hs256"),
        pytest.param(public_jwk(EC_KEY, "a", alg="HS256"), id="ec-alg-hs256"),
        pytest.param(public_jwk(ED_KEY, "a", alg="HS512"), id="okp-alg-hs512"),
        pytest.param(public_jwk(RSA_KEY, "a", alg="none"), id="alg-none"),
        pytest.param(public_jwk(RSA_KEY, "a", alg="RSA-OAEP"), id="alg-encryption"),
        pytest.param(public_jwk(RSA_KEY, "a", alg=256), id="alg-number"),
        pytest.param({"kty": "RSA", "kid": "a", "e": "AQAB"}, id="rsa-no-n"),
        pytest.param({"kty": "RSA", "kid": "a", "n": "!!!", "e": "AQAB"}, id="rsa-bad-n"),
        pytest.param({"kty": "EC", "kid": "a", "crv": "P-256", "x": "AAAA", "y": "AAAA"}, id="ec-bad-point"),
        pytest.param(dict(EC_JWK, crv="P-999"), id="ec-bad-curve"),
        pytest.param({"kty": "OKP", "kid": "a", "crv": "X25519", "x": b64url(bytes(32))}, id="okp-x25519"),
        pytest.param({"kty": "XYZ", "kid": "a"}, id="unknown-kty"),
        pytest.param({"kty": 1, "kid": "a"}, id="kty-number"),
        pytest.param({"kid": "a"}, id="no-kty"),
        pytest.param("a string", id="string"),
        pytest.param(["a", "list"], id="list"),
        pytest.param(None, id="null"),
        pytest.param(42, id="number"),
    ],
)
def test_parse_jwks_drops_unusable_keys(jwk: Any) -> None:
    assert parse_jwks(jwks_bytes(jwk)) == ()
    # and does not let them spoil the good ones
    (kept,) = parse_jwks(jwks_bytes(jwk, EC_JWK))
    assert kept.kid == "ec-1"


@pytest.mark.parametrize("alg", [["RS256"], {"name": "RS256"}])
def test_parse_jwks_drops_a_key_with_an_unhashable_alg(alg: Any) -> None:
    (kept,) = parse_jwks(jwks_bytes(public_jwk(RSA_KEY, "a", alg=alg), EC_JWK))
    assert kept.kid == "ec-1"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"<html>503</html>",
        b"\xff\xfe\x00garbage",
        b"[]",
        b'"keys"',
        b"null",
        b"{}",
        b'{"keys": {}}',
        b'{"keys": "rsa"}',
        b'{"keys": null}',
        b'{"Keys": []}',
    ],
)
def test_parse_jwks_rejects_what_is_not_a_key_set(body: bytes) -> None:
    with pytest.raises(FetchError):
        parse_jwks(body)


def test_parse_jwks_of_an_empty_set() -> None:
    assert parse_jwks(b'{"keys": []}') == ()


def test_parse_jwks_rejects_deeply_nested_json() -> None:
    with pytest.raises(FetchError):
        parse_jwks(b'{"keys": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")


def signing_key(jwk: Mapping[str, Any]) -> SigningKey:
    (key,) = parse_jwks(jwks_bytes(jwk))
    return key


@pytest.mark.parametrize(
    ("jwk", "alg", "fits"),
    [
        *((RSA_JWK, alg, True) for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")),
        (RSA_JWK, "ES256", False),
        (RSA_JWK, "EdDSA", False),
        (EC_JWK, "ES256", True),
        (EC_JWK, "ES384", False),
        (EC_JWK, "ES512", False),
        (EC_JWK, "RS256", False),
        (EC_JWK, "EdDSA", False),
        (EC384_JWK, "ES384", True),
        (EC384_JWK, "ES256", False),
        (ED_JWK, "EdDSA", True),
        (ED_JWK, "ES256", False),
        (ED_JWK, "RS256", False),
        # A key that names its own algorithm fits only that one.
        (dict(RSA_JWK, alg="RS256"), "RS256", True),
        (dict(RSA_JWK, alg="RS256"), "PS256", False),
        (dict(RSA_JWK, alg="RS256"), "RS512", False),
        (dict(EC_JWK, alg="ES256"), "ES256", True),
        (dict(EC_JWK, alg="ES384"), "ES384", False),  # the alg says P-384, the curve is P-256
        (dict(EC_JWK, alg="ES384"), "ES256", False),
    ],
)
def test_signing_key_fits(jwk: dict[str, Any], alg: str, fits: bool) -> None:
    assert signing_key(jwk).fits(alg) is fits


# --- jwks.JwksCache -----------------------------------------------------------------------------------------------


def cache_config(**overrides: Any) -> JwtConfig:
    settings: dict[str, Any] = {"issuer": ISSUER, "jwks_uri": JWKS_URI}
    settings.update(overrides)
    return JwtConfig(**settings)


def make_cache(idp: FakeIdp, clock: Clock | None = None, **overrides: Any) -> JwksCache:
    return JwksCache(cache_config(**overrides), idp.fetch, clock or Clock())


async def test_key_found_by_kid() -> None:
    idp = FakeIdp()
    cache = make_cache(idp)
    assert cache.status() == {"keys": 0, "jwks_uri": JWKS_URI, "error": None}
    key = await cache.key_for("ec-1", "ES256")
    assert (key.kid, key.kty, key.curve) == ("ec-1", "EC", "P-256")
    assert (await cache.key_for("rsa-1", "RS256")).kid == "rsa-1"
    assert (await cache.key_for("ed-1", "EdDSA")).kid == "ed-1"
    assert idp.calls == [JWKS_URI]
    assert cache.fetches == 1
    assert cache.status() == {"keys": 4, "jwks_uri": JWKS_URI, "error": None}


async def test_a_known_kid_with_the_wrong_algorithm_is_not_found() -> None:
    idp = FakeIdp()
    clock = Clock()
    cache = make_cache(idp, clock)
    await cache.key_for("ec-1", "ES256")
    clock.now += 1
    with pytest.raises(GatewayError) as caught:
        await cache.key_for("ec-1", "RS256")
    assert reason_of(caught) == "invalid_token"
    with pytest.raises(GatewayError):
        await cache.key_for("ec384-1", "ES256")


async def test_unknown_kid_refetches_at_most_once_per_interval() -> None:
    idp = FakeIdp()
    clock = Clock(1_000.0)
    cache = make_cache(idp, clock, jwks_refetch_interval=30.0)
    await cache.key_for("ec-1", "ES256")
    assert len(idp.calls) == 1

    # Within the interval of the first fetch: an unknown kid is refused without a fetch.
    clock.now = 1_029.0
    with pytest.raises(GatewayError) as caught:
        await cache.key_for("made-up-0", "ES256")
    assert reason_of(caught) == "invalid_token"
    assert len(idp.calls) == 1

    clock.now = 1_030.0
    with pytest.raises(GatewayError) as caught:
        await cache.key_for("made-up-1", "ES256")
    assert reason_of(caught) == "invalid_token"
    assert caught.value.status == 401
    assert len(idp.calls) == 2  # one refetch for a kid it did not know

    # The identity provider rotates in a new key, but within the interval nothing is fetched.
    new_jwk = public_jwk(EC_KEY_2, "ec-2")
    idp.documents[JWKS_URI] = {"keys": [*ALL_JWKS["keys"], new_jwk]}
    for now, kid in ((1_031.0, "made-up-2"), (1_045.0, "made-up-3"), (1_059.0, "ec-2")):
        clock.now = now
        with pytest.raises(GatewayError) as caught:
            await cache.key_for(kid, "ES256")
        assert reason_of(caught) == "invalid_token"
    assert len(idp.calls) == 2
    assert (await cache.key_for("ec-1", "ES256")).kid == "ec-1"  # known keys keep working meanwhile

    clock.now = 1_060.0  # jwks_refetch_interval after the last attempt
    assert (await cache.key_for("ec-2", "ES256")).kid == "ec-2"
    assert len(idp.calls) == 3
    assert cache.fetches == 3


async def test_concurrent_misses_share_one_fetch() -> None:
    idp = FakeIdp()
    cache = make_cache(idp)
    keys = await asyncio.gather(
        *(cache.key_for(kid, alg) for kid, alg in [("ec-1", "ES256")] * 4 + [("rsa-1", "RS256")])
    )
    assert [k.kid for k in keys] == ["ec-1"] * 4 + ["rsa-1"]
    assert idp.calls == [JWKS_URI]


async def test_waiting_misses_join_the_fetch_in_flight() -> None:
    idp = FakeIdp()
    idp.gate = asyncio.Event()
    cache = make_cache(idp)
    tasks = [asyncio.create_task(cache.key_for("ec-1", "ES256")) for _ in range(5)]
    await settle()
    assert not any(task.done() for task in tasks)  # every caller waits on the one fetch
    assert idp.calls == [JWKS_URI]
    idp.gate.set()
    keys = await asyncio.gather(*tasks)
    assert {k.kid for k in keys} == {"ec-1"}
    assert idp.calls == [JWKS_URI]


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch() -> None:
    idp = FakeIdp()
    idp.gate = asyncio.Event()
    cache = make_cache(idp)
    first = asyncio.create_task(cache.key_for("ec-1", "ES256"))
    second = asyncio.create_task(cache.key_for("ec-1", "ES256"))
    await settle()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    idp.gate.set()
    assert (await second).kid == "ec-1"
    assert idp.calls == [JWKS_URI]


async def test_failed_fetch_keeps_the_keys_it_had() -> None:
    idp = FakeIdp()
    clock = Clock()
    cache = make_cache(idp, clock)
    await cache.key_for("ec-1", "ES256")
    idp.failing = True
    clock.now += 60
    with pytest.raises(GatewayError) as caught:
        await cache.key_for("made-up", "ES256")
    assert reason_of(caught) == "invalid_token"  # not auth_unavailable: the cache still has keys
    assert len(idp.calls) == 2
    assert cache.status()["keys"] == 4
    assert cache.status()["error"] == f"{JWKS_URI} answered HTTP 503"
    assert (await cache.key_for("ec-1", "ES256")).kid == "ec-1"

    # Once the identity provider is back, the next refetch clears the error.
    idp.failing = False
    clock.now += 60
    with pytest.raises(GatewayError):
        await cache.key_for("made-up", "ES256")
    assert cache.status()["error"] is None


async def test_stale_keys_are_refreshed_in_the_background() -> None:
    idp = FakeIdp({JWKS_URI: jwks_bytes(EC_JWK)})
    clock = Clock()
    cache = make_cache(idp, clock, jwks_cache_ttl=600.0)
    await cache.key_for("ec-1", "ES256")
    clock.now += 599
    await cache.key_for("ec-1", "ES256")
    await settle()
    assert len(idp.calls) == 1

    clock.now += 1  # the keys are jwks_cache_ttl old: answered from the cache, refreshed behind it
    idp.documents[JWKS_URI] = jwks_bytes(EC_JWK, public_jwk(EC_KEY_2, "ec-2"))
    assert (await cache.key_for("ec-1", "ES256")).kid == "ec-1"
    await settle()
    assert len(idp.calls) == 2
    assert cache.status()["keys"] == 2
    assert (await cache.key_for("ec-2", "ES256")).kid == "ec-2"
    assert len(idp.calls) == 2


async def test_stale_keys_survive_a_failed_background_refresh() -> None:
    idp = FakeIdp()
    clock = Clock()
    cache = make_cache(idp, clock, jwks_cache_ttl=600.0)
    await cache.key_for("ec-1", "ES256")
    idp.failing = True
    clock.now += 601
    assert (await cache.key_for("ec-1", "ES256")).kid == "ec-1"
    await settle()
    assert len(idp.calls) == 2
    assert (await cache.key_for("rsa-1", "RS256")).kid == "rsa-1"
    assert cache.status()["keys"] == 4


async def test_a_failing_background_refresh_is_not_retried_on_every_request() -> None:
    idp = FakeIdp()
    clock = Clock()
    cache = make_cache(idp, clock, jwks_cache_ttl=600.0, jwks_refetch_interval=30.0)
    await cache.key_for("ec-1", "ES256")
    idp.failing = True
    clock.now += 601
    for _ in range(5):  # five requests within one second, each after the previous refresh failed
        assert (await cache.key_for("ec-1", "ES256")).kid == "ec-1"
        await settle()
    assert len(idp.calls) == 2


async def test_one_malformed_alg_does_not_spoil_the_key_set() -> None:
    idp = FakeIdp({JWKS_URI: jwks_bytes(EC_JWK, public_jwk(RSA_KEY, "rsa-1", alg=["RS256"]))})
    cache = make_cache(idp)
    assert (await cache.key_for("ec-1", "ES256")).kid == "ec-1"


async def test_no_keys_ever_fetched_is_auth_unavailable() -> None:
    idp = FakeIdp()
    idp.failing = True
    clock = Clock()
    cache = make_cache(idp, clock)
    with pytest.raises(GatewayError) as caught:
        await cache.key_for("ec-1", "ES256")
    assert reason_of(caught) == "auth_unavailable"
    assert caught.value.status == 503
    assert cache.status() == {"keys": 0, "jwks_uri": JWKS_URI, "error": f"{JWKS_URI} answered HTTP 503"}

    # Within the interval, no new attempt; still unavailable.
    clock.now += 1
    with pytest.raises(GatewayError) as caught:
        await cache.key_for(None, "ES256")
    assert reason_of(caught) == "auth_unavailable"
    assert len(idp.calls) == 1

    # The identity provider comes back: the next attempt after the interval gets the keys.
    idp.failing = False
    clock.now += 30
    assert (await cache.key_for("ec-1", "ES256")).kid == "ec-1"


@pytest.mark.parametrize(
    "document",
    [
        {"keys": []},
        {"keys": [{"kty": "oct", "k": b64url(b"secret"), "kid": "ec-1"}]},
        b"not json",
    ],
)
async def test_a_key_set_without_usable_keys_is_auth_unavailable(document: Any) -> None:
    cache = make_cache(FakeIdp({JWKS_URI: document}))
    with pytest.raises(GatewayError) as caught:
        await cache.key_for("ec-1", "ES256")
    assert reason_of(caught) == "auth_unavailable"
    assert cache.status()["error"]


async def test_oidc_discovery_finds_the_key_set() -> None:
    issuer = "https://idp.example.com/realms/acme"
    keys_url = "https://idp.example.com/realms/acme/protocol/openid-connect/certs"
    idp = FakeIdp(
        {
            issuer + DISCOVERY_PATH: {"issuer": issuer, "jwks_uri": keys_url, "token_endpoint": "https://x/token"},
            keys_url: ALL_JWKS,
        }
    )
    clock = Clock()
    cache = make_cache(idp, clock, issuer=issuer, jwks_uri=None, discovery=True)
    assert cache.status()["jwks_uri"] is None
    assert (await cache.key_for("ec-1", "ES256")).kid == "ec-1"
    assert idp.calls == [f"{issuer}/.well-known/openid-configuration", keys_url]
    assert cache.jwks_uri == keys_url
    assert cache.status()["jwks_uri"] == keys_url

    # Later refetches go straight to the key set.
    clock.now += 60
    with pytest.raises(GatewayError):
        await cache.key_for("made-up", "ES256")
    assert idp.calls[2:] == [keys_url]


async def test_oidc_discovery_with_a_trailing_slash_issuer() -> None:
    issuer = "https://idp.example.com/"
    idp = FakeIdp(
        {
            "https://idp.example.com/.well-known/openid-configuration": {"issuer": issuer, "jwks_uri": JWKS_URI},
            JWKS_URI: ALL_JWKS,
        }
    )
    cache = make_cache(idp, issuer=issuer, jwks_uri=None, discovery=True)
    assert (await cache.key_for("rsa-1", "RS256")).kid == "rsa-1"


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ({"issuer": "https://evil.example.com", "jwks_uri": JWKS_URI}, "another issuer"),
        ({"issuer": ISSUER + "/", "jwks_uri": JWKS_URI}, "another issuer"),
        ({"jwks_uri": JWKS_URI}, "another issuer"),
        ({"issuer": ISSUER}, "no jwks_uri"),
        ({"issuer": ISSUER, "jwks_uri": "file:///etc/passwd"}, "no jwks_uri"),
        ({"issuer": ISSUER, "jwks_uri": ["https://idp.example.com/jwks"]}, "no jwks_uri"),
        (b"<html>", "not JSON"),
        ([ISSUER], "not a JSON object"),
    ],
)
async def test_a_bad_discovery_document_fails(document: Any, error: str) -> None:
    idp = FakeIdp({ISSUER + DISCOVERY_PATH: document, JWKS_URI: ALL_JWKS})
    cache = make_cache(idp, jwks_uri=None, discovery=True)
    with pytest.raises(GatewayError) as caught:
        await cache.key_for("ec-1", "ES256")
    assert reason_of(caught) == "auth_unavailable"
    assert error in (cache.status()["error"] or "")
    assert JWKS_URI not in idp.calls
    assert cache.jwks_uri is None


async def test_no_kid_is_accepted_only_when_exactly_one_key_fits() -> None:
    # RSA, P-256, P-384 and Ed25519: exactly one key fits each algorithm.
    cache = make_cache(FakeIdp())
    assert (await cache.key_for(None, "ES256")).kid == "ec-1"
    assert (await cache.key_for(None, "RS256")).kid == "rsa-1"
    assert (await cache.key_for(None, "EdDSA")).kid == "ed-1"

    # Two P-256 keys: which one signed is a guess, refused.
    idp = FakeIdp({JWKS_URI: jwks_bytes(EC_JWK, public_jwk(EC_KEY_2, "ec-2"), RSA_JWK)})
    cache = make_cache(idp)
    with pytest.raises(GatewayError) as caught:
        await cache.key_for(None, "ES256")
    assert reason_of(caught) == "invalid_token"
    assert (await cache.key_for(None, "RS256")).kid == "rsa-1"

    # No key of that kind at all.
    with pytest.raises(GatewayError):
        await cache.key_for(None, "ES384")


async def test_warm_fetches_in_the_background_and_close_cancels() -> None:
    idp = FakeIdp()
    cache = make_cache(idp)
    cache.warm()
    await settle()
    assert idp.calls == [JWKS_URI]
    assert cache.status()["keys"] == 4

    slow = FakeIdp()
    slow.gate = asyncio.Event()
    cache = make_cache(slow)
    cache.warm()
    await settle()
    assert slow.calls == [JWKS_URI]
    await cache.close()  # does not hang on the fetch in flight
    assert cache.status()["keys"] == 0
    await cache.close()  # twice is fine


async def test_refresh_never_raises_for_a_failed_fetch() -> None:
    idp = FakeIdp()
    idp.failing = True
    cache = make_cache(idp)
    await cache.refresh()
    assert cache.fetches == 1
    assert cache.status()["error"]


# --- jwt.JwtVerifier ----------------------------------------------------------------------------------------------


def make_verifier(
    idp: FakeIdp | None = None,
    *,
    clock: Callable[[], float] = time.time,
    audiences: Iterable[str] = (AUDIENCE,),
    cache_clock: Clock | None = None,
    **overrides: Any,
) -> tuple[JwtVerifier, CountingCache, FakeIdp]:
    idp = idp or FakeIdp()
    settings: dict[str, Any] = {"algorithms": ("RS256", "ES256", "EdDSA")}
    settings.update(overrides)
    config = cache_config(**settings)
    cache = CountingCache(config, idp.fetch, cache_clock or Clock())
    return JwtVerifier(config, audiences, cache, clock), cache, idp


async def rejection(verifier: JwtVerifier, token: str) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await verifier.verify(token)
    # Whatever went wrong, the answer never repeats the token (or a recognisable part of it).
    exc = caught.value
    for part in (token, *token.split(".")):
        if len(part) >= 8:
            assert part not in exc.message
            assert part not in str(exc)
            assert part not in json.dumps(exc.to_jsonrpc(1))
    return exc


@pytest.mark.parametrize(
    ("key", "alg", "kid"),
    [(RSA_KEY, "RS256", "rsa-1"), (EC_KEY, "ES256", "ec-1"), (ED_KEY, "EdDSA", "ed-1")],
)
async def test_valid_tokens_give_an_identity(key: PrivateKey, alg: str, kid: str) -> None:
    verifier, _, _ = make_verifier(
        role_mappings=(RoleMapping("groups", "admins", ("admin",)), RoleMapping("groups", "devs", ("dev",)))
    )
    claims = claims_now(groups=["devs", "admins"], scope="openid mcp:tools")
    identity = await verifier.verify(make_token(claims, key=key, alg=alg, kid=kid))
    assert identity == Identity("alice", ("admin", "dev"), "jwt", scopes=frozenset({"openid", "mcp:tools"}))
    assert identity.kind == "jwt" and identity.authenticated
    assert identity.principal == "jwt:alice"
    assert identity.scopes == frozenset({"openid", "mcp:tools"})
    assert identity.claims["groups"] == ["devs", "admins"]


async def test_a_token_without_kid_verifies_with_the_only_fitting_key() -> None:
    verifier, _, _ = make_verifier()
    assert (await verifier.verify(make_token(kid=None))).client_id == "alice"


@pytest.mark.parametrize(
    ("client_id_claim", "extra", "expected"),
    [
        ("sub", {}, "alice"),
        ("azp", {"azp": "my-agent"}, "my-agent"),
        ("client_id", {"client_id": "svc-1"}, "svc-1"),
        ("client.id", {"client": {"id": "nested-svc"}}, "nested-svc"),
        ("https://example.com/client", {"https://example.com/client": "auth0-svc"}, "auth0-svc"),
        ("uid", {"uid": 42}, "42"),
    ],
)
async def test_client_id_comes_from_client_id_claim(client_id_claim: str, extra: dict[str, Any], expected: str) -> None:
    verifier, _, _ = make_verifier(client_id_claim=client_id_claim)
    identity = await verifier.verify(make_token(claims_now(**extra)))
    assert identity.client_id == expected
    assert identity.principal == f"jwt:{expected}"


@pytest.mark.parametrize(
    "value",
    [None, "", ["alice"], {"id": "alice"}, True, 1.5, "x" * 257, "line\nbreak", "tab\there"],
)
async def test_an_unusable_client_id_is_invalid_token(value: Any) -> None:
    verifier, _, _ = make_verifier(client_id_claim="client_id")
    claims = claims_now() if value is None else claims_now(client_id=value)
    exc = await rejection(verifier, make_token(claims))
    assert exc.reason.name == "invalid_token"
    assert "client_id" in exc.message


async def test_missing_sub_is_invalid_token() -> None:
    verifier, _, _ = make_verifier()
    exc = await rejection(verifier, make_token(drop=["sub"]))
    assert exc.reason.name == "invalid_token"


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        (claims_now(exp=int(time.time()) - 120), "The token has expired"),
        (claims_now(nbf=int(time.time()) + 3600), "not valid yet"),
        (claims_now(iat=int(time.time()) + 3600), "not valid yet"),
        (claims_now(iss="https://evil.example.com"), "another issuer"),
        (claims_now(iss=ISSUER + "/"), "another issuer"),
        (claims_now(aud="https://other.example.com/mcp"), "another audience"),
        (claims_now(aud=["https://other.example.com", "https://third.example.com"]), "another audience"),
    ],
)
async def test_claim_checks(claims: dict[str, Any], message: str) -> None:
    verifier, _, _ = make_verifier()
    exc = await rejection(verifier, make_token(claims))
    assert exc.reason.name == "invalid_token"
    assert exc.status == 401
    assert message in exc.message


async def test_any_accepted_audience_in_an_audience_list_is_enough() -> None:
    verifier, _, _ = make_verifier(audiences=("https://gw.example.com", AUDIENCE))
    assert (await verifier.verify(make_token(claims_now(aud=["https://other.example.com", AUDIENCE])))).client_id
    assert (await verifier.verify(make_token(claims_now(aud="https://gw.example.com")))).client_id


@pytest.mark.parametrize("name", ["exp", "iss", "aud"])
async def test_missing_required_claims(name: str) -> None:
    verifier, _, _ = make_verifier()
    exc = await rejection(verifier, make_token(drop=[name]))
    assert exc.reason.name == "invalid_token"
    assert exc.message == f"The token has no {name!r} claim"


async def test_leeway_is_honoured() -> None:
    now = int(time.time())
    expired_a_little = make_token(claims_now(exp=now - 10))
    not_yet = make_token(claims_now(nbf=now + 10))
    lenient, _, _ = make_verifier(leeway=60.0)
    assert (await lenient.verify(expired_a_little)).client_id == "alice"
    assert (await lenient.verify(not_yet)).client_id == "alice"
    strict, _, _ = make_verifier(leeway=0.0)
    assert "expired" in (await rejection(strict, expired_a_little)).message
    assert "not valid yet" in (await rejection(strict, not_yet)).message


async def test_alg_none_is_refused() -> None:
    verifier, cache, idp = make_verifier()
    for header in ({"alg": "none", "typ": "JWT"}, {"alg": "none", "kid": "rsa-1"}, {"alg": "None"}, {"alg": "NONE"}):
        token = forge(header, claims_now(), lambda _: b"")
        exc = await rejection(verifier, token)
        assert exc.reason.name == "invalid_token"
        assert "not accepted" in exc.message
    assert cache.lookups == 0 and idp.calls == []


def hs256(secret: bytes) -> Callable[[bytes], bytes]:
    def sign(data: bytes) -> bytes:
        return hmac.new(secret, data, hashlib.sha256).digest()

    return sign


async def test_hs256_signed_with_the_rsa_public_key_is_refused() -> None:
    """The classic key-confusion attack: the public key, which anyone has, as an HMAC secret."""
    pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk_secret = json.dumps(RSA_JWK).encode()
    verifier, cache, idp = make_verifier()
    for secret in (pem, pem.strip(), jwk_secret):
        for kid in ("rsa-1", None):
            header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
            token = forge(header, claims_now(), hs256(secret))
            exc = await rejection(verifier, token)
            assert exc.reason.name == "invalid_token"
    assert cache.lookups == 0 and idp.calls == []


async def test_an_algorithm_off_the_allow_list_is_refused() -> None:
    verifier, cache, idp = make_verifier(algorithms=("RS256",))
    exc = await rejection(verifier, make_token(key=EC_KEY, alg="ES256", kid="ec-1"))
    assert exc.reason.name == "invalid_token"
    assert exc.message == "The token's algorithm 'ES256' is not accepted"
    assert cache.lookups == 0 and idp.calls == []
    assert (await verifier.verify(make_token())).client_id == "alice"


async def test_an_unprintable_algorithm_is_not_repeated() -> None:
    verifier, _, _ = make_verifier()
    for alg in ("RS256\r\nX-Injected: 1", "é" * 3, "A" * 200):
        exc = await rejection(verifier, forge({"alg": alg}, claims_now(), lambda _: b"sig"))
        assert exc.message == "The token's algorithm '?' is not accepted"
    exc = await rejection(verifier, forge({"alg": 256}, claims_now(), lambda _: b"sig"))
    assert exc.message == "The token's algorithm '?' is not accepted"


async def test_a_right_kid_with_a_key_of_the_wrong_type_is_refused() -> None:
    # An ES256 token naming the RSA key's kid: no key fits, whatever the kid says.
    verifier, _, _ = make_verifier()
    exc = await rejection(verifier, make_token(key=EC_KEY, alg="ES256", kid="rsa-1"))
    assert exc.reason.name == "invalid_token"


async def test_a_non_string_kid_is_refused() -> None:
    verifier, cache, _ = make_verifier()
    header = {"alg": "RS256", "kid": 1}
    token = forge(header, claims_now(), lambda data: b"x")
    exc = await rejection(verifier, token)
    assert exc.reason.name == "invalid_token"
    assert cache.lookups == 0


async def test_tampered_tokens_are_refused() -> None:
    verifier, _, _ = make_verifier()
    good = make_token()
    header, payload, signature = good.split(".")

    # Another payload under the original signature.
    forged_payload = b64url(json.dumps(claims_now(sub="mallory")).encode())
    exc = await rejection(verifier, f"{header}.{forged_payload}.{signature}")
    assert exc.message == "The token's signature does not verify"

    # A changed signature.
    middle = len(signature) // 2
    flipped = signature[:middle] + ("A" if signature[middle] != "A" else "B") + signature[middle + 1 :]
    exc = await rejection(verifier, f"{header}.{payload}.{flipped}")
    assert exc.reason.name == "invalid_token"

    # Signed by another key under the right kid.
    exc = await rejection(verifier, make_token(key=EC_KEY_2, alg="ES256", kid="ec-1"))
    assert exc.message == "The token's signature does not verify"

    # No signature at all.
    exc = await rejection(verifier, f"{header}.{payload}.")
    assert exc.reason.name == "invalid_token"
    assert (await verifier.verify(good)).client_id == "alice"


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "garbage",
        "a.b.c",
        "...",
        "eyJhbGciOiJSUzI1NiJ9",
        f"{b64url(b'[1, 2]')}.{b64url(b'{}')}.sig",
        f"{b64url(b'not json')}.{b64url(b'{}')}.sig",
        f"{b64url(json.dumps({'alg': 'RS256', 'kid': 'rsa-1'}).encode())}.{b64url(b'not json')}.sig",
        f"{b64url(json.dumps({'alg': 'RS256', 'kid': 'rsa-1'}).encode())}.{b64url(b'[1]')}.sig",
        "é.é.é",
        "\x00.\x00.\x00",
    ],
)
async def test_garbage_is_invalid_token(garbage: str) -> None:
    verifier, _, _ = make_verifier()
    exc = await rejection(verifier, garbage)
    assert exc.reason.name == "invalid_token"
    assert exc.status == 401


@pytest.mark.parametrize("garbage", ["\udcff.\udcff.\udcff", f"{make_token()}\udc80", "\ud800.a.b"])
async def test_a_token_with_undecodable_bytes_is_invalid_token(garbage: str) -> None:
    verifier, _, _ = make_verifier()
    exc = await rejection(verifier, garbage)
    assert exc.reason.name == "invalid_token"


async def test_an_unknown_kid_is_invalid_token_and_an_unreachable_idp_is_auth_unavailable() -> None:
    verifier, _, _ = make_verifier()
    exc = await rejection(verifier, make_token(kid="made-up"))
    assert exc.reason.name == "invalid_token"

    down = FakeIdp()
    down.failing = True
    verifier, _, _ = make_verifier(down)
    exc = await rejection(verifier, make_token())
    assert exc.reason.name == "auth_unavailable"
    assert exc.status == 503


async def test_tokens_still_verify_while_the_idp_is_down() -> None:
    cache_clock = Clock()
    verifier, _, idp = make_verifier(cache_clock=cache_clock)
    assert (await verifier.verify(make_token(claims_now(sub="before")))).client_id == "before"
    idp.failing = True
    cache_clock.now += 3600  # past jwks_cache_ttl and jwks_refetch_interval
    # A token not seen before, signed by a key fetched before: verified with the cached key.
    assert (await verifier.verify(make_token(claims_now(sub="during"), key=ED_KEY, alg="EdDSA", kid="ed-1"))).client_id
    # A kid it never saw: refused as a bad token, not as an outage.
    exc = await rejection(verifier, make_token(claims_now(sub="unknown"), kid="rotated"))
    assert exc.reason.name == "invalid_token"
    await settle()
    assert len(idp.calls) >= 2  # it did try again, and failed
    assert idp.calls == [JWKS_URI] * len(idp.calls)


@pytest.mark.parametrize(
    "claims",
    [
        claims_now(scope="openid mcp:tools profile"),
        claims_now(scope="mcp:tools"),
        claims_now(scp=["mcp:tools", "other"]),
        claims_now(scp="other mcp:tools"),
        claims_now(scope="openid", scp=["mcp:tools"]),
    ],
)
async def test_a_required_scope_is_satisfied(claims: dict[str, Any]) -> None:
    verifier, _, _ = make_verifier(scopes=("mcp:tools",))
    identity = await verifier.verify(make_token(claims))
    assert "mcp:tools" in identity.scopes


@pytest.mark.parametrize(
    "claims",
    [
        claims_now(),
        claims_now(scope="openid profile"),
        claims_now(scope="mcp:tools:extra"),
        claims_now(scope=["mcp:tools read"]),
        claims_now(scp=["openid"]),
        claims_now(mcp_scope="mcp:tools"),
    ],
)
async def test_a_missing_scope_is_insufficient_scope(claims: dict[str, Any]) -> None:
    verifier, _, _ = make_verifier(scopes=("mcp:tools",))
    exc = await rejection(verifier, make_token(claims))
    assert exc.reason.name == "insufficient_scope"
    assert exc.status == 403
    assert exc.message == "The token lacks the scope 'mcp:tools'"


async def test_every_required_scope_is_needed() -> None:
    verifier, _, _ = make_verifier(scopes=("a", "b"))
    assert await verifier.verify(make_token(claims_now(scope="b a")))
    exc = await rejection(verifier, make_token(claims_now(scope="a")))
    assert exc.message == "The token lacks the scope 'b'"


async def test_a_verified_token_is_remembered() -> None:
    clock = Clock(time.time())
    verifier, cache, _ = make_verifier(clock=clock, role_mappings=(RoleMapping("groups", "g", ("r",)),))
    token = make_token(claims_now(groups=["g"]))
    first = await verifier.verify(token)
    assert cache.lookups == 1
    clock.now += 10
    second = await verifier.verify(token)
    assert second is first
    assert cache.lookups == 1  # no second key lookup, so no second signature check

    # Another token is checked on its own.
    assert (await verifier.verify(make_token(claims_now(sub="bob")))).client_id == "bob"
    assert cache.lookups == 2

    # Remembered for CACHE_SECONDS at most: then the keys are consulted again.
    clock.now += CACHE_SECONDS
    assert await verifier.verify(token) == first
    assert cache.lookups == 3


async def test_a_remembered_token_still_needs_its_scopes() -> None:
    idp = FakeIdp()
    token = make_token(claims_now(scope="openid"))
    lenient, _, _ = make_verifier(idp)
    assert await lenient.verify(token)
    strict, cache, _ = make_verifier(idp, scopes=("mcp:tools",))
    for _ in range(2):
        exc = await rejection(strict, token)
        assert exc.reason.name == "insufficient_scope"
    assert cache.lookups == 1  # the identity was remembered; the scope check was not skipped


async def test_rejections_are_not_remembered() -> None:
    verifier, cache, _ = make_verifier()
    token = make_token(kid="made-up")
    for _ in range(3):
        await rejection(verifier, token)
    assert cache.lookups == 3


def follow(clock: Clock) -> type[datetime]:
    """A ``datetime`` whose ``now()`` reads ``clock``: PyJWT checks ``exp`` against it, the verifier's cache
    against ``clock`` itself; the two have to agree for a test to move time."""

    class Following(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Self:
            return cls.fromtimestamp(clock(), tz)

    return Following


async def test_a_remembered_token_is_rejected_once_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(float(int(time.time())))
    monkeypatch.setattr(jwt.api_jwt, "datetime", follow(clock))
    verifier, cache, _ = make_verifier(clock=clock, leeway=0.0)
    token = make_token(claims_now(iat=int(clock.now), exp=int(clock.now) + 60))
    assert (await verifier.verify(token)).client_id == "alice"
    clock.now += 59
    assert (await verifier.verify(token)).client_id == "alice"
    assert cache.lookups == 1
    clock.now += 1  # exactly exp
    exc = await rejection(verifier, token)
    assert exc.reason.name == "invalid_token"
    assert exc.message == "The token has expired"
    assert cache.lookups == 2


async def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mcpgate.auth.jwt.CACHE_SIZE", 3)
    verifier, cache, _ = make_verifier()
    tokens = [make_token(claims_now(sub=f"user-{i}")) for i in range(4)]
    for token in tokens:
        await verifier.verify(token)
    assert cache.lookups == 4
    await verifier.verify(tokens[-1])
    assert cache.lookups == 4
    await verifier.verify(tokens[0])  # the oldest was forgotten
    assert cache.lookups == 5


# --- oauth.ProtectedResource --------------------------------------------------------------------------------------

GW = "https://gw.example.com"
UPSTREAMS = ("github", "files")


def resource(public_url: str = GW, **overrides: Any) -> ProtectedResource:
    return ProtectedResource.build(public_url, cache_config(**overrides), UPSTREAMS)


@pytest.mark.parametrize("public_url", [GW, GW + "/"])
def test_protected_resource_at_the_root(public_url: str) -> None:
    pr = resource(public_url)
    assert pr.origin == GW
    assert pr.base_path == ""
    assert pr.endpoints == {"/mcp", "/servers/github/mcp", "/mcp/github", "/servers/files/mcp", "/mcp/files"}
    assert pr.authorization_servers == (ISSUER,)
    assert pr.scopes == ()
    assert pr.resource() == GW
    assert pr.resource("/mcp") == GW + "/mcp"
    assert pr.metadata_url() == GW + WELL_KNOWN
    assert pr.metadata_url() == "https://gw.example.com/.well-known/oauth-protected-resource"
    assert pr.metadata_url("/mcp") == "https://gw.example.com/.well-known/oauth-protected-resource/mcp"


@pytest.mark.parametrize("public_url", [GW + "/base", GW + "/base/"])
def test_protected_resource_with_a_base_path(public_url: str) -> None:
    pr = resource(public_url)
    assert (pr.origin, pr.base_path) == (GW, "/base")
    assert pr.resource() == GW + "/base"
    assert pr.resource("/mcp") == GW + "/base/mcp"
    # RFC 9728: the well-known part goes between the host and the path.
    assert pr.metadata_url() == "https://gw.example.com/.well-known/oauth-protected-resource/base"
    assert pr.metadata_url("/mcp") == "https://gw.example.com/.well-known/oauth-protected-resource/base/mcp"


def test_protected_resource_keeps_a_port_and_configured_servers() -> None:
    pr = ProtectedResource.build(
        "http://localhost:8080",
        cache_config(authorization_servers=("https://as1.example.com", "https://as2.example.com"), scopes=("mcp",)),
        (),
    )
    assert pr.origin == "http://localhost:8080"
    assert pr.endpoints == {"/mcp"}
    assert pr.authorization_servers == ("https://as1.example.com", "https://as2.example.com")
    assert pr.scopes == ("mcp",)


@pytest.mark.parametrize(
    ("tail", "resource_url"),
    [
        ("", GW),
        ("/", GW),
        ("/mcp", GW + "/mcp"),
        ("/servers/github/mcp", GW + "/servers/github/mcp"),
        ("/mcp/files", GW + "/mcp/files"),
    ],
)
def test_document_at_the_root(tail: str, resource_url: str) -> None:
    assert resource().document(tail) == {
        "resource": resource_url,
        "authorization_servers": [ISSUER],
        "bearer_methods_supported": ["header"],
        "resource_name": "mcpgate",
    }


@pytest.mark.parametrize(
    ("tail", "resource_url"),
    [
        ("", GW + "/base"),
        ("/", GW + "/base"),
        ("/base", GW + "/base"),
        ("/base/", GW + "/base"),
        ("/mcp", GW + "/base/mcp"),
        ("/base/mcp", GW + "/base/mcp"),
        ("/servers/github/mcp", GW + "/base/servers/github/mcp"),
        ("/base/servers/github/mcp", GW + "/base/servers/github/mcp"),
        ("/base/mcp/files", GW + "/base/mcp/files"),
    ],
)
def test_document_with_a_base_path(tail: str, resource_url: str) -> None:
    document = resource(GW + "/base").document(tail)
    assert document is not None
    assert document["resource"] == resource_url


@pytest.mark.parametrize(
    "tail",
    [
        "/admin",
        "/mcp/",
        "/servers/unknown/mcp",
        "/mcp/unknown",
        "/servers/github",
        "/servers/github/mcp/extra",
        "mcp",
        "//mcp",
        "/MCP",
    ],
)
def test_document_of_an_unknown_tail_is_none(tail: str) -> None:
    assert resource().document(tail) is None
    assert resource(GW + "/base").document(tail) is None
    assert resource(GW + "/base").document("/base" + tail) is None


def test_document_with_a_base_path_does_not_strip_a_mere_prefix() -> None:
    assert resource(GW + "/base").document("/basement/mcp") is None
    assert resource(GW + "/base").document("/basemcp") is None


def test_document_lists_scopes_and_authorization_servers() -> None:
    pr = resource(scopes=("mcp:tools", "mcp:read"), authorization_servers=("https://as.example.com",))
    document = pr.document("/mcp")
    assert document is not None
    assert document["scopes_supported"] == ["mcp:tools", "mcp:read"]
    assert document["authorization_servers"] == ["https://as.example.com"]
    json.dumps(document)  # servable as is


def test_audiences() -> None:
    assert resource().audiences() == {
        GW,
        GW + "/",
        GW + "/mcp",
        GW + "/servers/github/mcp",
        GW + "/mcp/github",
        GW + "/servers/files/mcp",
        GW + "/mcp/files",
    }
    base = resource(GW + "/base").audiences()
    assert {GW + "/base", GW + "/base/", GW + "/base/mcp", GW + "/base/mcp/files"} <= base
    assert GW + "/mcp" not in base and GW not in base


def test_challenge_without_an_error() -> None:
    assert resource().challenge("/mcp") == f'Bearer resource_metadata="{GW}{WELL_KNOWN}/mcp"'
    assert resource().challenge("/servers/github/mcp") == (
        f'Bearer resource_metadata="{GW}{WELL_KNOWN}/servers/github/mcp"'
    )
    # Not an MCP endpoint (e.g. /servers): the gateway's own metadata.
    assert resource().challenge("/servers") == f'Bearer resource_metadata="{GW}{WELL_KNOWN}"'
    assert resource(GW + "/base").challenge("/mcp") == f'Bearer resource_metadata="{GW}{WELL_KNOWN}/base/mcp"'


def test_challenge_with_error_scope_and_description() -> None:
    pr = resource(scopes=("mcp:tools", "mcp:read"))
    assert pr.challenge("/mcp", "invalid_token", "The token has expired") == (
        'Bearer error="invalid_token", error_description="The token has expired", '
        f'scope="mcp:tools mcp:read", resource_metadata="{GW}{WELL_KNOWN}/mcp"'
    )
    assert pr.challenge("/mcp", "insufficient_scope") == (
        f'Bearer error="insufficient_scope", scope="mcp:tools mcp:read", resource_metadata="{GW}{WELL_KNOWN}/mcp"'
    )
    # A description without an error code is not sent.
    assert pr.challenge("/mcp", None, "ignored") == (
        f'Bearer scope="mcp:tools mcp:read", resource_metadata="{GW}{WELL_KNOWN}/mcp"'
    )


def test_challenge_description_is_a_safe_quoted_string() -> None:
    value = resource().challenge("/mcp", "invalid_token", 'say "hi"\\ é\r\n\x00end')
    assert 'error_description="say ?hi?? ????end"' in value
    description = re.search(r'error_description="([^"]*)"', value)
    assert description is not None and description.group(1) == "say ?hi?? ????end"
    assert all(c.isascii() and c.isprintable() for c in value)
    assert value.count('"') == 6


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", "plain text"),
        ('a "quoted" word', "a ?quoted? word"),
        ("back\\slash", "back?slash"),
        ("naïve", "na?ve"),
        ("日本", "??"),
        ("tab\tnewline\n", "tab?newline?"),
        ("", ""),
    ],
)
def test_quoted(text: str, expected: str) -> None:
    assert quoted(text) == expected


def test_api_key_challenge() -> None:
    assert api_key_challenge() == 'Bearer realm="mcpgate"'
    assert api_key_challenge("invalid_token") == 'Bearer realm="mcpgate", error="invalid_token"'
    assert api_key_challenge("invalid_token", 'bad "key"\n') == (
        'Bearer realm="mcpgate", error="invalid_token", error_description="bad ?key??"'
    )
    assert api_key_challenge(None, "ignored without an error") == 'Bearer realm="mcpgate"'


# --- Authenticator ------------------------------------------------------------------------------------------------

API_KEYS_ONLY = """\
upstreams:
  a:
    url: http://127.0.0.1:9000/mcp
auth:
  api_keys:
    - id: ci
      key_hash: {ci_hash}
      roles: [ci, deploy]
    - id: dev
      key: dev-key
    - id: dotted
      key: a.b.c
"""

WITH_JWT = """\
server:
  public_url: https://gw.example.com
upstreams:
  github:
    url: http://127.0.0.1:9000/mcp
auth:
  api_keys:
    - id: dotted
      key: a.b.c
  jwt:
    issuer: https://idp.example.com
    jwks_uri: https://idp.example.com/jwks
    scopes: [mcp:tools]
    role_mappings:
      - {claim: groups, value: admins, roles: [admin]}
"""


def auth_config(text: str) -> AuthConfig:
    config = load_config(text=text, source="c.yml", env={})
    assert config.auth is not None
    return config.auth


def api_key_authenticator() -> Authenticator:
    return Authenticator(auth_config(API_KEYS_ONLY.format(ci_hash=hash_key("ci-key"))), None, ["a"])


async def test_authenticator_without_a_credential() -> None:
    auth = api_key_authenticator()
    with pytest.raises(GatewayError) as caught:
        await auth.authenticate(headers(), "/mcp")
    assert reason_of(caught) == "unauthenticated"
    assert caught.value.status == 401
    assert caught.value.headers == {"WWW-Authenticate": 'Bearer realm="mcpgate"'}


@pytest.mark.parametrize(
    "pairs",
    [
        (("X-API-Key", "wrong-key"),),
        (("Authorization", "Bearer wrong-key"),),
        (("Authorization", "Bearer x.y.z"),),  # looks like a JWT, but there is no auth.jwt
        (("Authorization", "Basic dXNlcjpwYXNz"),),
        (("Authorization", "Bearer ci-key"), ("X-API-Key", "dev-key")),
        (("X-API-Key", "x" * (MAX_CREDENTIAL + 1)),),
    ],
)
async def test_authenticator_with_a_wrong_credential(pairs: tuple[tuple[str, str], ...]) -> None:
    auth = api_key_authenticator()
    with pytest.raises(GatewayError) as caught:
        await auth.authenticate(headers(*pairs), "/mcp")
    assert reason_of(caught) == "invalid_token"
    assert caught.value.status == 401
    challenge = caught.value.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="mcpgate", error="invalid_token", error_description="')
    for _, value in pairs:
        assert value.split()[-1] not in challenge
        assert value.split()[-1] not in caught.value.message


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ((("X-API-Key", "ci-key"),), Identity("ci", ("ci", "deploy"), "api_key")),
        ((("Api-Key", "ci-key"),), Identity("ci", ("ci", "deploy"), "api_key")),
        ((("Authorization", "Api-Key ci-key"),), Identity("ci", ("ci", "deploy"), "api_key")),
        ((("Authorization", "Bearer dev-key"),), Identity("dev", (), "api_key")),
        ((("Authorization", "Bearer a.b.c"),), Identity("dotted", (), "api_key")),
    ],
)
async def test_authenticator_with_a_valid_key(pairs: tuple[tuple[str, str], ...], expected: Identity) -> None:
    auth = api_key_authenticator()
    await auth.start()
    try:
        assert await auth.authenticate(headers(*pairs), "/mcp") == expected
    finally:
        await auth.close()
    assert auth.status() == {"api_keys": 3}


async def test_authenticator_with_a_custom_gateway_header() -> None:
    text = API_KEYS_ONLY.format(ci_hash=hash_key("ci-key")) + "  gateway_header: X-Gateway-Key\n"
    auth = Authenticator(auth_config(text), None, ["a"])
    assert await auth.authenticate(headers(("X-Gateway-Key", "ci-key")), "/mcp") == Identity(
        "ci", ("ci", "deploy"), "api_key"
    )
    with pytest.raises(GatewayError) as caught:
        await auth.authenticate(headers(("Authorization", "Bearer ci-key"), ("X-API-Key", "ci-key")), "/mcp")
    assert reason_of(caught) == "unauthenticated"


class OfflineAuthenticator(Authenticator):
    """An Authenticator whose identity provider is a FakeIdp instead of the network."""

    idp: FakeIdp

    async def _fetch(self, url: str) -> bytes:
        return await self.idp.fetch(url)


async def test_authenticator_with_jwt_challenges_point_at_the_metadata() -> None:
    auth = Authenticator(auth_config(WITH_JWT), "https://gw.example.com", ["github"])
    with pytest.raises(GatewayError) as caught:
        await auth.authenticate(headers(), "/servers/github/mcp")
    assert reason_of(caught) == "unauthenticated"
    assert caught.value.headers["WWW-Authenticate"] == (
        f'Bearer scope="mcp:tools", resource_metadata="{GW}{WELL_KNOWN}/servers/github/mcp"'
    )
    with pytest.raises(GatewayError) as caught:
        await auth.authenticate(headers(("X-API-Key", "nope")), "/mcp")
    assert caught.value.headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token", error_description="The credential is not valid here", '
        f'scope="mcp:tools", resource_metadata="{GW}{WELL_KNOWN}/mcp"'
    )
    assert auth.status() == {"api_keys": 1, "jwks": {"keys": 0, "jwks_uri": JWKS_URI, "error": None}}


async def test_authenticator_not_started_cannot_fetch_keys() -> None:
    auth = Authenticator(auth_config(WITH_JWT), "https://gw.example.com", ["github"])
    with pytest.raises(GatewayError) as caught:
        await auth.authenticate(headers(("Authorization", f"Bearer {make_token()}")), "/mcp")
    assert reason_of(caught) == "auth_unavailable"
    assert caught.value.status == 503
    assert "WWW-Authenticate" not in caught.value.headers  # nothing a client could do about it
    assert auth.status()["jwks"]["error"] == "the gateway is not started"
    await auth.close()


async def test_authenticator_verifies_tokens_for_its_own_urls() -> None:
    auth = OfflineAuthenticator(auth_config(WITH_JWT), "https://gw.example.com", ["github"])
    auth.idp = FakeIdp()

    # The gateway's own URLs are audiences without being configured.
    for aud in (GW, GW + "/", GW + "/mcp", GW + "/servers/github/mcp", GW + "/mcp/github"):
        token = make_token(claims_now(aud=aud, sub=f"agent-{aud}", groups="admins", scope="mcp:tools"))
        identity = await auth.authenticate(headers(("Authorization", f"Bearer {token}")), "/mcp")
        assert identity == Identity(f"agent-{aud}", ("admin",), "jwt", scopes=frozenset({"mcp:tools"}))

    # An API key that looks like a JWT is still an API key.
    assert await auth.authenticate(headers(("Authorization", "Bearer a.b.c")), "/mcp") == Identity(
        "dotted", (), "api_key"
    )

    token = make_token(claims_now(aud="https://elsewhere.example.com/mcp", scope="mcp:tools"))
    with pytest.raises(GatewayError) as caught:
        await auth.authenticate(headers(("Authorization", f"Bearer {token}")), "/mcp")
    assert reason_of(caught) == "invalid_token"
    assert caught.value.headers["WWW-Authenticate"].startswith(
        'Bearer error="invalid_token", error_description="The token is meant for another audience"'
    )

    token = make_token(claims_now(aud=GW + "/mcp", scope="openid"))
    with pytest.raises(GatewayError) as caught:
        await auth.authenticate(headers(("Authorization", f"Bearer {token}")), "/mcp")
    assert reason_of(caught) == "insufficient_scope"
    assert caught.value.status == 403
    assert caught.value.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", error_description="The token lacks the scope \'mcp:tools\'", '
        f'scope="mcp:tools", resource_metadata="{GW}{WELL_KNOWN}/mcp"'
    )
    assert auth.idp.calls == [JWKS_URI]
    await auth.close()


async def test_authenticator_refuses_a_jwt_shaped_credential_with_undecodable_bytes() -> None:
    auth = OfflineAuthenticator(auth_config(WITH_JWT), "https://gw.example.com", ["github"])
    auth.idp = FakeIdp()
    with pytest.raises(GatewayError) as caught:
        await auth.authenticate(headers(("Authorization", "Bearer \udcff.\udcff.\udcff")), "/mcp")
    assert reason_of(caught) == "invalid_token"
    assert caught.value.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


async def test_a_successor_with_the_same_identity_provider_shares_its_keys() -> None:
    """A key added through the admin API makes a new authenticator: the signing keys stay fetched."""
    first = OfflineAuthenticator(auth_config(WITH_JWT), "https://gw.example.com", ["github"])
    first.idp = FakeIdp()
    await first.start()
    token = make_token(claims_now(aud=GW + "/mcp", sub="agent", scope="mcp:tools"))
    assert (await first.authenticate(headers(("Authorization", f"Bearer {token}")), "/mcp")).client_id == "agent"
    more_keys = WITH_JWT.replace(
        "      key: a.b.c\n", "      key: a.b.c\n    - id: added\n      key: added-key-0123456789\n"
    )
    second = OfflineAuthenticator(auth_config(more_keys), "https://gw.example.com", ["github"], previous=first)
    await second.start()
    assert (await second.authenticate(headers(("X-API-Key", "added-key-0123456789")), "/mcp")).client_id == "added"
    await first.close()  # the old plan's, retired: the keys outlive it while the successor uses them
    assert (await second.authenticate(headers(("Authorization", f"Bearer {token}")), "/mcp")).client_id == "agent"
    assert first.idp.calls == [JWKS_URI]  # fetched once, for both
    # Another identity provider's settings: keys of its own.
    other = WITH_JWT.replace("jwks_uri: https://idp.example.com/jwks", "jwks_uri: https://idp.example.com/other")
    third = OfflineAuthenticator(auth_config(other), "https://gw.example.com", ["github"], previous=second)
    assert third.jwt is not None and second.jwt is not None and third.jwt.keys is not second.jwt.keys
    await third.close()
    assert first._http is not None and not first._http.closed  # second still uses it
    await second.close()
    assert first._http.closed  # the last user gone: the key cache's session is closed
