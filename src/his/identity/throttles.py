"""The throttles of identity: attempts counted per key in the database (``Attempts``), under
the key's lock, and the refusals a process remembers so that a flood's later attempts cost no
database round trip. Sign-ins, registrations, password changes and second-factor codes use them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from his.identity.domain import Backoff, Claim, refusal_at_limit
from his.identity.ports import Attempts


class ThrottledError(Exception):
    """Too many attempts (failed logins, registrations) from this address or for this account."""

    def __init__(self, retry_after: int, key: str = "") -> None:
        super().__init__(f"retry after {retry_after}s")
        self.retry_after = retry_after
        self.key = key


class Refusals:
    """Keys the throttles refused lately, and until when, remembered in this process: a flood's
    later attempts are refused without a database round trip. Counts only fall with time, so
    the database would refuse them too until then (another replica can only refuse sooner)."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._until: OrderedDict[str, datetime] = OrderedDict()

    def check(self, keys: Iterable[str], now: datetime) -> None:
        """``ThrottledError`` if one of ``keys`` is still refused at ``now``."""
        for key in keys:
            until = self._until.get(key)
            if until is not None and until > now:
                raise ThrottledError(max(1, math.ceil((until - now).total_seconds())), key)

    def forget(self, prefixes: Iterable[str]) -> None:
        """Forget the refusals of the keys that start with one of ``prefixes`` (an administrator
        unlocked the account; another replica remembers its own refusals until they end)."""
        starts = tuple(prefixes)
        for key in [k for k in self._until if k.startswith(starts)]:
            del self._until[key]

    def remember(self, exc: ThrottledError, now: datetime) -> None:
        self._until[exc.key] = now + timedelta(seconds=exc.retry_after)
        self._until.move_to_end(exc.key)
        while len(self._until) > self.max_keys:
            self._until.popitem(last=False)


@dataclass(frozen=True)
class Throttle:
    """Sign-in attempts allowed before a password is checked (each is counted as a failure until
    it succeeds).

    The one a client meets first is per account and address: after ``pair.free`` failures each
    further attempt waits longer (``Backoff``), so a guesser at one address slows down at once,
    while the same account signs in from any other address as usual: nobody can lock a nurse
    out by mistyping her password on purpose. Behind it, a ceiling per address (guessing many
    accounts from one place) and a much higher one per account (guessing one account from many
    places: it then waits for everyone, and one address alone cannot reach it).
    """

    pair: Backoff = field(default_factory=Backoff)
    ip_limit: int = 30
    account_limit: int = 50
    window_seconds: float = 15 * 60


@dataclass(frozen=True)
class Registrations:
    """Self-registrations allowed per address and in all, over one window. Each hashes a
    password; the limits keep a flood of them from costing more than a trickle."""

    per_address: int = 5
    overall: int = 100
    window_seconds: float = 10 * 60


async def claim_attempt(attempts: Attempts, key: str, limit: int, window_seconds: float, now: datetime) -> Claim:
    """Count an attempt against ``key`` if it has fewer than ``limit`` in the last ``window_seconds``.

    The key stays locked until the unit of work ends (``Attempts.recent``), so attempts sent at
    once cannot all be counted before any of them is recorded.
    """
    window = timedelta(seconds=window_seconds)
    recent = await attempts.recent(key, now - window, limit)
    return refusal_at_limit(recent, limit, window, now) or await _record(attempts, key, now)


async def claim_with_backoff(attempts: Attempts, key: str, backoff: Backoff, now: datetime) -> Claim:
    """Count an attempt against ``key`` if the backoff its recent attempts earned has passed
    since the last of them (locked and counted as ``claim_attempt``)."""
    recent = await attempts.recent(key, now - timedelta(seconds=backoff.window_seconds), None)
    return backoff.refusal(recent, now) or await _record(attempts, key, now)


async def _record(attempts: Attempts, key: str, now: datetime) -> Claim:
    await attempts.add(key, now)
    return Claim(now)


def granted(key: str, claim: Claim) -> datetime:
    """When the claimed attempt was counted; ``ThrottledError`` if it was refused (raised inside
    the claim's transaction, it rolls back the claims made before it)."""
    if claim.at is None:
        raise ThrottledError(max(1, math.ceil(claim.wait)), key)
    return claim.at
