"""The identity provider's signing keys: fetched, cached, refetched when a token names a new one.

DESIGN section 8: PyJWT's own ``PyJWKClient`` blocks on urllib, so the keys are fetched here,
through an injected ``fetch`` (aiohttp in the gateway, a dict in unit tests). What this keeps:

- only asymmetric signing keys (RSA, EC, OKP); symmetric (``oct``), encryption (``use: enc``)
  and private keys are dropped, so no configuration or JWKS can make a shared secret verify;
- the keys of the last good fetch: an identity provider that goes down does not log anyone out;
- at most one fetch in flight: a burst of tokens with a new ``kid`` shares it;
- an unknown ``kid`` refetches at most once per ``jwks_refetch_interval`` (the first one at once,
  so a rotated-in key works immediately), so tokens with made-up ``kid``s cannot turn the
  gateway into a load generator against the identity provider.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from mcpgate import jsonrpc
from mcpgate.config.model import JwtConfig
from mcpgate.errors import GatewayError

log = logging.getLogger("mcpgate.auth")

Fetch = Callable[[str], Awaitable[bytes]]

# What kind of key each accepted algorithm needs: (kty, curve); None: any curve of that type.
KEY_TYPE: Final[Mapping[str, tuple[str, frozenset[str] | None]]] = {
    **dict.fromkeys(("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"), ("RSA", None)),
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}
_LOADERS: Final[Mapping[str, Callable[[str], Any]]] = {
    "RSA": RSAAlgorithm.from_jwk,
    "EC": ECAlgorithm.from_jwk,
    "OKP": OKPAlgorithm.from_jwk,
}
MAX_DOCUMENT: Final = 1024 * 1024
DISCOVERY_PATH: Final = "/.well-known/openid-configuration"


class FetchError(Exception):
    """A key or discovery document could not be had; the message is safe to log."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str | None
    kty: str
    curve: str | None
    alg: str | None  # the JWK's own "alg", when it names one
    key: Any  # a cryptography public key object

    def fits(self, alg: str) -> bool:
        if self.alg is not None and self.alg != alg:
            return False
        kty, curves = KEY_TYPE[alg]
        return self.kty == kty and (curves is None or self.curve in curves)


