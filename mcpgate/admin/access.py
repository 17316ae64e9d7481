"""Who may use the admin API: an admin key (``admin.api_keys``), or a JWT holding an admin role.

Admin keys are looked up like client keys (their SHA-256, compared in constant time, every entry
every time). A JWT is verified by the gateway's own ``auth.jwt`` (issuer, audience, signature,
role mappings) and must then hold one of ``admin.roles``. A valid client credential without an
admin role is a 403, not a 401: it proves who is asking, and that they may not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mcpgate.auth import Authenticator
from mcpgate.auth.apikeys import ApiKeys
from mcpgate.auth.credentials import find_credential
from mcpgate.config.model import AdminConfig, ApiKey
from mcpgate.errors import GatewayError


class Denied(Exception):
    """``status`` 401 (no valid credential) or 403 (valid, without an admin role)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(eq=False)
class AdminAccess:
    config: AdminConfig

    def __post_init__(self) -> None:
        self.keys = ApiKeys(ApiKey(k.id, key_hash=k.key_hash, roles=("admin",)) for k in self.config.api_keys)

    async def actor(self, headers: Mapping[str, str], auth: Authenticator | None) -> str:
        """Who is asking, as the audit trail names them (``key:ops``, ``jwt:alice``); raises ``Denied``."""
        try:
            credential = find_credential(headers)
        except GatewayError as exc:
            raise Denied(401, exc.message) from None
        if credential is None:
            raise Denied(401, "Authentication required: send an admin key or token (Authorization: Bearer ...)")
        admin = self.keys.identify(credential.value) if self.keys else None
        if admin is not None:
            return f"key:{admin.client_id}"
        client = auth.api_keys.identify(credential.value) if auth is not None and auth.api_keys else None
        if client is not None:
            raise Denied(403, f"client {client.client_id!r} is not an admin")
        if auth is not None and auth.jwt is not None and credential.looks_like_jwt:
            try:
                identity = await auth.jwt.verify(credential.value)
            except GatewayError as exc:
                raise Denied(401, exc.message) from None
            if set(identity.roles) & set(self.config.roles):
                return f"jwt:{identity.client_id}"
            raise Denied(403, f"{identity.client_id!r} holds none of the admin roles ({', '.join(self.config.roles)})")
        raise Denied(401, "The credential is not valid here")
