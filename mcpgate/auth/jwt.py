"""JWT bearer tokens, verified with PyJWT against the issuer's published keys (DESIGN section 8).

The rules are fixed, not left to the token: the algorithm must be on the configured allow-list
(asymmetric only: ``none`` and HS* can never be configured), the key must be of the type that
algorithm needs, and ``exp``, ``iss`` and ``aud`` are required. Verified tokens are remembered
briefly, so a client sending the same token on every call pays for one signature check.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Final

import jwt

from mcpgate.auth.identity import Identity, claim, mapped_roles, token_scopes
from mcpgate.auth.jwks import JwksCache
from mcpgate.config.model import JwtConfig
from mcpgate.errors import GatewayError
from mcpgate.jsonrpc import printable

MAX_CLIENT_ID: Final = 256
CACHE_SIZE: Final = 10_000
# A remembered token is checked against the keys again after this long (a key may have been revoked).
CACHE_SECONDS: Final = 300.0

# What each PyJWT rejection tells the client: enough to fix the token, nothing about the keys.
_REJECTIONS: Final[tuple[tuple[type[Exception], str], ...]] = (
    (jwt.ExpiredSignatureError, "The token has expired"),
    (jwt.ImmatureSignatureError, "The token is not valid yet (nbf or iat in the future)"),
    (jwt.InvalidIssuerError, "The token was issued by another issuer"),
    (jwt.InvalidAudienceError, "The token is meant for another audience"),
    (jwt.InvalidSignatureError, "The token's signature does not verify"),
)


class JwtVerifier:
    def __init__(
        self,
        config: JwtConfig,
        audiences: Iterable[str],
        keys: JwksCache,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.keys = keys
        self._audiences = sorted(set(audiences))
        self._algorithms = frozenset(config.algorithms)
        self._clock = clock
        self._cache: dict[str, tuple[Identity, float]] = {}

    async def verify(self, token: str) -> Identity:
        """The identity a valid token names; raises invalid_token, insufficient_scope or auth_unavailable."""
        now = self._clock()
        cached = self._cache.get(token)
        if cached is not None and now < cached[1]:
            identity = cached[0]
        else:
            identity, expires = await self._verify(token, now)
            if len(self._cache) >= CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[token] = (identity, expires)
        missing = [s for s in self.config.scopes if s not in identity.scopes]
        if missing:
            raise GatewayError("insufficient_scope", f"The token lacks the scope {printable(missing[0]) or '?'!r}")
        return identity

    async def _verify(self, token: str, now: float) -> tuple[Identity, float]:
        if not token.isascii():  # base64url and dots only: PyJWT would choke on the rest
            raise GatewayError("invalid_token", "The token is not a well-formed JWT")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.InvalidTokenError, ValueError):
            raise GatewayError("invalid_token", "The token is not a well-formed JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self._algorithms:
            shown = (printable(alg) if isinstance(alg, str) else None) or "?"
            raise GatewayError("invalid_token", f"The token's algorithm {shown!r} is not accepted")
        if kid is not None and not isinstance(kid, str):
            raise GatewayError("invalid_token", "The token's kid is not a string")
        key = await self.keys.key_for(kid, alg)
        claims = self._decode(token, key.key, alg)
        return self._identity(claims), min(float(claims["exp"]), now + CACHE_SECONDS)

    def _decode(self, token: str, key: Any, alg: str) -> dict[str, Any]:
        config = self.config
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audiences,
                issuer=config.issuer,
                leeway=config.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise GatewayError("invalid_token", f"The token has no {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            message = next((text for kind, text in _REJECTIONS if isinstance(exc, kind)), "The token is not valid")
            raise GatewayError("invalid_token", message) from None
        return claims

    def _identity(self, claims: dict[str, Any]) -> Identity:
        name = self.config.client_id_claim
        value = claim(claims, name)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value or len(value) > MAX_CLIENT_ID or not value.isprintable():
            raise GatewayError("invalid_token", f"The token has no usable {name!r} claim (client_id_claim)")
        roles = mapped_roles(claims, self.config.role_mappings)
        return Identity(value, roles, "jwt", claims, token_scopes(claims))
