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
