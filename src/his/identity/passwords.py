"""Password hashing with argon2id, off the event loop and with bounded concurrency.

argon2-cffi's defaults (argon2id, 64 MiB, t=3, p=4: RFC 9106's second recommendation) are above
the OWASP minimum (19 MiB, t=2, p=1). A hash costs ~200 ms here, so at most a few run at once;
hashes made with weaker parameters are upgraded at the next successful login.
"""

from __future__ import annotations

import asyncio
import contextlib

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

#: Verified against when the user does not exist, so both paths cost the same.
_DUMMY_PASSWORD = "his-dummy-password-for-timing"  # noqa: S105 - not a credential


class Passwords:
    def __init__(self, hasher: PasswordHasher | None = None, *, concurrency: int = 2) -> None:
        self.hasher = hasher or PasswordHasher()
        self._slots = asyncio.Semaphore(concurrency)
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> tuple[bool, str | None]:
        """(matches, new hash if the stored one should be upgraded). ``stored=None``: unknown user."""
        async with self._slots:
            return await asyncio.to_thread(self._verify, stored, password)

    def _verify(self, stored: str | None, password: str) -> tuple[bool, str | None]:
        if stored is None:
            if self._dummy is None:
                self._dummy = self.hasher.hash(_DUMMY_PASSWORD)
            with contextlib.suppress(VerificationError):
                self.hasher.verify(self._dummy, password)
            return False, None
        try:
            self.hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False, None
        if self.hasher.check_needs_rehash(stored):
            return True, self.hasher.hash(password)
        return True, None
