"""Field encryption at rest: AES-256-GCM with the row's identity as associated data.

A ciphertext is ``version (1 byte) || key id (8 bytes) || nonce (12 bytes) || ciphertext+tag``.
The associated data binds it to its row (e.g. patient id and entry id), so a ciphertext copied
into another row does not decrypt. Keys come from settings, never from the database; the key id
lets a later key decrypt old rows while new rows use the new key.
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = b"\x01"


class DecryptionError(Exception):
    """The ciphertext was altered, belongs to another row, or its key is not configured."""


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"his-field-key:" + key).digest()[:8]


def parse_key(text: str) -> bytes:
    """A key from settings: 32 bytes, base64 (standard or URL-safe, padding optional)."""
    padded = text.strip() + "=" * (-len(text.strip()) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
    except ValueError:
        raise ValueError("the key is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"the key must be 32 bytes (AES-256), not {len(raw)}")
    return raw


def new_key_text() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


class FieldCipher:
    """Encrypts with the first key; decrypts with whichever configured key a ciphertext names."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._current = keys[0]
        self._by_id = {key_id(k): AESGCM(k) for k in keys}

    def encrypt(self, plaintext: str, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        kid = key_id(self._current)
        return VERSION + kid + nonce + self._by_id[kid].encrypt(nonce, plaintext.encode(), VERSION + kid + aad)

    def decrypt(self, blob: bytes, aad: bytes) -> str:
        if len(blob) < 1 + 8 + 12 + 16 or blob[:1] != VERSION:
            raise DecryptionError("not a ciphertext of this format")
        kid, nonce, body = blob[1:9], blob[9:21], blob[21:]
        aes = self._by_id.get(kid)
        if aes is None:
            raise DecryptionError("encrypted with a key that is not configured")
        try:
            return aes.decrypt(nonce, body, VERSION + kid + aad).decode()
        except InvalidTag:
            raise DecryptionError("the ciphertext was altered or belongs to another row") from None
