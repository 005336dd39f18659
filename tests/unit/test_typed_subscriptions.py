"""``Subscription.of``: the handler gets its own event model; anything else on the subscription is
a ``PermanentError`` before the handler runs (the guard handlers once each wrote). No IO."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from his.events.identity import UserRegistered
from his.events.patients import PatientRegistered
from his.kernel.consumer import PermanentError, Subscription
from his.kernel.events import Envelope


async def test_the_handler_gets_its_model_and_any_other_event_is_permanent() -> None:
    seen: list[PatientRegistered] = []

    async def on_registered(uow: Any, env: Envelope, ev: PatientRegistered) -> None:
        seen.append(ev)

    sub = Subscription.of("unit_patient_registered", PatientRegistered, on_registered, max_deliver=7)
    assert (sub.name, sub.event_type, sub.max_deliver) == ("unit_patient_registered", PatientRegistered.type, 7)
    assert sub.handler.__name__ == "on_registered"

    ok = PatientRegistered(patient_id=uuid.uuid4())
    await sub.handler(None, Envelope.wrap(ok, aggregate_id=ok.patient_id), ok)  # type: ignore[arg-type]
    assert seen == [ok]

    other = UserRegistered(user_id=uuid.uuid4(), roles=["NURSE"])
    with pytest.raises(PermanentError, match=r"unexpected event his\.identity\.user\.registered\.v1"):
        await sub.handler(None, Envelope.wrap(other, aggregate_id=other.user_id), other)  # type: ignore[arg-type]
    assert seen == [ok]  # the handler never ran


async def test_a_prepared_subscription_asks_first_and_gives_the_handler_its_answer() -> None:
    """``Subscription.prepared``: the step before the transaction gets the typed event (anything
    else is permanent before it asks), and the handler is given what it answered."""
    from his.kernel.consumer import _given

    asked: list[PatientRegistered] = []
    given: list[tuple[PatientRegistered, str]] = []

    async def ask(env: Envelope, ev: PatientRegistered) -> str:
        asked.append(ev)
        return f"answer for {ev.patient_id}"

    async def apply(uow: Any, env: Envelope, ev: PatientRegistered, answer: str) -> None:
        given.append((ev, answer))

    sub = Subscription.prepared("unit_prepared", PatientRegistered, ask, apply, batch=4)
    assert sub.prepare is not None and sub.batch == 4
    ok = PatientRegistered(patient_id=uuid.uuid4())
    env = Envelope.wrap(ok, aggregate_id=ok.patient_id)
    answer = await sub.prepare(env, ok)
    with _given(answer):
        await sub.handler(None, env, ok)  # type: ignore[arg-type]
    assert asked == [ok] and given == [(ok, f"answer for {ok.patient_id}")]

    other = UserRegistered(user_id=uuid.uuid4(), roles=["NURSE"])
    with pytest.raises(PermanentError, match="unexpected event"):
        await sub.prepare(Envelope.wrap(other, aggregate_id=other.user_id), other)
    assert asked == [ok]
