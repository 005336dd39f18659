"""The gateway's memory of signed-out sessions: what identity lists is refused until it expires,
each question overlaps the last answer, and an unreachable identity changes nothing known."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from his.kernel.revocations import Revocations

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


class Identity:
    """Answers as identity's ``/auth/revoked-sessions`` does; ``down`` makes it unreachable."""

    def __init__(self) -> None:
        self.revoked: dict[str, datetime] = {}
        self.now = T0
        self.asked: list[str | None] = []
        self.down = False

    def clock(self) -> float:
        return self.now.timestamp()

    async def fetch(self, since: str | None) -> dict[str, Any]:
        self.asked.append(since)
        if self.down:
            raise OSError("connection refused")
        after = datetime.fromisoformat(since) if since else self.now - timedelta(minutes=16)
        return {
            "now": self.now.isoformat(),
            "sessions": [
                {"sid": sid, "until": (at + timedelta(minutes=16)).isoformat()}
                for sid, at in self.revoked.items()
                if at >= after
            ],
        }


@pytest.fixture
def identity() -> Identity:
    return Identity()


def memory(identity: Identity) -> Revocations:
    return Revocations(identity.fetch, overlap=120.0, clock=identity.clock)


def test_a_listed_session_is_refused_until_its_tokens_expire(identity: Identity) -> None:
    revocations = memory(identity)
    assert "s1" not in revocations and not revocations.answered
    identity.revoked["s1"] = T0 - timedelta(seconds=3)
    asyncio.run(revocations.poll())
    assert "s1" in revocations and "s2" not in revocations and "" not in revocations
    identity.now = T0 + timedelta(minutes=15)
    assert "s1" in revocations
    identity.now = T0 + timedelta(minutes=17)
    assert "s1" not in revocations
    asyncio.run(revocations.poll())
    assert len(revocations) == 0  # forgotten once expired


def test_each_question_overlaps_the_last_answer(identity: Identity) -> None:
    revocations = memory(identity)
    asyncio.run(revocations.poll())
    assert identity.asked == [None]  # the first question: everything still unexpired
    identity.now = T0 + timedelta(seconds=1)
    asyncio.run(revocations.poll())
    assert identity.asked[1] == (T0 - timedelta(seconds=120)).isoformat()
    # A sign-out whose transaction began before that answer (its time is earlier) and committed
    # after it is still in the next answer.
    identity.revoked["late"] = T0 - timedelta(seconds=30)
    identity.now = T0 + timedelta(seconds=2)
    asyncio.run(revocations.poll())
    assert "late" in revocations


def test_an_unreachable_identity_keeps_what_is_known(identity: Identity, caplog: pytest.LogCaptureFixture) -> None:
    revocations = Revocations(identity.fetch, every=0.0, clock=identity.clock)
    identity.revoked["s1"] = T0
    asyncio.run(revocations.poll())
    identity.down = True

    async def a_few_rounds() -> None:
        task = asyncio.create_task(revocations.run())
        while len(identity.asked) < 5:
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(a_few_rounds())
    assert "s1" in revocations
    assert sum("cannot learn signed-out sessions" in r.message for r in caplog.records) == 1  # once per outage


class Ticker:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_service_asks_only_when_its_last_answer_is_a_second_old(identity: Identity) -> None:
    tick = Ticker()
    revocations = Revocations(identity.fetch, clock=identity.clock, monotonic=tick)

    async def many_at_once() -> None:
        await asyncio.gather(*(revocations.fresh() for _ in range(20)))

    asyncio.run(many_at_once())
    assert len(identity.asked) == 1  # twenty tokens arriving at once wait for one question
    identity.revoked["s1"] = T0
    tick.t += 0.5
    asyncio.run(revocations.fresh())
    assert len(identity.asked) == 1 and "s1" not in revocations  # the answer is younger than a second
    tick.t += 0.6
    asyncio.run(revocations.fresh())
    assert len(identity.asked) == 2 and "s1" in revocations


def test_a_service_keeps_what_it_knows_while_identity_is_down(
    identity: Identity, caplog: pytest.LogCaptureFixture
) -> None:
    tick = Ticker()
    revocations = Revocations(identity.fetch, clock=identity.clock, monotonic=tick)
    identity.revoked["s1"] = T0
    asyncio.run(revocations.fresh())
    identity.down = True
    for _ in range(3):
        tick.t += 0.4
        asyncio.run(revocations.fresh())  # no error reaches the request
    assert "s1" in revocations
    assert len(identity.asked) == 2  # not asked again before a second has passed since the failure
    assert sum("cannot learn signed-out sessions" in r.message for r in caplog.records) == 1
