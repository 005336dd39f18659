"""Pure parts of the abuse limits: the sign-in backoff and the console's reuse of service health."""

from __future__ import annotations

import pytest

from his.gateway.app import Recent
from his.identity.domain import Backoff


@pytest.mark.parametrize(
    ("failures", "wait"),
    [(0, 0.0), (4, 0.0), (5, 1.0), (6, 2.0), (7, 4.0), (14, 512.0), (15, 900.0), (10_000, 900.0)],
)
def test_the_backoff_is_free_for_a_few_failures_then_doubles_to_a_cap(failures: int, wait: float) -> None:
    assert Backoff(free=5, base_seconds=1.0, cap_seconds=900.0).after(failures) == wait


def test_the_default_backoff_leaves_a_guesser_a_handful_of_tries_per_quarter_hour() -> None:
    backoff, spent, tries = Backoff(), 0.0, 0
    while spent <= 15 * 60:
        spent += backoff.after(tries)
        tries += 1
    assert tries - 1 <= 15


async def test_recent_asks_once_per_ttl_however_many_ask() -> None:
    now, calls = [0.0], []

    async def health() -> dict[str, str]:
        calls.append(now[0])
        return {"identity": "ready"}

    recent = Recent(health, 5.0, clock=lambda: now[0])
    for t in (0.0, 1.0, 4.9):
        now[0] = t
        assert await recent.get() == {"identity": "ready"}
    now[0] = 5.0
    await recent.get()
    assert calls == [0.0, 5.0]
