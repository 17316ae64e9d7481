"""Who is calling: the identity every later stage (sessions, policy, limits, logs) works from.

Pure: turning claims into roles needs no I/O, so ``role_mappings`` is unit-tested on plain dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from mcpgate.config.model import RoleMapping

IdentityKind = Literal["anonymous", "api_key", "jwt"]
# OAuth scope claims are one space-separated string (RFC 8693 ``scope``) or a list (``scp``).
SPACE_SEPARATED_CLAIMS: Final = frozenset({"scope", "scp"})


@dataclass(frozen=True, slots=True)
class Identity:
    """A caller: its client id (what policy's ``clients`` and the logs name) and its roles."""

    client_id: str
    roles: tuple[str, ...] = ()
    kind: IdentityKind = "anonymous"
    # The verified token's claims, for whoever needs more than id and roles; never logged whole.
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    scopes: frozenset[str] = frozenset()

    @property
    def authenticated(self) -> bool:
        return self.kind != "anonymous"

    @property
    def principal(self) -> str:
        """What a session is bound to: an API key ``ci`` and a token whose ``sub`` is ``ci`` differ."""
        return f"{self.kind}:{self.client_id}"


ANONYMOUS: Final = Identity("anonymous")


def claim(claims: Mapping[str, Any], path: str) -> Any:
    """A claim by name, or by dotted path into nested objects (``realm_access.roles``).

    The whole name is tried first: Auth0's namespaced claims are URLs full of dots.
    """
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def claim_values(claims: Mapping[str, Any], path: str) -> tuple[str, ...]:
    """A claim as a tuple of strings: a list's string items, a scalar, or a scope string's words."""
    value = claim(claims, path)
    if isinstance(value, str):
        leaf = path.rsplit(".", 1)[-1]
        return tuple(value.split()) if leaf in SPACE_SEPARATED_CLAIMS else (value,)
    if isinstance(value, bool) or value is None:
        return ("true" if value else "false",) if isinstance(value, bool) else ()
    if isinstance(value, int | float):
        return (str(value),)
    if isinstance(value, list):
        return tuple(str(v) for v in value if isinstance(v, str | int) and not isinstance(v, bool))
    return ()


def mapped_roles(claims: Mapping[str, Any], mappings: Iterable[RoleMapping]) -> tuple[str, ...]:
    """The roles that ``role_mappings`` grant for these claims, each once, in mapping order."""
    roles: dict[str, None] = {}
    for mapping in mappings:
        if mapping.value in claim_values(claims, mapping.claim):
            roles.update(dict.fromkeys(mapping.roles))
    return tuple(roles)


def token_scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    """The OAuth scopes a token carries: ``scope`` (a string) and ``scp`` (Okta and Entra: a list or string)."""
    return frozenset(claim_values(claims, "scope")) | frozenset(claim_values(claims, "scp"))
