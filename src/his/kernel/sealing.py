"""Event content sealed for its consumers: AES-256-GCM (``FieldCipher``) under a key that only
the producer and the consumers that need the content hold.

A box is the base64 (URL-safe, unpadded) of a ``FieldCipher`` ciphertext of the content's JSON:
the key id travels in it, the newest configured key seals, older keys still open. Its associated
data binds it to the event type and the ids it is sealed for (``aad``), so a box copied into
another event, or another order's event, does not open. A box that does not open is a
``PermanentError``: the consumer loop dead-letters its event with the reason, never skips it.
"""

from __future__ import annotations

import base64
import binascii
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from his.kernel.consumer import PermanentError
from his.kernel.crypto import DecryptionError, FieldCipher, parse_key

M = TypeVar("M", bound=BaseModel)


class UnsealableError(PermanentError):
    """A sealed box that does not open: altered, sealed for another event, or under a key that
    is not configured."""


def aad(event_type: str, *ids: object) -> bytes:
    """The associated data of a box sealed in an event of ``event_type`` for these ids."""
    return "|".join(("his-sealed", event_type, *(str(i) for i in ids))).encode()


class Seal:
    """Seals with the first key of a setting, opens with whichever configured key a box names.

    Built from the setting's text (comma-separated base64 keys, newest first), which may be
    missing: ``require`` then stops the service at its start, with the setting's name."""

    def __init__(self, setting: str, keys: str | None) -> None:
        self.setting = setting
        parsed = [parse_key(k) for k in (keys or "").split(",") if k.strip()]
        self._cipher = FieldCipher(parsed) if parsed else None

    @property
    def configured(self) -> bool:
        return self._cipher is not None

    def require(self, service: str) -> None:
        """Refuse to start a service that needs the key without one."""
        if self._cipher is None:
            raise SystemExit(f"{service} needs {self.setting} (base64 AES-256 keys, newest first) and has none")

    def seal(self, content: BaseModel, associated: bytes) -> str:
        if self._cipher is None:
            raise RuntimeError(f"nothing can be sealed without {self.setting}")
        blob = self._cipher.encrypt(content.model_dump_json(), associated)
        return base64.urlsafe_b64encode(blob).decode().rstrip("=")

    def open(self, box: str, model: type[M], associated: bytes) -> M:
        """The content of ``box``, or ``UnsealableError`` saying why it does not open."""
        if self._cipher is None:
            raise UnsealableError(f"a sealed box cannot be opened without {self.setting}")
        try:
            blob = base64.urlsafe_b64decode(box + "=" * (-len(box) % 4))
        except (binascii.Error, ValueError):
            raise UnsealableError("the sealed box is not base64") from None
        try:
            return model.model_validate_json(self._cipher.decrypt(blob, associated))
        except DecryptionError as exc:
            raise UnsealableError(f"the sealed box does not open: {exc}") from None
        except ValidationError:
            raise UnsealableError(f"the sealed box does not hold a {model.__name__}") from None
