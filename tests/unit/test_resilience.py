"""The circuit breaker and retry backoff, on a fake clock: no IO, no sleeps."""

from __future__ import annotations

import pytest

from his.kernel.resilience import (
    NO_RETRY,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    DependencyUnavailableError,
    RetryPolicy,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """The state read through a call: mypy would otherwise keep a narrowed ``breaker.state`` across the
    calls that change it."""
    return breaker.state


def failing(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.acquire()
        breaker.failure()


def test_opens_after_consecutive_failures_and_fails_fast() -> None:
    clock = Clock()
    breaker = CircuitBreaker("patients", failure_threshold=3, reset_timeout=5.0, clock=clock)
    failing(breaker, 2)
    assert state_of(breaker) is BreakerState.CLOSED
    failing(breaker, 1)
    assert state_of(breaker) is BreakerState.OPEN
    clock.now += 2.0
    with pytest.raises(CircuitOpenError) as caught:
        breaker.acquire()
    assert isinstance(caught.value, DependencyUnavailableError)  # an HTTP adapter answers it with 503
    assert caught.value.dependency == "patients"
    assert caught.value.retry_in == pytest.approx(3.0)
    assert "circuit open" in str(caught.value)


def test_a_success_between_failures_keeps_it_closed() -> None:
    breaker = CircuitBreaker("patients", failure_threshold=3, clock=Clock())
    for _ in range(10):
        failing(breaker, 2)
        breaker.acquire()
        breaker.success()
    assert state_of(breaker) is BreakerState.CLOSED


def test_half_open_admits_one_trial_whose_success_closes_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker("patients", failure_threshold=1, reset_timeout=5.0, clock=clock)
    failing(breaker, 1)
    clock.now += 5.0
    assert state_of(breaker) is BreakerState.HALF_OPEN
    breaker.acquire()  # the trial
    with pytest.raises(CircuitOpenError):
        breaker.acquire()  # others still fail fast while it runs
    breaker.success()
    assert state_of(breaker) is BreakerState.CLOSED
    breaker.acquire()
    breaker.acquire()


def test_a_failed_trial_opens_it_for_another_period() -> None:
    clock = Clock()
    breaker = CircuitBreaker("patients", failure_threshold=3, reset_timeout=5.0, clock=clock)
    failing(breaker, 3)
    clock.now += 5.0
    breaker.acquire()
    breaker.failure()  # one failed trial is enough, whatever the threshold
    assert state_of(breaker) is BreakerState.OPEN
    clock.now += 4.9
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    clock.now += 0.1
    assert state_of(breaker) is BreakerState.HALF_OPEN


def test_a_trial_that_ends_without_a_verdict_frees_the_slot() -> None:
    clock = Clock()
    breaker = CircuitBreaker("patients", failure_threshold=1, reset_timeout=1.0, clock=clock)
    failing(breaker, 1)
    clock.now += 1.0
    breaker.acquire()
    breaker.release()  # e.g. the caller was cancelled
    assert state_of(breaker) is BreakerState.HALF_OPEN
    breaker.acquire()  # another trial may go


def test_breaker_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("x", failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker("x", reset_timeout=0)


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = RetryPolicy(max_attempts=6, initial_backoff=0.1, max_backoff=0.5, multiplier=2.0)
    assert list(policy.backoffs(rand=lambda: 1.0)) == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    assert list(policy.backoffs(rand=lambda: 0.5)) == pytest.approx([0.05, 0.1, 0.2, 0.25, 0.25])
    assert all(0 <= w <= 0.5 for w in policy.backoffs())
    assert list(NO_RETRY.backoffs()) == []
