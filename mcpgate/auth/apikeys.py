"""Static API keys: hashing, generation and constant-time lookup. Pure, no I/O.

Only the SHA-256 of a key needs to be in the configuration (``mcpgate hash-key`` prints it). A
presented key is hashed and compared with every configured hash by ``hmac.compare_digest``,
without stopping at the first match, so the time taken says nothing about which key (if any)
came close.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from mcpgate.auth.identity import Identity
from mcpgate.config.model import ApiKey

HASH_PREFIX: Final = "sha256:"
KEY_PREFIX: Final = "mgk_"  # recognisable in secret scanners and in a leaked paste
KEY_BYTES: Final = 32


def hash_key(key: str) -> str:
    """The ``key_hash`` config value for ``key``."""
    return HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    """A new key with 256 bits of randomness."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    identity: Identity


class ApiKeys:
    """The configured keys, ready for lookup: digests computed once, at load."""

    __slots__ = ("_entries",)

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        entries = []
        for key in keys:
            if key.key_hash is not None:
                digest = bytes.fromhex(key.key_hash.removeprefix(HASH_PREFIX))
            else:
                assert key.key is not None, "the schema requires key_hash or key"
                digest = hashlib.sha256(key.key.encode()).digest()
            entries.append(_Entry(digest, Identity(key.id, key.roles, "api_key")))
        self._entries = tuple(entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def identify(self, presented: str) -> Identity | None:
        """The identity whose key this is, or None. Every entry is compared, match or not."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found = None
        for entry in self._entries:
            if hmac.compare_digest(digest, entry.digest):
                found = entry.identity
        return found