def parse_jwks(body: bytes) -> tuple[SigningKey, ...]:
    """The usable public signing keys of a JWKS document; raises FetchError when it is not one."""
    try:
        document = jsonrpc.loads(body)
    except ValueError:
        raise FetchError("the key set is not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise FetchError("the key set has no 'keys' list")
    keys = []
    for jwk in entries:
        key = _signing_key(jwk)
        if key is not None:
            keys.append(key)
    return tuple(keys)


def _signing_key(jwk: object) -> SigningKey | None:
    if not isinstance(jwk, dict):
        return None
    kty, alg, kid, curve = jwk.get("kty"), jwk.get("alg"), jwk.get("kid"), jwk.get("crv")
    if not all(isinstance(v, str | None) for v in (kty, alg, kid, curve)):
        return None  # malformed: refuse rather than guess
    if not isinstance(kty, str) or kty not in _LOADERS or jwk.get("use", "sig") != "sig" or "d" in jwk:
        return None  # symmetric, for encryption, or a private key that should never have been published
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    if alg is not None and alg not in KEY_TYPE:
        return None  # e.g. "HS256" on an RSA key: refuse rather than guess
    try:
        key = _LOADERS[kty](json.dumps(jwk))
    except Exception:
        return None
    return SigningKey(kid, kty, curve, alg, key)


class JwksCache:
    """The current keys of one issuer, and when to fetch them again."""

    def __init__(self, config: JwtConfig, fetch: Fetch, clock: Callable[[], float] = time.monotonic) -> None:
        self.issuer = config.issuer
        self._jwks_uri = config.jwks_uri
        self._refetch_interval = config.jwks_refetch_interval
        self._ttl = config.jwks_cache_ttl
        self._fetch = fetch
        self._clock = clock
        self.keys: tuple[SigningKey, ...] = ()
        self.fetches = 0  # attempts, for /readyz and tests
        self.last_error: str | None = None
        self._fetched_at: float | None = None  # the last fetch that brought keys
        self._tried_at: float | None = None  # the last fetch, whatever came of it
        self._missed_at: float | None = None  # when an unknown kid last made us fetch
        self._inflight: asyncio.Task[None] | None = None

    @property
    def jwks_uri(self) -> str | None:
        return self._jwks_uri

    def status(self) -> dict[str, Any]:
        return {"keys": len(self.keys), "jwks_uri": self._jwks_uri, "error": self.last_error}

    async def key_for(self, kid: str | None, alg: str) -> SigningKey:
        """The key that verifies a token with this header; raises ``invalid_token`` or ``auth_unavailable``."""
        key = self._find(kid, alg)
        now = self._clock()
        if key is not None:
            stale = self._fetched_at is not None and now - self._fetched_at >= self._ttl
            # In the background (the token in hand is verified with the key in hand); while the
            # provider is down, retried at most once per refetch interval.
            if stale and (self._tried_at is None or now - self._tried_at >= self._refetch_interval):
                self._start_fetch()
            return key
        fetching = self._inflight is not None and not self._inflight.done()
        if fetching or self._missed_at is None or now - self._missed_at >= self._refetch_interval:
            # A key rotated in is usable at once; made-up kids fetch at most once per interval.
            self._missed_at = now
            await self.refresh()
            key = self._find(kid, alg)
        if key is not None:
            return key
        if not self.keys:
            raise GatewayError("auth_unavailable", "The identity provider's signing keys are not available yet")
        raise GatewayError("invalid_token", "The token is signed by a key this gateway does not know")

    async def refresh(self) -> None:
        """Fetch the keys now, or join the fetch already under way; never raises for a failed fetch."""
        task = self._start_fetch()
        await asyncio.shield(task)

    def warm(self) -> None:
        """Start fetching in the background, so that the first client does not wait for it."""
        self._start_fetch()

    async def close(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()
            await asyncio.gather(self._inflight, return_exceptions=True)

    def _start_fetch(self) -> asyncio.Task[None]:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._update(), name="jwks-fetch")
        return self._inflight

    def _find(self, kid: str | None, alg: str) -> SigningKey | None:
        if kid is not None:
            return next((k for k in self.keys if k.kid == kid and k.fits(alg)), None)
        # No kid: acceptable only when exactly one key could have signed it.
        fitting = [k for k in self.keys if k.fits(alg)]
        return fitting[0] if len(fitting) == 1 else None

    async def _update(self) -> None:
        self.fetches += 1
        self._tried_at = self._clock()
        try:
            uri = self._jwks_uri or await self._discover()
            self._jwks_uri = uri
            keys = parse_jwks(await self._fetch(uri))
        except FetchError as exc:
            self.last_error = str(exc)
            held = f"; still using the {len(self.keys)} keys fetched before" if self.keys else ""
            log.warning("could not fetch the signing keys of %s: %s%s", self.issuer, exc, held)
            return
        if not keys:
            # Most likely a broken provider: keep what worked, as for a failed fetch.
            self.last_error = "the key set holds no usable signing key"
            log.warning("the key set of %s holds no usable signing key (RSA, EC or OKP, use sig)", self.issuer)
            return
        self.last_error = None
        self.keys = keys
        self._fetched_at = self._clock()
        log.debug("fetched %d signing keys for %s", len(keys), self.issuer)

    async def _discover(self) -> str:
        """OIDC discovery: the issuer's own document names its key set, and must name the issuer."""
        body = await self._fetch(self.issuer.rstrip("/") + DISCOVERY_PATH)
        try:
            document = jsonrpc.loads(body)
        except ValueError:
            raise FetchError("the discovery document is not JSON") from None
        if not isinstance(document, dict):
            raise FetchError("the discovery document is not a JSON object")
        if document.get("issuer") != self.issuer:
            raise FetchError(
                "the discovery document names another issuer (check auth.jwt.issuer, trailing slash included)"
            )
        uri = document.get("jwks_uri")
        if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
            raise FetchError("the discovery document has no jwks_uri")
        return uri
