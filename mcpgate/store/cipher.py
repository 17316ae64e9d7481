"""Upstream credentials at rest: AES-256-GCM under ``store.encryption_key``. Pure, no I/O.

A sealed value is ``v1:`` and the base64 of a fresh 96-bit nonce followed by the ciphertext and its
tag. The object's kind and name are the associated data, so a sealed blob copied onto another row
(another upstream) does not open there: the database cannot be used to move a credential around.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from typing import Final

VERSION: Final = "v1:"
_HEX = re.compile(r"^[0-9A-Fa-f]{64}$")


def parse_key(text: str) -> bytes | None:
    """The 32 key bytes ``text`` spells (64 hex digits, or base64 with or without padding), or None."""
    text = text.strip()
    if _HEX.fullmatch(text):
        return bytes.fromhex(text)
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if "-" in text or "_" in text else None)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


class SealError(Exception):
    """A sealed value that does not open: another key, another row, or a damaged database."""


class Cipher:
    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext, context.encode())
        return VERSION + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, sealed: str, context: str) -> bytes:
        from cryptography.exceptions import InvalidTag

        if not sealed.startswith(VERSION):
            raise SealError("unknown format")
        try:
            raw = base64.b64decode(sealed[len(VERSION) :], validate=True)
            return self._aead.decrypt(raw[:12], raw[12:], context.encode())
        except (binascii.Error, ValueError, InvalidTag):
            raise SealError("it does not open with store.encryption_key (another key, or damaged)") from None
