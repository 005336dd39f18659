"""Failing well when another service does not answer: circuit breaker and retry backoff. Pure, no IO.

A call to another service either gets an answer (which may be a refusal such as "not found"),
or it fails for want of one: the service is down, overloaded or too slow. Only the second kind
counts against the breaker and is retried, and it surfaces as ``DependencyUnavailableError``,
which HTTP adapters answer with 503. An outage is never turned into "not found" or an empty
success.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass


class DependencyUnavailableError(Exception):
    """Another service could not give an answer in time (down, overloaded, too slow, or breaker open)."""

    def __init__(self, dependency: str, reason: str) -> None:
        super().__init__(f"{dependency} is unavailable: {reason}")
        self.dependency = dependency
        self.reason = reason


class DependencyRefusedError(DependencyUnavailableError):
    """Another service answered, but refused the call itself: this service is not on the method's
    allowlist, or sent what the method cannot take. Nothing the user did causes it and nothing
    they can do fixes it, so it is answered as an outage is (503) and logged as an error; a
    consumer or dispatcher tries again later, and succeeds once the deployment is fixed."""

    def __init__(self, dependency: str, code: str, details: str = "") -> None:
        super().__init__(dependency, f"it refused the call ({code}{': ' + details if details else ''})")
        self.code = code


class CircuitOpenError(DependencyUnavailableError):
    """Failed fast: the breaker is open after repeated failures, so the call was not even tried."""

    def __init__(self, dependency: str, retry_in: float) -> None:
        super().__init__(dependency, f"circuit open after repeated failures; next trial in {retry_in:.1f}s")
        self.retry_in = retry_in


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Consecutive-failure circuit breaker.

    closed: calls go through; ``failure_threshold`` failures in a row open it.
    open: calls fail fast with ``CircuitOpenError`` for ``reset_timeout`` seconds.
    half-open: then one trial call at a time goes through; success closes the breaker,
    failure opens it again for another ``reset_timeout``.

    Use: ``acquire()`` before the call, then exactly one of ``success()``, ``failure()`` or
    ``release()`` (the call ended without telling whether the dependency is healthy, e.g. it
    was cancelled).
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or reset_timeout <= 0:
            raise ValueError("failure_threshold must be >= 1 and reset_timeout > 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at < self.reset_timeout:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def acquire(self) -> None:
        """Admit a call, or raise ``CircuitOpenError``."""
        state = self.state
        if state is BreakerState.CLOSED:
            return
        if state is BreakerState.HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return
        assert self._opened_at is not None
        retry_in = max(0.0, self._opened_at + self.reset_timeout - self._clock())
        raise CircuitOpenError(self.name, retry_in)

    def success(self) -> None:
        """The dependency answered: close the breaker."""
        self._failures = 0
        self._opened_at = None
        self._trial_running = False

    def failure(self) -> None:
        """The dependency did not answer: count it, and open (or re-open) the breaker when due."""
        self._failures += 1
        if self._trial_running or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
        self._trial_running = False

    def release(self) -> None:
        """The admitted call ended with no verdict on the dependency."""
        self._trial_running = False


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to repeat an idempotent call that got no answer.

    Exponential backoff with full jitter: the n-th wait is uniform in
    ``[0, min(max_backoff, initial_backoff * multiplier**n)]``.
    """

    max_attempts: int = 3
    initial_backoff: float = 0.05
    max_backoff: float = 1.0
    multiplier: float = 2.0

    def backoffs(self, rand: Callable[[], float] = random.random) -> Iterator[float]:
        """The waits between attempts (``max_attempts - 1`` of them)."""
        for n in range(self.max_attempts - 1):
            yield rand() * min(self.max_backoff, self.initial_backoff * self.multiplier**n)


NO_RETRY = RetryPolicy(max_attempts=1)
