"""The gateway as an OAuth 2.1 resource server: RFC 9728 metadata and ``WWW-Authenticate``. Pure.

Everything is built from ``server.public_url``, never from the request's ``Host``: behind a TLS
terminator the request says ``http://10.0.0.7:8080``, and a client sent there would fail (or,
with a forged Host, be sent somewhere else).

RFC 9728 puts the metadata of ``https://gw.example.com/base/mcp`` at
``https://gw.example.com/.well-known/oauth-protected-resource/base/mcp``: the well-known part
goes between the host and the path. The gateway serves it both with and without that base
path, so it works whether or not a proxy in front strips the base.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from mcpgate.config.model import JwtConfig

WELL_KNOWN: Final = "/.well-known/oauth-protected-resource"


@dataclass(frozen=True, slots=True)
class ProtectedResource:
    origin: str  # scheme://host[:port] of server.public_url
    base_path: str  # its path, without a trailing slash ("" at the root)
    endpoints: frozenset[str]  # the MCP paths this gateway serves, relative to its own root
    authorization_servers: tuple[str, ...]
    scopes: tuple[str, ...]

    @classmethod
    def build(cls, public_url: str, jwt: JwtConfig, upstreams: Iterable[str]) -> ProtectedResource:
        parts = urlsplit(public_url)
        endpoints = {"/mcp"}
        for name in upstreams:
            endpoints |= {f"/servers/{name}/mcp", f"/mcp/{name}"}
        return cls(
            f"{parts.scheme}://{parts.netloc}",
            parts.path.rstrip("/"),
            frozenset(endpoints),
            jwt.authorization_servers or (jwt.issuer,),
            jwt.scopes,
        )

    def resource(self, path: str = "") -> str:
        """The resource identifier of an endpoint (``path`` as the gateway sees it), or of the whole gateway."""
        return f"{self.origin}{self.base_path}{path}"

    def metadata_url(self, path: str = "") -> str:
        return f"{self.origin}{WELL_KNOWN}{self.base_path}{path}"

    def audiences(self) -> frozenset[str]:
        """Every ``aud`` that names this gateway: its URL (with or without ``/``) and each endpoint's."""
        root = self.resource()
        return frozenset({root, root + "/", *(self.resource(p) for p in self.endpoints)})

    def document(self, tail: str) -> dict[str, Any] | None:
        """The metadata served at ``WELL_KNOWN + tail``; None when ``tail`` names no endpoint."""
        if self.base_path and (tail == self.base_path or tail.startswith(self.base_path + "/")):
            tail = tail[len(self.base_path) :]
        if tail not in ("", "/") and tail not in self.endpoints:
            return None
        path = "" if tail == "/" else tail
        document: dict[str, Any] = {
            "resource": self.resource(path),
            "authorization_servers": list(self.authorization_servers),
            "bearer_methods_supported": ["header"],
            "resource_name": "mcpgate",
        }
        if self.scopes:
            document["scopes_supported"] = list(self.scopes)
        return document

    def challenge(self, path: str, error: str | None = None, description: str | None = None) -> str:
        """The ``WWW-Authenticate`` value for a 401 (or, with ``insufficient_scope``, a 403) on ``path``."""
        endpoint = path if path in self.endpoints else ""
        params = []
        if error is not None:
            params.append(f'error="{error}"')
            if description:
                params.append(f'error_description="{quoted(description)}"')
        if self.scopes:
            params.append(f'scope="{quoted(" ".join(self.scopes))}"')
        params.append(f'resource_metadata="{self.metadata_url(endpoint)}"')
        return "Bearer " + ", ".join(params)


def quoted(text: str) -> str:
    """``text`` fit for an RFC 9110 quoted-string: printable ASCII, no quote or backslash."""
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "?" for c in text)


def api_key_challenge(error: str | None = None, description: str | None = None) -> str:
    """Without JWT there is no OAuth metadata to point at: a plain Bearer challenge."""
    params = ['realm="mcpgate"']
    if error is not None:
        params.append(f'error="{error}"')
        if description:
            params.append(f'error_description="{quoted(description)}"')
    return "Bearer " + ", ".join(params)
