"""Where a client's gateway credential is, and what kind it is. Pure: headers in, a credential out.

Clients send it as ``Authorization: Bearer <token>``, ``Authorization: Api-Key <key>``,
``X-API-Key: <key>`` or ``Api-Key: <key>``. When ``auth.gateway_header`` names another header
(so that ``Authorization`` stays free for something else), only that header is read, holding
``Bearer <token>``, ``Api-Key <key>`` or the bare credential. Either way the credential is
never forwarded upstream: upstreams get an allowlist of headers that names none of these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from mcpgate.errors import GatewayError

DEFAULT_HEADER: Final = "Authorization"
KEY_HEADERS: Final = ("X-API-Key", "Api-Key")
# Longer than any real key or token (an Entra ID token with many groups runs to a few KiB).
MAX_CREDENTIAL: Final = 8192

Scheme = Literal["bearer", "api-key"]


@dataclass(frozen=True, slots=True)
class Credential:
    scheme: Scheme
    value: str

    def __repr__(self) -> str:  # secrets never reach logs, not even through a repr
        return f"Credential(scheme={self.scheme!r}, value='***')"

    @property
    def looks_like_jwt(self) -> bool:
        """Three dot-separated base64url parts: worth handing to the JWT verifier."""
        return self.scheme == "bearer" and self.value.count(".") == 2


def find_credential(headers: Mapping[str, str], gateway_header: str = DEFAULT_HEADER) -> Credential | None:
    """The one credential in ``headers``; None when there is none.

    Raises ``invalid_token`` for a malformed or oversized value, and for two different
    credentials at once (which one was meant is a guess the gateway does not make).
    """
    if gateway_header != DEFAULT_HEADER and gateway_header.lower() != "authorization":
        raw = _one(headers, gateway_header)
        return None if raw is None else _parse(raw, bare_ok=True)
    found = None
    raw = _one(headers, DEFAULT_HEADER)
    if raw is not None:
        found = _parse(raw, bare_ok=False)
    for name in KEY_HEADERS:
        value = _one(headers, name)
        if value is None:
            continue
        credential = Credential("api-key", _checked(value.strip()))
        if found is not None and found.value != credential.value:
            raise GatewayError("invalid_token", "More than one credential sent; send one")
        found = found or credential
    return found


def _one(headers: Mapping[str, str], name: str) -> str | None:
    """The header's value; a header sent twice with different values is refused, not guessed at.
    (Three headers are looked up per request, two of them usually absent: that case costs one check.)"""
    if name not in headers:
        return None
    getall = getattr(headers, "getall", None)  # multidict (aiohttp) keeps repeated headers
    if getall is None:
        return headers[name]
    values: list[str] = getall(name)
    first = values[0]
    if len(values) > 1 and any(other != first for other in values):
        raise GatewayError("invalid_token", "More than one credential sent; send one")
    return first


def _parse(raw: str, *, bare_ok: bool) -> Credential:
    scheme, _, value = raw.strip().partition(" ")
    kind = scheme.lower()
    if kind == "bearer":
        return Credential("bearer", _checked(value.strip()))
    if kind in ("api-key", "apikey"):
        return Credential("api-key", _checked(value.strip()))
    if bare_ok and not value:
        return Credential("bearer", _checked(scheme))
    raise GatewayError("invalid_token", "Unsupported authorization scheme; use Bearer or Api-Key")


def _checked(value: str) -> str:
    if not value:
        raise GatewayError("invalid_token", "Empty credential")
    if len(value) > MAX_CREDENTIAL:
        raise GatewayError("invalid_token", f"Credential longer than {MAX_CREDENTIAL} characters")
    if not (value.isascii() and value.isprintable()):
        # Keys and tokens are visible ASCII; anything else is garbage (or bytes aiohttp escaped).
        raise GatewayError("invalid_token", "The credential holds characters no key or token has")
    return value
