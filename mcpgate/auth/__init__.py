"""Client authentication: API keys and JWTs in, an :class:`Identity` out (pipeline stage 3).

``Authenticator`` is the imperative shell around pure parts: ``credentials`` finds the
credential in the headers, ``apikeys`` and ``jwt`` check it, ``jwks`` keeps the identity
provider's keys, ``oauth`` says where an OAuth client learns how to get a token. A rejection
is a ``GatewayError`` that already carries its ``WWW-Authenticate`` challenge.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final

import aiohttp

from mcpgate.auth.apikeys import ApiKeys
from mcpgate.auth.credentials import find_credential
from mcpgate.auth.identity import ANONYMOUS, Identity
from mcpgate.auth.jwks import MAX_DOCUMENT, FetchError, JwksCache
from mcpgate.auth.jwt import JwtVerifier
from mcpgate.auth.oauth import ProtectedResource, api_key_challenge
from mcpgate.config.model import AuthConfig, JwtConfig
from mcpgate.errors import GatewayError

log = logging.getLogger("mcpgate.auth")

FETCH_TIMEOUT: Final = aiohttp.ClientTimeout(total=10)
# The errors whose answer tells an OAuth client what to do next (RFC 6750 section 3).
CHALLENGED: Final = {
    "unauthenticated": None,
    "invalid_token": "invalid_token",
    "insufficient_scope": "insufficient_scope",
}


class Authenticator:
    def __init__(
        self,
        config: AuthConfig,
        public_url: str | None,
        upstreams: Iterable[str],
        previous: Authenticator | None = None,
    ) -> None:
        """``previous``: the authenticator this one replaces (a reload, a key added through the admin
        API). When the identity provider's settings are the same, the signing keys it fetched are
        shared, not fetched again by every instance on every change."""
        self.config = config
        self.api_keys = ApiKeys(config.api_keys)
        self.resource: ProtectedResource | None = None
        self.jwt: JwtVerifier | None = None
        self._http: aiohttp.ClientSession | None = None
        self._owner: Authenticator = self  # whose key cache (and HTTP session) this one uses
        self._users = 1  # authenticators using this one's key cache, itself included
        if config.jwt is not None:
            assert public_url is not None, "validation requires server.public_url with auth.jwt"
            self.resource = ProtectedResource.build(public_url, config.jwt, upstreams)
            if previous is not None and previous.jwt is not None and _same_keys(previous.jwt.config, config.jwt):
                self._owner = previous._owner
                self._owner._users += 1
                keys = previous.jwt.keys
            else:
                keys = JwksCache(config.jwt, self._fetch)
            self.jwt = JwtVerifier(config.jwt, (*config.jwt.audience, *self.resource.audiences()), keys)

    async def start(self) -> None:
        if self.jwt is not None and self._owner is self and self._http is None:
            self._http = aiohttp.ClientSession(timeout=FETCH_TIMEOUT, raise_for_status=False)
            self.jwt.keys.warm()

    async def close(self) -> None:
        owner = self._owner
        owner._users -= 1
        if owner._users > 0:
            return  # a successor still uses the key cache
        if owner.jwt is not None:
            await owner.jwt.keys.close()
        if owner._http is not None:
            await owner._http.close()

    def status(self) -> dict[str, Any]:
        """For /readyz: what an operator needs to see when tokens start failing."""
        status: dict[str, Any] = {"api_keys": len(self.config.api_keys)}
        if self.jwt is not None:
            status["jwks"] = self.jwt.keys.status()
        return status

    async def authenticate(self, headers: Mapping[str, str], path: str) -> Identity:
        """The caller's identity; a rejection carries the challenge for ``path``."""
        try:
            return await self._identify(headers)
        except GatewayError as exc:
            if exc.reason.name in CHALLENGED:
                exc.headers["WWW-Authenticate"] = self.challenge(path, CHALLENGED[exc.reason.name], exc.message)
            raise

    async def _identify(self, headers: Mapping[str, str]) -> Identity:
        credential = find_credential(headers, self.config.gateway_header)
        if credential is None:
            raise GatewayError("unauthenticated", "Authentication required: send a credential")
        # API keys first even when it looks like a JWT: the lookup is cheap and constant-time.
        identity = self.api_keys.identify(credential.value) if self.api_keys else None
        if identity is not None:
            return identity
        if self.jwt is not None and credential.looks_like_jwt:
            return await self.jwt.verify(credential.value)
        raise GatewayError("invalid_token", "The credential is not valid here")

    def challenge(self, path: str, error: str | None = None, description: str | None = None) -> str:
        if self.resource is None:
            return api_key_challenge(error, description)
        # A missing credential needs no error code (RFC 6750 3.1): the client simply has to get one.
        return self.resource.challenge(path, error, description if error else None)

    async def _fetch(self, url: str) -> bytes:
        if self._http is None:
            raise FetchError("the gateway is not started")
        try:
            async with self._http.get(url, headers={"Accept": "application/json"}) as resp:
                if resp.status != 200:
                    raise FetchError(f"{url} answered HTTP {resp.status}")
                body = await resp.content.read(MAX_DOCUMENT + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FetchError(f"{url}: {type(exc).__name__}") from None
        if len(body) > MAX_DOCUMENT:
            raise FetchError(f"{url} sent more than {MAX_DOCUMENT} bytes")
        return body


def _same_keys(old: JwtConfig, new: JwtConfig) -> bool:
    """Whether a key cache made for ``old`` serves ``new`` (role mappings, audiences may differ)."""
    fields = ("issuer", "jwks_uri", "discovery", "algorithms", "jwks_cache_ttl", "jwks_refetch_interval")
    return all(getattr(old, name) == getattr(new, name) for name in fields)


__all__ = ["ANONYMOUS", "Authenticator", "Identity"]
