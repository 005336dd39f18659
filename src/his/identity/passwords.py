"""Password hashing with argon2id, off the event loop, with bounded capacity per use.

argon2-cffi's defaults (argon2id, 64 MiB, t=3, p=4: RFC 9106's second recommendation) are above
the OWASP minimum (19 MiB, t=2, p=1). A hash costs ~200 ms here, so only a few run at once;
hashes made with weaker parameters are upgraded at the next successful login.

Logins have hashing capacity of their own: accounts being created (a flood of registrations
above all) queue for theirs and never in front of someone signing in. Each capacity has a short
queue with a deadline; what does not get a slot in time is refused with ``BusyError`` (answered
503 with ``Retry-After``) rather than left waiting until the gateway gives up on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

#: Verified against when the user does not exist, so both paths cost the same.
_DUMMY_PASSWORD = "his-dummy-password-for-timing"  # noqa: S105 - not a credential

T = TypeVar("T")


class BusyError(Exception):
    """No hashing capacity within the deadline: try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"busy; retry after {retry_after}s")
        self.retry_after = retry_after


class Capacity:
    """``slots`` hashes at once on threads of their own; at most ``queue`` callers wait, each at
    most ``wait`` seconds."""

    def __init__(self, name: str, slots: int, *, queue: int, wait: float) -> None:
        self.slots, self.queue, self.wait = slots, queue, wait
        self._free = asyncio.Semaphore(slots)
        self._threads = ThreadPoolExecutor(slots, thread_name_prefix=f"argon2-{name}")
        self.waiting = 0
        self.busy = 0

    async def run(self, fn: Callable[[], T]) -> T:
        async with self._slot():
            return await asyncio.get_running_loop().run_in_executor(self._threads, fn)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._free.locked() and self.waiting >= self.queue:
            raise BusyError(self.retry_after())
        self.waiting += 1
        try:
            async with asyncio.timeout(self.wait):
                await self._free.acquire()
        except TimeoutError:
            raise BusyError(self.retry_after()) from None
        finally:
            self.waiting -= 1
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1
            self._free.release()

    def retry_after(self) -> int:
        return max(1, math.ceil(self.wait))


class Passwords:
    def __init__(
        self, hasher: PasswordHasher | None = None, *, login: Capacity | None = None, other: Capacity | None = None
    ) -> None:
        self.hasher = hasher or PasswordHasher()
        #: Logins: two at once (a core each on a small machine), a queue a few seconds long.
        self.login = login or Capacity("login", 2, queue=32, wait=4.0)
        #: Everything else that hashes: accounts created by their owner or an administrator.
        self.other = other or Capacity("other", 1, queue=8, wait=4.0)
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        """A new hash (for a new account); ``BusyError`` when there is no capacity in time."""
        return await self.other.run(lambda: self.hasher.hash(password))

    async def verify(self, stored: str | None, password: str) -> tuple[bool, str | None]:
        """(matches, new hash if the stored one should be upgraded). ``stored=None``: unknown user.
        Runs on the logins' capacity; ``BusyError`` when there is none in time."""
        return await self.login.run(lambda: self._verify(stored, password))

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
