"""A local identity provider for tests: OIDC discovery and a JWKS served by aiohttp, real keys.

Tokens are signed here with ``cryptography`` keys (RSA, EC P-256, Ed25519) through PyJWT, the
way Okta, Auth0, Keycloak, Entra ID or Google sign theirs; the gateway fetches the key set over
HTTP like it would from them. The provider can rotate keys, go down, and count fetches.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

AUDIENCE = "mcpgate-test"

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # slow: once per test run
_RSA_NEXT = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if self.alg.startswith(("RS", "PS")):
            data = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif self.alg.startswith("ES"):
            data = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            data = OKPAlgorithm.to_jwk(public, as_dict=True)
        return {**data, "kid": self.kid, "use": "sig", "alg": self.alg}


KEYS = {
    "rsa": SigningKey("rsa-1", "RS256", _RSA),
    "ec": SigningKey("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1())),
    "ed": SigningKey("ed-1", "EdDSA", ed25519.Ed25519PrivateKey.generate()),
    "rsa-next": SigningKey("rsa-2", "RS256", _RSA_NEXT),
}


@dataclass
class LocalIdP:
    url: str = ""
    published: list[str] = field(default_factory=lambda: ["rsa", "ec", "ed"])
    down: bool = False
    fetches: dict[str, int] = field(default_factory=dict)

    @property
    def issuer(self) -> str:
        return self.url + "/"

    @property
    def jwks_uri(self) -> str:
        return self.url + "/jwks.json"

    def token(self, key: str = "rsa", *, headers: dict[str, Any] | None = None, **claims: Any) -> str:
        """A signed token; claims default to a valid one for ``alice``. A claim set to None is left out."""
        signing = KEYS[key]
        now = int(time.time())
        body = {"iss": self.issuer, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, signing.private, algorithm=signing.alg, headers={"kid": signing.kid, **(headers or {})})

    async def _serve(self, request: web.Request) -> web.Response:
        path = request.path
        self.fetches[path] = self.fetches.get(path, 0) + 1
        if self.down:
            return web.Response(status=503, text="down")
        if path == "/.well-known/openid-configuration":
            document = {"issuer": self.issuer, "jwks_uri": self.jwks_uri, "id_token_signing_alg_values_supported": []}
            return web.json_response(document)
        if path == "/jwks.json":
            return web.json_response({"keys": [KEYS[name].jwk() for name in self.published]})
        return web.Response(status=404)


@asynccontextmanager
async def local_idp() -> AsyncIterator[LocalIdP]:
    idp = LocalIdP()
    app = web.Application()
    app.router.add_get("/{tail:.*}", idp._serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        idp.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        yield idp
    finally:
        await runner.cleanup()


def hs256_with_public_key(idp: LocalIdP) -> str:
    """The key-confusion attack: an HS256 token whose secret is the RSA public key's PEM."""
    pem = _RSA.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    claims = {"iss": idp.issuer, "aud": AUDIENCE, "sub": "mallory", "exp": now + 300}
    header = json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode()
    payload = json.dumps(claims).encode()
    signing_input = jwt.utils.base64url_encode(header) + b"." + jwt.utils.base64url_encode(payload)
    signature = hmac.new(pem, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()


def unsigned(idp: LocalIdP) -> str:
    """An ``alg: none`` token."""
    now = int(time.time())
    claims = {"iss": idp.issuer, "aud": AUDIENCE, "sub": "mallory", "exp": now + 300}
    header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = jwt.utils.base64url_encode(json.dumps(claims).encode())
    return (header + b"." + payload + b".").decode()
